"""The forecasting model: one XGBoost booster per (target variable, horizon), predicting the change.

Each booster predicts ``target - current`` (so persistence is the zero prediction) from the
feature columns plus the *plan* columns of its horizon: the actuator settings over the horizon.
In training the plans are what actually happened; for control they are the candidate settings;
for a plain forecast they default to "keep the current settings".

Physics the model must respect, enforced with XGBoost monotone constraints on the temperature
boosters: more heating never lowers the forecast, and more ventilation never raises it while the
outside is colder (the ventilation term enters as ``plan_vent_pct * (outside - inside)``, which is
constrained non-decreasing, and ``plan_vent_pct`` alone is constrained non-increasing).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.contracts.vocabulary import ACTUATORS, TARGET_VARIABLES, forecast_key, plan_column, plan_columns, vent_exchange_column

MODEL_FORMAT_VERSION = 1


def monotone_constraints(variable: str, features: list[str], horizon_min: int) -> list[int]:
    """Per-feature monotone constraints (1 up, -1 down, 0 free) for one booster."""
    if variable != "air_temp_c":
        return [0] * len(features)
    rules = {plan_column("heat_pct", horizon_min): 1, "heat_pct": 1, vent_exchange_column(horizon_min): 1, plan_column("vent_pct", horizon_min): -1}
    return [rules.get(f, 0) for f in features]


def fill_plans(frame: pd.DataFrame, horizons_min: list[int], overrides: dict[str, float] | None = None) -> pd.DataFrame:
    """Add missing plan columns: the current actuator settings (or ``overrides``) held over each horizon."""
    out = frame.copy()
    for h in horizons_min:
        for a in ACTUATORS:
            col = plan_column(a, h)
            if overrides and a in overrides:
                out[col] = float(overrides[a])
            elif col not in out.columns:
                out[col] = out[a]
        out[vent_exchange_column(h)] = out[plan_column("vent_pct", h)] * (out["outside_temp_c"] - out["air_temp_c"]) / 100.0
    return out


@dataclass(frozen=True)
class _Layout:
    """Where each booster's inputs sit in an array with known column names (see :func:`_layout`)."""

    features: np.ndarray  # column indices of the feature columns
    plans: dict[int, np.ndarray]  # horizon -> column indices of its plan per actuator (or the actuator)
    outside: int
    air: int
    bases: dict[str, int]  # target variable -> its column (the current value)


@lru_cache(maxsize=64)
def _layout(columns: tuple[str, ...], feature_columns: tuple[str, ...], horizons_min: tuple[int, ...], variables: tuple[str, ...]) -> _Layout:
    """Column positions for :meth:`ForecastModel.predict_arrays`; a plan column that is missing
    falls back to the current actuator setting, as :func:`fill_plans` does."""
    index = {c: i for i, c in enumerate(columns)}
    if len(index) != len(columns):
        raise ValueError("duplicate column names")

    def at(col: str) -> int:
        if col not in index:
            raise KeyError(col)
        return index[col]

    plans = {}
    for h in horizons_min:
        plans[h] = np.array([index[plan_column(a, h)] if plan_column(a, h) in index else at(a) for a in ACTUATORS], dtype=np.intp)
    return _Layout(features=np.array([at(c) for c in feature_columns], dtype=np.intp), plans=plans, outside=at("outside_temp_c"), air=at("air_temp_c"), bases={v: at(v) for v in variables})


@dataclass
class ForecastModel:
    """Boosters keyed ``<variable>_<h>min`` and the columns they read."""

    boosters: dict[str, Any]
    feature_columns: list[str]
    horizons_min: list[int]
    variables: list[str] = field(default_factory=lambda: list(TARGET_VARIABLES))
    feature_set_id: str = ""
    # FeatureParams fields of the feature set (step, fill, spike, site): serving rebuilds the
    # features from raw readings exactly as preprocessing did.
    feature_params: dict[str, Any] = field(default_factory=dict)

    def features_for(self, variable: str, horizon_min: int) -> list[str]:
        """The input columns of the booster of ``variable`` at ``horizon_min``, in its order."""
        return list(self.feature_columns) + plan_columns([horizon_min])

    def input_columns(self) -> list[str]:
        """Every column :meth:`predict` may read (plans are optional)."""
        return list(self.feature_columns) + plan_columns(self.horizons_min)

    def output_keys(self) -> list[str]:
        """The forecast columns, ``<variable>_<h>min``, in output order."""
        return [forecast_key(variable, h) for variable in self.variables for h in self.horizons_min]

    def set_threads(self, nthread: int) -> None:
        """Threads XGBoost may use per prediction (1 suits small batches on a small machine)."""
        for booster in self.boosters.values():
            booster.set_param({"nthread": int(nthread)})

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Absolute forecasts, one column per ``<variable>_<h>min``, in the input's row order.

        Missing plan columns hold the current actuator settings (:func:`fill_plans`)."""
        needed = list(dict.fromkeys([*self.feature_columns, *self.variables, "outside_temp_c", "air_temp_c"]))
        for h in self.horizons_min:
            for a in ACTUATORS:
                needed.append(plan_column(a, h) if plan_column(a, h) in frame.columns else a)
        columns = list(dict.fromkeys(needed))
        values = self.predict_arrays(frame[columns].to_numpy(dtype=np.float64), columns)
        return pd.DataFrame(values, index=frame.index, columns=self.output_keys())

    def predict_arrays(self, X: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """:meth:`predict` without pandas: the same numbers for a float matrix with named columns.

        ``X`` is ``(rows, len(columns))``; it holds the feature columns, the target variables and
        ``outside_temp_c``, and any plan columns (a missing one holds the current actuator
        setting; the vent x temperature term is always derived). Returns a float64 array
        ``(rows, len(output_keys()))``. Each booster gets a float64 matrix in its feature order
        through ``inplace_predict`` (no DMatrix, no DataFrame)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(columns):
            raise ValueError(f"X has shape {X.shape}, expected (rows, {len(columns)})")
        layout = _layout(tuple(columns), tuple(self.feature_columns), tuple(self.horizons_min), tuple(self.variables))
        n, f = X.shape[0], len(layout.features)
        out = np.empty((n, len(self.variables) * len(self.horizons_min)), dtype=np.float64)
        if n == 0:
            return out
        dtemp = X[:, layout.outside] - X[:, layout.air]
        inputs = np.empty((n, f + len(ACTUATORS) + 1), dtype=np.float64)
        inputs[:, :f] = X[:, layout.features]
        vent = f + ACTUATORS.index("vent_pct")
        for j, h in enumerate(self.horizons_min):
            inputs[:, f : f + len(ACTUATORS)] = X[:, layout.plans[h]]  # the plan columns, model order
            inputs[:, -1] = inputs[:, vent] * dtemp / 100.0  # plan_vent_x_dtemp, as fill_plans computes it
            for i, variable in enumerate(self.variables):
                delta = self.boosters[forecast_key(variable, h)].inplace_predict(inputs)
                out[:, i * len(self.horizons_min) + j] = X[:, layout.bases[variable]] + delta
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the boosters (one JSON each) and ``model.json`` (columns, horizons, feature set)
        to ``directory``; return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for key, booster in self.boosters.items():
            booster.save_model(str(directory / f"{key}.json"))
        meta = {
            "format_version": MODEL_FORMAT_VERSION,
            "feature_columns": self.feature_columns,
            "horizons_min": self.horizons_min,
            "variables": self.variables,
            "feature_set_id": self.feature_set_id,
            "feature_params": self.feature_params,
            "boosters": sorted(self.boosters),
        }
        (directory / "model.json").write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ForecastModel:
        """The model :meth:`save` wrote to ``directory``."""
        import xgboost

        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        boosters = {}
        for key in meta["boosters"]:
            booster = xgboost.Booster()
            booster.load_model(str(directory / f"{key}.json"))
            boosters[key] = booster
        return cls(boosters, meta["feature_columns"], meta["horizons_min"], meta["variables"], meta.get("feature_set_id", ""), meta.get("feature_params", {}))


def load_saved_model(directory: str) -> ForecastModel:
    """The model :meth:`ForecastModel.save` wrote to ``directory``: the loader logged with the
    MLflow pyfunc (a module-level function, so it is pickled by reference, not by value)."""
    return ForecastModel.load(directory)
