"""Control policy: pure, deterministic choices of actuator setpoints (safety code).

- :func:`clamp_setpoints` bounds any proposal by the safety limits and the rate-of-change limits;
  every setpoint that leaves this module has passed through it.
- :func:`candidate_plans` spans the candidate settings, :func:`candidate_costs` scores each
  candidate's forecast (temperature and humidity per horizon) and :func:`pick_best` picks the one
  that keeps the forecast inside the target band at the least energy, with a small penalty on
  actuator travel: model-predictive control (:mod:`app.control.core` runs them in order). When
  the forecaster gives interval edges (``air_temp_c_15min_low``/``_high``), the band penalty uses
  them: the room for forecast error comes from the model's uncertainty, not a fixed margin.
- :func:`thermostat` is the rule-based controller (:class:`RuleTuning`) and the fallback used when
  the model or the data is stale; :class:`ScreenRule` is the climate computer's screen rule.

No I/O, no clocks, no randomness: the same inputs give the same decision.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from app.config import Limits
from app.contracts.vocabulary import ACTUATORS, horizon_of, interval_key, is_interval_key, variable_of

HEAT_COLUMN = ACTUATORS.index("heat_pct")
VENT_COLUMN = ACTUATORS.index("vent_pct")


@dataclass(frozen=True)
class Targets:
    """The band to keep indoor air in, and the humidity ceiling."""

    band_low_c: float = 18.0
    band_high_c: float = 25.0
    rh_max_pct: float = 88.0
    margin_c: float = 0.0
    """How far inside the lower edge the MPC aims its forecasts (room for forecast error); the
    band itself (what "in band" means) is unchanged. Used where the forecaster gives no lower
    interval edge (or a non-finite one)."""
    edge_margin_c: float = 0.0
    """With interval forecasts: how far above the lower edge of the band the forecast's lower
    interval edge must stay (the interval itself is the room for forecast error)."""
    edge_scale: float = 1.0
    """The share of the distance from the point forecast to its interval edge that counts as
    margin: 1 holds the edge itself (the 5 % quantile) to the band; 0.5 is about the 20 %
    quantile of a normal error. The model's interval is what training saw (open loop); closed
    loop with offset correction the error is smaller, and a scale below 1 says by how much."""
    max_edge_margin_c: float = 1.5
    """The most an interval edge may lie from its point forecast, kelvin (a broken, very wide
    interval must not drive full heat or full ventilation)."""


@dataclass(frozen=True)
class Weights:
    """Cost weights: band violation (per K^2), humidity excess (per %^2), heating energy
    (per heat-percent, i.e. proportional to energy), actuator travel (per percent).

    A steep band weight: 0.1 K below the aim costs as much as 10 % more heat, so the controller
    saves energy by riding close to the aim, not by leaving the band. A gentle humidity weight:
    10 % above the ceiling at a horizon costs as much as 5 % more heat. At 0.05 the MPC heated hard
    to dry the air on humid afternoons (2.6 % more energy than the thermostat over a simulated day,
    for air the thermostat left as humid); humidity stays a secondary aim, and the demo reports
    the time above the ceiling for both controllers."""

    band_k2: float = 100.0
    rh_pct2: float = 0.005
    energy_per_heat_pct: float = 0.01
    travel_per_pct: float = 0.002
    vent_loss_per_pct_k: float = 0.0
    """Ventilation's cost per vent-percent per kelvin the inside is warmer than the outside, while
    the outside is colder than the band's lower edge: the free heat (sun, stored in the floor and
    the pipes) it throws away, which the night's heating pays back. With it the MPC rides the
    solar gain up to the band's top instead of venting it early; with the outside above the band's
    edge no heating pays it back and venting is free. 0: air exchange is free."""
    reversal_per_pct: float = 0.0
    """Cost per percent of a heating move against its recent direction (the change of its position
    over the last 15 minutes): damps the ~1 K oscillation a one-step MPC with lagged heating falls
    into. Only heating: the pipes' lag is what makes it swing (vents and the screen act at once,
    and a vent left open against its own trend would throw heat away)."""


@dataclass(frozen=True)
class Decision:
    """What the policy chose and why."""

    setpoints: dict[str, float]
    mode: str  # "mpc" or "thermostat"
    reason: str
    cost: float | None = None
    forecast: dict[str, float] = field(default_factory=dict)
    candidate_index: int | None = None
    """Which of the candidates the MPC chose (``None`` for the thermostat)."""
    clamped: tuple[str, ...] = ()
    """Actuators whose proposed setting the safety or rate limits changed (:func:`clamped_actuators`).
    The MPC's candidates are clamped before they are costed, so this is mostly the thermostat's."""


@dataclass(frozen=True)
class CostContext:
    """What the cost reads of the greenhouse besides the candidates and their forecasts."""

    air_temp_c: float = math.nan
    outside_temp_c: float = math.nan
    """Indoor and outdoor air temperature now (what a percent of ventilation throws away)."""
    recent_change_pct: Mapping[str, float] = field(default_factory=dict)
    """Per actuator, the change of its position over the last 15 minutes (its direction)."""


DEFAULT_LEVELS: tuple[float, ...] = (0, 25, 50, 75, 100)
"""Candidate settings (%) of an actuator that has no levels of its own."""


def _bounded_current(actuator: str, current: Mapping[str, float], limits: Limits) -> float:
    low, high = limits.bounds(actuator)
    cur = float(current.get(actuator, low))
    return min(high, max(low, cur)) if math.isfinite(cur) else low


def _clamp_one(actuator: str, want: float, cur: float, limits: Limits, minutes: float) -> float:
    """``want`` for one actuator at ``cur`` (already bounded): the rate limit, then the bounds."""
    low, high = limits.bounds(actuator)
    if not math.isfinite(want):
        want = cur
    step = limits.rate(actuator) * minutes
    want = round(min(cur + step, max(cur - step, want)), 3)
    # safety bounds last: they win over rounding and over the rate limit
    return min(high, max(low, want))


def clamp_setpoints(proposed: Mapping[str, float], current: Mapping[str, float], limits: Limits, dt_s: float) -> dict[str, float]:
    """Bound ``proposed`` to the safety limits and to at most ``rate * dt`` travel from ``current``.

    Non-finite proposals keep the current setting (then bounded too)."""
    minutes = max(0.0, dt_s) / 60.0
    out = {}
    for a in ACTUATORS:
        cur = _bounded_current(a, current, limits)
        out[a] = _clamp_one(a, float(proposed.get(a, cur)), cur, limits, minutes)
    return out


def clamped_actuators(proposed: Mapping[str, float], chosen: Mapping[str, float]) -> tuple[str, ...]:
    """The actuators whose finite proposal differs from what :func:`clamp_setpoints` chose (beyond
    its rounding to 0.001), in ``ACTUATORS`` order. A missing or non-finite proposal means "keep
    the current setting" and is not a clamp."""
    out = []
    for a in ACTUATORS:
        want = float(proposed.get(a, math.nan))
        if math.isfinite(want) and abs(want - float(chosen[a])) > 1e-3:
            out.append(a)
    return tuple(out)


def candidate_plans(
    current: Mapping[str, float], limits: Limits, dt_s: float, levels: Sequence[float] | Mapping[str, Sequence[float]] = DEFAULT_LEVELS, fixed: Mapping[str, float] | None = None
) -> np.ndarray:
    """The candidate settings, one per row (columns in ``ACTUATORS`` order): each actuator at its
    current value or any level (one sequence for all, or one per actuator), or only at its
    ``fixed`` value (e.g. the screen from :func:`screen_rule`); clamped and deduplicated.

    Clamping acts on each actuator alone, so the grid is the product of each actuator's clamped,
    deduplicated options (in first-seen order of the sorted options): the whole product, clamped
    and deduplicated in order, is the definition the tests hold it to. The matrix is read-only and
    remembered for its arguments; a miss costs ~0.06 ms for about a hundred candidates."""
    key = tuple(sorted((a, float(v)) for a, v in current.items()))
    fixed_key = tuple(sorted((a, float(v)) for a, v in (fixed or {}).items()))
    if isinstance(levels, Mapping):
        levels_key: tuple = (True, tuple(sorted((a, tuple(float(x) for x in v)) for a, v in levels.items())))
    else:
        levels_key = (False, tuple(float(x) for x in levels))
    return _plans(key, limits, float(dt_s), levels_key, fixed_key)


@lru_cache(maxsize=1024)
def _plans(current: tuple[tuple[str, float], ...], limits: Limits, dt_s: float, levels: tuple, fixed: tuple[tuple[str, float], ...]) -> np.ndarray:
    # levels: (False, floats for every actuator) or (True, (actuator, floats) pairs)
    per_actuator = dict(levels[1]) if levels[0] else None
    now, pinned, minutes = dict(current), dict(fixed), max(0.0, dt_s) / 60.0
    axes = []
    for a in ACTUATORS:
        if a in pinned:
            options = [pinned[a]]
        else:
            options = sorted({now.get(a, 0.0), *(per_actuator.get(a, DEFAULT_LEVELS) if per_actuator is not None else levels[1])})
        cur = _bounded_current(a, now, limits)
        axes.append(list(dict.fromkeys(_clamp_one(a, float(o), cur, limits, minutes) for o in options)))
    plans = np.array(list(itertools.product(*axes)), dtype=np.float64).reshape(-1, len(ACTUATORS))
    plans.flags.writeable = False  # shared by every caller with the same arguments
    return plans


def plan_matrix(candidates: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Setpoint dicts as a float matrix, one candidate per row, columns in :data:`ACTUATORS` order."""
    return np.array([[float(c[a]) for a in ACTUATORS] for c in candidates], dtype=np.float64).reshape(len(candidates), len(ACTUATORS))


def cost_horizons(horizons_min: Sequence[int], max_horizon_min: int | None, min_horizon_min: int | None = None) -> list[int]:
    """The horizons the cost counts: those from ``min_horizon_min`` (the longest when none is that
    long) up to ``max_horizon_min`` (all when ``None``), and the shortest of those always."""
    hs = list(horizons_min)
    if min_horizon_min is not None and hs:
        hs = [h for h in hs if h >= min_horizon_min] or [max(hs)]
    if max_horizon_min is None or not hs:
        return hs
    limit = max(max_horizon_min, min(hs))
    return [h for h in hs if h <= limit]


class CostColumns(NamedTuple):
    """Where the counted forecasts sit in a forecast row (:func:`cost_columns`)."""

    temp: np.ndarray
    """Temperature point forecasts."""
    low: np.ndarray
    """For each of ``temp``, its lower interval edge's column (-1: none)."""
    high: np.ndarray
    """For each of ``temp``, its upper interval edge's column (-1: none)."""
    rh: np.ndarray
    """Humidity point forecasts."""


@lru_cache(maxsize=256)
def cost_columns(keys: tuple[str, ...], max_horizon_min: int | None) -> CostColumns:
    """Indices of the forecasts that count (horizon <= the limit; the shortest horizon always
    counts): point forecasts by variable, and each temperature forecast's interval edges."""
    counts = set(cost_horizons(sorted({horizon_of(k) for k in keys}), max_horizon_min))
    index = {k: i for i, k in enumerate(keys)}

    def points(variable: str) -> list[int]:
        return [i for i, k in enumerate(keys) if not is_interval_key(k) and variable_of(k) == variable and horizon_of(k) in counts]

    temp = points("air_temp_c")

    def edges(side: str) -> np.ndarray:
        return np.array([index.get(interval_key("air_temp_c", horizon_of(keys[i]), side), -1) for i in temp], dtype=np.intp)

    return CostColumns(np.array(temp, dtype=np.intp), edges("low"), edges("high"), np.array(points("rh_pct"), dtype=np.intp))


def _edge_distance(points: np.ndarray, forecasts: np.ndarray, edge_cols: np.ndarray, side: int, limit_c: float) -> np.ndarray:
    """Per entry, how far the interval edge lies beyond the point forecast (``side`` -1: below,
    +1: above), clipped to ``0..limit_c``; NaN where there is no edge or it is not finite."""
    out = np.full(points.shape, np.nan)
    has = edge_cols >= 0
    if has.any():
        edge = forecasts[:, edge_cols[has]]
        with np.errstate(invalid="ignore"):
            distance = np.clip(side * (edge - points[:, has]), 0.0, limit_c)
        out[:, has] = np.where(np.isfinite(edge), distance, np.nan)
    return out


def band_bounds(forecasts: np.ndarray, columns: CostColumns, targets: Targets) -> tuple[np.ndarray, np.ndarray]:
    """The temperatures the band penalty holds to the band, per candidate and counted horizon:
    ``(lower, upper)``. With interval edges, the lower edge (less ``edge_margin_c``) and the upper
    edge, each at most ``max_edge_margin_c`` from the point forecast and pulled toward it by
    ``edge_scale``; without them (or where an edge is not finite), the point forecast less
    ``margin_c`` and the point forecast itself."""
    points = forecasts[:, columns.temp]
    scale = min(1.0, max(0.0, targets.edge_scale))
    below = scale * _edge_distance(points, forecasts, columns.low, -1, targets.max_edge_margin_c)
    above = scale * _edge_distance(points, forecasts, columns.high, +1, targets.max_edge_margin_c)
    lower = points - np.where(np.isnan(below), targets.margin_c, below + targets.edge_margin_c)
    upper = points + np.where(np.isnan(above), 0.0, above)
    return lower, upper


def scale_edges(forecasts: np.ndarray, keys: Sequence[str], scales: Mapping[int, float]) -> np.ndarray:
    """``forecasts`` with each temperature forecast's lower edge moved to ``scale`` times its
    distance below the point forecast (``scales``: horizon minutes -> scale, at least 0; a horizon
    without one keeps its edge). A new array; non-finite edges stay as they are."""
    out = np.array(forecasts, dtype=np.float64)
    index = {k: i for i, k in enumerate(keys)}
    for h, scale in scales.items():
        point, low = index.get(f"air_temp_c_{h}min"), index.get(interval_key("air_temp_c", h, "low"))
        if point is None or low is None or not math.isfinite(scale):
            continue
        edge = out[:, low]
        with np.errstate(invalid="ignore"):
            out[:, low] = np.where(np.isfinite(edge), out[:, point] - max(0.0, scale) * np.maximum(0.0, out[:, point] - edge), edge)
    return out


def candidate_costs(
    plans: np.ndarray,
    forecasts: np.ndarray,
    keys: Sequence[str],
    current: Mapping[str, float],
    targets: Targets,
    weights: Weights = Weights(),
    max_horizon_min: int | None = None,
    context: CostContext | None = None,
) -> np.ndarray:
    """The cost of every candidate at once.

    ``plans`` holds one candidate per row (columns in :data:`ACTUATORS` order); ``forecasts`` one
    forecast per row, its columns named by ``keys`` (``air_temp_c_<h>min`` / ``rh_pct_<h>min``,
    and optionally interval edges ``air_temp_c_<h>min_low``/``_high``). Forecasts beyond
    ``max_horizon_min`` do not count (a plan held constant that long is not what the controller
    will do: it decides again every interval); the shortest horizon always counts.
    Cost: squared band violation (:func:`band_bounds` below the band or above it), squared
    humidity excess, heating (proportional to energy), actuator travel, and with ``context`` the
    heat ventilation throws away and moves against an actuator's recent direction."""
    columns = cost_columns(tuple(keys), max_horizon_min)
    lower, upper = band_bounds(forecasts, columns, targets)
    below = np.maximum(0.0, targets.band_low_c - lower)
    above = np.maximum(0.0, upper - targets.band_high_c)
    band = (below * below + above * above).sum(axis=1)
    excess = np.maximum(0.0, forecasts[:, columns.rh] - targets.rh_max_pct)
    rh = (excess * excess).sum(axis=1)
    now = np.array([float(current.get(a, 0.0)) for a in ACTUATORS])
    moves = plans - now
    cost = weights.band_k2 * band + weights.rh_pct2 * rh + weights.energy_per_heat_pct * plans[:, HEAT_COLUMN] + weights.travel_per_pct * np.abs(moves).sum(axis=1)
    if context is not None:
        cost = cost + _context_costs(plans, moves, targets, weights, context)
    return cost


def _context_costs(plans: np.ndarray, moves: np.ndarray, targets: Targets, weights: Weights, context: CostContext) -> np.ndarray:
    """Ventilation's thrown-away heat and reversals, per candidate."""
    warmer_c = context.air_temp_c - context.outside_temp_c
    paid_back = math.isfinite(warmer_c) and context.outside_temp_c < targets.band_low_c
    cost = weights.vent_loss_per_pct_k * (max(0.0, warmer_c) if paid_back else 0.0) * plans[:, VENT_COLUMN]
    recent = float(context.recent_change_pct.get("heat_pct", 0.0))
    # a move counts as a reversal only against a real recent movement (more than a percent)
    if weights.reversal_per_pct and math.isfinite(recent) and abs(recent) > 1.0:
        heat_moves = moves[:, HEAT_COLUMN]
        cost = cost + weights.reversal_per_pct * np.where(heat_moves * recent < 0, np.abs(heat_moves), 0.0)
    return cost


def pick_best(
    plans: np.ndarray,
    forecasts: np.ndarray,
    keys: Sequence[str],
    current: Mapping[str, float],
    *,
    limits: Limits,
    targets: Targets,
    weights: Weights = Weights(),
    dt_s: float = 300.0,
    max_horizon_min: int | None = None,
    context: CostContext | None = None,
) -> Decision:
    """The cheapest candidate (:func:`candidate_costs`), clamped. Ties go to less heat, then to the
    earlier candidate; a candidate whose point forecast is not finite never wins, and when none is
    finite this raises ``ValueError`` (the caller falls back to the thermostat). A non-finite
    interval edge is ignored (the fixed margin stands in for it)."""
    plans = np.asarray(plans, dtype=np.float64)
    forecasts = np.asarray(forecasts, dtype=np.float64)
    if plans.ndim != 2 or forecasts.ndim != 2 or len(plans) != len(forecasts) or not len(plans) or forecasts.shape[1] != len(keys):
        raise ValueError("forecaster must return one forecast per candidate")
    costs = candidate_costs(plans, forecasts, keys, current, targets, weights, max_horizon_min, context)
    costs = np.where(np.isfinite(costs), costs, np.inf)
    if not np.isfinite(costs).any():
        raise ValueError("no candidate has a finite forecast")
    best = int(np.lexsort((plans[:, HEAT_COLUMN], costs))[0])  # stable: equal keys keep candidate order
    proposed = dict(zip(ACTUATORS, plans[best].tolist()))
    chosen = clamp_setpoints(proposed, current, limits, dt_s)
    forecast = {k: round(v, 3) for k, v in zip(keys, forecasts[best].tolist()) if math.isfinite(v)}
    cost = float(costs[best])
    rounded_cost = round(cost, 4) if math.isfinite(cost) else None
    return Decision(chosen, "mpc", f"least cost of {len(plans)} candidates", rounded_cost, forecast, best, clamped_actuators(proposed, chosen))


@dataclass(frozen=True)
class ScreenRule:
    """The energy/shade screen as horticultural climate computers run it: closed when it is dark
    and cold outside (insulation), partly closed in strong sun (shade), open otherwise."""

    night_below_outside_c: float = 15.0
    """Closed for insulation only when the outside is colder than this."""
    dark_below_solar_w_m2: float = 50.0
    """... and the sun gives less than this (raising it keeps the screen closed longer in the
    morning and closes it earlier in the evening: less heat lost, less light)."""
    shade_above_solar_w_m2: float = 750.0
    shade_pct: float = 60.0

    def setpoint_pct(self, outside_temp_c: float, solar_w_m2: float) -> float:
        """The screen's setpoint for these outdoor conditions."""
        if solar_w_m2 < self.dark_below_solar_w_m2 and outside_temp_c < self.night_below_outside_c:
            return 100.0
        if solar_w_m2 > self.shade_above_solar_w_m2:
            return self.shade_pct
        return 0.0


def screen_rule(
    outside_temp_c: float, solar_w_m2: float, *, night_below_outside_c: float = 15.0, dark_below_solar_w_m2: float = 50.0, shade_above_solar_w_m2: float = 750.0, shade_pct: float = 60.0
) -> float:
    """:meth:`ScreenRule.setpoint_pct` of the rule with these thresholds."""
    return ScreenRule(night_below_outside_c, dark_below_solar_w_m2, shade_above_solar_w_m2, shade_pct).setpoint_pct(outside_temp_c, solar_w_m2)


def screen_opening(setpoint_pct: float, position_pct: float, change_15min_pct: float, scheduled_pct: float | None = None) -> bool:
    """Whether the screen is about to open (``scheduled_pct`` below the setpoint), is opening (its
    position above the setpoint) or opened in the last 15 minutes. The indoor air then meets the
    cold cover at once, and the forecaster, which sees that a few times a day, underestimates the
    drop: growers pre-heat for it, and the MPC aims higher (a larger margin) meanwhile."""
    about_to = scheduled_pct is not None and scheduled_pct < setpoint_pct
    return about_to or position_pct > setpoint_pct + 5.0 or change_15min_pct < -20.0


@dataclass(frozen=True)
class RuleTuning:
    """The rule-based controller's settings, relative to the band (so one tuning serves any band):
    a grower's climate computer. The defaults are the product's fallback; a season trial tunes
    them by a sweep (:mod:`app.season.sweep`)."""

    heat_full_offset_c: float = 0.0
    """Full heat at ``band_low_c`` plus this (kelvin; negative: below the band's edge)."""
    heat_band_c: float = 1.5
    """Proportional band: heating falls from full to none over this many kelvin above full."""
    vent_offset_c: float = -1.0
    """Ventilation starts at ``band_high_c`` plus this (kelvin)."""
    vent_band_c: float = 3.0
    """... and is fully open this many kelvin higher."""
    rh_vent_pct_per_pct: float = 5.0
    """Humidity ventilation (when not heating): percent open per percent RH above the ceiling."""
    rh_vent_max_pct: float = 30.0

    def __post_init__(self) -> None:
        if not (self.heat_band_c > 0 and self.vent_band_c > 0):
            raise ValueError("heat_band_c and vent_band_c must be positive")


def thermostat(
    air_temp_c: float, rh_pct: float, current: Mapping[str, float], *, limits: Limits, targets: Targets, dt_s: float = 300.0, screen_pct: float | None = None, tuning: RuleTuning = RuleTuning()
) -> Decision:
    """Rule-based control (``tuning``): proportional heating near the band's lower edge, venting
    near its top (or for humidity when not heating); the screen goes to ``screen_pct`` (e.g. from
    :class:`ScreenRule`) or stays put."""
    # By default: full heat at the band's lower edge, none 1.5 K above it: the proportional band
    # sits inside the target band, so the thermostat holds it (centred on the edge, it would sit
    # below it).
    t = tuning
    full_heat_c = targets.band_low_c + t.heat_full_offset_c
    heat = 100.0 * min(1.0, max(0.0, (full_heat_c + t.heat_band_c - air_temp_c) / t.heat_band_c))
    vent = 100.0 * min(1.0, max(0.0, (air_temp_c - (targets.band_high_c + t.vent_offset_c)) / t.vent_band_c))
    if rh_pct > targets.rh_max_pct and heat == 0.0:
        vent = max(vent, min(t.rh_vent_max_pct, (rh_pct - targets.rh_max_pct) * t.rh_vent_pct_per_pct))
    screen = float(current.get("screen_pct", 0.0)) if screen_pct is None else float(screen_pct)
    proposed = {"heat_pct": heat, "vent_pct": 0.0 if heat > 0 else vent, "screen_pct": screen}
    chosen = clamp_setpoints(proposed, current, limits, dt_s)
    return Decision(chosen, "thermostat", f"rule-based at {air_temp_c:.1f} C / {rh_pct:.0f} %RH", clamped=clamped_actuators(proposed, chosen))
