"""Log lines for machines and for people: one JSON object per line, or text with ``key=value`` extras.

A record becomes ``{"ts", "level", "logger", "message", ...}``: the time in ISO 8601 UTC, the
level name, the logger's name, the message, then every field the caller passed with ``extra=``
(``log.info("committed", extra={"event": "lake_file_committed", "file": ..., "topic": ...})``) and
``exc`` with the traceback when there is one. Secrets stay out: passwords in URLs, bearer tokens
and the product's tokens are masked in every string (app.security.redact), and the value of an
extra whose name says it is a secret (``password``, ``token``, ``authorization``...) is ``***``.

:func:`setup_logging` is called once by an entry point (a job, the CLI, a Serve replica's
constructor). ``log.format`` ``auto`` (the default) writes text on a terminal and JSON elsewhere
(a job's log, a container, a Ray worker's log file), as log shippers expect; ``json`` or ``text``
force one.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from app.config import LogSettings, Settings
from app.security.redact import redact

# Attributes every LogRecord has (plus what Formatter.format adds): anything else came with extra=.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_SECRET_NAMES = ("password", "passwd", "secret", "token", "authorization", "api_key", "private_key", "credential")
# names that only point at or count a secret: its file, its id, how many
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_id", "_ids", "_count", "_total", "_kind", "_reason")
_MAX_TEXT_CHARS = 20_000
_MASK = "***"


def is_secret_name(name: str) -> bool:
    """Whether an extra's name says its value is a secret (``db_password``, ``token``, not ``token_file``)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_NAMES) and not lowered.endswith(_NOT_SECRET_SUFFIXES)


def _clean(value: Any, depth: int = 0) -> Any:
    """``value`` with secrets masked in its strings and under secret-named keys, JSON-able."""
    if isinstance(value, str):
        return redact(value, _MAX_TEXT_CHARS)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth > 8:
        return redact(repr(value), _MAX_TEXT_CHARS)
    if isinstance(value, dict):
        return {str(k): _MASK if is_secret_name(str(k)) else _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return redact(str(value), _MAX_TEXT_CHARS)


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields passed with ``extra=`` (and added by filters), secrets masked."""
    return {k: _MASK if is_secret_name(k) else _clean(v) for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def iso_utc(created_s: float) -> str:
    """``created_s`` (Unix seconds) as ISO 8601 UTC with milliseconds: ``2026-12-05T01:02:03.456Z``."""
    return datetime.fromtimestamp(created_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, the extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": iso_utc(record.created), "level": record.levelname, "logger": record.name, "message": redact(record.getMessage(), _MAX_TEXT_CHARS)}
        # the four fixed fields win over an extra of the same name
        doc |= {k: v for k, v in record_extras(record).items() if k not in doc}
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info), _MAX_TEXT_CHARS)
        elif record.exc_text:
            doc["exc"] = redact(record.exc_text, _MAX_TEXT_CHARS)
        if record.stack_info:
            doc["stack"] = redact(self.formatStack(record.stack_info), _MAX_TEXT_CHARS)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """``2026-12-05T01:02:03.456Z INFO app.ingest.sink: message key=value ...`` and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={orjson.dumps(v, default=str).decode() if not isinstance(v, str) else v}" for k, v in record_extras(record).items())
        line = f"{iso_utc(record.created)} {record.levelname} {record.name}: {redact(record.getMessage(), _MAX_TEXT_CHARS)}"
        line = f"{line} {extras}" if extras else line
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info), _MAX_TEXT_CHARS)
        return line


class _ProductHandler(logging.StreamHandler):
    """The root handler setup_logging installs (recognised, and replaced, by a second call)."""


class _FieldsFilter(logging.Filter):
    """Adds fixed fields (``job``, ``app``) to every record that does not carry them already."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _log_stream() -> TextIO:
    """Standard error; in a Serve replica whose stderr Serve redirected into its own logger (Ray
    Serve's throughput mode), the process's real stderr, so lines are not wrapped a second time."""
    stream = sys.stderr
    if type(stream).__name__ == "StreamToLogger" and sys.__stderr__ is not None:
        return sys.__stderr__
    return stream


def uses_json(log: LogSettings, stream: TextIO) -> bool:
    """Whether ``log.format`` means JSON on ``stream`` (``auto``: unless it is a terminal)."""
    if log.format != "auto":
        return log.format == "json"
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def setup_logging(settings: Settings | LogSettings, *, default_level: str = "INFO", fields: dict[str, Any] | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (default stderr) as JSON or text, at
    ``log.level`` (else ``default_level``), each with ``fields`` added (``{"job": "sink"}``).
    Calling it again replaces the handler it installed; other handlers writing to the same stream
    (``logging.basicConfig``'s) are removed so that no line is written twice. Returns the handler."""
    log = settings.log if isinstance(settings, Settings) else settings
    out = stream or _log_stream()
    handler = _ProductHandler(out)
    handler.setFormatter(JsonFormatter() if uses_json(log, out) else TextFormatter())
    if fields:
        handler.addFilter(_FieldsFilter(fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _ProductHandler) or (type(old) is logging.StreamHandler and old.stream in (out, sys.stderr, sys.__stderr__)):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((log.level or default_level).upper())
    return handler


def setup_replica_logging(settings: Settings) -> logging.Handler:
    """:func:`setup_logging` for a Serve replica's constructor: every line also carries the
    replica's ``app``, ``deployment`` and ``replica``. A replica's root logger has no handler of
    its own (Serve configures only the ``ray.serve`` logger), so without this its ``app.*`` INFO
    lines are dropped; with it they go to the replica process's stderr, the worker log the Ray
    dashboard and ``ray logs actor`` show (and ``serve run``'s terminal)."""
    from ray import serve

    context = serve.get_replica_context()
    return setup_logging(settings, fields={"app": context.app_name, "deployment": context.deployment, "replica": context.replica_tag})
