"""Outdoor weather for the twin: real TMY3 data shipped with pvlib, mapped onto any calendar date.

The typical meteorological year (TMY3) file ``723170TYA.CSV`` (Greensboro, NC) ships inside pvlib:
8760 hourly rows stitched from different source years per month. A requested instant is mapped onto
that year by month, day and time of day in the file's local standard time (the year is ignored,
29 February reuses 28 February, the series wraps at the year end) and interpolated to the step.

Three providers share one small protocol, ``at(when) -> OutdoorWeather``:

- :class:`WeatherSeries` (from :func:`load_tmy3_weather`): a finite, precomputed window;
- :class:`Tmy3Weather`: an endless provider that loads one-day windows on demand (for the fleet);
- :class:`ConstantWeather`: fixed conditions, for tests and what-if runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

TMY3_FILE_NAME = "723170TYA.CSV"
WEATHER_COLUMNS: tuple[str, ...] = ("outside_temp_c", "outside_rh_pct", "solar_w_m2", "wind_m_s", "sun_elevation_deg")
_YEAR_S = 365 * 86_400.0
# Cumulative days before each month in a non-leap year (index 0 = January).
_DAYS_BEFORE_MONTH = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334])


class OutdoorWeather(NamedTuple):
    """Outdoor conditions at one instant (a named tuple: cheap to build in the step loop)."""

    outside_temp_c: float
    outside_rh_pct: float
    solar_w_m2: float
    """Global horizontal irradiance."""
    wind_m_s: float
    sun_elevation_deg: float

    @property
    def is_day(self) -> bool:
        """True while the sun is above the horizon."""
        return self.sun_elevation_deg > 0.0


@runtime_checkable
class WeatherProvider(Protocol):
    """Anything that can tell the outdoor conditions at an instant (UTC-aware datetime)."""

    def at(self, when: datetime) -> OutdoorWeather:
        """Outdoor conditions at ``when``."""
        ...


@dataclass(frozen=True, slots=True)
class ConstantWeather:
    """The same outdoor conditions at every instant (a stub for tests and scenarios)."""

    outside_temp_c: float = 10.0
    outside_rh_pct: float = 70.0
    solar_w_m2: float = 0.0
    wind_m_s: float = 2.0
    sun_elevation_deg: float = -10.0
    _sample: OutdoorWeather = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sample = OutdoorWeather(
            outside_temp_c=float(self.outside_temp_c),
            outside_rh_pct=float(self.outside_rh_pct),
            solar_w_m2=float(self.solar_w_m2),
            wind_m_s=float(self.wind_m_s),
            sun_elevation_deg=float(self.sun_elevation_deg),
        )
        object.__setattr__(self, "_sample", sample)

    def at(self, when: datetime) -> OutdoorWeather:
        """The fixed conditions (``when`` is ignored)."""
        return self._sample


@dataclass(frozen=True, eq=False)
class WeatherSeries:
    """Outdoor weather on a regular UTC grid ``start + i * step_s``, interpolated linearly between
    grid points. Column arrays are read-only and named like :data:`WEATHER_COLUMNS`."""

    start: datetime
    step_s: float
    outside_temp_c: np.ndarray
    outside_rh_pct: np.ndarray
    solar_w_m2: np.ndarray
    wind_m_s: np.ndarray
    sun_elevation_deg: np.ndarray
    _columns: tuple[list[float], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if not self.step_s > 0:
            raise ValueError("step_s must be positive")
        arrays = [np.asarray(getattr(self, name), dtype=float) for name in WEATHER_COLUMNS]
        if len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
            raise ValueError("weather columns must be non-empty and of equal length")
        for name, array in zip(WEATHER_COLUMNS, arrays, strict=True):
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        # Python lists: indexing them is several times faster than numpy scalars in the step loop.
        object.__setattr__(self, "_columns", tuple(a.tolist() for a in arrays))

    def __len__(self) -> int:
        return len(self.outside_temp_c)

    @property
    def end(self) -> datetime:
        """Time of the last grid point."""
        return self.start + timedelta(seconds=self.step_s * (len(self) - 1))

    @property
    def times(self) -> pd.DatetimeIndex:
        """UTC timestamps of the grid points."""
        offsets_s = np.arange(len(self)) * self.step_s
        return pd.Timestamp(self.start).tz_convert("UTC") + pd.to_timedelta(offsets_s, unit="s")

    def to_frame(self) -> pd.DataFrame:
        """The series as a DataFrame indexed by UTC time, one column per :data:`WEATHER_COLUMNS`."""
        return pd.DataFrame({name: getattr(self, name) for name in WEATHER_COLUMNS}, index=self.times)

    def covers(self, when: datetime) -> bool:
        """True when ``when`` lies within the grid (inclusive)."""
        offset_s = (when - self.start).total_seconds()
        return -1e-6 <= offset_s <= self.step_s * (len(self) - 1) + 1e-6

    def at(self, when: datetime) -> OutdoorWeather:
        """Conditions at ``when``, linearly interpolated; ``ValueError`` outside the grid."""
        x = (when - self.start).total_seconds() / self.step_s
        last = len(self) - 1
        if x < -1e-9 or x > last + 1e-9:
            raise ValueError(f"{when.isoformat()} is outside the weather window {self.start} .. {self.end}")
        if last == 0:
            i, frac = 0, 0.0
        else:
            i = min(max(int(x), 0), last - 1)
            frac = min(max(x - i, 0.0), 1.0)
        values = [col[i] + (col[min(i + 1, last)] - col[i]) * frac for col in self._columns]
        return OutdoorWeather(*values)


@dataclass(frozen=True)
class _TmyYear:
    """The parsed TMY3 year as periodic samples (positions in seconds into a 365-day year)."""

    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    utc_offset_h: float
    point_pos_s: np.ndarray  # hour stamps: instantaneous observations
    mean_pos_s: np.ndarray  # mid-hour: hour-ending irradiance averages
    temp_c: np.ndarray
    rh_pct: np.ndarray
    wind_m_s: np.ndarray
    clearness: np.ndarray
    n_rows: int


def tmy3_path() -> Path:
    """Path of the TMY3 file bundled with pvlib."""
    import pvlib

    return Path(pvlib.__file__).parent / "data" / TMY3_FILE_NAME


@functools.lru_cache(maxsize=4)
def _load_tmy_year(path: str) -> _TmyYear:
    import pvlib

    data, meta = pvlib.iotools.read_tmy3(path, map_variables=True)
    utc_offset_h = float(meta["TZ"])
    # The index is in local standard time; only its month/day/clock matter (years differ by month).
    index = data.index
    day_of_year0 = _DAYS_BEFORE_MONTH[index.month.to_numpy() - 1] + index.day.to_numpy() - 1
    point_pos_s = (day_of_year0 * 86_400.0 + index.hour.to_numpy() * 3_600.0 + index.minute.to_numpy() * 60.0) % _YEAR_S
    # TMY3 irradiance is the total of the hour ending at the stamp: place it at mid-hour.
    mean_pos_s = (point_pos_s - 1_800.0) % _YEAR_S
    ghi = data["ghi"].to_numpy(dtype=float)
    ghi_extra = data["ghi_extra"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        clearness = np.where(ghi_extra > 1.0, ghi / ghi_extra, 0.0)
    arrays = {
        "point_pos_s": point_pos_s,
        "mean_pos_s": mean_pos_s,
        "temp_c": data["temp_air"].to_numpy(dtype=float),
        "rh_pct": np.clip(data["relative_humidity"].to_numpy(dtype=float), 0.0, 100.0),
        "wind_m_s": np.clip(data["wind_speed"].to_numpy(dtype=float), 0.0, None),
        "clearness": np.clip(clearness, 0.0, 1.0),
    }
    for array in arrays.values():
        array.setflags(write=False)
    return _TmyYear(latitude_deg=float(meta["latitude"]), longitude_deg=float(meta["longitude"]), altitude_m=float(meta["altitude"]), utc_offset_h=utc_offset_h, n_rows=len(data), **arrays)


def _year_positions_s(times_utc: pd.DatetimeIndex, utc_offset_h: float) -> np.ndarray:
    """Seconds into a 365-day TMY year (local standard time) for each UTC instant."""
    local = times_utc.tz_convert("UTC").tz_localize(None) + pd.Timedelta(hours=utc_offset_h)
    day_of_year0 = local.dayofyear.to_numpy() - 1
    # Leap years: 29 February reuses 28 February and later days shift back by one.
    day_of_year0 = day_of_year0 - (local.is_leap_year & (day_of_year0 >= 59))
    seconds_of_day = local.hour.to_numpy() * 3_600.0 + local.minute.to_numpy() * 60.0 + local.second.to_numpy() + local.microsecond.to_numpy() / 1e6
    return day_of_year0 * 86_400.0 + seconds_of_day


def tmy3_row_count(path: str | Path | None = None) -> int:
    """Number of hourly rows in the (cached) TMY3 file; 8760 for the bundled one."""
    return _load_tmy_year(str(path or tmy3_path())).n_rows


def load_tmy3_weather(start: datetime, duration_s: float, step_s: float, *, path: str | Path | None = None) -> WeatherSeries:
    """Real outdoor weather from the TMY3 file for ``[start, start + duration_s]`` every ``step_s``.

    ``start`` must be timezone-aware. Temperature, humidity and wind are interpolated linearly
    between the hourly observations; solar irradiance keeps each hour's clearness index
    (GHI / extraterrestrial horizontal) interpolated between mid-hours and multiplies it by the
    extraterrestrial irradiance at the instant's sun position from pvlib, so it is zero at night and
    follows a smooth daily curve. The TMY file is parsed once per process (cached).
    """
    import pvlib

    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError("step_s must be a positive number")
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError("duration_s must be a non-negative number")
    tmy = _load_tmy_year(str(path or tmy3_path()))
    n_points = math.floor(duration_s / step_s + 1e-9) + 1
    start_utc = start.astimezone(timezone.utc)
    times = pd.Timestamp(start_utc) + pd.to_timedelta(np.arange(n_points) * step_s, unit="s")
    times = pd.DatetimeIndex(times)
    pos_s = _year_positions_s(times, tmy.utc_offset_h)

    temp_c = np.interp(pos_s, tmy.point_pos_s, tmy.temp_c, period=_YEAR_S)
    rh_pct = np.interp(pos_s, tmy.point_pos_s, tmy.rh_pct, period=_YEAR_S)
    wind_m_s = np.interp(pos_s, tmy.point_pos_s, tmy.wind_m_s, period=_YEAR_S)
    clearness = np.interp(pos_s, tmy.mean_pos_s, tmy.clearness, period=_YEAR_S)

    solpos = pvlib.solarposition.get_solarposition(times, tmy.latitude_deg, tmy.longitude_deg, altitude=tmy.altitude_m)
    elevation_deg = solpos["elevation"].to_numpy(dtype=float)
    cos_zenith = np.clip(np.cos(np.radians(solpos["zenith"].to_numpy(dtype=float))), 0.0, None)
    extra_w_m2 = np.asarray(pvlib.irradiance.get_extra_radiation(times), dtype=float)
    solar_w_m2 = np.clip(clearness * extra_w_m2 * cos_zenith, 0.0, 1_400.0)

    return WeatherSeries(
        start=start_utc,
        step_s=float(step_s),
        outside_temp_c=temp_c,
        outside_rh_pct=np.clip(rh_pct, 0.0, 100.0),
        solar_w_m2=solar_w_m2,
        wind_m_s=np.clip(wind_m_s, 0.0, None),
        sun_elevation_deg=elevation_deg,
    )


class Tmy3Weather:
    """Endless TMY3 weather: loads ``chunk_s`` windows on a ``grid_step_s`` grid when asked for.

    Windows are aligned to ``start`` so that results do not depend on the order of calls; the two
    most recent windows are kept (enough for several twins stepping side by side).
    """

    def __init__(self, start: datetime, *, grid_step_s: float = 60.0, chunk_s: float = 86_400.0, path: str | Path | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if not (grid_step_s > 0 and chunk_s >= grid_step_s):
            raise ValueError("need grid_step_s > 0 and chunk_s >= grid_step_s")
        self.start = start.astimezone(timezone.utc)
        self.grid_step_s = float(grid_step_s)
        self.chunk_s = float(chunk_s)
        self._path = path
        self._chunks: dict[int, WeatherSeries] = {}
        # Twins of a fleet ask for the same instants one after another: remember recent answers.
        self._recent: dict[datetime, OutdoorWeather] = {}

    def _chunk(self, index: int) -> WeatherSeries:
        chunk = self._chunks.get(index)
        if chunk is None:
            # Round the window up to whole grid steps so that it reaches the next window's start.
            duration_s = math.ceil(self.chunk_s / self.grid_step_s - 1e-9) * self.grid_step_s
            chunk = load_tmy3_weather(self.start + timedelta(seconds=index * self.chunk_s), duration_s, self.grid_step_s, path=self._path)
            if len(self._chunks) >= 2:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[index] = chunk
        return chunk

    def at(self, when: datetime) -> OutdoorWeather:
        """Conditions at ``when`` (any instant, before or after ``start``)."""
        sample = self._recent.get(when)
        if sample is None:
            index = math.floor((when - self.start).total_seconds() / self.chunk_s)
            sample = self._chunk(index).at(when)
            if len(self._recent) >= 64:
                self._recent.clear()
            self._recent[when] = sample
        return sample
