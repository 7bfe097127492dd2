"""Readiness of a serving replica: whether the bus, the metadata store and the model answer, and if
not, which one does not and since when.

Both apps answer two probes. ``GET /healthz`` is liveness: 200 as long as the process runs; it
shows the dependencies as last checked but never waits for a check (a liveness probe that waited
on a hung Kafka would get the pod restarted, which does not bring Kafka back). ``GET /readyz`` is
readiness: 200 when every dependency answered its last check, else 503 with the verdict
``{"ready": false, "dependencies": {"bus": {"ok", "since", "reason", "checked_at"}, ...}}``, so
that a load balancer or Kubernetes stops sending traffic the replica cannot serve.

Dependency outages are deliberately not Ray Serve's ``check_health``: a failing ``check_health``
makes Serve kill and restart the replica, and a restart does not fix Kafka, MongoDB or MLflow; it
only throws away the replica's state (the followed window, loaded models) and adds a cold start
once the dependency is back.

A check is an async call that returns when its dependency answers and raises when it does not.
:class:`Unavailable` carries a short reason to report as is; any other exception is reported by
its type only, since exception text can carry URLs, hosts or data (the text goes to the replica's
log, redacted). Checks are cached for ``ttl_s`` (a probe hammering ``/readyz`` must not hammer
Kafka) and bounded by ``timeout_s`` (a hung dependency reports "no answer" instead of hanging the
probe). A check still running from before is waited on, never started again, so a hung dependency
ties up at most one thread.

:func:`advance` and :func:`verdict` are the policy (pure); :class:`Readiness` runs the checks;
:func:`bus_check`, :func:`store_check` and :func:`model_check` are the checks of the bus, the
metadata store and the control app's model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from app.bus import Bus
from app.metadata import Collection as MetadataCollection
from app.security.redact import redact

if TYPE_CHECKING:
    from app.serve.serving_models import ServingModels

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]
"""Returns when the dependency answers; raises (or does not return in time) when it does not."""

DEFAULT_TTL_S = 5.0
DEFAULT_TIMEOUT_S = 2.0
MAX_REASON_CHARS = 120
PROBE_ID = "readiness-probe"  # the _id the metadata check looks up (whether it exists does not matter)
PROBE_GREENHOUSE = "readiness-probe"  # routed like any greenhouse without a model of its own


class Unavailable(Exception):
    """Raised by a check: the dependency answered but cannot serve; the message is the reason
    reported (short, nothing secret)."""


@dataclass(frozen=True)
class DependencyState:
    """One dependency as its last check found it. ``since``: when the current outage began (the
    first of the failed checks in a row), ``None`` while it answers."""

    ok: bool
    reason: str | None
    since: datetime | None
    checked_at: datetime


def advance(previous: DependencyState | None, failure: str | None, now: datetime) -> DependencyState:
    """The state after a check at ``now`` that failed for ``failure`` (``None``: it answered): a
    failure after failures keeps their ``since``, an answer clears it."""
    if failure is None:
        return DependencyState(True, None, None, now)
    since = previous.since if previous is not None and not previous.ok else now
    return DependencyState(False, failure, since, now)


def failure_reason(exc: BaseException) -> str:
    """What to report for a check that raised ``exc``: an :class:`Unavailable`'s own reason, else
    only the exception's type."""
    if isinstance(exc, Unavailable):
        return str(exc)[:MAX_REASON_CHARS]
    return f"check failed ({type(exc).__name__})"


def no_answer(timeout_s: float) -> str:
    """The reason for a check that did not return within ``timeout_s``."""
    return f"no answer within {timeout_s:g} s"


def _timestamp(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def _as_json(state: DependencyState | None) -> dict[str, Any]:
    if state is None:
        return {"ok": None, "since": None, "reason": "not checked yet", "checked_at": None}
    return {"ok": state.ok, "since": _timestamp(state.since), "reason": state.reason, "checked_at": _timestamp(state.checked_at)}


def verdict(states: Mapping[str, DependencyState | None]) -> dict[str, Any]:
    """``{"ready", "dependencies"}`` as the probes answer it: ready when every dependency answered
    its last check (one never checked is not ready)."""
    return {"ready": all(s is not None and s.ok for s in states.values()), "dependencies": {name: _as_json(s) for name, s in states.items()}}


class _SingleRun:
    """One dependency's check, never running twice at once: a call while the last run is still
    going waits for that run (until its own start + ``timeout_s``) instead of starting another."""

    def __init__(self, check: Check, clock: Callable[[], float]) -> None:
        self._check, self._clock = check, clock
        self._task: asyncio.Future | None = None
        self._started_s = 0.0

    async def run(self, timeout_s: float) -> BaseException | None:
        """``None`` when the dependency answered, else what went wrong (``TimeoutError``: no answer)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task, self._started_s = asyncio.ensure_future(self._check(), loop=loop), self._clock()
            self._task.add_done_callback(_consume)
        remaining_s = max(0.0, self._started_s + timeout_s - self._clock())
        try:
            # shield: a timed-out wait leaves the run going (it cannot be stopped in its thread
            # anyway), and the next call waits on it instead of stacking another
            await asyncio.wait_for(asyncio.shield(self._task), remaining_s)
        except Exception as exc:  # TimeoutError included
            return exc
        return None


def _consume(task: asyncio.Future) -> None:
    """Fetch a finished run's exception: one that finished after every waiter gave up would be
    logged by asyncio as never retrieved."""
    if not task.cancelled():
        task.exception()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Readiness:
    """The replica's dependencies (name -> check), checked at most every ``ttl_s``, each check
    bounded by ``timeout_s``. ``clock`` (monotonic seconds) ages the cache, ``now`` stamps states."""

    def __init__(
        self, checks: Mapping[str, Check], *, ttl_s: float = DEFAULT_TTL_S, timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = _utcnow
    ) -> None:
        self.ttl_s, self.timeout_s = ttl_s, timeout_s
        self._runs = {name: _SingleRun(check, clock) for name, check in checks.items()}
        self._clock, self._now = clock, now
        self._states: dict[str, DependencyState | None] = dict.fromkeys(checks)
        self._checked_at_s: dict[str, float] = {}
        self._refresh: asyncio.Task | None = None

    async def verdict(self) -> dict[str, Any]:
        """Check the dependencies whose last check is older than ``ttl_s`` (all at once), then the
        verdict (see :func:`verdict`). Takes at most ``timeout_s``."""
        due = self._due()
        if due:
            outcomes = await asyncio.gather(*(self._runs[name].run(self.timeout_s) for name in due))
            for name, error in zip(due, outcomes):
                self._record(name, error)
        return verdict(self._states)

    def last_known(self) -> dict[str, Any]:
        """The verdict of the last checks, without waiting (for ``/healthz``); checks that are due
        start in the background. Call it on the event loop."""
        loop = asyncio.get_running_loop()
        if self._due() and (self._refresh is None or self._refresh.done() or self._refresh.get_loop() is not loop):
            self._refresh = loop.create_task(self.verdict())
        return verdict(self._states)

    def _due(self) -> list[str]:
        now_s = self._clock()
        return [name for name in self._runs if name not in self._checked_at_s or now_s - self._checked_at_s[name] >= self.ttl_s]

    def _record(self, name: str, error: BaseException | None) -> None:
        failure = None if error is None else no_answer(self.timeout_s) if isinstance(error, TimeoutError) else failure_reason(error)
        previous = self._states[name]
        state = self._states[name] = advance(previous, failure, self._now())
        self._checked_at_s[name] = self._clock()
        # log changes only: a probe every few seconds during an outage would flood the log
        if not state.ok and (previous is None or previous.ok):
            log.warning("%s unavailable: %s [%s]", name, state.reason, redact(f"{type(error).__name__}: {error}"))
        elif state.ok and previous is not None and not previous.ok:
            log.warning("%s available again (unavailable since %s)", name, _timestamp(previous.since))


def in_thread(call: Callable[[], object]) -> Check:
    """A check from a blocking call (a client library's request), run in a worker thread."""

    async def check() -> None:
        await asyncio.to_thread(call)

    return check


def bus_check(bus: Bus, topics: Collection[str]) -> Check:
    """The bus answers a metadata request (``list_topics``: a round trip to Kafka, a read of the
    embedded log) and has every topic of ``topics``. Not ``partitions_for``: buses cache it."""

    def call() -> None:
        missing = sorted(set(topics) - set(bus.list_topics()))
        if missing:
            raise Unavailable(f"topic {', '.join(missing)} missing")

    return in_thread(call)


def store_check(collection: MetadataCollection) -> Check:
    """The metadata store answers a lookup by ``_id`` in ``collection`` (one indexed read)."""
    return in_thread(lambda: collection.find_one({"_id": PROBE_ID}))


def model_check(models: ServingModels) -> Check:
    """The control app has a model to forecast with: the version its ``user_config`` (or the
    model's rollout) names for a greenhouse without a model of its own, resolved and loaded by
    the Forecaster. The first check loads it; later ones find it loaded (the alias is resolved
    again every ``alias_refresh_s``, as for requests). Why it could not be loaded is in
    ``/healthz``'s ``model_error``."""

    async def check() -> None:
        served = await models.route(PROBE_GREENHOUSE)
        if served.forecaster is None:
            raise Unavailable("no model loaded (model_error in /healthz says why)")

    return check
