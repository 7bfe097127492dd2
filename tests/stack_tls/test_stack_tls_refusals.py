"""The stack's engines speak TLS and authenticate their clients: the configured client (the product's
URLs) gets in, a client without TLS, without credentials, with a wrong credential or not trusting
the stack's CA is refused. Real engines, started by `stack/stack up` (the test command does it).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from app.bus import OutgoingRecord, open_bus
from app.bus.kafka import bootstrap_servers, client_security
from app.orchestration.ray_jobs import make_client, ray_auth_headers, submit_and_wait
from app.security.pki import LocalCA
from app.tracking import Tracking
from app.tracking.client import server_url
from tests.helpers.engines import engine_url, missing, ray_token_file, stack_setting, with_database

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

REFUSED_WITHIN_S = 4  # a refused Kafka client gives up bootstrapping after this long


def ca_file() -> str:
    path = stack_setting("GH_TEST_CA_FILE")
    if not path or not Path(path).is_file():
        missing("the stack's CA file is missing (GH_TEST_CA_FILE); run `stack/stack up`")
    return str(path)


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory) -> Path:
    """A CA nobody in the stack trusts, with a client certificate of its own."""
    ca = LocalCA.ensure(tmp_path_factory.mktemp("stranger-ca"), name="a stranger's CA")
    issued = ca.issue("greenhouse", client=True)
    bundle = ca.directory / "client.pem"
    bundle.write_bytes(issued.cert_path.read_bytes() + issued.key_path.read_bytes())
    return ca.directory


# -- Kafka: SASL_SSL (SCRAM-SHA-512), no plaintext listener --------------------------------------------


@pytest.fixture(scope="module")
def kafka_url() -> str:
    url = engine_url("kafka")
    if client_security(url).get("security_protocol") != "SASL_SSL":
        pytest.fail(f"the stack's Kafka URL is not SASL_SSL: {url.split('?')[0]} (tests must run against the TLS listener)")
    return url


def kafka_admin(url: str, **overrides):
    from kafka import KafkaAdminClient

    settings = {**client_security(url), **overrides}
    settings = {k: v for k, v in settings.items() if v is not None}
    return KafkaAdminClient(bootstrap_servers=bootstrap_servers(url), client_id="tls-test", request_timeout_ms=5000, bootstrap_timeout_ms=REFUSED_WITHIN_S * 1000, **settings)


def test_kafka_accepts_the_configured_client_end_to_end(kafka_url):
    topic = f"tls-{uuid.uuid4().hex[:10]}"
    bus = open_bus(kafka_url)
    try:
        bus.create_topic(topic, 2)
        assert all(r.ok for r in bus.produce(topic, [OutgoingRecord(b"over-tls", key=b"gh-01")]))
        consumer = bus.consumer(f"g-{topic}", [topic])
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got = [m.value for m in consumer.poll(10, 1.0)]
        consumer.close()
        assert got == [b"over-tls"]
        bus.admin.delete_topics([topic])
    finally:
        bus.close()
    admin = kafka_admin(kafka_url)  # the same timeouts as the refused clients below
    admin.close()


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        (
            "no TLS, no credentials",
            {"security_protocol": "PLAINTEXT", "sasl_mechanism": None, "sasl_plain_username": None, "sasl_plain_password": None, "ssl_cafile": None, "ssl_check_hostname": None},
        ),
        ("no TLS, with the credentials", {"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": None, "ssl_check_hostname": None}),
        ("TLS without credentials", {"security_protocol": "SSL", "sasl_mechanism": None, "sasl_plain_username": None, "sasl_plain_password": None}),
        ("TLS, wrong password", {"sasl_plain_password": "not-the-password"}),
        ("TLS, unknown user", {"sasl_plain_username": "mallory"}),
    ],
)
def test_kafka_refuses_clients_without_tls_or_credentials(kafka_url, case, overrides):
    from kafka.errors import KafkaError

    t0 = time.monotonic()
    with pytest.raises(KafkaError):  # KafkaTimeoutError: unable to bootstrap; the broker drops it
        kafka_admin(kafka_url, **overrides).list_topics()
    assert time.monotonic() - t0 < REFUSED_WITHIN_S + 10, case


def test_kafka_client_verifies_the_broker_certificate(kafka_url, stranger_ca, caplog):
    from kafka.errors import KafkaError

    caplog.set_level(logging.ERROR, logger="kafka")
    with pytest.raises(KafkaError):
        kafka_admin(kafka_url, ssl_cafile=str(stranger_ca / "ca.crt")).list_topics()
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_kafka_controller_listener_is_tls_too(kafka_url):
    """Port 9093 (KRaft controller) presents the stack's certificate: no plaintext listener left."""
    context = ssl.create_default_context(cafile=ca_file())
    with socket.create_connection(("127.0.0.1", 9093), timeout=5) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)


# -- FerretDB (MongoDB wire): TLS only, client certificate required -------------------------------------


def mongo_ping(url: str) -> None:
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def strip_query(url: str, *drop: str) -> str:
    parts = urlsplit(url)
    query = "&".join(p for p in parts.query.split("&") if p.split("=", 1)[0] not in drop)
    return urlunsplit(parts._replace(query=query))


def test_ferretdb_accepts_tls_with_the_client_certificate():
    url = engine_url("mongodb")
    assert "tls=true" in url and "tlsCertificateKeyFile=" in url, "the stack's metadata URL must use TLS with a client certificate"
    from app.metadata import open_metadata

    database = f"gh_tls_{uuid.uuid4().hex[:8]}"
    store = open_metadata(with_database(url, database))
    try:
        store.collection("devices").insert_one({"_id": "d1", "greenhouse_id": "gh-01"})
        assert store.collection("devices").find_one({"_id": "d1"})["greenhouse_id"] == "gh-01"
    finally:
        store.client.drop_database(database)
        store.close()


def test_ferretdb_refuses_plain_connections_and_clients_without_certificate(stranger_ca):
    import pymongo.errors

    url = engine_url("mongodb")
    cases = {
        "plain": strip_query(url, "tls", "tlsCAFile", "tlsCertificateKeyFile"),
        "TLS without a client certificate": strip_query(url, "tlsCertificateKeyFile"),
        "a client certificate of another CA": strip_query(url, "tlsCertificateKeyFile") + f"&tlsCertificateKeyFile={stranger_ca / 'client.pem'}",
        "not trusting the server (another CA)": strip_query(url, "tlsCAFile") + f"&tlsCAFile={stranger_ca / 'ca.crt'}",
    }
    for case, bad in cases.items():
        with pytest.raises(pymongo.errors.PyMongoError):
            mongo_ping(bad)
            pytest.fail(f"FerretDB accepted a client with {case}")
    mongo_ping(url)  # and the configured one still gets in


# -- MLflow: HTTPS, verified ------------------------------------------------------------------------------


def test_mlflow_over_https_verified_by_the_product_client(tmp_path):
    url = engine_url("mlflow")
    base, ca = server_url(url)
    assert base.startswith("https://") and ca is not None
    tracking = Tracking(url)
    experiment = f"tls-{uuid.uuid4().hex[:8]}"
    with tracking.run(experiment, "r1") as run_id:
        tracking.log_metrics(run_id, {"rmse_air_temp_c": 0.5})
        note = tmp_path / "note.txt"
        note.write_text("over https")
        tracking.log_artifact(run_id, note)  # through the server's artifact proxy, over TLS too
    assert tracking.get_run(run_id)["metrics"]["rmse_air_temp_c"] == 0.5
    assert tracking.download_artifact(run_id, "note.txt", tmp_path / "dl").read_text() == "over https"
    tracking.client.delete_experiment(tracking.ensure_experiment(experiment))


def test_mlflow_refuses_plain_http_and_unverified_clients():
    base, ca = server_url(engine_url("mlflow"))
    plain = base.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):  # the TLS port drops a plain HTTP request
        httpx.get(f"{plain}/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{base}/health", timeout=5)  # the system's CAs do not know the stack's CA
    assert httpx.get(f"{base}/health", timeout=5, verify=str(ca)).text == "OK"


# -- Ray: token auth on the Jobs API and the GCS ------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_head() -> tuple[str, str]:
    url = engine_url("ray")
    token_file = ray_token_file()
    if not token_file or not Path(token_file).is_file():
        missing(f"the stack's Ray token file is missing ({token_file}); run `stack/stack up ray`")
    return url, str(token_file)


def test_ray_jobs_api_refuses_requests_without_the_token(ray_head):
    url, token_file = ray_head
    sid = f"unauth-{uuid.uuid4().hex[:8]}"
    body = {"entrypoint": "python -c 'print(1)'", "submission_id": sid}
    assert httpx.post(f"{url}/api/jobs/", json=body, timeout=10).status_code == 401
    assert httpx.post(f"{url}/api/jobs/", json=body, headers={"Authorization": "Bearer not-the-token"}, timeout=10).status_code == 403
    assert httpx.get(f"{url}/api/jobs/", timeout=10).status_code == 401
    jobs = make_client(url, ray_auth_headers(token_file=token_file)).list_jobs()
    assert sid not in {j.submission_id for j in jobs}, "a job submitted without the token exists"


def test_ray_job_submitted_with_the_token_runs(ray_head):
    url, token_file = ray_head
    result = submit_and_wait(url, 'python -c "print(\'{\\"ok\\": true}\')"', submission_id=f"auth-{uuid.uuid4().hex[:8]}", headers=ray_auth_headers(token_file=token_file), timeout_s=180, poll_s=0.5)
    assert result.ok and result.summary == {"ok": True}, result.logs[-2000:]


def test_ray_driver_without_the_token_cannot_join_the_head(ray_head):
    """The GCS (gRPC) checks the token too: a driver without it is refused, one with it joins."""
    code = "import ray; ray.init(address='127.0.0.1:6379', log_to_driver=False); print('joined', ray.get(ray.remote(lambda: 41 + 1).remote()))"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base_env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # RAY_NUM_REDIS_GET_RETRIES: the driver tries the GCS this many times, one second apart (20 by default)
    without = subprocess.run([sys.executable, "-c", code], env={**base_env, "RAY_AUTH_MODE": "disabled", "RAY_NUM_REDIS_GET_RETRIES": "3"}, capture_output=True, text=True, timeout=180)
    assert without.returncode != 0 and "joined" not in without.stdout, without.stdout[-2000:]
    assert "InvalidAuthToken" in without.stderr, without.stderr[-3000:]
    with_token = subprocess.run([sys.executable, "-c", code], env={**base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": ray_head[1]}, capture_output=True, text=True, timeout=180)
    assert with_token.returncode == 0 and "joined 42" in with_token.stdout, with_token.stderr[-3000:]
