"""Per-principal limits: a request budget shared by two bridge processes through one Redis, and a cap
on concurrent answers. A limited principal gets 429 with Retry-After (or a tool error); others are not
affected."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bridge.security.auth import hash_key, new_key, parse_keys
from tests.helpers import faults, text_of
from tests.procs import Proc, bridge_env, running, start_bridge

ALICE, BOB, CAROL = new_key(), new_key(), new_key()
KEYS = ",".join(
    [
        f"alice:{hash_key(ALICE).hex()}:rate=6/minute:concurrency=1",
        f"bob:{hash_key(BOB).hex()}",
        f"carol:{hash_key(CAROL).hex()}:concurrency=1",
    ]
)


def test_key_entries_carry_their_own_limits() -> None:
    alice, bob, _ = parse_keys(KEYS.split(","))
    assert (alice.rate, alice.concurrency) == ("6/minute", 1)
    assert (bob.rate, bob.concurrency) == (None, None)
    for bad in (":rate=lots", ":concurrency=0", ":colour=blue"):
        with pytest.raises(ValueError, match="unknown or bad option"):
            parse_keys([f"carol:{hash_key('c').hex()}{bad}"])


@pytest.fixture(scope="module")
def two_bridges(simulator: Proc, redis_server: Proc, clamd: Proc) -> Iterator[tuple[Proc, Proc]]:
    env = bridge_env(
        simulator, redis_server.port, clamd, BRIDGE_API_KEYS=KEYS, BRIDGE_RATE_LIMIT="1000/minute"
    )
    with running(start_bridge(env)) as first, running(start_bridge(env)) as second:
        yield first, second


def poke(bridge: Proc, key: str) -> httpx2.Response:
    # An empty upload: refused as a bad request, but counted like any request.
    return httpx2.post(f"{bridge.url}/v1/uploads", headers={"X-API-Key": key}, timeout=10)


def test_request_budget_is_shared_by_replicas_and_per_principal(two_bridges: tuple[Proc, Proc]) -> None:
    first, second = two_bridges
    answers = [poke(first if i % 2 else second, ALICE) for i in range(6)]
    assert [r.status_code for r in answers] == [400] * 6
    limited = poke(first, ALICE)
    also_limited = poke(second, ALICE)
    assert limited.status_code == 429 and also_limited.status_code == 429
    assert limited.json()["type"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Bob has his own (default) budget and is not slowed down by Alice.
    assert poke(first, BOB).status_code == 400
    assert '"event": "limit_hit"' in first.log() + second.log()


async def test_concurrent_answers_are_capped_per_principal(
    two_bridges: tuple[Proc, Proc], simulator: Proc
) -> None:
    first, _ = two_bridges
    faults(simulator, token_delay_ms=100)
    started = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    def client(key: str) -> Client:
        http = httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=60)
        return Client(streamable_http_client(f"{first.url}/mcp", http_client=http))

    async def long_answer() -> None:
        async with client(CAROL) as carol:
            await carol.call_tool(
                "ask_agent", {"agent": "storyteller", "message": "long"}, progress_callback=on_progress
            )

    try:
        async with client(CAROL) as carol, client(BOB) as bob, anyio.create_task_group() as tg:
            tg.start_soon(long_answer)
            with anyio.fail_after(20):
                await started.wait()
            second = await carol.call_tool("ask_agent", {"agent": "echo", "message": "me too"})
            bystander = await bob.call_tool("ask_agent", {"agent": "echo", "message": "unaffected"})
            tg.cancel_scope.cancel()
        # Once the long answer is gone (cancelled), Carol's slot is free again.
        async with client(CAROL) as carol:
            with anyio.fail_after(15):  # the server frees the slot when it sees the cancel
                while (
                    later := await carol.call_tool("ask_agent", {"agent": "echo", "message": "now"})
                ).is_error:
                    assert "already has 1 answer(s) streaming" in text_of(later)
                    await anyio.sleep(0.1)
    finally:
        faults(simulator, token_delay_ms=15)
    assert second.is_error and "carol already has 1 answer(s) streaming" in text_of(second)
    assert not bystander.is_error and text_of(bystander).startswith("Echo (turn 1): unaffected")
    assert not later.is_error, text_of(later)
