"""Errors the bridge shows to an MCP client: each names its cause in words a user can act on."""

from __future__ import annotations


class BridgeError(Exception):
    """A failure worth telling the client about; `str()` is the message it sees (never a secret)."""

    code = "bridge_error"
