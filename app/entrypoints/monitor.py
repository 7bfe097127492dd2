"""The monitor process: ``python -m app.entrypoints.monitor [--host H] [--port P] [--interval-s S]``.

Serves prometheus_client's ``/metrics`` (the default registry: the monitor's figures, and
``gh_bus_offsets_lost_total`` and the process's own) and recomputes every ``monitor.interval_s``
the lake sink's lag per partition and the registered jobs' outcomes
(:mod:`app.observability.monitor`). It keeps serving when the bus, the metadata store or the Ray
cluster is down (``gh_monitor_source_up{source}`` says which) and runs until SIGTERM or Ctrl-C.
``--once`` computes once, prints the exposition and exits (for ``promtool check metrics``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

MONITOR_DESCRIPTION = """\
A long-lived process exporting what no job can export itself, for Prometheus to scrape:

  gh_sink_lag_records{topic,partition}       bus end offset minus the sink's durable checkpoint
                                             (keeps growing while the sink is stopped)
  gh_job_last_finished_timestamp_seconds,    the newest run of each registered job per outcome
  gh_job_last_duration_seconds{job_name,outcome}   (succeeded, failed, stopped), from the Ray Jobs API
  gh_job_runs_total{job_name,outcome}        finished runs seen
  gh_job_last_rows{job_name}                 rows of the newest success (its JSON summary line)
  gh_monitor_source_up{source}               bus, metadata, ray: 1 when readable at the last refresh

Settings (YAML --config, or env): monitor.host (GH_MONITOR__HOST, default 127.0.0.1), monitor.port
(GH_MONITOR__PORT, 9108), monitor.interval_s (GH_MONITOR__INTERVAL_S, 15), monitor.ray_jobs_url
(GH_MONITOR__RAY_JOBS_URL; default ray_address when http(s)://, else http://127.0.0.1:8265),
ray.auth_token_file; the bus, metadata URLs,
topics.sensors and sink.group_id name what the lag is measured on.
"""


def build_parser() -> argparse.ArgumentParser:
    """The monitor's command line."""
    parser = argparse.ArgumentParser(prog="python -m app.entrypoints.monitor", description=MONITOR_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML settings file (env GH_* overrides it)")
    parser.add_argument("--host", default=None, help="address /metrics binds to (default: settings monitor.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port of /metrics (default: settings monitor.port, 9108; 0 picks a free one)")
    parser.add_argument("--interval-s", type=float, default=None, help="seconds between refreshes (default: settings monitor.interval_s, 15)")
    parser.add_argument("--once", action="store_true", help="refresh once, print the /metrics exposition and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the monitor until SIGTERM or Ctrl-C (or once, with ``--once``); the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from prometheus_client import REGISTRY, generate_latest, start_http_server

    from app.config import load_settings
    from app.observability.monitor import Monitor

    settings = load_settings(args.config)
    options = {k: v for k, v in {"host": args.host, "port": args.port, "interval_s": args.interval_s}.items() if v is not None}
    config = settings.monitor.model_copy(update=options)
    monitor = Monitor(settings)
    REGISTRY.register(monitor)
    if args.once:
        monitor.refresh()
        sys.stdout.write(generate_latest(REGISTRY).decode())
        monitor.close()
        return 0
    server, _ = start_http_server(config.port, addr=config.host, registry=REGISTRY)
    print(f"monitor: serving http://{config.host}:{server.server_port}/metrics, refreshing every {config.interval_s:g} s", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        monitor.run(stop, config.interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        monitor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
