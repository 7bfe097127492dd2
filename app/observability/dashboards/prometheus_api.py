"""A small client of Prometheus's HTTP query API (``/api/v1/query`` and ``/api/v1/query_range``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (``errorType`` such as ``bad_data`` for a parse error) or failed."""


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and its (Unix seconds, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


class PrometheusApi:
    """Queries one Prometheus server, e.g. ``PrometheusApi("http://127.0.0.1:9090")``."""

    def __init__(self, base_url: str, *, timeout_seconds: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_seconds, transport=transport)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> PrometheusApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self._client.get(path, params=params)
        try:
            body = response.json()
        except ValueError as error:
            raise PrometheusQueryError(f"{path}: HTTP {response.status_code}, not JSON: {response.text[:200]}") from error
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{body.get('errorType', 'error')}: {body.get('error', response.text[:200])}")
        return body["data"]

    def query(self, expr: str, *, at_seconds: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result list (vector or matrix elements); raises on a parse error."""
        params: dict[str, Any] = {"query": expr}
        if at_seconds is not None:
            params["time"] = at_seconds
        data = self._get("/api/v1/query", params)
        result = data["result"]
        # A scalar or string result is [time, value], not a list of series.
        return result if data["resultType"] in ("vector", "matrix") else [{"metric": {}, "value": result}]

    def query_range(self, expr: str, *, start_seconds: float, end_seconds: float, step_seconds: float) -> list[Series]:
        """A range query's series, values as floats (``NaN`` where Prometheus says so)."""
        data = self._get("/api/v1/query_range", {"query": expr, "start": start_seconds, "end": end_seconds, "step": step_seconds})
        return [Series(labels=item["metric"], points=[(float(t), float(v)) for t, v in item["values"]]) for item in data["result"]]
