"""Fitting the forecast model: the physics prior, the boosters on top of it, the interval edges.

One definition serves both ways of training: a Ray Train worker runs :func:`fit_model` on its
shard (XGBoost's collective, set up by Ray Train, makes every booster data-parallel, and the
prior's normal equations are summed over the workers), and :func:`fit_local` runs it in one
process (benchmarks, notebooks, tests).

The windows have one job each: the *train* window fits; the *validation* window stops each
booster early and sizes the interval edges (:func:`calibrate_intervals`, a conformal correction);
the *test* window is for the final report only and never reaches this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from app.contracts.vocabulary import INTERVAL_SIDES, TARGET_VARIABLES, horizon_of, interval_key, target_column, variable_of
from app.train.model import ForecastModel
from app.train.prior import Columns, NormalEquations, PhysicsPrior, fit_prior
from app.train.trainer import BoosterParams, target_specs

if TYPE_CHECKING:
    import pandas as pd

NOMINAL_COVERAGE = INTERVAL_SIDES["high"] - INTERVAL_SIDES["low"]
"""The share of outcomes the interval edges are meant to hold (0.9)."""
PRIOR_COLUMNS = ("air_temp_c_diff_5min", "air_temp_c_diff_15min", "air_temp_c_mean_60min", "solar_w_m2", "solar_w_m2_mean_15min", "rh_pct_diff_5min", "rh_pct_diff_15min")
"""Feature columns the prior reads besides the measurements every model has; a model whose
features lack one fits no prior (its boosters start from their own base score, as before)."""


def _summed(eq: NormalEquations) -> NormalEquations:
    """The normal equations summed over the data-parallel workers (as they are in one process)."""
    import xgboost

    if not xgboost.collective.is_distributed():
        return eq
    flat = np.concatenate([eq.xtx.ravel(), eq.xty, [eq.rows]])
    total = xgboost.collective.allreduce(flat, xgboost.collective.Op.SUM)
    k = len(eq.xty)
    return NormalEquations(total[: k * k].reshape(k, k), total[k * k : k * k + k], float(total[-1]))


def _columns(frame: pd.DataFrame) -> Columns:
    return {c: frame[c].to_numpy(dtype=np.float64) for c in frame.columns if c not in ("greenhouse_id", "ts", "split")}


def _change(frame: pd.DataFrame, variable: str, horizon_min: int) -> np.ndarray:
    return (frame[target_column(variable, horizon_min)] - frame[variable]).to_numpy(dtype=np.float64)


def _dmatrix(frame: pd.DataFrame, spec: dict[str, Any], margin: np.ndarray | None, label: np.ndarray) -> Any:
    import xgboost

    return xgboost.DMatrix(frame[spec["features"]].astype("float64"), label=label, base_margin=margin, feature_names=spec["features"])


def _train_one(params: dict[str, Any], train: Any, validation: Any | None, rounds: int, patience: int) -> Any:
    import xgboost

    evals = [(validation, "validation")] if validation is not None else []
    booster = xgboost.train(params, train, num_boost_round=rounds, evals=evals, early_stopping_rounds=patience if evals else None, verbose_eval=False)
    if evals and booster.best_iteration + 1 < booster.num_boosted_rounds():
        booster = booster[: booster.best_iteration + 1]  # keep the rounds that helped on validation
    return booster


def fit_model(
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    feature_columns: Sequence[str],
    horizons_min: Sequence[int],
    params: BoosterParams | None = None,
    *,
    edges: bool = True,
    feature_set_id: str = "",
) -> ForecastModel:
    """Fit the prior, then per (variable, horizon) a booster of the change on top of it (early
    stopping on ``validation`` when given) and, with ``edges``, a quantile booster of the
    interval's edges. Runs as it is in a Ray Train worker (on its shard) or in one process; the
    edges are not yet calibrated (:func:`calibrate_intervals`)."""
    params = params or BoosterParams()
    horizons, variables = [int(h) for h in horizons_min], list(TARGET_VARIABLES)
    validation = validation if validation is not None and len(validation) else None
    prior = PhysicsPrior()
    if all(c in feature_columns for c in PRIOR_COLUMNS):
        prior = fit_prior(_columns(train), horizons, variables, lambda v, h: _change(train, v, h), _summed)
    model = ForecastModel({}, list(feature_columns), horizons, variables, feature_set_id, prior=prior)
    for key, spec in target_specs(list(feature_columns), horizons).items():
        point = {**params.xgb_params(), "monotone_constraints": spec["monotone"]}
        model.boosters[key] = _fit_target(point, spec, key, prior, train, validation, params, outputs=1)
        if edges:
            quantiles = {**point, "objective": "reg:quantileerror", "quantile_alpha": np.array(list(INTERVAL_SIDES.values())), "eval_metric": "quantile"}
            model.edge_boosters[key] = _fit_target(quantiles, spec, key, prior, train, validation, params, outputs=2)
    return model


def _fit_target(xgb_params: dict[str, Any], spec: dict[str, Any], key: str, prior: PhysicsPrior, train: pd.DataFrame, validation: pd.DataFrame | None, params: BoosterParams, *, outputs: int) -> Any:
    """One booster of the change of ``key``'s variable over its horizon, on top of the prior
    (``outputs`` margins: one per quantile), stopped early on ``validation`` when given."""
    variable, h = spec["base"], horizon_of(key)

    def matrix(frame: pd.DataFrame) -> Any:
        margin = prior.change(variable, h, _columns(frame)) if key in prior.weights else None
        if margin is not None and outputs > 1:
            margin = np.column_stack([margin] * outputs)
        return _dmatrix(frame, spec, margin, _change(frame, variable, h))

    return _train_one(xgb_params, matrix(train), matrix(validation) if validation is not None else None, params.num_boost_round, params.early_stopping_rounds)


def calibrate_intervals(model: ForecastModel, validation: pd.DataFrame, coverage: float = NOMINAL_COVERAGE) -> dict[str, float]:
    """Widen (or narrow) each forecast's interval so that it holds ``coverage`` of the
    validation window's outcomes (:func:`interval_widening` of the model's raw forecasts, made in
    this process); sets and returns ``model.edge_widening``."""
    from app.train.evaluate import forecast_table

    model.edge_widening = {}
    if not model.edge_boosters or validation.empty:
        return model.edge_widening
    model.edge_widening = interval_widening(forecast_table(model, validation), [k for k in model.output_keys() if k in model.edge_boosters], coverage)
    return model.edge_widening


def interval_widening(table: pd.DataFrame, keys: Sequence[str], coverage: float = NOMINAL_COVERAGE) -> dict[str, float]:
    """Per forecast key, how far to move its interval's edges out so that they hold ``coverage``
    of the outcomes in ``table`` (a forecast table of the validation window with the raw edges,
    :func:`app.train.evaluate.forecast_table`). Split-conformal: the ``coverage`` quantile of how
    far each outcome falls outside the raw edges (never narrower than half the median width)."""
    widening = {}
    for key in keys:
        v, h = variable_of(key), horizon_of(key)
        actual = table[target_column(v, h)].to_numpy(dtype=np.float64)
        low, high = table[interval_key(v, h, "low")].to_numpy(dtype=np.float64), table[interval_key(v, h, "high")].to_numpy(dtype=np.float64)
        scores = np.maximum(low - actual, actual - high)
        level = min(1.0, np.ceil((len(scores) + 1) * coverage) / len(scores))
        half_width = float(np.median(high - low)) / 2
        widening[key] = max(float(np.quantile(scores, level)), -0.5 * half_width)
    return widening


def fit_local(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_columns: Sequence[str],
    horizons_min: Sequence[int],
    params: BoosterParams | None = None,
    *,
    edges: bool = True,
    feature_set_id: str = "",
    nthread: int = 1,
) -> ForecastModel:
    """:func:`fit_model` in this process (``nthread`` XGBoost threads), its intervals
    calibrated on ``validation``: the model ``jobs.train`` would make from the same windows."""
    params = (params or BoosterParams()).model_copy(update={"nthread": nthread})
    model = fit_model(train, validation, feature_columns, horizons_min, params, edges=edges, feature_set_id=feature_set_id)
    calibrate_intervals(model, validation)
    return model


__all__ = ["NOMINAL_COVERAGE", "calibrate_intervals", "fit_local", "fit_model", "interval_widening", "target_specs"]
