"""A small MCP server for the aggregation tests, written with the official
Python SDK (`MCPServer`, Streamable HTTP): notes that can be searched (a read
tool), added (a write tool) and indexed (progress and log notifications), a
resource per note, and a prompt.

    python notes_server.py PORT

Listens on 127.0.0.1:PORT at /mcp and prints `listening data=http://...`
once it accepts connections, like the tollgate processes the tests start.
"""

from __future__ import annotations

import sys

from announce import announce_in_background
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("notes", instructions="Team notes: search before adding.")
NOTES: dict[str, str] = {"welcome": "Welcome to the notes server.", "oncall": "Pager rotates on Mondays."}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def search_notes(query: str) -> list[str]:
    """Names of the notes whose text contains `query`."""
    return sorted(name for name, text in NOTES.items() if query.lower() in text.lower())


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def add_note(name: str, text: str) -> str:
    """Stores a note (a write)."""
    NOTES[name] = text
    return f"stored {name}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def index_notes(ctx: Context) -> str:
    """Re-indexes every note, reporting progress and logging as it goes."""
    total = len(NOTES)
    for step, name in enumerate(sorted(NOTES), start=1):
        await ctx.info(f"indexing {name}")
        await ctx.report_progress(step, total, f"indexed {name}")
    return f"indexed {total} notes"


@server.resource("notes://{name}")
def note(name: str) -> str:
    """One note's text."""
    return NOTES.get(name, "")


@server.resource("notes://index/all")
def all_notes() -> str:
    """Every note, one per line."""
    return "\n".join(f"{name}: {text}" for name, text in sorted(NOTES.items()))


@server.prompt()
def summarize(topic: str) -> str:
    """Asks for a summary of the notes about `topic`."""
    return f"Summarize the team notes about {topic}."


if __name__ == "__main__":
    port = int(sys.argv[1])
    announce_in_background(port)
    server.run(transport="streamable-http", host="127.0.0.1", port=port)
