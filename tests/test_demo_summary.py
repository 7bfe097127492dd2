"""The demo's verdict states the margin against the season benchmark's target."""

from __future__ import annotations

from app.demo_summary import control_verdict


def test_a_tie_is_not_better_and_says_how_far_it_is_from_the_target():
    text = control_verdict(99.7, 2544.5, 99.8, 2571.5, 3.0, 3.1)
    assert text.startswith("not better: energy +1.0% saved, in band -0.10 pts")
    assert "9.0% short of 10%" in text and "thermostat 99.8% with 2571.5 kWh" in text


def test_ten_percent_less_heat_in_band_is_better():
    assert control_verdict(99.8, 2200.0, 99.8, 2571.5).startswith("better: energy +14.4% saved")


def test_more_heat_for_more_time_in_band_is_not_better():
    text = control_verdict(99.9, 2700.0, 96.0, 2571.5)
    assert text.startswith("not better") and "energy 5.0% above the thermostat's" in text


def test_more_humidity_is_not_better_even_with_less_heat():
    assert control_verdict(99.8, 2000.0, 99.8, 2571.5, 12.0, 5.0).startswith("not better")
