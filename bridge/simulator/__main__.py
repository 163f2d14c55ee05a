"""Entry point for `python -m bridge.simulator`."""

from bridge.simulator.cli import main

main()
