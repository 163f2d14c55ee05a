"""Client keys: who is calling. A key's name is the principal everything it creates belongs to.

Keys are configured as `name:sha256hex` (only the hash is stored); clients send the key itself as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. The client-auth middleware
(bridge/http/middleware/client_auth.py) hashes what it receives and compares it with every configured
hash in constant time (`match_key`). A match becomes the SDK's `AuthenticatedUser` (`user_for`), so
the MCP transports also bind each session to the key that opened it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limits import parse as parse_limit
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import Scope

KEY_PREFIX = "dmb_"
# The principal of stdio and of HTTP without BRIDGE_API_KEYS: the one local user.
LOCAL_PRINCIPAL = "local"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HASH_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ClientKey:
    """One configured key: its principal name and the sha256 of the key."""

    name: str
    sha256: bytes
    rate: str | None = None  # e.g. "60/minute": this key's own request rate
    concurrency: int | None = None  # this key's own cap on answers streaming at once


def hash_key(key: str) -> bytes:
    """The sha256 digest a key is stored as."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def new_key() -> str:
    """A fresh client key (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_keys(entries: Iterable[str]) -> list[ClientKey]:
    """Parse `name:sha256hex` entries; an entry `@/path` reads one entry per line from a file.

    Raises:
        ValueError: a malformed entry (the message names the entry's position, never its hash).
    """
    keys: list[ClientKey] = []
    lines: list[str] = []
    for entry in entries:
        entry = entry.strip()
        if entry.startswith("@"):
            text = Path(entry[1:]).read_text(encoding="utf-8")
            lines += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        elif entry:
            lines.append(entry)
    for number, line in enumerate(lines, start=1):
        name, _, rest = line.partition(":")
        digest, *options = rest.split(":")
        if not _NAME_RE.fullmatch(name) or not _HASH_RE.fullmatch(digest.lower()):
            raise ValueError(
                f"entry {number} is not name:sha256hex[:rate=N/period][:concurrency=N]"
                " (generate one with `dust-mcp-bridge keys new NAME`)"
            )
        keys.append(ClientKey(name=name, sha256=bytes.fromhex(digest), **_key_options(number, options)))
    names = [key.name for key in keys]
    if len(set(names)) != len(names):
        raise ValueError("two keys have the same name")
    return keys


def _key_options(number: int, options: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for option in options:
        field, _, value = option.partition("=")
        if field == "rate" and _rate_ok(value):
            parsed["rate"] = value
        elif field == "concurrency" and value.isdigit() and int(value) > 0:
            parsed["concurrency"] = int(value)
        else:
            raise ValueError(
                f"entry {number}: unknown or bad option {field!r} (rate=N/period or concurrency=N)"
            )
    return parsed


def _rate_ok(value: str) -> bool:
    try:
        parse_limit(value)
    except ValueError:
        return False
    return True


def match_key(presented: str, keys: list[ClientKey]) -> ClientKey | None:
    """The configured key `presented` is, compared in constant time against every key."""
    digest = hash_key(presented)
    found: ClientKey | None = None
    for key in keys:
        # No early exit: the time taken does not depend on which key (if any) matched.
        if hmac.compare_digest(digest, key.sha256):
            found = key
    return found


def presented_key(scope: Scope) -> str | None:
    """The key a request carries in `Authorization: Bearer` or `X-API-Key`, if any."""
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return api_key or None


def principal_of_scope(scope: Scope | None) -> str:
    """The principal a request acts for: its client key's name, or the local user."""
    user = scope.get("user") if scope is not None else None
    if isinstance(user, AuthenticatedUser):
        return str(user.access_token.client_id)
    return LOCAL_PRINCIPAL


def principal_of_request(request: object) -> str:
    """The principal of an HTTP request (set by the client-key middleware); stdio is the local user."""
    scope = getattr(request, "scope", None)
    return principal_of_scope(scope if isinstance(scope, dict) else None)


def user_for(name: str) -> AuthenticatedUser:
    """The SDK user for a principal (the token field holds no secret)."""
    return AuthenticatedUser(AccessToken(token=f"principal:{name}", client_id=name, scopes=[], subject=name))
