"""Block-bootstrap intervals of forecast skill: coverage of the truth, width, pairing."""

from __future__ import annotations

import numpy as np
import pytest

from app.train.bootstrap import block_hours_for, hourly_errors, skill_difference, skill_interval

HOUR_S = 3600


def autocorrelated(rng: np.random.Generator, n: int, scale: float, rho: float = 0.98) -> np.ndarray:
    """An AR(1) error series (errors a minute apart are alike, as forecast errors are)."""
    out = np.empty(n)
    out[0] = rng.normal(0, scale)
    noise = rng.normal(0, scale * np.sqrt(1 - rho**2), n)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + noise[i]
    return out


def window(rng: np.random.Generator, days: float, model_scale: float, greenhouses: int = 2) -> tuple:
    n = int(days * 1440)
    ts = np.tile(np.arange(n) * 60, greenhouses)
    gh = np.repeat([f"gh-{i:02d}" for i in range(1, greenhouses + 1)], n)
    model = np.concatenate([autocorrelated(rng, n, model_scale) for _ in range(greenhouses)])
    baseline = np.concatenate([autocorrelated(rng, n, 1.0) for _ in range(greenhouses)])
    return ts, gh, model, baseline


def test_hourly_errors_sum_each_greenhouse_and_hour():
    ts = np.array([0, 60, HOUR_S, HOUR_S + 5, 0])
    errors = hourly_errors(ts, np.array(["a", "a", "a", "a", "b"]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.ones(5))
    assert errors.greenhouses == ("a", "b")
    np.testing.assert_allclose(errors.model_sq, [[5.0, 25.0], [25.0, 0.0]])
    np.testing.assert_allclose(errors.count, [[2, 2], [1, 0]])
    assert errors.only("b").model_sq.tolist() == [[25.0, 0.0]]


def test_skill_interval_holds_the_point_and_narrows_with_more_days():
    rng = np.random.default_rng(0)
    short = skill_interval(hourly_errors(*window(rng, 3, 0.6)))
    long = skill_interval(hourly_errors(*window(rng, 24, 0.6)))
    for iv in (short, long):
        assert iv.low < iv.value < iv.high
    assert long.high - long.low < short.high - short.low


def test_skill_interval_covers_the_true_skill_about_as_often_as_it_says():
    """Over many independent windows with a known true skill (1 - 0.6 = 0.4 in the long run), the
    90 % interval holds it in most of them: autocorrelated errors, so a row bootstrap would not."""
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(40):
        iv = skill_interval(hourly_errors(*window(rng, 6, 0.6)), draws=300)
        hits.append(iv.low <= 0.4 <= iv.high)
    assert 0.75 <= np.mean(hits) <= 1.0, np.mean(hits)


def test_block_length_is_a_day_or_a_third_of_a_short_window():
    assert block_hours_for(24 * 7) == 24
    assert block_hours_for(18) == 6
    assert block_hours_for(2) == 1


def test_paired_difference_sees_a_real_gain_and_not_a_tie():
    rng = np.random.default_rng(2)
    ts, gh, model, baseline = window(rng, 5, 0.5)
    better = hourly_errors(ts, gh, model * 0.8, baseline)
    same = hourly_errors(ts, gh, model, baseline)
    gain = skill_difference(better, same)
    assert gain.value > 0 and gain.low > 0
    tie = skill_difference(hourly_errors(ts, gh, model + rng.normal(0, 0.01, len(model)), baseline), same)
    assert tie.low < 0 < tie.high


def test_paired_difference_needs_the_same_rows():
    rng = np.random.default_rng(3)
    a = hourly_errors(*window(rng, 2, 0.5))
    b = hourly_errors(*window(rng, 3, 0.5))
    with pytest.raises(ValueError, match="same rows"):
        skill_difference(a, b)
