"""Lake sink job: ``python -m jobs.sink [--follow] [--config FILE]``.

Consumes the sensor topic into Parquet in the lake with one metadata document per file, exactly
once in effect. Prints one JSON summary line; exits non-zero on failure. The same command is the
``ray job submit`` entrypoint. (The sink is a single sequential consumer, so it needs no
``ray.init()``: it runs wherever the job's driver runs.)
"""

from __future__ import annotations

from app.entrypoints.runtime import job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), sink, print the summary; the exit code."""
    parser = job_parser("sink", "Sink the sensor topic into the lake (Parquet, greenhouse_id=/date=) with batch metadata.")
    parser.add_argument("--follow", action="store_true", help="keep consuming instead of stopping when idle")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--idle-polls", type=int, default=2, help="empty polls before stopping (without --follow)")
    args = parser.parse_args(argv)

    def body() -> dict:
        from app.bus import open_bus
        from app.config import load_settings
        from app.ingest.sink import LakeSink
        from app.lake import Lake
        from app.metadata import open_metadata

        settings = load_settings(args.config)
        sink = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url))
        return sink.run(until_idle=not args.follow, idle_polls=args.idle_polls, max_seconds=args.max_seconds).as_dict()

    return run_job("sink", body)
