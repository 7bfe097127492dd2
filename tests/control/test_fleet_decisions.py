"""Batched decisions, shadow versions and decision records, with fake forecasters (no Ray)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np

from app.contracts.command import ModelRef
from app.control.core import Controller, ControlPolicy, GreenhouseState, ModelForecaster
from app.control.decision_record import ROLE_CANDIDATE, DecisionContext, Route, feature_row_sha256, policy_fingerprint
from app.control.fleet_decisions import Assignment, FleetDecider
from tests.control.test_core import FREE, NOW, state, toy


def counting(forecaster: ModelForecaster, calls: list[int], *, version: str | None = None, bias_c: float = 0.0) -> ModelForecaster:
    """``forecaster`` counting its calls (rows per call), optionally renamed and biased."""

    def predict(matrix, columns, horizons):
        calls.append(len(matrix))
        out = np.asarray(forecaster.predict(matrix, columns, horizons), dtype=np.float64)
        return out + bias_c

    ref = ModelRef(name=forecaster.ref.name, version=version or forecaster.ref.version)
    return ModelForecaster(ref, forecaster.feature_columns, forecaster.horizons_min, forecaster.output_keys, predict)


def fleet(n: int, ts_shift_min: float = 0.0) -> list[GreenhouseState]:
    out = []
    for i in range(n):
        s = state(14.0 + i, 5.0)
        out.append(GreenhouseState(f"gh-{i:02d}", {**s.features, "ts": s.features["ts"] + timedelta(minutes=ts_shift_min)}))
    return out


def test_decide_many_makes_one_forecaster_call_and_the_same_decisions_as_one_by_one():
    calls: list[int] = []
    batched = asyncio.run(Controller(ControlPolicy(limits=FREE)).decide_many(fleet(5), counting(toy(), calls), NOW))
    assert len(calls) == 1
    alone = [Controller(ControlPolicy(limits=FREE)).decide_sync(s, toy(), NOW) for s in fleet(5)]
    assert [d.setpoints for d in batched] == [d.setpoints for d in alone]
    assert [d.greenhouse_id for d in batched] == [f"gh-{i:02d}" for i in range(5)]


def test_a_failed_batch_call_sends_every_greenhouse_of_it_to_the_thermostat_with_the_reason():
    def broken(matrix, columns, horizons):
        raise RuntimeError("replica gone")

    t = toy()
    out = asyncio.run(Controller(ControlPolicy(limits=FREE)).decide_many(fleet(3), ModelForecaster(t.ref, t.feature_columns, t.horizons_min, t.output_keys, broken), NOW))
    assert {d.mode for d in out} == {"thermostat"} and all("replica gone" in d.reason for d in out)


def test_shadow_forecasts_never_actuate_and_settle_into_per_version_errors():
    serving_calls: list[int] = []
    shadow_calls: list[int] = []
    decider = FleetDecider(Controller(ControlPolicy(limits=FREE, interval_s=300)))
    serving = counting(toy(), serving_calls)
    shadow = counting(toy(), shadow_calls, version="2", bias_c=1.5)  # forecasts 1.5 K too warm
    route = Route(ROLE_CANDIDATE, "ro-1", ("2",))

    def decide(shift_min: float, shadows: tuple) -> list:
        items = [Assignment(s, serving, route, shadows, provenance={"count": 3}) for s in fleet(4, shift_min)]
        return asyncio.run(decider.decide(items, NOW + timedelta(minutes=shift_min), DecisionContext("loop", "control-loop")))

    with_shadow = decide(0, (shadow,))
    without = FleetDecider(Controller(ControlPolicy(limits=FREE, interval_s=300))).decide([Assignment(s, serving) for s in fleet(4)], NOW, DecisionContext("loop", "x"))
    assert [d.decision.setpoints for d in with_shadow] == [d.decision.setpoints for d in asyncio.run(without)]
    assert len(shadow_calls) == 1 and shadow_calls[0] == 4  # one call for the whole batch, one row each
    later = decide(15, (shadow,))  # the 15-min forecasts fall due
    for d in later:
        errors = {(e["version"], e["horizon_min"], e["shadow"]): e["error_c"] for e in d.record["settled_errors"]}
        assert ("2", 15, True) in errors and ("1", 15, False) in errors
        # the shadow's error is the serving model's minus its bias (same inputs, same plant)
        assert abs(errors[("2", 15, True)] - (errors[("1", 15, False)] - 1.5)) < 0.3
        assert "toy/2" in d.record["shadow_forecasts"]


def test_the_decision_record_holds_the_lineage_fields():
    decider = FleetDecider(Controller(ControlPolicy(limits=FREE)))
    s = fleet(1)[0]
    (d,) = asyncio.run(decider.decide([Assignment(s, toy(), provenance={"count": 7, "bus_offsets": {"1": 99}}, request_id="r-1")], NOW, DecisionContext("on_demand", "alice")))
    r = d.record
    assert r["_id"] == r["command_id"] == d.decision.command.command_id
    assert (r["greenhouse_id"], r["source"], r["requested_by"], r["role"]) == ("gh-00", "on_demand", "alice", "champion")
    assert r["model"] == {"name": "toy", "version": "1"} and r["mode"] == "mpc"
    assert r["readings"] == {"count": 7, "bus_offsets": {"1": 99}}
    assert r["feature_row_sha256"] == feature_row_sha256(s.features)
    assert r["policy"] == policy_fingerprint(ControlPolicy(limits=FREE)) and len(r["policy"]["sha256"]) == 64
    assert r["in_band"] is False and r["air_temp_c"] == 14.0  # below the 18 °C band
    assert policy_fingerprint(ControlPolicy(limits=FREE, interval_s=60))["sha256"] != r["policy"]["sha256"]
