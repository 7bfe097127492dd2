"""The evaluation twins: greenhouses the forecast model never saw.

The training fleet is :class:`~app.sim.fleet.FleetSimulator`'s seeded greenhouses, each the
default glasshouse varied by :func:`~app.sim.fleet.vary_params` (size 0.8-1.25, cover U and
vents within ~10-15 %, mass within 20 %). The evaluation twins come from other seeds and vary
wider (:data:`EVALUATION_SPREAD`), including what the training fleet never varies: the screen's
insulation and shading, the heating loop's response time and the disturbance. The controller is
judged on plant mismatch, as it would be on a customer's greenhouse.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from app.sim.twin import GreenhouseParams

EVALUATION_SPREAD: dict[str, tuple[float, float]] = {
    "size": (0.7, 1.4),
    "cover_u_w_m2_k": (0.8, 1.25),
    "cover_transmissivity": (0.88, 1.1),
    "heating_capacity_w": (0.85, 1.3),
    "max_vent_air_changes_per_h": (0.7, 1.3),
    "leakage_air_changes_per_h": (0.5, 1.8),
    "thermal_mass_j_k": (0.6, 1.5),
    "mass_air_conductance_w_k": (0.75, 1.3),
    "screen_insulation_fraction": (0.7, 1.3),
    "screen_shading_fraction": (0.8, 1.2),
    "heat_time_constant_s": (0.7, 1.5),
    "disturbance_w_m2": (0.8, 2.0),
}
"""Multiplicative ranges (uniform) of the evaluation twins' parameters around the default
glasshouse; ``size`` scales floor, cover, volume, structure, mass and heating together."""


@dataclass(frozen=True)
class TwinSpec:
    """One evaluation twin: its id, the seed of its disturbance and sensor noise, its physics."""

    twin_id: str
    seed: int
    params: GreenhouseParams


def evaluation_params(seed: int, index: int, base: GreenhouseParams | None = None) -> GreenhouseParams:
    """The physics of evaluation twin ``index`` of ``seed``: ``base`` (the default glasshouse)
    with every :data:`EVALUATION_SPREAD` factor drawn at random (seeded)."""
    base = base or GreenhouseParams()
    rng = random.Random(f"season-twin:{seed}:{index}")
    f = {name: rng.uniform(low, high) for name, (low, high) in EVALUATION_SPREAD.items()}
    size = f["size"]
    return replace(
        base,
        floor_area_m2=base.floor_area_m2 * size,
        volume_m3=base.volume_m3 * size,
        cover_area_m2=base.cover_area_m2 * size,
        structure_heat_capacity_j_k=base.structure_heat_capacity_j_k * size,
        ground_conductance_w_k=base.ground_conductance_w_k * size,
        cover_u_w_m2_k=base.cover_u_w_m2_k * f["cover_u_w_m2_k"],
        cover_transmissivity=min(0.95, base.cover_transmissivity * f["cover_transmissivity"]),
        heating_capacity_w=base.heating_capacity_w * size * f["heating_capacity_w"],
        max_vent_air_changes_per_h=base.max_vent_air_changes_per_h * f["max_vent_air_changes_per_h"],
        leakage_air_changes_per_h=base.leakage_air_changes_per_h * f["leakage_air_changes_per_h"],
        thermal_mass_j_k=base.thermal_mass_j_k * size * f["thermal_mass_j_k"],
        mass_air_conductance_w_k=base.mass_air_conductance_w_k * size * f["mass_air_conductance_w_k"],
        screen_insulation_fraction=min(0.9, base.screen_insulation_fraction * f["screen_insulation_fraction"]),
        screen_shading_fraction=min(0.9, base.screen_shading_fraction * f["screen_shading_fraction"]),
        heat_time_constant_s=base.heat_time_constant_s * f["heat_time_constant_s"],
        disturbance_w_m2=base.disturbance_w_m2 * f["disturbance_w_m2"],
    )


def evaluation_twins(count: int, seed: int = 7_000) -> list[TwinSpec]:
    """``count`` evaluation twins ``ev-01``.. of ``seed`` (seeds far from the training fleet's)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    return [TwinSpec(f"ev-{i:02d}", seed + i, evaluation_params(seed, i)) for i in range(1, count + 1)]


def describe(params: GreenhouseParams, base: GreenhouseParams | None = None) -> dict[str, float]:
    """Each varied parameter as a ratio to ``base`` (the report's table of the twins)."""
    base = base or GreenhouseParams()
    names = ("floor_area_m2", "cover_u_w_m2_k", "cover_transmissivity", "heating_capacity_w", "thermal_mass_j_k", "screen_insulation_fraction", "heat_time_constant_s")
    return {n: round(getattr(params, n) / getattr(base, n), 3) for n in names}
