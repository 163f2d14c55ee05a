"""Schemathesis against /openapi.json of a running bridge: every documented route, generated inputs,
no server error, and answers that match the documented statuses, schemas and content types."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.procs import Proc, bridge_env, running, start_bridge, tool_path


def test_documented_routes_hold_their_contract_under_generated_input(
    simulator: Proc, clamd: Proc, tmp_path: Path
) -> None:
    with running(start_bridge(bridge_env(simulator, clamd=clamd))) as bridge:
        done = subprocess.run(
            [
                tool_path("schemathesis"),
                "run",
                f"{bridge.url}/openapi.json",
                "--max-examples",
                "30",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                # Deterministic: the same cases every run, and no example database written anywhere.
                "--generation-deterministic",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,  # where it may keep anything it writes
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert "No issues found" in done.stdout
    assert " passed" in done.stdout and " failed" not in done.stdout.split("SUMMARY")[-1]
