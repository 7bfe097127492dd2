"""The feature grid's step, chosen from how often a greenhouse's devices report.

A grid finer than the readings is mostly empty steps: with 5-minute readings on a 1-minute grid
four steps in five would be filled from the readings around them, the next one included (a row
would see its future), and rolling windows of a few steps would hold one reading. So the step is
the reporting interval, rounded up to one of :data:`ALLOWED_STEPS_S`; horizons that are not whole
steps are left out (:func:`usable_horizons`), since a target must be a grid value.

The preprocess pipeline measures each greenhouse (:func:`reporting_interval_s`), chooses one step
for the feature set (:func:`choose_step_s`) and keeps the horizons that step can learn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from app.preprocess.raw import RawColumns

ALLOWED_STEPS_S: tuple[int, ...] = (60, 120, 180, 300, 600, 900)
"""The grid steps a feature set may use (seconds): divisors of an hour, so that every horizon and
window of whole quarter hours is a whole number of steps on the 1, 3, 5 and 15-minute grids, and
rows fall on the same clock times every day."""
JITTER_TOLERANCE = 0.1
"""How far (a share) a reporting interval may exceed a step and still choose it: 5-minute readings
whose timestamps wander by a few seconds still give 300 s, not 600 s."""


def device_intervals_s(raw: RawColumns) -> np.ndarray:
    """Each device's median interval (seconds) between its consecutive distinct timestamps, for
    the devices with at least two; repeated timestamps count once, and a gap or an outage is one
    long interval among many, which the median ignores. Raises ``ValueError`` when no device has
    two distinct timestamps (empty ``raw`` included)."""
    order = np.lexsort((raw.times_us, raw.devices))
    devices, times_us = raw.devices[order], raw.times_us[order]
    same_device = devices[1:] == devices[:-1]
    step_us = np.diff(times_us)
    distinct = same_device & (step_us > 0)
    owners, gaps_us = devices[1:][distinct], step_us[distinct]
    if not len(gaps_us):
        raise ValueError(f"cannot tell how often the devices report: {len(raw)} readings and no device with two distinct timestamps")
    return np.array([np.median(gaps_us[owners == d]) / 1e6 for d in np.unique(owners)])


def reporting_interval_s(raw: RawColumns) -> float:
    """How often ONE greenhouse's devices report (seconds): the median over its devices of each
    device's median interval between distinct timestamps (:func:`device_intervals_s`). Robust to
    jitter, dropped readings, outages and repeats; with devices of different cadences it is the
    middle device's (pass :func:`device_intervals_s` to :func:`choose_step_s` to cover the slowest).
    Raises ``ValueError`` when no device has two distinct timestamps."""
    return float(np.median(device_intervals_s(raw)))


def choose_step_s(intervals_s: Iterable[float]) -> int:
    """The grid step for readings that come every ``intervals_s`` (seconds; e.g. each greenhouse's
    :func:`reporting_interval_s`): the smallest of :data:`ALLOWED_STEPS_S` that the LONGEST
    interval fits in, allowing :data:`JITTER_TOLERANCE` (an interval up to 1.1 times a step
    chooses it). The longest decides because one step serves every greenhouse of a feature set,
    and a greenhouse reporting more slowly than the step would have its rows filled from later
    readings; faster ones are averaged per step. Intervals under 60 s give 60.

    Raises:
        ValueError: no interval, one that is not a positive finite number, or one longer than
            the coarsest step (15 minutes) allows.
    """
    values = [float(v) for v in intervals_s]
    if not values:
        raise ValueError("no reporting interval to choose a grid step from")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"reporting intervals must be positive finite seconds (got {bad[0]!r})")
    longest_s = max(values)
    for step_s in ALLOWED_STEPS_S:
        if longest_s <= step_s * (1 + JITTER_TOLERANCE):
            return step_s
    coarsest = ALLOWED_STEPS_S[-1]
    raise ValueError(f"readings every {longest_s:.0f} s are coarser than the coarsest feature step ({coarsest} s, up to {coarsest * (1 + JITTER_TOLERANCE):.0f} s with jitter)")


def usable_horizons(horizons_min: Iterable[int], step_s: int) -> tuple[int, ...]:
    """The horizons (minutes) of ``horizons_min`` that are whole multiples of ``step_s``, in the
    given order: a target is the grid value that many steps ahead, so a 5-minute horizon cannot be
    learned on a 15-minute grid (it would silently be the 15-minute one).

    Raises:
        ValueError: a step that is not a positive whole number of seconds, or no horizon left.
    """
    if int(step_s) != step_s or step_s <= 0:
        raise ValueError(f"step_s must be a positive whole number of seconds (got {step_s!r})")
    horizons = tuple(int(h) for h in horizons_min)
    usable = tuple(h for h in horizons if h > 0 and (h * 60) % int(step_s) == 0)
    if not usable:
        raise ValueError(f"no forecast horizon in {list(horizons)} min is a whole number of {int(step_s)} s steps: ask for multiples of {int(step_s) / 60:g} min")
    return usable
