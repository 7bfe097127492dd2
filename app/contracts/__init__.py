"""Versioned wire contracts: sensor readings in, control commands out, rejected records aside."""

from app.contracts.command import ControlCommand, ModelRef, Setpoints
from app.contracts.deadletter import DeadLetter
from app.contracts.reading import MEASUREMENT_BOUNDS, MEASUREMENT_NAMES, Measurements, Reading, ReadingError, UndecodableReading, reading_from_bus, validate_reading

__all__ = [
    "MEASUREMENT_BOUNDS",
    "MEASUREMENT_NAMES",
    "ControlCommand",
    "DeadLetter",
    "Measurements",
    "ModelRef",
    "Reading",
    "ReadingError",
    "Setpoints",
    "UndecodableReading",
    "reading_from_bus",
    "validate_reading",
]
