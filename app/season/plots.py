"""The season trial's figures as PNG: one twin's week under both controllers, and the summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.season.table import SeasonRow
from app.season.trial import TrialResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_week(mpc: TrialResult, thermostat: TrialResult, band_c: tuple[float, float], path: Path) -> Path:
    """One twin's window under both controllers: air temperature against the band (and outside),
    the heating setpoints, and the screen and vents."""
    plt = _pyplot()
    fig, (temp, heat, other) = plt.subplots(3, 1, figsize=(13, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1.5, 1.5]})
    temp.axhspan(band_c[0], band_c[1], color="green", alpha=0.08, label="band")
    for result, colour in ((thermostat, "tab:orange"), (mpc, "tab:blue")):  # the MPC on top
        s = result.series
        temp.plot(s["ts"], s["air_temp_c"], lw=0.9, color=colour, label=result.controller)
        heat.plot(s["ts"], s["heat_pct"], lw=0.7, color=colour, label=f"{result.controller} heat")
        other.plot(s["ts"], s["screen_pct"], lw=0.8, color=colour, label=f"{result.controller} screen")
        other.plot(s["ts"], s["vent_pct"], lw=0.6, ls=":", color=colour, label=f"{result.controller} vents")
    temp.plot(mpc.series["ts"], mpc.series["outside_temp_c"], lw=0.6, color="grey", label="outside")
    temp.set_ylabel("°C")
    temp.set_ylim(min(band_c[0] - 4, min(mpc.series["air_temp_c"] + thermostat.series["air_temp_c"]) - 0.5), max(band_c[1] + 4, max(mpc.series["air_temp_c"] + thermostat.series["air_temp_c"]) + 0.5))
    heat.set_ylabel("heat %")
    other.set_ylabel("screen / vents %")
    for ax in (temp, heat, other):
        ax.legend(loc="upper left", fontsize=7, ncol=4)
    temp.set_title(f"{mpc.window}: twin {mpc.twin_id}, MPC vs tuned thermostat")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_summary(rows: Sequence[SeasonRow], path: Path) -> Path:
    """Per season: heating energy and time in band of both controllers (mean, min..max over twins)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = range(len(rows))
    for ax, key, label in zip(axes, ("heating_kwh", "in_band_pct", "rh_above_pct"), ("heating kWh per twin", "time in band %", "time above RH ceiling %")):
        for offset, name, colour in ((-0.2, "mpc", "tab:blue"), (0.2, "thermostat", "tab:orange")):
            spreads = [getattr(r, name)[key] for r in rows]
            means = [s.mean for s in spreads]
            errors = [[s.mean - s.low for s in spreads], [s.high - s.mean for s in spreads]]
            ax.bar([i + offset for i in x], means, width=0.4, yerr=errors, capsize=3, color=colour, label="MPC" if name == "mpc" else "thermostat (tuned)")
        ax.set_xticks(list(x), [r.season for r in rows])
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
