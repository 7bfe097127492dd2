"""Control: pure policy (MPC over the forecaster, safety and rate clamps, thermostat fallback)."""

from app.control.policy import Decision, Limits, Targets, Weights, candidate_grid, choose_mpc, clamp_setpoints, thermostat

__all__ = ["Decision", "Limits", "Targets", "Weights", "candidate_grid", "choose_mpc", "clamp_setpoints", "thermostat"]
