"""A route's resilience policy as the official SDKs see it, with the SDKs'
own retries off (`max_retries=0`), so only the gateway retries: transient
provider failures on the only backend become one clean answer; a stream whose
first token never comes falls back before the client sees a byte; a request
too long for the model is answered by the route's larger model; a team's key
lands on its own route under a shared alias.
"""

from __future__ import annotations

import textwrap

import anthropic
import openai
import pytest

from conftest import Gateway, _stop_gateway, start, start_gateway_with

KEY = "tg-routing-sdk"
RESEARCH_KEY = "tg-routing-research"


@pytest.fixture(scope="module")
def routing_gateway(mock, workdir) -> Gateway:
    # A provider whose first token comes after 5 s, and one that refuses
    # requests over 300 tokens with OpenAI's context-length error.
    stalled = start(
        "mock-stalled", ["mock", "--listen", "127.0.0.1:0", "--ttft-ms", "5000"], workdir / "mock-stalled"
    )
    small = start(
        "mock-small", ["mock", "--listen", "127.0.0.1:0", "--context-window", "300"], workdir / "mock-small"
    )
    config = textwrap.dedent(
        f"""\
        apiVersion: tollgate.dev/v1alpha1
        kind: AIGateway
        metadata: {{name: routing}}
        spec:
          apiKeys:
          - {{secretRef: {{name: keys, key: plain}}, principal: {{user: ann, team: sales}}}}
          - {{secretRef: {{name: keys, key: research}}, principal: {{user: rob, team: research}}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: keys}}
        stringData: {{plain: {KEY}, research: {RESEARCH_KEY}}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: ModelProvider
        metadata: {{name: mock}}
        spec:
          type: Mock
          endpoint: {mock.addrs["data"]}/v1
          circuitBreaker: {{enabled: false}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: ModelProvider
        metadata: {{name: stalled}}
        spec:
          type: Mock
          endpoint: {stalled.addrs["data"]}/v1
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: ModelProvider
        metadata: {{name: small}}
        spec:
          type: Mock
          endpoint: {small.addrs["data"]}/v1
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: retrying}}
        spec:
          gatewayRef: {{name: routing}}
          models: [retrying]
          retries: {{attempts: 2, backoff: 20ms}}
          backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: anthropic-retrying}}
        spec:
          gatewayRef: {{name: routing}}
          models: [claude-retrying]
          retries: {{attempts: 2, backoff: 20ms}}
          backends: [{{providerRef: {{name: mock}}, model: mock-claude}}]
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: first-token}}
        spec:
          gatewayRef: {{name: routing}}
          models: [first-token]
          timeouts: {{request: 20s, firstToken: 500ms}}
          backends:
          - {{providerRef: {{name: stalled}}, model: mock-chat}}
          - {{providerRef: {{name: mock}}, model: mock-chat, priority: 1}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: long}}
        spec:
          gatewayRef: {{name: routing}}
          models: [long]
          backends: [{{providerRef: {{name: small}}, model: mock-chat}}]
          contextFallback: [{{providerRef: {{name: mock}}, model: mock-claude}}]
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: shared}}
        spec:
          gatewayRef: {{name: routing}}
          models: [team-chat]
          backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: research}}
        spec:
          gatewayRef: {{name: routing}}
          models: [team-chat]
          principals: [{{team: research}}]
          backends: [{{providerRef: {{name: mock}}, model: mock-claude}}]
        """
    )
    proc = start_gateway_with("gateway-routing", config, workdir)
    gw = Gateway(proc=proc, config_path=workdir / "gateway-routing" / "tollgate.yaml")
    yield gw
    _stop_gateway(gw)
    stalled.stop()
    small.stop()


def _openai(gw: Gateway, key: str = KEY) -> openai.OpenAI:
    return gw.client(key)


def test_transient_failures_are_retried_by_the_gateway(routing_gateway):
    client = _openai(routing_gateway)
    raw = client.chat.completions.with_raw_response.create(
        model="retrying",
        messages=[{"role": "user", "content": "sdk retry [mock status=503 fail_times=2]"}],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-tollgate-route"] == "default/retrying"

    # One failure more than the policy allows: the SDK's typed error.
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="retrying",
            messages=[{"role": "user", "content": "sdk no luck [mock status=500 fail_times=3]"}],
        )
    assert caught.value.status_code == 502


def test_anthropic_clients_get_the_retried_answer(routing_gateway):
    client = routing_gateway.anthropic(KEY)
    message = client.messages.create(
        model="claude-retrying",
        max_tokens=32,
        messages=[{"role": "user", "content": "anthropic retry [mock status=529 fail_times=1]"}],
    )
    assert message.content[0].text


def test_a_stalled_stream_falls_back_before_its_first_byte(routing_gateway):
    client = _openai(routing_gateway)
    stream = client.chat.completions.create(
        model="first-token",
        stream=True,
        messages=[{"role": "user", "content": "stream please"}],
    )
    text = "".join(
        chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
    )
    assert text


def test_a_request_too_long_goes_to_the_larger_model(routing_gateway):
    client = _openai(routing_gateway)
    long_prompt = "lorem ipsum dolor " * 150
    raw = client.chat.completions.with_raw_response.create(
        model="long", messages=[{"role": "user", "content": long_prompt}]
    )
    assert raw.parse().model == "mock-claude"
    short = client.chat.completions.create(
        model="long", messages=[{"role": "user", "content": "short"}]
    )
    assert short.model == "mock-chat"


def test_a_team_gets_its_own_route_under_a_shared_alias(routing_gateway):
    sales = _openai(routing_gateway).chat.completions.create(
        model="team-chat", messages=[{"role": "user", "content": "hi"}]
    )
    research = _openai(routing_gateway, RESEARCH_KEY).chat.completions.create(
        model="team-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert sales.model == "mock-chat"
    assert research.model == "mock-claude"
    listed = {m.id for m in _openai(routing_gateway, RESEARCH_KEY).models.list()}
    assert "team-chat" in listed
