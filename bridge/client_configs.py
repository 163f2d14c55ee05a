"""What an MCP client needs to start this bridge, or to reach one served over HTTP.

One snippet per client, each in the form that client reads (`dust-mcp-bridge client-config CLIENT`):

    claude-desktop  the claude_desktop_config.json entry (stdio)
    claude-code     the `claude mcp add` command line (stdio, or HTTP with `--http`)
    cursor          the mcp.json entry and Cursor's install link (stdio, or HTTP)
    vscode          VS Code's mcp.json and its `code --add-mcp` one-liner (stdio, or HTTP)
    remote          any client, against a bridge served over HTTP: the URL, the client-key header,
                    and an `mcp-remote` stdio entry for clients that speak only stdio

No snippet holds a secret. A Dust key kept in a `.env` file stays there (the entry names the file
in BRIDGE_ENV_FILE); otherwise the snippet refers to the key in the client's own way (an
environment variable Claude Code or Cursor fills in, a VS Code input it asks for once and keeps in
its secret storage) or, for Claude Desktop, which has neither, holds a placeholder. Client keys are
never known here (the bridge keeps only their hashes), so HTTP snippets refer to them the same way.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from dotenv import dotenv_values  # python-dotenv: pydantic-settings reads .env files with it

from bridge.config import ENV_FILE_VARIABLE, Settings

CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode", "remote")
# Clients that start a local bridge over stdio or connect to one over HTTP (`--http`).
BOTH_TRANSPORTS = ("claude-code", "cursor", "vscode")

DEFAULT_DUST_URL = "https://dust.tt"
KEY_PLACEHOLDER = "<your Dust API key, sk-...>"
WORKSPACE_PLACEHOLDER = "<your workspace sId>"
# Where a client finds the client key of an HTTP bridge (`dust-mcp-bridge keys new NAME` prints one).
CLIENT_KEY_VARIABLE = "DUST_BRIDGE_KEY"
# mcp-remote's header, whole in one variable: some clients split arguments on spaces (its README).
CLIENT_AUTH_VARIABLE = "DUST_BRIDGE_AUTH"
CLIENT_KEY_PLACEHOLDER = "<your client key, dmb_...>"
CURSOR_INSTALL_LINK = "cursor://anysphere.cursor-deeplink/mcp/install"
# VS Code asks for these the first time it starts the server, and keeps the answers (mcp.json "inputs").
VSCODE_INPUTS = {
    "dust-api-key": ("Dust API key (sk-...)", True),
    "dust-workspace-id": ("Dust workspace sId (the part after /w/ in your Dust URL)", False),
    "dust-bridge-key": ("dust-mcp-bridge client key (dmb_...)", True),
}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VSCODE_INPUT = re.compile(r"\$\{input:([a-z-]+)\}")


class ClientConfigError(ValueError):
    """A request no working snippet answers (the command line exits 2 with the message)."""


@dataclass(frozen=True)
class Request:
    """What the user asked for: a client, the server's name in it, demo mode, or a bridge URL."""

    client: str
    name: str = "dust"
    demo: bool = False
    url: str | None = None  # set: connect over HTTP to this bridge


@dataclass
class Snippet:
    """Blocks for stdout (a blank line between two), each with a label for stderr that says where it
    goes, and notes for stderr."""

    blocks: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Credentials:
    """What a stdio bridge needs to reach Dust, without the key itself."""

    demo: bool = False
    env_file: Path | None = None  # a .env file that holds DUST_API_KEY
    workspace: str | None = None  # the sId to write into the entry (None: a reference to it)
    needs_workspace: bool = True  # False: the env file holds it
    base_url: str | None = None  # to write into the entry (None: the default, or the env file's)


@dataclass(frozen=True)
class References:
    """How a client's config refers to a value it holds itself (an environment variable, an input)."""

    key: str
    workspace: str


def credentials(settings: Settings, env_file: Path | None, demo: bool = False) -> Credentials:
    """What a stdio entry carries: demo mode, the `.env` file that holds the key, or the settings
    a reference to the key goes with. An env file is named only if it holds the key itself (one
    that does not would start the bridge without it)."""
    if demo:
        return Credentials(demo=True)
    in_file = _file_settings(env_file)
    holds_key = "DUST_API_KEY" in in_file
    from_file = in_file if holds_key else {}
    base_url = settings.dust_base_url
    return Credentials(
        env_file=env_file if holds_key else None,
        workspace=settings.dust_workspace_id,
        needs_workspace="DUST_WORKSPACE_ID" not in from_file,
        base_url=None if base_url == DEFAULT_DUST_URL or "DUST_BASE_URL" in from_file else base_url,
    )


def _file_settings(env_file: Path | None) -> dict[str, str]:
    """The non-empty variables of `env_file`, by upper-case name (settings are case-insensitive)."""
    if env_file is None:
        return {}
    values = dotenv_values(env_file, encoding="utf-8")
    return {name.upper(): value for name, value in values.items() if value and value.strip()}


def stdio_env(creds: Credentials, refs: References) -> dict[str, str]:
    """The `env` of a stdio entry."""
    if creds.demo:
        return {"BRIDGE_DEMO": "on"}
    env = {ENV_FILE_VARIABLE: str(creds.env_file)} if creds.env_file else {"DUST_API_KEY": refs.key}
    if creds.needs_workspace:
        env["DUST_WORKSPACE_ID"] = creds.workspace or refs.workspace
    if creds.base_url:
        env["DUST_BASE_URL"] = creds.base_url
    return env


def bridge_command() -> list[str]:
    """The command that starts this bridge over stdio, by absolute path (clients do not see the
    shell's PATH): the `dust-mcp-bridge` script installed beside this interpreter, else the
    interpreter itself with `-m bridge`."""
    script = shutil.which("dust-mcp-bridge", path=str(Path(sys.executable).parent))
    return [str(Path(script).absolute()), "stdio"] if script else [sys.executable, "-m", "bridge", "stdio"]


def default_url(settings: Settings) -> str:
    """Where this bridge serves MCP over HTTP: BRIDGE_PUBLIC_URL, else BRIDGE_HOST and BRIDGE_PORT
    (a wildcard address is reached on loopback)."""
    if settings.public_url:
        return f"{settings.public_url.rstrip('/')}/mcp"
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/mcp"


def needs_client_key(settings: Settings, url: str) -> bool:
    """True when a client must send a client key: the bridge here has keys, or the URL is not
    loopback (a bridge reachable from elsewhere must have them: docs/security.md)."""
    return bool(settings.api_keys) or not _is_loopback(urlsplit(url).hostname or "")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host, else ClientConfigError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientConfigError(
            f"--http/--url needs the bridge's http(s) URL, e.g. http://127.0.0.1:8080/mcp (got {url!r})"
        )
    return url


@dataclass(frozen=True)
class Style:
    """How a client refers to the Dust key in a stdio entry, and the sentence that says so."""

    refs: References
    fills: str


DESKTOP = Style(
    References(KEY_PLACEHOLDER, WORKSPACE_PLACEHOLDER),
    "put your Dust API key in place of the placeholder (the bridge never prints it)",
)
CLAUDE_CODE = Style(
    References("${DUST_API_KEY}", "${DUST_WORKSPACE_ID}"),
    "Claude Code fills in ${DUST_API_KEY} from its own environment each time it starts the bridge"
    " (the key is not written into its config): export DUST_API_KEY where you run claude",
)
CURSOR = Style(
    References("${env:DUST_API_KEY}", "${env:DUST_WORKSPACE_ID}"),
    "Cursor fills in ${env:DUST_API_KEY} from the environment it was started from: export"
    " DUST_API_KEY before you start Cursor",
)
VSCODE = Style(
    References("${input:dust-api-key}", "${input:dust-workspace-id}"),
    "VS Code asks for the key the first time it starts the server and keeps it in its secret storage",
)


def stdio_notes(creds: Credentials, style: Style) -> list[str]:
    """What to tell the user about the key of a stdio entry (stderr)."""
    if creds.demo:
        return ["demo mode: the bridge answers from its bundled Dust simulator (no key needed)"]
    if creds.env_file is not None:
        return [f"the Dust key stays in {creds.env_file}: the entry names that file ({ENV_FILE_VARIABLE})"]
    return [
        f"{style.fills}; or keep the key in a .env file and run this again: the entry then names the file"
    ]


def key_notes(url: str, needs_key: bool, fills: str) -> list[str]:
    """What to tell the user about the client key of an HTTP snippet (stderr)."""
    notes = []
    if needs_key:
        notes.append(
            f"the bridge keeps only hashes of its client keys, so the snippet cannot hold one: {fills}"
            " (the key `dust-mcp-bridge keys new NAME` printed)"
        )
    if urlsplit(url).scheme == "http" and not _is_loopback(urlsplit(url).hostname or ""):
        notes.append(
            "plain http:// beyond this machine sends the key and every answer in clear: serve the bridge"
            " behind TLS (docs/deployment.md)"
        )
    return notes


def claude_desktop(creds: Credentials, name: str) -> Snippet:
    """The claude_desktop_config.json entry. It runs this very interpreter (`python -m bridge
    stdio`), so it works from a virtualenv that is not on Claude Desktop's PATH."""
    env = stdio_env(creds, DESKTOP.refs)
    entry = {"mcpServers": {name: {"command": sys.executable, "args": ["-m", "bridge", "stdio"], "env": env}}}
    label = (
        "merge into claude_desktop_config.json (Settings > Developer > Edit Config),"
        " then restart Claude Desktop:"
    )
    return Snippet([(label, json.dumps(entry, indent=2))], stdio_notes(creds, DESKTOP))


def claude_code_stdio(creds: Credentials, name: str) -> Snippet:
    """`claude mcp add` for a bridge Claude Code starts itself, for every project (user scope)."""
    args = ["claude", "mcp", "add", "--scope", "user", name]
    for variable, value in stdio_env(creds, CLAUDE_CODE.refs).items():
        args += ["-e", f"{variable}={value}"]
    args += ["--", *bridge_command()]
    label = "run (then `claude mcp list` shows it connected):"
    return Snippet([(label, shlex.join(args))], stdio_notes(creds, CLAUDE_CODE))


def claude_code_http(url: str, needs_key: bool, name: str) -> Snippet:
    """`claude mcp add --transport http` for a bridge served over HTTP."""
    args = ["claude", "mcp", "add", "--scope", "user", "--transport", "http", name, url]
    if needs_key:
        args += ["--header", f"Authorization: Bearer ${{{CLIENT_KEY_VARIABLE}}}"]
    fills = (
        f"Claude Code fills in ${{{CLIENT_KEY_VARIABLE}}} from its own environment:"
        " export it where you run claude"
    )
    label = "run (then `claude mcp list` shows it connected):"
    return Snippet([(label, shlex.join(args))], key_notes(url, needs_key, fills))


def cursor_stdio(creds: Credentials, name: str) -> Snippet:
    """Cursor's mcp.json entry and install link for a bridge Cursor starts itself."""
    command, *args = bridge_command()
    server = {"command": command, "args": args, "env": stdio_env(creds, CURSOR.refs)}
    return _cursor(name, server, stdio_notes(creds, CURSOR))


def cursor_http(url: str, needs_key: bool, name: str) -> Snippet:
    """Cursor's mcp.json entry and install link for a bridge served over HTTP."""
    server: dict[str, Any] = {"url": url}
    if needs_key:
        server["headers"] = {"Authorization": f"Bearer ${{env:{CLIENT_KEY_VARIABLE}}}"}
    fills = f"Cursor fills in ${{env:{CLIENT_KEY_VARIABLE}}} from the environment it was started from"
    return _cursor(name, server, key_notes(url, needs_key, fills))


def _cursor(name: str, server: dict[str, Any], notes: list[str]) -> Snippet:
    entry = {"mcpServers": {name: server}}
    return Snippet(
        [
            (
                "add to ~/.cursor/mcp.json (every project) or .cursor/mcp.json (this project):",
                json.dumps(entry, indent=2),
            ),
            ("or open this link to have Cursor install it:", cursor_link(name, server)),
        ],
        notes,
    )


def cursor_link(name: str, server: dict[str, Any]) -> str:
    """Cursor's install link: the server's mcp.json object as base64 JSON (cursor.com/docs/mcp/install-links),
    percent-encoded so that no `+` of the base64 reads as a space."""
    config = base64.b64encode(json.dumps(server, separators=(",", ":")).encode()).decode()
    return f"{CURSOR_INSTALL_LINK}?{urlencode({'name': name, 'config': config})}"


def vscode_stdio(creds: Credentials, name: str) -> Snippet:
    """VS Code's mcp.json and `code --add-mcp` for a bridge VS Code starts itself."""
    command, *args = bridge_command()
    server = {"type": "stdio", "command": command, "args": args, "env": stdio_env(creds, VSCODE.refs)}
    return _vscode(name, server, stdio_notes(creds, VSCODE))


def vscode_http(url: str, needs_key: bool, name: str) -> Snippet:
    """VS Code's mcp.json and `code --add-mcp` for a bridge served over HTTP."""
    server: dict[str, Any] = {"type": "http", "url": url}
    if needs_key:
        server["headers"] = {"Authorization": "Bearer ${input:dust-bridge-key}"}
    fills = "VS Code asks for it the first time it connects and keeps it in its secret storage"
    return _vscode(name, server, key_notes(url, needs_key, fills))


def _vscode(name: str, server: dict[str, Any], notes: list[str]) -> Snippet:
    inputs = vscode_inputs(server)
    document = ({"inputs": inputs} if inputs else {}) | {"servers": {name: server}}
    one_server = {"name": name, **server} | ({"inputs": inputs} if inputs else {})
    add_mcp = shlex.join(["code", "--add-mcp", json.dumps(one_server, separators=(",", ":"))])
    label = ".vscode/mcp.json (this workspace), or MCP: Open User Configuration (every workspace):"
    return Snippet(
        [(label, json.dumps(document, indent=2)), ("or add it to your user profile in one line:", add_mcp)],
        notes,
    )


def vscode_inputs(server: dict[str, Any]) -> list[dict[str, Any]]:
    """The mcp.json `inputs` that the server's `${input:...}` references name."""
    used = sorted(set(_VSCODE_INPUT.findall(json.dumps(server))))
    return [
        {
            "type": "promptString",
            "id": name,
            "description": VSCODE_INPUTS[name][0],
            "password": VSCODE_INPUTS[name][1],
        }
        for name in used
    ]


def remote(url: str, needs_key: bool, name: str) -> Snippet:
    """For any client and a bridge served over HTTP: the URL, the header, and an mcp-remote entry
    (github.com/geelen/mcp-remote) for clients that start only stdio servers."""
    blocks = [("the bridge's MCP endpoint (Streamable HTTP):", url)]
    args = ["-y", "mcp-remote", url]
    if urlsplit(url).scheme == "http" and urlsplit(url).hostname not in ("localhost", "127.0.0.1"):
        args.append("--allow-http")  # mcp-remote refuses other plain-http URLs without it
    server: dict[str, Any] = {"command": "npx", "args": args}
    if needs_key:
        blocks.append(
            ("the header it needs on every request:", f"Authorization: Bearer {CLIENT_KEY_PLACEHOLDER}")
        )
        # No space in the argument: some clients split arguments on spaces (mcp-remote's README).
        args += ["--header", f"Authorization:${{{CLIENT_AUTH_VARIABLE}}}"]
        server["env"] = {CLIENT_AUTH_VARIABLE: f"Bearer {CLIENT_KEY_PLACEHOLDER}"}
    label = "for a client that starts only stdio servers, an mcp-remote entry (needs Node 18+ and npx):"
    blocks.append((label, json.dumps({"mcpServers": {name: server}}, indent=2)))
    fills = f"put the key in place of {CLIENT_KEY_PLACEHOLDER}"
    return Snippet(blocks, key_notes(url, needs_key, fills))


_STDIO: dict[str, Callable[[Credentials, str], Snippet]] = {
    "claude-desktop": claude_desktop,
    "claude-code": claude_code_stdio,
    "cursor": cursor_stdio,
    "vscode": vscode_stdio,
}
_HTTP: dict[str, Callable[[str, bool, str], Snippet]] = {
    "claude-code": claude_code_http,
    "cursor": cursor_http,
    "vscode": vscode_http,
    "remote": remote,
}


def build(request: Request, settings: Settings, env_file: Path | None) -> Snippet:
    """The snippet `request` asks for, from the settings (and the `.env` file they were read from).

    Raises:
        ClientConfigError: an unknown client, a bad name or URL, or a combination no client takes.
    """
    check_request(request)
    if request.client == "remote" or request.url is not None:
        url = check_url(request.url or default_url(settings))
        return _HTTP[request.client](url, needs_client_key(settings, url), request.name)
    return _STDIO[request.client](credentials(settings, env_file, request.demo), request.name)


def check_request(request: Request) -> None:
    """ClientConfigError unless some snippet answers `request`."""
    if request.client not in CLIENTS:
        raise ClientConfigError(f"unknown client {request.client!r}: choose from {', '.join(CLIENTS)}")
    if not _NAME.fullmatch(request.name):
        raise ClientConfigError("--name takes letters, digits, '_' and '-' (at most 64)")
    http = request.client == "remote" or request.url is not None
    if http and request.client == "claude-desktop":
        raise ClientConfigError(
            "Claude Desktop starts its servers over stdio: for a bridge served over HTTP use"
            " `client-config remote` (its mcp-remote entry)"
        )
    if http and request.demo:
        raise ClientConfigError(
            "--demo is for a bridge the client starts itself; serve one over HTTP with `dust-mcp-bridge demo`"
        )
