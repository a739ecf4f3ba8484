"""A small MCP server that speaks only the legacy HTTP+SSE transport (MCP
2024-11-05), written with the official Python SDK (`MCPServer.sse_app()`):
GET /sse opens a session whose `endpoint` event names /messages/?session_id=...
where the client POSTs its messages. Tools: `echo`, `add`, and `count`
(progress and log notifications).

    python legacy_sse_server.py PORT API_KEY

Every request must carry `X-Api-Key: API_KEY` (401 otherwise). Listens on
127.0.0.1:PORT and prints `listening data=http://...` once it accepts
connections, like the tollgate processes the tests start.
"""

from __future__ import annotations

import sys

import uvicorn
from announce import announce_in_background
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("legacy", instructions="A legacy HTTP+SSE server.")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def echo(text: str) -> str:
    """Says `text` back."""
    return text


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def add(a: int, b: int) -> int:
    """The sum of `a` and `b`."""
    return a + b


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def count(ctx: Context, to: int) -> str:
    """Counts to `to`, reporting progress and logging each step."""
    for step in range(1, to + 1):
        await ctx.info(f"counted {step}")
        await ctx.report_progress(step, to, f"step {step}")
    return f"counted to {to}"


def require_key(app, key: str):
    """ASGI middleware: HTTP requests without `X-Api-Key: key` get a 401."""
    expected = key.encode()

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-api-key") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"missing or wrong X-Api-Key"})
            return
        await app(scope, receive, send)

    return guarded


if __name__ == "__main__":
    port, key = int(sys.argv[1]), sys.argv[2]
    announce_in_background(port)
    app = require_key(server.sse_app(host="127.0.0.1"), key)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
