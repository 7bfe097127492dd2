"""Control commands no one can forge or replay (issue 15, "Commands"): real Ed25519 keys in real
files, the embedded bus and metadata store, an actuator endpoint with its state file.

Every refusal is checked three ways: the outcome, the sink never saw it, and the dead-letter topic
holds it with its reason; and its offset is committed (nothing comes back on the next poll)."""

from __future__ import annotations

import stat
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from app.bus import OutgoingRecord, open_bus
from app.config import Settings
from app.contracts import ControlCommand, DeadLetter, ModelRef, Setpoints
from app.control.dispatch import FAILED_BUS, REFUSAL_CODES, ActuatorEndpoint, CommandDispatcher, DispatchError, dry_run_audit_id
from app.control.sequence import SequenceAllocator
from app.metadata import CONTROL_AUDIT, open_metadata
from app.security.signing import LOCAL_SIGNING_KEY_FILE, CommandSigner, CommandVerifier, ensure_local_signing_key, key_id_of, new_signing_key, public_keys_dir

START = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


class Recorder:
    """A setpoint sink that remembers what it was given."""

    def __init__(self) -> None:
        self.applied: list[ControlCommand] = []

    def apply(self, command: ControlCommand) -> None:
        self.applied.append(command)


class Site:
    """The serving side and one actuator site on the same embedded bus and store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = open_bus(settings.bus_url)
        self.store = open_metadata(settings.metadata_url)
        self.now = START
        self.dispatcher = CommandDispatcher(settings, self.bus, self.store)
        self.sink = Recorder()
        self.endpoint = self.new_endpoint()
        self._dead_reader = self.bus.consumer(f"dead-{uuid.uuid4().hex}", [settings.topics.deadletter])

    def new_endpoint(self) -> ActuatorEndpoint:
        """An actuator endpoint on the settings' state file (a restart, when one ran before)."""
        return ActuatorEndpoint(self.settings, self.bus, self.sink, {"gh-01", "gh-02"}, clock=lambda: self.now)

    def restart_endpoint(self) -> None:
        self.endpoint.close()
        self.endpoint = self.new_endpoint()

    def sign(self, command: ControlCommand, key: Ed25519PrivateKey | None = None, key_id: str | None = None) -> ControlCommand:
        """``command`` with the next sequence, signed by ``key`` (default: the dispatcher's)."""
        sequenced = command.model_copy(update={"sequence": self.dispatcher.sequences.next(command.greenhouse_id, command.command_id)})
        key = key or self.dispatcher.signer.private_key
        return sequenced.signed(key, key_id or key_id_of(key.public_key()))

    def publish(self, value: ControlCommand | bytes) -> bytes:
        raw = value if isinstance(value, bytes) else orjson.dumps(value.model_dump(mode="json"))
        self.bus.produce(self.settings.topics.control, [OutgoingRecord(raw, key=b"gh-01")])
        return raw

    def poll(self) -> list:
        return self.endpoint.poll(1.0)

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_json(m.value) for m in self._dead_reader.poll(100, 0.5)]


@pytest.fixture
def site(settings: Settings):
    s = Site(settings)
    yield s
    s.endpoint.close()


def command(cid: str, gh: str = "gh-01", heat: float = 40, issued_at: datetime = START, minutes: float = 10, dry_run: bool = False, **extra) -> ControlCommand:
    return ControlCommand(
        command_id=cid,
        greenhouse_id=gh,
        issued_at=issued_at,
        valid_until=issued_at + timedelta(minutes=minutes),
        setpoints=Setpoints(vent_pct=0, heat_pct=heat, screen_pct=0),
        model=ModelRef(name="m", version="1"),
        dry_run=dry_run,
        **extra,
    )


def assert_refused(site: Site, status: str, raw: bytes, reason_part: str = "") -> None:
    """The last poll refused ``raw`` with ``status``; it is dead-lettered with its reason and committed."""
    outcomes = site.poll()
    assert [o.status for o in outcomes] == [status], outcomes
    (letter,) = site.dead_letters()
    assert letter.source == "actuator" and letter.source_topic == site.settings.topics.control
    assert letter.error_code == REFUSAL_CODES[status] and letter.reason.startswith(status) and reason_part in letter.reason
    assert letter.source_offset is not None
    try:
        assert letter.payload == orjson.loads(raw)  # the command as received
    except orjson.JSONDecodeError:
        assert letter.payload == raw.decode()
    assert site.endpoint.poll(0.2) == []  # committed: never delivered again


def test_a_dispatched_command_is_applied_once(site: Site):
    result = site.dispatcher.dispatch(command("cmd-ok-000001", requested_by="operator:ana"))
    assert result.status == "dispatched" and result.sequence is not None
    assert [o.status for o in site.poll()] == ["applied"]
    (applied,) = site.sink.applied
    assert applied.sequence == result.sequence and applied.key_id == site.dispatcher.signer.key_id and applied.requested_by == "operator:ana"
    audit = site.store.collection(CONTROL_AUDIT).find_one({"_id": "cmd-ok-000001"})
    assert audit["requested_by"] == "operator:ana" and audit["sequence"] == result.sequence and audit["key_id"] == applied.key_id
    assert site.dead_letters() == []


def test_unsigned_command_is_refused(site: Site):
    raw = site.publish(command("cmd-unsigned1", sequence=10**15))
    assert_refused(site, "unsigned", raw)
    assert site.sink.applied == []


def test_tampered_command_is_refused(site: Site):
    signed = site.sign(command("cmd-tamper01", heat=10))
    raw = site.publish(signed.model_copy(update={"setpoints": Setpoints(vent_pct=0, heat_pct=100, screen_pct=0)}))
    assert_refused(site, "bad_signature", raw)
    assert site.sink.applied == []


def test_forged_signature_under_our_key_id_is_refused(site: Site):
    raw = site.publish(site.sign(command("cmd-forged01"), key=Ed25519PrivateKey.generate(), key_id=site.dispatcher.signer.key_id))
    assert_refused(site, "bad_signature", raw)


def test_unknown_key_id_is_refused(site: Site):
    raw = site.publish(site.sign(command("cmd-unknown1"), key=Ed25519PrivateKey.generate()))
    assert_refused(site, "unknown_key", raw)
    assert site.sink.applied == []


def test_expired_command_is_refused(site: Site):
    site.dispatcher.dispatch(command("cmd-expired1", minutes=5))
    site.now = START + timedelta(minutes=5)
    raw = site.bus.consumer("peek", [site.settings.topics.control]).poll(10, 0.5)[0].value
    assert_refused(site, "expired", raw, "valid until")


def test_future_dated_command_is_refused_beyond_the_clock_skew(site: Site):
    skew_s = site.settings.control.max_clock_skew_s
    within = site.sign(command("cmd-skewok01", issued_at=START + timedelta(seconds=skew_s - 1)))
    site.publish(within)
    assert [o.status for o in site.poll()] == ["applied"]
    raw = site.publish(site.sign(command("cmd-future01", issued_at=START + timedelta(seconds=skew_s + 60))))
    assert_refused(site, "future", raw, "max skew")
    assert [c.command_id for c in site.sink.applied] == ["cmd-skewok01"]


def test_malformed_command_is_refused(site: Site):
    raw = site.publish(b"{not json")
    assert_refused(site, "invalid", raw)
    raw = site.publish(orjson.dumps({"command_id": "cmd-partial1", "greenhouse_id": "gh-01"}))
    assert_refused(site, "invalid", raw)


def test_older_sequence_never_overrides_a_newer_command(site: Site):
    older = site.sign(command("cmd-older001", heat=10))
    newer = site.sign(command("cmd-newer001", heat=90))
    assert older.sequence < newer.sequence
    site.publish(newer)
    assert [o.status for o in site.poll()] == ["applied"]
    raw = site.publish(older)  # delivered late
    assert_refused(site, "stale_sequence", raw, f"{older.sequence} <= {newer.sequence}")
    assert [c.heat_pct for c in (c.setpoints for c in site.sink.applied)] == [90]


def test_replay_after_an_endpoint_restart_is_refused(site: Site):
    site.dispatcher.dispatch(command("cmd-replay01"))
    assert [o.status for o in site.poll()] == ["applied"]
    raw = site.bus.consumer("peek", [site.settings.topics.control]).poll(10, 0.5)[0].value
    site.restart_endpoint()  # a new process: only the state file remembers
    site.publish(raw)  # the same bytes again
    assert_refused(site, "duplicate", raw, "applied before")
    assert len(site.sink.applied) == 1


def test_replay_protection_lives_in_the_state_file(site: Site, tmp_path):
    """An endpoint on a fresh state file has no memory: the file is what protects."""
    site.dispatcher.dispatch(command("cmd-statefl1"))
    assert [o.status for o in site.poll()] == ["applied"]
    state_file = site.settings.data_dir / "actuator" / "state.sqlite"
    assert state_file.is_file()
    moved = site.settings.model_copy(update={"control": site.settings.control.model_copy(update={"actuator_state_file": tmp_path / "other.sqlite"})})
    other = ActuatorEndpoint(moved, site.bus, Recorder(), {"gh-01"}, clock=lambda: site.now)
    try:
        other._consumer.close()
        other._consumer = site.bus.consumer("another-site", [site.settings.topics.control])
        assert [o.status for o in other.poll(1.0)] == ["applied"]
    finally:
        other.close()


def test_key_rotation_accepts_both_keys_during_the_change_then_only_the_new_one(site: Site):
    old = site.dispatcher.signer
    new_path, new = new_signing_key(site.settings.secrets_dir, public_keys_dir(site.settings))
    assert new.key_id != old.key_id and stat.S_IMODE(new_path.stat().st_mode) == 0o600
    rotated = CommandDispatcher(site.settings, site.bus, site.store, signer=CommandSigner.from_file(new_path))
    assert site.dispatcher.dispatch(command("cmd-rot-old01", issued_at=START)).status == "dispatched"
    assert rotated.dispatch(command("cmd-rot-new01", issued_at=START + timedelta(seconds=1))).status == "dispatched"
    assert [o.status for o in site.poll()] == ["applied", "applied"]  # no restart: the new key file was noticed
    assert [c.key_id for c in site.sink.applied] == [old.key_id, new.key_id]

    (public_keys_dir(site.settings) / f"{old.key_id}.pub.pem").unlink()  # the change is over
    raw = site.publish(site.sign(command("cmd-rot-old02"), key=old.private_key))
    assert_refused(site, "unknown_key", raw)
    assert rotated.dispatch(command("cmd-rot-new02")).status == "dispatched"
    assert [o.status for o in site.poll()] == ["applied"]


def test_a_site_started_before_any_key_exists_accepts_the_first_one_made(settings: Settings):
    bus, now = open_bus(settings.bus_url), START
    sink = Recorder()
    endpoint = ActuatorEndpoint(settings, bus, sink, {"gh-01"}, clock=lambda: now)  # no key dir yet
    try:
        dispatcher = CommandDispatcher(settings, bus, open_metadata(settings.metadata_url))  # makes this machine's key
        assert dispatcher.dispatch(command("cmd-firstkey")).status == "dispatched"
        assert [o.status for o in endpoint.poll(1.0)] == ["applied"]
    finally:
        endpoint.close()


def test_verifier_rereads_its_directory_at_most_once_a_second_for_unknown_key_ids(tmp_path):
    ticks = [0.0]
    verifier = CommandVerifier(tmp_path / "keys", clock=lambda: ticks[0])
    assert verifier.key_ids == []
    loads = []
    real_load = verifier._load
    verifier._load = lambda: (loads.append(ticks[0]), real_load())  # type: ignore[method-assign]
    for _ in range(100):  # a flood of made-up key ids
        assert verifier.public_key("0123456789abcdef") is None
    ticks[0] = 1.5
    assert verifier.public_key("0123456789abcdef") is None
    assert loads == [1.5]


def test_a_failed_publish_is_retried_to_dispatched_never_answered_duplicate(site: Site, monkeypatch):
    real_produce = site.bus.produce
    monkeypatch.setattr(site.bus, "produce", lambda topic, records: (_ for _ in ()).throw(ConnectionError("broker down")))
    with pytest.raises(DispatchError) as failed:
        site.dispatcher.dispatch(command("cmd-retry001"))
    assert failed.value.reason == FAILED_BUS and isinstance(failed.value.__cause__, ConnectionError)
    audit = site.store.collection(CONTROL_AUDIT)
    assert audit.find_one({"_id": "cmd-retry001"})["status"] == "failed"
    monkeypatch.setattr(site.bus, "produce", real_produce)
    again = site.dispatcher.dispatch(command("cmd-retry001"))
    assert again.status == "dispatched" and again.offset is not None
    doc = audit.find_one({"_id": "cmd-retry001"})
    assert doc["status"] == "dispatched" and doc["attempts"] == 2 and "error" not in doc
    assert site.dispatcher.dispatch(command("cmd-retry001")).status == "duplicate"  # now it was published
    assert [o.status for o in site.poll()] == ["applied"]


class Crash(BaseException):
    """The process dies in the middle of the bus write."""


def test_a_dispatch_left_pending_by_a_crash_is_retried_after_its_lease(site: Site, monkeypatch):
    real_produce = site.bus.produce

    def crash(topic, records):
        raise Crash

    monkeypatch.setattr(site.bus, "produce", crash)
    with pytest.raises(Crash):
        site.dispatcher.dispatch(command("cmd-crash001"))
    monkeypatch.setattr(site.bus, "produce", real_produce)
    assert site.store.collection(CONTROL_AUDIT).find_one({"_id": "cmd-crash001"})["status"] == "pending"
    restarted = CommandDispatcher(site.settings, site.bus, site.store, pending_lease_s=0.2)
    assert restarted.dispatch(command("cmd-crash001")).status == "in_flight"  # maybe still publishing: not "duplicate"
    time.sleep(0.25)
    assert restarted.dispatch(command("cmd-crash001")).status == "dispatched"
    assert sum(site.bus.end_offsets(site.settings.topics.control).values()) == 1
    assert [o.status for o in site.poll()] == ["applied"]


def test_a_dry_run_does_not_block_the_real_command_for_the_same_instant(site: Site):
    assert site.dispatcher.dispatch(command("cmd-same-inst", dry_run=True)).status == "dry_run"
    assert site.dispatcher.dispatch(command("cmd-same-inst")).status == "dispatched"
    assert site.dispatcher.dispatch(command("cmd-same-inst", dry_run=True)).status == "duplicate"
    audit = site.store.collection(CONTROL_AUDIT)
    assert audit.find_one({"_id": dry_run_audit_id("cmd-same-inst")})["status"] == "dry_run"
    assert audit.find_one({"_id": "cmd-same-inst"})["status"] == "dispatched"
    assert [o.status for o in site.poll()] == ["applied"]


def test_sequences_increase_across_two_dispatchers_on_one_store(site: Site):
    other = CommandDispatcher(site.settings, site.bus, open_metadata(site.settings.metadata_url))  # another replica
    results = [(site.dispatcher if i % 2 else other).dispatch(command(f"cmd-seq-{i:05d}", issued_at=START + timedelta(seconds=i))) for i in range(10)]
    sequences = [r.sequence for r in results]
    assert sequences == sorted(sequences) and len(set(sequences)) == 10
    assert [o.status for o in site.poll()] == ["applied"] * 10


def test_sequences_stay_unique_and_increasing_under_contention_and_a_clock_stepping_back(settings: Settings):
    settings.data_dir.mkdir(parents=True)
    clock = iter(range(10**6, 0, -1))  # the wall clock runs backwards: only the stored floor counts
    lock = threading.Lock()

    def clock_us() -> int:
        with lock:
            return next(clock)

    granted: dict[int, list[int]] = {0: [], 1: []}

    def grant(worker: int) -> None:
        allocator = SequenceAllocator(open_metadata(settings.metadata_url), clock_us=clock_us)
        for i in range(25):
            granted[worker].append(allocator.next("gh-01", f"cmd-{worker}-{i}"))

    threads = [threading.Thread(target=grant, args=(w,)) for w in granted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = granted[0] + granted[1]
    assert len(set(everything)) == 50
    assert all(g == sorted(g) for g in granted.values())
    assert SequenceAllocator(open_metadata(settings.metadata_url)).highest("gh-01") >= max(everything)


def test_local_signing_key_is_private_stable_and_published(tmp_path):
    secrets_dir = tmp_path / "secrets"
    path = ensure_local_signing_key(secrets_dir)
    assert path == secrets_dir / LOCAL_SIGNING_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    signer = CommandSigner.from_file(path)
    assert len(signer.key_id) == 16 and (secrets_dir / "command-keys" / f"{signer.key_id}.pub.pem").is_file()
    assert ensure_local_signing_key(secrets_dir) == path and CommandSigner.from_file(path).key_id == signer.key_id  # reused
    assert CommandVerifier(secrets_dir / "command-keys").key_ids == [signer.key_id]


def test_keys_cli_makes_a_new_key_and_lists_the_accepted_ones(settings: Settings, monkeypatch):
    from app.cli.keys import app

    monkeypatch.setenv("GH_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    first = ensure_local_signing_key(settings.secrets_dir)
    made = runner.invoke(app, ["new"])
    assert made.exit_code == 0, made.output
    new_id = next(line.split()[-1] for line in made.output.splitlines() if line.startswith("key id"))
    assert f"GH_CONTROL__SIGNING_KEY_FILE={settings.secrets_dir / f'command-signing-{new_id}.key'}" in made.output
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert new_id in listed.output and CommandSigner.from_file(first).key_id in listed.output
