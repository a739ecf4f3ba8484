"""The MCP gateway's pass-through (`/mcp/{server}`) driven by the official
Python `mcp` SDK, in both protocol revisions: 2025-11-25 (initialize, a
session id the gateway seals) and 2026-07-28 (discover, no session, headers
mirrored from the body). The backend is `tollgate mock`'s MCP server.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from conftest import API_KEY, MCP_SERVER


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


async def with_session(url: str, body, api_key: str = API_KEY):
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {api_key}"})
    async with client:
        async with streamable_http_client(url, http_client=client) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                return await body(session)


def mcp_url(gateway) -> str:
    return f"{gateway.data_url}/mcp/{MCP_SERVER}"


def test_legacy_session_lists_calls_reads_and_prompts_through_the_gateway(gateway):
    progress = []

    async def body(session: ClientSession):
        init = await session.initialize()
        assert init.server_info.name == "tollgate-mock"
        tools = await session.list_tools()
        names = sorted(t.name for t in tools.tools)
        assert names == ["add", "echo", "slow", "write_note"]
        result = await session.call_tool("add", {"a": 2, "b": 3.5})
        assert not result.is_error
        assert result.structured_content == {"sum": 5.5}
        echo = await session.call_tool("echo", {"text": "héllo"})
        assert echo.content[0].text == "héllo"

        async def on_progress(value, total, message):
            progress.append((value, total))

        slow = await session.call_tool("slow", {"steps": 3}, progress_callback=on_progress)
        assert slow.content[0].text == "done after 3 steps"
        resources = await session.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["mock://notes/readme"]
        read = await session.read_resource("mock://notes/readme")
        assert "notes" in read.contents[0].text
        prompt = await session.get_prompt("greeting", {"name": "Ada"})
        assert "Ada" in prompt.messages[0].content.text
        return True

    assert run(with_session(mcp_url(gateway), body))
    assert progress == [(1, 3), (2, 3), (3, 3)], "progress notifications streamed through"


def test_modern_requests_are_stateless_and_discoverable(gateway):
    async def body(session: ClientSession):
        found = await session.discover()
        assert "2026-07-28" in found.supported_versions
        tools = await session.list_tools()
        assert "echo" in {t.name for t in tools.tools}
        result = await session.call_tool("echo", {"text": "stateless"})
        assert result.content[0].text == "stateless"
        return session.protocol_version

    version = run(with_session(mcp_url(gateway), body))
    assert version == "2026-07-28"


def post(url: str, message: dict, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(message).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_the_gateway_refuses_what_must_not_reach_the_backend(gateway):
    url = mcp_url(gateway)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    # No key: 401 with a challenge, as a JSON-RPC error.
    status, body = post(url, listing, {})
    assert status == 401 and body["error"]["code"] == -32600, body
    # A session id the gateway did not seal: 404, start over.
    status, body = post(url, listing, {**auth, "Mcp-Session-Id": "forged"})
    assert status == 404, body
    # 2026-07-28: Mcp-Name must match the body.
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": meta}}
    headers = {**auth, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
    status, body = post(url, call, {**headers, "Mcp-Name": "write_note"})
    assert status == 400 and body["error"]["code"] == -32020 and body["id"] == 2, body
    status, body = post(url, call, {**headers, "Mcp-Name": "echo"})
    assert status == 200 and body["result"]["content"][0]["text"] == "x", body
    # A browser page from elsewhere.
    status, body = post(url, listing, {**auth, "Origin": "https://evil.example"})
    assert status == 403, body
    # An unknown server.
    status, body = post(f"{gateway.data_url}/mcp/nope", listing, auth)
    assert status == 404, body
