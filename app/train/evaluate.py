"""Validation metrics and plots: RMSE/MAE per target and horizon, against persistence on the same rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.contracts.vocabulary import forecast_key, target_column
from app.train.model import ForecastModel


def evaluate(model: ForecastModel, validation: pd.DataFrame) -> dict[str, float]:
    """Metrics named ``<metric>_<variable>_<h>min``: rmse, mae, persistence_rmse, persistence_mae,
    skill (1 - rmse / persistence_rmse; 0.3 = 30 % lower RMSE than persistence)."""
    forecast = model.predict(validation)
    metrics: dict[str, float] = {}
    for variable in model.variables:
        for h in model.horizons_min:
            key = forecast_key(variable, h)
            actual = validation[target_column(variable, h)].to_numpy(dtype=np.float64)
            err = forecast[key].to_numpy() - actual
            persist = validation[variable].to_numpy(dtype=np.float64) - actual
            rmse = float(np.sqrt(np.mean(err**2)))
            p_rmse = float(np.sqrt(np.mean(persist**2)))
            metrics[f"rmse_{key}"] = rmse
            metrics[f"mae_{key}"] = float(np.mean(np.abs(err)))
            metrics[f"persistence_rmse_{key}"] = p_rmse
            metrics[f"persistence_mae_{key}"] = float(np.mean(np.abs(persist)))
            metrics[f"skill_{key}"] = 1.0 - rmse / p_rmse if p_rmse > 0 else 0.0
    metrics["validation_rows"] = float(len(validation))
    return metrics


def plot_forecast_vs_actual(model: ForecastModel, validation: pd.DataFrame, path: str | Path, *, horizon_min: int = 15, hours: float = 48.0) -> Path:
    """PNG: indoor temperature and humidity, actual vs forecast (made ``horizon_min`` earlier) and
    persistence, for each greenhouse over the first ``hours`` of the validation window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    greenhouses = sorted(validation["greenhouse_id"].unique())
    fig, axes = plt.subplots(len(model.variables), len(greenhouses), figsize=(7 * len(greenhouses), 3.2 * len(model.variables)), squeeze=False)
    forecast = model.predict(validation)
    for col, gh in enumerate(greenhouses):
        rows = validation["greenhouse_id"] == gh
        part = validation[rows].sort_values("ts")
        part = part[part["ts"] <= part["ts"].min() + pd.Timedelta(hours=hours)]
        for row, variable in enumerate(model.variables):
            ax = axes[row][col]
            valid_at = part["ts"] + pd.Timedelta(minutes=horizon_min)
            ax.plot(valid_at, part[target_column(variable, horizon_min)], label="actual", color="black", linewidth=1.2)
            ax.plot(valid_at, forecast.loc[part.index, forecast_key(variable, horizon_min)], label=f"forecast +{horizon_min} min", color="tab:orange", linewidth=1)
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
