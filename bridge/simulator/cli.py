"""`python -m bridge.simulator`: serve the simulator with uvicorn."""

from __future__ import annotations

import argparse
import copy
import logging
import sys

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from bridge.simulator.app import create_app
from bridge.simulator.options import SimulatorOptions

_CUT_MESSAGE = "ASGI callable returned without completing response."


class _HideStreamCuts(logging.Filter):
    """uvicorn reports every deliberately cut stream (`cut_stream_after`) as an error; those are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _CUT_MESSAGE


def _parser(prog: str) -> argparse.ArgumentParser:
    defaults = SimulatorOptions()
    parser = argparse.ArgumentParser(prog=prog, description="Run the Dust API simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any `sk-...` key)")
    parser.add_argument(
        "--api-key-role",
        default=defaults.api_key_role,
        choices=["admin", "builder", "user"],
        help="role of the API key (Dust's default for a workspace key is builder)",
    )
    parser.add_argument("--workspace", default=defaults.workspace_id)
    parser.add_argument(
        "--public-url", default=None, help="base of conversation links (default: the listen address)"
    )
    parser.add_argument("--token-delay-ms", type=float, default=defaults.token_delay_ms)
    parser.add_argument("--no-redirect", action="store_true", help="stream on /api/v1 instead of a 307")
    parser.add_argument("--no-handshake", action="store_true", help="omit the dust-handshake frame")
    parser.add_argument("--events-per-connection", type=int, default=defaults.events_per_connection)
    parser.add_argument("--slow-seconds", type=float, default=defaults.slow_seconds)
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=defaults.long_seconds,
        help="how long the long-runner agent works (seconds)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m bridge.simulator") -> None:
    """Parse `argv` (default: the command line) and serve until interrupted. Logs go to stderr.
    `prog` is the command the help text names."""
    args = _parser(prog).parse_args(argv)
    options = SimulatorOptions(
        workspace_id=args.workspace,
        api_key=args.api_key,
        api_key_role=args.api_key_role,
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        redirect_sse=not args.no_redirect,
        handshake=not args.no_handshake,
        events_per_connection=args.events_per_connection,
        token_delay_ms=args.token_delay_ms,
        slow_seconds=args.slow_seconds,
        long_seconds=args.long_seconds,
    )
    log_config = copy.deepcopy(LOGGING_CONFIG)
    # uvicorn's access log goes to stdout by default; stdout is not ours to use.
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper())
    config = uvicorn.Config(
        create_app(options),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config,
        # Streams left open on purpose (after a cancel) must not hold up a shutdown for long.
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideStreamCuts())
    uvicorn.Server(config).run()
