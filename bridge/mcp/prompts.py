"""The bridge's prompt: a chat with one Dust agent that keeps its conversation across turns."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage


def chat_with_agent(agent: str, topic: str = "") -> list[Message]:
    """Start a chat with one Dust agent, keeping the same conversation across turns."""
    about = f" about: {topic}" if topic else ""
    return [
        UserMessage(
            f"I want to chat with the Dust agent {agent!r}{about}. Use the ask_agent tool with"
            f" agent={agent!r} for each of my messages, and always pass the `conversation` value from the"
            " previous ask_agent result so the agent remembers our chat. Show me the agent's answers."
        )
    ]


def register_prompts(mcp: MCPServer[Any]) -> None:
    """Register the prompt on `mcp`."""
    mcp.prompt(name="chat_with_agent", title="Chat with a Dust agent")(chat_with_agent)
