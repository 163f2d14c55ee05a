"""dust-mcp-bridge: Dust agents as MCP tools."""

__version__ = "0.1.0"
