"""The product's shared vocabulary: actuators, forecast variables and the column names built from them.

Every stage names these things the same way, so each is defined here once:

- :data:`ACTUATORS`, in the one order used everywhere (plan matrices, candidate grids, commands);
- :data:`TARGET_VARIABLES`, the indoor variables a forecast model predicts;
- column and key names: a *plan* column holds an actuator's mean setting over a horizon
  (:func:`plan_column`), a *target* column the variable's value at a horizon
  (:func:`target_column`), a *forecast key* a model's output (:func:`forecast_key`).

A new actuator is one entry in :data:`ACTUATORS` (and its bounds in
:data:`~app.contracts.reading.MEASUREMENT_BOUNDS` and :class:`~app.contracts.command.Setpoints`).
"""

from __future__ import annotations

from collections.abc import Iterable

ACTUATORS: tuple[str, ...] = ("vent_pct", "heat_pct", "screen_pct")
"""Actuator positions/setpoints in percent, in the order of every plan matrix."""

TARGET_VARIABLES: tuple[str, ...] = ("air_temp_c", "rh_pct")
"""Indoor variables the forecaster predicts (and the controller keeps in band)."""


def plan_column(actuator: str, horizon_min: int) -> str:
    """The mean setting of ``actuator`` over the next ``horizon_min`` minutes: ``plan_heat_pct_15min``."""
    return f"plan_{actuator}_{horizon_min}min"


def vent_exchange_column(horizon_min: int) -> str:
    """The ventilation plan times the inside-outside temperature difference (what ventilation
    removes or brings in): ``plan_vent_x_dtemp_15min``."""
    return f"plan_vent_x_dtemp_{horizon_min}min"


def plan_columns(horizons_min: Iterable[int], *, with_exchange: bool = True) -> list[str]:
    """For each horizon, its actuators' plan columns in :data:`ACTUATORS` order, then (with
    ``with_exchange``) its :func:`vent_exchange_column`. Training's features carry all of them; the
    controller sends only the actuators' columns and the model derives the exchange term."""
    out: list[str] = []
    for h in horizons_min:
        out += [plan_column(a, h) for a in ACTUATORS]
        if with_exchange:
            out.append(vent_exchange_column(h))
    return out


def target_column(variable: str, horizon_min: int) -> str:
    """The label column of ``variable`` at ``horizon_min``: ``target_air_temp_c_15min``."""
    return f"target_{variable}_{horizon_min}min"


def target_columns(horizons_min: Iterable[int]) -> list[str]:
    """Every target column, horizon by horizon, variables in :data:`TARGET_VARIABLES` order."""
    return [target_column(v, h) for h in horizons_min for v in TARGET_VARIABLES]


def forecast_key(variable: str, horizon_min: int) -> str:
    """The name of a forecast (a model output): ``air_temp_c_15min``."""
    return f"{variable}_{horizon_min}min"


INTERVAL_SIDES: dict[str, float] = {"low": 0.05, "high": 0.95}
"""The forecast interval's edges as quantiles: a nominal 90 % interval (5 % below ``low``, 5 %
above ``high``)."""


def interval_key(variable: str, horizon_min: int, side: str) -> str:
    """The name of a forecast interval's edge: ``air_temp_c_15min_low`` (``side``: ``low`` or
    ``high``, see :data:`INTERVAL_SIDES`)."""
    if side not in INTERVAL_SIDES:
        raise ValueError(f"side must be one of {sorted(INTERVAL_SIDES)} (got {side!r})")
    return f"{forecast_key(variable, horizon_min)}_{side}"


def is_interval_key(key: str) -> bool:
    """Whether ``key`` names an interval edge (:func:`interval_key`) rather than a forecast."""
    return key.rsplit("_", 1)[-1] in INTERVAL_SIDES


def point_key(key: str) -> str:
    """The forecast key of ``key``: itself for a forecast, the forecast it bounds for an edge."""
    return key.rsplit("_", 1)[0] if is_interval_key(key) else key


def horizon_of(key: str) -> int:
    """The horizon in minutes of a forecast key such as ``air_temp_c_15min`` (or of an interval
    edge such as ``air_temp_c_15min_low``)."""
    return int(point_key(key).rsplit("_", 1)[1].removesuffix("min"))


def variable_of(key: str) -> str:
    """The variable of a forecast key: ``air_temp_c`` for ``air_temp_c_15min`` (and for
    ``air_temp_c_15min_low``)."""
    return point_key(key).rsplit("_", 1)[0]
