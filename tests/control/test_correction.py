"""Offset-free forecasts: the per-horizon error EMA learns a bias and corrects it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from app.control.correction import ForecastOffsets

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_offsets_learn_a_constant_bias_per_horizon_and_correct_temperature_only():
    offsets = ForecastOffsets(alpha=0.5)
    for k in range(12):  # every 5 min the model says "18.0" for +5 and +15; the truth is 18.4
        ts = T0 + timedelta(minutes=5 * k)
        offsets.observe("gh-01", ts, 18.4)
        offsets.record("gh-01", ts, {"air_temp_c_5min": 18.0, "air_temp_c_15min": 18.0, "rh_pct_5min": 80.0})
    learned = offsets.offsets("gh-01")
    assert set(learned) == {5, 15}
    assert learned[5] == pytest.approx(0.4, abs=1e-3) and learned[15] == pytest.approx(0.4, abs=0.01)
    keys = ["air_temp_c_5min", "rh_pct_5min", "air_temp_c_60min"]
    raw = np.array([[18.0, 80.0, 17.0], [19.0, 70.0, 16.0]])
    fixed = offsets.correct("gh-01", raw, keys)
    assert fixed[:, 0] == pytest.approx([18.4, 19.4], abs=1e-3)
    assert fixed[:, 1:].tolist() == [[80.0, 17.0], [70.0, 16.0]]  # humidity, and no offset known for 60 min yet
    assert raw[0, 0] == 18.0  # the input is untouched
    assert offsets.offsets("gh-02") == {} and offsets.correct("gh-02", raw, keys).tolist() == raw.tolist()


def test_late_measurements_are_dropped_repeats_replace_and_corrections_are_clipped():
    offsets = ForecastOffsets(alpha=1.0, max_abs_c=1.0, max_late_s=300)
    offsets.record("gh-01", T0, {"air_temp_c_5min": 18.0})
    offsets.observe("gh-01", T0 + timedelta(minutes=30), 25.0)  # 25 min late: another instant
    assert offsets.offsets("gh-01") == {}
    offsets.record("gh-01", T0, {"air_temp_c_5min": 18.0})
    offsets.record("gh-01", T0, {"air_temp_c_5min": 19.0})  # a retried decision for the same instant
    offsets.observe("gh-01", T0 + timedelta(minutes=2), 0.0)  # not due yet
    assert offsets.offsets("gh-01") == {}
    offsets.observe("gh-01", T0 + timedelta(minutes=5), 30.0)  # a broken sensor
    assert offsets.offsets("gh-01") == {5: 1.0}


def test_alpha_is_validated():
    with pytest.raises(ValueError):
        ForecastOffsets(alpha=0.0)
