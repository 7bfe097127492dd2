"""The control side's metrics without Ray: what the metric classes count, observe and set for
given decisions, refusals, dispatches, rollouts and actuator outcomes (an in-memory recorder
stands in for ``ray.serve.metrics`` in these tests only), and the dispatched command's log line."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import pytest

from app.bus import BusError, OutgoingRecord, open_bus
from app.config import Settings
from app.contracts.command import ControlCommand, ModelRef, Setpoints
from app.control.core import Controller, ControlPolicy, GreenhouseState
from app.control.dispatch import FAILED_AUDIT, FAILED_BUS, ActuatorEndpoint, CommandDispatcher, DispatchError, Outcome, actuator_commands, count_actuator_command
from app.control.fleet_decisions import Decided
from app.control.rollout import RolloutPlan, VersionFigures
from app.metadata import open_metadata
from app.security.credentials import CONTROL_WRITE, FORECAST_READ, OperatorIdentity
from app.serve.control_api import ServeError
from app.serve.control_auth import OperatorGate
from app.serve.control_metrics import ControlMetrics, timed
from app.serve.decision_metrics import DecisionMetrics, fallback_reason
from app.serve.rollout_metrics import RolloutMetrics, rollout_rmse, serving_shares, verdict_rmse
from app.serve.serving_models import ModelConfig
from tests.serve.metric_recorder import MetricRecorder

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)


def state(age_s: float = 60.0) -> GreenhouseState:
    return GreenhouseState(
        "gh-01", {"ts": NOW - timedelta(seconds=age_s), "air_temp_c": 20.0, "rh_pct": 70.0, "outside_temp_c": 10.0, "solar_w_m2": 300.0, "vent_pct": 0.0, "heat_pct": 0.0, "screen_pct": 0.0}
    )


class Broken:
    """A forecaster whose every call fails."""

    ref = ModelRef(name="toy", version="1")
    feature_columns = ("air_temp_c",)
    horizons_min = (15,)
    output_keys = ("air_temp_c_h15",)
    step_s = 300.0

    def predict(self, *args):
        raise RuntimeError("boom")


def test_fallbacks_are_counted_by_the_reason_the_core_distinguishes():
    ctl = Controller(ControlPolicy())
    no_model = ctl.decide_sync(state(), None, NOW, unavailable="model unavailable: LookupError: no alias")
    failed = ctl.decide_sync(state(), Broken(), NOW)  # type: ignore[arg-type]
    stale = ctl.decide_sync(state(age_s=7200), Broken(), NOW)  # type: ignore[arg-type]
    assert [fallback_reason(d) for d in (no_model, failed, stale)] == ["no_model", "model_error", "stale_state"]
    recorder = MetricRecorder()
    metrics = DecisionMetrics(recorder)
    metrics.observe([Decided(d, {"source": "loop", "settled_errors": []}) for d in (no_model, failed, failed, stale)])
    assert recorder["gh_control_fallbacks"].total(reason="model_error") == 2
    assert recorder["gh_control_fallbacks"].total(reason="no_model") == 1 and recorder["gh_control_fallbacks"].total(reason="stale_state") == 1
    assert recorder["gh_control_decisions"].total(mode="thermostat", source="loop") == 4


class Operators:
    def __init__(self, **tokens: OperatorIdentity) -> None:
        self.tokens = tokens

    def authenticate(self, token):
        return self.tokens.get(token or "")


def test_refused_operator_credentials_are_counted_by_reason():
    recorder = MetricRecorder()
    metrics = ControlMetrics(recorder)
    gate = OperatorGate(Operators(reader=OperatorIdentity("ann", frozenset({FORECAST_READ})), writer=OperatorIdentity("bo", frozenset({CONTROL_WRITE}))), on_refused=metrics.auth_failure)
    for header, route, status in [(None, "forecast", 401), ("Bearer nope", "control", 401), ("Bearer reader", "control", 403)]:
        with pytest.raises(ServeError) as refused:
            gate.admit(header, route)
        assert refused.value.status == status
    assert gate.admit("Bearer writer", "control").name == "bo"
    assert dict(recorder["gh_auth_failures"].totals) == {(("reason", "unauthenticated"), ("surface", "control")): 2, (("reason", "missing_scope"), ("surface", "control")): 1}


def test_request_and_forecast_durations():
    recorder = MetricRecorder()
    metrics = ControlMetrics(recorder)
    metrics.request("control", 0.05)
    ticks = iter([1.0, 1.25, 2.0, 2.5])

    async def answer(x):
        return x * 2

    async def fail(x):
        raise ValueError(x)

    assert asyncio.run(timed(answer, metrics.forecast, lambda: next(ticks))(3)) == 6
    with pytest.raises(ValueError):
        asyncio.run(timed(fail, metrics.forecast, lambda: next(ticks))(3))
    assert recorder["gh_forecast_duration_seconds"].observations() == [0.25, 0.5]
    assert recorder["gh_control_request_duration_seconds"].observations(route="control") == [0.05]
    assert recorder["gh_control_request_duration_seconds"].options["boundaries"][-1] >= 2.5


def command(i: int = 0) -> ControlCommand:
    return ControlCommand(
        command_id=f"cmd-test-{i:04d}",
        greenhouse_id="gh-01",
        issued_at=NOW,
        valid_until=NOW + timedelta(minutes=10),
        setpoints=Setpoints.clamped(),
        model=ModelRef(name="toy", version="1"),
        reason={"mode": "mpc"},
    )


class FailingBus:
    """The real embedded bus, whose produce raises on demand."""

    def __init__(self, bus) -> None:
        self.bus, self.fail = bus, False

    def __getattr__(self, name):
        return getattr(self.bus, name)

    def produce(self, topic, records):
        if self.fail:
            raise BusError("bus down")
        return self.bus.produce(topic, records)


def test_dispatch_failures_are_reported_by_reason_and_dispatches_logged_with_their_ids(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path / "gh")
    bus = FailingBus(open_bus(settings.bus_url, topics=settings.topics))
    store = open_metadata(settings.metadata_url)
    failures: list[str] = []
    dispatcher = CommandDispatcher(settings, bus, store, on_failure=failures.append)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="app.control.dispatch")
    result = dispatcher.dispatch(command(0))
    assert result.status == "dispatched" and failures == []
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "command_dispatched"]
    assert (line.decision_id, line.command_id, line.greenhouse_id, line.mode) == ("cmd-test-0000", "cmd-test-0000", "gh-01", "mpc")
    assert (line.partition, line.offset) == (result.partition, result.offset)
    bus.fail = True
    with pytest.raises(DispatchError) as failed:
        dispatcher.dispatch(command(1))
    assert failed.value.reason == FAILED_BUS and isinstance(failed.value.__cause__, BusError)
    assert failures == [FAILED_BUS]
    dispatcher.audit = None  # type: ignore[assignment]  # the audit store unreachable
    assert isinstance(dispatcher.dispatch_many([command(2)])[0], Exception)
    assert failures == [FAILED_BUS, FAILED_AUDIT]


def test_actuator_outcomes_are_counted_applied_or_refused_with_the_reason():
    before = actuator_commands("refused", "expired"), actuator_commands("applied", "none")
    count_actuator_command(Outcome("c1", "gh-01", "expired", "late"))
    count_actuator_command(Outcome("c2", "gh-01", "applied"))
    count_actuator_command(Outcome("c3", "gh-01", "applied"))
    assert actuator_commands("refused", "expired") == before[0] + 1
    assert actuator_commands("applied", "none") == before[1] + 2


def test_the_actuator_endpoint_counts_what_it_refuses(tmp_path):
    settings = Settings(data_dir=tmp_path / "gh")
    bus = open_bus(settings.bus_url, topics=settings.topics)
    bus.create_topic(settings.topics.control, settings.topics.partitions)
    bus.produce(settings.topics.control, [OutgoingRecord(value=command(5).model_dump_json().encode(), key=b"gh-01")])  # unsigned

    class Sink:
        def apply(self, c):
            raise AssertionError("an unsigned command must not be applied")

    before = actuator_commands("refused", "unsigned")
    endpoint = ActuatorEndpoint(settings, bus, Sink(), {"gh-01"}, clock=lambda: NOW)
    try:
        outcomes = []
        for _ in range(10):
            outcomes += endpoint.poll(0.2)
            if outcomes:
                break
    finally:
        endpoint.close()
    assert [o.status for o in outcomes] == ["unsigned"]
    assert actuator_commands("refused", "unsigned") == before + 1


def plan(**kw) -> RolloutPlan:
    base = dict(
        rollout_id="ro-1",
        model_name="gh-forecast",
        champion_version="3",
        candidate_version="4",
        mode="canary",
        steps=(0.1, 0.5, 1.0),
        step_index=0,
        status="active",
        started_at=NOW,
        step_started_at=NOW,
    )
    return RolloutPlan(**{**base, **kw})  # type: ignore[arg-type]


def test_serving_shares_follow_the_config_and_the_rollout():
    rollouts = {"gh-forecast": {"rollout_id": "ro-1", "champion": "3", "candidate": "4", "fraction": 0.1}}
    assert serving_shares(ModelConfig(), "gh-forecast", {}, {}) == {}
    assert serving_shares(ModelConfig(shadow_versions=["5"]), "gh-forecast", {"gh-forecast": "3"}, {}) == {("gh-forecast/3", "champion"): 1.0, ("gh-forecast/5", "shadow"): 1.0}
    shares = serving_shares(ModelConfig(), "gh-forecast", {"gh-forecast": "3"}, rollouts)
    assert shares == pytest.approx({("gh-forecast/3", "champion"): 0.9, ("gh-forecast/4", "candidate"): 0.1, ("gh-forecast/3", "shadow"): 0.1, ("gh-forecast/4", "shadow"): 0.9})
    assert serving_shares(ModelConfig(follow_rollouts=False), "gh-forecast", {"gh-forecast": "3"}, rollouts) == {("gh-forecast/3", "champion"): 1.0}
    assert serving_shares(ModelConfig(model_version="2"), "gh-forecast", {}, rollouts) == {("gh-forecast/2", "pinned"): 1.0}


def test_rollout_rmse_is_set_once_a_role_has_its_errors_and_not_after_the_end():
    enough, few = VersionFigures(errors_n=30, forecast_rmse_c=0.4), VersionFigures(errors_n=29, forecast_rmse_c=0.9)
    assert rollout_rmse(plan(), enough, few) == {("gh-forecast", "champion", "15"): 0.4}
    assert rollout_rmse(plan(), enough, VersionFigures(errors_n=40, forecast_rmse_c=0.7)) == {("gh-forecast", "champion", "15"): 0.4, ("gh-forecast", "candidate", "15"): 0.7}
    assert rollout_rmse(plan(status="rolled_back"), enough, enough) == {} and rollout_rmse(None, enough, enough) == {}
    recorder = MetricRecorder()
    gauges = RolloutMetrics(recorder)
    gauges.set_rmse(rollout_rmse(plan(), enough, few))
    gauges.set_shares({("gh-forecast/3", "champion"): 1.0})
    gauges.refresh()
    gauges.refresh()
    rmse = recorder["gh_rollout_forecast_rmse_celsius"]
    assert rmse.value(model="gh-forecast", role="champion", horizon_min="15") == 0.4 and rmse.sets == 2
    gauges.set_rmse({})  # the rollout ended: no longer set, so the agent lets it expire
    gauges.refresh()
    assert rmse.sets == 2 and recorder["gh_serving_share"].sets == 3


def test_a_verdicts_figures_set_the_rmse_gauge_until_it_ends_the_rollout():
    from app.control.rollout import Verdict, judge

    enough, more = VersionFigures(errors_n=30, forecast_rmse_c=0.4), VersionFigures(errors_n=30, forecast_rmse_c=0.45)
    held = judge(plan(), enough, more)
    assert held.plan == plan() and verdict_rmse(held) == {("gh-forecast", "champion", "15"): 0.4, ("gh-forecast", "candidate", "15"): 0.45}
    for ending in ("promote", "rollback"):
        assert verdict_rmse(Verdict(ending, "done", enough, more, plan())) == {}  # the rollout is over
    assert verdict_rmse(Verdict("hold", "changed meanwhile", enough, more)) == {}  # no plan: nothing to label


def test_the_loop_reads_each_active_rollouts_figures_for_the_rmse_gauge():
    from app.serve.control_loop import _rollout_rmses

    class Store:
        def active(self, name):
            if name == "broken":
                raise ConnectionError("store down")
            return plan() if name == "gh-forecast" else None

        def figures(self, p, now):
            assert now == NOW
            return VersionFigures(errors_n=50, forecast_rmse_c=0.3), VersionFigures(errors_n=50, forecast_rmse_c=0.5)

    assert _rollout_rmses(Store(), ["gh-forecast", "ended", "broken"], NOW) == {("gh-forecast", "champion", "15"): 0.3, ("gh-forecast", "candidate", "15"): 0.5}
    assert _rollout_rmses(None, ["gh-forecast"], NOW) == {} and _rollout_rmses(Store(), ["gh-forecast"], None) == {}


def test_a_replica_that_has_not_routed_lately_publishes_no_shares():
    from types import SimpleNamespace

    from app.serve.rollout_metrics import fresh_shares

    models = SimpleNamespace(config=ModelConfig(), resolved=lambda: {"gh-forecast": "3"}, rollouts=lambda: {}, routed_at=1000.0)
    assert fresh_shares(models, "gh-forecast", 600, now_s=1500.0) == {("gh-forecast/3", "champion"): 1.0}
    assert fresh_shares(models, "gh-forecast", 600, now_s=1601.0) == {}


def test_clamped_setpoints_are_counted_by_actuator():
    ctl = Controller(ControlPolicy(interval_s=60.0))  # one minute of travel cannot reach full heat
    cold = GreenhouseState("gh-01", {**state().features, "air_temp_c": 2.0, "heat_pct": 0.0})
    decision = ctl.decide_sync(cold, None, NOW, unavailable="model unavailable: none")
    assert "heat_pct" in decision.clamped
    recorder = MetricRecorder()
    DecisionMetrics(recorder).observe([Decided(decision, {"source": "loop", "settled_errors": []})])
    assert recorder["gh_control_setpoints_clamped"].total(actuator="heat_pct") == 1
