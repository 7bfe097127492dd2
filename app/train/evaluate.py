"""Evaluation on a window: RMSE/MAE per target and horizon against persistence on the same rows,
interval coverage, bootstrap intervals of the skill (pooled and per greenhouse), and the plot.

Every figure is computed from a *forecast table* (:func:`forecast_table`: per row its greenhouse,
time, current values, targets, forecasts and interval edges), whoever made it: this process
(:func:`evaluate`, for small windows, benchmarks and tests) or Ray Data batch inference over the
cluster (:mod:`app.train.batch_inference`: what training's evaluation and promotion use). Both make
the same numbers for the same rows, so the figures are the same either way.

Training evaluates twice: on the validation window (which early stopping and the search saw, so
its figures are optimistic) and, last, on the untouched test window (the honest figures, the
unprefixed metric names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.contracts.vocabulary import forecast_key, horizon_of, interval_key, target_column, variable_of
from app.train.bootstrap import LEVEL, HourlyErrors, Interval, hourly_errors, skill_interval
from app.train.model import ForecastModel, fill_plans

PRIMARY_KEY = "air_temp_c_15min"
ROW_KEYS = ("greenhouse_id", "ts")
"""The columns that name a row of a window (and sort a forecast table)."""


def window_forecasts(model: ForecastModel, window: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The model's forecasts (and interval edges, when it has them) for every row of a window,
    and their names (``output_keys() + interval_keys()``)."""
    frame = fill_plans(window, model.horizons_min)
    columns = list(dict.fromkeys([*model.input_columns(), *model.variables, "outside_temp_c", "air_temp_c"]))
    return model.predict_arrays(frame[columns].to_numpy(dtype=np.float64), columns, intervals=True), model.output_keys() + model.interval_keys()


def forecast_table(model: ForecastModel, window: pd.DataFrame) -> pd.DataFrame:
    """The model's forecasts for the rows of ``window``, with what scoring them needs: one row per
    window row (same order) holding ``greenhouse_id``, ``ts``, each variable's current value (the
    persistence forecast), the window's target columns, the forecasts ``<variable>_<h>min`` and
    the interval edges ``<variable>_<h>min_low``/``_high`` (models with edges). Every score of this
    module is computed from such a table; batch inference (:mod:`app.train.batch_inference`)
    makes the same table with Ray Data, batch by batch."""
    out, names = window_forecasts(model, window)
    targets = [target_column(v, h) for v in model.variables for h in model.horizons_min if target_column(v, h) in window.columns]
    kept = window[[c for c in ROW_KEYS if c in window.columns] + list(model.variables) + targets].reset_index(drop=True)
    return pd.concat([kept, pd.DataFrame(out, columns=names)], axis=1)


def sorted_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` in the order a window is read in: by greenhouse, then time."""
    return table.sort_values(list(ROW_KEYS), kind="stable").reset_index(drop=True) if len(table) else table


def widened(table: pd.DataFrame, widening: Mapping[str, float]) -> pd.DataFrame:
    """``table`` (forecast with raw interval edges) with each key's edges moved out by
    ``widening[key]``, as a model with that ``edge_widening`` forecasts them."""
    out = table.copy()
    for key, widen in widening.items():
        out[f"{key}_low"] = out[f"{key}_low"] - float(widen)
        out[f"{key}_high"] = out[f"{key}_high"] + float(widen)
    return out


def errors_from(table: pd.DataFrame, key: str) -> HourlyErrors:
    """The squared errors of forecast ``key`` and of persistence in a forecast table, per
    greenhouse and hour (for bootstrap intervals, :mod:`app.train.bootstrap`)."""
    actual = table[target_column(variable_of(key), horizon_of(key))].to_numpy(dtype=np.float64)
    ts_s = ((pd.to_datetime(table["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy()
    return hourly_errors(ts_s, table["greenhouse_id"].to_numpy(), table[key].to_numpy(dtype=np.float64) - actual, table[variable_of(key)].to_numpy(dtype=np.float64) - actual)


def errors_of(model: ForecastModel, window: pd.DataFrame, key: str) -> HourlyErrors:
    """:func:`errors_from` the model's forecasts for ``window``, made in this process."""
    return errors_from(forecast_table(model, window), key)


def table_metrics(table: pd.DataFrame, keys: Sequence[str]) -> dict[str, float]:
    """Metrics named ``<metric>_<key>`` for each forecast key (``<variable>_<h>min``) of a forecast
    table: rmse, mae, persistence_rmse, persistence_mae, skill (1 - rmse / persistence_rmse; 0.3 =
    30 % lower RMSE than persistence), and where the table has interval edges coverage (the share
    of outcomes inside them; nominal 0.9) and interval_width (median, the variable's units);
    ``rows`` counts the table's rows."""
    metrics: dict[str, float] = {}
    for key in keys:
        variable, h = variable_of(key), horizon_of(key)
        actual = table[target_column(variable, h)].to_numpy(dtype=np.float64)
        err = table[key].to_numpy(dtype=np.float64) - actual
        persist = table[variable].to_numpy(dtype=np.float64) - actual
        rmse = float(np.sqrt(np.mean(err**2)))
        p_rmse = float(np.sqrt(np.mean(persist**2)))
        metrics[f"rmse_{key}"] = rmse
        metrics[f"mae_{key}"] = float(np.mean(np.abs(err)))
        metrics[f"persistence_rmse_{key}"] = p_rmse
        metrics[f"persistence_mae_{key}"] = float(np.mean(np.abs(persist)))
        metrics[f"skill_{key}"] = 1.0 - rmse / p_rmse if p_rmse > 0 else 0.0
        if interval_key(variable, h, "low") in table.columns:
            low, high = table[interval_key(variable, h, "low")].to_numpy(dtype=np.float64), table[interval_key(variable, h, "high")].to_numpy(dtype=np.float64)
            metrics[f"coverage_{key}"] = float(np.mean((actual >= low) & (actual <= high)))
            metrics[f"interval_width_{key}"] = float(np.median(high - low))
    metrics["rows"] = float(len(table))
    return metrics


def evaluate(model: ForecastModel, window: pd.DataFrame) -> dict[str, float]:
    """:func:`table_metrics` of the model's forecasts for ``window``, made in this process."""
    return table_metrics(forecast_table(model, window), model.output_keys())


def table_skill_intervals(table: pd.DataFrame, keys: Sequence[str], *, seed: int = 0) -> dict[str, Any]:
    """Bootstrap intervals of every forecast's skill in a forecast table: pooled
    (``{"pooled": {key: Interval}}``) and per greenhouse (``{"greenhouses": {id: {key: Interval}}}``)."""
    pooled: dict[str, Interval] = {}
    per_greenhouse: dict[str, dict[str, Interval]] = {}
    for key in keys:
        errors = errors_from(table, key)
        pooled[key] = skill_interval(errors, seed=seed)
        for gh in errors.greenhouses:
            per_greenhouse.setdefault(gh, {})[key] = skill_interval(errors.only(gh), seed=seed)
    return {"pooled": pooled, "greenhouses": per_greenhouse}


def skill_intervals(model: ForecastModel, window: pd.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """:func:`table_skill_intervals` of the model's forecasts for ``window``, made in this process."""
    return table_skill_intervals(forecast_table(model, window), model.output_keys(), seed=seed)


def interval_metrics(intervals: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics of :func:`skill_intervals`: ``skill_<key>_ci_low/high`` pooled, and the
    15-min (or shortest) temperature skill with its interval per greenhouse,
    ``skill_<key>_<greenhouse>``."""
    out: dict[str, float] = {}
    for key, iv in intervals["pooled"].items():
        out |= {k: v for k, v in iv.as_dict(f"skill_{key}").items() if k != f"skill_{key}"}
    for gh, by_key in intervals["greenhouses"].items():
        key = PRIMARY_KEY if PRIMARY_KEY in by_key else next(iter(by_key))
        out |= by_key[key].as_dict(f"skill_{key}_{gh}")
    return out


def intervals_json(intervals: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`skill_intervals` as plain JSON (rounded)."""

    def plain(iv: Interval) -> dict[str, float]:
        return {"skill": round(iv.value, 4), "ci_low": round(iv.low, 4), "ci_high": round(iv.high, 4)}

    return {"level": LEVEL, "pooled": {k: plain(v) for k, v in intervals["pooled"].items()}, "greenhouses": {gh: {k: plain(v) for k, v in d.items()} for gh, d in intervals["greenhouses"].items()}}


def plot_forecast_vs_actual(table: pd.DataFrame, variables: Sequence[str], path: str | Path, *, horizon_min: int = 15, hours: float = 48.0) -> Path:
    """PNG from a forecast table (:func:`forecast_table`): indoor temperature and humidity, actual
    vs forecast (made ``horizon_min`` earlier), its interval (shaded, when the table has edges)
    and persistence, for each greenhouse over the first ``hours`` of the window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    greenhouses = sorted(table["greenhouse_id"].unique())
    fig, axes = plt.subplots(len(variables), len(greenhouses), figsize=(7 * len(greenhouses), 3.2 * len(variables)), squeeze=False)
    for col, gh in enumerate(greenhouses):
        part = table[table["greenhouse_id"] == gh].sort_values("ts")
        part = part[part["ts"] <= part["ts"].min() + pd.Timedelta(hours=hours)]
        valid_at = part["ts"] + pd.Timedelta(minutes=horizon_min)
        for row, variable in enumerate(variables):
            ax = axes[row][col]
            ax.plot(valid_at, part[target_column(variable, horizon_min)], label="actual", color="black", linewidth=1.2)
            ax.plot(valid_at, part[forecast_key(variable, horizon_min)], label=f"forecast +{horizon_min} min", color="tab:orange", linewidth=1)
            if interval_key(variable, horizon_min, "low") in part.columns:
                low, high = (part[interval_key(variable, horizon_min, side)] for side in ("low", "high"))
                ax.fill_between(valid_at, low, high, color="tab:orange", alpha=0.2, linewidth=0, label="90 % interval")
            ax.plot(valid_at, part[variable], label="persistence", color="tab:blue", linewidth=0.8, alpha=0.6)
            ax.set_title(f"{gh}: {variable}")
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
