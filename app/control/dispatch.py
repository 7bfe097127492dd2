"""Dispatch of control commands: sequenced, signed onto the control topic, every decision audited.

The serving side calls :meth:`CommandDispatcher.dispatch`; the greenhouse side runs an
:class:`ActuatorEndpoint` that consumes the control topic and applies a command only when it is
signed by an accepted key, unmodified, not expired, not issued ahead of its clock, not applied
before and newer (by sequence) than the last one it applied. Anything else is refused, written to
the dead-letter topic with its reason, and committed: never retried.

Metrics: the dispatcher reports each command it could not dispatch to an ``on_failure`` hook with
one of the ``FAILED_*`` reasons (the Serve replicas count them); the actuator side never answers
the control side (a refusal goes to the dead-letter topic only), so :class:`ActuatorEndpoint`
counts what it applied or refused itself, in ``gh_actuator_commands_total{outcome, reason}``
(:func:`count_actuator_command`). Each dispatched command is logged with its ids
(``event=command_dispatched``; the decision record's id is the command id).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson

from app.bus import Bus, Message, OutgoingRecord, ProduceResult, TopicPartition
from app.config import Settings
from app.contracts.command import ControlCommand
from app.contracts.deadletter import DeadLetter
from app.control.actuator_state import ActuatorState
from app.control.sequence import SequenceAllocator
from app.metadata import CONTROL_AUDIT, DuplicateKeyError, MetadataStore
from app.security.signing import CommandSigner, CommandVerifier

log = logging.getLogger(__name__)

# A "pending" audit younger than this is a dispatch in progress elsewhere; an older one was left by
# a dispatcher that crashed between the audit and the bus write, and the next dispatch retries it.
PENDING_LEASE_S = 30.0

# Dead-letter error codes of the actuator's refusals (HTTP status * 100 + n, as the gateway's).
REFUSAL_CODES: Mapping[str, int] = {
    "unsigned": 40101,  # no signature or no key id
    "unknown_key": 40102,  # signed by a key this site does not hold (or no longer holds)
    "bad_signature": 40103,  # forged, or changed after signing
    "duplicate": 40901,  # this command id was applied already (a replay or a redelivery)
    "stale_sequence": 40902,  # not newer than the last command applied for the greenhouse
    "expired": 41001,  # past valid_until
    "invalid": 42206,  # not JSON, or not a valid command
    "future": 42501,  # issued_at further ahead than control.max_clock_skew_s (425 Too Early)
}


# Why a command could not be dispatched (the on_failure hook's reasons)
FAILED_AUDIT = "audit_unavailable"  # the audit could not be read or written (metadata store)
FAILED_BUS = "bus_unavailable"  # the bus write raised: nothing known to be published
FAILED_PUBLISH = "publish_refused"  # the bus answered, but did not take the record


class DispatchError(RuntimeError):
    """A command that could not be dispatched; ``reason`` is one of the ``FAILED_*`` reasons. Its
    audit says ``failed`` (or stays ``pending`` until its lease runs out when the store is down
    too), so the same command id dispatched again is published then."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _as_dispatch_error(reason: str, command: ControlCommand, exc: Exception) -> DispatchError:
    if isinstance(exc, DispatchError):
        return exc
    error = DispatchError(reason, f"command {command.command_id} was not dispatched ({reason}): {exc}")
    error.__cause__ = exc
    return error


ACTUATOR_COMMANDS = "gh_actuator_commands"
_ACTUATOR_DESCRIPTION = "control commands the actuator side applied or refused (reason: the refusal, none when applied)"
_ACTUATOR_LABELS = ("outcome", "reason")


@dataclass(frozen=True)
class DispatchResult:
    """What a dispatch did with one command, and where it went on the control topic."""

    command_id: str
    status: str  # "dispatched", "dry_run", "duplicate", or "in_flight" (another dispatch is publishing it)
    partition: int | None = None
    offset: int | None = None
    sequence: int | None = None


@dataclass(frozen=True)
class _Publish:
    """A signed command to write to the control topic."""

    payload: bytes
    sequence: int | None


def dry_run_audit_id(command_id: str) -> str:
    """The audit ``_id`` of a dry run: never the real command's, so a dry run does not block it."""
    return f"dry-run:{command_id}"


class CommandDispatcher:
    """Sequence, sign, publish (unless dry-run) and audit commands; idempotent by ``command_id``.

    Args:
        signer: the key commands are signed with (default: ``control.signing_key_file``, or this
            machine's key).
        pending_lease_s: how long a "pending" audit is taken to be a dispatch still in progress.
    """

    def __init__(
        self, settings: Settings, bus: Bus, store: MetadataStore, *, signer: CommandSigner | None = None, pending_lease_s: float = PENDING_LEASE_S, on_failure: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.audit = store.collection(CONTROL_AUDIT)
        self.sequences = SequenceAllocator(store)
        self.signer = signer or CommandSigner.from_settings(settings)
        self.pending_lease_s = pending_lease_s
        self._on_failure = on_failure
        bus.create_topic(settings.topics.control, settings.topics.partitions)

    def dispatch(self, command: ControlCommand) -> DispatchResult:
        """Audit (``pending``), publish, then mark ``dispatched`` with the record's position.

        The audit is the idempotency check: a command id already dispatched is not published
        again and answers "duplicate" with the first dispatch's partition and offset. One whose
        publish failed (``failed``, or ``pending`` past its lease after a crash) is published
        again, exactly as audited, and ends ``dispatched``; one being published right now by
        another dispatcher answers "in_flight"."""
        (result,) = self.dispatch_many([command])
        if isinstance(result, BaseException):
            raise result
        return result

    def dispatch_many(self, commands: Sequence[ControlCommand]) -> list[DispatchResult | Exception]:
        """:meth:`dispatch` for several commands, in order, with one bus write for all of them.

        Each command is audited ``pending`` before the write and ``dispatched`` (or ``failed``)
        after it, exactly as :meth:`dispatch` does; each gets its own result, or the exception
        :meth:`dispatch` would have raised for it."""
        results: list[DispatchResult | Exception | None] = [None] * len(commands)
        to_publish: list[tuple[int, ControlCommand, _Publish]] = []
        for i, command in enumerate(commands):
            try:
                prepared = self._prepare(command)
            except Exception as exc:
                results[i] = _as_dispatch_error(FAILED_AUDIT, command, exc)
                self._failed(FAILED_AUDIT)
                continue
            if isinstance(prepared, DispatchResult):
                results[i] = prepared
            else:
                to_publish.append((i, command, prepared))
        if to_publish:
            records = [OutgoingRecord(value=publish.payload, key=command.greenhouse_id.encode()) for _, command, publish in to_publish]
            try:
                produced = self.bus.produce(self.settings.topics.control, records)
            except Exception as exc:  # nothing known to be published: "failed", retried by the next dispatch
                for i, command, _ in to_publish:
                    results[i] = _as_dispatch_error(FAILED_BUS, command, exc)
                    self._mark_failed(command.command_id, str(exc))
                    self._failed(FAILED_BUS)
                produced = []
            for (i, command, publish), result in zip(to_publish, produced):
                try:
                    results[i] = self._settle(command, publish.sequence, result)
                except Exception as exc:
                    reason = FAILED_PUBLISH if not result.ok else FAILED_AUDIT
                    results[i] = _as_dispatch_error(reason, command, exc)
                    self._failed(reason)
        return results  # type: ignore[return-value]

    def _failed(self, reason: str) -> None:
        if self._on_failure is not None:
            try:
                self._on_failure(reason)
            except Exception:  # metrics never change a dispatch's result
                log.exception("dispatch on_failure hook failed")

    def _prepare(self, command: ControlCommand) -> DispatchResult | _Publish:
        """A result when the command is not to be published (duplicate, in flight, dry run),
        else the signed payload to publish (its audit now says ``pending``)."""
        if command.dry_run or self.settings.control.dry_run:
            return self._audit_dry_run(command)
        existing = self.audit.find_one({"_id": command.command_id})
        if existing is None:
            fields = self._signed_fields(command)
            doc = {"_id": command.command_id, **_audit_fields(command), "dry_run": False, "status": "pending", "attempts": 1, "attempt_at": _now(), **fields}
            try:
                self.audit.insert_one(doc)
                return _Publish(fields["payload"].encode(), fields["sequence"])
            except DuplicateKeyError:  # a concurrent dispatch of the same id audited it first
                existing = self.audit.find_one({"_id": command.command_id}) or {"_id": command.command_id, "status": "pending", "attempt_at": _now()}
        return self._resume(command, existing)

    def _resume(self, command: ControlCommand, existing: dict[str, Any]) -> DispatchResult | _Publish:
        """The answer for a command id audited before, or its audited payload to publish again."""
        cid, sequence = command.command_id, existing.get("sequence")
        status = existing.get("status")
        if status == "dispatched":
            return DispatchResult(cid, "duplicate", existing.get("partition"), existing.get("offset"), sequence)
        if status == "pending" and _age_s(existing.get("attempt_at")) < self.pending_lease_s:
            return DispatchResult(cid, "in_flight", sequence=sequence)
        # failed, or left pending by a crash: claim it (the attempts counter makes one claimant win)
        update: dict[str, Any] = {"status": "pending", "attempt_at": _now()}
        if "payload" not in existing:  # audited before commands were signed this way: sign it now
            update |= {**_audit_fields(command), **self._signed_fields(command)}
        attempts = existing.get("attempts")
        claim = {"_id": cid, "attempts": attempts if attempts is not None else {"$exists": False}}
        if self.audit.update_one(claim, {"$set": update, "$inc": {"attempts": 1}, "$unset": {"error": ""}}) != 1:
            return DispatchResult(cid, "in_flight", sequence=sequence)
        log.info("command %s: publishing again (audit said %s)", cid, status)
        payload = update["payload"] if "payload" in update else existing["payload"]
        return _Publish(str(payload).encode(), update.get("sequence", sequence))

    def _signed_fields(self, command: ControlCommand) -> dict[str, Any]:
        """A new sequence number, and the command signed with it, for the audit."""
        sequence = self.sequences.next(command.greenhouse_id, command.command_id)
        signed = self.signer.sign(command.model_copy(update={"sequence": sequence}))
        return {"sequence": sequence, "key_id": signed.key_id, "payload": orjson.dumps(signed.model_dump(mode="json")).decode()}

    def _audit_dry_run(self, command: ControlCommand) -> DispatchResult:
        doc = {"_id": dry_run_audit_id(command.command_id), **_audit_fields(command), "dry_run": True, "status": "dry_run"}
        try:
            self.audit.insert_one(doc)
        except DuplicateKeyError:  # the same dry run again: nothing was or will be published
            return DispatchResult(command.command_id, "duplicate")
        return DispatchResult(command.command_id, "dry_run")

    def _settle(self, command: ControlCommand, sequence: int | None, result: ProduceResult) -> DispatchResult:
        if not result.ok:
            self._mark_failed(command.command_id, result.error or "not published")
            raise DispatchError(FAILED_PUBLISH, f"command {command.command_id} was not published: {result.error}")
        self.audit.update_one({"_id": command.command_id}, {"$set": {"status": "dispatched", "partition": result.partition, "offset": result.offset}})
        log.info(
            "command dispatched",
            extra={
                "event": "command_dispatched",
                "decision_id": command.command_id,  # the decision record's _id is its command's id
                "command_id": command.command_id,
                "greenhouse_id": command.greenhouse_id,
                "mode": command.reason.get("mode"),
                "sequence": sequence,
                "partition": result.partition,
                "offset": result.offset,
            },
        )
        return DispatchResult(command.command_id, "dispatched", result.partition, result.offset, sequence)

    def _mark_failed(self, command_id: str, error: str) -> None:
        try:
            self.audit.update_one({"_id": command_id}, {"$set": {"status": "failed", "error": error[:500]}})
        except Exception:  # the store is down too: the audit stays "pending" and its lease runs out
            log.exception("command %s: could not mark the audit failed", command_id)


def _audit_fields(command: ControlCommand) -> dict[str, Any]:
    return {
        "command_id": command.command_id,
        "greenhouse_id": command.greenhouse_id,
        "issued_at": command.issued_at,
        "valid_until": command.valid_until,
        "setpoints": command.setpoints.model_dump(),
        "model": command.model.model_dump(),
        "reason": command.reason,
        "requested_by": command.requested_by,
    }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _age_s(when: Any) -> float:
    return (_now() - when).total_seconds() if isinstance(when, datetime) else float("inf")


class SetpointSink(Protocol):
    """Where accepted commands go (the twin's fleet, or real actuators)."""

    def apply(self, command: ControlCommand) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What an actuator site did with one message of the control topic."""

    command_id: str
    greenhouse_id: str
    status: str  # "applied", "foreign" (another site's), or a refusal: a key of REFUSAL_CODES
    detail: str = ""

    @property
    def refused(self) -> bool:
        """True when the command was refused (and dead-lettered)."""
        return self.status in REFUSAL_CODES


class ActuatorEndpoint:
    """The greenhouse side of the control topic.

    Args:
        greenhouses: the greenhouse ids this endpoint drives (others are ignored as "foreign").
        clock: "now" for expiry and the not-before (the twin's simulated clock in the demo).
        verifier: the accepted public keys (default: ``control.public_keys_dir``).
        state: what was applied, kept across restarts (default: ``control.actuator_state_file``).
    """

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        sink: SetpointSink,
        greenhouses: set[str],
        clock: Callable[[], datetime] | None = None,
        *,
        verifier: CommandVerifier | None = None,
        state: ActuatorState | None = None,
    ) -> None:
        self.settings = settings
        self._bus = bus
        for topic in (settings.topics.control, settings.topics.deadletter):  # a site may start first
            bus.create_topic(topic, settings.topics.partitions)
        self._consumer = bus.consumer(settings.control.actuator_group_id, [settings.topics.control])
        self._sink = sink
        self._greenhouses = greenhouses
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._verifier = verifier or CommandVerifier.from_settings(settings)
        self._state = state or ActuatorState.from_settings(settings)

    def poll(self, timeout_s: float = 0.2) -> list[Outcome]:
        """Consume what is there, apply what is valid, dead-letter what is refused, commit, and
        say what happened to each. If the sink raises, what came before it is still committed and
        the exception propagates (that command is delivered again)."""
        outcomes: list[Outcome] = []
        letters: list[tuple[Message, Outcome]] = []
        handled: dict[TopicPartition, int] = {}
        try:
            for msg in self._consumer.poll(500, timeout_s):
                outcome = self._handle(msg.value)
                outcomes.append(outcome)
                if outcome.status != "foreign":
                    count_actuator_command(outcome)
                if outcome.refused:
                    letters.append((msg, outcome))
                handled[TopicPartition(msg.topic, msg.partition)] = msg.offset + 1
        finally:
            self._dead_letter(letters)
            if handled:
                self._consumer.commit(handled)
        return outcomes

    def _handle(self, value: bytes) -> Outcome:
        try:
            command = ControlCommand.model_validate(orjson.loads(value))
        except ValueError as exc:  # orjson.JSONDecodeError and pydantic's ValidationError are ValueErrors
            return Outcome("?", "?", "invalid", " ".join(str(exc).split())[:300])
        if command.greenhouse_id not in self._greenhouses:
            return Outcome(command.command_id, command.greenhouse_id, "foreign")
        refusal = self._refusal(command)
        if refusal is not None:
            log.warning("command %s refused (%s): %s", command.command_id, *refusal)
            return Outcome(command.command_id, command.greenhouse_id, *refusal)
        # applied, then remembered: a crash between the two applies it once more on redelivery,
        # which absolute setpoints make harmless; the other order would lose it
        self._sink.apply(command)
        self._state.record_applied(command, self._clock())
        return Outcome(command.command_id, command.greenhouse_id, "applied")

    def _refusal(self, command: ControlCommand) -> tuple[str, str] | None:
        """(status, detail) of why ``command`` must not be applied, or None."""
        verdict = self._verifier.check(command)
        if verdict != "valid":
            return verdict, f"key id {command.key_id!r}"
        if command.sequence is None:
            return "invalid", "signed but without a sequence"
        if self._state.was_applied(command.command_id):
            return "duplicate", "applied before"
        highest = self._state.highest_sequence(command.greenhouse_id)
        if highest is not None and command.sequence <= highest:
            return "stale_sequence", f"sequence {command.sequence} <= {highest}, the last applied"
        now = self._clock()
        if command.is_expired(now):
            return "expired", f"valid until {command.valid_until.isoformat()}, now {now.isoformat()}"
        if command.is_future(now, self.settings.control.max_clock_skew_s):
            return "future", f"issued at {command.issued_at.isoformat()}, now {now.isoformat()} (max skew {self.settings.control.max_clock_skew_s:g} s)"
        return None

    def _dead_letter(self, letters: list[tuple[Message, Outcome]]) -> None:
        """Write the refused commands to the dead-letter topic. A failed write is logged, not
        retried: the refusal stands either way, and a stuck topic must not stop the actuators."""
        if not letters:
            return
        records = [OutgoingRecord(value=_letter(msg, outcome).to_json(), key=msg.key) for msg, outcome in letters]
        try:
            errors = [r.error for r in self._bus.produce(self.settings.topics.deadletter, records) if not r.ok]
        except Exception as exc:
            errors = [str(exc)]
        if errors:
            log.error("%d refused command(s) not dead-lettered: %s", len(errors), errors[0])

    def close(self) -> None:
        """Close the consumer and the state file."""
        self._consumer.close()
        self._state.close()


@functools.cache
def _prometheus_actuator_counter() -> Any:
    from prometheus_client import Counter

    return Counter(ACTUATOR_COMMANDS, _ACTUATOR_DESCRIPTION, _ACTUATOR_LABELS)


@functools.cache
def _ray_actuator_counter() -> Any:
    from ray.util.metrics import Counter

    return Counter(ACTUATOR_COMMANDS, description=_ACTUATOR_DESCRIPTION, tag_keys=_ACTUATOR_LABELS)


def count_actuator_command(outcome: Outcome) -> None:
    """Count one command the actuator side applied or refused in ``gh_actuator_commands_total``:
    prometheus_client's default registry (served by whoever serves ``/metrics`` in the actuator's
    process) and, inside a Ray worker, Ray's metrics (``ray_gh_actuator_commands_total``). Created
    on first use, so importing this module registers nothing."""
    tags = {"outcome": "refused" if outcome.refused else "applied", "reason": outcome.status if outcome.refused else "none"}
    _prometheus_actuator_counter().labels(**tags).inc()
    ray = sys.modules.get("ray")  # only where Ray already runs: the actuator side never starts it
    if ray is not None and ray.is_initialized():
        try:
            _ray_actuator_counter().inc(1, tags=tags)
        except Exception:  # a metrics agent that is not up must never stop the actuators
            pass


def actuator_commands(outcome: str, reason: str) -> float:
    """The actuator counter's value in this process (0 before any): what tests and summaries read."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(f"{ACTUATOR_COMMANDS}_total", {"outcome": outcome, "reason": reason}) or 0.0


def _letter(msg: Message, outcome: Outcome) -> DeadLetter:
    try:
        payload: Any = orjson.loads(msg.value)
    except orjson.JSONDecodeError:
        payload = msg.value.decode("utf-8", "replace")
    return DeadLetter(
        source="actuator",
        source_topic=msg.topic,
        source_partition=msg.partition,
        source_offset=msg.offset,
        error_code=REFUSAL_CODES[outcome.status],
        reason=f"{outcome.status}: {outcome.detail}" if outcome.detail else outcome.status,
        received_at=datetime.fromtimestamp(msg.timestamp_ms / 1000.0, tz=timezone.utc),
        payload=payload,
    )
