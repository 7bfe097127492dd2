"""The ``greenhouse`` command line: run the demo and the stages, inspect config and the lake."""

from __future__ import annotations

from app.cli.main import main

__all__ = ["main"]
