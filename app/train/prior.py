"""The physics prior: a linear heat and vapour balance under every booster.

Trees cannot extrapolate: a model fitted on a mild week forecasts a cold snap, hotter heating or
a new greenhouse as if they were the nearest thing it saw, and its test-window skill collapsed
(0.03 at 15 min on a week with a cold night after a mild training week). The change of the
indoor air over a horizon is, to first order, linear in a few physical drivers: heating, the
inside-outside difference through the cover (less with the screen closed) and through the vents,
absorbed sun, and the recent trend. A ridge regression on those drivers extrapolates as physics
does; each booster then learns only what the line misses (the prior is its ``base_margin``), and
the skill on the same cold week rose to 0.28.

Humidity follows the temperature: air that warms at constant vapour content loses relative
humidity, so the humidity prior gets the relative humidity the temperature prior implies at
constant vapour (:func:`constant_vapour_rh_change_pct`) as one of its drivers.

Signs the physics fixes are kept: more heating never lowers the temperature prior, and venting
with a colder outside never raises it (:data:`NON_NEGATIVE`); a driver whose fitted weight has the
wrong sign is left out and the rest refitted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.contracts.vocabulary import forecast_key, plan_column
from app.sim.psychrometrics import saturation_vapour_density_array_kg_m3

Columns = Mapping[str, np.ndarray]
"""Named float columns of one batch of rows (features, and each horizon's plan columns)."""

TEMPERATURE_DRIVERS: tuple[str, ...] = (
    "heat_plan",
    "heat_now",
    "inside_outside_k",
    "screened_inside_outside_k",
    "vented_inside_outside_k",
    "solar_kw_m2",
    "screened_solar_kw_m2",
    "solar_trend_kw_m2",
    "temp_diff_5min_k",
    "temp_diff_15min_k",
    "temp_below_mean_60min_k",
    "intercept",
)
HUMIDITY_DRIVERS: tuple[str, ...] = (*TEMPERATURE_DRIVERS[:-1], "constant_vapour_rh_change_pct", "rh_pct", "vented_rh_pct", "rh_diff_5min_pct", "rh_diff_15min_pct", "intercept")
NON_NEGATIVE: dict[str, tuple[str, ...]] = {"air_temp_c": ("heat_plan", "heat_now", "vented_inside_outside_k")}
"""Drivers whose weight physics makes non-negative, per variable (heating warms; the vent term is
``vent x (outside - inside)``, so venting into colder air cools)."""
RIDGE = 1e-3
"""Ridge penalty per row on the scaled drivers (the intercept is not penalised)."""


def _col(columns: Columns, name: str) -> np.ndarray:
    """A column with NaN as 0: a greenhouse without a sensor gets no contribution from it."""
    return np.nan_to_num(np.asarray(columns[name], dtype=np.float64))


def temperature_drivers(columns: Columns, horizon_min: int) -> np.ndarray:
    """The temperature prior's drivers for ``horizon_min``, one row per row, in
    :data:`TEMPERATURE_DRIVERS` order."""
    inside, outside = _col(columns, "air_temp_c"), _col(columns, "outside_temp_c")
    gap_k = outside - inside
    heat = _col(columns, plan_column("heat_pct", horizon_min)) / 100.0
    vent = _col(columns, plan_column("vent_pct", horizon_min)) / 100.0
    screen = _col(columns, plan_column("screen_pct", horizon_min)) / 100.0
    solar = _col(columns, "solar_w_m2") / 1000.0
    trend = solar - _col(columns, "solar_w_m2_mean_15min") / 1000.0
    mean_60 = np.asarray(columns["air_temp_c_mean_60min"], dtype=np.float64)
    below_mean = np.nan_to_num(mean_60 - inside)
    drivers = (
        heat,
        _col(columns, "heat_pct") / 100.0,
        gap_k,
        gap_k * screen,
        gap_k * vent,
        solar,
        solar * screen,
        trend,
        _col(columns, "air_temp_c_diff_5min"),
        _col(columns, "air_temp_c_diff_15min"),
        below_mean,
        np.ones_like(inside),
    )
    return np.column_stack(drivers)


def constant_vapour_rh_change_pct(rh_pct: np.ndarray, temp_c: np.ndarray, temp_change_k: np.ndarray) -> np.ndarray:
    """The change of relative humidity when air at ``temp_c`` and ``rh_pct`` warms by
    ``temp_change_k`` holding its vapour (negative when it warms)."""
    ratio = saturation_vapour_density_array_kg_m3(temp_c) / saturation_vapour_density_array_kg_m3(temp_c + temp_change_k)
    return np.clip(rh_pct * ratio, 0.0, 100.0) - rh_pct


def humidity_drivers(columns: Columns, horizon_min: int, temp_change_k: np.ndarray) -> np.ndarray:
    """The humidity prior's drivers (:data:`HUMIDITY_DRIVERS` order) given the temperature
    prior's change at the same horizon."""
    rh = _col(columns, "rh_pct")
    vent = _col(columns, plan_column("vent_pct", horizon_min)) / 100.0
    temp = temperature_drivers(columns, horizon_min)[:, :-1]
    extra = (constant_vapour_rh_change_pct(rh, _col(columns, "air_temp_c"), temp_change_k), rh, vent * rh, _col(columns, "rh_pct_diff_5min"), _col(columns, "rh_pct_diff_15min"), np.ones_like(rh))
    return np.column_stack([temp, *extra])


@dataclass(frozen=True)
class NormalEquations:
    """The sufficient statistics of a least-squares fit: ``X'X``, ``X'y`` and the row count
    (sums over shards are the statistics of the union: data-parallel workers add theirs)."""

    xtx: np.ndarray
    xty: np.ndarray
    rows: float

    @classmethod
    def of(cls, drivers: np.ndarray, change: np.ndarray) -> NormalEquations:
        return cls(drivers.T @ drivers, drivers.T @ change, float(len(change)))


def solve_ridge(eq: NormalEquations, names: Sequence[str], non_negative: Sequence[str] = ()) -> np.ndarray:
    """Ridge weights from ``eq`` (drivers scaled to unit root-mean-square, the intercept not
    penalised); a ``non_negative`` driver that comes out negative is dropped (weight 0) and the
    others refitted, until none is."""
    k = len(names)
    scale = np.sqrt(np.maximum(np.diag(eq.xtx) / max(eq.rows, 1.0), 1e-12))
    xtx = eq.xtx / np.outer(scale, scale)
    xty = eq.xty / scale
    penalty = np.full(k, RIDGE * max(eq.rows, 1.0))
    penalty[[i for i, n in enumerate(names) if n == "intercept"]] = 0.0
    active = np.ones(k, dtype=bool)
    for _ in range(k):
        idx = np.flatnonzero(active)
        weights = np.zeros(k)
        weights[idx] = np.linalg.solve(xtx[np.ix_(idx, idx)] + np.diag(penalty[idx]) + 1e-9 * np.eye(len(idx)), xty[idx])
        wrong = [i for i, n in enumerate(names) if n in non_negative and active[i] and weights[i] < 0]
        if not wrong:
            break
        active[wrong] = False
    return weights / scale


@dataclass
class PhysicsPrior:
    """Linear weights per forecast key (``air_temp_c_15min`` -> weights over its drivers)."""

    weights: dict[str, list[float]] = field(default_factory=dict)

    def change(self, variable: str, horizon_min: int, columns: Columns) -> np.ndarray:
        """The prior change of ``variable`` over ``horizon_min`` for each row (0 without weights)."""
        key = forecast_key(variable, horizon_min)
        if key not in self.weights:
            return np.zeros(len(np.asarray(columns["air_temp_c"])))
        return drivers_for(variable, horizon_min, columns, self._temp_change(horizon_min, columns, variable)) @ np.asarray(self.weights[key])

    def _temp_change(self, horizon_min: int, columns: Columns, variable: str) -> np.ndarray | None:
        return None if variable == "air_temp_c" else self.change("air_temp_c", horizon_min, columns)

    def to_json(self) -> dict[str, Any]:
        return {"weights": self.weights, "temperature_drivers": list(TEMPERATURE_DRIVERS), "humidity_drivers": list(HUMIDITY_DRIVERS)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PhysicsPrior:
        """The prior :meth:`to_json` wrote (none: an empty prior, as models before it had)."""
        if not data:
            return cls()
        if list(data.get("temperature_drivers", TEMPERATURE_DRIVERS)) != list(TEMPERATURE_DRIVERS) or list(data.get("humidity_drivers", HUMIDITY_DRIVERS)) != list(HUMIDITY_DRIVERS):
            raise ValueError("the model's physics prior has other drivers than this version knows")
        return cls({k: list(v) for k, v in data["weights"].items()})


def drivers_for(variable: str, horizon_min: int, columns: Columns, temp_change_k: np.ndarray | None = None) -> np.ndarray:
    """The drivers of ``variable``'s prior (humidity needs the temperature prior's change)."""
    if variable == "air_temp_c":
        return temperature_drivers(columns, horizon_min)
    if temp_change_k is None:
        raise ValueError("the humidity prior needs the temperature prior's change")
    return humidity_drivers(columns, horizon_min, temp_change_k)


def driver_names(variable: str) -> tuple[str, ...]:
    return TEMPERATURE_DRIVERS if variable == "air_temp_c" else HUMIDITY_DRIVERS


def fit_prior(
    columns: Columns, horizons_min: Sequence[int], variables: Sequence[str], changes: Callable[[str, int], np.ndarray], reduce: Callable[[NormalEquations], NormalEquations] = lambda eq: eq
) -> PhysicsPrior:
    """Fit the prior of every (variable, horizon): ``changes(variable, h)`` gives the observed
    change (target minus now) per row; ``reduce`` sums the normal equations over data-parallel
    workers (identity in one process). Temperature first: humidity's drivers use its prior."""
    prior = PhysicsPrior()
    for variable in sorted(variables, key=lambda v: v != "air_temp_c"):
        for h in horizons_min:
            temp = prior.change("air_temp_c", h, columns) if variable != "air_temp_c" else None
            eq = reduce(NormalEquations.of(drivers_for(variable, h, columns, temp), changes(variable, h)))
            prior.weights[forecast_key(variable, h)] = solve_ridge(eq, driver_names(variable), NON_NEGATIVE.get(variable, ())).tolist()
    return prior
