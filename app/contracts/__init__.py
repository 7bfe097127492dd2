"""Versioned wire contracts: sensor readings in, control commands out."""

from app.contracts.command import ControlCommand, ModelRef, Setpoints
from app.contracts.reading import (
    MEASUREMENT_BOUNDS,
    MEASUREMENT_NAMES,
    Measurements,
    Reading,
    ReadingError,
    validate_reading,
)

__all__ = [
    "MEASUREMENT_BOUNDS",
    "MEASUREMENT_NAMES",
    "ControlCommand",
    "Measurements",
    "ModelRef",
    "Reading",
    "ReadingError",
    "Setpoints",
    "validate_reading",
]
