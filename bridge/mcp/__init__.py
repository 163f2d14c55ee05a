"""The MCP face: the server (server.py) with its tools (tools.py, each call wrapped once by
calls.py), resources (resources.py) and prompt (prompts.py); who a request comes from (caller.py);
what it needs of the runtime (services.py); the `/mcp` endpoint (endpoint.py); the fixed-listing
cache (listing_cache.py); and every use of an SDK or uvicorn private name (internals.py)."""
