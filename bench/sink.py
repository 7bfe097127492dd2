"""Sink benchmark: the lake sink's rows/s against a consume-only drain of the same topic.

Produces ``--rows`` readings to a fresh topic, then in one run measures
- ``drain``: a consumer group that only polls every message (no parsing, no writes);
- ``sink``: :class:`LakeSink` (validate, dedupe, Parquet + metadata, checkpoint, commit);
and prints sink/drain. Backends by URL (embedded defaults in a temp dir):

    python bench/sink.py [--rows 200000] [--bus-url kafka://127.0.0.1:9092]
        [--lake-url webhdfs://greenhouse@127.0.0.1:9870/bench] [--metadata-url mongodb://127.0.0.1:27017/bench]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.bus import OutgoingRecord, open_bus  # noqa: E402
from app.config import Settings  # noqa: E402
from app.ingest.sink import LakeSink  # noqa: E402
from app.lake import Lake  # noqa: E402
from app.metadata import open_metadata  # noqa: E402


def with_path(url: str, change: Callable[[str], str]) -> str:
    """``url`` with its path changed by ``change`` (query and credentials kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=change(parts.path)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000, help="sink.max_batch_records")
    parser.add_argument("--bus-url")
    parser.add_argument("--lake-url")
    parser.add_argument("--metadata-url")
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="gh-bench-sink-"))
    overrides = {k: v for k, v in {"bus_url": args.bus_url, "lake_url": args.lake_url, "metadata_url": args.metadata_url}.items() if v}
    if args.lake_url:
        overrides["lake_url"] = with_path(args.lake_url, lambda path: f"{path.rstrip('/')}/{run}")
    if args.metadata_url:  # a database of its own (the URL's query keeps its TLS options)
        overrides["metadata_url"] = with_path(args.metadata_url, lambda path: f"/{path.strip('/') or 'bench'}_{run}")
    sensors = f"bench.sensors.{run}"
    settings = Settings(
        data_dir=root, topics={"sensors": sensors, "deadletter": f"bench.dead.{run}", "partitions": 4}, sink={"group_id": f"bench-sink-{run}", "max_batch_records": args.batch}, **overrides
    )
    bus = open_bus(settings.bus_url)
    bus.create_topic(sensors, 4)
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    print(f"# producing {args.rows} readings to {settings.bus_url} ...", file=sys.stderr)
    chunk = []
    for i in range(args.rows):
        gh = f"gh-{i % 8 + 1:02d}"
        reading = {
            "schema_version": 1,
            "greenhouse_id": gh,
            "device_id": f"{gh}-climate",
            "ts": (start + timedelta(seconds=30 * (i // 8))).isoformat().replace("+00:00", "Z"),
            "measurements": {"air_temp_c": 21.0 + (i % 40) / 10, "rh_pct": 70.0, "co2_ppm": 450.0},
        }
        chunk.append(OutgoingRecord(orjson.dumps(reading), key=gh.encode()))
        if len(chunk) == 5000:
            bus.produce(sensors, chunk)
            chunk = []
    if chunk:
        bus.produce(sensors, chunk)

    consumer = bus.consumer(f"bench-drain-{run}", [sensors])
    t = time.perf_counter()
    drained = 0
    while drained < args.rows:
        drained += len(consumer.poll(args.batch, 2.0))
    drain_s = time.perf_counter() - t
    consumer.close()

    sink = LakeSink(settings, bus, Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url))
    t = time.perf_counter()
    stats = sink.run(until_idle=True, idle_polls=1)
    sink_s = time.perf_counter() - t - settings.sink.poll_timeout_s  # minus the final empty poll
    assert stats.rows_written == args.rows, stats

    drain_rps, sink_rps = args.rows / drain_s, args.rows / sink_s
    print(f"{'mode':6} {'rows':>9} {'seconds':>9} {'rows/s':>11}")
    print(f"{'drain':6} {args.rows:>9} {drain_s:>9.2f} {drain_rps:>11.0f}")
    print(f"{'sink':6} {args.rows:>9} {sink_s:>9.2f} {sink_rps:>11.0f}   files={stats.files} chunks={stats.chunks}")
    print(f"sink_over_drain {sink_rps / drain_rps:.4f}")
    print(
        json.dumps(
            {
                "bench": "sink",
                "rows": args.rows,
                "bus": settings.bus_url.split(":")[0],
                "lake": settings.lake_url.split(":")[0],
                "metadata": settings.metadata_url.split(":")[0],
                "drain_rows_per_s": round(drain_rps),
                "sink_rows_per_s": round(sink_rps),
                "sink_over_drain": round(sink_rps / drain_rps, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
