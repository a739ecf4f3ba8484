"""Prompt management as the official SDKs see it (`max_retries=0`): a
version chosen by `model@version` or the `x-tollgate-prompt-version` header
(`extra_headers`), variables in the `prompt_variables` body field
(`extra_body`), decorators with the caller's principal, context from a
ConfigMap, and errors as typed 400s. The mock's `[mock echo=1]` answer
repeats the last user message it received, so a template or context
message that carries the directive comes back as the provider saw it.
"""

from __future__ import annotations

import textwrap

import anthropic
import openai
import pytest

from conftest import Gateway, _stop_gateway, start_gateway_with

KEY = "tg-prompts-sdk"
ONLY_SYSTEM = [{"role": "system", "content": "Be brief."}]


@pytest.fixture(scope="module")
def prompts_gateway(mock, workdir) -> Gateway:
    config = textwrap.dedent(
        f"""\
        apiVersion: tollgate.dev/v1alpha1
        kind: AIGateway
        metadata: {{name: prompts}}
        spec:
          apiKeys:
          - {{secretRef: {{name: keys, key: k}}, principal: {{user: sdk-tester, team: qa}}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: keys}}
        stringData: {{k: {KEY}}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: refund-policy}}
        data: {{text: "Refunds within 30 days. [mock echo=1]"}}
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
        kind: AIRoute
        metadata: {{name: bot}}
        spec:
          gatewayRef: {{name: prompts}}
          models: [bot]
          backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
          prompts:
            templates:
            - version: v1
              messages: [{{role: user, content: "v1: {{{{ greeting }}}}, {{{{ principal.user }}}} [mock echo=1]"}}]
              variables: {{greeting: Hello}}
            - version: v2
              messages: [{{role: user, content: "v2: {{{{ greeting | upper }}}} for {{{{ customer }}}} [mock echo=1]"}}]
              variables: {{greeting: Hello}}
            defaultVersion: v1
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: decorated}}
        spec:
          gatewayRef: {{name: prompts}}
          models: [decorated]
          backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
          prompts:
            decorators:
            - {{position: Append, role: user, content: "{{{{ tone }}}} reply for {{{{ principal.user }}}} of {{{{ principal.team }}}} [mock echo=1]"}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: policy-bot}}
        spec:
          gatewayRef: {{name: prompts}}
          models: [policy-bot]
          backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
          prompts:
            context: [{{configMapKeyRef: {{name: refund-policy, key: text}}, role: user}}]
        """
    )
    proc = start_gateway_with("gateway-prompts", config, workdir)
    gw = Gateway(proc=proc, config_path=workdir / "gateway-prompts" / "tollgate.yaml")
    yield gw
    _stop_gateway(gw)


@pytest.fixture()
def oai(prompts_gateway) -> openai.OpenAI:
    with prompts_gateway.client(KEY) as client:
        yield client


@pytest.fixture()
def claude(prompts_gateway) -> anthropic.Anthropic:
    with prompts_gateway.anthropic(KEY) as client:
        yield client


def _say(client: openai.OpenAI, model: str, **kwargs) -> str:
    completion = client.chat.completions.create(model=model, messages=ONLY_SYSTEM, **kwargs)
    return completion.choices[0].message.content


def test_versions_by_suffix_header_and_default(oai):
    assert _say(oai, "bot") == "v1: Hello, sdk-tester"
    assert _say(oai, "bot", extra_body={"prompt_variables": {"greeting": "Hej"}}) == "v1: Hej, sdk-tester"
    variables = {"prompt_variables": {"customer": "Acme"}}
    assert _say(oai, "bot@v2", extra_body=variables) == "v2: HELLO for Acme"
    assert (
        _say(oai, "bot", extra_body=variables, extra_headers={"x-tollgate-prompt-version": "v2"})
        == "v2: HELLO for Acme"
    )
    # The answer names the model the client asked for, version included.
    completion = oai.chat.completions.create(model="bot@v2", messages=ONLY_SYSTEM, extra_body=variables)
    assert completion.model in ("bot@v2", "mock-chat")


def test_streamed_answers_carry_the_rendered_prompt(oai):
    stream = oai.chat.completions.create(
        model="bot@v2", messages=ONLY_SYSTEM, stream=True, extra_body={"prompt_variables": {"customer": "Zed"}}
    )
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "v2: HELLO for Zed"


def test_errors_are_typed_400s(oai, claude):
    with pytest.raises(openai.BadRequestError) as missing:
        _say(oai, "bot@v2")
    assert missing.value.code == "prompt_variable_missing"
    assert "customer" in str(missing.value)
    with pytest.raises(openai.BadRequestError) as unknown:
        _say(oai, "bot@v9")
    assert unknown.value.code == "prompt_version_not_found"
    assert "v1" in str(unknown.value) and "v2" in str(unknown.value)
    with pytest.raises(anthropic.BadRequestError) as anthropic_missing:
        claude.messages.create(model="bot@v2", max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert anthropic_missing.value.body["error"]["type"] == "invalid_request_error"


def test_decorators_with_the_principal_in_both_apis(oai, claude):
    tone = {"prompt_variables": {"tone": "A warm"}}
    completion = oai.chat.completions.create(
        model="decorated", messages=[{"role": "user", "content": "Where is my order?"}], extra_body=tone
    )
    assert completion.choices[0].message.content == "A warm reply for sdk-tester of qa"
    message = claude.messages.create(
        model="decorated",
        max_tokens=100,
        messages=[{"role": "user", "content": "Where is my order?"}],
        extra_body=tone,
    )
    assert message.content[0].text == "A warm reply for sdk-tester of qa"
    with claude.messages.stream(
        model="decorated",
        max_tokens=100,
        messages=[{"role": "user", "content": "Where is my order?"}],
        extra_headers={"x-tollgate-prompt-variables": '{"tone": "A short"}'},
    ) as stream:
        assert "".join(stream.text_stream) == "A short reply for sdk-tester of qa"
        assert stream.get_final_message().stop_reason == "end_turn"


def test_context_from_a_config_map(oai):
    assert _say(oai, "policy-bot") == "Refunds within 30 days."
