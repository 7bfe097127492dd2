"""What the features are: their parameters, names, order, and which of them a row must have.

The feature engine (:mod:`app.preprocess.engine`) computes exactly these columns; training writes
them into feature sets and stored models read them by name, so a name or its meaning changes only
with a new feature set. Actuators, target variables and the plan/target column names come from
the shared vocabulary (:mod:`app.contracts.vocabulary`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from app.contracts.reading import MEASUREMENT_NAMES
from app.contracts.vocabulary import ACTUATORS, TARGET_VARIABLES, plan_columns, target_columns

SPIKE_COLUMNS = ("air_temp_c", "rh_pct", "co2_ppm", "outside_temp_c", "outside_rh_pct")
"""Measurements checked for isolated spikes (rolling median and MAD)."""
LAG_MIN = (5, 15, 30, 60)
"""Lags (minutes) of the target variables' differences ``<v>_diff_<m>min``, as the nearest whole
number of grid steps (:meth:`FeatureParams.steps`); a lag shorter than one step is one step: on a
15-minute grid ``_diff_5min`` is the change over 15 minutes. Its name stays; a model reads it with
the step of its feature set, which serving rebuilds it with."""
ROLL_MIN = (15, 60)
"""Trailing windows (minutes) of the rolling statistics ``<v>_mean_<m>min`` / ``<v>_std_<m>min``.
A window spans at least :data:`MIN_ROLL_STEPS` steps (:meth:`FeatureParams.window_steps`): on a
15-minute grid ``_std_15min`` is the spread of the last two steps, not a missing value."""
MIN_ROLL_STEPS = 2
"""The fewest steps a rolling window spans: a standard deviation needs two values."""
ROLL_COLUMNS = ("air_temp_c", "rh_pct", "solar_w_m2")
CHANGE_MIN = 15
"""How far back (minutes) ``<actuator>_change_15min`` looks (at least one step, as the lags)."""
SPIKE_WINDOW_MAX_MIN = 60
"""The longest span (minutes) of the centred spike window on a coarse grid: 15 steps of 15
minutes would judge a reading against almost four hours of climate (sunrise, a heating cycle)."""
SPIKE_WINDOW_MIN_STEPS = 5
"""The fewest steps the spike window keeps when :data:`SPIKE_WINDOW_MAX_MIN` shortens it: a
median of fewer readings no longer tells one bad reading from a change of level."""
CALENDAR_COLUMNS = ("hour_sin", "hour_cos", "doy_sin", "doy_cos", "sun_elevation_deg")
OPTIONAL_SENSORS = ("co2_ppm", "par_umol_m2_s", "wind_m_s", "outside_rh_pct", "solar_w_m2")
"""Sensors a greenhouse may lack: a missing value becomes the greenhouse's median instead of
dropping the row, and a sensor it never reports leaves its column empty (NaN) in every row. Their
derived columns, e.g. ``solar_w_m2_mean_15min``, are still required: a greenhouse that never
reports solar has no rows (:func:`required_sensors`)."""


@dataclass(frozen=True)
class FeatureParams:
    """What the feature engine needs (a subset of the preprocess job's parameters; stored with
    each model so serving rebuilds features exactly as preprocessing did)."""

    step_s: int = 60
    horizons_min: tuple[int, ...] = (5, 15, 30, 60)
    max_fill_steps: int = 5
    spike_window_steps: int = 15
    spike_mad_factor: float = 8.0
    latitude: float = 36.1
    longitude: float = -79.95
    essential: tuple[str, ...] = field(default=(*TARGET_VARIABLES, "outside_temp_c", *ACTUATORS))

    def steps(self, minutes: float) -> int:
        """Grid steps in ``minutes`` (at least one): lags, changes, plans and targets."""
        return max(1, int(round(minutes * 60 / self.step_s)))

    def window_steps(self, minutes: float) -> int:
        """Grid steps of a rolling window of ``minutes``: :meth:`steps`, but at least
        :data:`MIN_ROLL_STEPS`."""
        return max(MIN_ROLL_STEPS, self.steps(minutes))

    def spike_steps(self) -> int:
        """Grid steps of the centred spike window: ``spike_window_steps``, shortened on a coarse grid
        to span at most :data:`SPIKE_WINDOW_MAX_MIN` minutes but never below
        :data:`SPIKE_WINDOW_MIN_STEPS` steps (grids of 3 minutes or finer keep it as set up to 20
        steps; the default 15 steps are shortened from a 5-minute grid on)."""
        longest = max(SPIKE_WINDOW_MIN_STEPS, SPIKE_WINDOW_MAX_MIN * 60 // self.step_s)
        return int(min(self.spike_window_steps, longest))


FEATURE_COLUMNS: tuple[str, ...] = (
    *MEASUREMENT_NAMES,
    *(f"{v}_diff_{m}min" for v in TARGET_VARIABLES for m in LAG_MIN),
    *(f"{v}_{stat}_{m}min" for v in ROLL_COLUMNS for m in ROLL_MIN for stat in ("mean", "std")),
    *CALENDAR_COLUMNS,
    "inside_outside_temp_diff_c",
    *(f"{a}_change_{CHANGE_MIN}min" for a in ACTUATORS),
)
"""The feature columns, in model order (plans and targets excluded)."""


def feature_columns() -> list[str]:
    """The feature columns, in model order (plans and targets excluded): :data:`FEATURE_COLUMNS`."""
    return list(FEATURE_COLUMNS)


def label_columns(horizons_min: tuple[int, ...] | list[int]) -> tuple[str, ...]:
    """The training-only columns after the features: plans (with the vent exchange), then targets."""
    return _label_columns(tuple(horizons_min))


def required_columns(params: FeatureParams, *, labels: bool) -> tuple[str, ...]:
    """Columns a row must have (not NaN) to be kept: every feature but the optional sensors, the
    essential measurements, and with ``labels`` every plan and target."""
    return _required_columns(tuple(params.essential), tuple(params.horizons_min) if labels else ())


def required_sensors(params: FeatureParams) -> tuple[str, ...]:
    """Measurements but actuators that a greenhouse must report at least once for any row to be
    kept: the essential ones and those required features are computed from (lags, rolling
    statistics, the inside-outside difference). ``solar_w_m2`` is one although it is in
    :data:`OPTIONAL_SENSORS`: its own gaps are filled, but its rolling statistics are required.
    Actuators are not: one a greenhouse lacks reads 0 % (:mod:`app.preprocess.engine`)."""
    sources = {*params.essential, *TARGET_VARIABLES, *ROLL_COLUMNS, "air_temp_c", "outside_temp_c"}
    return tuple(n for n in MEASUREMENT_NAMES if n in sources and n not in ACTUATORS)


# serving asks on every rebuild: the names are built once per parameters (as tuples: a model's
# parameters may come back from JSON with lists, which do not hash)
@lru_cache(maxsize=64)
def _label_columns(horizons_min: tuple[int, ...]) -> tuple[str, ...]:
    return (*plan_columns(horizons_min), *target_columns(horizons_min))


@lru_cache(maxsize=64)
def _required_columns(essential: tuple[str, ...], label_horizons_min: tuple[int, ...]) -> tuple[str, ...]:
    needed = [c for c in FEATURE_COLUMNS if c not in OPTIONAL_SENSORS] + list(essential) + list(_label_columns(label_horizons_min))
    return tuple(sorted(set(needed)))
