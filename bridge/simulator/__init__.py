"""A local Dust (dust.tt) public-API simulator, for tests, demo mode and benchmarks."""

from bridge.simulator.app import create_app
from bridge.simulator.cli import main
from bridge.simulator.options import SimulatorOptions

__all__ = ["SimulatorOptions", "create_app", "main"]
