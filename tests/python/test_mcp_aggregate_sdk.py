"""The aggregated MCP endpoint (`/mcp`) driven by the official Python `mcp`
SDK in front of two real servers: `@modelcontextprotocol/server-everything`
(Node 22 from tests/node) and `servers/notes_server.py` (the Python SDK's
own server). One client session sees both: merged and prefixed lists,
calls routed to the right server, resources, templates, prompts, progress
and log notifications, and a backend's sampling request answered by the
client through the gateway (its id rewritten and restored).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import REPO, Proc, start_gateway_with

HERE = Path(__file__).resolve().parent
WRITE_KEY = "tg-agg-platform"
READ_KEY = "tg-agg-support"
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, popen: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {popen.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {port} within {STARTUP_TIMEOUT_S}s")


def node22() -> str:
    """Node 22 from tests/node (installed there on first use)."""
    node = os.environ.get("TOLLGATE_NODE")
    if node:
        return node
    out = subprocess.run(
        ["bash", str(REPO / "tests/node/setup.sh")], check=True, capture_output=True, text=True, timeout=600
    )
    return out.stdout.strip().splitlines()[-1]


def spawn(argv: list[str], workdir: Path, name: str, env: dict | None = None) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / f"{name}.log", "wb")
    popen = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    log.close()
    return popen


def stop(popen: subprocess.Popen) -> None:
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=10)


@pytest.fixture(scope="module")
def backends(workdir):
    """server-everything and the notes server, each on its own loopback port."""
    everything_port, notes_port = free_port(), free_port()
    node_dir = REPO / "tests/node"
    everything = spawn(
        [node22(), str(node_dir / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"), "streamableHttp"],
        workdir / "everything",
        "everything",
        env={"PORT": str(everything_port), "NODE_OPTIONS": f"--require {node_dir / 'loopback-only.cjs'}"},
    )
    notes = spawn([sys.executable, str(HERE / "servers/notes_server.py"), str(notes_port)], workdir / "notes", "notes")
    try:
        wait_for_port(everything_port, everything, "server-everything")
        wait_for_port(notes_port, notes, "notes server")
        yield {"everything": f"http://127.0.0.1:{everything_port}/mcp", "notes": f"http://127.0.0.1:{notes_port}/mcp"}
    finally:
        stop(everything)
        stop(notes)


@pytest.fixture(scope="module")
def aggregating_gateway(backends, workdir) -> Proc:
    manifest = textwrap.dedent(
        f"""\
        apiVersion: tollgate.dev/v1alpha1
        kind: AIGateway
        metadata: {{name: aggregate}}
        spec:
          apiKeys:
          - secretRef: {{name: agg-keys, key: platform}}
            principal: {{user: pat, team: platform}}
          - secretRef: {{name: agg-keys, key: support}}
            principal: {{user: sam, team: support}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: agg-keys}}
        stringData: {{platform: {WRITE_KEY}, support: {READ_KEY}}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: MCPServer
        metadata: {{name: everything}}
        spec:
          gatewayRef: {{name: aggregate}}
          url: {backends["everything"]}
          tools: {{deny: [get-env]}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: MCPServer
        metadata: {{name: notes}}
        spec:
          gatewayRef: {{name: aggregate}}
          url: {backends["notes"]}
          access:
          - subject: {{team: platform}}
            scope: Write
          - subject: {{team: support}}
            scope: Read
        """
    )
    proc = start_gateway_with("gateway-aggregate", manifest, workdir)
    yield proc
    assert proc.stop() == 0, proc.stderr_tail()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


async def session_with(url: str, api_key: str, body, **callbacks):
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {api_key}"})
    async with client:
        async with streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1], **callbacks) as session:
                await session.initialize()
                return await body(session)


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def test_one_session_reaches_both_servers(aggregating_gateway):
    url = f"{aggregating_gateway.addrs['data']}/mcp"
    progress: list[tuple[float, float | None]] = []
    logs: list[str] = []
    sampled: list[str] = []

    async def on_progress(value, total, message):
        progress.append((value, total))

    async def on_log(params):
        logs.append(str(params.data))

    async def on_sampling(context, params):
        sampled.append(params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled by pytest"), model="pytest"
        )

    async def body(session: ClientSession):
        tools = {t.name: t for t in (await session.list_tools()).tools}
        for name in ["everything__echo", "everything__get-sum", "notes__search_notes", "notes__add_note"]:
            assert name in tools, sorted(tools)
        assert "everything__get-env" not in tools, "denied by the MCPServer's filter"
        # server-everything registers it only for clients that declared sampling:
        # the gateway initialised it with this client's capabilities.
        assert "everything__trigger-sampling-request" in tools
        assert tools["notes__search_notes"].annotations.read_only_hint is True

        total = await session.call_tool("everything__get-sum", {"a": 2, "b": 3})
        assert "5" in text_of(total), total
        stored = await session.call_tool("notes__add_note", {"name": "deploys", "text": "Deploys freeze on Fridays."})
        assert text_of(stored) == "stored deploys"
        found = await session.call_tool("notes__search_notes", {"query": "fridays"})
        assert "deploys" in text_of(found) or found.structured_content == {"result": ["deploys"]}, found

        indexed = await session.call_tool("notes__index_notes", {}, progress_callback=on_progress)
        assert text_of(indexed) == "indexed 3 notes"
        assert [p[0] for p in progress] == [1, 2, 3], progress

        answer = await session.call_tool("everything__trigger-sampling-request", {"prompt": "hello"})
        assert "sampled by pytest" in text_of(answer), answer

        resources = [str(r.uri) for r in (await session.list_resources()).resources]
        assert "notes://index/all" in resources
        assert any(uri.startswith("demo://resource/static/") for uri in resources), resources
        every = await session.read_resource("notes://index/all")
        assert "deploys: Deploys freeze on Fridays." in every.contents[0].text
        templates = [t.uri_template for t in (await session.list_resource_templates()).resource_templates]
        assert "notes://{name}" in templates and "demo://resource/dynamic/text/{resourceId}" in templates
        oncall = await session.read_resource("notes://oncall")
        assert oncall.contents[0].text == "Pager rotates on Mondays."
        dynamic = await session.read_resource("demo://resource/dynamic/text/1")
        assert dynamic.contents[0].text, dynamic

        prompts = [p.name for p in (await session.list_prompts()).prompts]
        assert "notes__summarize" in prompts and "everything__simple-prompt" in prompts, prompts
        prompt = await session.get_prompt("notes__summarize", {"topic": "pager"})
        assert "pager" in prompt.messages[0].content.text
        return True

    assert run(
        session_with(url, WRITE_KEY, body, logging_callback=on_log, sampling_callback=on_sampling)
    )
    assert any("indexing" in line for line in logs), logs
    assert sampled and "hello" in sampled[0], sampled


def test_a_read_scope_neither_sees_nor_calls_write_tools(aggregating_gateway):
    url = f"{aggregating_gateway.addrs['data']}/mcp"

    async def body(session: ClientSession):
        names = {t.name for t in (await session.list_tools()).tools}
        assert "notes__search_notes" in names
        assert "notes__add_note" not in names
        try:
            refused = await session.call_tool("notes__add_note", {"name": "x", "text": "y"})
        except MCPError as error:
            assert error.error.code == -32602, error
        else:
            raise AssertionError(f"a read-only caller wrote: {refused}")
        return True

    assert run(session_with(url, READ_KEY, body))


def test_a_modern_client_falls_back_to_the_handshake(aggregating_gateway):
    """server-everything speaks only 2025-11-25, so `/mcp` declines
    `server/discover` (-32601) and the SDK's usual fallback, `initialize`,
    reaches both servers."""
    url = f"{aggregating_gateway.addrs['data']}/mcp"

    async def body(session: ClientSession):
        try:
            await session.discover()
        except MCPError as error:
            assert error.error.code == -32601, error
        else:
            raise AssertionError("discover must be declined while a backend needs a session")
        init = await session.initialize()
        assert init.protocol_version == "2025-11-25"
        names = {t.name for t in (await session.list_tools()).tools}
        assert "everything__echo" in names and "notes__search_notes" in names, names
        return True

    client = create_mcp_http_client(headers={"Authorization": f"Bearer {WRITE_KEY}"})

    async def scenario():
        async with client:
            async with streamable_http_client(url, http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    return await body(session)

    assert run(scenario())
