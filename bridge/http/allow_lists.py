"""The Host/Origin allow-lists against DNS rebinding and cross-site requests: one pair of lists for
the SDK's checks on its transports and for `TransportGuardMiddleware` on every other route."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mcp.server.transport_security import TransportSecuritySettings

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def matches(value: str, allowed: list[str]) -> bool:
    """The SDK's rule: an exact match, or `base:*` for `base` with any port."""
    if value in allowed:
        return True
    return any(entry.endswith(":*") and value.startswith(entry[:-1]) for entry in allowed)


@dataclass(frozen=True)
class AllowLists:
    """The Host and Origin values accepted; `hosts` is None when the Host check is off."""

    hosts: list[str] | None
    origins: list[str]

    @classmethod
    def of(cls, hosts: Sequence[str], origins: Sequence[str]) -> AllowLists:
        """Loopback plus the configured values (BRIDGE_ALLOWED_HOSTS; BRIDGE_ALLOWED_ORIGINS and
        BRIDGE_CORS_ORIGINS). A host `*` turns the Host check off."""
        return cls(
            hosts=None if "*" in hosts else [*LOOPBACK_HOSTS, *hosts],
            origins=[*LOOPBACK_ORIGINS, *origins],
        )

    def transport_security(self) -> TransportSecuritySettings:
        """The same lists for the SDK's transports (`/mcp`, `/sse`, `/messages/`).

        With the Host check off (`BRIDGE_ALLOWED_HOSTS=*`, e.g. behind a proxy that checks Host) the
        SDK's checks are off on purpose; the guard middleware then still checks Origin on every route.
        """
        if self.hosts is None:
            return TransportSecuritySettings(enable_dns_rebinding_protection=False)
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=self.hosts, allowed_origins=self.origins
        )
