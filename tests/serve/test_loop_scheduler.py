"""The control loop's schedule without Ray: replicas sharing a fleet through the embedded metadata
store, one of them dying mid-interval with greenhouses claimed and undecided.

Every greenhouse must get exactly one decision per interval; the dead replica's greenhouses at most
one interval late. The plant is simulated (event time: the readings' clock), so intervals pass as
fast as the test feeds readings; leases and the sweep run on the wall clock, shortened.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from app.config import Settings
from app.contracts.vocabulary import ACTUATORS
from app.control.core import Controller, ControlPolicy
from app.control.decision_record import Route
from app.control.fleet_decisions import FleetDecider
from app.control.loop_ledger import LoopLedger, interval_start, owner_of
from app.metadata import DECISIONS, open_metadata
from app.preprocess.features import FeatureParams
from app.serve.loop_scheduler import LoopScheduler
from app.serve.serving_models import Served
from tests.control.test_core import toy

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
INTERVAL_S = 300.0
FLEET = [f"gh-{i:02d}" for i in range(12)]


class FakeWindow:
    """The online window as the scheduler reads it: every greenhouse's newest reading is ``now``."""

    def __init__(self) -> None:
        self.now = T0

    def greenhouses(self) -> list[str]:
        return list(FLEET)

    def latest_ts(self, greenhouse_id: str) -> datetime:
        return self.now

    def features(self, greenhouse_id: str, params: Any, as_of: datetime | None = None) -> dict[str, Any]:
        return {"ts": as_of or self.now, "air_temp_c": 17.0, "rh_pct": 70.0, "outside_temp_c": 5.0, "solar_w_m2": 0.0, **{a: 0.0 for a in ACTUATORS}}

    def provenance(self, greenhouse_id: str, as_of: datetime | None = None) -> dict[str, Any]:
        return {"count": 10, "bus_offsets": {"0": 42}}


class FakeOnline:
    def __init__(self, window: FakeWindow) -> None:
        self.window = window

    async def wait_for(self, greenhouse_id: str, as_of: datetime, timeout_s: float) -> None:
        return None


class FakeModels:
    config = type("Config", (), {"dry_run": False})()

    async def route(self, greenhouse_id: str) -> Served:
        return Served(toy(), FeatureParams(), Route())

    def rollouts(self) -> dict[str, Any]:
        return {}


class Dispatch:
    """Dispatches at once; ``hang`` makes every dispatch wait forever (a replica that froze)."""

    def __init__(self) -> None:
        self.hang = False
        self.sent: list[Any] = []

    async def dispatch(self, command: Any) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        self.sent.append(command)
        return type("Result", (), {"status": "dispatched", "partition": 0, "offset": len(self.sent)})()


def scheduler(settings: Settings, store: Any, member: str, window: FakeWindow, dispatch: Dispatch) -> LoopScheduler:
    return LoopScheduler(
        settings,
        online=FakeOnline(window),
        models=FakeModels(),
        decider=FleetDecider(Controller(ControlPolicy(interval_s=INTERVAL_S))),
        dispatch=dispatch,
        ledger=LoopLedger(store, member, lease_s=0.3),
        records=store.collection(DECISIONS),
    )


def test_rendezvous_moves_only_the_dead_members_greenhouses():
    members = ["a", "b", "c"]
    before = {g: owner_of(g, members) for g in FLEET * 1}
    after = {g: owner_of(g, ["a", "c"]) for g in FLEET}
    assert {g for g in FLEET if before[g] != after[g]} == {g for g in FLEET if before[g] == "b"}
    assert owner_of("gh-01", []) is None
    assert interval_start(T0 + timedelta(seconds=299), INTERVAL_S) == T0


def test_two_replicas_one_dies_mid_interval_every_greenhouse_decided_once_per_interval(tmp_path):
    settings = Settings(data_dir=tmp_path, control={"simulated_plant": True, "interval_s": INTERVAL_S}, loop={"event_time": True, "poll_s": 0.02, "sweep_after_s": 0.5})
    store = open_metadata(settings.metadata_url)
    window = FakeWindow()
    dispatch_a, dispatch_b = Dispatch(), Dispatch()
    a, b = scheduler(settings, store, "replica-a", window, dispatch_a), scheduler(settings, store, "replica-b", window, dispatch_b)

    async def drive() -> None:
        task_a, task_b = asyncio.create_task(a.run()), asyncio.create_task(b.run())
        for k in range(6):
            window.now = T0 + timedelta(seconds=k * INTERVAL_S)
            if k == 3:  # replica a freezes with its greenhouses claimed, then dies
                dispatch_a.hang = True
            await asyncio.sleep(1.2 if k >= 3 else 0.4)
            if k == 3:
                task_a.cancel()
        b.stop()
        await task_b

    asyncio.run(drive())
    records = store.collection(DECISIONS).find({"source": "loop"})
    per_interval = Counter((r["greenhouse_id"], r["interval_start"]) for r in records)
    assert per_interval and max(per_interval.values()) == 1, "a greenhouse decided twice in one interval"
    for k in range(6):
        start = T0 + timedelta(seconds=k * INTERVAL_S)
        decided = {g for (g, s) in per_interval if s == start}
        assert decided == set(FLEET), f"interval {k}: skipped {sorted(set(FLEET) - decided)}"
    owned_by_a = {g for g in FLEET if owner_of(g, ["replica-a", "replica-b"]) == "replica-a"}
    assert owned_by_a, "the hash gave replica a nothing: the test would not test a move"
    late = {r["greenhouse_id"] for r in records if r["interval_start"] == T0 + timedelta(seconds=3 * INTERVAL_S) and r["greenhouse_id"] in owned_by_a}
    assert late == owned_by_a
    assert all(r["requested_by"] == "control-loop" and r["model"]["version"] == "1" and r["readings"]["bus_offsets"] == {"0": 42} for r in records)
    assert b.history and b.history[-1]["skipped"] == 0


def test_each_rollout_verdict_goes_to_on_verdict_and_a_failing_tick_is_logged(tmp_path, caplog):
    from app.control.rollout import Verdict, VersionFigures

    class Models(FakeModels):
        def rollouts(self) -> dict[str, Any]:
            return {"gh-forecast": {}, "broken": {}}

    class Rollouts:
        def tick(self, name: str, now: datetime, by: str) -> Verdict:
            if name == "broken":
                raise RuntimeError("store down")
            return Verdict("hold", "waiting", VersionFigures(errors_n=3), VersionFigures(errors_n=2))

    settings = Settings(data_dir=tmp_path, control={"simulated_plant": True, "interval_s": INTERVAL_S})
    store = open_metadata(settings.metadata_url)
    seen: list[Verdict] = []
    loop = LoopScheduler(
        settings,
        online=FakeOnline(FakeWindow()),
        models=Models(),
        decider=FleetDecider(Controller(ControlPolicy(interval_s=INTERVAL_S))),
        dispatch=Dispatch(),
        ledger=LoopLedger(store, "replica-a", lease_s=0.3),
        records=store.collection(DECISIONS),
        rollouts=Rollouts(),
        on_verdict=seen.append,
    )
    asyncio.run(loop._step_rollouts(T0))
    assert [v.reason for v in seen] == ["waiting"]
    assert "rollout step of broken failed: store down" in caplog.text
