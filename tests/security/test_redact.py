"""No secret reaches a log line or a response: the redaction filter, then the failure scenarios of a
running bridge configured with known secrets."""

from __future__ import annotations

import logging

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bridge.security.auth import hash_key, new_key
from bridge.security.redact import MASK, RedactingFilter, redact
from tests.helpers import faults, text_of
from tests.procs import Proc, bridge_env, free_port, running, start_bridge

DUST_KEY = "sk-knownsecret0123456789abcdef"
CLIENT_KEY = new_key()
REDIS_PASSWORD = "hunter2-redis-pass"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("calling Dust with sk-abcdef1234567890", "sk-abcdef1234567890"),
        ("headers {'Authorization': 'Bearer eyJhbGciOi.payload.sig'}", "eyJhbGciOi.payload.sig"),
        ("x-api-key: dmb_AbCdEf0123456789xyz", "dmb_AbCdEf0123456789xyz"),
        ("connect redis://default:s3cr3tpass@redis:6379/0 failed", "s3cr3tpass"),
        ("custom configured value topsecretvalue here", "topsecretvalue"),
    ],
)
def test_redact_masks_every_secret_shape(text: str, secret: str) -> None:
    masked = redact(text, ["topsecretvalue"])
    assert secret not in masked
    assert MASK in masked


def test_the_filter_masks_arguments_exception_text_and_reprs() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "failed with %r", (("sk-inrepr12345678",),), None
    )
    try:
        raise RuntimeError("boom: Bearer sk-inexception999999")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter(["sk-inrepr12345678"]).filter(record)
    rendered = logging.Formatter().format(record)
    assert "sk-inrepr12345678" not in rendered and "sk-inexception999999" not in rendered
    assert "RuntimeError" in rendered  # the traceback itself is kept


async def test_failure_scenarios_leak_no_secret_into_logs_or_responses(
    simulator: Proc, redis_server: Proc
) -> None:
    secrets = (DUST_KEY, CLIENT_KEY, REDIS_PASSWORD, "dmb_wrongguess000000")
    env = bridge_env(
        simulator,
        BRIDGE_API_KEYS=f"ops:{hash_key(CLIENT_KEY).hex()}",
        DUST_API_KEY=DUST_KEY,
        # A password-bearing URL to a Redis that is not there: the store is down.
        REDIS_URL=f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        CLAMD_URL=f"tcp://127.0.0.1:{free_port()}",
        BRIDGE_LOG_LEVEL="DEBUG",
        # Every ask looks its agent up at Dust, so Dust's refusals surface although the store is
        # down (a new conversation is refused for that only after the lookup).
        BRIDGE_AGENTS_CACHE_SECONDS="0",
    )
    seen: list[str] = []
    with running(start_bridge(env)) as bridge:
        seen.append(httpx2.get(f"{bridge.url}/readyz", timeout=10).text)
        seen.append(httpx2.get(f"{bridge.url}/status", timeout=10).text)
        seen.append(
            httpx2.post(f"{bridge.url}/mcp", headers={"Authorization": "Bearer dmb_wrongguess000000"}).text
        )
        seen.append(
            httpx2.post(
                f"{bridge.url}/v1/uploads",
                headers={"X-API-Key": CLIENT_KEY},
                files={"file": ("a.txt", b"hello", "text/plain")},
                timeout=30,
            ).text
        )
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=60)
        async with Client(streamable_http_client(f"{bridge.url}/mcp", http_client=http)) as client:
            seen.append(
                text_of(await client.call_tool("ask_agent", {"agent": "echo", "message": "store down"}))
            )
            faults(simulator, api_key="sk-adifferentkey000")  # Dust now refuses our key
            seen.append(text_of(await client.call_tool("ask_agent", {"agent": "dust", "message": "refused"})))
            faults(simulator, api_key=None, down=True)  # Dust is down: 503s, retries, breaker
            seen.append(text_of(await client.call_tool("ask_agent", {"agent": "dust", "message": "down"})))
            faults(simulator, down=False)
        log = bridge.log()
    readyz, status, unauthorized, upload, store_down, refused, dust_down = seen
    assert '"store":"unavailable"' in readyz and '"scanner":"unavailable"' in readyz
    assert '"client_keys":"required"' in status
    assert '"type":"unauthorized"' in unauthorized
    assert '"type":"scanner_unavailable"' in upload
    assert "context store (Redis) is unreachable" in store_down
    assert "Dust refused the bridge's credentials (HTTP 401" in refused
    assert "HTTP 503 service_unavailable" in dust_down
    for secret in secrets:
        assert secret not in log, f"a secret reached the log: {secret[:6]}..."
        for body in seen:
            assert secret not in body, f"a secret reached a response: {secret[:6]}..."
