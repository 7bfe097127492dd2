"""Smoke-test the local engines started by ``stack/stack up`` with the product's real clients.

Usage: ``python stack/smoke.py [service ...]`` (services: prometheus mlflow ferretdb kafka hdfs ray;
default: all). ``stack/stack smoke`` runs it with the venv's python and ``stack/env.sh`` sourced.

Each check does a real round trip, with the product's own client settings (TLS, SASL, the Ray token
from the URLs and variables ``stack/env.sh`` exports), and cleans up after itself:
- kafka: create a topic, produce keyed records, consume them in a consumer group, commit, check the
  committed offset, delete the topic (kafka-python).
- ferretdb: insert, find, create an index, list indexes, drop (pymongo).
- hdfs: write, list and read back a file through WebHDFS and the DataNode redirect (fsspec), and
  the same through pyarrow's FSSpecHandler.
- mlflow: create an experiment, log a run with a param, a metric and an artifact through the
  server's artifact proxy, read them back, delete the experiment (mlflow client).
- prometheus: /-/ready and every active scrape target up (targets API).
- ray: submit ``python -c "print(1)"`` through the Jobs API and wait for SUCCEEDED with "1" in its logs.

Prints one line per check and a closing "N passed, N failed" line; exits 1 when any check fails.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from urllib.parse import urlparse

SERVICES = ("prometheus", "mlflow", "ferretdb", "kafka", "hdfs", "ray")
RUN_ID = uuid.uuid4().hex[:8]


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def check_kafka() -> str:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    from app.bus.kafka import bootstrap_servers, client_security

    url = _env("GH_BUS_URL", "kafka://127.0.0.1:9092")
    bootstrap, security = bootstrap_servers(url), client_security(url)
    topic = f"stack-smoke-{RUN_ID}"
    group = f"stack-smoke-{RUN_ID}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stack-smoke", **security)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **security)
        for i in range(3):
            producer.send(topic, key=b"gh-1", value=f"reading-{i}".encode()).get(timeout=30)
        producer.flush()
        producer.close()

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **security)
        consumer.subscribe([topic])
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < 3 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                values.extend(r.value for r in records)
        consumer.commit()
        committed = consumer.committed(TopicPartition(topic, 0))
        consumer.close()
        if values != [b"reading-0", b"reading-1", b"reading-2"]:
            raise AssertionError(f"consumed {values!r}")
        if committed != 3:
            raise AssertionError(f"committed offset {committed!r}, expected 3")
        # kafka-python 3.x admin names: list_group_offsets / delete_groups (2.x: *_consumer_group*)
        offsets = admin.list_group_offsets(group).get(group, {})
        seen = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
        if seen != {0: 3}:
            raise AssertionError(f"group offsets seen by the admin client: {seen!r}")
        admin.delete_groups([group])
    finally:
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
    return f"{','.join(bootstrap)} ({security.get('security_protocol', 'PLAINTEXT')}): topic, produce 3, group consume + commit (offset 3)"


def check_ferretdb() -> str:
    import pymongo

    url = _env("GH_METADATA_URL", "mongodb://127.0.0.1:27017/greenhouse")
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
        coll = client["stack_smoke"][f"c_{RUN_ID}"]
        coll.insert_many([{"greenhouse_id": "gh-1", "n": i} for i in range(3)])
        name = coll.create_index([("greenhouse_id", 1), ("n", -1)])
        found = list(coll.find({"greenhouse_id": "gh-1", "n": {"$gte": 1}}, {"_id": 0}).sort("n", 1))
        if found != [{"greenhouse_id": "gh-1", "n": 1}, {"greenhouse_id": "gh-1", "n": 2}]:
            raise AssertionError(f"found {found!r}")
        if name not in coll.index_information():
            raise AssertionError(f"index {name} missing")
        version = client.server_info().get("version")
        coll.drop()
    finally:
        client.close()
    tls = bool(pymongo.uri_parser.parse_uri(url)["options"].get("tls"))
    return f"{url.split('?')[0]} (tls={tls}): insert/find/index (server reports {version})"


def check_hdfs() -> str:
    import pyarrow.fs as pafs
    from fsspec.implementations.webhdfs import WebHDFS

    url = urlparse(_env("GH_LAKE_URL", "webhdfs://greenhouse@127.0.0.1:9870/greenhouse"))
    user = url.username or "greenhouse"
    fs = WebHDFS(url.hostname or "127.0.0.1", port=url.port or 9870, user=user)
    base = f"/tmp/stack-smoke-{RUN_ID}"
    payload = b"greenhouse,air_temp_c\ngh-1,21.5\n" * 100
    try:
        fs.makedirs(base, exist_ok=True)
        with fs.open(f"{base}/a.csv", "wb") as f:
            f.write(payload)
        with fs.open(f"{base}/a.csv", "rb") as f:
            got = f.read()
        if got != payload:
            raise AssertionError(f"read back {len(got)} bytes, wrote {len(payload)}")
        listed = fs.ls(base, detail=False)
        if not any(p.rstrip("/").endswith("a.csv") for p in listed):
            raise AssertionError(f"listing {listed!r}")
        # the same filesystem as pyarrow sees it (what Ray Data is given)
        pa_fs = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
        with pa_fs.open_input_stream(f"{base}/a.csv") as s:
            if s.read() != payload:
                raise AssertionError("pyarrow read mismatch")
    finally:
        if fs.exists(base):
            fs.rm(base, recursive=True)
    return f"{url.hostname}:{url.port or 9870} as {user}: write/list/read {len(payload)} B (fsspec + pyarrow)"


def check_mlflow() -> str:
    import tempfile

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    from app.tracking.client import server_url, trust_server_ca

    url, ca_file = server_url(_env("GH_TRACKING_URL", "http://127.0.0.1:5000"))
    if ca_file is not None:
        trust_server_ca(ca_file)
    client = MlflowClient(tracking_uri=url)
    exp_id = client.create_experiment(f"stack-smoke-{RUN_ID}")
    try:
        run = client.create_run(exp_id)
        rid = run.info.run_id
        client.log_param(rid, "model", "smoke")
        client.log_metric(rid, "mae_c", 0.42)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "note.txt")
            with open(path, "w") as f:
                f.write("hello")
            client.log_artifact(rid, path)
            client.set_terminated(rid)
            arts = [a.path for a in client.list_artifacts(rid)]
            if "note.txt" not in arts:
                raise AssertionError(f"artifacts {arts!r}")
            local = client.download_artifacts(rid, "note.txt", d + "/dl")
            with open(local) as f:
                if f.read() != "hello":
                    raise AssertionError("artifact content mismatch")
        got = client.get_run(rid)
        if got.data.metrics.get("mae_c") != 0.42 or got.data.params.get("model") != "smoke":
            raise AssertionError(f"run data {got.data!r}")
    finally:
        client.delete_experiment(exp_id)
    return f"{url}: experiment, run, metric, param, artifact via proxy ({run.info.artifact_uri.split('/')[0]})"


def check_prometheus() -> str:
    import httpx

    url = _env("GH_PROMETHEUS_URL", "http://127.0.0.1:9090")
    with httpx.Client(base_url=url, timeout=10) as http:
        http.get("/-/ready").raise_for_status()
        # first scrapes happen within one scrape interval (10 s) of a target appearing
        deadline = time.monotonic() + 45
        while True:
            targets = http.get("/api/v1/targets", params={"state": "active"}).json()["data"]["activeTargets"]
            health = {f"{t['labels']['job']}@{t['labels']['instance']}": t["health"] for t in targets}
            down = {k: v for k, v in health.items() if v != "up"}
            if targets and not down:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not up: {down or 'none active'}")
            time.sleep(2)
    jobs = sorted({k.split("@")[0] for k in health})
    return f"{url}: {len(health)} targets up ({', '.join(jobs)})"


def check_ray() -> str:
    from ray.job_submission import JobStatus, JobSubmissionClient

    from app.orchestration.ray_jobs import ray_auth_headers

    url = _env("GH_RAY_ADDRESS", "http://127.0.0.1:8265")
    headers = ray_auth_headers()  # RAY_AUTH_TOKEN_PATH from stack/env.sh
    client = JobSubmissionClient(url, headers=headers)
    job_id = client.submit_job(entrypoint='python -c "print(1)"', submission_id=f"stack-smoke-{RUN_ID}")
    deadline = time.monotonic() + 180
    status = client.get_job_status(job_id)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {status} after 180 s")
        time.sleep(1)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    if status != JobStatus.SUCCEEDED or "1" not in logs.split():
        raise AssertionError(f"job {job_id} {status}; logs: {logs[-500:]!r}")
    client.delete_job(job_id)
    return f"{url} ({'token' if headers else 'no token'}): job {job_id} SUCCEEDED, printed 1"


CHECKS: dict[str, Callable[[], str]] = {"prometheus": check_prometheus, "mlflow": check_mlflow, "ferretdb": check_ferretdb, "kafka": check_kafka, "hdfs": check_hdfs, "ray": check_ray}


def main(argv: list[str]) -> int:
    names = argv or list(SERVICES)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown service(s): {unknown}; known: {list(SERVICES)}", file=sys.stderr)
        return 2
    passed = failed = 0
    for name in names:
        t0 = time.monotonic()
        try:
            detail = CHECKS[name]()
        except Exception as exc:  # noqa: BLE001 - report every engine, then fail
            failed += 1
            print(f"FAIL {name:<10} {time.monotonic() - t0:5.1f}s  {type(exc).__name__}: {exc}")
            if os.environ.get("STACK_SMOKE_TRACEBACK"):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name:<10} {time.monotonic() - t0:5.1f}s  {detail}")
        sys.stdout.flush()
    print(f"smoke: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
