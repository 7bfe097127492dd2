"""The season weeks of the TMY3 year, and the windows before each.

The weather is the TMY3 year of Greensboro, NC (:mod:`app.sim.weather`); its clock is local
standard time, UTC-5, so a local day starts at 05:00 UTC. The weeks:

- winter: 15-21 January (outside mean 2.4 C, -10.0..15.0 C; heating all day and night);
- spring: 15-21 April (mean 13.1 C, -0.6..23.9 C, sunny: heating at night, venting by day);
- summer: 15-21 July (mean 25.9 C, 19.4..33.9 C: vents and shade matter more than heating).

Before each evaluation week lie its *tuning* week (the seven days before it: the thermostat's sweep
runs there) and its *training* days (the model is fitted on the training fleet's readings of the
``training_days`` before the week; the last ``validation_days`` of them stop the boosters early and
size the intervals). The evaluation days themselves are seen by neither.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

LOCAL_MIDNIGHT_UTC_HOUR = 5
"""The TMY3 site keeps UTC-5: its local midnight is 05:00 UTC."""


@dataclass(frozen=True)
class SeasonWeek:
    """An evaluation window of ``days`` from ``start`` (UTC, a local midnight)."""

    name: str
    start: datetime
    days: float = 7.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if not self.days > 0:
            raise ValueError("days must be positive")

    @property
    def end(self) -> datetime:
        """The end of the evaluation window."""
        return self.start + timedelta(days=self.days)

    def tuning_start(self, tuning_days: float | None = None) -> datetime:
        """The start of the tuning window: ``tuning_days`` (default: ``days``) before ``start``;
        it ends where the evaluation begins."""
        return self.start - timedelta(days=self.days if tuning_days is None else tuning_days)

    def training_start(self, training_days: float) -> datetime:
        """The start of the training window: ``training_days`` before ``start``."""
        return self.start - timedelta(days=training_days)

    def shortened(self, days: float) -> SeasonWeek:
        """The same week's first ``days`` (quick runs)."""
        return replace(self, days=days)


def _local_midnight(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day, LOCAL_MIDNIGHT_UTC_HOUR, tzinfo=timezone.utc)


SEASON_WEEKS: dict[str, SeasonWeek] = {
    "winter": SeasonWeek("winter", _local_midnight(1, 15)),
    "spring": SeasonWeek("spring", _local_midnight(4, 15)),
    "summer": SeasonWeek("summer", _local_midnight(7, 15)),
}
"""The three evaluation weeks, by name (a non-leap year: the TMY maps by month and day)."""


def season_weeks(names: list[str] | tuple[str, ...], days: float = 7.0) -> list[SeasonWeek]:
    """The weeks named (``KeyError`` for an unknown one), each cut to ``days``."""
    unknown = [n for n in names if n not in SEASON_WEEKS]
    if unknown:
        raise KeyError(f"unknown season(s) {unknown}; known: {', '.join(SEASON_WEEKS)}")
    return [SEASON_WEEKS[n].shortened(days) for n in names]
