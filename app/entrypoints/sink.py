"""Lake sink job: ``python -m jobs.sink [--follow] [--workers N] [--config FILE]``.

Consumes the sensor topic into Parquet in the lake with one metadata document per file, exactly
once in effect. Prints one JSON summary line; exits non-zero on failure. The same command is the
``ray job submit`` entrypoint. With one worker (the default) the sink runs in the job's own process
and needs no Ray; with ``--workers N`` (or ``sink.workers``) it joins the Ray cluster and runs N
sink actors that share the topic's partitions (app.ingest.sink_pool). Several jobs may also run at
once: partition leases fence them (app.ingest.leases), so each partition has one writer.

Records the bus deleted by retention before the sink read them stop it: exit 1, the partition, its
checkpoint and the earliest offset still held in the summary's error, ``gh_bus_offsets_lost_total``
counted. ``--accept-data-loss`` (settings ``sink.accept_data_loss``) moves on past them instead,
logged as errors and counted (``offsets_skipped`` in the summary).
"""

from __future__ import annotations

import os

from app.entrypoints.runtime import init_ray, job_parser, run_job

# Set by Ray's job supervisor in the environment of a submitted job's driver (and nowhere else).
RAY_JOB_DRIVER_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), sink, print the summary; the exit code."""
    parser = job_parser("sink", "Sink the sensor topic into the lake (Parquet, greenhouse_id=/date=) with batch metadata.")
    parser.add_argument("--follow", action="store_true", help="keep consuming instead of stopping when idle")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--idle-polls", type=int, default=2, help="empty polls before stopping (without --follow)")
    parser.add_argument("--workers", type=int, default=None, help="sink workers sharing the partitions, as Ray actors (default: settings sink.workers, 1 = no Ray)")
    parser.add_argument("--worker-id", default=None, help="this worker's name with one worker (default <sink.group_id>-0; a restart under the same name takes its partitions back at once)")
    parser.add_argument("--accept-data-loss", action="store_true", help="move on past records deleted by retention before the sink read them (logged and counted) instead of stopping with an error")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers is not None and args.workers > 1 and args.worker_id:
        parser.error("--worker-id names the one worker of a single-worker sink; with --workers N the workers are <sink.group_id>-0..N-1")

    def body() -> dict:
        from app.config import load_settings

        settings = load_settings(args.config)
        if args.accept_data_loss:
            settings = settings.model_copy(update={"sink": settings.sink.model_copy(update={"accept_data_loss": True})})
        workers = args.workers or settings.sink.workers
        options = {"until_idle": not args.follow, "idle_polls": args.idle_polls, "max_seconds": args.max_seconds}
        if workers > 1:
            from app.ingest.sink_pool import run_sink_workers

            init_ray(settings.ray.auth_token_file)
            return run_sink_workers(settings, workers, options)
        if RAY_JOB_DRIVER_ENV in os.environ:
            # One worker needs no Ray, but submitted as a Ray job it joins its cluster so that its
            # gh_sink_* metrics reach the node's metrics agent (app.ingest.sink_metrics).
            init_ray(settings.ray.auth_token_file)
        from app.bus import open_bus
        from app.ingest.sink import LakeSink
        from app.lake import Lake
        from app.metadata import open_metadata

        sink = LakeSink(settings, open_bus(settings.bus_url, topics=settings.topics), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url), worker_id=args.worker_id)
        return sink.run(**options).as_dict()

    return run_job("sink", body)
