"""Forecast skill on simulated greenhouses, in one process: readings -> features -> three windows
-> the model jobs.train makes (app.train.fit.fit_local) -> figures on the untouched test window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from app.preprocess.cadence import choose_step_s, device_intervals_s, usable_horizons
from app.preprocess.features import FeatureParams, feature_columns, greenhouse_features
from app.preprocess.raw import RawColumns
from app.train.evaluate import evaluate
from app.train.fit import fit_local
from app.train.model import ForecastModel
from app.train.trainer import BoosterParams

HORIZONS_MIN = (5, 15, 30, 60)


@dataclass
class Windows:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    step_s: int


def feature_windows(raw: pd.DataFrame, start: datetime, train_days: float, validation_days: float) -> Windows:
    """Features of every greenhouse in ``raw`` on the grid its devices need, split by time: the
    first ``train_days`` from ``start``, then ``validation_days``, then the rest (rows whose
    horizon crosses a cut-off left out, as the preprocess job does)."""
    step_s = choose_step_s(i for _, g in raw.groupby("greenhouse_id") for i in device_intervals_s(RawColumns.from_frame(g)))
    params = FeatureParams(step_s=step_s, horizons_min=usable_horizons(HORIZONS_MIN, step_s))
    frame = pd.concat([greenhouse_features(g, params) for _, g in raw.groupby("greenhouse_id")], ignore_index=True)
    cut1 = pd.Timestamp(start) + pd.Timedelta(days=train_days)
    cut2 = cut1 + pd.Timedelta(days=validation_days)
    horizon = pd.Timedelta(minutes=max(params.horizons_min))
    ts = frame["ts"]
    return Windows(frame[ts + horizon < cut1], frame[(ts >= cut1) & (ts + horizon < cut2)], frame[ts >= cut2], step_s)


def fitted(windows: Windows, params: BoosterParams | None = None) -> ForecastModel:
    horizons = sorted({int(c.rsplit("_", 1)[1].removesuffix("min")) for c in windows.train.columns if c.startswith("target_air_temp_c_")})
    return fit_local(windows.train, windows.validation, feature_columns(), horizons, params, nthread=2)


def score_test_window(windows: Windows, model: ForecastModel) -> dict[str, float]:
    """The figures of :func:`app.train.evaluate.evaluate` (skill, coverage, interval width) on the test window."""
    return evaluate(model, windows.test)
