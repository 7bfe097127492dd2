"""The controller core: one decision for one greenhouse, from its state, a forecaster and the time.

Every caller decides through :class:`Controller`: the Serve control app, the closed-loop demo's
thermostat fleet and any later scheduler or canary router. It runs the safety code in one order:

1. staleness: readings older than ``stale_after_s`` (or no forecaster) mean the thermostat;
2. the screen follows the climate computer's rule (:func:`~app.control.planner.screen_plan`), or
   stays closed where insulating may pay (:func:`~app.control.planner.screen_options`);
3. model-predictive control: a grid of candidate heating/ventilation settings around each screen
   option, one forecaster call for all of them, each horizon corrected by its recent error
   (:class:`~app.control.correction.ForecastOffsets`; interval edges move with their forecast),
   the cheapest candidate, clamped;
4. any failure of the forecaster falls back to the thermostat, with the reason;
5. the command: id, expiry, model version and the forecast behind it.

No Ray, no I/O, no clock: the forecaster is any callable (the Serve handle, a loaded model, a
fake), so the safety properties are tested here without a cluster or a trained model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from app.config import Limits, Settings
from app.contracts.command import ControlCommand, ModelRef
from app.contracts.vocabulary import ACTUATORS, horizon_of, is_interval_key
from app.control.correction import ForecastOffsets
from app.control.edge_calibration import EdgeCalibration
from app.control.planner import ScreenPlan, build_command, candidate_matrix, current_setpoints, screen_options, screen_plan, targets_during
from app.control.policy import CostContext, Decision, RuleTuning, ScreenRule, Targets, Weights, candidate_plans, cost_horizons, pick_best, scale_edges, thermostat

Predict = Callable[[np.ndarray, list[str], "list[int] | None"], "np.ndarray | Awaitable[np.ndarray]"]

# Candidate settings, percent: heating finely (holding close to the band's edge needs it; the
# forecaster is cheap per row), ventilation coarsely. The screen follows the screen rule.
DEFAULT_CANDIDATE_LEVELS: Mapping[str, tuple[float, ...]] = {"heat_pct": tuple(float(x) for x in range(0, 101, 5)), "vent_pct": (0.0, 10.0, 25.0, 50.0, 100.0)}


@dataclass(frozen=True)
class ControlPolicy:
    """Everything the controller's choices depend on besides the state and the model."""

    limits: Limits = field(default_factory=Limits)
    targets: Targets = field(default_factory=Targets)
    weights: Weights = field(default_factory=Weights)
    levels: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_CANDIDATE_LEVELS))
    interval_s: float = 300.0
    stale_after_s: float = 900.0
    cost_horizon_max_min: int | None = 15
    cost_horizon_min_min: int | None = None
    """Horizons shorter than this do not enter the cost (``None``: all count). Heating needs some
    minutes to act (the pipes' lag): a forecast it can hardly move, held to the band, drives it
    from full to none and back."""
    screen_opening_margin_c: float = 0.0
    actuator_time_constants_s: Mapping[str, float] = field(default_factory=dict)
    command_ttl_s: float = 600.0
    rule: RuleTuning = field(default_factory=RuleTuning)
    """The rule-based controller: the fallback, and with no forecaster the whole controller."""
    screen_rule: ScreenRule = field(default_factory=ScreenRule)
    screen_insulate_below_solar_w_m2: float = 0.0
    """The MPC may keep the screen closed for insulation below this sun (W/m2; 0: it follows the
    screen rule), see :func:`~app.control.planner.screen_options`."""
    edge_miss_rate: float | None = 0.02
    """With interval forecasts: the share of outcomes allowed below the calibrated lower edge at
    the shortest horizon (:class:`EdgeCalibration`); ``None`` takes the model's edges as they are."""
    edge_later_miss_rate: float = 0.2
    """... and at the later horizons (a plan the next decisions revise)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ControlPolicy:
        """The policy ``settings.control`` configures."""
        c = settings.control
        return cls(
            limits=c.limits,
            targets=Targets(band_low_c=c.band_low_c, band_high_c=c.band_high_c, rh_max_pct=c.rh_max_pct, margin_c=c.margin_c, edge_margin_c=c.edge_margin_c, max_edge_margin_c=c.max_edge_margin_c),
            weights=Weights(vent_loss_per_pct_k=c.vent_loss_per_pct_k, reversal_per_pct=c.reversal_per_pct),
            interval_s=c.interval_s,
            stale_after_s=c.stale_after_s,
            cost_horizon_max_min=c.cost_horizon_max_min,
            cost_horizon_min_min=c.cost_horizon_min_min or None,
            screen_opening_margin_c=c.screen_opening_margin_c,
            actuator_time_constants_s=dict(c.actuator_time_constants_s),
            command_ttl_s=c.command_ttl_s,
            screen_insulate_below_solar_w_m2=c.screen_insulate_below_solar_w_m2,
            edge_miss_rate=c.edge_miss_rate or None,
            edge_later_miss_rate=c.edge_later_miss_rate,
        )


@dataclass(frozen=True)
class ModelForecaster:
    """A forecast model as the controller sees it: its inputs and outputs, and a function that
    predicts (``predict(matrix, columns, horizons)`` -> one row per input row, columns in
    ``output_keys`` order restricted to ``horizons`` when given; it may return an awaitable)."""

    ref: ModelRef
    feature_columns: tuple[str, ...]
    horizons_min: tuple[int, ...]
    output_keys: tuple[str, ...]
    predict: Predict
    step_s: float = 60.0
    """The grid step of the model's features: a greenhouse reporting every 15 minutes has a
    newest step up to that old, so readings count as stale only past twice this (or
    ``stale_after_s``, whichever is longer)."""


@dataclass(frozen=True)
class GreenhouseState:
    """What the controller knows of one greenhouse: its newest feature row (training's names, with
    ``ts``, the step's time)."""

    greenhouse_id: str
    features: Mapping[str, Any]

    @property
    def ts(self) -> datetime:
        return self.features["ts"]


@dataclass(frozen=True)
class ControlDecision:
    """One decision: what to set and why, the forecast and corrections behind it, the command."""

    greenhouse_id: str
    setpoints: dict[str, float]
    mode: str
    """``"mpc"`` or ``"thermostat"``."""
    reason: str
    cost: float | None
    forecast: dict[str, float]
    """The chosen candidate's forecast, corrected (empty for the thermostat)."""
    corrections_c: dict[int, float]
    """The per-horizon temperature corrections applied (minutes -> kelvin)."""
    state_ts: datetime
    age_s: float
    command: ControlCommand
    model_error: str | None = None
    """Why the forecaster could not be used, when it was given and failed."""
    settled_errors_c: dict[int, float] = field(default_factory=dict)
    """The serving model's forecasts that fell due at this state: horizon minutes -> measured minus
    forecast (kelvin, uncorrected), its online forecast error."""
    clamped: tuple[str, ...] = ()
    """Actuators whose proposed setting the safety or rate limits changed."""


@dataclass
class _Step:
    """A decision in progress: what the forecaster is asked, and what comes of it."""

    state: GreenhouseState
    now: datetime
    current: dict[str, float]
    age_s: float
    screen: ScreenPlan
    why_fallback: str | None
    forecaster: ModelForecaster | None = None
    plans: np.ndarray | None = None
    options: list[tuple[ScreenPlan, int]] = field(default_factory=list)
    """The screen options asked for, each with its number of candidate rows (in ``plans`` order)."""
    query: tuple[np.ndarray, list[str], list[int]] | None = None
    keys: list[str] = field(default_factory=list)
    model_error: str | None = None
    settled: dict[int, float] = field(default_factory=dict)


def _model_unavailable(exc: BaseException) -> str:
    return f"model unavailable: {type(exc).__name__}: {exc}"


class Controller:
    """Decides for any number of greenhouses under one :class:`ControlPolicy`.

    It remembers each greenhouse's recent forecast errors (offset-free MPC) and, for models with
    interval edges, how far its outcomes fell below them (:class:`EdgeCalibration`): keep one
    controller per serving replica or loop, and pass it every decision of the greenhouses it serves.
    """

    def __init__(self, policy: ControlPolicy, offsets: ForecastOffsets | None = None, calibration: EdgeCalibration | None = None) -> None:
        self.policy = policy
        self.offsets = offsets or ForecastOffsets()
        self.calibration = calibration or (EdgeCalibration(policy.edge_miss_rate, policy.edge_later_miss_rate) if policy.edge_miss_rate else None)

    async def decide(
        self, state: GreenhouseState, forecaster: ModelForecaster | None, now: datetime, *, unavailable: str | None = None, dry_run: bool = False, request_id: str | None = None
    ) -> ControlDecision:
        """Decide for ``state`` at ``now``; ``forecaster`` ``None`` (``unavailable`` says why)
        means the thermostat. ``predict`` may be a coroutine function."""
        step = self._prepare(state, forecaster, now, unavailable)
        forecasts = self._ask(step)
        if inspect.isawaitable(forecasts):
            try:
                forecasts = await forecasts
            except Exception as exc:
                step.model_error, forecasts = _model_unavailable(exc), None
        return self._conclude(step, forecasts, dry_run, request_id)

    async def decide_many(
        self,
        states: Sequence[GreenhouseState],
        forecaster: ModelForecaster | None,
        now: datetime,
        *,
        unavailable: str | None = None,
        dry_run: bool = False,
        request_ids: Sequence[str | None] | None = None,
    ) -> list[ControlDecision]:
        """:meth:`decide` for many greenhouses served by one ``forecaster``, with one forecaster
        call for all their candidates (the batch path of the control loop). A failed call sends
        every greenhouse of the batch to the thermostat, each with the reason."""
        steps = [self._prepare(state, forecaster, now, unavailable) for state in states]
        asked = [s for s in steps if s.query is not None]
        answers: dict[int, Any] = {}
        if asked and forecaster is not None:
            stacked = np.concatenate([s.query[0] for s in asked if s.query is not None])
            try:
                out = forecaster.predict(stacked, asked[0].query[1], asked[0].query[2])  # type: ignore[index]
                out = await out if inspect.isawaitable(out) else out
                answers = _split_rows(np.asarray(out), asked)
            except Exception as exc:
                for s in asked:
                    s.model_error = _model_unavailable(exc)
        ids = list(request_ids) if request_ids is not None else [None] * len(steps)
        return [self._conclude(s, answers.get(id(s)), dry_run, rid) for s, rid in zip(steps, ids)]

    def decide_sync(
        self, state: GreenhouseState, forecaster: ModelForecaster | None, now: datetime, *, unavailable: str | None = None, dry_run: bool = False, request_id: str | None = None
    ) -> ControlDecision:
        """:meth:`decide` for a forecaster whose ``predict`` answers at once (a loaded model, a fake)."""
        step = self._prepare(state, forecaster, now, unavailable)
        forecasts = self._ask(step)
        if inspect.isawaitable(forecasts):
            if inspect.iscoroutine(forecasts):
                forecasts.close()
            raise TypeError("decide_sync needs a forecaster that answers at once; use decide")
        return self._conclude(step, forecasts, dry_run, request_id)

    async def forecast(self, state: GreenhouseState, forecaster: ModelForecaster, setpoints: Mapping[str, float]) -> dict[str, float]:
        """The forecast at every horizon of ``forecaster`` with ``setpoints`` held (reached with
        the actuators' lags), uncorrected."""
        matrix, columns = candidate_matrix(state.features, [dict(setpoints)], forecaster.feature_columns, forecaster.horizons_min, self.policy.actuator_time_constants_s)
        out = forecaster.predict(matrix, columns, None)
        if inspect.isawaitable(out):
            out = await out
        return dict(zip(forecaster.output_keys, np.asarray(out)[0].tolist()))

    def _prepare(self, state: GreenhouseState, forecaster: ModelForecaster | None, now: datetime, unavailable: str | None) -> _Step:
        p = self.policy
        age_s = (now - state.ts).total_seconds()
        why = unavailable if forecaster is None else None
        if forecaster is None and why is None:
            why = "no forecast model"
        if why is None and forecaster is not None and age_s > max(p.stale_after_s, 2.0 * forecaster.step_s):
            why = f"data stale: newest step is {age_s:.0f} s old"
        # The screen follows the climate computer's rule (insulate when dark and cold, shade in
        # strong sun); the model chooses heating and ventilation around it, knowing when the rule
        # will move the screen next.
        step = _Step(state, now, current_setpoints(state.features), age_s, screen_plan(state.features, p.interval_s, p.screen_rule), why, forecaster)
        if why is None:
            assert forecaster is not None
            try:
                self._query(step, forecaster)
            except Exception as exc:  # e.g. the model needs a feature the state lacks
                step.why_fallback = step.model_error = _model_unavailable(exc)
                step.query = None
        return step

    @staticmethod
    def _ask(step: _Step) -> Any:
        """The forecaster's answer to the step's query (``None`` when there is none or it failed;
        an awaitable from an asynchronous forecaster)."""
        if step.query is None or step.forecaster is None:
            return None
        try:
            return step.forecaster.predict(*step.query)
        except Exception as exc:
            step.model_error = _model_unavailable(exc)
            return None

    def _query(self, step: _Step, forecaster: ModelForecaster) -> None:
        """The candidates of every screen option and the model inputs that forecast them (only the
        horizons the cost counts: the shortest always counts)."""
        p = self.policy
        horizons = cost_horizons(list(forecaster.horizons_min), p.cost_horizon_max_min, p.cost_horizon_min_min)
        plans, matrices = [], []
        for option in screen_options(step.state.features, step.screen, p.screen_rule, p.screen_insulate_below_solar_w_m2):
            grid = candidate_plans(step.current, p.limits, p.interval_s, fixed={"screen_pct": option.setpoint_pct}, levels=p.levels)
            matrix, columns = candidate_matrix(step.state.features, grid, forecaster.feature_columns, horizons, p.actuator_time_constants_s, option.scheduled)
            plans.append(grid)
            matrices.append(matrix)
            step.options.append((option, len(grid)))
        step.plans = plans[0] if len(plans) == 1 else np.vstack(plans)
        step.query = (matrices[0] if len(matrices) == 1 else np.vstack(matrices), columns, horizons)
        step.keys = [k for k in forecaster.output_keys if horizon_of(k) in horizons]

    def _conclude(self, step: _Step, forecasts: Any, dry_run: bool, request_id: str | None) -> ControlDecision:
        p = self.policy
        decision: Decision | None = None
        corrections: dict[int, float] = {}
        if forecasts is not None and step.model_error is None:
            try:
                decision, corrections = self._choose(step, np.asarray(forecasts, dtype=np.float64))
            except Exception as exc:
                step.model_error = _model_unavailable(exc)
        if decision is None:
            why = step.model_error or step.why_fallback
            rule = thermostat(
                float(step.state.features["air_temp_c"]),
                float(step.state.features["rh_pct"]),
                step.current,
                limits=p.limits,
                targets=p.targets,
                dt_s=p.interval_s,
                screen_pct=step.screen.setpoint_pct,
                tuning=p.rule,
            )
            decision = Decision(rule.setpoints, rule.mode, f"{why}; {rule.reason}", clamped=rule.clamped)
        model = step.forecaster.ref if step.forecaster is not None else None
        command = build_command(step.state.greenhouse_id, decision, decided_at=step.now, ttl_s=p.command_ttl_s, model=model, state_ts=step.state.ts, dry_run=dry_run, request_id=request_id)
        return ControlDecision(
            step.state.greenhouse_id,
            decision.setpoints,
            decision.mode,
            decision.reason,
            decision.cost,
            decision.forecast,
            corrections,
            step.state.ts,
            step.age_s,
            command,
            step.model_error,
            {h: round(e, 4) for h, e in step.settled.items()},
            decision.clamped,
        )

    def _choose(self, step: _Step, forecasts: np.ndarray) -> tuple[Decision, dict[int, float]]:
        """Offset-free MPC: settle the forecasts now due against the measurement, correct each
        horizon by its recent error (and scale the interval edges by their closed-loop
        calibration), pick the cheapest candidate, remember what the model said."""
        assert step.forecaster is not None and step.plans is not None
        key = offsets_key(step.forecaster.ref, step.state.greenhouse_id)
        measured = float(step.state.features["air_temp_c"])
        step.settled = self.offsets.observe(key, step.state.ts, measured)
        corrections = self.offsets.offsets(key)
        if forecasts.shape != (len(step.plans), len(step.keys)):
            raise ValueError(f"forecaster answered shape {forecasts.shape} for {len(step.plans)} candidates x {len(step.keys)} forecasts")
        corrected = self.offsets.correct(key, forecasts, step.keys)
        scored = corrected
        if self.calibration is not None:
            self.calibration.observe(key, step.state.ts, measured)
            scored = scale_edges(corrected, step.keys, self.calibration.scales(key))
        decision = self._cheapest(step, scored)
        assert decision.candidate_index is not None
        points = [(k, v) for k, v in zip(step.keys, forecasts[decision.candidate_index].tolist()) if not is_interval_key(k)]
        self.offsets.record(key, step.state.ts, dict(points))
        if self.calibration is not None:
            self.calibration.record(key, step.state.ts, step.keys, corrected[decision.candidate_index].tolist(), decision.setpoints)
        return decision, {h: round(v, 4) for h, v in corrections.items() if math.isfinite(v)}

    def _cheapest(self, step: _Step, forecasts: np.ndarray) -> Decision:
        """The cheapest candidate of each screen option, then the cheapest of those (ties: less
        heat, then the rule's screen); ``ValueError`` when no candidate has a finite forecast."""
        p = self.policy
        assert step.plans is not None
        context = cost_context(step.state.features)
        best: tuple[tuple[float, float, int], Decision] | None = None
        start = 0
        for order, (option, rows) in enumerate(step.options):
            span = slice(start, start + rows)
            targets = targets_during(p.targets, option, p.screen_opening_margin_c)
            try:
                d = pick_best(
                    step.plans[span],
                    forecasts[span],
                    step.keys,
                    step.current,
                    limits=p.limits,
                    targets=targets,
                    weights=p.weights,
                    dt_s=p.interval_s,
                    max_horizon_min=p.cost_horizon_max_min,
                    context=context,
                )
            except ValueError:
                if len(step.options) == 1:
                    raise
                d = None
            if d is not None and d.candidate_index is not None:
                d = _shifted(d, start, order)
                rank = (d.cost if d.cost is not None else math.inf, d.setpoints["heat_pct"], order)
                best = (rank, d) if best is None or rank < best[0] else best
            start += rows
        if best is None:
            raise ValueError("no candidate has a finite forecast")
        return best[1]


def cost_context(features: Mapping[str, Any]) -> CostContext:
    """What the cost reads of the greenhouse (:class:`~app.control.policy.CostContext`): the
    inside and outside temperatures and each actuator's change over the last 15 minutes."""
    return CostContext(float(features["air_temp_c"]), float(features.get("outside_temp_c", math.nan)), {a: float(features.get(f"{a}_change_15min", 0.0)) for a in ACTUATORS})


def _shifted(decision: Decision, start: int, order: int) -> Decision:
    """A screen option's decision with its candidate index into all the candidates."""
    assert decision.candidate_index is not None
    why = decision.reason if order == 0 else f"{decision.reason} (screen kept closed: insulation)"
    return replace(decision, candidate_index=start + decision.candidate_index, reason=why)


def _split_rows(out: np.ndarray, steps: Sequence[_Step]) -> dict[int, np.ndarray]:
    """The rows of one stacked forecast answer, back to the steps that asked (by ``id(step)``)."""
    answers, start = {}, 0
    for s in steps:
        assert s.query is not None
        n = len(s.query[0])
        answers[id(s)] = out[start : start + n]
        start += n
    if start != len(out):
        raise ValueError(f"the forecaster answered {len(out)} rows for {start}")
    return answers


def offsets_key(ref: ModelRef, greenhouse_id: str) -> str:
    """The key under which a model version's forecasts of a greenhouse are settled and corrected."""
    # Errors are learned per model version and greenhouse: a new version starts from zero.
    return f"{ref.name}/{ref.version}|{greenhouse_id}"


def thermostat_state(greenhouse_id: str, ts: datetime, measured: Mapping[str, float], positions: Mapping[str, float]) -> GreenhouseState:
    """A state from raw measurements and actuator positions alone (no features), enough for the
    thermostat: what a climate computer sees."""
    return GreenhouseState(greenhouse_id, {"ts": ts, **measured, **positions})


__all__: Sequence[str] = ["ControlDecision", "ControlPolicy", "Controller", "EdgeCalibration", "GreenhouseState", "ModelForecaster", "cost_context", "offsets_key", "thermostat_state"]
