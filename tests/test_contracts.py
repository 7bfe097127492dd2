"""Wire contracts: readings validated with reasons, commands signed, expiring and bounded."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from app.contracts import MEASUREMENT_BOUNDS, ControlCommand, DeadLetter, ModelRef, ReadingError, Setpoints, UndecodableReading, reading_from_bus, validate_reading

NOW = datetime(2026, 6, 2, tzinfo=timezone.utc)


def reading(**changes):
    base = {"greenhouse_id": "gh-01", "device_id": "gh-01-climate", "ts": "2026-06-01T12:00:00+02:00", "measurements": {"air_temp_c": 21.0}}
    base.update(changes)
    return base


def test_valid_reading_is_normalised_to_utc_and_keeps_unknown_fields():
    r = validate_reading(reading(firmware="1.0", measurements={"air_temp_c": 21.0, "leaf_wetness_pct": 4}), now=NOW)
    assert r.ts == datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
    assert r.measurements.unknown() == {"leaf_wetness_pct": 4}
    assert r.model_extra == {"firmware": "1.0"}
    assert validate_reading(reading(ts=1780000000000), now=NOW).ts_ms == 1780000000000


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"measurements": {"rh_pct": 100.5}}, "measurements.rh_pct"),
        ({"measurements": {"air_temp_c": float("nan")}}, "measurements.air_temp_c"),
        ({"measurements": {"co2_ppm": -1}}, "measurements.co2_ppm"),
        ({"measurements": {}}, "measurements"),
        ({"measurements": {"note": [1, 2]}}, "measurements"),
        ({"ts": "2026-06-01T12:00:00"}, "ts"),
        ({"ts": "1999-12-31T23:59:59Z"}, "ts"),
        ({"ts": "2026-06-09T00:00:00Z"}, "ts"),
        ({"ts": True}, "ts"),
        ({"greenhouse_id": "gh 01"}, "greenhouse_id"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_impossible_readings_are_rejected_with_a_reason(changes, field):
    with pytest.raises(ReadingError) as exc:
        validate_reading(reading(**changes), now=NOW)
    assert exc.value.reason_code == field
    assert exc.value.reason.startswith(field)


@given(st.sampled_from(sorted(MEASUREMENT_BOUNDS)), st.floats(allow_nan=False, allow_infinity=False))
def test_bounds_are_enforced_for_every_measurement(name, value):
    low, high = MEASUREMENT_BOUNDS[name]
    try:
        r = validate_reading(reading(measurements={name: value}), now=NOW)
    except ReadingError:
        assert not low <= value <= high
    else:
        assert low <= getattr(r.measurements, name) <= high


def test_the_future_bound_is_a_parameter_and_a_day_by_default():
    ahead = reading(ts=(NOW + timedelta(hours=23)).isoformat())
    assert validate_reading(ahead, now=NOW).ts == NOW + timedelta(hours=23)
    with pytest.raises(ReadingError, match="more than 3600 s in the future"):
        validate_reading(ahead, now=NOW, max_future_skew_s=3600)
    with pytest.raises(ReadingError, match="more than 86400 s in the future"):
        validate_reading(reading(ts=(NOW + timedelta(hours=25)).isoformat()), now=NOW)


def test_readings_from_the_bus_are_decoded_with_the_same_checks_and_a_wide_window():
    far = reading(ts=(NOW + timedelta(days=365)).isoformat())
    assert reading_from_bus(orjson.dumps(far), now=NOW).greenhouse_id == "gh-01"
    with pytest.raises(ReadingError, match="in the future"):
        reading_from_bus(orjson.dumps(reading(ts=(NOW + timedelta(days=11 * 365)).isoformat())), now=NOW)
    with pytest.raises(ReadingError) as exc:
        reading_from_bus(orjson.dumps(reading(measurements={"rh_pct": 101})), now=NOW)
    assert exc.value.reason_code == "measurements.rh_pct" and not isinstance(exc.value, UndecodableReading)
    with pytest.raises(UndecodableReading) as undecodable:
        reading_from_bus(b"garbage")
    assert undecodable.value.reason.startswith("value: not JSON") and undecodable.value.reason_code == "value"


def test_dead_letter_round_trips_as_json():
    letter = DeadLetter(source="sink", source_topic="greenhouse.sensors", source_partition=2, source_offset=41, error_code=42206, reason="ts: bad", received_at=NOW, payload={"greenhouse_id": "gh-01"})
    data = orjson.loads(letter.to_json())
    assert data["schema_version"] == 1 and data["received_at"] == "2026-06-02T00:00:00Z"
    assert DeadLetter.from_json(letter.to_json()) == letter
    with pytest.raises(ValueError):
        DeadLetter.model_validate({**data, "source": "elsewhere"})


@pytest.mark.parametrize("ts", [1e20, 1e30, 10**40, -1, float("inf"), float("nan"), "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_absurd_timestamps_are_a_reason_not_a_crash(ts):
    with pytest.raises(ReadingError) as exc:
        validate_reading(reading(ts=ts), now=NOW)
    assert exc.value.reason_code == "ts"


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_unknown_fields_may_nest_only_a_few_levels():
    assert validate_reading(reading(firmware=nested(8)), now=NOW).model_extra["firmware"] == nested(8)
    for levels in (9, 300, 1000):
        with pytest.raises(ReadingError) as exc:
            validate_reading(reading(firmware=nested(levels)), now=NOW)
        assert exc.value.reason == "extra: unknown field 'firmware' is nested deeper than 8 levels"


@pytest.mark.parametrize("bad_id", ["gh:01", "gh/01", "gh=01", "gh%01", "gh 01", "-gh", ".gh", "g" * 65, "gh-01\n", "gh#1", "gh?1", "gh*1", "gh\x7f"])
def test_ids_hold_only_what_every_lake_backend_takes_in_a_path(bad_id):
    with pytest.raises(ReadingError) as exc:
        validate_reading(reading(greenhouse_id=bad_id), now=NOW)
    assert exc.value.reason_code == "greenhouse_id"
    for good_id in ("gh-01", "GH_01.a", "0"):
        assert validate_reading(reading(greenhouse_id=good_id), now=NOW).greenhouse_id == good_id


def test_reasons_name_schema_fields_only_and_stay_short():
    """The part before ':' is a metrics label: it must not echo what a sender made up."""
    for value in (reading(**{"x" * 10_000: nested(20)}), reading(measurements={"k" * 10_000: [1]}), reading(device_id=[[[[1]]]]), reading(ts="t" * 100_000)):
        with pytest.raises(ReadingError) as exc:
            validate_reading(value, now=NOW)
        assert exc.value.reason_code in {"extra", "measurements", "device_id", "ts"} and len(exc.value.reason) < 300


def test_a_dead_letter_can_always_be_written():
    deep: object = 1
    for _ in range(1000):
        deep = [deep]
    letter = DeadLetter(source="gateway", source_topic="t", error_code=42206, reason="r", received_at=NOW, payload={"v": deep, "s": "\ud800", "f": float("nan"), "b": b"\xff"})
    data = orjson.loads(letter.to_json())
    assert data["payload"]["s"] == "?" and data["payload"]["f"] == "nan" and data["payload"]["b"] == "\ufffd"
    assert DeadLetter.from_json(letter.to_json()) == letter


def command(**changes):
    base = dict(
        command_id="cmd-0000001",
        greenhouse_id="gh-01",
        issued_at=NOW,
        valid_until=NOW + timedelta(minutes=5),
        setpoints=Setpoints(vent_pct=20, heat_pct=0, screen_pct=50),
        model=ModelRef(name="gh-forecaster", version="3"),
        reason={"forecast_air_temp_c_15min": 26.1},
    )
    base.update(changes)
    return ControlCommand(**base)


def test_command_signature_verifies_and_detects_tampering():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed = command(sequence=7, requested_by="operator:ana").signed(key, "0123456789abcdef")
    assert signed.key_id == "0123456789abcdef" and signed.verify(key.public_key())
    assert ControlCommand.model_validate(orjson.loads(orjson.dumps(signed.model_dump(mode="json")))).verify(key.public_key())  # survives the wire
    assert not signed.verify(other.public_key())
    for change in ({"setpoints": Setpoints(vent_pct=100, heat_pct=100, screen_pct=0)}, {"sequence": 8}, {"key_id": "fedcba9876543210"}, {"requested_by": "mallory"}):
        assert not signed.model_copy(update=change).verify(key.public_key()), change  # every field is signed
    assert not signed.model_copy(update={"signature": "not base64!"}).verify(key.public_key())
    assert not command().verify(key.public_key())  # unsigned


def test_command_expiry_and_window():
    c = command()
    assert not c.is_expired(NOW + timedelta(minutes=4))
    assert c.is_expired(NOW + timedelta(minutes=5))
    with pytest.raises(ValueError):
        command(valid_until=NOW)


@pytest.mark.parametrize("bad", [{"vent_pct": 101, "heat_pct": 0, "screen_pct": 0}, {"vent_pct": -1, "heat_pct": 0, "screen_pct": 0}, {"vent_pct": float("inf"), "heat_pct": 0, "screen_pct": 0}])
def test_setpoints_outside_physical_range_are_refused(bad):
    with pytest.raises(ValueError):
        Setpoints(**bad)
