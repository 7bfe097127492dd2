"""The compiled HTTP load generator the benches drive Serve with (``bench/loadgen``, Go, standard
library only), from Python: :func:`loadgen_binary` builds it into
``~/.cache/greenhouse-mlops/bin/gh-loadgen`` on first use and again whenever its source is newer than
the binary; :func:`run_loadgen` runs it once and returns its figures. Used by ``bench/serve.py`` and
``bench/ingest.py``. Bearer tokens go to it in its environment or a private file, never in its argv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOADGEN_SRC = Path(__file__).resolve().parent / "loadgen"
BEARER_ENV = "GH_LOADGEN_BEARER_TOKEN"  # bench/loadgen reads the token from here (not from its argv)


def loadgen_binary() -> Path | None:
    """The Go load generator, (re)built when its source is newer than the binary; ``None`` when it
    cannot be had (no Go toolchain and no up-to-date binary, or the build failed)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache / "greenhouse-mlops" / "bin" / "gh-loadgen"
    newest_source = max(f.stat().st_mtime for f in LOADGEN_SRC.iterdir() if f.suffix in (".go", ".mod"))
    if binary.exists() and binary.stat().st_mtime >= newest_source:
        return binary
    go = shutil.which("go")
    if go is None:
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=LOADGEN_SRC, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"warning: building bench/loadgen failed:\n{done.stderr.strip()}", file=sys.stderr)
        return None
    return binary


def _write_private(lines: Sequence[str], suffix: str) -> str:
    """A file only this user can read, one line each; its path (the caller removes it)."""
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_loadgen(
    binary: Path,
    name: str,
    url: str,
    bodies: Sequence[Any],
    seconds: float,
    *,
    concurrency: int = 0,
    rate: float = 0.0,
    token: str | None = None,
    tokens: Sequence[str] = (),
    content_type: str | None = None,
    split_values: bool = False,
    chunked: bool = False,
    check_results: bool = False,
    warmup_s: float = 0.0,
) -> dict:
    """One Go load-generator run: closed loop with ``concurrency``, open loop at ``rate``.

    ``bodies``: JSON-able values, or JSON text (``str``/``bytes``, one line each); body ``i`` is
    sent with ``tokens[i % len(tokens)]``, else with ``token``. ``split_values``: each body's
    concatenated JSON values go one a line; ``chunked``: without a Content-Length;
    ``check_results``: an answer counts only when every line of it has ``"error_code": 200``."""
    texts = [b.decode() if isinstance(b, bytes) else b if isinstance(b, str) else json.dumps(b) for b in bodies]
    files = [_write_private(texts, ".jsonl")]
    try:
        cmd = [str(binary), "-url", url, "-bodies", files[0], "-duration", str(seconds), "-procs", "1"]
        cmd += ["-concurrency", str(concurrency)] if concurrency else ["-rate", str(rate)]
        if tokens:
            files.append(_write_private(tokens, ".tokens"))
            cmd += ["-tokens", files[-1]]
        cmd += ["-content-type", content_type] if content_type else []
        cmd += ["-warmup", str(warmup_s)] if warmup_s else []
        cmd += [flag for flag, on in (("-split-values", split_values), ("-chunked", chunked), ("-check-results", check_results)) if on]
        env = {**os.environ, BEARER_ENV: token} if token else None
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    finally:
        for path in files:
            os.unlink(path)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "endpoint": name,
        "requests": out["requests"],
        "errors": out["errors"],
        "requests_per_s": out["requests_per_s"],
        "p50_ms": out["p50_ms"],
        "p99_ms": out["p99_ms"],
        "max_ms": out["max_ms"],
        **({"first_error": out["first_error"]} if out.get("first_error") else {}),
    }
