"""Calendar and sun-position features of grid times, on numpy.

Times are whole seconds since the epoch (UTC). The sun's elevation uses pvlib's fast analytical
(Spencer 1971) formulas; the hour angle is pvlib's ``hour_angle`` for UTC times, written on
numpy so that no pandas index is built per call (serving computes these on every rebuild).
"""

from __future__ import annotations

import numpy as np
from pvlib import solarposition

_DAY_S = 86_400
# both depend on the day of the year alone: one table (index = day of the year, 1..366) instead of
# a dozen array operations per call
_DAYS = np.arange(367)
_DECLINATION_RAD = solarposition.declination_spencer71(_DAYS)
_EQUATION_OF_TIME_MIN = solarposition.equation_of_time_spencer71(_DAYS)


def day_of_year(seconds: np.ndarray) -> np.ndarray:
    """Day of the year (1 on 1 January, UTC) of each time."""
    days = (seconds // _DAY_S).astype("datetime64[D]")
    return (days - days.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) + 1


def sun_elevation_deg(seconds: np.ndarray, latitude: float, longitude: float, doy: np.ndarray | None = None) -> np.ndarray:
    """Solar elevation (degrees) at each time, at ``latitude``/``longitude`` (degrees); ``doy``:
    the times' :func:`day_of_year` when the caller has it."""
    doy = day_of_year(seconds) if doy is None else doy
    declination, eot = _DECLINATION_RAD[doy], _EQUATION_OF_TIME_MIN[doy]
    hours = (seconds % _DAY_S) / 3600.0  # hours after UTC midnight
    hour_angle = 15.0 * (hours - 12.0) + longitude + eot / 4.0
    zenith = solarposition.solar_zenith_analytical(np.radians(latitude), np.radians(hour_angle), declination)
    return 90.0 - np.degrees(zenith)


def calendar_features(seconds: np.ndarray, latitude: float, longitude: float) -> dict[str, np.ndarray]:
    """``hour_sin``/``hour_cos`` (of the hour and minute: seconds do not count), ``doy_sin``/
    ``doy_cos`` (a 365.25-day year) and ``sun_elevation_deg`` of each time."""
    of_day = seconds % _DAY_S
    hours = of_day // 3600 + (of_day % 3600 // 60) / 60.0
    doy = day_of_year(seconds)
    return {
        "hour_sin": np.sin(2 * np.pi * hours / 24.0),
        "hour_cos": np.cos(2 * np.pi * hours / 24.0),
        "doy_sin": np.sin(2 * np.pi * doy / 365.25),
        "doy_cos": np.cos(2 * np.pi * doy / 365.25),
        "sun_elevation_deg": sun_elevation_deg(seconds, latitude, longitude, doy),
    }
