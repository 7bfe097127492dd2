"""The simulated greenhouses' actuator side: accepted control commands drive the fleet's twins."""

from __future__ import annotations

from app.contracts.command import ControlCommand
from app.sim.fleet import FleetSimulator


class FleetActuators:
    """A :class:`~app.control.dispatch.SetpointSink` that applies commands to a :class:`FleetSimulator`
    until the command's ``valid_until`` (then the local climate computer takes over again)."""

    def __init__(self, fleet: FleetSimulator) -> None:
        self.fleet = fleet
        self.applied = 0
        self.last: dict[str, ControlCommand] = {}
        """Each greenhouse's newest applied command."""

    def apply(self, command: ControlCommand) -> None:
        self.fleet.apply_setpoints(command.greenhouse_id, command.setpoints, valid_until=command.valid_until)
        self.applied += 1
        self.last[command.greenhouse_id] = command
