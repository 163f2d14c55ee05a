"""Trusted proxy identity: the user an authenticating proxy in front of the bridge names in a header.

Off unless `BRIDGE_PRINCIPAL_HEADER` names the header (oauth2-proxy's `X-Auth-Request-Email`,
`X-Forwarded-User`, `Remote-User`...). The header is believed only on a connection whose peer (the
address that connected, before any X-Forwarded-For) is in `BRIDGE_PRINCIPAL_PROXIES`: anyone else
could write it. From such a proxy, a well-formed value becomes the principal `proxy:<value>`, so
proxy users never share conversations with client keys (plain names) or OAuth subjects (`oauth:`).
A missing, empty, repeated or malformed value is refused (the proxy let through a request it did not
authenticate, or sends something the bridge cannot use as a name), never taken as the local user.

The client-auth middleware (bridge/http/middleware/client_auth.py) decides when the header applies
(a client key or bearer token, when configured, wins) and what is answered and audited.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import Scope

PROXY_PREFIX = "proxy:"
# Longer than any e-mail address (254) or directory user name; a principal stays one readable token.
MAX_USER_CHARS = 256
# Besides letters and digits (any script): what e-mail addresses, Kerberos principals (user/host@REALM)
# and directory names (DOMAIN\\user) are made of. No space, comma, semicolon, quote or bracket: a value
# with those is a list, a display name or a mistake, not one user.
_PUNCTUATION = frozenset(".-_@+=~'!#$%&*/?^`{|}\\")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyUserRefused(ValueError):
    """The trusted proxy named no usable user; `reason` is a short word for the audit log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """IP addresses or networks (`10.0.0.5`, `10.0.0.0/8`, `fd00::/8`), host bits allowed.

    Raises:
        ValueError: an entry is neither (the message quotes it: addresses are not secrets).
    """
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def user_name_ok(value: str) -> bool:
    """Whether `value` can be a proxy user's name: 1 to MAX_USER_CHARS letters, digits and the
    punctuation of addresses, no whitespace or control characters."""
    return 0 < len(value) <= MAX_USER_CHARS and all(ch.isalnum() or ch in _PUNCTUATION for ch in value)


@dataclass(frozen=True)
class ProxyIdentity:
    """Which header names the user, and which peers may set it."""

    header: str  # as configured, for messages
    proxies: tuple[Network, ...]

    @property
    def _name(self) -> bytes:
        return self.header.lower().encode("latin-1")

    def values(self, scope: Scope) -> list[bytes]:
        """Every occurrence of the header in the request (ASGI names are lower case)."""
        return [value for name, value in scope.get("headers") or [] if name == self._name]

    def trusts(self, peer: str | None) -> bool:
        """Whether the connecting address is one of the authenticating proxies."""
        if not peer:
            return False  # a unix socket, or no address at all
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
        return any(address in network for network in self.proxies)

    def principal(self, values: list[bytes]) -> str:
        """The principal of the user the trusted proxy named (`values`: every occurrence of the header).

        Raises:
            ProxyUserRefused: no header, an empty one, several, or a value that is no user name.
        """
        if not values:
            raise ProxyUserRefused(
                f"the authenticating proxy named no user (no {self.header} header), so the bridge cannot"
                " tell who is calling; sign in through the proxy, or have it pass the header",
                "proxy_user_missing",
            )
        if len(values) > 1:
            raise ProxyUserRefused(
                f"the authenticating proxy sent {self.header} more than once, so the bridge cannot tell"
                " which user is calling",
                "proxy_user_repeated",
            )
        user = _decoded(values[0])
        if user == "":
            raise ProxyUserRefused(
                f"the authenticating proxy sent an empty {self.header} header, so the bridge cannot tell"
                " who is calling",
                "proxy_user_empty",
            )
        if user is None or not user_name_ok(user):
            raise ProxyUserRefused(
                f"the {self.header} header the authenticating proxy sent is not a user name the bridge"
                f" accepts (1 to {MAX_USER_CHARS} letters, digits and . - _ @ + and similar punctuation;"
                " no spaces, commas or control characters)",
                "proxy_user_malformed",
            )
        return PROXY_PREFIX + user


def claimed_user(values: list[bytes]) -> str | None:
    """What an untrusted caller claimed to be, for the audit log: the value when it is one well-formed
    user name (bounded, printable), else None (nothing the caller wrote is logged as it is)."""
    if len(values) != 1:
        return None
    user = _decoded(values[0])
    return user if user is not None and user_name_ok(user) else None


def _decoded(raw: bytes) -> str | None:
    """The header value as text (UTF-8, as proxies send non-ASCII names), trimmed; None if undecodable."""
    try:
        return raw.decode("utf-8").strip(" \t")
    except UnicodeDecodeError:
        return None
