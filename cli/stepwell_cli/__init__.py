"""The `stepwell` command: a tenant's client for Stepwell's HTTP and WebSocket API, a local
replay of recorded runs, and an MCP server (`stepwell mcp`)."""

__version__ = "0.2.0"
