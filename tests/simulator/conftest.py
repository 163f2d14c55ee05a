"""The `client` fixture: an HTTP client on a freshly reset simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.procs import Proc
from tests.simulator.support import AUTH, configure


@pytest.fixture
async def client(simulator: Proc) -> AsyncIterator[httpx2.AsyncClient]:
    """A client on a freshly reset simulator, with fast token pacing."""
    async with httpx2.AsyncClient(base_url=simulator.url, headers=AUTH, timeout=10.0) as http:
        (await http.post("/_sim/reset")).raise_for_status()
        await configure(http, token_delay_ms=0.5)
        yield http
