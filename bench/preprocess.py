"""Preprocess benchmark: the Ray Data feature build against single-process builds, same features.

Writes synthetic raw readings in the lake's layout and schema (``raw/sensors/greenhouse_id=/date=``,
three device rows per greenhouse-minute), then times, in one run, for each size:

- ``pandas``: pyarrow reads the raw lake, then the pandas reference of the features
  (``tests/helpers/pandas_reference.py``, what the product ran before the numpy engine) per
  greenhouse, one process;
- ``local``:  the same read, then the product's feature engine (``feature_table``) per greenhouse,
  one process;
- ``ray``:    the preprocess job's Ray Data build (one task per greenhouse partition: read its
  pruned files, ``feature_table``; materialize), 2 CPUs.

All three build the same feature rows; prints rows/s, the ratios ray/pandas and ray/local and
how time grows with rows.

Then, on the feature rows of the smallest size, the feature set's Parquet encoding: the same table
written and read back (one process, best of three, a local file) uncompressed, with snappy (Ray
Data's default, what feature sets were written with before), with zstd, and as the preprocess
job writes it now (``FEATURES_PARQUET``: zstd over byte-stream-split floats); prints bytes, write
and read seconds, and the ratios job/snappy and job/none. ``--codecs-only`` runs just that (no
Ray).

    python bench/preprocess.py [--rows 1000000,10000000] [--codecs-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.contracts.reading import MEASUREMENT_NAMES  # noqa: E402
from app.ingest.records import RAW_SCHEMA  # noqa: E402
from app.preprocess.features import FeatureParams, feature_table  # noqa: E402
from app.preprocess.pipeline import FEATURES_PARQUET  # noqa: E402
from tests.helpers.pandas_reference import greenhouse_features as pandas_features  # noqa: E402

COLUMNS = ["greenhouse_id", "device_id", "ts", *MEASUREMENT_NAMES]


def write_raw_lake(root: Path, rows: int, days_per_greenhouse: int = 20) -> tuple[int, int]:
    """Synthetic raw readings (vectorised): returns (greenhouses, rows written)."""
    per_day = 1440 * 3
    greenhouses = max(1, round(rows / (per_day * days_per_greenhouse)))
    rng = np.random.default_rng(0)
    written = 0
    minute = np.arange(1440)
    for g in range(greenhouses):
        for d in range(days_per_greenhouse):
            day = pd.Timestamp("2026-03-01", tz="UTC") + pd.Timedelta(days=d)
            ts = (day + pd.to_timedelta(minute, unit="min")).to_numpy()
            diurnal = np.sin(2 * np.pi * (minute / 1440 - 0.3))
            n = len(minute)
            nan = np.full(n, np.nan)
            climate = {
                "air_temp_c": 19 + 4 * diurnal + rng.normal(0, 0.1, n),
                "rh_pct": 75 - 10 * diurnal + rng.normal(0, 0.5, n),
                "co2_ppm": 450 + rng.normal(0, 5, n),
                "par_umol_m2_s": np.clip(900 * diurnal, 0, None),
            }
            weather = {
                "outside_temp_c": 8 + 6 * diurnal + rng.normal(0, 0.2, n),
                "outside_rh_pct": 80 - 15 * diurnal,
                "solar_w_m2": np.clip(600 * diurnal, 0, None),
                "wind_m_s": np.abs(rng.normal(3, 1, n)),
            }
            act = {"vent_pct": np.clip(40 * diurnal, 0, 100), "heat_pct": np.clip(-60 * diurnal, 0, 100), "screen_pct": np.where(diurnal < 0, 100.0, 0.0)}
            parts = []
            for device, values in (("climate", climate), ("weather", weather), ("actuators", act)):
                cols = {c: values.get(c, nan) for c in COLUMNS[3:]}
                parts.append(pd.DataFrame({"device_id": f"gh-{g:03d}-{device}", "ts": ts, **cols}))
            frame = pd.concat(parts, ignore_index=True)
            frame["schema_version"] = 1
            frame["extra_json"] = None
            frame["bus_topic"] = "bench"
            frame["bus_partition"] = 0
            frame["bus_offset"] = np.arange(len(frame))
            frame["ingested_at"] = frame["ts"]
            table = pa.Table.from_pandas(frame, schema=RAW_SCHEMA, preserve_index=False)
            out = root / "raw" / "sensors" / f"greenhouse_id=gh-{g:03d}" / f"date={day.date().isoformat()}"
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out / "part-0.parquet", compression="zstd")  # as the lake sink writes
            written += table.num_rows
    return greenhouses, written


def pandas_build(root: Path, params: FeatureParams) -> int:
    table = pads.dataset(root / "raw" / "sensors", format="parquet", partitioning="hive").to_table(columns=COLUMNS)
    frame = table.to_pandas()
    out = [pandas_features(group, params) for _, group in frame.groupby("greenhouse_id", sort=True)]
    return sum(len(o) for o in out)


def local_build(root: Path, params: FeatureParams) -> int:
    """The feature engine in this process, one greenhouse partition after the other."""
    dataset = pads.dataset(root / "raw" / "sensors", format="parquet", partitioning="hive")
    rows = 0
    for greenhouse in sorted(p.name.split("=", 1)[1] for p in (root / "raw" / "sensors").iterdir()):
        table = dataset.to_table(columns=COLUMNS, filter=pads.field("greenhouse_id") == greenhouse)
        rows += feature_table(table, greenhouse, params).num_rows
    return rows


CODECS: dict[str, dict] = {"none": {"compression": "none"}, "snappy": {"compression": "snappy"}, "zstd": {"compression": "zstd"}, "job": FEATURES_PARQUET}


def feature_rows(root: Path, params: FeatureParams) -> pa.Table:
    """Every greenhouse's feature rows, built by the feature engine in this process."""
    dataset = pads.dataset(root / "raw" / "sensors", format="parquet", partitioning="hive")
    tables = []
    for greenhouse in sorted(p.name.split("=", 1)[1] for p in (root / "raw" / "sensors").iterdir()):
        table = dataset.to_table(columns=COLUMNS, filter=pads.field("greenhouse_id") == greenhouse)
        tables.append(feature_table(table, greenhouse, params))
    return pa.concat_tables(tables)


def codec_compare(table: pa.Table, folder: Path, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Bytes, write and read seconds (best of ``repeats``) of ``table`` as Parquet per codec."""
    out: dict[str, dict[str, float]] = {}
    for codec, options in CODECS.items():
        path = folder / f"features-{codec}.parquet"
        write_s = read_s = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            pq.write_table(table, path, **options)
            write_s = min(write_s, time.perf_counter() - t)
            t = time.perf_counter()
            back = pq.read_table(path)
            read_s = min(read_s, time.perf_counter() - t)
        assert back.num_rows == table.num_rows
        out[codec] = {"bytes": path.stat().st_size, "write_s": round(write_s, 4), "read_s": round(read_s, 4)}
    return out


def print_codecs(rows: int, codecs: dict[str, dict[str, float]]) -> dict[str, float]:
    """The codec table and its ratios (the job's encoding against snappy and uncompressed)."""
    print(f"feature set encodings ({rows} feature rows, one local file, best of 3; job = {FEATURES_PARQUET}):")
    print(f"{'codec':>8} {'bytes':>12} {'write s':>9} {'read s':>8} {'bytes/none':>11}")
    for codec, r in codecs.items():
        print(f"{codec:>8} {r['bytes']:>12} {r['write_s']:>9.3f} {r['read_s']:>8.3f} {r['bytes'] / codecs['none']['bytes']:>11.3f}")
    j, s, n = codecs["job"], codecs["snappy"], codecs["none"]
    ratios = {
        "job_over_snappy_bytes": round(j["bytes"] / s["bytes"], 3),
        "job_over_none_bytes": round(j["bytes"] / n["bytes"], 3),
        "zstd_over_snappy_bytes": round(codecs["zstd"]["bytes"] / s["bytes"], 3),
        "job_over_snappy_write_s": round(j["write_s"] / s["write_s"], 3),
        "job_over_snappy_read_s": round(j["read_s"] / s["read_s"], 3),
    }
    print(" ".join(f"{k} {v}" for k, v in ratios.items()))
    return ratios


def ray_build(root: Path, params: FeatureParams) -> int:
    """The preprocess job's own Ray Data build (app.preprocess.pipeline.build_features_dataset)."""
    from app.lake import Lake
    from app.preprocess.pipeline import PreprocessParams, build_features_dataset

    pp = PreprocessParams(horizons_min=params.horizons_min, step_s=params.step_s, max_fill_steps=params.max_fill_steps)
    return build_features_dataset(Lake.from_url(f"file://{root}"), pp).materialize().count()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1000000,10000000", help="raw row counts, comma-separated")
    parser.add_argument("--codecs-only", action="store_true", help="only the feature set codec comparison, on the smallest size (no Ray)")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.rows.split(",")]
    params = FeatureParams(horizons_min=(5, 15, 30, 60))
    root = Path(tempfile.mkdtemp(prefix="gh-bench-pp-codec-"))
    try:
        write_raw_lake(root, min(sizes))
        features = feature_rows(root, params)
        codecs = codec_compare(features, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    codec_summary = {"feature_rows": features.num_rows, "codecs": codecs, **print_codecs(features.num_rows, codecs)}
    if args.codecs_only:
        print(json.dumps({"bench": "preprocess", "feature_set_codecs": codec_summary}))
        return 0

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = []
    try:
        for size in sizes:
            root = Path(tempfile.mkdtemp(prefix="gh-bench-pp-"))
            try:
                greenhouses, raw_rows = write_raw_lake(root, size)
                timed = {}
                for name, build in (("pandas", pandas_build), ("local", local_build), ("ray", ray_build)):
                    t = time.perf_counter()
                    timed[name] = (build(root, params), time.perf_counter() - t)
                assert len({n for n, _ in timed.values()}) == 1, timed  # the same feature rows
                (n_ray, ray_s), pandas_s, local_s = timed["ray"], timed["pandas"][1], timed["local"][1]
                results.append(
                    {
                        "raw_rows": raw_rows,
                        "greenhouses": greenhouses,
                        "feature_rows": n_ray,
                        "pandas_s": round(pandas_s, 2),
                        "local_s": round(local_s, 2),
                        "ray_s": round(ray_s, 2),
                        "pandas_rows_per_s": round(raw_rows / pandas_s),
                        "local_rows_per_s": round(raw_rows / local_s),
                        "ray_rows_per_s": round(raw_rows / ray_s),
                        "ray_over_pandas": round(pandas_s / ray_s, 3),
                        "ray_over_local": round(local_s / ray_s, 3),
                    }
                )
                print(f"  {raw_rows:>10} raw rows: pandas {pandas_s:7.1f} s, local {local_s:7.1f} s, ray {ray_s:7.1f} s", file=sys.stderr)
            finally:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        ray.shutdown()
    print(f"{'raw rows':>10} {'pandas s':>9} {'local s':>8} {'ray s':>8} {'pandas rows/s':>14} {'ray rows/s':>11} {'ray/pandas':>10} {'ray/local':>10}")
    for r in results:
        print(f"{r['raw_rows']:>10} {r['pandas_s']:>9} {r['local_s']:>8} {r['ray_s']:>8} {r['pandas_rows_per_s']:>14} {r['ray_rows_per_s']:>11} {r['ray_over_pandas']:>10} {r['ray_over_local']:>10}")
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = {m: round((b[f"{m}_s"] / a[f"{m}_s"]) / (b["raw_rows"] / a["raw_rows"]), 3) for m in ("pandas", "local", "ray")}
        print(f"time growth per row growth ({a['raw_rows']} -> {b['raw_rows']}): {growth} (1.0 = linear)")
    print(json.dumps({"bench": "preprocess", "results": results, "feature_set_codecs": codec_summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
