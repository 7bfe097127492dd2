"""JSON log lines (app.log_format): the fixed fields, every ``extra=`` field, the traceback, no
secrets; and a real job entrypoint (``python -m jobs.sink`` in its own process) writing them."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from app.bus import OutgoingRecord, open_bus
from app.config import LogSettings, Settings
from app.log_format import JsonFormatter, TextFormatter, is_secret_name, setup_logging, setup_replica_logging

REPO = Path(__file__).resolve().parents[1]
TOKEN = "ghd_0123456789abcdef_" + "A" * 32  # the shape of a device token (app.security.credentials)


def record(message: str = "hello %s", args: tuple = ("world",), *, extra: dict | None = None, exc_info=None) -> logging.LogRecord:
    logger = logging.getLogger("app.ingest.sink")
    rec = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, exc_info, extra=extra)
    rec.created = datetime(2026, 12, 5, 1, 2, 3, 456_000, tzinfo=UTC).timestamp()
    return rec


def as_json(rec: logging.LogRecord) -> dict:
    line = JsonFormatter().format(rec)
    assert "\n" not in line  # one object per line
    return orjson.loads(line)


def test_fixed_fields_and_every_extra():
    extra = {
        "event": "ingest_batch",
        "batch_id": "b-1",
        "partition_offsets": {0: [10, 12], 3: [7, 7]},
        "rows": 5,
        "ok": True,
        "since": datetime(2026, 1, 1, tzinfo=UTC),
        "file": Path("/lake/x.parquet"),
    }
    doc = as_json(record(extra=extra))
    assert doc["ts"] == "2026-12-05T01:02:03.456Z"
    assert (doc["level"], doc["logger"], doc["message"]) == ("INFO", "app.ingest.sink", "hello world")
    assert doc["event"] == "ingest_batch" and doc["batch_id"] == "b-1" and doc["rows"] == 5 and doc["ok"] is True
    assert doc["partition_offsets"] == {"0": [10, 12], "3": [7, 7]}  # int keys become JSON's string keys
    assert doc["since"] == "2026-01-01T00:00:00+00:00" and doc["file"] == "/lake/x.parquet"
    assert not {"args", "msg", "pathname", "exc_info", "levelno"} & doc.keys()  # LogRecord's own attributes stay out


def test_exception_text_is_included():
    try:
        raise ValueError("bad offset 42")
    except ValueError:
        doc = as_json(record("sink failed", (), exc_info=sys.exc_info()))
    assert doc["exc"].startswith("Traceback (most recent call last)")
    assert "ValueError: bad offset 42" in doc["exc"]


def test_secrets_never_reach_the_line():
    extra = {
        "url": "mongodb://app:s3cret-pw@db:27017/gh",
        "headers": {"Authorization": f"Bearer {TOKEN}", "accept": "application/json"},
        "db_password": "hunter2",
        "token": TOKEN,
        "token_file": "/run/secrets/ray-token",  # a path to a secret is no secret
        "nested": [{"api_key": "k-123"}, f"device {TOKEN}"],
    }
    try:
        raise RuntimeError(f"connect to mongodb://app:s3cret-pw@db/gh with {TOKEN} failed")
    except RuntimeError:
        line = JsonFormatter().format(record(f"auth Bearer {TOKEN} refused", (), extra=extra, exc_info=sys.exc_info()))
    for secret in ("s3cret-pw", "hunter2", TOKEN, "k-123", "0123456789abcdef_AAAA"):
        assert secret not in line
    doc = orjson.loads(line)
    assert doc["url"] == "mongodb://app:***@db:27017/gh"
    assert doc["headers"] == {"Authorization": "***", "accept": "application/json"}
    assert doc["db_password"] == doc["token"] == "***"
    assert doc["token_file"] == "/run/secrets/ray-token"
    assert doc["message"] == "auth Bearer *** refused"


@pytest.mark.parametrize(("name", "secret"), [("password", True), ("kafka_password_file", False), ("operator_token", True), ("token_id", False), ("batch_id", False), ("Authorization", True)])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_text_lines_for_people_carry_the_extras():
    line = TextFormatter().format(record(extra={"event": "lake_file_committed", "rows": 3}))
    assert line == "2026-12-05T01:02:03.456Z INFO app.ingest.sink: hello world event=lake_file_committed rows=3"


@pytest.fixture
def root_logging():
    """Restore the root logger's handlers and level after a test that sets them up."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_setup_logging_chooses_the_format_and_replaces_itself(root_logging):
    pipe = io.StringIO()
    setup_logging(Settings(), stream=pipe, fields={"job": "sink"})
    setup_logging(Settings(), stream=pipe, fields={"job": "sink"})  # a second call: still one line per record
    logging.getLogger("app.x").info("one", extra={"batch_id": "b-7"})
    logging.getLogger("app.x").debug("below the level")
    [line] = pipe.getvalue().splitlines()
    assert orjson.loads(line) | {"ts": None} == {"ts": None, "level": "INFO", "logger": "app.x", "message": "one", "batch_id": "b-7", "job": "sink"}

    tty = _Tty()
    setup_logging(LogSettings(level="debug"), stream=tty)
    logging.getLogger("app.x").debug("for people")
    assert tty.getvalue().rstrip().endswith("DEBUG app.x: for people")
    assert pipe.getvalue().count("\n") == 1  # the earlier handler is gone

    forced = _Tty()
    setup_logging(LogSettings(format="json"), stream=forced)
    logging.getLogger("app.x").warning("forced")
    assert orjson.loads(forced.getvalue())["message"] == "forced"


def test_a_job_entrypoint_writes_json_lines(tmp_path):
    """``python -m jobs.sink`` (the ``ray job submit`` entrypoint) in its own process, its stderr a
    pipe: every log line is a JSON object with the job's name; the committed file's line carries
    the ids; stdout's last line is still the summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GH_", "RAY_"))}
    env |= {"GH_DATA_DIR": str(tmp_path / "gh"), "GH_TOPICS__PARTITIONS": "1", "GH_SINK__POLL_TIMEOUT_S": "0.2"}
    settings = Settings(data_dir=tmp_path / "gh", topics={"partitions": 1})
    bus = open_bus(settings.bus_url, topics=settings.topics)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    readings = [
        {"greenhouse_id": "gh-01", "device_id": "gh-01-climate", "ts": (start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"), "measurements": {"air_temp_c": 20.5, "rh_pct": 70.0}}
        for i in range(3)
    ]
    bus.create_topic(settings.topics.sensors, 1)
    bus.produce(settings.topics.sensors, [OutgoingRecord(orjson.dumps(r), key=b"gh-01") for r in readings])
    bus.close()

    done = subprocess.run([sys.executable, "-m", "jobs.sink"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert orjson.loads(done.stdout.splitlines()[-1])["rows_written"] == 3
    lines = [orjson.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines, "the sink logged nothing"
    assert all({"ts", "level", "logger", "message"} <= doc.keys() and doc["job"] == "sink" for doc in lines)
    [committed] = [doc for doc in lines if doc.get("event") == "lake_file_committed"]
    assert committed["logger"] == "app.ingest.sink" and committed["rows"] == 3 and committed["topic"] == settings.topics.sensors
    assert committed["lake_batch_id"] and committed["file"].endswith(".parquet")


@pytest.mark.serve
def test_a_serve_replica_that_sets_up_logging_writes_json_lines_with_its_extras(ray_serve):
    """What a replica of the product gets from ``setup_replica_logging`` in its constructor: its ``app.*``
    loggers' lines go, as JSON with the extras, to the replica's own stderr (the worker's ``.err``
    log that the dashboard and ``ray logs actor`` show), not into Serve's redirected stdout. Without
    it a replica drops INFO lines (its root logger has no handler)."""
    import ray
    from ray import serve

    @serve.deployment
    class LogCheck:
        def __init__(self) -> None:
            setup_replica_logging(Settings())

        def __call__(self, *_: object) -> str:
            logging.getLogger("app.serve.check").info("batch accepted", extra={"event": "ingest_batch", "batch_id": "b-42", "partition_offsets": {0: [1, 2]}})
            return str(os.getpid())

    serve.run(LogCheck.bind(), name="log-check", route_prefix="/log-check")
    try:
        pid = httpx.get(f"{ray_serve}/log-check", timeout=60).raise_for_status().text
        logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())
        deadline = time.monotonic() + 30
        found: list[dict] = []
        while not found and time.monotonic() < deadline:
            for path in logs_dir.glob(f"worker-*-{pid}.err"):
                found = [orjson.loads(line) for line in path.read_text().splitlines() if line.startswith("{") and '"b-42"' in line]
            time.sleep(0.5)
    finally:
        serve.delete("log-check")
    assert found, f"no JSON line of the replica (pid {pid}) in {logs_dir}"
    doc = found[0]
    assert (doc["level"], doc["logger"], doc["message"], doc["app"], doc["deployment"]) == ("INFO", "app.serve.check", "batch accepted", "log-check", "LogCheck")
    assert doc["replica"]
    assert doc["event"] == "ingest_batch" and doc["partition_offsets"] == {"0": [1, 2]}
