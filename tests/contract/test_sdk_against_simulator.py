"""The simulator answers Dust's official SDK (@dust-tt/client) the way Dust does.

Each test runs one group of harness/simulator_contract.mjs on Node 24: the SDK performs the
operations the bridge performs against Dust, and every answer is parsed with the SDK's own zod
schemas (the SDK methods' built-in validation, plus explicit parses where a method skips it or where
a route has no method). A parse error, an unexpected status or a missing route fails the test with
the harness's report: the operation, its HTTP exchanges and the zod issues.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.contract.conftest import failure, run_harness
from tests.procs import Proc


def run_group(simulator: Proc, group: str, home: Path) -> None:
    run = run_harness("simulator_contract.mjs", "--url", simulator.url, "--groups", group, home=home)
    print(run.stdout)  # shown with -rP / -s: every operation and its verdict
    if run.returncode != 0:
        pytest.fail(f"the Dust SDK contract failed for {group!r}:\n{failure(run)}", pytrace=False)
    assert " 0 failed" in run.stdout, run.stdout


def test_sdk_lists_agents_with_views_all_and_global_and_gets_one_agent(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "agents", tmp_path)


def test_sdk_sees_views_list_and_favorites_refused_to_an_api_key_with_401(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "user-only-views", tmp_path)


def test_sdk_creates_a_conversation_posts_a_follow_up_and_reads_it_back(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "conversations", tmp_path)


def test_sdk_streams_to_the_terminal_event_across_lasteventid_reconnects(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "streaming", tmp_path)


def test_sdk_cancels_a_generation_and_sees_it_cancelled(fresh_simulator: Proc, tmp_path: Path) -> None:
    run_group(fresh_simulator, "cancel", tmp_path)


def test_sdk_uploads_files_and_attaches_them_as_content_fragments(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "files", tmp_path)


def test_sdk_streams_pauses_lists_blocked_actions_and_answers_them(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "pauses", tmp_path)


def test_sdk_reads_generated_files_views_the_chart_and_is_refused_the_tool_made_csv(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "generated-files", tmp_path)


def test_sdk_parses_search_results_and_their_refs_behind_the_cite_markers(
    fresh_simulator: Proc, tmp_path: Path
) -> None:
    run_group(fresh_simulator, "citations", tmp_path)


# --- the harness itself: a Dust that breaks the SDK's schema must fail it ---------------------


class _BrokenDust(BaseHTTPRequestHandler):
    """Lists one agent whose `sId` is a number and nothing else; has no route for one agent."""

    def do_GET(self) -> None:
        if urlsplit(self.path).path.endswith("/assistant/agent_configurations"):
            self._json(200, {"agentConfigurations": [{"sId": 42}]})
        else:
            self._json(404, {"error": {"type": "not_found", "message": "no such route"}})

    def do_POST(self) -> None:
        self._json(200, {})  # /_sim/reset, /_sim/faults

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def broken_dust() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenDust)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_harness_fails_naming_the_operation_and_zod_issue_when_an_answer_breaks_the_schema(
    broken_dust: str, tmp_path: Path
) -> None:
    run = run_harness("simulator_contract.mjs", "--url", broken_dust, "--groups", "agents", home=tmp_path)
    assert run.returncode == 1, failure(run)
    report = run.stdout
    assert "FAIL  [agents] list agents, view=all" in report, report
    assert "does not match GetAgentConfigurationsResponseSchema" in report, report
    # The zod issue, with its path into the answer.
    assert "agentConfigurations.0.sId: Expected string, received number" in report, report
    # A route the fake Dust lacks is a failure too.
    assert "FAIL  [agents] get one agent by sId" in report, report
    assert "unexpected HTTP status 404" in report, report
