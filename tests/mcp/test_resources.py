"""The resources end to end: an agent's card read from a running bridge (conversation transcripts are
read in test_tools.py, uploads in tests/uploads/)."""

from __future__ import annotations

import pytest
from mcp import Client

from tests.procs import Proc

pytestmark = pytest.mark.usefixtures("reset_simulator")


async def test_agent_card_resource(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        card = await client.read_resource("dust://agents/echo000001")
    assert '"name": "echo"' in card.contents[0].text  # type: ignore[union-attr]
