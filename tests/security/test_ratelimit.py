"""Per-principal limits: a request budget and a cap on concurrent answers, both shared by two bridge
processes through one Redis. A limited principal gets 429 with Retry-After on HTTP (how an MCP
client is told: tests/http/middleware/test_rate_limit.py); others are not affected. A replica that
dies holding answer slots gives them back when their leases expire."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator

import anyio
import httpx2
import pytest
import redis.asyncio as aioredis
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from bridge.security.auth import hash_key, new_key, parse_keys
from bridge.security.ratelimit import Limiter, TooManyAnswers, build_limiter
from bridge.security.slots import slots_key
from bridge.store.pool import RedisPool
from tests.helpers import faults, text_of
from tests.procs import Proc, bridge_env, free_port, running, start_bridge, start_redis

ALICE, BOB, CAROL = new_key(), new_key(), new_key()
KEYS = ",".join(
    [
        f"alice:{hash_key(ALICE).hex()}:rate=6/minute:concurrency=1",
        f"bob:{hash_key(BOB).hex()}",
        f"carol:{hash_key(CAROL).hex()}:concurrency=1",
    ]
)


def test_key_entries_carry_their_own_limits() -> None:
    alice, bob, *_ = parse_keys(KEYS.split(","))
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


def mcp_client(bridge: Proc, key: str, mode: str = "auto") -> Client:
    http = httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=60)
    return Client(streamable_http_client(f"{bridge.url}/mcp", http_client=http), mode=mode)  # type: ignore[arg-type]


def sse(bridge: Proc, key: str) -> Client:
    return Client(sse_client(f"{bridge.url}/sse", headers={"X-API-Key": key}))


def _answering(key: str, bridge: Proc, started: anyio.Event) -> Callable[[], Awaitable[None]]:
    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    async def long_answer() -> None:
        async with mcp_client(bridge, key) as client:
            await client.call_tool(
                "ask_agent", {"agent": "storyteller", "message": "long"}, progress_callback=on_progress
            )

    return long_answer


async def test_concurrent_answers_are_capped_per_principal_across_replicas(
    two_bridges: tuple[Proc, Proc], simulator: Proc
) -> None:
    first, second = two_bridges
    faults(simulator, token_delay_ms=100)
    started = anyio.Event()
    try:
        async with mcp_client(second, CAROL) as carol, mcp_client(second, BOB) as bob:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_answering(CAROL, first, started))  # on the first replica
                with anyio.fail_after(20):
                    await started.wait()
                # ... so the second replica refuses Carol: the cap is hers, not per process.
                over_sse = sse(second, CAROL)
                async with over_sse:
                    on_sse = await over_sse.call_tool("ask_agent", {"agent": "echo", "message": "sse too"})
                second_call = await carol.call_tool("ask_agent", {"agent": "echo", "message": "me too"})
                bystander = await bob.call_tool("ask_agent", {"agent": "echo", "message": "unaffected"})
                tg.cancel_scope.cancel()
            # Once the long answer is gone (cancelled), Carol's slot is free again, on any replica.
            with anyio.fail_after(15):  # the first replica frees the slot when it sees the cancel
                while (
                    later := await carol.call_tool("ask_agent", {"agent": "echo", "message": "now"})
                ).is_error:
                    assert "already has 1 answer(s) streaming" in text_of(later)
                    await anyio.sleep(0.1)
    finally:
        faults(simulator, token_delay_ms=15)
    for refused in (second_call, on_sse):
        assert refused.is_error
        assert "concurrent-answer limit reached: carol already has 1 answer(s) streaming" in text_of(refused)
    assert not bystander.is_error and text_of(bystander).startswith("Echo (turn 1): unaffected")
    assert not later.is_error, text_of(later)


async def test_a_killed_replicas_answer_slots_expire(
    simulator: Proc, redis_server: Proc, redis_url: str
) -> None:
    erin = new_key()
    env = bridge_env(
        simulator,
        redis_server.port,
        BRIDGE_SCAN_MODE="off",
        BRIDGE_API_KEYS=f"erin:{hash_key(erin).hex()}:concurrency=1",
        BRIDGE_CONCURRENCY_LEASE_SECONDS="3",
    )
    raw = aioredis.from_url(redis_url, decode_responses=True)
    faults(simulator, token_delay_ms=100)
    started = anyio.Event()
    try:
        with running(start_bridge(env)) as doomed, running(start_bridge(env)) as survivor:
            async with anyio.create_task_group() as tg:

                async def answer_then_die() -> None:
                    with contextlib.suppress(Exception):  # its replica is killed under it
                        await _answering(erin, doomed, started)()

                tg.start_soon(answer_then_die)
                with anyio.fail_after(20):
                    await started.wait()
                async with mcp_client(survivor, erin) as client:
                    before = await client.call_tool("ask_agent", {"agent": "echo", "message": "x"})
                    doomed.stop(signal.SIGKILL)  # no finally runs: nothing releases the lease
                    killed_at = time.monotonic()
                    leases = await raw.zrange(slots_key("erin"), 0, -1, withscores=True)
                    still_held = await client.call_tool("ask_agent", {"agent": "echo", "message": "x"})
                    with anyio.fail_after(15):
                        while (
                            after := await client.call_tool("ask_agent", {"agent": "echo", "message": "x"})
                        ).is_error:
                            await anyio.sleep(0.2)
                    freed_after = time.monotonic() - killed_at
                tg.cancel_scope.cancel()
    finally:
        faults(simulator, token_delay_ms=15)
        await raw.aclose()
    assert before.is_error and "concurrent-answer limit reached" in text_of(before)
    assert len(leases) == 1  # the dead replica's lease, scored by when it expires
    assert still_held.is_error and "concurrent-answer limit reached" in text_of(still_held)
    assert not after.is_error, text_of(after)
    assert freed_after <= 3 + 2


# --- the shared slots themselves (two limiters = two replicas) ----------------------------------


def limiter(redis_url: str, lease_seconds: float = 30.0) -> Limiter:
    """A limiter with a Redis pool of its own, as each replica has."""
    return build_limiter("1000/minute", 2, {}, RedisPool.from_url(redis_url), lease_seconds)


async def test_two_limiters_on_one_redis_share_the_cap_and_release_on_exit(redis_url: str) -> None:
    one, two = limiter(redis_url), limiter(redis_url)
    assert one.slots is not None
    async with one.answer_slot("frank"), two.answer_slot("frank"):
        with pytest.raises(TooManyAnswers):
            async with one.answer_slot("frank"):
                pass
        with pytest.raises(TooManyAnswers):
            async with two.answer_slot("frank"):
                pass
        async with two.answer_slot("grace"):  # another principal has her own slots
            assert await one.slots.holders("frank") == 2
    assert await one.slots.holders("frank") == 0

    # A cancelled answer gives its slot back too.
    with anyio.CancelScope() as scope:
        async with one.answer_slot("frank"):
            scope.cancel()
            await anyio.sleep(1)
    assert await one.slots.holders("frank") == 0


async def test_a_lease_that_is_not_renewed_expires_and_a_held_one_does_not(redis_url: str) -> None:
    holder, other = limiter(redis_url, lease_seconds=1.0), limiter(redis_url, lease_seconds=1.0)
    assert holder.slots is not None
    # A crashed replica: it took a lease and never renewed it.
    assert await holder.slots.acquire("heidi", 2) is not None
    assert await holder.slots.acquire("heidi", 2) is not None
    with pytest.raises(TooManyAnswers):
        async with other.answer_slot("heidi"):
            pass
    await anyio.sleep(1.2)
    async with other.answer_slot("heidi"):
        # A live answer renews its lease, so it outlives the lease time.
        await anyio.sleep(1.5)
        assert await holder.slots.acquire("heidi", 1) is None


async def test_redis_down_falls_back_to_the_per_process_cap(caplog: pytest.LogCaptureFixture) -> None:
    down = limiter(f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="bridge.security.ratelimit"):
        async with down.answer_slot("ivan"), down.answer_slot("ivan"):
            with pytest.raises(TooManyAnswers):
                async with down.answer_slot("ivan"):
                    pass
        async with down.answer_slot("ivan"):
            pass
    warnings = [r.getMessage() for r in caplog.records if "capping per process" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per answer


async def test_request_counts_unavailable_is_said_once_with_where_and_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    down = limiter(f"redis://:hunter2@127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING, logger="bridge.security.ratelimit"):
        for _ in range(20):
            assert await down.retry_after("judy") is None  # served, not refused, while Redis is down
    warnings = [r.getMessage() for r in caplog.records if "rate-limit storage" in r.getMessage()]
    assert warnings == [
        f"rate-limit storage (Redis at 127.0.0.1:{port}) unavailable: Connection refused;"
        " requests are not limited until it is back"
    ]


def test_cluster_keys_keep_a_principal_in_one_slot() -> None:
    assert slots_key("alice") == "dmb-slots:{alice}"
    odd = slots_key("oauth:{weird}")
    assert odd.startswith("dmb-slots:{") and odd.count("{") == 1 and "weird" not in odd


async def _evalsha_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_busy_principal_pays_in_batches_and_two_replicas_never_exceed_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepaid hits that expire unused are dropped (the next test proves it); on a busy machine that
    # could happen mid-run more than once and waste more than the bound below allows, so here they
    # live for the whole run and the bound is exact.
    monkeypatch.setattr("bridge.security.ratelimit._PREPAID_SECONDS", 3600.0)
    # A Redis of its own, so the command count below is this test's alone.
    with running(start_redis()) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        replicas = [limiter(url), limiter(url)]
        counter = aioredis.from_url(url)
        allowed = 0

        async def callers(per_caller: int) -> None:
            async def caller(n: int) -> None:
                nonlocal allowed
                for i in range(per_caller):
                    if await replicas[(n + i) % 2].retry_after("judy") is None:
                        allowed += 1

            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(caller, n)

        try:
            await counter.config_resetstat()
            await callers(225)
            trips = await _evalsha_calls(counter)
            assert allowed == 900  # within the budget: every request served
            await callers(75)
        finally:
            await counter.aclose()
    # Far fewer round trips than requests (one per request before batching).
    assert trips < 900 / 4
    # 1,200 requests against a budget of 1,000: the budget holds across both replicas, and at most
    # a batch less one (10 - 1) per replica was paid for without being used.
    assert 1000 - 2 * 9 <= allowed <= 1000


async def test_prepaid_hits_left_unused_are_dropped_and_the_next_batch_is_smaller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bridge.security.ratelimit._PREPAID_SECONDS", 0.3)
    with running(start_redis()) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        one = limiter(url)
        counter = aioredis.from_url(url)
        try:
            for _ in range(40):  # batches 1, 2, 4, 8, 10, 10, ... of the 10 a 1,000 budget allows
                assert await one.retry_after("ken") is None
            (window,) = await counter.keys("*principal/ken/*")  # the shared counter: hits paid
            paid = int(await counter.get(window))
            await anyio.sleep(0.4)  # the leftovers expire
            before = await _evalsha_calls(counter)
            assert await one.retry_after("ken") is None
            assert await _evalsha_calls(counter) == before + 1  # paid again, not from the leftovers
        finally:
            await counter.aclose()
    assert paid == 1 + 2 + 4 + 8 + 10 + 10 + 10  # 40 used, 5 prepaid: never more than a batch ahead
