"""Greenhouse climate twin and simulated device fleet, driven by real TMY3 outdoor weather.

- :mod:`app.sim.weather`: outdoor weather (pvlib's bundled TMY3 year, or a constant stub);
- :mod:`app.sim.twin`: the physics of one greenhouse (heat, vapour, CO2, actuator lags);
- :mod:`app.sim.climate_computer`: the greenhouse's local rule-based controller with excitation;
- :mod:`app.sim.fleet`: many greenhouses with devices emitting readings in the wire contract.

Importing this package does no work: the weather file is read on first use.
"""

from app.sim.climate_computer import ClimateComputer, ClimateComputerConfig
from app.sim.fleet import FleetSimulator, SensorNoise
from app.sim.twin import ClimateState, GreenhouseParams, GreenhouseTwin
from app.sim.weather import ConstantWeather, OutdoorWeather, Tmy3Weather, WeatherProvider, WeatherSeries, load_tmy3_weather

__all__ = [
    "ClimateComputer",
    "ClimateComputerConfig",
    "ClimateState",
    "ConstantWeather",
    "FleetSimulator",
    "GreenhouseParams",
    "GreenhouseTwin",
    "OutdoorWeather",
    "SensorNoise",
    "Tmy3Weather",
    "WeatherProvider",
    "WeatherSeries",
    "load_tmy3_weather",
]
