"""The forecasting model: one XGBoost booster per (target variable, horizon), predicting the change.

Each booster predicts ``target - current`` (so persistence is the zero prediction) from the
feature columns plus the *plan* columns of its horizon: the actuator settings over the horizon.
Under each booster lies a linear physics prior (:mod:`app.train.prior`, the booster's base
margin): the booster learns what the heat and vapour balance misses, and the forecast
extrapolates to weather and greenhouses the trees never saw as the balance does. Models may also
carry *interval edges* per forecast (a quantile booster for the 5 % and 95 % quantiles, widened by
a conformal correction measured on the validation window): :meth:`ForecastModel.predict_arrays`
returns them after the forecasts when asked.
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

from app.contracts.vocabulary import ACTUATORS, INTERVAL_SIDES, TARGET_VARIABLES, forecast_key, interval_key, plan_column, plan_columns, vent_exchange_column
from app.train.prior import PhysicsPrior

MODEL_FORMAT_VERSION = 2
"""2: the physics prior and interval edges (a model of format 1 has neither and still loads)."""


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
    prior: PhysicsPrior = field(default_factory=PhysicsPrior)
    """The linear physics prior under the boosters (empty: the boosters alone, as in format 1)."""
    edge_boosters: dict[str, Any] = field(default_factory=dict)
    """Per forecast key, a booster of the change's 5 % and 95 % quantiles (two outputs)."""
    edge_widening: dict[str, float] = field(default_factory=dict)
    """Per forecast key, how far each edge moves out (units of the variable; the conformal
    correction from the validation window, see :func:`app.train.fit.calibrate_intervals`)."""

    def features_for(self, variable: str, horizon_min: int) -> list[str]:
        """The input columns of the booster of ``variable`` at ``horizon_min``, in its order."""
        return list(self.feature_columns) + plan_columns([horizon_min])

    def input_columns(self) -> list[str]:
        """Every column :meth:`predict` may read (plans are optional)."""
        return list(self.feature_columns) + plan_columns(self.horizons_min)

    def output_keys(self) -> list[str]:
        """The forecast columns, ``<variable>_<h>min``, in output order."""
        return [forecast_key(variable, h) for variable in self.variables for h in self.horizons_min]

    def interval_keys(self) -> list[str]:
        """The interval edges' names, ``<variable>_<h>min_low`` / ``_high``, in the order
        :meth:`predict_arrays` returns them with ``intervals``: per forecast key with an edge
        booster (in :meth:`output_keys` order), low then high."""
        return [interval_key(v, h, side) for v in self.variables for h in self.horizons_min if forecast_key(v, h) in self.edge_boosters for side in INTERVAL_SIDES]

    def set_threads(self, nthread: int) -> None:
        """Threads XGBoost may use per prediction (1 suits small batches on a small machine)."""
        for booster in (*self.boosters.values(), *self.edge_boosters.values()):
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

    def predict_arrays(self, X: np.ndarray, columns: Sequence[str], *, intervals: bool = False) -> np.ndarray:
        """:meth:`predict` without pandas: the same numbers for a float matrix with named columns.

        ``X`` is ``(rows, len(columns))``; it holds the feature columns, the target variables and
        ``outside_temp_c``, and any plan columns (a missing one holds the current actuator
        setting; the vent x temperature term is always derived). Returns a float64 array
        ``(rows, len(output_keys()))``, and with ``intervals`` the edges after them
        (``interval_keys()`` order). Each booster gets a float64 matrix in its feature order
        through ``inplace_predict`` (no DMatrix, no DataFrame), its prior as the base margin."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(columns):
            raise ValueError(f"X has shape {X.shape}, expected (rows, {len(columns)})")
        layout = _layout(tuple(columns), tuple(self.feature_columns), tuple(self.horizons_min), tuple(self.variables))
        edges = self.interval_keys() if intervals else []
        n, f = X.shape[0], len(layout.features)
        out = np.empty((n, len(self.output_keys()) + len(edges)), dtype=np.float64)
        if n == 0:
            return out
        dtemp = X[:, layout.outside] - X[:, layout.air]
        inputs = np.empty((n, f + len(ACTUATORS) + 1), dtype=np.float64)
        inputs[:, :f] = X[:, layout.features]
        named = {c: inputs[:, i] for i, c in enumerate(self.feature_columns)} if self.prior.weights else {}
        vent = f + ACTUATORS.index("vent_pct")
        edge_at = {k: len(self.output_keys()) + 2 * i for i, k in enumerate(dict.fromkeys(e.rsplit("_", 1)[0] for e in edges))}
        for j, h in enumerate(self.horizons_min):
            inputs[:, f : f + len(ACTUATORS)] = X[:, layout.plans[h]]  # the plan columns, model order
            inputs[:, -1] = inputs[:, vent] * dtemp / 100.0  # plan_vent_x_dtemp, as fill_plans computes it
            columns_h = {**named, **{plan_column(a, h): inputs[:, f + i] for i, a in enumerate(ACTUATORS)}} if named else {}
            for i, variable in enumerate(self.variables):
                key = forecast_key(variable, h)
                base = X[:, layout.bases[variable]]
                margin = self.prior.change(variable, h, columns_h) if key in self.prior.weights else None
                out[:, i * len(self.horizons_min) + j] = base + _predict(self.boosters[key], inputs, margin)
                if key in edge_at:
                    both = _predict(self.edge_boosters[key], inputs, None if margin is None else np.column_stack([margin, margin]))
                    widen = float(self.edge_widening.get(key, 0.0))
                    out[:, edge_at[key]] = base + np.minimum(both[:, 0], both[:, 1]) - widen
                    out[:, edge_at[key] + 1] = base + np.maximum(both[:, 0], both[:, 1]) + widen
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the boosters (one JSON each) and ``model.json`` (columns, horizons, feature set)
        to ``directory``; return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for key, booster in self.boosters.items():
            booster.save_model(str(directory / f"{key}.json"))
        for key, booster in self.edge_boosters.items():
            booster.save_model(str(directory / f"{key}_edges.json"))
        meta = {
            "format_version": MODEL_FORMAT_VERSION,
            "feature_columns": self.feature_columns,
            "horizons_min": self.horizons_min,
            "variables": self.variables,
            "feature_set_id": self.feature_set_id,
            "feature_params": self.feature_params,
            "boosters": sorted(self.boosters),
            "prior": self.prior.to_json(),
            "edge_boosters": sorted(self.edge_boosters),
            "edge_widening": self.edge_widening,
        }
        (directory / "model.json").write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ForecastModel:
        """The model :meth:`save` wrote to ``directory``."""
        import xgboost

        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())

        def booster(name: str) -> Any:
            loaded = xgboost.Booster()
            loaded.load_model(str(directory / f"{name}.json"))
            return loaded

        return cls(
            {key: booster(key) for key in meta["boosters"]},
            meta["feature_columns"],
            meta["horizons_min"],
            meta["variables"],
            meta.get("feature_set_id", ""),
            meta.get("feature_params", {}),
            PhysicsPrior.from_json(meta.get("prior")),
            {key: booster(f"{key}_edges") for key in meta.get("edge_boosters", [])},
            {k: float(v) for k, v in meta.get("edge_widening", {}).items()},
        )


def _predict(booster: Any, inputs: np.ndarray, margin: np.ndarray | None) -> np.ndarray:
    """A booster's raw output for ``inputs``: on top of ``margin`` when it was trained on one
    (the prior), else on its own base score."""
    return booster.inplace_predict(inputs) if margin is None else booster.inplace_predict(inputs, base_margin=margin)


def load_saved_model(directory: str) -> ForecastModel:
    """The model :meth:`ForecastModel.save` wrote to ``directory``: the loader logged with the
    MLflow pyfunc (a module-level function, so it is pickled by reference, not by value)."""
    return ForecastModel.load(directory)
