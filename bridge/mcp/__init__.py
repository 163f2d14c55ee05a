"""The MCP face: the server with its tools, resources and prompt, the `/mcp` endpoint, the
fixed-listing cache."""
