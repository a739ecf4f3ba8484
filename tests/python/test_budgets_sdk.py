"""TokenBudgets as the official SDKs see them: a spent budget is a
`RateLimitError` (429) with the error object and `Retry-After` each SDK
parses, in OpenAI's and Anthropic's shape; a throttled caller likewise;
cost headers on answers; and `/v1/usage` on the admin port.
"""

from __future__ import annotations

import json
import textwrap
import urllib.request

import anthropic
import openai
import pytest

from conftest import Gateway, _stop_gateway, start

KEY = "tg-budget-sdk"
THROTTLED_KEY = "tg-throttled-sdk"


@pytest.fixture(scope="module")
def budget_gateway(mock, workdir) -> Gateway:
    gwdir = workdir / "gateway-budgets"
    gwdir.mkdir(parents=True, exist_ok=True)
    config = textwrap.dedent(
        f"""\
        apiVersion: tollgate.dev/v1alpha1
        kind: AIGateway
        metadata: {{name: budgets}}
        spec:
          apiKeys:
          - {{secretRef: {{name: keys, key: limited}}, principal: {{user: ann, team: research}}}}
          - {{secretRef: {{name: keys, key: throttled}}, principal: {{user: tom, team: ops}}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: keys}}
        stringData: {{limited: {KEY}, throttled: {THROTTLED_KEY}}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: ModelProvider
        metadata: {{name: mock}}
        spec:
          type: Mock
          endpoint: {mock.addrs["data"]}/v1
          models:
          - {{name: mock-chat, pricing: {{inputPerMillion: 3, outputPerMillion: 15}}}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: chat}}
        spec:
          gatewayRef: {{name: budgets}}
          models: [chat]
          backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: TokenBudget
        metadata: {{name: research}}
        spec:
          gatewayRef: {{name: budgets}}
          subject: {{team: research}}
          limits: [{{window: Month, requests: 2}}]
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: TokenBudget
        metadata: {{name: ops-throttle}}
        spec:
          gatewayRef: {{name: budgets}}
          subject: {{team: ops}}
          rateLimit: {{requestsPerSecond: 1, burst: 1}}
        """
    )
    config_path = gwdir / "tollgate.yaml"
    config_path.write_text(config)
    proc = start(
        "gateway-budgets",
        [
            "gateway", "--config", str(config_path),
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--drain-timeout-secs", "10",
        ],
        gwdir,
    )
    gw = Gateway(proc=proc, config_path=config_path)
    yield gw
    _stop_gateway(gw)


def test_spent_budget_is_a_rate_limit_error_in_both_sdks(budget_gateway):
    client = budget_gateway.client(api_key=KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="chat", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert float(raw.headers["x-tollgate-cost-usd"]) > 0
    assert int(raw.headers["x-tollgate-output-tokens"]) == completion.usage.completion_tokens
    client.chat.completions.create(model="chat", max_tokens=16, messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(
            model="chat", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 429
    assert refused.value.code == "budget_exceeded"
    assert "default/research" in refused.value.message
    assert int(refused.value.response.headers["retry-after"]) >= 1

    messages = budget_gateway.anthropic(KEY)
    with pytest.raises(anthropic.RateLimitError) as refused:
        messages.messages.create(
            model="chat", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"


def test_throttled_caller_gets_rate_limited_with_retry_after(budget_gateway):
    client = budget_gateway.client(api_key=THROTTLED_KEY)
    client.chat.completions.create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "rate_limited"
    assert refused.value.response.headers["retry-after"] == "1"


def test_usage_report_names_who_spent(budget_gateway):
    # Runs after the budget test in this module, which spent for team research.
    url = f"{budget_gateway.admin_url}/v1/usage?group_by=team,user&window=day"
    with urllib.request.urlopen(url, timeout=10) as answer:
        report = json.load(answer)
    teams = {g["key"]["team"]: g for g in report["groups"]}
    assert teams["research"]["key"]["user"] == "ann"
    assert teams["research"]["costUsd"] > 0
    assert report["total"]["requests"] >= teams["research"]["requests"]
