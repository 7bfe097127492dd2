"""Ingest: the HTTP gateway (devices -> bus) and the lake sink (bus -> lake + metadata)."""
