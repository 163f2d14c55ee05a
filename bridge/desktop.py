"""The bridge as a Claude Desktop extension (bundle/manifest.json): what it says, and where it points.

Claude Desktop starts the extension with the values of its settings form in the environment and sets
`BRIDGE_CONFIGURED_IN=claude-desktop-extension`. The user never sees a variable name there, and a
stdio server that exits on bad settings shows only a generic failure, so:

- a configuration error is answered to every tool call (`serve_unconfigured`), naming the form's
  fields (`for_extension`) and where the form is;
- a missing clamd is refused with how to install ClamAV on this system, or how to switch scanning off
  in the form (`scanner_help`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

import anyio

from bridge.config import ConfiguredIn
from bridge.errors import InvalidInput

#: The manifest's user_config titles, by the variable each one sets (tests/deploy/test_bundle.py
#: holds them to bundle/manifest.json).
FIELD_TITLES: Mapping[str, str] = {
    "DUST_API_KEY": "Dust API key",
    "DUST_WORKSPACE_ID": "Workspace ID",
    "DUST_BASE_URL": "Region",
    "BRIDGE_UPLOAD_ROOTS": "Folders the bridge may read",
    "BRIDGE_SCAN_MODE": "Scan mode",
    "CLAMD_URL": "ClamAV address",
}
EXTENSION_NAME = "Dust agents"
WHERE_SETTINGS_ARE = f"Claude Desktop → Settings → Extensions → {EXTENSION_NAME} → Configure"

_INSTALL_CLAMAV = {
    "darwin": (
        "install ClamAV with `brew install clamav`, then run `freshclam` and start its daemon, clamd,"
        ' listening on 127.0.0.1:3310 (or put its socket in "ClamAV address")'
    ),
    "win32": (
        "install ClamAV with the Windows installer from clamav.net, then run freshclam and start clamd"
        ' listening on 127.0.0.1:3310 (or put its address in "ClamAV address")'
    ),
    "linux": (
        "install ClamAV's daemon with `sudo apt-get install clamav-daemon` (Debian, Ubuntu; the bridge"
        " finds its socket by itself) or your distribution's clamd package"
    ),
}


class NotConfigured(InvalidInput):
    """The extension's settings are invalid (the user's to fix, retrying will not help); the message
    says which field and where to fix it."""

    code = "not_configured"


def configured_in_extension(environ: Mapping[str, str]) -> bool:
    """Whether Claude Desktop started this process as the extension (read before any setting is valid)."""
    value = environ.get("BRIDGE_CONFIGURED_IN", "").strip().lower()
    return value == ConfiguredIn.CLAUDE_DESKTOP_EXTENSION.value


def for_extension(config_error: str) -> str:
    """A configuration error (`VARIABLE: problem; ...`) in the words of the extension's settings form."""
    variables = "|".join(re.escape(name) for name in FIELD_TITLES)
    named = re.sub(
        rf"(^|; )({variables}): ", lambda m: f'{m.group(1)}"{FIELD_TITLES[m.group(2)]}": ', config_error
    )
    return (
        f"The {EXTENSION_NAME} extension is not set up correctly, so it cannot reach Dust: {named}."
        f" Fix it in {WHERE_SETTINGS_ARE}; the extension restarts when you save."
    )


def scanner_help(platform: str = sys.platform) -> str:
    """What to do when clamd cannot be reached: install ClamAV on this system, or switch scanning off."""
    install = _INSTALL_CLAMAV.get(platform, _INSTALL_CLAMAV["linux"])
    return (
        "Every file is scanned by ClamAV before it reaches Dust, and no ClamAV daemon answers on this"
        f' computer: {install}. Or upload without scanning: set "Scan mode" to off in {WHERE_SETTINGS_ARE}'
    )


def serve_unconfigured(sentence: str) -> None:
    """MCP over stdio where every tool call is answered with `sentence` (and the instructions say it)."""
    from bridge.mcp.server import build_mcp_server
    from bridge.mcp.services import Services

    def services() -> Services:
        raise NotConfigured(sentence)

    mcp = build_mcp_server(services, notice=sentence)
    anyio.run(mcp.run_stdio_async)
