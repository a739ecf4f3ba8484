"""Translation between MCP eras, driven by the official Python `mcp` SDK.

Two `tollgate mock` MCP servers of one era each (`--mcp-era`): one that
speaks only 2025-11-25 (initialize, sessions) and one that speaks only
2026-07-28 (no handshake). Without the gateway, a modern client cannot use
the first and a legacy client cannot use the second (the spec's
compatibility matrix). Through `/mcp/{path}` both work in the client's own
era: the SDK's `discover()` keeps it modern, `initialize()` keeps it legacy.
"""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from conftest import Proc, start


@pytest.fixture(scope="module")
def era_gateway(workdir):
    legacy = start("mock-legacy", ["mock", "--listen", "127.0.0.1:0", "--mcp-era", "legacy"], workdir / "mock-legacy")
    modern = start("mock-modern", ["mock", "--listen", "127.0.0.1:0", "--mcp-era", "modern"], workdir / "mock-modern")
    directory = workdir / "gateway-eras"
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tollgate.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: tollgate.dev/v1alpha1
            kind: AIGateway
            metadata: {{name: eras}}
            spec: {{}}
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: MCPServer
            metadata: {{name: old}}
            spec:
              gatewayRef: {{name: eras}}
              url: {legacy.addrs["data"]}/mcp
              translateRevisions: true
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: MCPServer
            metadata: {{name: new}}
            spec:
              gatewayRef: {{name: eras}}
              url: {modern.addrs["data"]}/mcp
              translateRevisions: true
            """
        )
    )
    gateway = start(
        "gateway-eras",
        ["gateway", "--config", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        directory,
    )
    yield {"gateway": gateway, "legacy": legacy, "modern": modern}
    for proc in (gateway, legacy, modern):
        assert proc.stop() == 0, proc.stderr_tail()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


async def with_session(url: str, body):
    client = create_mcp_http_client()
    async with client:
        async with streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                return await body(session)


def test_a_modern_client_stays_modern_in_front_of_a_legacy_only_server(era_gateway):
    async def direct(session: ClientSession):
        await session.discover()

    # Without the gateway the legacy-only server cannot be discovered.
    with pytest.raises(Exception):
        run(with_session(f"{era_gateway['legacy'].addrs['data']}/mcp", direct))

    async def body(session: ClientSession):
        found = await session.discover()
        assert "2026-07-28" in found.supported_versions
        assert found.capabilities.tools is not None
        tools = await session.list_tools()
        assert {"echo", "add", "write_note", "slow"} <= {t.name for t in tools.tools}
        result = await session.call_tool("add", {"a": 2, "b": 3.5})
        assert result.structured_content == {"sum": 5.5}
        progress = []

        async def on_progress(value, total, message):
            progress.append(value)

        slow = await session.call_tool("slow", {"steps": 2}, progress_callback=on_progress)
        assert slow.content[0].text == "done after 2 steps"
        assert progress == [1, 2]
        read = await session.read_resource("mock://notes/readme")
        assert "notes" in read.contents[0].text
        return session.protocol_version

    url = f"{era_gateway['gateway'].addrs['data']}/mcp/old"
    assert run(with_session(url, body)) == "2026-07-28"


def test_a_legacy_client_uses_a_modern_only_server(era_gateway):
    async def direct(session: ClientSession):
        await session.initialize()

    # Without the gateway the modern-only server refuses the handshake.
    with pytest.raises(Exception):
        run(with_session(f"{era_gateway['modern'].addrs['data']}/mcp", direct))

    async def body(session: ClientSession):
        init = await session.initialize()
        assert init.server_info.name == "tollgate-mock"
        tools = await session.list_tools()
        assert "echo" in {t.name for t in tools.tools}
        echo = await session.call_tool("echo", {"text": "across eras"})
        assert echo.content[0].text == "across eras"
        prompt = await session.get_prompt("greeting", {"name": "Ada"})
        assert "Ada" in prompt.messages[0].content.text
        await session.send_ping()
        return session.protocol_version

    url = f"{era_gateway['gateway'].addrs['data']}/mcp/new"
    assert run(with_session(url, body)) == "2025-11-25"
