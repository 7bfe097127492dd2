"""The thermostat's tuning sweep: a grower's well-set climate computer, for the same band.

The rule-based controller (:func:`~app.control.policy.thermostat` with a
:class:`~app.control.policy.RuleTuning`, the screen by a :class:`~app.control.policy.ScreenRule`)
is tuned per season on the tuning week (the days before the evaluation week) and on the same
twins, in four stages, each holding what the stages before chose (a commissioning engineer's
coordinate search):

1. heating: where full heat starts (band edge -0.2, 0, +0.2, +0.4 K) x the proportional band
   (0.5, 1, 1.5 K);
2. ventilation: where venting starts (band top -4.5, -3, -1.5, -0.5 K: early venting pre-cools a
   summer greenhouse) x how fast it opens (1.5, 3 K);
3. screen: closed below 50, 150 or 250 W/m2 of sun when cold x shade (60 % above 750 W/m2, 80 %
   above 600, 100 % above 450);
4. heating again, around what the ventilation and the screen now do.

The humidity vent keeps its defaults (5 % open per % RH above the ceiling, at most 30 %).

The rule that picks a setting (:func:`choose`): the *level* is the best time in band any setting
of the stage reached (mean over twins) less ``tolerance_pts``, and never below the level of the
stage before; of the settings at or above the level, the one with the least heating energy
(within ``tie_kwh`` or 1 %, the one with more time in band, then less time above the humidity
ceiling). So the thermostat saves energy wherever it can without leaving the band, and the MPC's
gain cannot come from aiming lower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from app.control.core import ControlPolicy
from app.control.policy import RuleTuning, ScreenRule


@dataclass(frozen=True)
class Tuning:
    """One setting of the rule-based controller: its rule and its screen rule."""

    rule: RuleTuning = RuleTuning()
    screen: ScreenRule = ScreenRule()

    def policy(self, base: ControlPolicy) -> ControlPolicy:
        """``base`` with this setting."""
        return replace(base, rule=self.rule, screen_rule=self.screen)

    def label(self) -> str:
        r, s = self.rule, self.screen
        return (
            f"heat full at edge{r.heat_full_offset_c:+.1f} K, band {r.heat_band_c:.1f} K; vent from top{r.vent_offset_c:+.1f} K over {r.vent_band_c:.1f} K; "
            f"screen closed below {s.dark_below_solar_w_m2:.0f} W/m2, shade {s.shade_pct:.0f} % above {s.shade_above_solar_w_m2:.0f} W/m2"
        )


def heating_stage(base: Tuning) -> list[Tuning]:
    """Stage 1: where full heat starts x the proportional band."""
    return [replace(base, rule=replace(base.rule, heat_full_offset_c=o, heat_band_c=b)) for o in (-0.2, 0.0, 0.2, 0.4) for b in (0.5, 1.0, 1.5)]


def vent_stage(base: Tuning) -> list[Tuning]:
    """Stage 2: where venting starts x how fast it opens."""
    return [replace(base, rule=replace(base.rule, vent_offset_c=o, vent_band_c=b)) for o in (-4.5, -3.0, -1.5, -0.5) for b in (1.5, 3.0)]


def screen_stage(base: Tuning) -> list[Tuning]:
    """Stage 3: the screen's insulation threshold x its shade."""
    shades = ((750.0, 60.0), (600.0, 80.0), (450.0, 100.0))
    return [replace(base, screen=replace(base.screen, dark_below_solar_w_m2=d, shade_above_solar_w_m2=s, shade_pct=p)) for d in (50.0, 150.0, 250.0) for s, p in shades]


STAGES: tuple[Callable[[Tuning], list[Tuning]], ...] = (heating_stage, vent_stage, screen_stage, heating_stage)
"""The sweep's stages, in order."""
INSULATION_LIMIT_W_M2 = 250.0
"""The sunniest the screen stage keeps the screen closed for insulation: the MPC gets the same
light budget (``screen_insulate_below_solar_w_m2``)."""


@dataclass(frozen=True)
class SweepPoint:
    """How one setting did on the tuning days (means over the twins)."""

    tuning: Tuning
    in_band_pct: float
    heating_kwh: float
    rh_above_pct: float


def stage_level(points: Sequence[SweepPoint], previous_level_pct: float, tolerance_pts: float) -> float:
    """The time in band a setting must keep: the stage's best less ``tolerance_pts``, never below
    ``previous_level_pct``."""
    return max(previous_level_pct, max(p.in_band_pct for p in points) - tolerance_pts)


def choose(points: Sequence[SweepPoint], level_pct: float, tie_kwh: float = 1.0) -> SweepPoint:
    """The cheapest setting at or above ``level_pct`` (module docstring); when none is (a level
    carried from a stage before), the one with the most time in band."""
    if not points:
        raise ValueError("no sweep points")
    eligible = [p for p in points if p.in_band_pct >= level_pct - 1e-9]
    if not eligible:
        return max(points, key=lambda p: (p.in_band_pct, -p.heating_kwh))
    least = min(p.heating_kwh for p in eligible)
    near = [p for p in eligible if p.heating_kwh <= least + max(tie_kwh, 0.01 * abs(least))]
    return min(near, key=lambda p: (-p.in_band_pct, p.rh_above_pct, p.heating_kwh))
