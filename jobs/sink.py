"""Lake sink job: ``python -m jobs.sink [--follow] [--config FILE]``.

Consumes the sensor topic into Parquet in the lake with one metadata document per file, exactly
once in effect. Prints one JSON summary line; exits non-zero on failure. The same command is the
``ray job submit`` entrypoint. (The sink is a single sequential consumer, so it needs no
``ray.init()``: it runs wherever the job's driver runs.)
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.sink",
        description="Sink the sensor topic into the lake (Parquet, greenhouse_id=/date=) with batch metadata.",
    )
    parser.add_argument("--config", help="YAML settings file (env GH_* overrides it)")
    parser.add_argument("--follow", action="store_true", help="keep consuming instead of stopping when idle")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--idle-polls", type=int, default=2, help="empty polls before stopping (without --follow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from app.bus import open_bus
    from app.config import load_settings
    from app.ingest.sink import LakeSink
    from app.lake import Lake
    from app.metadata import open_metadata

    try:
        settings = load_settings(args.config)
        sink = LakeSink(settings, open_bus(settings.bus_url), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url))
        stats = sink.run(until_idle=not args.follow, idle_polls=args.idle_polls, max_seconds=args.max_seconds)
    except Exception as exc:  # one line for the operator, the traceback in the log
        logging.getLogger("jobs.sink").exception("sink failed")
        print(orjson.dumps({"job": "sink", "ok": False, "error": f"{type(exc).__name__}: {exc}"}).decode())
        return 1
    print(orjson.dumps({"job": "sink", "ok": True, **stats.as_dict()}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
