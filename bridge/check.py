"""`dust-mcp-bridge check`: what a new user needs to know before connecting a client.

It makes the calls the tools make, with the same parameters (the agent listing of `list_agents`
and of agent resolution, the single-agent read resolution falls back to), checks the context store
and the virus scanner as `/readyz` does, and with `--ask AGENT MESSAGE` does one whole turn:
creates a Dust conversation, streams the answer, prints it and how long each part took.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from bridge.domain.answers import TurnListener
from bridge.dust.client import LISTING_VIEW
from bridge.dust.errors import DustError
from bridge.errors import BridgeError
from bridge.runtime import Runtime
from bridge.store.base import StoreUnavailable
from bridge.uploads.clamav import ClamdClient
from bridge.uploads.clamd_health import diagnose

# The principal a `check --ask` turn belongs to; it never shares conversations with clients.
CHECK_PRINCIPAL = "check"


@dataclass
class CheckReport:
    """What `check` printed, and how many of its checks failed."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    failures: int = 0

    def ok(self, name: str, detail: str) -> None:
        print(f"{name}: ok ({detail})", file=self.out, flush=True)

    def failed(self, name: str, detail: str) -> None:
        self.failures += 1
        print(f"{name}: FAILED: {detail}", file=self.out, flush=True)


async def run_checks(runtime: Runtime, report: CheckReport, ask: tuple[str, str] | None = None) -> None:
    """Every check in turn; failures are counted in `report`, never raised."""
    mode = "demo: the bundled Dust simulator" if runtime.demo else runtime.dust_base_url
    report.ok("configuration", f"{mode}, workspace {runtime.workspace_id}, store: {runtime.store.kind}")
    await _check_agents(runtime, report)
    await _check_store(runtime, report)
    if runtime.uploads.scan_required:
        await _check_scanner(runtime, report)
    else:
        report.ok("scanner", "off: BRIDGE_SCAN_MODE=off, uploads are not scanned")
    if ask is not None:
        await _check_ask(runtime, report, *ask)


async def _check_store(runtime: Runtime, report: CheckReport) -> None:
    try:
        await runtime.store.ping()
    except StoreUnavailable as exc:
        report.failed("store", exc.detail)
    else:
        report.ok("store", runtime.store.kind)


async def _check_scanner(runtime: Runtime, report: CheckReport) -> None:
    settings = runtime.settings
    client = ClamdClient(
        settings.clamd_url, timeout=settings.scan_timeout_seconds, max_stream_bytes=settings.upload_max_bytes
    )
    for finding in await diagnose(client, settings.upload_max_bytes):
        if finding.fix is None:
            report.ok(finding.name, finding.detail)
        else:
            report.failed(finding.name, f"{finding.detail}; {finding.fix}")


async def _check_agents(runtime: Runtime, report: CheckReport) -> None:
    started = time.monotonic()
    try:
        agents = await runtime.agents.list(refresh=True)
    except DustError as exc:
        report.failed("dust agents", exc.for_user())
        return
    took = time.monotonic() - started
    names = ", ".join(agent.name for agent in agents[:8]) + (", ..." if len(agents) > 8 else "")
    report.ok("dust agents", f"{len(agents)} active with view={LISTING_VIEW} in {took:.3f} s: {names}")
    if not agents:
        return
    try:
        agent = await runtime.dust.get_agent(agents[0].s_id)
    except DustError as exc:
        report.failed("dust agent", exc.for_user())
    else:
        report.ok("dust agent", f"read {agent.name} ({agent.s_id}) by sId")


async def _check_ask(runtime: Runtime, report: CheckReport, agent: str, message: str) -> None:
    started = time.monotonic()
    first_progress: list[float] = []

    async def progress(text: str) -> None:
        if not first_progress:
            first_progress.append(time.monotonic() - started)
        print(f"  ... {text.strip()[:200]}", file=sys.stderr, flush=True)

    try:
        answer = await runtime.conversations.ask(
            principal=CHECK_PRINCIPAL,
            session_key=None,
            agent_ref=agent,
            message=message,
            new_conversation=True,
            listener=TurnListener(progress=progress),
        )
    except BridgeError as exc:
        report.failed("ask", str(exc))
        return
    if answer.pending:
        waits = ", ".join(f"{action.kind.replace('_', ' ')} for {action.tool}" for action in answer.pending)
        where = answer.url or f"Dust conversation {answer.dust_conversation_id}"
        report.failed("ask", f"{answer.agent.name} waits for the user ({waits}); answer it in Dust: {where}")
        return
    total = time.monotonic() - started
    first = f"first progress after {first_progress[0]:.2f} s, " if first_progress else ""
    report.ok(
        "ask",
        f"{answer.agent.name} answered in {total:.2f} s ({first}Dust conversation"
        f" {answer.dust_conversation_id}{', ' + answer.url if answer.url else ''})",
    )
    print(answer.text, file=report.out, flush=True)
