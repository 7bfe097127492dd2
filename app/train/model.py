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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGET_VARIABLES = ("air_temp_c", "rh_pct")
ACTUATORS = ("vent_pct", "heat_pct", "screen_pct")
MODEL_FORMAT_VERSION = 1


def plan_columns(horizon_min: int) -> list[str]:
    """The plan columns of one horizon, in model order."""
    return [f"plan_{a}_{horizon_min}min" for a in ACTUATORS] + [f"plan_vent_x_dtemp_{horizon_min}min"]


def key_for(variable: str, horizon_min: int) -> str:
    return f"{variable}_{horizon_min}min"


def monotone_constraints(variable: str, features: list[str], horizon_min: int) -> list[int]:
    """Per-feature monotone constraints (1 up, -1 down, 0 free) for one booster."""
    if variable != "air_temp_c":
        return [0] * len(features)
    rules = {
        f"plan_heat_pct_{horizon_min}min": 1,
        "heat_pct": 1,
        f"plan_vent_x_dtemp_{horizon_min}min": 1,
        f"plan_vent_pct_{horizon_min}min": -1,
    }
    return [rules.get(f, 0) for f in features]


def fill_plans(frame: pd.DataFrame, horizons_min: list[int], overrides: dict[str, float] | None = None) -> pd.DataFrame:
    """Add missing plan columns: the current actuator settings (or ``overrides``) held over each horizon."""
    out = frame.copy()
    for h in horizons_min:
        for a in ACTUATORS:
            col = f"plan_{a}_{h}min"
            if overrides and a in overrides:
                out[col] = float(overrides[a])
            elif col not in out.columns:
                out[col] = out[a]
        out[f"plan_vent_x_dtemp_{h}min"] = out[f"plan_vent_pct_{h}min"] * (out["outside_temp_c"] - out["air_temp_c"]) / 100.0
    return out


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
        return list(self.feature_columns) + plan_columns(horizon_min)

    def input_columns(self) -> list[str]:
        """Every column :meth:`predict` may read (plans are optional)."""
        cols = list(self.feature_columns)
        for h in self.horizons_min:
            cols += plan_columns(h)
        return cols

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Absolute forecasts, one column per ``<variable>_<h>min``, in the input's row order."""
        import xgboost

        frame = fill_plans(frame, self.horizons_min)
        out = pd.DataFrame(index=frame.index)
        for variable in self.variables:
            for h in self.horizons_min:
                cols = self.features_for(variable, h)
                delta = self.boosters[key_for(variable, h)].predict(xgboost.DMatrix(frame[cols].astype(np.float64), feature_names=cols))
                out[key_for(variable, h)] = frame[variable].to_numpy(dtype=np.float64) + delta
        return out

    def save(self, directory: str | Path) -> Path:
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
    def load(cls, directory: str | Path) -> "ForecastModel":
        import xgboost

        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        boosters = {}
        for key in meta["boosters"]:
            booster = xgboost.Booster()
            booster.load_model(str(directory / f"{key}.json"))
            boosters[key] = booster
        return cls(boosters, meta["feature_columns"], meta["horizons_min"], meta["variables"], meta.get("feature_set_id", ""), meta.get("feature_params", {}))
