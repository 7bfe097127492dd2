"""Sink benchmark: the lake sink's rows/s against a consume-only drain of the same topic, with one
worker and with several.

Produces ``--rows`` readings (8 greenhouses, 30-s steps) to a fresh topic of ``--partitions``
partitions, then in one run measures
- ``drain``: one consumer that only polls every message (no parsing, no writes): the baseline;
- ``sink xN``: for N = 1 and each of ``--workers``, N :class:`LakeSink` workers, each in its own
  process (the way ``jobs.sink --workers`` runs them, as separate actors), sharing the partitions by
  their leases, each sinking into a lake folder and consumer group of its own run. The clock
  starts when every worker is ready (settings read, stores open, heartbeat written) and stops when
  the checkpoints cover every row.

Prints rows/s per mode, sink/drain per N and the scaling efficiency (rows/s of N workers over N
times that of one). ``--rounds R`` repeats the drain and the sinks, taking turns, and keeps each
mode's best round: on a machine others share, a load spike then does not decide a ratio.

On Kafka it first measures the producer's compression (``topics.compression``): the same readings
produced to a fresh topic per codec (``--codecs``, default ``none,zstd``) through the bus's own
``produce`` in batches of 5,000, then drained by one consumer: records/s each way, the bytes the
brokers store for the topic (the record batches as the producer compressed them, which is also
what crosses the network to the brokers and back to every consumer; from ``describe_log_dirs``)
and the ratios against ``none``. The sink's own topic is produced with the settings' codec.
Backends by URL (embedded defaults in a temp dir)::

    python bench/sink.py [--rows 200000] [--workers 2] [--codecs none,zstd] [--bus-url kafka://127.0.0.1:9092]
        [--lake-url webhdfs://greenhouse@127.0.0.1:9870/bench] [--metadata-url mongodb://127.0.0.1:27017/bench]

Progress goes to stderr; the last line is one JSON document with every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.bus import OutgoingRecord, open_bus  # noqa: E402
from app.config import Settings  # noqa: E402
from app.ingest.sink import LakeSink  # noqa: E402
from app.ingest.sink_stats import SinkStats, merge_stats  # noqa: E402
from app.lake import Lake  # noqa: E402
from app.metadata import open_metadata  # noqa: E402

LEASE_TTL_S = 3.0  # workers settle their shares within a second (a third of it)


def with_path(url: str, change: Callable[[str], str]) -> str:
    """``url`` with its path changed by ``change`` (query and credentials kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=change(parts.path)))


def in_folder(path: str, folder: str) -> str:
    return f"{path.rstrip('/')}/{folder}"


def progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def open_sink(settings: Settings, worker_id: str) -> LakeSink:
    return LakeSink(settings, open_bus(settings.bus_url, topics=settings.topics), Lake.from_url(settings.lake_url), open_metadata(settings.metadata_url), worker_id=worker_id)


def sink_worker(settings_data: dict[str, Any], worker_id: str, ready: Any, go: Any, done: Any) -> None:
    """One worker process: open, say it is alive (so that the others count it), wait, sink."""
    sink = open_sink(Settings.model_validate(settings_data), worker_id)
    sink.ownership.leases.heartbeat()
    ready.put(worker_id)
    go.wait()
    done.put(sink.run(until_idle=True, idle_polls=3).as_dict())


def timed_sink(settings: Settings, workers: int, rows: int) -> tuple[float, dict[str, Any]]:
    """Seconds for ``workers`` worker processes to checkpoint all ``rows``, and their merged stats."""
    ctx = mp.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=sink_worker, args=(settings.for_replicas(), f"w{i}", ready, go, done)) for i in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    watcher = open_sink(settings, "bench-watcher")  # reads checkpoints only; never runs
    go.set()
    t = time.perf_counter()
    while watcher.committed_offsets_total() < rows:
        time.sleep(0.02)
    seconds = time.perf_counter() - t
    stats = merge_stats(SinkStats(**done.get(timeout=300)) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return seconds, stats.as_dict()


def produce(settings: Settings, rows: int) -> float:
    """Produce ``rows`` readings to the sensor topic; the seconds the produce calls took."""
    bus = open_bus(settings.bus_url, topics=settings.topics)
    bus.create_topic(settings.topics.sensors, settings.topics.partitions)
    chunks: list[list[OutgoingRecord]] = [[]]
    for record in readings(rows):
        chunks[-1].append(record)
        if len(chunks[-1]) == 5000:
            chunks.append([])
    seconds = 0.0
    for chunk in chunks:
        if chunk:
            t = time.perf_counter()
            bus.produce(settings.topics.sensors, chunk)
            seconds += time.perf_counter() - t
    bus.close()
    return seconds


def readings(rows: int) -> list[OutgoingRecord]:
    """``rows`` readings of 8 greenhouses, 30-s steps, keyed by greenhouse."""
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    out = []
    for i in range(rows):
        gh = f"gh-{i % 8 + 1:02d}"
        reading = {
            "schema_version": 1,
            "greenhouse_id": gh,
            "device_id": f"{gh}-climate",
            "ts": (start + timedelta(seconds=30 * (i // 8))).isoformat().replace("+00:00", "Z"),
            "measurements": {"air_temp_c": 21.0 + (i % 40) / 10, "rh_pct": 70.0, "co2_ppm": 450.0},
        }
        out.append(OutgoingRecord(orjson.dumps(reading), key=gh.encode()))
    return out


def stored_bytes(bus: Any, topic: str) -> int:
    """Bytes the brokers hold for ``topic`` (every replica's log segments, summed)."""
    total = 0
    for broker in bus.admin.describe_log_dirs({topic: list(range(bus.partitions_for(topic)))}):
        for log_dir in broker["log_dirs"]:
            for found in log_dir["topics"]:
                if found["name"] == topic:
                    total += sum(p["partition_size"] for p in found["partitions"])
    return total


def compression_phase(base: Settings, rows: int, codecs: list[str], run: str, rounds: int = 1) -> dict[str, dict[str, Any]]:
    """Per codec: produce ``rows`` readings to a fresh topic, then drain it; the bytes the brokers
    store, and records/s each way (the best of ``rounds`` rounds, the codecs taking turns, so
    that a load spike on a shared machine does not decide the comparison)."""
    out: dict[str, dict[str, Any]] = {}
    for round_no in range(rounds):
        for codec in codecs:
            topics = base.topics.model_copy(update={"sensors": f"bench.codec.{codec}.{run}.r{round_no}", "compression": codec})
            settings = base.model_copy(update={"topics": topics})
            produce_s = produce(settings, rows)
            bus = open_bus(settings.bus_url, topics=settings.topics)
            time.sleep(1.0)  # log sizes are read from the segments: let the last appends land
            stored = stored_bytes(bus, topics.sensors)
            drain_s = drain_seconds(settings, rows, 20_000, f"bench-codec-{codec}-{run}-r{round_no}")
            bus.close()
            progress(
                f"codec {codec} (round {round_no + 1}/{rounds}): produce {rows / produce_s:,.0f} rows/s, {stored:,} bytes stored ({stored / rows:.1f} per record), drain {rows / drain_s:,.0f} rows/s"
            )
            best = out.setdefault(codec, {"produce_rows_per_s": 0, "stored_bytes": stored, "bytes_per_record": round(stored / rows, 1), "drain_rows_per_s": 0})
            best["produce_rows_per_s"] = max(best["produce_rows_per_s"], round(rows / produce_s))
            best["drain_rows_per_s"] = max(best["drain_rows_per_s"], round(rows / drain_s))
    return out


def print_codecs(codecs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The codec table, and each codec's ratios against ``none`` (when measured)."""
    print(f"{'codec':8} {'produce rows/s':>15} {'stored bytes':>13} {'B/record':>9} {'drain rows/s':>13} {'bytes/none':>11} {'produce/none':>13} {'drain/none':>11}")
    ratios: dict[str, float] = {}
    none = codecs.get("none")
    for codec, r in codecs.items():
        line = f"{codec:8} {r['produce_rows_per_s']:>15} {r['stored_bytes']:>13} {r['bytes_per_record']:>9} {r['drain_rows_per_s']:>13}"
        if none and codec != "none":
            for name, key in (("bytes", "stored_bytes"), ("produce", "produce_rows_per_s"), ("drain", "drain_rows_per_s")):
                ratios[f"{codec}_over_none_{name}"] = r[f"{name}_over_none"] = round(r[key] / none[key], 3)
            line += f" {r['bytes_over_none']:>11.3f} {r['produce_over_none']:>13.3f} {r['drain_over_none']:>11.3f}"
        print(line)
    if ratios:
        print(" ".join(f"{k} {v}" for k, v in ratios.items()))
    return ratios


def drain_seconds(settings: Settings, rows: int, batch: int, group: str) -> float:
    consumer = open_bus(settings.bus_url, topics=settings.topics).consumer(group, [settings.topics.sensors])
    t = time.perf_counter()
    drained = 0
    while drained < rows:
        drained += len(consumer.poll(batch, 2.0))
    seconds = time.perf_counter() - t
    consumer.close()
    return seconds


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="readings to produce and sink (default 200000)")
    parser.add_argument("--batch", type=int, default=20_000, help="sink.max_batch_records: records per poll and per chunk (default 20000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the bench topic (default 4)")
    parser.add_argument("--workers", default="2", help="comma-separated worker counts to run besides 1 (default 2; '' for none)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of drain and sinks, taking turns; each mode's best round counts (on a shared machine; default 1)")
    parser.add_argument("--codecs", default="none,zstd", help="producer codecs to compare on Kafka, comma-separated ('' for none; default none,zstd)")
    parser.add_argument("--codec-rounds", type=int, default=2, help="rounds of the codec comparison, codecs taking turns; the best rows/s counts (default 2)")
    parser.add_argument("--codecs-only", action="store_true", help="only the producer codec comparison (Kafka)")
    parser.add_argument("--bus-url", help="default: an embedded bus in a temp dir")
    parser.add_argument("--lake-url", help="default: a local lake in a temp dir")
    parser.add_argument("--metadata-url", help="default: an embedded store in a temp dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="gh-bench-sink-"))
    overrides = {k: v for k, v in {"bus_url": args.bus_url, "metadata_url": args.metadata_url}.items() if v}
    if args.metadata_url:  # a database of its own (the URL's query keeps its TLS options)
        overrides["metadata_url"] = with_path(args.metadata_url, lambda path: f"/{path.strip('/') or 'bench'}_{run}")
    sensors = f"bench.sensors.{run}"
    base = Settings(
        data_dir=root,
        topics={"sensors": sensors, "deadletter": f"bench.dead.{run}", "partitions": args.partitions},
        sink={"max_batch_records": args.batch, "lease_ttl_s": LEASE_TTL_S, "poll_timeout_s": 0.2},
        **overrides,
    )
    codecs: dict[str, dict[str, Any]] = {}
    codec_ratios: dict[str, float] = {}
    wanted = list(dict.fromkeys(c.strip() for c in args.codecs.split(",") if c.strip()))
    if base.bus_url.startswith("kafka:") and wanted:
        progress(f"producer codecs {wanted}: {args.rows} readings each ...")
        codecs = compression_phase(base, args.rows, wanted, run, rounds=args.codec_rounds)
        codec_ratios = print_codecs(codecs)
    if args.codecs_only:
        print(json.dumps({"bench": "sink", "rows": args.rows, "partitions": args.partitions, "codecs": codecs, **codec_ratios}))
        return 0
    progress(f"producing {args.rows} readings to {base.bus_url.split('?')[0]} (compression {base.topics.compression}) ...")
    produce(base, args.rows)
    counts = [1] + [int(n) for n in args.workers.split(",") if n.strip() and int(n) > 1]
    results: dict[int, dict[str, Any]] = {}
    drain_s = float("inf")
    for round_no in range(args.rounds):  # drain and sinks take turns; each keeps its best round
        drain_s = min(drain_s, drain_seconds(base, args.rows, args.batch, f"bench-drain-{run}-r{round_no}"))
        progress(f"drain (round {round_no + 1}/{args.rounds}): best {args.rows / drain_s:,.0f} rows/s")
        for n in counts:
            folder = f"{run}/x{n}-r{round_no}"
            lake = with_path(args.lake_url, partial(in_folder, folder=folder)) if args.lake_url else f"file://{root}/lake-{n}-r{round_no}"
            settings = base.model_copy(update={"lake_url": lake, "sink": base.sink.model_copy(update={"group_id": f"bench-sink-{run}-x{n}-r{round_no}"})})
            seconds, stats = timed_sink(settings, n, args.rows)
            assert stats["rows_written"] == args.rows, stats
            progress(f"sink x{n} (round {round_no + 1}/{args.rounds}): {args.rows / seconds:,.0f} rows/s")
            if n not in results or seconds < results[n]["seconds"]:
                results[n] = {"seconds": round(seconds, 2), "rows_per_s": round(args.rows / seconds), "files": stats["files"], "chunks": stats["chunks"]}
    drain_rps = args.rows / drain_s
    one = results[1]["rows_per_s"]
    print(f"{'mode':8} {'rows':>9} {'seconds':>9} {'rows/s':>11} {'/drain':>7} {'efficiency':>10}")
    print(f"{'drain':8} {args.rows:>9} {drain_s:>9.2f} {drain_rps:>11.0f}")
    for n, r in results.items():
        r["over_drain"] = round(r["rows_per_s"] / drain_rps, 4)
        r["scaling_efficiency"] = round(r["rows_per_s"] / (n * one), 3)
        print(f"{'sink x' + str(n):8} {args.rows:>9} {r['seconds']:>9.2f} {r['rows_per_s']:>11} {r['over_drain']:>7.3f} {r['scaling_efficiency']:>10.3f}   files={r['files']} chunks={r['chunks']}")
    print(f"sink_over_drain {results[1]['over_drain']:.4f}")
    summary = {
        "bench": "sink",
        "rows": args.rows,
        "partitions": args.partitions,
        "bus": base.bus_url.split(":")[0],
        "lake": (args.lake_url or "file:").split(":")[0],
        "metadata": base.metadata_url.split(":")[0],
        "drain_rows_per_s": round(drain_rps),
        "sink_rows_per_s": one,
        "sink_over_drain": results[1]["over_drain"],
        "workers": {str(n): r for n, r in results.items()},
        "compression": base.topics.compression,
        "codecs": codecs,
        **codec_ratios,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
