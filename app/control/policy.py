"""Control policy: pure, deterministic choices of actuator setpoints (safety code).

- :func:`clamp_setpoints` bounds any proposal by the safety limits and the rate-of-change limits;
  every setpoint that leaves this module has passed through it.
- :func:`candidate_plans` spans the candidate settings, :func:`candidate_costs` scores each
  candidate's forecast (temperature and humidity per horizon) and :func:`pick_best` picks the one
  that keeps the forecast inside the target band at the least energy, with a small penalty on
  actuator travel: model-predictive control (:mod:`app.control.core` runs them in order).
- :func:`thermostat` is the rule-based fallback used when the model or the data is stale.

No I/O, no clocks, no randomness: the same inputs give the same decision.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from app.config import Limits
from app.contracts.vocabulary import ACTUATORS, horizon_of

HEAT_COLUMN = ACTUATORS.index("heat_pct")


@dataclass(frozen=True)
class Targets:
    """The band to keep indoor air in, and the humidity ceiling."""

    band_low_c: float = 18.0
    band_high_c: float = 25.0
    rh_max_pct: float = 88.0
    margin_c: float = 0.0
    """How far inside the lower edge the MPC aims its forecasts (room for forecast error); the
    band itself (what "in band" means) is unchanged."""


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


def cost_horizons(horizons_min: Sequence[int], max_horizon_min: int | None) -> list[int]:
    """The horizons the cost counts: those up to ``max_horizon_min`` (all when ``None``), and the
    shortest always."""
    if max_horizon_min is None or not horizons_min:
        return list(horizons_min)
    limit = max(max_horizon_min, min(horizons_min))
    return [h for h in horizons_min if h <= limit]


@lru_cache(maxsize=256)
def _cost_columns(keys: tuple[str, ...], max_horizon_min: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the temperature and humidity forecasts that count (horizon <= the limit; the
    shortest horizon always counts)."""
    counts = set(cost_horizons(sorted({horizon_of(k) for k in keys}), max_horizon_min))

    def counted(prefix: str) -> np.ndarray:
        return np.array([i for i, k in enumerate(keys) if k.startswith(prefix) and horizon_of(k) in counts], dtype=np.intp)

    return counted("air_temp_c_"), counted("rh_pct_")


def candidate_costs(
    plans: np.ndarray, forecasts: np.ndarray, keys: Sequence[str], current: Mapping[str, float], targets: Targets, weights: Weights = Weights(), max_horizon_min: int | None = None
) -> np.ndarray:
    """The cost of every candidate at once.

    ``plans`` holds one candidate per row (columns in :data:`ACTUATORS` order); ``forecasts`` one
    forecast per row, its columns named by ``keys`` (``air_temp_c_<h>min`` / ``rh_pct_<h>min``).
    Forecasts beyond ``max_horizon_min`` do not count (a plan held constant that long is not what
    the controller will do: it decides again every interval); the shortest horizon always counts.
    Cost: squared band violation (below the band's edge plus ``margin_c``, or above it), squared
    humidity excess, heating (proportional to energy) and actuator travel."""
    temp_cols, rh_cols = _cost_columns(tuple(keys), max_horizon_min)
    temps = forecasts[:, temp_cols]
    below = np.maximum(0.0, targets.band_low_c + targets.margin_c - temps)
    above = np.maximum(0.0, temps - targets.band_high_c)
    band = (below * below + above * above).sum(axis=1)
    excess = np.maximum(0.0, forecasts[:, rh_cols] - targets.rh_max_pct)
    rh = (excess * excess).sum(axis=1)
    now = np.array([float(current.get(a, 0.0)) for a in ACTUATORS])
    travel = np.abs(plans - now).sum(axis=1)
    return weights.band_k2 * band + weights.rh_pct2 * rh + weights.energy_per_heat_pct * plans[:, HEAT_COLUMN] + weights.travel_per_pct * travel


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
) -> Decision:
    """The cheapest candidate (:func:`candidate_costs`), clamped. Ties go to less heat, then to the
    earlier candidate; a candidate whose forecast is not finite never wins, and when none is finite
    this raises ``ValueError`` (the caller falls back to the thermostat)."""
    plans = np.asarray(plans, dtype=np.float64)
    forecasts = np.asarray(forecasts, dtype=np.float64)
    if plans.ndim != 2 or forecasts.ndim != 2 or len(plans) != len(forecasts) or not len(plans) or forecasts.shape[1] != len(keys):
        raise ValueError("forecaster must return one forecast per candidate")
    costs = candidate_costs(plans, forecasts, keys, current, targets, weights, max_horizon_min)
    costs = np.where(np.isfinite(costs), costs, np.inf)
    if not np.isfinite(costs).any():
        raise ValueError("no candidate has a finite forecast")
    best = int(np.lexsort((plans[:, HEAT_COLUMN], costs))[0])  # stable: equal keys keep candidate order
    chosen = clamp_setpoints(dict(zip(ACTUATORS, plans[best].tolist())), current, limits, dt_s)
    forecast = {k: round(v, 3) for k, v in zip(keys, forecasts[best].tolist())}
    cost = float(costs[best])
    return Decision(chosen, "mpc", f"least cost of {len(plans)} candidates", round(cost, 4) if math.isfinite(cost) else None, forecast, best)


def screen_rule(
    outside_temp_c: float, solar_w_m2: float, *, night_below_outside_c: float = 15.0, dark_below_solar_w_m2: float = 50.0, shade_above_solar_w_m2: float = 750.0, shade_pct: float = 60.0
) -> float:
    """The energy/shade screen as horticultural climate computers run it: closed when it is dark
    and cold outside (insulation), partly closed in strong sun (shade), open otherwise."""
    if solar_w_m2 < dark_below_solar_w_m2 and outside_temp_c < night_below_outside_c:
        return 100.0
    if solar_w_m2 > shade_above_solar_w_m2:
        return shade_pct
    return 0.0


def screen_opening(setpoint_pct: float, position_pct: float, change_15min_pct: float, scheduled_pct: float | None = None) -> bool:
    """Whether the screen is about to open (``scheduled_pct`` below the setpoint), is opening (its
    position above the setpoint) or opened in the last 15 minutes. The indoor air then meets the
    cold cover at once, and the forecaster, which sees that a few times a day, underestimates the
    drop: growers pre-heat for it, and the MPC aims higher (a larger margin) meanwhile."""
    about_to = scheduled_pct is not None and scheduled_pct < setpoint_pct
    return about_to or position_pct > setpoint_pct + 5.0 or change_15min_pct < -20.0


def thermostat(air_temp_c: float, rh_pct: float, current: Mapping[str, float], *, limits: Limits, targets: Targets, dt_s: float = 300.0, screen_pct: float | None = None) -> Decision:
    """Rule-based fallback: proportional heating below the band, venting above it (or for
    humidity); the screen goes to ``screen_pct`` (e.g. from :func:`screen_rule`) or stays put."""
    heat_band_c = 1.5
    vent_band_c = 3.0
    # Full heat at the band's lower edge, none 1.5 K above it: the proportional band sits inside
    # the target band, so the thermostat holds it (centred on the edge, it would sit below it).
    heat = 100.0 * min(1.0, max(0.0, (targets.band_low_c + heat_band_c - air_temp_c) / heat_band_c))
    vent = 100.0 * min(1.0, max(0.0, (air_temp_c - (targets.band_high_c - 1.0)) / vent_band_c))
    if rh_pct > targets.rh_max_pct and heat == 0.0:
        vent = max(vent, min(30.0, (rh_pct - targets.rh_max_pct) * 5.0))
    screen = float(current.get("screen_pct", 0.0)) if screen_pct is None else float(screen_pct)
    proposed = {"heat_pct": heat, "vent_pct": 0.0 if heat > 0 else vent, "screen_pct": screen}
    chosen = clamp_setpoints(proposed, current, limits, dt_s)
    return Decision(chosen, "thermostat", f"rule-based at {air_temp_c:.1f} C / {rh_pct:.0f} %RH")
