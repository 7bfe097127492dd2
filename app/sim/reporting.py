"""What a real site sends: a reporting profile applied to the simulated fleet's readings.

The fleet (:mod:`app.sim.fleet`) has every device report at every step, on the step's exact time,
with every measurement. Real sites do not, and the feature engine must cope with that. A
:class:`ReportingProfile` turns the fleet's readings into what a site sends:

- cadence: a device reports once every ``cadence_s``, at the nominal times ``phase_s + k *
  cadence_s`` seconds after the UTC epoch; the fleet's readings at other times are not sent (the
  fleet's step must divide the cadence and the phase: :func:`iter_reports` checks it);
- jitter: a report's timestamp is its nominal time moved by up to ``jitter_s`` either way
  (device clocks, sampling and scheduling);
- drops: a share ``drop_share`` of reports is lost, each on its own;
- outages: the whole site sends nothing during the ``outages`` spans, and on each UTC day, with
  chance ``daily_outage_share``, for ``daily_outage_s`` from a random time of that day;
- absent equipment: the measurement names in ``absent`` (a sensor or actuator the site lacks) are
  removed from every reading, and a reading left with none is not sent.

Pure and seeded: whether a reading is sent, and its timestamp, depend only on the profile, the
reading's device and its nominal time (and the greenhouse and day for outages), never on the order
or the batches in which readings are passed, so a profile gives the same site whatever the fleet
size or the chunking. Readings are the fleet's dicts (wire contract); they are copied, never
changed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from app.contracts.reading import MEASUREMENT_NAMES
from app.sim.fleet import format_ts

if TYPE_CHECKING:
    from app.sim.fleet import FleetSimulator

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class ReportingProfile:
    """How one site reports (module docstring); the default sends every reading unchanged."""

    cadence_s: float = 60.0
    phase_s: float = 0.0
    """Offset of the nominal report times from whole multiples of ``cadence_s`` (UTC)."""
    jitter_s: float = 0.0
    """Largest shift of a timestamp from its nominal time, either way (uniform); under half the cadence."""
    drop_share: float = 0.0
    """Chance that a report is lost."""
    outages: tuple[tuple[datetime, datetime], ...] = ()
    """Spans ``[start, end)`` (aware) in which the site sends nothing."""
    daily_outage_share: float = 0.0
    """Chance, per UTC day, of one more outage of ``daily_outage_s`` starting at a random time of that day."""
    daily_outage_s: float = 0.0
    absent: frozenset[str] = field(default_factory=frozenset)
    """Measurement names the site does not have (e.g. ``par_umol_m2_s``, ``screen_pct``)."""
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "absent", frozenset(self.absent))
        if not (math.isfinite(self.cadence_s) and self.cadence_s > 0):
            raise ValueError(f"cadence_s must be a positive number (got {self.cadence_s!r})")
        if not 0 <= self.jitter_s < self.cadence_s / 2:
            raise ValueError(f"jitter_s must be within 0 and half the cadence, so that a device's reports keep their order (got {self.jitter_s!r})")
        for name in ("drop_share", "daily_outage_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be within 0 (included) and 1 (got {getattr(self, name)!r})")
        if not 0 <= self.daily_outage_s <= 86_400:
            raise ValueError(f"daily_outage_s must be within 0 and a day (got {self.daily_outage_s!r})")
        if any(start.tzinfo is None or end <= start for start, end in self.outages):
            raise ValueError("outages must be (start, end) pairs of aware times with start < end")
        unknown = sorted(self.absent - set(MEASUREMENT_NAMES))
        if unknown:
            raise ValueError(f"absent names no known measurement: {', '.join(unknown)}")

    def sent(self, reading: dict[str, Any]) -> dict[str, Any] | None:
        """The reading as the site sends it (a copy: its timestamp jittered, absent measurements
        removed), or ``None`` when the site does not send it (off cadence, dropped, in an outage,
        nothing left to send)."""
        nominal_ms = _epoch_ms(reading["ts"])
        if not self.on_cadence(nominal_ms) or self.in_outage(str(reading["greenhouse_id"]), nominal_ms):
            return None
        measurements = {k: v for k, v in reading["measurements"].items() if k not in self.absent}
        drop_u, jitter_u = _uniforms(f"report:{self.seed}:{reading['device_id']}:{nominal_ms}")
        if not measurements or drop_u < self.drop_share:
            return None
        ts = _EPOCH + timedelta(milliseconds=nominal_ms + round((2 * jitter_u - 1) * self.jitter_s * 1000))
        return {**reading, "ts": format_ts(ts), "measurements": measurements}

    def apply(self, readings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The readings the site sends, of ``readings`` (in their order): :meth:`sent` of each."""
        return [out for out in map(self.sent, readings) if out is not None]

    def on_cadence(self, nominal_ms: int) -> bool:
        """Whether a device reports at ``nominal_ms`` (milliseconds since the epoch)."""
        cadence_ms = round(self.cadence_s * 1000)
        return (nominal_ms - round(self.phase_s * 1000)) % cadence_ms == 0

    def in_outage(self, greenhouse_id: str, nominal_ms: int) -> bool:
        """Whether the site of ``greenhouse_id`` is silent at ``nominal_ms``: in one of
        :attr:`outages`, or in the random outage of that day or the day before (which may run
        past midnight)."""
        when = _EPOCH + timedelta(milliseconds=nominal_ms)
        if any(start <= when < end for start, end in self.outages):
            return True
        day = nominal_ms // _DAY_MS
        return any(start_ms <= nominal_ms < start_ms + self.daily_outage_s * 1000 for start_ms in self._daily_outage_starts_ms(greenhouse_id, (day - 1, day)))

    def _daily_outage_starts_ms(self, greenhouse_id: str, days: Iterable[int]) -> list[int]:
        if self.daily_outage_share <= 0 or self.daily_outage_s <= 0:
            return []
        starts = []
        for day in days:
            happens_u, start_u = _uniforms(f"outage:{self.seed}:{greenhouse_id}:{day}")
            if happens_u < self.daily_outage_share:
                starts.append(day * _DAY_MS + int(start_u * _DAY_MS))
        return starts


def iter_reports(fleet: FleetSimulator, profile: ReportingProfile, duration_s: float) -> Iterator[list[dict[str, Any]]]:
    """Step ``fleet`` for ``duration_s`` (as :meth:`~app.sim.fleet.FleetSimulator.iter_steps`) and
    yield what the site sends at each step (often nothing). Raises ``ValueError`` when the fleet's
    step does not divide the profile's cadence and phase (some reports would never fall on a step)."""
    for name in ("cadence_s", "phase_s"):
        steps = getattr(profile, name) / fleet.step_s
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"the fleet steps every {fleet.step_s:g} s: the profile's {name} ({getattr(profile, name):g} s) must be a whole number of steps")
    for readings in fleet.iter_steps(duration_s):
        yield profile.apply(readings)


def _epoch_ms(ts: Any) -> int:
    """Milliseconds since the epoch of a reading's ``ts`` (RFC 3339 text, an aware datetime or epoch ms)."""
    if isinstance(ts, int | float):
        return int(ts)
    when = ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
    return (when - _EPOCH) // timedelta(milliseconds=1)


def _uniforms(key: str) -> tuple[float, float]:
    """Two independent uniform numbers in [0, 1) derived from ``key`` alone (a hash: no state)."""
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big") / 2**64
