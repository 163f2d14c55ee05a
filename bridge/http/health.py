"""`GET /healthz` (the process answers) and `GET /readyz` (its dependencies answer, with reasons).

Readiness checks the context store, Dust and the virus scanner at once, each within
`_READY_CHECK_SECONDS`, and keeps the answer for `_READY_CACHE_SECONDS` so that probes from several
places cost one check. What it last found is also shown on /status (`Readiness.last_checks`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge.dust.errors import DustError
from bridge.http.services import Services
from bridge.store.base import StoreUnavailable
from bridge.uploads.clamav import ScannerUnavailable

_READY_CHECK_SECONDS = 3.0
_READY_CACHE_SECONDS = 2.0

# One dependency's state ("ok", "unavailable" or "off") and, when unavailable, why.
_Finding = tuple[str, str | None]


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def _store(services: Services) -> _Finding:
    try:
        with anyio.fail_after(_READY_CHECK_SECONDS):
            await services.store.ping()
    except StoreUnavailable as exc:
        return "unavailable", str(exc)
    except TimeoutError:
        return "unavailable", "context store did not answer"
    return "ok", None


async def _dust(services: Services) -> _Finding:
    try:
        with anyio.fail_after(_READY_CHECK_SECONDS):
            await services.dust.probe()
    except DustError as exc:
        return "unavailable", f"Dust: {exc.type}: {exc.message}"
    except TimeoutError:
        return "unavailable", "Dust did not answer in time"
    return "ok", None


async def _scanner(services: Services) -> _Finding:
    if not services.uploads.scan_required:
        return "off", None
    try:
        with anyio.fail_after(_READY_CHECK_SECONDS):
            await services.uploads.ping_scanner()
    except (ScannerUnavailable, TimeoutError):
        return "unavailable", "virus scanner (clamd) is unreachable at CLAMD_URL"
    return "ok", None


_CHECKS: dict[str, Callable[[Services], Awaitable[_Finding]]] = {
    "store": _store,
    "dust": _dust,
    "scanner": _scanner,
}


async def check_ready(services: Services) -> tuple[int, dict[str, Any]]:
    """Check every dependency at once: 200 and their states, or 503 with the reasons too."""
    findings: dict[str, _Finding] = {}  # in the order the checks finished

    async def check(name: str) -> None:
        findings[name] = await _CHECKS[name](services)

    async with anyio.create_task_group() as tg:
        for name in _CHECKS:
            tg.start_soon(check, name)
    checks = {name: state for name, (state, _) in findings.items()}
    reasons = [reason for _, reason in findings.values() if reason is not None]
    for dependency, state in checks.items():
        if state != "off":
            services.metrics.dependency_up.labels(dependency=dependency).set(1 if state == "ok" else 0)
    if reasons:
        return 503, {"status": "not_ready", "reason": "; ".join(reasons), "checks": checks}
    return 200, {"status": "ready", "checks": checks}


class Readiness:
    """`GET /readyz`, with its last answer kept for a moment and shown on /status."""

    def __init__(self, services: Callable[[], Services]) -> None:
        self._services = services
        self._cache: tuple[float, int, dict[str, Any]] | None = None

    async def readyz(self, request: Request) -> JSONResponse:
        """Readiness: 200 when the store, Dust and the scanner answer, else 503 with the reasons."""
        services = self._services()
        now = time.monotonic()
        cached = self._cache
        if cached is not None and now - cached[0] < _READY_CACHE_SECONDS:
            return JSONResponse(cached[2], status_code=cached[1])
        status, body = await check_ready(services)
        self._cache = (now, status, body)
        return JSONResponse(body, status_code=status)

    def last_checks(self) -> dict[str, Any]:
        """What the last check found (store, dust, scanner) and how long ago; `checked: False` before."""
        if self._cache is None:
            return {"checked": False}
        checked_at, _, body = self._cache
        return {"checked_seconds_ago": round(time.monotonic() - checked_at, 1), **body.get("checks", {})}
