"""The promotion gate: does the challenger forecast better than the champion, by more than chance?

Both registered models are scored on the same rows: the untouched test window of the
challenger's feature set (no model has fitted it, stopped on it or been tuned on it; a champion
trained on an older feature set may have fitted some of those days, which favours the champion,
never the challenger). The challenger passes when the difference of their skills, with its
paired block-bootstrap interval (:func:`app.train.bootstrap.skill_difference`), clears
``min_improvement`` at the interval's low end: a challenger that is better only by noise does
not replace a champion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from app.config import Settings
from app.train.model import ForecastModel

PRIMARY_METRIC = "skill_air_temp_c_15min"


@dataclass
class PromotionDecision:
    """Whether the challenger passed, whether ``champion`` moved, why, and the versions and skills
    compared.

    ``promoted`` means "the challenger passed" (it beats the champion, or there is no champion):
    with ``run_promotion(..., move_alias=False)`` nothing moves and ``alias_moved`` is False, so
    a caller can start a canary rollout of ``challenger_version`` instead. ``champion_version_after``
    is where ``champion`` points after the call. ``difference_ci`` is the bootstrap interval
    ``[low, high]`` of challenger minus champion skill on the test window."""

    promoted: bool
    reason: str
    model_name: str
    challenger_version: str | None
    champion_version_before: str | None
    champion_version_after: str | None
    challenger_skill: float | None = None
    champion_skill: float | None = None
    feature_set_id: str = ""
    alias_moved: bool = False
    difference_ci: tuple[float, float] | None = None

    @property
    def passed(self) -> bool:
        """The challenger passed (the same as ``promoted``)."""
        return self.promoted

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``passed``)."""
        return {**asdict(self), "passed": self.passed}


def run_promotion(settings: Settings, model_name: str | None = None, *, metric: str = PRIMARY_METRIC, min_improvement: float = 0.0, move_alias: bool = True) -> PromotionDecision:
    """Judge the ``challenger`` against the ``champion`` on the challenger's test window (module
    docstring): it passes when the low end of the interval of its skill minus the champion's
    exceeds ``min_improvement``, or when there is no champion yet.

    With ``move_alias`` (the default) a passing challenger becomes ``champion``. With
    ``move_alias=False`` the same verdict comes back (``promoted`` still means "passed") and no
    alias moves. ``model_name`` defaults to ``settings.control.model_name``; ``metric`` names the
    skill judged (``skill_<variable>_<h>min``)."""
    from app.tracking import Tracking

    model_name = model_name or settings.control.model_name
    tracking = Tracking(settings.tracking_url)
    challenger = tracking.version_by_alias(model_name, "challenger")
    champion = tracking.version_by_alias(model_name, "champion")
    if challenger is None:
        return PromotionDecision(False, "no challenger to promote", model_name, None, champion, champion)
    if challenger == champion:
        return PromotionDecision(False, "the challenger already is the champion", model_name, challenger, champion, champion)
    decision = _judge(settings, model_name, challenger, champion, metric.removeprefix("skill_"), min_improvement)
    if decision.promoted and move_alias:
        tracking.set_alias(model_name, "champion", challenger)
        decision.champion_version_after = challenger
        decision.alias_moved = True
    return decision


def _judge(settings: Settings, model_name: str, challenger: str, champion: str | None, key: str, min_improvement: float) -> PromotionDecision:
    """The verdict on ``challenger`` against ``champion`` (None: none yet) for forecast ``key``;
    moves nothing."""
    from app.preprocess import load_test_window
    from app.tracking import load_forecast_model
    from app.train.bootstrap import skill_difference, skill_interval
    from app.train.evaluate import errors_of

    def registered(version: str) -> ForecastModel:
        return load_forecast_model(settings.tracking_url, f"models:/{model_name}/{version}")

    challenger_model = registered(challenger)
    fs_id = challenger_model.feature_set_id
    window = load_test_window(settings, fs_id)
    mine = errors_of(challenger_model, window, key)
    challenger_skill = skill_interval(mine).value
    if champion is None:
        return PromotionDecision(True, "no champion yet: the challenger passes", model_name, challenger, None, None, challenger_skill, None, fs_id)
    theirs = errors_of(registered(champion), window, key)
    diff = skill_difference(mine, theirs)
    champion_skill = challenger_skill - diff.value
    verdict = diff.low > min_improvement
    compared = (
        f"challenger skill_{key} {challenger_skill:.4f} vs champion {champion_skill:.4f} on the test window of {fs_id}: difference {diff.value:+.4f}, 90 % interval [{diff.low:+.4f}, {diff.high:+.4f}]"
    )
    reason = f"{compared} clears +{min_improvement}" if verdict else f"{compared} does not clear +{min_improvement} at its low end"
    return PromotionDecision(verdict, reason, model_name, challenger, champion, champion, challenger_skill, champion_skill, fs_id, difference_ci=(round(diff.low, 4), round(diff.high, 4)))
