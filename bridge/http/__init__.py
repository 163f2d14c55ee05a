"""The HTTP face: the plain routes, problem+json, and one module per middleware.

Routes: `health` (/healthz, /readyz), `status`, `metrics`, `openapi`, `uploads`. Errors: `problems`
(the one translation of the error tree, registered once as the app's exception handler). Shared by
the middleware (`middleware/`): `paths`, `allow_lists`, `jsonrpc` (refusals on the MCP endpoints),
`request_ids`, `sse_sessions`. What the routes read of the running bridge: `services` (protocols;
bridge/app.py wires the runtime in).
"""
