"""The app as a whole: its wiring (middleware order), demo mode, the production switch, Redis outages,
an answer that cannot be stored, and a graceful stop. Health, readiness and status:
tests/http/test_health.py."""

from __future__ import annotations

import httpx2
from mcp import Client

from bridge.app import create_app
from bridge.config import load_settings
from bridge.security.auth import hash_key
from tests.helpers import stats, text_of
from tests.http.test_health import wait_ready
from tests.procs import Proc, bridge_env, free_port, running, start_bridge, start_redis

# The middleware, outermost first, with every optional one configured (CORS, client keys).
MIDDLEWARE_ORDER = [
    "ForwardedMiddleware",
    "TrimHeaderValuesMiddleware",
    "HttpMetricsMiddleware",
    "RequestContextMiddleware",
    "CORSMiddleware",
    "TransportGuardMiddleware",
    "ClientKeyMiddleware",
    "RateLimitMiddleware",
    "JsonRpcGuardMiddleware",
]


def test_the_middleware_runs_in_its_documented_order() -> None:
    configured = load_settings(
        BRIDGE_CORS_ORIGINS="https://app.example.com", BRIDGE_API_KEYS=f"web:{hash_key('k').hex()}"
    )
    assert [m.cls.__name__ for m in create_app(configured).user_middleware] == MIDDLEWARE_ORDER
    # Without CORS origins and client keys, those two are left out and the rest keep their order.
    optional = {"CORSMiddleware", "ClientKeyMiddleware"}
    plain = [m.cls.__name__ for m in create_app(load_settings()).user_middleware]
    assert plain == [name for name in MIDDLEWARE_ORDER if name not in optional]


async def test_demo_mode_says_so_and_answers_without_a_key() -> None:
    with running(start_bridge({"BRIDGE_HEARTBEAT_SECONDS": "1"})) as bridge:
        async with httpx2.AsyncClient() as http:
            status = (await http.get(f"{bridge.url}/status")).json()
        async with Client(f"{bridge.url}/mcp") as client:
            result = await client.call_tool("ask_agent", {"agent": "echo", "message": "demo"})
        log = bridge.log()
    assert status["mode"] == "demo"
    assert "DEMO MODE" in status["warning"]
    assert "DEMO MODE" in log
    assert text_of(result).startswith("Echo (turn 1): demo")


async def test_production_switch_refuses_to_start_without_a_key() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--port", str(free_port())],
        env={"BRIDGE_DEMO": "off", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "DUST_API_KEY is required when BRIDGE_DEMO=off" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


async def test_redis_down_at_start_and_mid_run_gives_clear_errors_and_recovers(
    simulator: Proc, clamd: Proc
) -> None:
    redis_port = free_port()
    with running(start_bridge(bridge_env(simulator, redis_port, clamd))) as bridge:
        # Redis is not running yet: the bridge is alive but not ready, and says why.
        body = await wait_ready(bridge.url, 503)
        assert "Redis" in body["reason"]
        async with Client(f"{bridge.url}/mcp") as client:
            conversations_before = stats(simulator)["conversations"]
            down = await client.call_tool("ask_agent", {"agent": "echo", "message": "hi"})
            assert down.is_error and "context store (Redis) is unreachable" in text_of(down)
            # Refused before Dust did any work: nothing was posted that could not be remembered.
            assert stats(simulator)["conversations"] == conversations_before
            with running(start_redis(port=redis_port)) as redis:
                await wait_ready(bridge.url, 200)
                first = await client.call_tool("ask_agent", {"agent": "echo", "message": "up"})
                assert not first.is_error, text_of(first)
                handle = (first.structured_content or {})["conversation"]
                redis.stop()
                mid = await client.call_tool(
                    "ask_agent", {"agent": "echo", "message": "down again", "conversation": handle}
                )
                assert mid.is_error and "unreachable" in text_of(mid)
            with running(start_redis(port=redis_port)):
                await wait_ready(bridge.url, 200)
                after = await client.call_tool("ask_agent", {"agent": "echo", "message": "back"})
        assert not after.is_error, text_of(after)
        assert bridge.popen.poll() is None


async def test_an_answer_whose_conversation_cannot_be_stored_still_arrives_and_says_so(
    simulator: Proc,
) -> None:
    # A full Redis (maxmemory reached, no eviction) answers PING and reads but refuses writes: the
    # bridge's check passes, Dust takes the question, then storing the new conversation fails. The
    # answer must reach the client anyway, saying the handle will not work, instead of an error
    # that makes the user ask again (a second question in Dust).
    import redis

    with (
        running(start_redis()) as redis_proc,
        running(start_bridge(bridge_env(simulator, redis_proc.port))) as bridge,
    ):
        admin = redis.Redis(port=redis_proc.port)
        async with Client(f"{bridge.url}/mcp") as client:
            earlier = await client.call_tool("ask_agent", {"agent": "echo", "message": "before"})
            handle = (earlier.structured_content or {})["conversation"]
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
            try:
                fresh = await client.call_tool("ask_agent", {"agent": "echo", "message": "while full"})
                continued = await client.call_tool(
                    "ask_agent", {"agent": "echo", "message": "still full", "conversation": handle}
                )
            finally:
                admin.config_set("maxmemory", "0")
            after = await client.call_tool(
                "ask_agent", {"agent": "echo", "message": "space again", "conversation": handle}
            )
        admin.close()
    assert not fresh.is_error, text_of(fresh)
    assert fresh.content[0].text == "Echo (turn 1): while full"  # type: ignore[union-attr]
    body = fresh.structured_content or {}
    assert body["remembered"] is False
    assert "conversation not remembered: context store (Redis) failed" in text_of(fresh)
    assert body["dust_conversation_id"] in text_of(fresh) or (body["url"] and body["url"] in text_of(fresh))
    # A conversation the store already held goes on: its handle worked while Redis was full and after.
    assert not continued.is_error, text_of(continued)
    assert (continued.structured_content or {})["remembered"] is True
    assert continued.content[0].text == "Echo (turn 2): still full"  # type: ignore[union-attr]
    assert not after.is_error and after.content[0].text.startswith("Echo (turn ")  # type: ignore[union-attr]
    assert "Dust conversation" in bridge.log() and "failed to record it" in bridge.log()


async def test_sigterm_lets_a_streaming_answer_finish_then_exits_cleanly(simulator: Proc) -> None:
    from tests.helpers import answer_through_sigterm, faults

    faults(simulator, token_delay_ms=40)
    with running(start_bridge(bridge_env(simulator, BRIDGE_SHUTDOWN_GRACE_SECONDS="60"))) as bridge:
        result, exit_code = await answer_through_sigterm(bridge, "finish me " * 20)
    assert not result.is_error, text_of(result)
    assert result.content[0].text == "Echo (turn 1): " + ("finish me " * 20).strip()  # type: ignore[union-attr]
    assert exit_code == 0
    faults(simulator, token_delay_ms=15)
