"""The official MCP conformance suite (@modelcontextprotocol/conformance, pinned in tools/node) against a
running bridge, on both protocol eras: the 2025-11-25 handshake wire and the 2026-07-28 stateless one.

Every scenario of `--suite all` for the version runs (the default "active" suite leaves out e.g.
server-stateless, caching and http-header-validation on 2026-07-28). The run must exit 0: the only
failing (or warning) checks are those listed in baseline-<version>.yml, each of which needs a fixture of
the reference "everything" server (test_* tools, test:// resources, ...) that a Dust bridge has no reason
to carry. A new failure fails the test, and so does a listed check that now passes (stale entry).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance import node_env, node_tool, run_tool, tail
from tests.procs import Proc, bridge_env, running, start_bridge

HERE = Path(__file__).resolve().parent
SPEC_VERSIONS = ["2025-11-25", "2026-07-28"]
TOTAL = re.compile(r"^Total: (\d+) passed, (\d+) failed$", re.MULTILINE)
ENTRY = re.compile(r"^\s*-\s+(?P<entry>[^\s#]+)\s*(?:#\s*(?P<reason>.*\S))?\s*$")

# Scenarios that apply to any MCP server: never baselined, whatever the version.
APPLY_TO_ANY_SERVER = {
    "server-initialize",
    "ping",
    "server-session-lifecycle",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
    "sep-2164-resource-not-found",
    "caching",
    "http-header-validation",
    "input-required-result-unsupported-methods",
    "input-required-result-ignore-extra-params",
}
# Scenarios that apply to any server but contain checks that only a fixture can satisfy: only those
# checks may be listed. server-stateless probes with the diagnostic tools test_missing_capability,
# test_trigger_tool_change and test_trigger_prompt_change; the two input-required-result ones warn when
# test_input_required_result_elicitation does not answer with an InputRequiredResult.
FIXTURE_CHECKS_ONLY = {
    "server-stateless": {
        "sep-2575-server-rejects-undeclared-capability",
        "sep-2575-missing-capability-http-400",
        "sep-2575-server-sends-tools-list-changed-on-subscription",
        "sep-2575-server-sends-prompts-list-changed-on-subscription",
    },
    "input-required-result-missing-input-response": {"sep-2322-missing-response-rerequests"},
    "input-required-result-validate-input": {"sep-2322-error-on-protocol-error"},
}


@pytest.fixture(scope="module")
def conformance() -> Path:
    return node_tool("conformance")


@pytest.fixture(scope="module")
def bridge(simulator: Proc) -> Iterator[Proc]:
    # A full run sends several hundred requests within seconds, all from the one local principal:
    # the default 300/minute limit would answer many of them 429 and fail unrelated scenarios.
    env = bridge_env(simulator, BRIDGE_RATE_LIMIT="100000/minute")
    with running(start_bridge(env)) as proc:
        yield proc


def baseline_entries(path: Path) -> list[tuple[str, str | None]]:
    """(entry, reason) for each `- scenario[:check-id]  # reason` line of a baseline file."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = ENTRY.match(line)
        if match:
            entries.append((match["entry"], match["reason"]))
    return entries


def unexpected_checks(results: Path, baseline: Path) -> list[str]:
    """`scenario:check-id [STATUS] message` for each failed or warning check the run wrote (-o DIR) that the
    baseline does not list."""
    listed = {entry for entry, _ in baseline_entries(baseline)}
    lines = []
    for checks_file in sorted(results.glob("*/checks.json")):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks_file.parent.name)
        for check in json.loads(checks_file.read_text(encoding="utf-8")):
            key = f"{scenario}:{check.get('id')}"
            if check.get("status") in ("FAILURE", "WARNING") and not {scenario, key} & listed:
                message = check.get("errorMessage") or check.get("description", "")
                lines.append(f"{key} [{check['status']}] {message}")
    return lines


def baseline_verdict(stdout: str) -> str:
    """The suite's own account of the baseline (unexpected failures, stale entries), without the long list
    of expected ones."""
    start = stdout.rfind("\nTotal:")
    after = stdout[start + 1 :] if start >= 0 else ""
    kept = [line for line in after.splitlines() if line.strip() and not line.lstrip().startswith("~")]
    return "\n".join(kept)


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
def test_bridge_passes_the_conformance_suite_except_the_fixture_scenarios(
    conformance: Path,
    bridge: Proc,
    spec_version: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    baseline = HERE / f"baseline-{spec_version}.yml"
    results = tmp_path / "results"
    args = [
        str(conformance),
        "server",
        "--url",
        f"{bridge.url}/mcp",
        "--spec-version",
        spec_version,
        "--suite",
        "all",
        "--expected-failures",
        str(baseline),
        "--timeout",
        "20000",
        "-o",
        str(results),
    ]
    run = run_tool(args, env=node_env(tmp_path), timeout=120, cwd=tmp_path)

    totals = TOTAL.findall(run.stdout)
    summary = f"Total: {totals[-1][0]} passed, {totals[-1][1]} failed" if totals else "no Total line"
    with capsys.disabled():
        print(f"\n[conformance {spec_version}] {summary} ({run.seconds:.1f}s)")

    details = "\n".join(
        [
            f"conformance {spec_version} against the bridge: {summary}",
            "--- baseline verdict ---",
            baseline_verdict(run.stdout),
            "--- failed/warning checks not in the baseline (entries are scenario:check-id) ---",
            *unexpected_checks(results, baseline),
            run.report(),
            "--- bridge log (last 30 lines) ---",
            tail(bridge.log(), 30),
        ]
    )
    if not totals or run.returncode != 0 or int(totals[-1][0]) == 0:
        pytest.fail(details, pytrace=False)


@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
def test_baseline_lists_only_fixture_checks_each_with_a_reason(spec_version: str) -> None:
    entries = baseline_entries(HERE / f"baseline-{spec_version}.yml")
    assert entries
    for entry, reason in entries:
        scenario, _, check = entry.partition(":")
        assert reason, f"{entry}: give the reason in a comment on the same line"
        assert scenario not in APPLY_TO_ANY_SERVER, f"{entry}: applies to any server, it must pass"
        if scenario in FIXTURE_CHECKS_ONLY:
            assert check in FIXTURE_CHECKS_ONLY[scenario], f"{entry}: only its fixture checks may be listed"
    assert len({entry for entry, _ in entries}) == len(entries), "duplicate entries"
