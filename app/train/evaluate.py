"""Evaluation on a window: RMSE/MAE per target and horizon against persistence on the same rows,
interval coverage, bootstrap intervals of the skill (pooled and per greenhouse), and the plot.

Training evaluates twice: on the validation window (which early stopping and the search saw, so
its figures are optimistic) and, last, on the untouched test window (the honest figures, the
unprefixed metric names).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.contracts.vocabulary import forecast_key, horizon_of, interval_key, target_column, variable_of
from app.train.bootstrap import LEVEL, HourlyErrors, Interval, hourly_errors, skill_interval
from app.train.model import ForecastModel, fill_plans

PRIMARY_KEY = "air_temp_c_15min"


def window_forecasts(model: ForecastModel, window: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The model's forecasts (and interval edges, when it has them) for every row of a window,
    and their names (``output_keys() + interval_keys()``)."""
    frame = fill_plans(window, model.horizons_min)
    columns = list(dict.fromkeys([*model.input_columns(), *model.variables, "outside_temp_c", "air_temp_c"]))
    return model.predict_arrays(frame[columns].to_numpy(dtype=np.float64), columns, intervals=True), model.output_keys() + model.interval_keys()


def errors_of(model: ForecastModel, window: pd.DataFrame, key: str, forecasts: tuple[np.ndarray, list[str]] | None = None) -> HourlyErrors:
    """The squared errors of forecast ``key`` and of persistence on the window, per greenhouse
    and hour (for bootstrap intervals, :mod:`app.train.bootstrap`)."""
    out, names = forecasts or window_forecasts(model, window)
    actual = window[target_column(variable_of(key), horizon_of(key))].to_numpy(dtype=np.float64)
    ts_s = ((pd.to_datetime(window["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy()
    return hourly_errors(ts_s, window["greenhouse_id"].to_numpy(), out[:, names.index(key)] - actual, window[variable_of(key)].to_numpy(dtype=np.float64) - actual)


def evaluate(model: ForecastModel, window: pd.DataFrame) -> dict[str, float]:
    """Metrics named ``<metric>_<variable>_<h>min``: rmse, mae, persistence_rmse, persistence_mae,
    skill (1 - rmse / persistence_rmse; 0.3 = 30 % lower RMSE than persistence), and for a model
    with interval edges coverage (the share of outcomes inside them; nominal 0.9) and
    interval_width (median, the variable's units); ``rows`` counts the window's rows."""
    out, names = window_forecasts(model, window)
    metrics: dict[str, float] = {}
    for variable in model.variables:
        for h in model.horizons_min:
            key = forecast_key(variable, h)
            actual = window[target_column(variable, h)].to_numpy(dtype=np.float64)
            err = out[:, names.index(key)] - actual
            persist = window[variable].to_numpy(dtype=np.float64) - actual
            rmse = float(np.sqrt(np.mean(err**2)))
            p_rmse = float(np.sqrt(np.mean(persist**2)))
            metrics[f"rmse_{key}"] = rmse
            metrics[f"mae_{key}"] = float(np.mean(np.abs(err)))
            metrics[f"persistence_rmse_{key}"] = p_rmse
            metrics[f"persistence_mae_{key}"] = float(np.mean(np.abs(persist)))
            metrics[f"skill_{key}"] = 1.0 - rmse / p_rmse if p_rmse > 0 else 0.0
            if interval_key(variable, h, "low") in names:
                low, high = out[:, names.index(interval_key(variable, h, "low"))], out[:, names.index(interval_key(variable, h, "high"))]
                metrics[f"coverage_{key}"] = float(np.mean((actual >= low) & (actual <= high)))
                metrics[f"interval_width_{key}"] = float(np.median(high - low))
    metrics["rows"] = float(len(window))
    return metrics


def skill_intervals(model: ForecastModel, window: pd.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """Bootstrap intervals of every forecast's skill on the window: pooled
    (``{"pooled": {key: Interval}}``) and per greenhouse (``{"greenhouses": {id: {key: Interval}}}``)."""
    forecasts = window_forecasts(model, window)
    pooled: dict[str, Interval] = {}
    per_greenhouse: dict[str, dict[str, Interval]] = {}
    for key in model.output_keys():
        errors = errors_of(model, window, key, forecasts)
        pooled[key] = skill_interval(errors, seed=seed)
        for gh in errors.greenhouses:
            per_greenhouse.setdefault(gh, {})[key] = skill_interval(errors.only(gh), seed=seed)
    return {"pooled": pooled, "greenhouses": per_greenhouse}


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


def plot_forecast_vs_actual(model: ForecastModel, window: pd.DataFrame, path: str | Path, *, horizon_min: int = 15, hours: float = 48.0) -> Path:
    """PNG: indoor temperature and humidity, actual vs forecast (made ``horizon_min`` earlier),
    its interval (shaded, when the model has edges) and persistence, for each greenhouse over the
    first ``hours`` of the window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    greenhouses = sorted(window["greenhouse_id"].unique())
    fig, axes = plt.subplots(len(model.variables), len(greenhouses), figsize=(7 * len(greenhouses), 3.2 * len(model.variables)), squeeze=False)
    out, names = window_forecasts(model, window)
    for col, gh in enumerate(greenhouses):
        part = window[window["greenhouse_id"] == gh].sort_values("ts")
        part = part[part["ts"] <= part["ts"].min() + pd.Timedelta(hours=hours)]
        rows = window.index.get_indexer(part.index)
        valid_at = part["ts"] + pd.Timedelta(minutes=horizon_min)
        for row, variable in enumerate(model.variables):
            ax = axes[row][col]
            ax.plot(valid_at, part[target_column(variable, horizon_min)], label="actual", color="black", linewidth=1.2)
            ax.plot(valid_at, out[rows, names.index(forecast_key(variable, horizon_min))], label=f"forecast +{horizon_min} min", color="tab:orange", linewidth=1)
            if interval_key(variable, horizon_min, "low") in names:
                low, high = (out[rows, names.index(interval_key(variable, horizon_min, side))] for side in ("low", "high"))
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
