"""Beyond loopback, the services refuse machine-made keys and certificates, a simulated plant and
an empty device registry, and say what to change."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.security.startup import UnsafeDeployment, deployment_problems, is_loopback, refuse_unsafe


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True), ("0.0.0.0", False), ("10.0.0.5", False), ("gateway.example", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_loopback_defaults_are_fine(tmp_path):
    refuse_unsafe(Settings(data_dir=tmp_path), devices_registered=False)


def test_exposed_with_defaults_is_refused_with_every_reason(tmp_path):
    settings = Settings(data_dir=tmp_path, serve={"host": "0.0.0.0"}, control={"simulated_plant": True})
    problems = deployment_problems(settings, devices_registered=False)
    assert len(problems) == 4
    with pytest.raises(UnsafeDeployment, match="signing_key_file") as caught:
        refuse_unsafe(settings, devices_registered=False)
    assert "tls_cert_file" in str(caught.value) and "greenhouse devices add" in str(caught.value)


def test_exposed_with_chosen_keys_and_certificates_starts(tmp_path):
    files = {n: tmp_path / n for n in ("sign.pem", "tls.crt", "tls.key", "ca.crt")}
    settings = Settings(
        data_dir=tmp_path,
        security={"https_host": "0.0.0.0", "tls_cert_file": files["tls.crt"], "tls_key_file": files["tls.key"], "ca_file": files["ca.crt"]},
        control={"signing_key_file": files["sign.pem"]},
    )
    assert deployment_problems(settings, devices_registered=True) == []
    assert deployment_problems(settings, devices_registered=False) == ["no device is registered: add one with `greenhouse devices add DEVICE --greenhouse GH`"]


def test_redact_hides_url_passwords_and_tokens():
    from app.security.redact import redact

    text = "MlflowException: cannot reach https://u:hunter2@mlflow:5000/api (Authorization: Bearer abc.def) token ghd_0123456789abcdef_" + "Q" * 43
    out = redact(text)
    assert "hunter2" not in out and "abc.def" not in out and "Q" * 43 not in out
    assert "https://u:***@mlflow:5000/api" in out and len(redact("x" * 1000)) == 300
