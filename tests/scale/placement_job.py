"""A Ray job for the multi-node tests (``python tests/scale/placement_job.py [--sleep-s S]``): a
Ray Data pipeline whose tasks report the node they ran on. Prints one JSON line, the driver's
node and the nodes the Data tasks ran on, and with ``--out`` also writes it to that file (which
outlives the node, unlike the driver's log). ``--hold-s`` keeps the driver alive afterwards (a
job to kill a node under)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import ray


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--sleep-s", type=float, default=1.0, help="per Data task: long enough that tasks overlap")
    parser.add_argument("--hold-s", type=float, default=0.0)
    parser.add_argument("--out", default=None, help="also write the summary line to this file")
    args = parser.parse_args()
    # on a one-machine test cluster: join this node's raylet, not the head's (tests/helpers/ray_cluster.py)
    ray.init(_temp_dir=os.environ.get("GH_RAY_NODE_TEMP_DIR"))
    driver_node = ray.get_runtime_context().get_node_id()

    def tag(batch: dict) -> dict:
        time.sleep(args.sleep_s)
        node = ray.get_runtime_context().get_node_id()
        return {"id": batch["id"], "node": [node] * len(batch["id"])}

    rows = ray.data.range(args.blocks * 4, override_num_blocks=args.blocks).map_batches(tag, batch_size=4, num_cpus=0.5).take_all()
    line = json.dumps({"driver_node": driver_node, "task_nodes": sorted({r["node"] for r in rows}), "rows": len(rows)})
    print(line, flush=True)
    if args.out:
        Path(args.out).write_text(line)
    if args.hold_s:
        time.sleep(args.hold_s)


if __name__ == "__main__":
    main()
