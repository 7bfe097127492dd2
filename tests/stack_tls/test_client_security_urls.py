"""Client security carried by the product's URLs (no engine needed): Kafka's query parameters, the
MLflow server's CA, MongoDB options that would switch verification off, the Ray token sources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.bus.kafka import KafkaBus, client_security
from app.metadata.mongo import MongoStore
from app.orchestration.ray_jobs import ray_auth_headers
from app.tracking.client import SERVER_CERT_ENV, Tracking, server_url, trust_server_ca

PASSWORD = "s3cret-do-not-print"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {"password": tmp_path / "kafka-password", "ca": tmp_path / "ca.crt", "cert": tmp_path / "client.crt", "key": tmp_path / "client.key"}
    paths["password"].write_text(PASSWORD + "\n")
    for name in ("ca", "cert", "key"):
        paths[name].write_text("pem")
    return {k: str(v) for k, v in paths.items()}


def sasl_url(files: dict[str, str], **extra: str) -> str:
    query = f"security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512&sasl_username=greenhouse&sasl_password_file={files['password']}&ssl_cafile={files['ca']}"
    return "kafka://127.0.0.1:9092?" + "&".join([query, *(f"{k}={v}" for k, v in extra.items())])


def test_plain_kafka_urls_need_no_security():
    assert client_security("kafka://127.0.0.1:9092") == {}
    assert client_security("kafka://h1:9092,h2:9092") == {}


def test_sasl_ssl_url_gives_kafka_python_settings_with_the_password_from_its_file(files):
    config = client_security(sasl_url(files))
    assert config == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "greenhouse",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": files["ca"],
        "ssl_check_hostname": True,
    }


def test_mutual_tls_url(files):
    url = f"kafka://127.0.0.1:9092?security_protocol=SSL&ssl_cafile={files['ca']}&ssl_certfile={files['cert']}&ssl_keyfile={files['key']}"
    config = client_security(url)
    assert config["security_protocol"] == "SSL" and config["ssl_certfile"] == files["cert"] and config["ssl_keyfile"] == files["key"]
    assert config["ssl_check_hostname"] is True


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("security_protocol=SASL_SSL&sasl_mechanism=PLAIN&sasl_username=u&sasl_pasword_file=/x", "unknown Kafka URL parameter 'sasl_pasword_file'"),
        ("ssl_check_hostname=false", "unknown Kafka URL parameter 'ssl_check_hostname'"),
        ("security_protocol=SSL&security_protocol=SSL", "given twice"),
        ("security_protocol=TLS", "not one of"),
        ("security_protocol=SASL_SSL&sasl_mechanism=GSSAPI&sasl_username=u&sasl_password_file={password}", "sasl_mechanism 'GSSAPI'"),
        ("security_protocol=SASL_SSL&sasl_mechanism=PLAIN", "needs sasl_username, sasl_password_file"),
        ("sasl_username=u", "need security_protocol=SASL_SSL"),
        ("ssl_cafile={ca}", "need security_protocol=SSL or SASL_SSL"),
        ("security_protocol=SSL&ssl_certfile={cert}", "go together"),
        ("security_protocol=SSL&ssl_cafile=/nowhere/ca.crt", "no such file /nowhere/ca.crt"),
        ("security_protocol=SASL_SSL&sasl_mechanism=PLAIN&sasl_username=u&sasl_password_file=/nowhere/pw", "cannot read sasl_password_file /nowhere/pw"),
        ("security_protocol=SSL&ssl_cafile=", "is empty"),
    ],
)
def test_bad_kafka_url_parameters_are_clear_errors(files, query, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        client_security("kafka://127.0.0.1:9092?" + query.format(**files))


def test_the_password_is_never_in_errors_or_the_bus_url(files):
    bus = KafkaBus(sasl_url(files))  # opens nothing until used
    assert PASSWORD not in bus.url and PASSWORD not in repr(bus)
    with pytest.raises(ValueError) as err:
        client_security(sasl_url(files, bogus="1"))
    assert PASSWORD not in str(err.value)


def test_tracking_url_carries_the_server_ca(files, monkeypatch):
    monkeypatch.setenv(SERVER_CERT_ENV, "-")  # so that teardown restores the variable Tracking sets
    monkeypatch.delenv(SERVER_CERT_ENV)
    assert server_url("sqlite:////tmp/mlflow.db") == ("sqlite:////tmp/mlflow.db", None)
    assert server_url("https://mlflow:5000") == ("https://mlflow:5000", None)
    assert server_url(f"https://mlflow:5000?ca_file={files['ca']}") == ("https://mlflow:5000", Path(files["ca"]))
    tracking = Tracking(f"https://127.0.0.1:5000/?ca_file={files['ca']}")
    assert tracking.url == "https://127.0.0.1:5000/" and os.environ[SERVER_CERT_ENV] == files["ca"]
    assert tracking.client.tracking_uri == "https://127.0.0.1:5000/"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://mlflow:5000?verify=false", "only ca_file"),
        ("https://mlflow:5000?ca_file={ca}&ca_file={ca}", "only ca_file"),
        ("http://mlflow:5000?ca_file={ca}", "needs https"),
        ("https://mlflow:5000?ca_file=/nowhere/ca.crt", "no such file"),
    ],
)
def test_bad_tracking_urls(files, url, message):
    with pytest.raises(ValueError, match=message):
        server_url(url.format(**files))


def test_one_process_trusts_one_mlflow_ca(files, tmp_path, monkeypatch):
    monkeypatch.setenv(SERVER_CERT_ENV, files["ca"])
    trust_server_ca(Path(files["ca"]))  # the same one: fine
    other = tmp_path / "other-ca.crt"
    other.write_text("pem")
    with pytest.raises(ValueError, match="names another CA"):
        trust_server_ca(other)


@pytest.mark.parametrize("option", ["tlsInsecure=true", "tlsAllowInvalidCertificates=true", "tlsallowinvalidhostnames=true"])
def test_metadata_urls_that_switch_verification_off_are_refused(option):
    with pytest.raises(ValueError, match="switches TLS verification off"):
        MongoStore(f"mongodb://127.0.0.1:1/db?tls=true&{option}")


def test_ray_token_from_argument_file_or_rays_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    token_file = tmp_path / "ray-token"
    token_file.write_text("tok-from-file\n")
    assert ray_auth_headers(token_file=token_file) == {"Authorization": "Bearer tok-from-file"}
    assert ray_auth_headers("explicit", token_file=token_file) == {"Authorization": "Bearer explicit"}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert ray_auth_headers() == {"Authorization": "Bearer tok-from-file"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-from-env")
    assert ray_auth_headers() == {"Authorization": "Bearer tok-from-env"}  # Ray's order: the token, then its file
    with pytest.raises(ValueError, match="cannot read the Ray auth token file"):
        ray_auth_headers(token_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        ray_auth_headers(token_file=tmp_path / "empty")
