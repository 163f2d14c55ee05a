"""The prompt end to end: `chat_with_agent` from a running bridge, and bad prompt requests."""

from __future__ import annotations

import pytest
from mcp import Client

from tests.mcp.support import ERAS
from tests.procs import Proc

pytestmark = pytest.mark.usefixtures("reset_simulator")


async def test_chat_with_agent_prompt(bridge: Proc) -> None:
    async with Client(f"{bridge.url}/mcp") as client:
        prompt = await client.get_prompt("chat_with_agent", {"agent": "echo"})
    assert "ask_agent" in str(prompt.messages[0].content)


@pytest.mark.parametrize("mode", ERAS)
async def test_bad_prompt_requests_are_invalid_params_not_internal_errors(bridge: Proc, mode: str) -> None:
    from mcp.shared.exceptions import MCPError
    from mcp.types import INVALID_PARAMS

    log_before = len(bridge.log())
    async with Client(f"{bridge.url}/mcp", mode=mode) as client:
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("no_such_prompt", {})
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("chat_with_agent", {})
    assert unknown.value.error.code == INVALID_PARAMS
    assert "no_such_prompt" in unknown.value.error.message
    assert missing.value.error.code == INVALID_PARAMS
    assert "agent" in missing.value.error.message
    assert "Traceback" not in bridge.log()[log_before:]
