"""The fixed listings are built once per protocol version and then served from the cache, unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from bridge.mcp.server import BridgeMCPServer, build_mcp_server

ERAS = ["legacy", "auto"]  # 2025-11-25 handshake, and 2026-07-28 stateless


def counted_server() -> tuple[BridgeMCPServer, dict[str, int]]:
    """The bridge's MCP server, counting how often the SDK builds each listing."""

    def no_runtime() -> Any:
        raise AssertionError("listings need no runtime")

    server = build_mcp_server(no_runtime)
    calls = {"tools": 0, "prompts": 0, "templates": 0}
    for attr, key in (
        ("list_tools", "tools"),
        ("list_prompts", "prompts"),
        ("list_resource_templates", "templates"),
    ):
        original = getattr(server, attr)

        async def counting(*args: Any, _original: Any = original, _key: str = key, **kwargs: Any) -> Any:
            calls[_key] += 1
            return await _original(*args, **kwargs)

        setattr(server, attr, counting)
    return server, calls


@pytest.mark.parametrize("mode", ERAS)
async def test_listings_are_built_once_and_repeated_unchanged(mode: str) -> None:
    server, calls = counted_server()
    async with Client(server, mode=mode) as client:  # type: ignore[arg-type]
        tools = [await client.list_tools() for _ in range(3)]
        prompts = [await client.list_prompts() for _ in range(3)]
        templates = [await client.list_resource_templates() for _ in range(3)]
    assert calls == {"tools": 1, "prompts": 1, "templates": 1}
    assert {t.name for t in tools[0].tools} >= {"list_agents", "ask_agent", "get_conversation"}
    assert tools[0] == tools[1] == tools[2]
    assert [p.name for p in prompts[0].prompts] == ["chat_with_agent"]
    assert prompts[0] == prompts[2]
    assert templates[0].resource_templates and templates[0] == templates[2]


async def test_each_protocol_version_gets_its_own_listing() -> None:
    server, calls = counted_server()
    async with Client(server, mode="legacy") as legacy, Client(server, mode="auto") as modern:  # type: ignore[arg-type]
        old = await legacy.list_tools()
        new = await modern.list_tools()
        await legacy.list_tools()
        await modern.list_tools()
    # One build per version: the 2026-07-28 result carries fields (resultType) the older one lacks.
    assert calls["tools"] == 2
    assert [t.name for t in old.tools] == [t.name for t in new.tools]


async def test_a_request_with_a_cursor_is_not_answered_from_the_cache() -> None:
    server, calls = counted_server()
    async with Client(server, mode="auto") as client:
        await client.list_tools()
        await client.list_tools(cursor="next")
    assert calls["tools"] == 2
