"""A legacy HTTP+SSE MCP server (MCP 2024-11-05, `servers/legacy_sse_server.py`,
the official Python SDK's `sse_app()`) behind the gateway as an MCPServer
with `transport: SSE`: the official Python client, speaking Streamable HTTP,
lists and calls its tools at `/mcp/{path}` and through the aggregate `/mcp`,
with progress and logs, while the gateway bridges each session to one SSE
connection carrying the server's credential.
"""

from __future__ import annotations

import anyio

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from mcp import ClientSession

from conftest import Proc, start_gateway_with
from test_mcp_aggregate_sdk import free_port, run, session_with, spawn, stop, text_of, wait_for_port

HERE = Path(__file__).resolve().parent
KEY = "tg-legacy-caller"
SERVER_KEY = "legacy-server-secret"


@pytest.fixture(scope="module")
def legacy_server(workdir):
    port = free_port()
    popen = spawn(
        [sys.executable, str(HERE / "servers/legacy_sse_server.py"), str(port), SERVER_KEY],
        workdir / "legacy-sse",
        "legacy-sse",
    )
    try:
        wait_for_port(port, popen, "legacy SSE server")
        yield f"http://127.0.0.1:{port}/sse"
    finally:
        stop(popen)


@pytest.fixture(scope="module")
def legacy_gateway(legacy_server, workdir) -> Proc:
    manifest = textwrap.dedent(
        f"""\
        apiVersion: tollgate.dev/v1alpha1
        kind: AIGateway
        metadata: {{name: legacy}}
        spec:
          apiKeys:
          - secretRef: {{name: legacy-keys, key: caller}}
            principal: {{user: lee, team: platform}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: legacy-keys}}
        stringData: {{caller: {KEY}, server: {SERVER_KEY}}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: MCPServer
        metadata: {{name: oldtimer}}
        spec:
          gatewayRef: {{name: legacy}}
          url: {legacy_server}
          transport: SSE
          credentials: {{secretRef: {{name: legacy-keys, key: server}}, header: X-Api-Key}}
        """
    )
    proc = start_gateway_with("gateway-legacy-sse", manifest, workdir)
    yield proc
    assert proc.stop() == 0, proc.stderr_tail()


def test_tools_of_a_legacy_server_at_its_path(legacy_gateway):
    url = f"{legacy_gateway.addrs['data']}/mcp/oldtimer"
    progress: list[float] = []
    logs: list[str] = []

    async def on_progress(value, total, message):
        progress.append(value)

    async def on_log(params):
        logs.append(str(params.data))

    async def body(session: ClientSession):
        names = sorted(t.name for t in (await session.list_tools()).tools)
        assert names == ["add", "count", "echo"], names
        assert text_of(await session.call_tool("echo", {"text": "hi\nthere"})) == "hi\nthere"
        assert text_of(await session.call_tool("add", {"a": 40, "b": 2})) == "42"
        counted = await session.call_tool("count", {"to": 3}, progress_callback=on_progress)
        assert text_of(counted) == "counted to 3"
        # A legacy server's log notifications carry no request id, so the
        # bridge delivers them on the session's GET stream, which is not
        # ordered with the call's answer: wait (bounded) for the last one
        # before the session closes.
        for _ in range(40):
            if sum(1 for line in logs if line.startswith("counted")) >= 3:
                break
            await anyio.sleep(0.05)
        return session

    run(session_with(url, KEY, body, logging_callback=on_log))
    assert progress == [1, 2, 3], progress
    assert [line for line in logs if line.startswith("counted")] == ["counted 1", "counted 2", "counted 3"], logs


def test_tools_of_a_legacy_server_in_the_aggregate(legacy_gateway):
    url = f"{legacy_gateway.addrs['data']}/mcp"

    async def body(session: ClientSession):
        names = sorted(t.name for t in (await session.list_tools()).tools)
        assert "oldtimer__add" in names, names
        assert text_of(await session.call_tool("oldtimer__add", {"a": 1, "b": 2})) == "3"
        # Two sessions at once: two SSE connections, kept apart.
        return names

    async def both():
        return await asyncio.gather(session_with(url, KEY, body), session_with(url, KEY, body))

    first, second = run(both())
    assert first == second
