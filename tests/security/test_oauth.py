"""OAuth resource-server mode: JWTs verified against a JWKS served on loopback; the protected-resource
metadata route; bad tokens refused with a challenge that points at the metadata."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.helpers import text_of
from tests.procs import Proc, bridge_env, free_port, running, start_bridge

AUDIENCE = "dust-mcp-bridge"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """A JWKS endpoint on loopback publishing SIGNING_KEY's public half (kid k1)."""
    jwk = json.loads(RSAAlgorithm.to_jwk(SIGNING_KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def bridge(simulator: Proc, issuer: str) -> Iterator[Proc]:
    port = free_port()
    env = bridge_env(
        simulator,
        BRIDGE_OAUTH_ISSUER=issuer,
        BRIDGE_OAUTH_AUDIENCE=AUDIENCE,
        BRIDGE_OAUTH_JWKS_URL=f"{issuer}/jwks.json",
        BRIDGE_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    with running(start_bridge(env, port=port)) as proc:
        yield proc


def token(issuer: str, sub: str = "user-1", *, key: Any = SIGNING_KEY, **overrides: Any) -> str:
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": sub,
        "exp": int(time.time()) + 300,
        "scope": "agents:ask",
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def client(bridge: Proc, bearer: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
    return Client(streamable_http_client(f"{bridge.url}/mcp", http_client=http))


async def test_a_valid_token_is_a_principal_of_its_own(bridge: Proc, issuer: str) -> None:
    async with client(bridge, token(issuer, "user-1")) as alice:
        first = await alice.call_tool("ask_agent", {"agent": "echo", "message": "oauth hello"})
    handle = (first.structured_content or {})["conversation"]
    async with client(bridge, token(issuer, "user-2")) as bob:
        stolen = await bob.call_tool("ask_agent", {"agent": "echo", "message": "x", "conversation": handle})
    assert text_of(first).startswith("Echo (turn 1): oauth hello")
    assert stolen.is_error and "unknown or expired conversation handle" in text_of(stolen)
    assert '"principal": "oauth:user-1"' in bridge.log()


@pytest.mark.parametrize(
    "bad",
    [
        "wrong audience",
        "wrong issuer",
        "expired",
        "foreign key",
        "alg none",
        "no subject",
    ],
)
def test_bad_tokens_are_refused_with_a_challenge(bridge: Proc, issuer: str, bad: str) -> None:
    bearer = {
        "wrong audience": lambda: token(issuer, aud="someone-else"),
        "wrong issuer": lambda: token(issuer, iss="https://evil.example"),
        "expired": lambda: token(issuer, exp=int(time.time()) - 10),
        "foreign key": lambda: token(issuer, key=OTHER_KEY),
        "alg none": lambda: jwt.encode(
            {"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 300},
            None,
            algorithm="none",
            headers={"kid": "k1"},
        ),
        "no subject": lambda: jwt.encode(
            {"iss": issuer, "aud": AUDIENCE, "exp": int(time.time()) + 300},
            SIGNING_KEY,
            algorithm="RS256",
            headers={"kid": "k1"},
        ),
    }[bad]()
    response = httpx2.post(
        f"{bridge.url}/mcp", headers={"Authorization": f"Bearer {bearer}"}, json={}, timeout=10
    )
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'resource_metadata="{bridge.url}/.well-known/oauth-protected-resource/mcp"' in challenge


def test_protected_resource_metadata_is_served(bridge: Proc, issuer: str) -> None:
    metadata = httpx2.get(f"{bridge.url}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
    assert metadata["resource"] == f"{bridge.url}/mcp"
    assert [a.rstrip("/") for a in metadata["authorization_servers"]] == [issuer]
