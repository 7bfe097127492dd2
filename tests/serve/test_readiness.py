"""Readiness: the policy (since when, reset on recovery), the cached and bounded checks, and the
ingest gateway's ``/healthz`` and ``/readyz`` over in-process HTTP on the embedded engines with a
bus or a metadata store made unavailable (no Ray). The control app's probes are exercised through
Serve in ``test_control_app.py``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from app.bus import BusError, open_bus
from app.config import Settings
from app.metadata import open_metadata
from app.serve.readiness import DependencyState, Readiness, Unavailable, advance, bus_check, failure_reason, in_thread, model_check, store_check, verdict

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


class Clocks:
    """A monotonic clock and a wall clock that move together, by hand."""

    def __init__(self) -> None:
        self.s = 0.0

    def monotonic(self) -> float:
        return self.s

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.s)


class Dependency:
    """A check that answers, raises or hangs as the test says, counting its runs."""

    def __init__(self) -> None:
        self.mode = "up"  # up | down | hang
        self.runs = 0
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.mode == "down":
            raise ConnectionError("connect to mongodb://admin:s3cret@db.internal:27017 refused")
        if self.mode == "hang":
            await self.release.wait()


# -- the policy ---------------------------------------------------------------------------------


def test_since_is_the_first_failure_and_is_kept_while_failures_repeat():
    first = advance(None, "no answer within 2 s", T0)
    assert (first.ok, first.since, first.reason) == (False, T0, "no answer within 2 s")
    later = advance(first, "check failed (BusError)", T0 + timedelta(seconds=30))
    assert later.since == T0 and later.reason == "check failed (BusError)" and later.checked_at == T0 + timedelta(seconds=30)


def test_recovery_clears_since_and_a_new_outage_starts_its_own():
    down = advance(None, "x", T0)
    up = advance(down, None, T0 + timedelta(seconds=5))
    assert (up.ok, up.since, up.reason) == (True, None, None)
    again = advance(up, "x", T0 + timedelta(seconds=9))
    assert again.since == T0 + timedelta(seconds=9)


def test_reasons_are_short_and_never_the_exception_text():
    leaky = ConnectionError("connect to kafka://user:pa55@broker:9093 failed: " + "x" * 500)
    assert failure_reason(leaky) == "check failed (ConnectionError)"
    assert failure_reason(Unavailable("topic greenhouse.sensors missing")) == "topic greenhouse.sensors missing"
    assert len(failure_reason(Unavailable("y" * 500))) == 120


def test_the_verdict_is_ready_only_when_every_dependency_answered():
    ok = DependencyState(True, None, None, T0)
    down = DependencyState(False, "no answer within 2 s", T0, T0 + timedelta(seconds=4))
    assert verdict({"bus": ok, "metadata": ok}) == {
        "ready": True,
        "dependencies": {name: {"ok": True, "since": None, "reason": None, "checked_at": "2026-06-01T12:00:00Z"} for name in ("bus", "metadata")},
    }
    answer = verdict({"bus": ok, "metadata": down})
    assert answer["ready"] is False
    assert answer["dependencies"]["metadata"] == {"ok": False, "since": "2026-06-01T12:00:00Z", "reason": "no answer within 2 s", "checked_at": "2026-06-01T12:00:04Z"}
    never = verdict({"bus": ok, "model": None})
    assert never["ready"] is False and never["dependencies"]["model"] == {"ok": None, "since": None, "reason": "not checked yet", "checked_at": None}


# -- the checks, cached and bounded ---------------------------------------------------------------


def readiness(dependency: Dependency, clocks: Clocks, **kwargs) -> Readiness:
    return Readiness({"bus": dependency}, clock=clocks.monotonic, now=clocks.now, **kwargs)


def test_checks_are_cached_for_the_ttl():
    dependency, clocks = Dependency(), Clocks()
    probes = readiness(dependency, clocks, ttl_s=5.0)

    async def main():
        for _ in range(20):
            assert (await probes.verdict())["ready"] is True
        clocks.s = 4.9
        await probes.verdict()
        assert dependency.runs == 1  # a probe hammering /readyz does not hammer the bus
        clocks.s = 5.0
        await probes.verdict()
        assert dependency.runs == 2

    asyncio.run(main())


def test_since_is_kept_across_checks_and_reset_on_recovery():
    dependency, clocks = Dependency(), Clocks()
    probes = readiness(dependency, clocks, ttl_s=5.0)

    async def main():
        dependency.mode = "down"
        first = (await probes.verdict())["dependencies"]["bus"]
        clocks.s = 12.0
        second = (await probes.verdict())["dependencies"]["bus"]
        assert first["since"] == second["since"] == "2026-06-01T12:00:00Z" and second["checked_at"] == "2026-06-01T12:00:12Z"
        assert second["reason"] == "check failed (ConnectionError)" and "s3cret" not in str(second)
        dependency.mode = "up"
        clocks.s = 20.0
        assert (await probes.verdict()) == {"ready": True, "dependencies": {"bus": {"ok": True, "since": None, "reason": None, "checked_at": "2026-06-01T12:00:20Z"}}}

    asyncio.run(main())


def test_a_hung_check_answers_no_answer_within_the_timeout_and_is_not_started_twice():
    dependency, clocks = Dependency(), Clocks()
    dependency.mode = "hang"
    probes = Readiness({"bus": dependency}, ttl_s=0.0, timeout_s=0.2, now=clocks.now)

    async def main():
        started = time.monotonic()
        answer = await probes.verdict()
        assert time.monotonic() - started < 2.0
        assert answer["ready"] is False and answer["dependencies"]["bus"]["reason"] == "no answer within 0.2 s"
        started = time.monotonic()
        for _ in range(5):
            assert (await probes.verdict())["ready"] is False
        assert time.monotonic() - started < 0.5  # the run is past its deadline: not waited for again (5 waits: 1 s)
        assert dependency.runs == 1  # still the first run, waited on, not stacked
        dependency.mode = "up"
        dependency.release.set()
        await asyncio.sleep(0.01)
        assert (await probes.verdict())["ready"] is True

    asyncio.run(main())


def test_a_hung_blocking_call_holds_one_thread_and_recovers_when_it_returns():
    release, calls = threading.Event(), []

    def call() -> None:
        calls.append(1)
        release.wait(10)

    probes = Readiness({"metadata": in_thread(call)}, ttl_s=0.0, timeout_s=0.05)

    async def main():
        for _ in range(3):
            assert (await probes.verdict())["dependencies"]["metadata"]["reason"] == "no answer within 0.05 s"
        assert len(calls) == 1
        release.set()
        await asyncio.sleep(0.05)
        assert (await probes.verdict())["ready"] is True

    asyncio.run(main())


def test_concurrent_probes_share_one_check():
    dependency, clocks = Dependency(), Clocks()
    probes = readiness(dependency, clocks)

    async def main():
        answers = await asyncio.gather(*(probes.verdict() for _ in range(10)))
        assert all(a["ready"] for a in answers) and dependency.runs == 1

    asyncio.run(main())


def test_last_known_never_waits_and_starts_the_due_checks_in_the_background():
    dependency, clocks = Dependency(), Clocks()
    dependency.mode = "hang"
    probes = readiness(dependency, clocks, timeout_s=10.0)

    async def main():
        started = time.monotonic()
        known = probes.last_known()
        assert time.monotonic() - started < 0.1
        assert known["ready"] is False and known["dependencies"]["bus"]["reason"] == "not checked yet"
        dependency.mode = "up"
        dependency.release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if probes.last_known()["ready"]:
                break
        assert probes.last_known()["ready"] is True and dependency.runs == 1

    asyncio.run(main())


def test_bus_check_needs_every_topic(tmp_path):
    bus = open_bus(f"file://{tmp_path / 'bus'}")
    bus.create_topic("greenhouse.sensors", 2)
    present, missing = bus_check(bus, {"greenhouse.sensors"}), bus_check(bus, {"greenhouse.sensors", "greenhouse.deadletter"})

    async def main():
        await present()
        with pytest.raises(Unavailable, match="topic greenhouse.deadletter missing"):
            await missing()

    asyncio.run(main())


def test_store_check_reads_the_store(tmp_path):
    store = open_metadata(f"file://{tmp_path / 'metadata'}")
    asyncio.run(store_check(store.collection("devices"))())
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):  # a closed store: the check raises, readiness says which
        asyncio.run(store_check(store.collection("devices"))())


def test_model_check_fails_while_no_model_is_served():
    class Models:
        def __init__(self) -> None:
            self.forecaster = None
            self.asked: list[str] = []

        async def route(self, greenhouse_id: str):
            self.asked.append(greenhouse_id)
            return type("Served", (), {"forecaster": self.forecaster})()

    models = Models()
    check = model_check(models)  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="no model loaded"):
        asyncio.run(check())
    models.forecaster = object()
    asyncio.run(check())
    assert models.asked == ["readiness-probe", "readiness-probe"]


# -- the ingest gateway's probes over HTTP (in-process, embedded engines) --------------------------


class SwitchableBus:
    """The embedded bus, whose metadata requests fail or hang while ``mode`` says so."""

    def __init__(self, bus) -> None:
        self._bus, self.mode, self.release = bus, "up", threading.Event()

    def list_topics(self) -> dict[str, int]:
        if self.mode == "down":
            raise BusError("cannot reach Kafka at ['broker:9092']: NoBrokersAvailable", retriable=True)
        if self.mode == "hang":
            self.release.wait(10)
        return self._bus.list_topics()

    def __getattr__(self, name):
        return getattr(self._bus, name)


class SwitchableStore:
    """The embedded store, whose collections' reads fail or hang while ``mode`` says so."""

    def __init__(self, store) -> None:
        self._store, self.mode, self.release = store, "up", threading.Event()

    def collection(self, name: str):
        outer, inner = self, self._store.collection(name)

        class Switchable:
            def find_one(self, *args, **kwargs):
                if outer.mode == "down":
                    raise OSError("database is locked")
                if outer.mode == "hang":
                    outer.release.wait(10)
                return inner.find_one(*args, **kwargs)

            def __getattr__(self, attr):
                return getattr(inner, attr)

        return Switchable()

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def gateway(tmp_path):
    """The gateway's HTTP app with the readiness the Serve deployment builds, on a bus and a store
    that can be switched off; checks are not cached (ttl 0) and time out after 0.3 s."""
    from app.ingest.api import create_api
    from app.ingest.gateway import IngestService
    from app.security.credentials import DeviceRegistry
    from app.serve.ingest import gateway_readiness

    settings = Settings(data_dir=tmp_path / "gh")
    bus, store = SwitchableBus(open_bus(settings.bus_url)), SwitchableStore(open_metadata(settings.metadata_url))
    service = IngestService(settings, bus, DeviceRegistry(store))
    probes = gateway_readiness(settings, bus, store)
    probes.ttl_s, probes.timeout_s = 0.0, 0.3
    with TestClient(create_api(service, probes=probes)) as client:
        yield client, bus, store
        bus.release.set()  # hung checks return while their event loop still runs
        store.release.set()


def test_gateway_is_ready_when_the_bus_and_the_store_answer(gateway):
    client, _, _ = gateway
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert {name: dep["ok"] for name, dep in ready.json()["dependencies"].items()} == {"bus": True, "metadata": True}
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["ready"] is True and set(health["dependencies"]) == {"bus", "metadata"}
    spec = client.get("/openapi.json").json()["paths"]
    assert set(spec["/readyz"]["get"]["responses"]) == {"200", "503"}


def test_gateway_not_ready_while_the_bus_is_down_names_it_and_since_when(gateway):
    client, bus, _ = gateway
    bus.mode = "down"
    first = client.get("/readyz")
    assert first.status_code == 503 and first.json()["ready"] is False
    down = first.json()["dependencies"]["bus"]
    assert down["ok"] is False and down["reason"] == "check failed (BusError)" and down["since"]
    assert first.json()["dependencies"]["metadata"]["ok"] is True
    assert "broker" not in first.text
    time.sleep(0.05)
    second = client.get("/readyz").json()["dependencies"]["bus"]
    assert second["since"] == down["since"] and second["checked_at"] > down["checked_at"]
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["dependencies"]["bus"]["since"] == down["since"]  # alive, not ready
    bus.mode = "up"
    again = client.get("/readyz")
    recovered = again.json()["dependencies"]["bus"]
    assert again.status_code == 200 and (recovered["ok"], recovered["since"], recovered["reason"]) == (True, None, None)


def test_gateway_not_ready_while_the_store_hangs_and_the_probe_does_not_hang(gateway):
    client, _, store = gateway
    store.mode = "hang"
    started = time.monotonic()
    res = client.get("/readyz")
    assert time.monotonic() - started < 3.0
    assert res.status_code == 503
    assert res.json()["dependencies"]["metadata"]["reason"] == "no answer within 0.3 s" and res.json()["dependencies"]["bus"]["ok"] is True
    started = time.monotonic()
    assert client.get("/healthz").status_code == 200 and time.monotonic() - started < 1.0  # liveness never waits for a check
    store.mode = "up"
    store.release.set()
    deadline = time.monotonic() + 5
    while (res := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert res.status_code == 200 and res.json()["dependencies"]["metadata"]["ok"] is True
