"""Keep secrets out of text that leaves the process: logs, health documents, error answers."""

from __future__ import annotations

import re

from app.config import mask_url_credentials

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_TOKEN = re.compile(r"\bgh[do]_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}")


def redact(text: str, max_chars: int = 300) -> str:
    """``text`` with passwords inside URLs, bearer tokens and the product's tokens replaced by
    ``***``, cut to ``max_chars``."""
    text = _URL.sub(lambda m: mask_url_credentials(m.group(0)), text)
    text = _BEARER.sub(r"\1***", text)
    text = _TOKEN.sub("***", text)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
