"""The Alertmanager webhook receiver alone, over real HTTP: what it stores, lists and refuses."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import pytest

from app.observability.alert_receiver import AlertLog, AlertReceiver


def webhook(*alerts: dict, version: str = "4") -> dict:
    """A body shaped like Alertmanager 0.25's webhook (the fields it sends, not only those kept)."""
    return {
        "receiver": "webhook",
        "status": "firing",
        "alerts": list(alerts),
        "groupLabels": {"alertname": "GhGreenhouseSilent"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9193",
        "version": version,
        "groupKey": '{}:{alertname="GhGreenhouseSilent"}',
        "truncatedAlerts": 0,
    }


def alert(greenhouse_id: str, status: str = "firing") -> dict:
    return {
        "status": status,
        "labels": {"alertname": "GhGreenhouseSilent", "greenhouse_id": greenhouse_id, "severity": "warning"},
        "annotations": {"summary": f"Greenhouse {greenhouse_id} has sent no reading for 16m"},
        "startsAt": "2026-12-05T01:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": f"fp-{greenhouse_id}",
    }


@pytest.fixture
def receiver(tmp_path):
    server = AlertReceiver("127.0.0.1", 0, AlertLog(tmp_path / "alerts.jsonl"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}", tmp_path / "alerts.jsonl"
    server.shutdown()
    server.server_close()


def test_a_webhook_is_stored_one_line_per_alert_and_listed(receiver):
    url, path = receiver
    answer = httpx.post(f"{url}/alerts", json=webhook(alert("gh-a"), alert("gh-b", "resolved")))
    assert answer.status_code == 200 and answer.json() == {"received": 2}

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(a["labels"]["greenhouse_id"], a["status"]) for a in lines] == [("gh-a", "firing"), ("gh-b", "resolved")]
    assert set(lines[0]) == {"status", "labels", "annotations", "startsAt", "fingerprint", "received_at"}
    assert lines[0]["fingerprint"] == "fp-gh-a" and lines[0]["received_at"].endswith("Z")

    listed = httpx.get(f"{url}/alerts").json()["alerts"]
    assert listed == lines
    only_b = httpx.get(f"{url}/alerts", params={"alertname": "GhGreenhouseSilent", "greenhouse_id": "gh-b"}).json()["alerts"]
    assert [a["fingerprint"] for a in only_b] == ["fp-gh-b"]
    assert [a["fingerprint"] for a in httpx.get(f"{url}/alerts", params={"limit": 1}).json()["alerts"]] == ["fp-gh-b"]
    assert httpx.get(f"{url}/-/ready").status_code == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"[]", "body: expected a JSON object"),
        (json.dumps(webhook(alert("gh-a"), version="3")).encode(), "version: expected '4'"),
        (json.dumps({"version": "4"}).encode(), "alerts: expected a list"),
        (json.dumps(webhook({**alert("gh-a"), "status": "sleeping"})).encode(), "alerts[0].status"),
        (json.dumps(webhook({**alert("gh-a"), "labels": {"greenhouse_id": "gh-a"}})).encode(), "alerts[0].labels: no alertname"),
        (json.dumps(webhook({**alert("gh-a"), "labels": {"alertname": "X", "n": 1}})).encode(), "alerts[0].labels: every value must be a string"),
        (json.dumps(webhook({k: v for k, v in alert("gh-a").items() if k != "fingerprint"})).encode(), "alerts[0].fingerprint"),
    ],
)
def test_a_malformed_body_is_refused_with_400_and_a_reason_and_nothing_stored(receiver, body, reason):
    url, path = receiver
    answer = httpx.post(f"{url}/alerts", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(reason), answer.json()
    assert not path.exists() or path.read_text() == ""
    assert httpx.get(f"{url}/alerts").json() == {"alerts": []}


def test_other_paths_are_404(receiver):
    url, _ = receiver
    assert httpx.post(f"{url}/", json=webhook(alert("gh-a"))).status_code == 404
    assert httpx.get(f"{url}/nothing").status_code == 404


def test_help_explains_the_command():
    done = subprocess.run([sys.executable, "-m", "app.observability.alert_receiver", "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "Alertmanager webhooks" in done.stdout and "--port" in done.stdout and "--file" in done.stdout
