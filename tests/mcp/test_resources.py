"""The resources end to end: an agent's card read from a running bridge, and what a read that fails
answers (conversation transcripts are read in test_tools.py, uploads in tests/uploads/)."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.procs import Proc

pytestmark = pytest.mark.usefixtures("reset_simulator")


async def test_agent_card_resource(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        card = await client.read_resource("dust://agents/echo000001")
    assert '"name": "echo"' in card.contents[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("dust://agents/nosuchagent", "no active agent named or with sId 'nosuchagent'"),
        ("dust://conversations/dmc_" + "A" * 32, "unknown or expired conversation handle"),
        (
            "bridge://uploads/upl_AAAAAAAAAAAAAAAAAAAAAA",
            "unknown or expired upload upl_AAAAAAAAAAAAAAAAAAAAAA",
        ),
    ],
    ids=["agent", "conversation", "upload"],
)
async def test_a_failed_read_is_refused_with_the_errors_own_words(bridge: Proc, uri: str, said: str) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        with pytest.raises(MCPError, match=said):
            await client.read_resource(uri)
