"""The rollout policy (pure): who serves which greenhouse, and the judging rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.control.rollout import RolloutPlan, VersionFigures, default_steps, figures_from_decisions, judge, serves_candidate, share_difference_upper, validate_steps, wilson_lower, wilson_upper

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def plan(mode: str = "canary", steps: tuple[float, ...] = (0.1, 0.5, 1.0), step_index: int = 0, **kw) -> RolloutPlan:
    base = RolloutPlan(
        rollout_id="ro-test",
        model_name="m",
        champion_version="3",
        candidate_version="4",
        mode=mode,  # type: ignore[arg-type]
        steps=steps,
        step_index=step_index,
        status="active",
        started_at=T0,
        step_started_at=T0,
        error_margin_c=0.15,
        in_band_margin_pct=5.0,
        min_errors_per_step=30,
        min_decisions_per_step=12,
        horizon_min=15,
    )
    return replace(base, **kw)


def figs(decisions: int = 20, in_band_pct: float | None = 90.0, errors_n: int = 40, rmse: float | None = 0.30) -> VersionFigures:
    return VersionFigures(decisions=decisions, in_band_pct=in_band_pct if decisions else None, errors_n=errors_n, forecast_rmse_c=rmse if errors_n else None)


# -- who serves which greenhouse ---------------------------------------------------------------


@given(rollout=st.text(min_size=1, max_size=20), greenhouse=st.text(min_size=1, max_size=20), a=st.floats(0, 1), b=st.floats(0, 1))
def test_a_greenhouse_on_the_candidate_stays_on_it_as_the_fraction_grows(rollout, greenhouse, a, b):
    low, high = sorted((a, b))
    assert serves_candidate(rollout, greenhouse, low) == serves_candidate(rollout, greenhouse, low)  # stable
    if serves_candidate(rollout, greenhouse, low):
        assert serves_candidate(rollout, greenhouse, high)


def test_the_share_on_the_candidate_matches_the_fraction_for_1000_greenhouses():
    ids = [f"gh-{i:04d}" for i in range(1000)]
    for fraction in (0.1, 0.25, 0.5, 0.9):
        share = sum(serves_candidate("ro-abc", g, fraction) for g in ids) / len(ids)
        assert abs(share - fraction) < 0.05, (fraction, share)
    assert not any(serves_candidate("ro-abc", g, 0.0) for g in ids)
    assert all(serves_candidate("ro-abc", g, 1.0) for g in ids)
    sets = [{g for g in ids if serves_candidate("ro-abc", g, f)} for f in (0.1, 0.5, 1.0)]
    assert sets[0] <= sets[1] <= sets[2]
    other = {g for g in ids if serves_candidate("ro-other", g, 0.5)}
    assert other != sets[1]  # each rollout draws its own set


def test_version_for_follows_the_status():
    p = plan(steps=(0.5, 1.0))
    served = {g: p.version_for(g) for g in (f"gh-{i}" for i in range(50))}
    assert {v for v, _ in served.values()} == {"3", "4"}
    assert all((v == "4") == (role == "candidate") for v, role in served.values())
    assert all(p.shadow_version_for(g) == ("3" if v == "4" else "4") for g, (v, _) in served.items())
    assert plan(status="promoted").version_for("gh-1") == ("4", "champion")
    assert plan(status="rolled_back").version_for("gh-1") == ("3", "champion")
    assert plan(status="aborted").shadow_version_for("gh-1") is None
    assert plan(mode="blue_green", steps=(0.0, 1.0)).version_for("gh-1") == ("3", "champion")
    assert plan(mode="blue_green", steps=(0.0, 1.0), step_index=1).version_for("gh-1") == ("4", "candidate")


def test_plan_round_trips_through_its_document():
    p = plan(revision=3, started_by="cli:ann")
    assert RolloutPlan.from_document({**p.to_document(), "_id": "x", "active_key": "m"}) == p
    assert p.advanced(T0).step_index == 1 and p.advanced(T0).revision == 4
    assert p.ended("rolled_back").fraction == 0.0


# -- steps -------------------------------------------------------------------------------------


def test_steps_are_checked_for_the_mode():
    assert validate_steps([0.1, 0.5, 1], "canary") == (0.1, 0.5, 1.0)
    assert default_steps("blue_green", [0.1, 1.0]) == (0.0, 1.0)
    assert default_steps("shadow", [0.1, 1.0]) == (0.0,)
    assert default_steps("canary", [0.2, 1]) == (0.2, 1.0)
    for steps, mode, words in [
        ([0.5, 0.1, 1.0], "canary", "increase"),
        ([0.1, 0.5], "canary", "ends at 1.0"),
        ([0.1, 1.5], "canary", "[0, 1]"),
        ([], "canary", "at least one"),
        ([0.0, 1.0], "shadow", "shadow"),
        ([1.0], "sideways", "unknown rollout mode"),
    ]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            validate_steps(steps, mode)


# -- judging -----------------------------------------------------------------------------------


def test_holds_until_both_versions_have_enough_errors_and_the_candidate_enough_decisions():
    assert judge(plan(), figs(errors_n=29), figs()).action == "hold"
    assert judge(plan(), figs(), figs(errors_n=0)).action == "hold"
    held = judge(plan(), figs(), figs(decisions=11))
    assert held.action == "hold" and "decisions" in held.reason
    # at fraction 0 (blue-green's first step) only the errors count
    assert judge(plan(mode="blue_green", steps=(0.0, 1.0)), figs(), figs(decisions=0)).action == "advance"


def test_advances_then_promotes_at_the_last_step():
    assert judge(plan(), figs(), figs()).action == "advance"
    assert judge(plan(step_index=2), figs(), figs()).action == "promote"
    # at 1.0 the champion decides nothing: the in-band rule needs both, the error rule still holds
    assert judge(plan(step_index=2), figs(decisions=0), figs(in_band_pct=10.0)).action == "promote"
    assert judge(plan(step_index=2), figs(decisions=0), figs(rmse=0.5)).action == "rollback"


def test_rolls_back_on_worse_forecasts_or_less_time_in_band():
    worse = judge(plan(), figs(rmse=0.30), figs(rmse=0.46))
    assert worse.action == "rollback" and "rmse" in worse.reason
    assert judge(plan(), figs(rmse=0.30), figs(rmse=0.44)).action == "advance"  # within the margin
    # time in band is judged on the upper 95 % bound of the difference of the shares (Newcombe)
    out_of_band = judge(plan(), figs(decisions=200, in_band_pct=90.0), figs(decisions=200, in_band_pct=75.0))
    assert out_of_band.action == "rollback" and "in band" in out_of_band.reason and "95% confidence" in out_of_band.reason
    assert judge(plan(), figs(decisions=200, in_band_pct=90.0), figs(decisions=200, in_band_pct=80.0)).action == "advance"  # 10 points: not clearly 5
    assert judge(plan(), figs(in_band_pct=90.0), figs(in_band_pct=85.5)).action == "advance"
    # one greenhouse-interval out of band in six is no evidence against the candidate...
    assert judge(plan(min_decisions_per_step=6), figs(decisions=100, in_band_pct=100.0), figs(decisions=6, in_band_pct=83.3)).action == "advance"
    # ...two in band out of twelve is
    assert judge(plan(), figs(decisions=100, in_band_pct=100.0), figs(decisions=12, in_band_pct=16.7)).action == "rollback"
    assert judge(plan(), figs(), figs(rmse=0.1, in_band_pct=99.0)).action == "advance"  # better is fine
    # the demo's case: 11 of 14 in band against 14 of 14 is no evidence either (both samples small)
    assert judge(plan(min_decisions_per_step=12), figs(decisions=14, in_band_pct=100.0), figs(decisions=14, in_band_pct=78.57)).action == "advance"


def test_the_difference_bound_is_wider_than_either_share_alone():
    assert share_difference_upper(0.5, 10**6, 0.5, 10**6) < 0.002  # huge samples: the difference itself
    assert share_difference_upper(0.786, 14, 1.0, 14) > 0.0  # 11/14 vs 14/14: could be no worse
    assert share_difference_upper(0.75, 200, 0.90, 200) < -0.05
    assert wilson_lower(1.0, 14) < 0.8 < wilson_upper(0.786, 14) and wilson_lower(0.0, 5) == 0.0


def test_shadow_never_moves_by_itself_but_says_how_the_candidate_does():
    shadow = plan(mode="shadow", steps=(0.0,))
    passing = judge(shadow, figs(decisions=20), figs(decisions=0))
    assert passing.action == "hold" and "passes" in passing.reason and "rmse 0.300" in passing.reason
    failing = judge(shadow, figs(), figs(decisions=0, rmse=0.9))
    assert failing.action == "hold" and "fails" in failing.reason
    assert judge(shadow, figs(errors_n=3), figs(decisions=0)).action == "hold"


def test_an_ended_rollout_only_holds():
    assert judge(plan(status="promoted"), figs(), figs()).action == "hold"


@given(champion_rmse=st.floats(0.01, 3), candidate_rmse=st.floats(0.01, 3), champion_band=st.floats(0, 100), candidate_band=st.floats(0, 100), step=st.integers(0, 2))
def test_judging_is_total_and_consistent(champion_rmse, candidate_rmse, champion_band, candidate_band, step):
    verdict = judge(plan(step_index=step), figs(rmse=champion_rmse, in_band_pct=champion_band), figs(rmse=candidate_rmse, in_band_pct=candidate_band))
    upper_difference = 100 * share_difference_upper(candidate_band / 100, 20, champion_band / 100, 20)  # figs() makes 20 decisions
    worse = candidate_rmse > champion_rmse + 0.15 or upper_difference < -5.0
    if worse:
        assert verdict.action == "rollback"
    else:
        assert verdict.action == ("promote" if step == 2 else "advance")
    assert set(verdict.figures()) == {"champion", "candidate"}


# -- figures from decisions documents ----------------------------------------------------------


def decision(version: str, in_band: bool, errors: list[tuple[str, int, float]], role: str = "champion", name: str = "m") -> dict:
    return {
        "model": {"name": name, "version": version},
        "role": role,
        "in_band": in_band,
        "settled_errors": [{"model": name, "version": v, "horizon_min": h, "error_c": e, "shadow": v != version} for v, h, e in errors],
    }


def test_figures_count_decisions_by_the_deciding_version_and_errors_by_the_forecasting_one():
    docs = [
        decision("3", True, [("3", 15, 0.3), ("4", 15, 0.4), ("3", 60, 9.0)]),
        decision("3", False, [("3", 15, -0.3), ("4", 15, -0.4)]),
        decision("4", True, [("3", 15, 0.3), ("4", 15, 0.4)], role="candidate"),
        decision("4", False, [], role="pinned"),
        decision("rule-based", True, []),
        decision("3", True, [("3", 15, 5.0)], name="other-model"),
    ]
    champion = figures_from_decisions(docs, "m", "3", 15)
    candidate = figures_from_decisions(docs, "m", "4", 15)
    assert (champion.decisions, champion.in_band_pct, champion.errors_n) == (2, 50.0, 3)
    assert champion.forecast_rmse_c == pytest.approx(0.3)
    assert (candidate.decisions, candidate.in_band_pct, candidate.errors_n) == (1, 100.0, 3)
    assert candidate.forecast_rmse_c == pytest.approx(0.4)
    assert figures_from_decisions([], "m", "3", 15) == VersionFigures()


def test_a_step_that_draws_no_greenhouse_of_a_small_fleet_is_judged_on_the_errors_alone():
    p = plan(steps=(0.5, 1.0))
    assert judge(p, figs(decisions=20), figs(decisions=0)).action == "advance"
    assert judge(p, figs(decisions=20), figs(decisions=0, rmse=0.9)).action == "rollback"
    assert judge(p, figs(decisions=20), figs(decisions=3)).action == "hold"  # drawn, too few yet
    assert judge(p, figs(decisions=2), figs(decisions=0)).action == "hold"  # too early to tell


def test_worse_forecasts_roll_back_before_the_candidate_has_decided_enough():
    p = plan(steps=(0.5, 1.0))
    assert judge(p, figs(decisions=20), figs(decisions=2, rmse=0.9)).action == "rollback"
    assert judge(p, figs(decisions=20), figs(decisions=2, rmse=0.3)).action == "hold"
