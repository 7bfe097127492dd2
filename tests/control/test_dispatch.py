"""Dispatch and the actuator side: signed, audited, idempotent; expired/duplicate/forged refused.

The security cases (keys, replay across restarts, sequences, dead letters) are in
tests/security/test_commands.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.contracts import ControlCommand, ModelRef, Setpoints
from app.control.dispatch import ActuatorEndpoint, CommandDispatcher, dry_run_audit_id
from app.metadata import CONTROL_AUDIT, open_metadata
from app.sim.actuators import FleetActuators
from app.sim.fleet import FleetSimulator

START = datetime(2026, 1, 10, tzinfo=timezone.utc)


def command(cid: str, gh: str = "gh-01", minutes: float = 10, heat: float = 80, dry_run: bool = False) -> ControlCommand:
    return ControlCommand(
        command_id=cid,
        greenhouse_id=gh,
        issued_at=START,
        valid_until=START + timedelta(minutes=minutes),
        setpoints=Setpoints(vent_pct=0, heat_pct=heat, screen_pct=50),
        model=ModelRef(name="m", version="1"),
        dry_run=dry_run,
    )


def setup(settings: Settings):
    bus, store = open_bus(settings.bus_url), open_metadata(settings.metadata_url)
    fleet = FleetSimulator(2, START, step_s=60, seed=0)
    dispatcher = CommandDispatcher(settings, bus, store)
    endpoint = ActuatorEndpoint(settings, bus, FleetActuators(fleet), set(fleet.greenhouse_ids), clock=lambda: fleet.now)
    return bus, store, fleet, dispatcher, endpoint


def test_dispatched_command_is_applied_to_the_twin_and_audited(settings):
    bus, store, fleet, dispatcher, endpoint = setup(settings)
    result = dispatcher.dispatch(command("cmd-00000001"))
    assert result.status == "dispatched" and result.offset is not None
    (outcome,) = endpoint.poll(1.0)
    assert outcome.status == "applied"
    fleet.step()  # commands take effect from the next step
    setpoints, source = fleet.commanded("gh-01")
    assert source == "external" and setpoints.heat_pct == 80
    audit = store.collection(CONTROL_AUDIT).find_one({"_id": "cmd-00000001"})
    assert audit["status"] == "dispatched" and audit["setpoints"]["heat_pct"] == 80


def test_dispatch_is_idempotent_and_dry_run_is_not_published(settings):
    bus, store, fleet, dispatcher, endpoint = setup(settings)
    assert dispatcher.dispatch(command("cmd-00000002")).status == "dispatched"
    assert dispatcher.dispatch(command("cmd-00000002")).status == "duplicate"
    assert dispatcher.dispatch(command("cmd-00000003", dry_run=True)).status == "dry_run"
    assert sum(bus.end_offsets(settings.topics.control).values()) == 1
    assert store.collection(CONTROL_AUDIT).find_one({"_id": dry_run_audit_id("cmd-00000003")})["status"] == "dry_run"


def test_actuator_side_refuses_expired_duplicate_forged_and_ignores_foreign(settings):
    bus, store, fleet, dispatcher, endpoint = setup(settings)
    expired = command("cmd-expired1", minutes=1)
    for _ in range(3):  # the twin's clock passes valid_until
        fleet.step()
    dispatcher.dispatch(expired)

    def signed(c, key=dispatcher.signer.private_key):
        return c.model_copy(update={"sequence": dispatcher.sequences.next(c.greenhouse_id, c.command_id)}).signed(key, dispatcher.signer.key_id)

    good = signed(command("cmd-good0001"))
    forged = signed(command("cmd-forged01", heat=100), key=Ed25519PrivateKey.generate())  # claims our key id
    foreign = signed(command("cmd-foreign1", gh="gh-99"))
    for c in (good, good, forged, foreign):  # the same good command twice: a redelivery
        bus.produce(settings.topics.control, [OutgoingRecord(orjson.dumps(c.model_dump(mode="json")), key=c.greenhouse_id.encode())])
    bus.produce(settings.topics.control, [OutgoingRecord(b"not json")])
    statuses = sorted((o.command_id, o.status) for o in endpoint.poll(1.0))  # partitions interleave
    assert statuses == sorted(
        [("cmd-expired1", "expired"), ("cmd-good0001", "applied"), ("cmd-good0001", "duplicate"), ("cmd-forged01", "bad_signature"), ("cmd-foreign1", "foreign"), ("?", "invalid")]
    )
    fleet.step()
    assert fleet.commanded("gh-01")[0].heat_pct == 80  # the forged 100 % never reached the twin
    assert endpoint.poll(0.2) == []  # committed: nothing is redelivered
    assert sum(bus.end_offsets(settings.topics.deadletter).values()) == 4  # every refusal, not the foreign one


def test_duplicate_answers_with_the_first_dispatch_position_and_publishes_once(settings):
    bus, store, fleet, dispatcher, endpoint = setup(settings)
    first = dispatcher.dispatch(command("cmd-00000004"))
    again = dispatcher.dispatch(command("cmd-00000004", heat=10))  # same id: the audit record wins
    assert first.status == "dispatched" and again.status == "duplicate"
    assert (again.partition, again.offset) == (first.partition, first.offset)
    assert sum(bus.end_offsets(settings.topics.control).values()) == 1
    audit = store.collection(CONTROL_AUDIT).find_one({"_id": "cmd-00000004"})
    assert audit["status"] == "dispatched" and audit["setpoints"]["heat_pct"] == 80
    dry = dispatcher.dispatch(command("cmd-00000005", dry_run=True))
    assert dispatcher.dispatch(command("cmd-00000005", dry_run=True)) == type(dry)("cmd-00000005", "duplicate", None, None)


def test_dispatch_many_writes_once_and_answers_each_command_as_dispatch_would(settings, monkeypatch):
    from app.bus import ProduceResult

    bus, store, fleet, dispatcher, endpoint = setup(settings)
    assert dispatcher.dispatch(command("cmd-00000010")).status == "dispatched"
    writes = []
    real_produce = bus.produce

    def produce(topic, records):
        writes.append(len(records))
        results = real_produce(topic, records[:1] + records[2:])
        return results[:1] + [ProduceResult(None, None, error="partition gone")] + results[1:]  # the 2nd fails

    monkeypatch.setattr(bus, "produce", produce)
    batch = [command("cmd-00000011"), command("cmd-00000012"), command("cmd-00000010"), command("cmd-00000013", dry_run=True), command("cmd-00000014")]
    results = dispatcher.dispatch_many(batch)
    assert writes == [3]  # one bus write for the three to publish
    assert [r.status if not isinstance(r, Exception) else "error" for r in results] == ["dispatched", "error", "duplicate", "dry_run", "dispatched"]
    assert isinstance(results[1], RuntimeError) and "partition gone" in str(results[1])
    assert results[2].offset is not None  # the first dispatch's position
    audit = store.collection(CONTROL_AUDIT)
    statuses = {c.command_id: audit.find_one({"_id": dry_run_audit_id(c.command_id) if c.dry_run else c.command_id})["status"] for c in batch}
    assert statuses == {"cmd-00000011": "dispatched", "cmd-00000012": "failed", "cmd-00000010": "dispatched", "cmd-00000013": "dry_run", "cmd-00000014": "dispatched"}
    assert results[4].offset == audit.find_one({"_id": "cmd-00000014"})["offset"]
