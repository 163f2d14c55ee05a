"""Command line: `dust-mcp-bridge serve | stdio | demo | simulator | agents | check | client-config`."""

from __future__ import annotations

import argparse
import errno
import gc
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import uvicorn

from bridge import __version__
from bridge.config import (
    ConfigError,
    Settings,
    describe_env_file,
    find_env_file,
    is_unsubstituted,
    load_settings,
    parse_workers,
    unsubstituted_variables,
)
from bridge.desktop import configured_in_extension, for_extension, serve_unconfigured
from bridge.observability.logging import configure_logging


def _settings(**overrides: Any) -> Settings:
    """The settings every command reads, the same way; says on stderr which `.env` it used."""
    return _settings_and_source(**overrides)[0]


def _settings_and_source(**overrides: Any) -> tuple[Settings, Path | None]:
    """The settings, and the `.env` file they were read from (None: the environment only)."""
    try:
        env_file = find_env_file()
        settings = load_settings(env_file, **overrides)
    except ConfigError as exc:
        print(f"dust-mcp-bridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"dust-mcp-bridge: settings from {describe_env_file(env_file)}", file=sys.stderr, flush=True)
    return settings, env_file


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold, for the log's masker."""
    secrets = [settings.dust_api_key.get_secret_value()] if settings.dust_api_key else []
    secrets += settings.store_keys
    if settings.metrics_key:
        secrets.append(settings.metrics_key.get_secret_value())
    if settings.redis_url:
        raw = urlsplit(settings.redis_url).password
        secrets += [secret for secret in {raw, unquote(raw or "")} if secret]
    return secrets


def configure_bridge_logging(settings: Settings) -> None:
    """Log as BRIDGE_LOG_LEVEL and BRIDGE_LOG_FORMAT say, masking every secret the settings hold."""
    configure_logging(settings.log_level, settings.log_format, configured_secrets(settings))


def freeze_startup_objects() -> None:
    """Move everything the imports and the app built out of the cyclic garbage collector's reach.

    Measured (docs/performance.md, "CPU per request"): the collector took 6-7% of the CPU of an
    ask_agent call, nearly half of it in full collections that walked those long-lived objects
    again and again. Frozen, they are never scanned; garbage made while serving is collected as before.
    Raising the young-generation threshold as well saved little more and made single pauses longer.
    """
    gc.collect()
    gc.freeze()


def cmd_serve(args: argparse.Namespace, *, force_demo: bool = False) -> None:
    """Serve `/mcp`, `/sse` and the health routes over HTTP, in one process or in `--workers` processes."""
    overrides: dict[str, Any] = {"BRIDGE_DEMO": "on"} if force_demo else {}
    if args.host is not None:
        overrides["BRIDGE_HOST"] = args.host
    if args.port is not None:
        overrides["BRIDGE_PORT"] = args.port
    if args.workers is not None:
        overrides["BRIDGE_WORKERS"] = args.workers
    settings = _settings(**overrides)
    configure_bridge_logging(settings)
    from bridge.workers import resolve_workers

    try:
        plan = resolve_workers(
            settings.workers, shared_store=bool(settings.redis_url), demo=settings.demo_active
        )
    except ConfigError as exc:
        print(f"dust-mcp-bridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if plan.note:
        print(f"dust-mcp-bridge: {plan.note}", file=sys.stderr, flush=True)
    settings = settings.model_copy(update={"workers": plan.count})
    if plan.count == 1:
        _serve_in_this_process(settings)
    else:
        _serve_with_workers(settings, plan.count, overrides)


def _serve_in_this_process(settings: Settings) -> None:
    """One process: the app built here, served by one uvicorn server."""
    from bridge.app import create_app
    from bridge.workers import uvicorn_options

    app = create_app(settings)
    # Bound before saying "listening": a port in use is then a clear error, not a false promise.
    listener = _listen(settings.host, settings.port)
    freeze_startup_objects()
    _say_listening(settings, listener.getsockname()[1], 1)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; by then everything has been
    # drained and closed, so that is a clean stop and should exit 0, not "killed by signal".
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    config = uvicorn.Config(app, **uvicorn_options(settings))
    uvicorn.Server(config).run(sockets=[listener])


def _serve_with_workers(settings: Settings, count: int, overrides: dict[str, Any]) -> None:
    """`count` worker processes on one socket, bound here; each builds its own app (bridge/workers.py)."""
    from bridge.workers import serve_workers

    listener = _listen(settings.host, settings.port)
    port = listener.getsockname()[1]
    _say_listening(settings, port, count)
    # The port really bound (--port 0 picks one) and the count decided here, for the workers to read.
    handed_down = {**overrides, "BRIDGE_PORT": port, "BRIDGE_WORKERS": count}
    raise SystemExit(serve_workers(settings, listener, count, {k: str(v) for k, v in handed_down.items()}))


def _say_listening(settings: Settings, port: int, workers: int) -> None:
    print(
        f"dust-mcp-bridge {__version__} listening on http://{_url_host(settings.host)}:{port}"
        f" with {workers} worker{'s' if workers > 1 else ''}"
        f" (MCP: /mcp, legacy SSE: /sse, status: /status)"
        + (" — DEMO MODE against the bundled Dust simulator" if settings.demo_active else ""),
        file=sys.stderr,
        flush=True,
    )


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`, or exit 1 with a sentence saying what to do."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = (
                "is in use by another process: stop it, or choose another port with --port or BRIDGE_PORT"
            )
        else:
            reason = f"cannot be opened: {exc.strerror or exc}"
        print(f"dust-mcp-bridge: {host} port {port} {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    listener.set_inheritable(True)
    return listener


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _stdio_settings(upload_roots: list[str]) -> Settings:
    """The settings, with the folders of `--upload-root` added to BRIDGE_UPLOAD_ROOTS.

    Raises:
        ConfigError: as `load_settings`.
    """
    env_file = find_env_file()
    settings = load_settings(env_file)
    roots = [root for root in upload_roots if not is_unsubstituted(root)]
    if roots:
        settings = load_settings(env_file, BRIDGE_UPLOAD_ROOTS=[*settings.upload_roots, *roots])
    print(f"dust-mcp-bridge: settings from {describe_env_file(env_file)}", file=sys.stderr, flush=True)
    left = unsubstituted_variables(os.environ)
    if left:
        print(f"dust-mcp-bridge: unset (no value in the settings form): {', '.join(left)}", file=sys.stderr)
    return settings


def cmd_stdio(args: argparse.Namespace) -> None:
    """MCP over stdin/stdout for Claude Desktop; nothing but protocol goes to stdout.

    Invalid settings exit with status 2 and one line on stderr, except in the Claude Desktop
    extension, which shows the user no log: there every tool call answers with the error instead.
    """
    try:
        settings = _stdio_settings(args.upload_root)
    except ConfigError as exc:
        print(f"dust-mcp-bridge: configuration error: {exc}", file=sys.stderr, flush=True)
        if not configured_in_extension(os.environ):
            raise SystemExit(2) from None
        print("dust-mcp-bridge: answering every tool call with it", file=sys.stderr, flush=True)
        serve_unconfigured(for_extension(str(exc)))
        return
    configure_bridge_logging(settings)
    from bridge.mcp.server import build_mcp_server
    from bridge.runtime import start_runtime

    async def run() -> None:
        async with start_runtime(settings) as runtime:
            mcp = build_mcp_server(
                lambda: runtime,
                agent_tools=settings.agent_tools,
                demo=settings.demo_active,
                state_keys=settings.request_state_keys,
            )
            await mcp.run_stdio_async()

    anyio.run(run)


def cmd_simulator(argv: list[str]) -> None:
    """Run the bundled Dust simulator on its own."""
    from bridge.simulator import main as simulator_main

    simulator_main(argv, prog="dust-mcp-bridge simulator")


def cmd_agents(args: argparse.Namespace) -> None:
    """Print the workspace's agents (checks the Dust credentials on the way)."""
    settings = _settings()
    configure_bridge_logging(settings)
    from bridge.dust.errors import DustError
    from bridge.runtime import start_runtime

    async def run() -> int:
        async with start_runtime(settings) as runtime:
            try:
                agents = await runtime.agents.list()
            except DustError as exc:
                print(exc.for_user(), file=sys.stderr)
                return 1
            for agent in agents:
                summary = (agent.description or "").strip().splitlines()[:1]
                print(f"{agent.s_id}\t{agent.name}\t{summary[0][:80] if summary else ''}")
            return 0

    raise SystemExit(anyio.run(run))


def cmd_check(args: argparse.Namespace) -> None:
    """Check the configuration, the calls the tools make to Dust, the context store and the scanner;
    with `--ask`, one whole turn. Exit 1 if anything failed."""
    settings = _settings()
    configure_bridge_logging(settings)
    from bridge.check import CheckReport, run_checks
    from bridge.runtime import start_runtime

    async def run() -> int:
        report = CheckReport()
        async with start_runtime(settings) as runtime:
            await run_checks(runtime, report, tuple(args.ask) if args.ask else None)
        return 1 if report.failures else 0

    raise SystemExit(anyio.run(run))


def cmd_client_config(args: argparse.Namespace) -> None:
    """Print what an MCP client needs to start this bridge, or to reach one over HTTP (never a key)."""
    from bridge.client_configs import ClientConfigError, Request, build

    # Demo on for reading only: the snippet is printed whether or not the credentials are complete.
    settings, env_file = _settings_and_source(BRIDGE_DEMO="on")
    url = args.url if args.url is not None else args.http
    try:
        snippet = build(Request(args.client, args.name, args.demo, url), settings, env_file)
    except ClientConfigError as exc:
        print(f"dust-mcp-bridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Labels and notes on stderr, so that stdout is only what goes into the client.
    for number, (label, text) in enumerate(snippet.blocks):
        if number:
            print(flush=True)
        print(label, file=sys.stderr, flush=True)
        print(text, flush=True)
    for note in snippet.notes:
        print(f"note: {note}", file=sys.stderr)


def cmd_keys_new_store_key(args: argparse.Namespace) -> None:
    """Print a fresh context-store encryption key."""
    from bridge.store.sealing import new_store_key

    print(new_store_key())
    print(
        "put it first in BRIDGE_STORE_ENCRYPTION_KEY (comma-separated); keep older keys after it until"
        " what they encrypted has expired",
        file=sys.stderr,
    )


def cmd_keys_new(args: argparse.Namespace) -> None:
    """Print a fresh client key and the BRIDGE_API_KEYS entry that accepts it (only its hash)."""
    from bridge.security.auth import hash_key, new_key, parse_keys

    key = new_key()
    entry = f"{args.name}:{hash_key(key).hex()}"
    try:
        parse_keys([entry])
    except ValueError:
        print(
            "dust-mcp-bridge: key names are letters, digits, '.', '_' and '-' (at most 64)", file=sys.stderr
        )
        raise SystemExit(2) from None
    print(f"key for {args.name} (give it to the client; it is not stored anywhere):\n  {key}")
    print(f"add this entry to BRIDGE_API_KEYS (comma-separated) or to a key file (one per line):\n  {entry}")


_DUST_ENV = """\
environment (also read from a .env file: BRIDGE_ENV_FILE, else ./.env, else the checkout's .env):
  DUST_API_KEY        a Dust workspace API key (sk-...); unset: demo mode, the bundled simulator
  DUST_WORKSPACE_ID   the workspace sId (the part after /w/ in your Dust URL)
  DUST_BASE_URL       https://dust.tt (default) or https://eu.dust.tt for EU workspaces
  BRIDGE_DEMO         auto (default), on (always the simulator) or off (a missing key is an error)
"""
_RUNTIME_ENV = """\
  REDIS_URL           the context store (unset: in this process only)
  CLAMD_URL           clamd (unset: Debian's unix:///var/run/clamav/clamd.ctl if present,
                      else tcp://127.0.0.1:3310)
  BRIDGE_SCAN_MODE    required (default: no clamd, no upload) or off
every setting, with its default: .env.example
"""
_CLIENT_CONFIG_HELP = """\
clients:
  claude-desktop  the claude_desktop_config.json entry (stdio)
  claude-code     the `claude mcp add` command line (stdio, or --http)
  cursor          the ~/.cursor/mcp.json entry and Cursor's install link (stdio, or --http)
  vscode          VS Code's mcp.json and its `code --add-mcp` one-liner (stdio, or --http)
  remote          any client and a bridge served over HTTP: URL, client-key header, mcp-remote entry
stdout holds only the snippet; stderr says where it goes. No key is ever printed: a key kept in a
.env file stays there (the entry names the file), else the snippet refers to it the client's way.
docs/clients/ has a page per client.
"""


def _worker_count(value: str) -> str:
    """`--workers`: checked as BRIDGE_WORKERS is, and handed on as that setting."""
    try:
        parse_workers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value.strip()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="dust-mcp-bridge", description="Dust agents as MCP tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    helpful: dict[str, Any] = {"formatter_class": argparse.RawDescriptionHelpFormatter}
    _add_serve(sub, helpful)
    stdio = sub.add_parser(
        "stdio", help="serve MCP over stdio (Claude Desktop)", epilog=_DUST_ENV + _RUNTIME_ENV, **helpful
    )
    # Claude Desktop passes a multiple-folder setting as one argument per folder (an environment
    # variable cannot hold the list): `--upload-root A B` and `--upload-root A --upload-root B` both work.
    stdio.add_argument(
        "--upload-root",
        nargs="*",
        action="extend",
        default=[],
        metavar="FOLDER",
        help="a folder path uploads may read, added to BRIDGE_UPLOAD_ROOTS (repeatable, several per use)",
    )
    # Its own options (--port, fault knobs, --help) belong to the simulator's parser: see main().
    sub.add_parser(
        "simulator", help="run the bundled Dust simulator (--help for its options)", add_help=False
    )
    sub.add_parser(
        "agents",
        help="list the workspace's agents",
        epilog=_DUST_ENV + "every setting: .env.example",
        **helpful,
    )
    check = sub.add_parser(
        "check",
        help="check the configuration, Dust (the calls the tools make), the context store and clamd",
        epilog=_DUST_ENV + _RUNTIME_ENV,
        **helpful,
    )
    check.add_argument(
        "--ask",
        nargs=2,
        metavar=("AGENT", "MESSAGE"),
        help="also ask AGENT (name or sId) MESSAGE in a new Dust conversation; print the answer, timings",
    )
    keys = sub.add_parser("keys", help="manage client keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="print a fresh client key and its config line")
    new.add_argument("name", help="the principal name (e.g. alice or ci-bot)")
    keys_sub.add_parser("new-store-key", help="print a fresh BRIDGE_STORE_ENCRYPTION_KEY key")
    _add_client_config(sub, helpful)
    return parser


def _add_serve(sub: Any, helpful: dict[str, Any]) -> None:
    """`serve` and `demo` (the same, against the bundled simulator)."""
    for name, help_text in (
        ("serve", "serve MCP over HTTP (/mcp and /sse)"),
        ("demo", "serve against the bundled Dust simulator"),
    ):
        p = sub.add_parser(name, help=help_text, epilog=_DUST_ENV + _RUNTIME_ENV, **helpful)
        p.add_argument("--host", default=None, help="listen address (BRIDGE_HOST, default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="listen port (BRIDGE_PORT, default 8080)")
        # Bare, BRIDGE_WORKERS decides (auto when unset): what the image's CMD says.
        p.add_argument(
            "--workers",
            nargs="?",
            type=_worker_count,
            default=None,
            const=None,
            metavar="N",
            help="worker processes: a number, or auto (one per core with REDIS_URL, else 1; demo: always 1);"
            " without N, or without the option, BRIDGE_WORKERS decides (default auto)",
        )


def _add_client_config(sub: Any, helpful: dict[str, Any]) -> None:
    """`client-config CLIENT` and its alias `claude-config` (= `client-config claude-desktop`)."""
    from bridge.client_configs import CLIENTS

    cc = sub.add_parser(
        "client-config",
        help="print what an MCP client needs to start this bridge, or to reach one over HTTP",
        epilog=_CLIENT_CONFIG_HELP,
        **helpful,
    )
    cc.add_argument("client", metavar="CLIENT", choices=CLIENTS, help=", ".join(CLIENTS))
    cc.add_argument(
        "--http",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help="connect to a bridge served over HTTP (claude-code, cursor, vscode); URL defaults to"
        " BRIDGE_PUBLIC_URL/mcp, else http://BRIDGE_HOST:BRIDGE_PORT/mcp",
    )
    cc.add_argument("--url", default=None, help="the bridge's MCP URL (for remote; implies --http)")
    alias = sub.add_parser("claude-config", help="the same as `client-config claude-desktop`")
    alias.set_defaults(client="claude-desktop", http=None, url=None)
    for parser in (cc, alias):
        parser.add_argument("--name", default="dust", help="the server's name in the client (default: dust)")
        parser.add_argument(
            "--demo", action="store_true", help="an entry for demo mode (the bundled Dust simulator, no key)"
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `dust-mcp-bridge` console script."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulator":
        cmd_simulator(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "serve":
        cmd_serve(args)
    elif args.command == "demo":
        cmd_serve(args, force_demo=True)
    elif args.command == "stdio":
        cmd_stdio(args)
    elif args.command == "agents":
        cmd_agents(args)
    elif args.command == "check":
        cmd_check(args)
    elif args.command in ("client-config", "claude-config"):
        cmd_client_config(args)
    elif args.command == "keys" and args.keys_command == "new-store-key":
        cmd_keys_new_store_key(args)
    elif args.command == "keys":
        cmd_keys_new(args)
