"""The promotion gate: does the challenger forecast better than the champion, by more than chance?

Both registered models are scored on the same rows: the untouched test window of the
challenger's feature set (no model has fitted it, stopped on it or been tuned on it; a champion
trained on an older feature set may have fitted some of those days, which favours the champion,
never the challenger). The challenger passes when the difference of their skills, with its
paired block-bootstrap interval (:func:`app.train.bootstrap.skill_difference`), clears
``min_improvement`` at the interval's low end: a challenger that is better only by noise does
not replace a champion.

Each model's forecasts come from the batch prediction stage (:mod:`app.train.batch_predict`: Ray
Data over the cluster, written to ``predictions/<model>/<version>/<feature_set_id>/test/`` and
recorded), and the verdict is computed from those predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.train.model import ForecastModel

if TYPE_CHECKING:
    import pandas as pd

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
    from app.train.bootstrap import skill_difference, skill_interval
    from app.train.evaluate import errors_from

    fs_id = feature_set_of(settings, model_name, challenger)
    mine = errors_from(forecasts_on_test_window(settings, model_name, challenger, fs_id), key)
    challenger_skill = skill_interval(mine).value
    if champion is None:
        return PromotionDecision(True, "no champion yet: the challenger passes", model_name, challenger, None, None, challenger_skill, None, fs_id)
    theirs = errors_from(forecasts_on_test_window(settings, model_name, champion, fs_id), key)
    diff = skill_difference(mine, theirs)
    champion_skill = challenger_skill - diff.value
    verdict = diff.low > min_improvement
    compared = (
        f"challenger skill_{key} {challenger_skill:.4f} vs champion {champion_skill:.4f} on the test window of {fs_id}: difference {diff.value:+.4f}, 90 % interval [{diff.low:+.4f}, {diff.high:+.4f}]"
    )
    reason = f"{compared} clears +{min_improvement}" if verdict else f"{compared} does not clear +{min_improvement} at its low end"
    return PromotionDecision(verdict, reason, model_name, challenger, champion, champion, challenger_skill, champion_skill, fs_id, difference_ci=(round(diff.low, 4), round(diff.high, 4)))


def feature_set_of(settings: Settings, model_name: str, version: str) -> str:
    """The feature set version ``version`` was trained on: its training run's ``feature_set_id``
    tag (or param); a version without either is loaded to ask the model."""
    from app.tracking import Tracking, load_forecast_model

    tracking = Tracking(settings.tracking_url)
    found = tracking.model_version(model_name, version)
    if found and found.get("run_id"):
        run = tracking.get_run(found["run_id"])
        fs_id = run["tags"].get("feature_set_id") or run["params"].get("feature_set_id")
        if fs_id:
            return str(fs_id)
    model: ForecastModel = load_forecast_model(settings.tracking_url, f"models:/{model_name}/{version}", cache_dir=settings.model_cache_path)
    return model.feature_set_id


def forecasts_on_test_window(settings: Settings, model_name: str, version: str, fs_id: str) -> pd.DataFrame:
    """The forecast table of registered ``version`` on the test window of ``fs_id``: the batch
    prediction stage (Ray Data ``map_batches``, predictions written to the lake and recorded),
    collected in window order."""
    from app.train.batch_predict import BatchPredictParams, run_batch_predict

    done = run_batch_predict(settings, BatchPredictParams(model_name=model_name, version=version, feature_set_id=fs_id, window="test"), collect=True)
    if done.table is None:
        raise RuntimeError("batch prediction returned no forecast table")
    return done.table
