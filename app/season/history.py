"""The training fleet's history before a season week, as the model's training rows.

The training fleet is ``greenhouses`` seeded greenhouses (:class:`~app.sim.fleet.FleetSimulator`,
parameters varied by :func:`~app.sim.fleet.vary_params`) under their local climate computers,
whose seeded excitation makes each actuator's effect identifiable. They run the
``training_days`` before the week (after ``warmup_h`` hours not recorded, so the rows start from
a settled greenhouse); the feature engine turns each greenhouse's readings into rows
(:func:`~app.preprocess.features.greenhouse_features`), and the last ``validation_days`` of rows
(by time, every greenhouse) are the validation window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from app.preprocess.features import FeatureParams, greenhouse_features
from app.season.weeks import SeasonWeek
from app.season.window import ReadingLog

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class HistorySpec:
    """What the training fleet is and how long it runs before the week."""

    greenhouses: int = 4
    seed: int = 11
    training_days: float = 14.0
    validation_days: float = 2.0
    warmup_h: float = 6.0
    step_s: int = 60


def training_rows(week: SeasonWeek, spec: HistorySpec, params: FeatureParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and validation rows (features, plans, targets) of the training fleet over the
    ``spec.training_days`` before ``week``."""
    import pandas as pd

    from app.sim.fleet import FleetSimulator

    start = week.training_start(spec.training_days)
    fleet = FleetSimulator(spec.greenhouses, start - timedelta(hours=spec.warmup_h), step_s=spec.step_s, seed=spec.seed)
    logs = {gh: ReadingLog(gh, keep_min=None) for gh in fleet.greenhouse_ids}
    warmup_steps = math.ceil(spec.warmup_h * 3600 / spec.step_s)
    total_steps = warmup_steps + math.ceil(spec.training_days * 86_400 / spec.step_s)
    for step in range(total_steps):
        readings = fleet.step()
        if step >= warmup_steps:
            for log in logs.values():
                log.add(readings, fleet.now)
    rows = pd.concat([greenhouse_features(log.frame(), params) for log in logs.values()], ignore_index=True)
    cut = pd.Timestamp(week.start - timedelta(days=spec.validation_days))
    return rows[rows["ts"] < cut].reset_index(drop=True), rows[rows["ts"] >= cut].reset_index(drop=True)
