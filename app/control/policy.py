"""Control policy: pure, deterministic choices of actuator setpoints (safety code).

- :func:`clamp_setpoints` bounds any proposal by the safety limits and the rate-of-change limits;
  every setpoint that leaves this module has passed through it.
- :func:`choose_mpc` is model-predictive: it scores a grid of candidate settings through a
  forecaster (forecast temperature and humidity per horizon) and picks the candidate that keeps the
  forecast inside the target band at the least energy, with a small penalty on actuator travel.
- :func:`thermostat` is the rule-based fallback used when the model or the data is stale.

No I/O, no clocks, no randomness: the same inputs give the same decision.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

ACTUATORS = ("vent_pct", "heat_pct", "screen_pct")


@dataclass(frozen=True)
class Limits:
    """Safety limits (percent) and rate-of-change limits (percent per minute) per actuator."""

    vent_min_pct: float = 0.0
    vent_max_pct: float = 100.0
    heat_min_pct: float = 0.0
    heat_max_pct: float = 100.0
    screen_min_pct: float = 0.0
    screen_max_pct: float = 100.0
    vent_rate_pct_per_min: float = 20.0
    heat_rate_pct_per_min: float = 25.0
    screen_rate_pct_per_min: float = 20.0

    def bounds(self, actuator: str) -> tuple[float, float]:
        name = actuator.removesuffix("_pct")
        return getattr(self, f"{name}_min_pct"), getattr(self, f"{name}_max_pct")

    def rate(self, actuator: str) -> float:
        return getattr(self, f"{actuator.removesuffix('_pct')}_rate_pct_per_min")


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
    saves energy by riding close to the aim, not by leaving the band."""

    band_k2: float = 100.0
    rh_pct2: float = 0.05
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


def clamp_setpoints(proposed: Mapping[str, float], current: Mapping[str, float], limits: Limits, dt_s: float) -> dict[str, float]:
    """Bound ``proposed`` to the safety limits and to at most ``rate * dt`` travel from ``current``.

    Non-finite proposals keep the current setting (then bounded too)."""
    out = {}
    minutes = max(0.0, dt_s) / 60.0
    for a in ACTUATORS:
        low, high = limits.bounds(a)
        cur = float(current.get(a, low))
        cur = min(high, max(low, cur)) if math.isfinite(cur) else low
        want = float(proposed.get(a, cur))
        if not math.isfinite(want):
            want = cur
        step = limits.rate(a) * minutes
        want = round(min(cur + step, max(cur - step, want)), 3)
        # safety bounds last: they win over rounding and over the rate limit
        out[a] = min(high, max(low, want))
    return out


def candidate_grid(
    current: Mapping[str, float],
    limits: Limits,
    dt_s: float,
    levels: Sequence[float] | Mapping[str, Sequence[float]] = (0, 25, 50, 75, 100),
    fixed: Mapping[str, float] | None = None,
) -> list[dict[str, float]]:
    """Candidate settings: each actuator at the current value or any level (one sequence for all,
    or one per actuator), or only at its ``fixed`` value (e.g. the screen from
    :func:`screen_rule`); clamped and deduplicated."""
    fixed = fixed or {}

    def levels_of(a: str) -> Sequence[float]:
        return levels.get(a, (0, 25, 50, 75, 100)) if isinstance(levels, Mapping) else levels

    options = {a: [float(fixed[a])] if a in fixed else sorted({float(current.get(a, 0.0)), *map(float, levels_of(a))}) for a in ACTUATORS}
    seen, out = set(), []
    for combo in itertools.product(*(options[a] for a in ACTUATORS)):
        clamped = clamp_setpoints(dict(zip(ACTUATORS, combo)), current, limits, dt_s)
        key = tuple(clamped[a] for a in ACTUATORS)
        if key not in seen:
            seen.add(key)
            out.append(clamped)
    return out


def horizon_of(key: str) -> int:
    """The horizon in minutes of a forecast key such as ``air_temp_c_15min``."""
    return int(key.rsplit("_", 1)[1].removesuffix("min"))


def cost_of(
    forecast: Mapping[str, float],
    candidate: Mapping[str, float],
    current: Mapping[str, float],
    targets: Targets,
    weights: Weights,
    max_horizon_min: int | None = None,
) -> float:
    """Cost of one candidate given its forecast (``air_temp_c_<h>min`` / ``rh_pct_<h>min`` keys);
    forecasts beyond ``max_horizon_min`` do not count (a plan held constant that long is not what
    the controller will do: it decides again every interval)."""
    band = 0.0
    rh = 0.0
    for key, value in forecast.items():
        if max_horizon_min is not None and horizon_of(key) > max_horizon_min:
            continue
        if key.startswith("air_temp_c_"):
            below = max(0.0, targets.band_low_c + targets.margin_c - value)
            above = max(0.0, value - targets.band_high_c)
            band += below * below + above * above
        elif key.startswith("rh_pct_"):
            excess = max(0.0, value - targets.rh_max_pct)
            rh += excess * excess
    travel = sum(abs(candidate[a] - float(current.get(a, 0.0))) for a in ACTUATORS)
    return weights.band_k2 * band + weights.rh_pct2 * rh + weights.energy_per_heat_pct * candidate["heat_pct"] + weights.travel_per_pct * travel


def choose_mpc(
    forecaster: Callable[[list[dict[str, float]]], list[Mapping[str, float]]],
    current: Mapping[str, float],
    *,
    limits: Limits,
    targets: Targets,
    weights: Weights = Weights(),
    dt_s: float = 300.0,
) -> Decision:
    """Evaluate every candidate through ``forecaster`` (one call, a list of candidates in, a list of
    forecasts out) and return the cheapest; ties go to the earlier (lower-energy-first) candidate."""
    candidates = candidate_grid(current, limits, dt_s)
    return pick_best(candidates, forecaster(candidates), current, limits=limits, targets=targets, weights=weights, dt_s=dt_s)


def pick_best(
    candidates: Sequence[Mapping[str, float]],
    forecasts: Sequence[Mapping[str, float]],
    current: Mapping[str, float],
    *,
    limits: Limits,
    targets: Targets,
    weights: Weights = Weights(),
    dt_s: float = 300.0,
    max_horizon_min: int | None = None,
) -> Decision:
    """The cheapest of ``candidates`` given one forecast each (for callers that forecast
    asynchronously); ties go to the earlier (lower-energy-first) candidate. Only forecasts up to
    ``max_horizon_min`` count (all when ``None``; the shortest horizon always counts)."""
    if len(forecasts) != len(candidates) or not candidates:
        raise ValueError("forecaster must return one forecast per candidate")
    if max_horizon_min is not None:
        shortest = min((horizon_of(k) for k in forecasts[0]), default=max_horizon_min)
        max_horizon_min = max(max_horizon_min, shortest)
    scored = sorted(
        ((cost_of(f, c, current, targets, weights, max_horizon_min), c["heat_pct"], i) for i, (c, f) in enumerate(zip(candidates, forecasts))),
    )
    best_cost, _, best = scored[0]
    chosen = clamp_setpoints(candidates[best], current, limits, dt_s)
    forecast = {k: round(float(v), 3) for k, v in forecasts[best].items()}
    return Decision(chosen, "mpc", f"least cost of {len(candidates)} candidates", round(best_cost, 4), forecast, best)


def screen_rule(outside_temp_c: float, solar_w_m2: float, *, night_below_outside_c: float = 15.0, dark_below_solar_w_m2: float = 50.0, shade_above_solar_w_m2: float = 750.0, shade_pct: float = 60.0) -> float:
    """The energy/shade screen as horticultural climate computers run it: closed when it is dark
    and cold outside (insulation), partly closed in strong sun (shade), open otherwise."""
    if solar_w_m2 < dark_below_solar_w_m2 and outside_temp_c < night_below_outside_c:
        return 100.0
    if solar_w_m2 > shade_above_solar_w_m2:
        return shade_pct
    return 0.0


def thermostat(
    air_temp_c: float, rh_pct: float, current: Mapping[str, float], *, limits: Limits, targets: Targets, dt_s: float = 300.0, screen_pct: float | None = None
) -> Decision:
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
