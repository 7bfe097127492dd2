"""Thin job entrypoints (``python -m jobs.<name>``): parse, build settings, call ``app``, print one JSON line."""
