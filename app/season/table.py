"""Per season: each figure's mean and spread over the twins, the margins, and the verdict.

The target (:class:`Target`): heating energy at least 10 % lower with time in band at most 0.5
points lower and time above the humidity ceiling no higher; or at least 2 points more time in
band with no more energy (and, read strictly here, humidity no higher either: a gain bought with
humidity is no gain). Margins are per twin (the MPC against the thermostat on the same twin
and days); the verdict reads the means over twins, the energy ratio as total MPC energy over total
thermostat energy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from app.season.trial import Figures

SHOWN = (
    "in_band_pct",
    "heating_kwh",
    "rh_above_pct",
    "below_band_pct",
    "above_band_pct",
    "mean_temp_c",
    "temp_travel_k_per_day",
    "heat_travel_pct_per_day",
    "heat_reversals_per_day",
    "vent_travel_pct_per_day",
    "screen_travel_pct_per_day",
)
"""The figures the table shows, in order."""


@dataclass(frozen=True)
class Target:
    """What the MPC must reach against the tuned thermostat."""

    energy_saving: float = 0.10
    in_band_loss_max_pts: float = 0.5
    rh_rise_max_pts: float = 0.0
    in_band_gain_pts: float = 2.0


@dataclass(frozen=True)
class Spread:
    """The mean and the range of a figure over twins."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(sum(values) / len(values), min(values), max(values))

    def text(self, digits: int = 1) -> str:
        return f"{self.mean:.{digits}f} ({self.low:.{digits}f}..{self.high:.{digits}f})"


@dataclass(frozen=True)
class SeasonRow:
    """One season's comparison over its twins."""

    season: str
    twins: int
    mpc: dict[str, Spread]
    thermostat: dict[str, Spread]
    energy_ratio: float
    """Total MPC heating energy over the thermostat's (all twins)."""
    energy_ratio_spread: Spread
    in_band_diff_pts: Spread
    rh_diff_pts: Spread
    met: bool
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else (1.0 if a <= 0 else float("inf"))


def verdict(energy_ratio: float, in_band_diff_pts: float, rh_diff_pts: float, target: Target = Target()) -> tuple[bool, str]:
    """Whether the margins meet ``target``, and the sentence that says by how much."""
    saving = 1.0 - energy_ratio
    saves = saving >= target.energy_saving and in_band_diff_pts >= -target.in_band_loss_max_pts and rh_diff_pts <= target.rh_rise_max_pts
    gains = in_band_diff_pts >= target.in_band_gain_pts and energy_ratio <= 1.0 and rh_diff_pts <= target.rh_rise_max_pts
    said = f"energy {saving:+.1%} saved, in band {in_band_diff_pts:+.2f} pts, above RH ceiling {rh_diff_pts:+.2f} pts"
    if saves:
        return True, f"MET (energy): {said}"
    if gains:
        return True, f"MET (time in band): {said}"
    short = []
    if saving < target.energy_saving:
        short.append(f"energy saving {target.energy_saving - saving:.1%} short of {target.energy_saving:.0%}")
    if saving < 0:
        short.append(f"energy {-saving:.1%} above the thermostat's")
    if in_band_diff_pts < -target.in_band_loss_max_pts:
        short.append(f"in band {-target.in_band_loss_max_pts - in_band_diff_pts:.2f} pts below the allowed loss")
    if rh_diff_pts > target.rh_rise_max_pts:
        short.append(f"humidity {rh_diff_pts - target.rh_rise_max_pts:.2f} pts above")
    if in_band_diff_pts < target.in_band_gain_pts:
        short.append(f"in-band gain {target.in_band_gain_pts - in_band_diff_pts:.2f} pts short of {target.in_band_gain_pts:.0f}")
    return False, f"NOT MET: {said} ({'; '.join(short)})"


def season_row(season: str, pairs: Sequence[tuple[Figures, Figures]], target: Target = Target()) -> SeasonRow:
    """The row of ``season`` from ``(mpc, thermostat)`` figures, one pair per twin."""
    if not pairs:
        raise ValueError("no twins")
    mpc = {k: Spread.of([getattr(m, k) for m, _ in pairs]) for k in SHOWN}
    thermo = {k: Spread.of([getattr(t, k) for _, t in pairs]) for k in SHOWN}
    ratio = _ratio(sum(m.heating_kwh for m, _ in pairs), sum(t.heating_kwh for _, t in pairs))
    in_band = Spread.of([m.in_band_pct - t.in_band_pct for m, t in pairs])
    rh = Spread.of([m.rh_above_pct - t.rh_above_pct for m, t in pairs])
    met, said = verdict(ratio, in_band.mean, rh.mean, target)
    return SeasonRow(season, len(pairs), mpc, thermo, ratio, Spread.of([_ratio(m.heating_kwh, t.heating_kwh) for m, t in pairs]), in_band, rh, met, said)


def format_rows(rows: Sequence[SeasonRow]) -> str:
    """The table as text: per season, each figure for both controllers (mean (min..max) over
    twins), then the margins and the verdict."""
    lines = []
    for r in rows:
        lines.append(f"== {r.season}: {r.twins} twins, mean (min..max) over twins ==")
        lines.append(f"  {'figure':<28}{'MPC':>28}{'thermostat (tuned)':>28}")
        for k in SHOWN:
            digits = 2 if k in ("in_band_pct", "rh_above_pct", "below_band_pct", "above_band_pct", "mean_temp_c", "temp_travel_k_per_day") else 1
            lines.append(f"  {k:<28}{r.mpc[k].text(digits):>28}{r.thermostat[k].text(digits):>28}")
        lines.append(f"  energy ratio MPC/thermostat: {r.energy_ratio:.3f} (per twin {r.energy_ratio_spread.text(3)})")
        lines.append(f"  in band, MPC - thermostat: {r.in_band_diff_pts.text(2)} pts; above RH ceiling: {r.rh_diff_pts.text(2)} pts")
        lines.append(f"  verdict: {r.verdict}")
    return "\n".join(lines)
