"""Moist-air relations the twin needs: saturation, vapour density, relative humidity and VPD.

Plain-float functions (no numpy) because the twin calls them in its inner loop; one array form for
the forecaster's humidity prior. The Tetens/Magnus
form over liquid water is accurate to well under 1 % between -20 and 50 °C, which is finer than the
rest of the model.
"""

from __future__ import annotations

import math

import numpy as np

WATER_VAPOUR_GAS_CONSTANT_J_KG_K = 461.5
KELVIN_OFFSET = 273.15


def saturation_vapour_pressure_pa(temp_c: float) -> float:
    """Saturation vapour pressure over liquid water in Pa (Tetens)."""
    return 610.78 * math.exp(17.27 * temp_c / (temp_c + 237.3))


def vapour_density_kg_m3(vapour_pressure_pa: float, temp_c: float) -> float:
    """Absolute humidity (kg water per m³ of air) for a vapour pressure at a temperature."""
    return vapour_pressure_pa / (WATER_VAPOUR_GAS_CONSTANT_J_KG_K * (temp_c + KELVIN_OFFSET))


def saturation_vapour_density_kg_m3(temp_c: float) -> float:
    """Absolute humidity of saturated air at ``temp_c``."""
    return vapour_density_kg_m3(saturation_vapour_pressure_pa(temp_c), temp_c)


def vapour_density_from_rh_kg_m3(temp_c: float, rh_pct: float) -> float:
    """Absolute humidity of air at ``temp_c`` and relative humidity ``rh_pct``."""
    return saturation_vapour_density_kg_m3(temp_c) * max(0.0, min(rh_pct, 100.0)) / 100.0


def relative_humidity_pct(vapour_density_kg_m3_: float, temp_c: float) -> float:
    """Relative humidity (0..100) of air holding ``vapour_density_kg_m3_`` at ``temp_c``."""
    rh_pct = 100.0 * vapour_density_kg_m3_ / saturation_vapour_density_kg_m3(temp_c)
    return max(0.0, min(rh_pct, 100.0))


def vapour_pressure_deficit_kpa(temp_c: float, rh_pct: float) -> float:
    """Vapour pressure deficit in kPa of air at ``temp_c`` and ``rh_pct``."""
    rh_pct = max(0.0, min(rh_pct, 100.0))
    return saturation_vapour_pressure_pa(temp_c) * (1.0 - rh_pct / 100.0) / 1000.0


def saturation_vapour_density_array_kg_m3(temp_c: np.ndarray) -> np.ndarray:
    """:func:`saturation_vapour_density_kg_m3` for an array of temperatures (the same Tetens form)."""
    temp_c = np.asarray(temp_c, dtype=np.float64)
    return 610.78 * np.exp(17.27 * temp_c / (temp_c + 237.3)) / (WATER_VAPOUR_GAS_CONSTANT_J_KG_K * (temp_c + KELVIN_OFFSET))
