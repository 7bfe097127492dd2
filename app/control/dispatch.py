"""Dispatch of control commands: signed onto the control topic, every decision audited.

The serving side calls :meth:`CommandDispatcher.dispatch`; the greenhouse side runs an
:class:`ActuatorEndpoint` that consumes the control topic, verifies signatures, ignores expired,
duplicate and foreign commands, and applies the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import orjson

from app.bus import Bus, OutgoingRecord, ProduceResult
from app.config import Settings
from app.contracts.command import ControlCommand
from app.metadata import CONTROL_AUDIT, DuplicateKeyError, MetadataStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchResult:
    command_id: str
    status: str  # "dispatched", "dry_run" or "duplicate"
    partition: int | None = None
    offset: int | None = None


class CommandDispatcher:
    """Sign, publish (unless dry-run) and audit commands; idempotent by ``command_id``."""

    def __init__(self, settings: Settings, bus: Bus, store: MetadataStore) -> None:
        self.settings = settings
        self.bus = bus
        self.audit = store.collection(CONTROL_AUDIT)
        self._key = settings.control.signing_key.get_secret_value().encode()
        bus.create_topic(settings.topics.control, settings.topics.partitions)

    def dispatch(self, command: ControlCommand) -> DispatchResult:
        """Audit (``pending``), publish, then mark ``dispatched`` with the record's position.

        The audit insert is the idempotency check: a command id that is already audited (a retry,
        or a concurrent dispatch of the same id) is not published again and answers "duplicate"
        with the first dispatch's partition and offset (``None`` while that one is in flight)."""
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
        to_publish: list[tuple[int, ControlCommand, bytes]] = []
        for i, command in enumerate(commands):
            try:
                early, payload = self._audit(command)
            except Exception as exc:
                results[i] = exc
                continue
            if early is not None:
                results[i] = early
            else:
                to_publish.append((i, command, payload))
        if to_publish:
            records = [OutgoingRecord(value=payload, key=command.greenhouse_id.encode()) for _, command, payload in to_publish]
            try:
                produced = self.bus.produce(self.settings.topics.control, records)
            except Exception as exc:  # nothing known to be published: the audit stays "pending"
                for i, _, _ in to_publish:
                    results[i] = exc
                produced = []
            for (i, command, _), result in zip(to_publish, produced):
                try:
                    results[i] = self._settle(command, result)
                except Exception as exc:
                    results[i] = exc
        return results  # type: ignore[return-value]

    def _audit(self, command: ControlCommand) -> tuple[DispatchResult | None, bytes]:
        """Insert the audit record; a result when the command is not to be published (duplicate,
        dry run), else the signed payload to publish."""
        signed = command.signed(self._key)
        dry_run = command.dry_run or self.settings.control.dry_run
        doc = {
            "_id": command.command_id,
            "greenhouse_id": command.greenhouse_id,
            "issued_at": command.issued_at,
            "valid_until": command.valid_until,
            "setpoints": command.setpoints.model_dump(),
            "model": command.model.model_dump(),
            "reason": command.reason,
            "dry_run": dry_run,
            "status": "dry_run" if dry_run else "pending",
        }
        try:
            self.audit.insert_one(doc)
        except DuplicateKeyError:  # dispatched before (or concurrently): never published twice
            existing = self.audit.find_one({"_id": command.command_id}) or {}
            return DispatchResult(command.command_id, "duplicate", existing.get("partition"), existing.get("offset")), b""
        if dry_run:
            return DispatchResult(command.command_id, "dry_run"), b""
        return None, orjson.dumps(signed.model_dump(mode="json"))

    def _settle(self, command: ControlCommand, result: ProduceResult) -> DispatchResult:
        if not result.ok:
            self.audit.update_one({"_id": command.command_id}, {"$set": {"status": "failed", "error": result.error}})
            raise RuntimeError(f"command {command.command_id} was not published: {result.error}")
        self.audit.update_one({"_id": command.command_id}, {"$set": {"status": "dispatched", "partition": result.partition, "offset": result.offset}})
        return DispatchResult(command.command_id, "dispatched", result.partition, result.offset)


class SetpointSink(Protocol):
    """Where accepted commands go (the twin's fleet, or real actuators)."""

    def apply(self, command: ControlCommand) -> None: ...


@dataclass(frozen=True)
class Outcome:
    command_id: str
    greenhouse_id: str
    status: str  # "applied", "expired", "duplicate", "bad_signature", "invalid", "foreign"
    detail: str = ""


class ActuatorEndpoint:
    """The greenhouse side of the control topic.

    Args:
        greenhouses: the greenhouse ids this endpoint drives (others are ignored as "foreign").
        clock: "now" for expiry (the twin's simulated clock in the demo).
    """

    def __init__(self, settings: Settings, bus: Bus, sink: SetpointSink, greenhouses: set[str], clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self._consumer = bus.consumer(settings.control.actuator_group_id, [settings.topics.control])
        self._sink = sink
        self._greenhouses = greenhouses
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._key = settings.control.signing_key.get_secret_value().encode()
        self._seen: set[str] = set()

    def poll(self, timeout_s: float = 0.2) -> list[Outcome]:
        """Consume what is there, apply what is valid, commit, and say what happened to each."""
        from app.bus import TopicPartition

        outcomes: list[Outcome] = []
        messages = self._consumer.poll(500, timeout_s)
        for msg in messages:
            outcomes.append(self._handle(msg.value))
        if messages:
            last: dict[TopicPartition, int] = {}
            for msg in messages:
                last[TopicPartition(msg.topic, msg.partition)] = msg.offset + 1
            self._consumer.commit(last)
        return outcomes

    def _handle(self, value: bytes) -> Outcome:
        try:
            command = ControlCommand.model_validate(orjson.loads(value))
        except (ValueError, orjson.JSONDecodeError) as exc:
            return Outcome("?", "?", "invalid", str(exc)[:200])
        if command.greenhouse_id not in self._greenhouses:
            return Outcome(command.command_id, command.greenhouse_id, "foreign")
        if not command.verify(self._key):
            log.warning("command %s has a bad signature: ignored", command.command_id)
            return Outcome(command.command_id, command.greenhouse_id, "bad_signature")
        if command.command_id in self._seen:
            return Outcome(command.command_id, command.greenhouse_id, "duplicate")
        self._seen.add(command.command_id)
        now = self._clock()
        if command.is_expired(now):
            return Outcome(command.command_id, command.greenhouse_id, "expired", f"valid until {command.valid_until.isoformat()}, now {now.isoformat()}")
        self._sink.apply(command)
        return Outcome(command.command_id, command.greenhouse_id, "applied")

    def close(self) -> None:
        self._consumer.close()
