"""No secret reaches a log line or a response: the one masker (bridge/observability/redact.py), what
it masks for the logs and for Dust's errors alike, then the failure scenarios of a running bridge
configured with known secrets."""

from __future__ import annotations

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bridge.dust.errors import sanitize
from bridge.observability.redact import MASK, redact
from bridge.security.auth import hash_key, new_key
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


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # What dust/errors.py's sanitize masked before there was one masker...
        ("Key sk-0123456789abcdef failed", "Key sk-*** failed"),
        ("short sk-abc key", "short sk-*** key"),
        ("leaked Bearer abc.def.ghi here", "leaked Bearer *** here"),
        ("auth: bearer a;b", "auth: bearer ***;b"),
        # ...what the log filter masked...
        ("x-api-key: dmb_AbCdEf0123456789xyz", "x-api-key: ***"),
        ("token dmb_AbCdEf0123456789xyz used", "token dmb_*** used"),
        (
            "headers {'Authorization': 'Bearer eyJhbGciOi.payload.sig'}",
            "headers {'Authorization': 'Bearer ***'}",
        ),
        (
            "connect redis://default:s3cr3tpass@redis:6379/0 failed",
            "connect redis://default:***@redis:6379/0 failed",
        ),
        ("a key_sk-0123456789 glued after an underscore", "a key_sk-*** glued after an underscore"),
        # ...and a Basic credential, which the header rule used to leave readable behind its scheme.
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        # Words with "sk-" inside stay readable (agent names, file names in the audit log).
        (
            "x-zendesk-user-id for Risk-Analyst in task-list.pdf",
            "x-zendesk-user-id for Risk-Analyst in task-list.pdf",
        ),
    ],
)
def test_one_masker_covers_what_both_maskers_did(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_configured_secrets_are_masked_longest_first_whatever_their_length() -> None:
    assert redact("pw=abc, long=abcdef", ["abc", "abcdef"]) == "pw=***, long=***"
    assert redact("nothing to hide", ["", "zz"]) == "nothing to hide"


def test_dust_errors_and_logs_mask_alike() -> None:
    text = "Authorization: Bearer sk-0123456789 from redis://u:pw1234@h dmb_AbCdEf0123 topsecretvalue"
    assert sanitize(text, ["topsecretvalue"]) == redact(text, ["topsecretvalue"])
    assert sanitize("a\n\n b " + text) == "a b " + redact(text)


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
