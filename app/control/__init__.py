"""Control: the controller core (one decision per greenhouse), pure policy (MPC over the
forecaster, safety and rate clamps, thermostat fallback), online state and command dispatch."""

from app.control.core import ControlDecision, Controller, ControlPolicy, GreenhouseState, ModelForecaster
from app.control.policy import Decision, Targets, Weights, clamp_setpoints, thermostat

__all__ = ["ControlDecision", "ControlPolicy", "Controller", "Decision", "GreenhouseState", "ModelForecaster", "Targets", "Weights", "clamp_setpoints", "thermostat"]
