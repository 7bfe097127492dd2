"""The monitor: a long-lived process's figures that no stage can export itself.

- ``gh_sink_lag_records{topic, partition}``: the sink's lag from durable state
  (:mod:`app.observability.sink_lag`), so it keeps growing while the sink is stopped;
- ``gh_job_last_finished_timestamp_seconds``, ``gh_job_last_duration_seconds`` and
  ``gh_job_runs_total`` ``{job_name, outcome}``, ``gh_job_last_rows{job_name}``: the registered
  jobs' runs from the Ray Jobs API (:mod:`app.observability.job_outcomes`);
- ``gh_monitor_source_up{source}``: 1 when the last refresh could read ``bus``, ``metadata`` and
  ``ray``, else 0 (the figures of that source are then absent, or, for jobs, as last read).

:class:`Monitor` is a prometheus_client collector: :meth:`Monitor.refresh` computes a snapshot
(every ``monitor.interval_s`` in :meth:`Monitor.run`), and a scrape returns the newest snapshot
without touching any engine. A source that fails is logged, reported down and tried again at the
next refresh; connections are reopened after a failure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from app.bus import Bus
from app.config import Settings
from app.ingest.ownership import checkpointed_offsets
from app.metadata import MetadataStore
from app.observability.job_outcomes import JobOutcomes
from app.observability.sink_lag import bus_positions, lag_records
from app.orchestration.registry import JOBS

log = logging.getLogger(__name__)

SOURCES = ("bus", "metadata", "ray")
DEFAULT_JOBS_API_URL = "http://127.0.0.1:8265"


class Monitor:
    """Sink lag and job outcomes for ``settings``; engines opened by the factories (defaults: the
    settings' bus and metadata URLs, and a Jobs API client of :func:`jobs_api_url` with the
    cluster's token from ``ray.auth_token_file``). ``job_names``: the jobs reported (default:
    every registered job; the label set stays bounded)."""

    def __init__(
        self,
        settings: Settings,
        *,
        open_bus: Callable[[], Bus] | None = None,
        open_store: Callable[[], MetadataStore] | None = None,
        open_jobs_client: Callable[[], Any] | None = None,
        job_names: Collection[str] = tuple(JOBS),
    ) -> None:
        self.topic = settings.topics.sensors
        self.group = settings.sink.group_id
        self._open = {"bus": open_bus or _bus_opener(settings), "metadata": open_store or _store_opener(settings), "ray": open_jobs_client or _jobs_client_opener(settings)}
        self._handles: dict[str, Any] = {}
        self.outcomes = JobOutcomes(job_names)
        self.up: dict[str, bool] = dict.fromkeys(SOURCES, False)
        self.lag: dict[int, int] = {}
        self._families: list[Metric] = []
        self._lock = threading.Lock()  # one refresh at a time

    # -- computing -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read every source once and publish the new snapshot (never raises)."""
        with self._lock:
            positions = self._read("bus", lambda bus: bus_positions(bus, self.topic))
            committed = self._read("metadata", lambda store: checkpointed_offsets(store, self.group, self.topic))
            self.lag = lag_records(positions, committed) if positions is not None and committed is not None else {}
            self._read("ray", lambda client: self.outcomes.update(client.list_jobs(), logs=client.get_job_logs))
            self._families = self._snapshot()

    def _read(self, source: str, read: Callable[[Any], Any]) -> Any:
        """``read(handle)`` of ``source``; None (and the source down, its handle dropped) on failure."""
        try:
            if source not in self._handles:
                self._handles[source] = self._open[source]()
            value = read(self._handles[source])
        except Exception as exc:  # any failure of an engine: report it, try again next time
            log.warning("monitor: %s unavailable: %s: %s", source, type(exc).__name__, exc, extra={"event": "monitor_source_down", "source": source})
            self._drop(source)
            self.up[source] = False
            return None
        self.up[source] = True
        return value

    def _drop(self, source: str) -> None:
        handle = self._handles.pop(source, None)
        close = getattr(handle, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # already broken: nothing more to release
                pass

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Refresh every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            self.refresh()
            stop.wait(interval_s)

    def close(self) -> None:
        """Release the engines' connections."""
        for source in list(self._handles):
            self._drop(source)

    # -- exposing --------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """The newest snapshot (prometheus_client's collector protocol)."""
        return iter(self._families)

    def describe(self) -> Iterator[Metric]:
        """The metric names this collector exports, without samples."""
        return iter(_families())

    def _snapshot(self) -> list[Metric]:
        lag, finished, duration, runs, rows, up = families = _families()
        for partition, records in sorted(self.lag.items()):
            lag.add_metric([self.topic, str(partition)], records)
        for (job, outcome), run in sorted(self.outcomes.newest.items()):
            finished.add_metric([job, outcome], run.end_s)
            duration.add_metric([job, outcome], run.duration_s)
        for (job, outcome), count in sorted(self.outcomes.runs_total.items()):
            runs.add_metric([job, outcome], count)
        for job, count in sorted(self.outcomes.rows.items()):
            rows.add_metric([job], count)
        for source in SOURCES:
            up.add_metric([source], 1.0 if self.up[source] else 0.0)
        return families


def _families() -> list[Metric]:
    """Empty families of every metric the monitor exports, in a fixed order."""
    return [
        GaugeMetricFamily("gh_sink_lag_records", "records on the bus the lake sink has not committed (end offset minus the sink's checkpoint)", labels=["topic", "partition"]),
        GaugeMetricFamily("gh_job_last_finished_timestamp_seconds", "end time of the newest run of a registered job with that outcome", labels=["job_name", "outcome"]),
        GaugeMetricFamily("gh_job_last_duration_seconds", "duration of the newest run of a registered job with that outcome", labels=["job_name", "outcome"]),
        CounterMetricFamily("gh_job_runs", "finished runs of a registered job seen by this monitor, by outcome", labels=["job_name", "outcome"]),
        GaugeMetricFamily("gh_job_last_rows", "rows the newest successful run of a job handled (its summary line)", labels=["job_name"]),
        GaugeMetricFamily("gh_monitor_source_up", "1 when the monitor's last refresh could read the source (bus, metadata, ray), else 0", labels=["source"]),
    ]


def _bus_opener(settings: Settings) -> Callable[[], Bus]:
    def open_() -> Bus:
        from app.bus import open_bus

        return open_bus(settings.bus_url, topics=settings.topics)

    return open_


def _store_opener(settings: Settings) -> Callable[[], MetadataStore]:
    def open_() -> MetadataStore:
        from app.metadata import open_metadata

        return open_metadata(settings.metadata_url)

    return open_


def _jobs_client_opener(settings: Settings) -> Callable[[], Any]:
    def open_() -> Any:
        from app.orchestration.ray_jobs import make_client, ray_auth_headers

        return make_client(jobs_api_url(settings), ray_auth_headers(token_file=settings.ray.auth_token_file))

    return open_


def jobs_api_url(settings: Settings) -> str:
    """The Jobs API the monitor reads: ``monitor.ray_jobs_url``, else ``ray_address`` when it is
    the dashboard's HTTP address, else the local head's default."""
    if settings.monitor.ray_jobs_url:
        return settings.monitor.ray_jobs_url
    if settings.ray_address.startswith(("http://", "https://")):
        return settings.ray_address
    return DEFAULT_JOBS_API_URL
