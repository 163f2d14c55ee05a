"""`python -m bridge ...` is the same as the `dust-mcp-bridge` command."""

from bridge.cli import main

main()
