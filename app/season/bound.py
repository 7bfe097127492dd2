"""A plant-knowing bound on heating energy: the least heat that holds the band's lower edge.

The question it answers: with perfect knowledge of the plant and the weather, how little heat does
a greenhouse need to keep its air at or above ``band_low_c``? No controller that holds the band's
edge can heat much less, so ``1 - bound / thermostat`` is about the largest saving any controller
(the MPC included) could reach against the tuned thermostat by heating alone.

The oracle (:class:`EdgeOracle`) runs in place of the heating of the tuned thermostat
(:func:`~app.control.policy.thermostat` with the season's :class:`~app.season.sweep.Tuning`): every
decision interval (``policy.interval_s``) the thermostat decides as in any trial, on its sensors,
and its ventilation and screen are sent; the heating is the smallest constant setpoint (a
bisection over the heating's limits) for which a copy of the simulator, stepped
``lookahead_min`` ahead with those setpoints held, keeps the true air temperature at or above
``band_low_c + tolerance_c`` every minute, the screen following the thermostat's screen rule on
the coming weather at each later decision (so the oracle pre-heats before the screen opens in the
morning). The copy is exact: the twin's state, its disturbance's random stream and the weather are
what the real run will meet (the oracle knows the future).

The lookahead (:data:`LOOKAHEAD_MIN`, 15 minutes): heating reaches the air through two lags in
series, the pipes (``heat_time_constant_s``: 300 s for the default glasshouse, 210-450 s over the
evaluation twins) and the air node (its heat capacity over its conductances: about 15 minutes). A
lookahead shorter than the pipes' lag cannot see what a setpoint does, so heat comes late and the
air falls below the edge (5 minutes: 7 % of a winter day below it on ``ev-04``, whose pipes lag 345 s); a longer
one holds a constant setpoint to the coldest moment of a longer future, heating more than the next
decisions, which see that moment coming, would (on one winter day: 10 minutes 0.927 of the
thermostat's heat, 15 minutes 0.929, 20 minutes 0.932, 30 minutes 0.937, all holding the edge
every minute). Fifteen minutes is three decision intervals and two pipe time constants for the
slowest twin the spread allows (86 % of a setpoint step delivered); ``bench/control.py --bound-lookahead-min``
measures other choices.

What the bound is, precisely: the energy of a feasible controller, so it lies *above* the true
minimum by what the greedy, constant-setpoint lookahead over-heats (the bisection's resolution,
``tolerance_c``, a look ahead held constant). It holds the edge nearly always, where the thermostat
lets the air below it for a percent or two of the time (the target allows half a point less time
in band), and it keeps the thermostat's ventilation and screen (the MPC's screen follows the same
rule). Read it as the least heat that keeps the band's lower edge with that ventilation and screen.
It ignores humidity: the cooler air it keeps holds the same water at a higher relative humidity,
so its time above the humidity ceiling is higher than the thermostat's, and where the target asks
for humidity no higher it is a bound on heating alone, not on the whole target.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from app.contracts.command import Setpoints
from app.control.core import ControlDecision, ControlPolicy
from app.control.policy import ScreenRule
from app.season.sweep import Tuning
from app.season.table import Spread
from app.season.trial import Figures, TrialController, TrialResult, run_trial
from app.season.twins import TwinSpec
from app.sim.fleet import FleetSimulator

LOOKAHEAD_MIN = 15.0
"""How far the oracle looks ahead (module docstring)."""
EDGE_TOLERANCE_C = 0.02
"""How far above ``band_low_c`` the oracle holds the air (kelvin): the edge itself, with room for
rounding."""
BISECTION_STEPS = 7
"""Halvings of the heating range: 100 % / 2**7, a setpoint within 0.8 % of the least."""
CONTROLLER_NAME = "bound"


@dataclass(frozen=True)
class EdgeOracle:
    """A :data:`~app.season.trial.SetpointOverride`: the thermostat's ventilation and screen, and
    the least constant heating that keeps the air at or above ``band_low_c + tolerance_c`` over
    ``lookahead_steps`` simulator steps."""

    band_low_c: float
    lookahead_steps: int
    tolerance_c: float = EDGE_TOLERANCE_C
    heat_min_pct: float = 0.0
    heat_max_pct: float = 100.0
    iterations: int = BISECTION_STEPS
    screen_rule: ScreenRule | None = None
    """The thermostat's screen rule (``None``: the lookahead holds the screen where it is sent)."""
    interval_steps: int = 5
    """Simulator steps between decisions (where the lookahead moves the screen)."""

    def __call__(self, fleet: FleetSimulator, greenhouse_id: str, decision: ControlDecision) -> dict[str, float]:
        setpoints = dict(decision.setpoints)
        setpoints["heat_pct"] = self.least_heat_pct(fleet, greenhouse_id, setpoints)
        return setpoints

    def holds(self, fleet: FleetSimulator, greenhouse_id: str, setpoints: Mapping[str, float], heat_pct: float) -> bool:
        """Whether a copy of ``fleet`` with ``setpoints`` (heating at ``heat_pct``) held keeps the
        air at or above the edge every step of the lookahead; the screen follows
        ``screen_rule`` on the coming weather at each later decision, as the thermostat will."""
        ahead = copy.deepcopy(fleet, _shared(fleet, greenhouse_id))
        held = {**setpoints, "heat_pct": heat_pct}
        ahead.apply_setpoints(greenhouse_id, Setpoints.clamped(**held))
        floor_c = self.band_low_c + self.tolerance_c
        for k in range(1, self.lookahead_steps + 1):
            ahead.step()
            if ahead.state(greenhouse_id).air_temp_c < floor_c:
                return False
            if self.screen_rule is not None and k % self.interval_steps == 0:
                outdoor = ahead.outdoor()
                held["screen_pct"] = self.screen_rule.setpoint_pct(outdoor.outside_temp_c, outdoor.solar_w_m2)
                ahead.apply_setpoints(greenhouse_id, Setpoints.clamped(**held))
        return True

    def least_heat_pct(self, fleet: FleetSimulator, greenhouse_id: str, setpoints: Mapping[str, float]) -> float:
        """The least heating setpoint that :meth:`holds` (to the bisection's resolution); the most
        heating when none does (the air falls below the edge whatever the heating does)."""
        if self.holds(fleet, greenhouse_id, setpoints, self.heat_min_pct):
            return self.heat_min_pct
        low_pct, high_pct = self.heat_min_pct, self.heat_max_pct  # low fails; high holds or is all there is
        for _ in range(self.iterations):
            mid_pct = 0.5 * (low_pct + high_pct)
            if self.holds(fleet, greenhouse_id, setpoints, mid_pct):
                high_pct = mid_pct
            else:
                low_pct = mid_pct
        return high_pct


def _shared(fleet: FleetSimulator, greenhouse_id: str) -> dict[int, Any]:
    """A ``deepcopy`` memo that shares what stepping never changes: the weather provider (its
    caches only) and the twin's parameters (frozen)."""
    params = fleet.params(greenhouse_id)
    return {id(fleet.weather): fleet.weather, id(params): params}


def edge_oracle(policy: ControlPolicy, lookahead_min: float = LOOKAHEAD_MIN, step_s: float = 60.0, tolerance_c: float = EDGE_TOLERANCE_C) -> EdgeOracle:
    """The oracle for ``policy``'s band and heating limits, looking ``lookahead_min`` ahead in
    steps of ``step_s``."""
    if not (math.isfinite(lookahead_min) and lookahead_min > 0):
        raise ValueError("lookahead_min must be positive")
    low_pct, high_pct = policy.limits.bounds("heat_pct")
    steps = max(1, round(lookahead_min * 60.0 / step_s))
    return EdgeOracle(policy.targets.band_low_c, steps, tolerance_c, low_pct, high_pct, screen_rule=policy.screen_rule, interval_steps=max(1, round(policy.interval_s / step_s)))


def run_bound_trial(
    twin: TwinSpec,
    start: datetime,
    days: float,
    tuning: Tuning,
    base_policy: ControlPolicy,
    *,
    lookahead_min: float = LOOKAHEAD_MIN,
    tolerance_c: float = EDGE_TOLERANCE_C,
    window: str = "",
    warmup_h: float = 24.0,
    step_s: float = 60.0,
    keep_series: bool = False,
) -> TrialResult:
    """:func:`~app.season.trial.run_trial` of the thermostat ``tuning`` sets on ``base_policy``,
    its heating replaced by the :class:`EdgeOracle`'s: the same twin, days, warm-up and counts."""
    policy = tuning.policy(base_policy)
    oracle = edge_oracle(policy, lookahead_min, step_s, tolerance_c)
    spec = TrialController(CONTROLLER_NAME, policy)
    return run_trial(twin, start, days, spec, window=window, warmup_h=warmup_h, step_s=step_s, keep_series=keep_series, override=oracle)


@dataclass(frozen=True)
class BoundRow:
    """One season's bound against the tuned thermostat, over its twins."""

    season: str
    twins: int
    lookahead_min: float
    energy_ratio: float
    """Total bound heating energy over the thermostat's (all twins)."""
    energy_ratio_spread: Spread
    """The same ratio per twin."""
    bound: dict[str, Spread]
    thermostat: dict[str, Spread]

    @property
    def largest_saving(self) -> float:
        """The largest share of the thermostat's heat a controller holding the edge could save."""
        return 1.0 - self.energy_ratio

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"largest_saving": self.largest_saving}


SHOWN = ("in_band_pct", "below_band_pct", "heating_kwh", "mean_temp_c", "rh_above_pct")
"""The figures a :class:`BoundRow` keeps for both."""


def bound_row(season: str, pairs: Sequence[tuple[Figures, Figures]], lookahead_min: float = LOOKAHEAD_MIN) -> BoundRow:
    """The row of ``season`` from ``(bound, thermostat)`` figures, one pair per twin."""
    if not pairs:
        raise ValueError("no twins")

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else (1.0 if a <= 0 else math.inf)

    total = ratio(sum(b.heating_kwh for b, _ in pairs), sum(t.heating_kwh for _, t in pairs))
    per_twin = Spread.of([ratio(b.heating_kwh, t.heating_kwh) for b, t in pairs])
    bound = {k: Spread.of([getattr(b, k) for b, _ in pairs]) for k in SHOWN}
    thermo = {k: Spread.of([getattr(t, k) for _, t in pairs]) for k in SHOWN}
    return BoundRow(season, len(pairs), lookahead_min, total, per_twin, bound, thermo)


def format_bound_rows(rows: Sequence[BoundRow], mpc_ratios: Mapping[str, float] | None = None) -> str:
    """The bound's lines per season (with the MPC's energy ratio, when given, for comparison)."""
    lines = []
    for r in rows:
        b, t = r.bound, r.thermostat
        lines.append(f"== {r.season}: plant-knowing bound ({r.twins} twins, {r.lookahead_min:g} min lookahead), mean (min..max) over twins ==")
        lines.append(f"  {'figure':<28}{'bound':>28}{'thermostat (tuned)':>28}")
        for k in SHOWN:
            digits = 1 if k == "heating_kwh" else 2
            lines.append(f"  {k:<28}{b[k].text(digits):>28}{t[k].text(digits):>28}")
        lines.append(f"  energy ratio bound/thermostat: {r.energy_ratio:.3f} (per twin {r.energy_ratio_spread.text(3)})")
        said = f"  largest saving by heating alone while holding the band's edge: {r.largest_saving:.1%}"
        if mpc_ratios is not None and r.season in mpc_ratios:
            said += f" (the MPC saved {1.0 - mpc_ratios[r.season]:.1%})"
        lines.append(said)
    return "\n".join(lines)
