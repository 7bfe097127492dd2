"""Concatenated JSON read as it arrives: the body of a REST Proxy v3 produce request.

A v3 client sends one JSON object per record, one after another over one request body (in
streaming mode a chunked body that stays open while records come). :class:`JsonStream` is fed the
body's chunks in order and hands back each complete top-level value as soon as its last byte is in,
decoded with orjson, or, for a value that is not JSON, its text and why (one bad value never stops
the values after it).

Two ways to find where a value ends: a value that is a whole line (what clients send, one record a
line) is decoded at once; anything else (several values on a line, a value over several lines) is
scanned for its end by counting brackets outside strings, and then decoded. The scan resumes where
the last chunk ended, so a value arriving in many small chunks costs linear time. A pending value
larger than ``max_value_bytes`` is an error of its own; a pending one larger than that breaks the
stream (it would be kept whole in memory, and there is no telling where the next value starts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
_STRUCTURE = re.compile(rb'["{}\[\]]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)  # up to a closing quote, a lone trailing backslash or the end
_TOKEN_END = re.compile(rb'[ \t\r\n{}\[\]"]')
_SHOWN_BYTES = 200


@dataclass(frozen=True, slots=True)
class JsonValue:
    """One top-level value of the stream: decoded (``error`` None), or its text and why it is not JSON."""

    value: Any
    error: str | None = None
    too_large: bool = False


def _decoded(raw: bytes) -> JsonValue:
    try:
        return JsonValue(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        return JsonValue(raw[:_SHOWN_BYTES].decode("utf-8", "replace"), f"not valid JSON: {exc}")


@dataclass
class _Scan:
    """Where the scan of a value that is not complete yet stands (offsets into the pending bytes):
    ``kind`` is ``"container"`` (an object or array), ``"string"`` or ``"token"`` (a number or
    literal, which ends at the next space or bracket)."""

    start: int
    at: int
    kind: str = ""
    depth: int = 0
    in_string: bool = False

    def end(self, buf: bytes) -> int | None:
        """The offset just past the value, or ``None`` when ``buf`` ends before it does."""
        if not self.kind:
            first = buf[self.start : self.start + 1]
            self.at = self.start + 1
            if first in (b"}", b"]"):
                return self.at  # a stray closing bracket: a value of its own (not JSON)
            self.kind = "container" if first in (b"{", b"[") else "string" if first == b'"' else "token"
            self.depth, self.in_string = int(self.kind == "container"), self.kind == "string"
        if self.kind == "token":
            token_end = _TOKEN_END.search(buf, self.at)
            self.at = len(buf)
            return token_end.start() if token_end else None
        return self._bracket_end(buf)

    def _bracket_end(self, buf: bytes) -> int | None:
        while True:
            if self.in_string:
                rest = _STRING_REST.match(buf, self.at)
                self.at = rest.end() if rest else self.at
                if buf[self.at : self.at + 1] != b'"':
                    return None  # the string (or an escape in it) goes on in the next chunk
                self.at += 1
                self.in_string = False
                if self.kind == "string":
                    return self.at
                continue
            found = _STRUCTURE.search(buf, self.at)
            if found is None:
                self.at = len(buf)
                return None
            char = buf[found.start() : found.end()]
            self.at = found.end()
            if char == b'"':
                self.in_string = True
            else:
                self.depth += 1 if char in (b"{", b"[") else -1
                if self.depth == 0:
                    return self.at


class JsonStream:
    """Split a body of concatenated JSON values, fed chunk by chunk, into its values.

    Args:
        max_value_bytes: the largest value (and pending partial value) accepted.
    """

    def __init__(self, max_value_bytes: int) -> None:
        self._max_value_bytes = max_value_bytes
        self._pending = b""
        self._scan: _Scan | None = None
        self.broken = False

    def feed(self, chunk: bytes, *, final: bool = False) -> list[JsonValue]:
        """The values completed by ``chunk``; ``final``: the body ends here, so whatever is left is
        a value of its own (or its error). After a value too large (``broken``), nothing more."""
        if self.broken:
            return []
        buf = self._pending + chunk if self._pending else chunk
        values: list[JsonValue] = []
        pos = 0
        while True:
            if self._scan is None:
                start = _NOT_SPACE.search(buf, pos)
                if start is None:
                    pos = len(buf)
                    break
                pos = start.start()
                line_end = buf.find(b"\n", pos)
                if line_end != -1:
                    try:
                        values.append(self._sized(line_end - pos) or JsonValue(orjson.loads(buf[pos:line_end])))
                        pos = line_end + 1
                        continue
                    except orjson.JSONDecodeError:
                        pass  # not one value on its own line: scan for its end
                self._scan = _Scan(pos, pos)
            end = self._scan.end(buf)
            if end is None:
                break
            values.append(self._sized(end - pos) or _decoded(buf[pos:end]))
            pos, self._scan = end, None
        return values + self._keep(buf, pos, final)

    def _sized(self, size: int) -> JsonValue | None:
        """The error of a complete value of ``size`` bytes over the limit (the stream goes on)."""
        if size <= self._max_value_bytes:
            return None
        return JsonValue(None, f"a record of {size} bytes exceeds {self._max_value_bytes} bytes", too_large=True)

    def _keep(self, buf: bytes, pos: int, final: bool) -> list[JsonValue]:
        """Keep ``buf[pos:]`` (a value not complete yet) for the next chunk; at the end of the
        body it is decoded as it is, and one too large breaks the stream."""
        self._pending = buf[pos:]
        if self._scan is not None:
            self._scan.start -= pos
            self._scan.at -= pos
        if len(self._pending) > self._max_value_bytes:
            self.broken = True
            self._pending, self._scan = b"", None
            return [JsonValue(None, f"a record exceeds {self._max_value_bytes} bytes; the rest of the stream is not read", too_large=True)]
        if final and self._pending.strip():
            rest, self._pending, self._scan = self._pending, b"", None
            return [_decoded(rest)]
        return []
