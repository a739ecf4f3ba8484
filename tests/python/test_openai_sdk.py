"""Drives the Tollgate gateway with the official `openai` Python SDK.

Every client is built with `max_retries=0`, so each assertion is about one
request and one answer. `httpx` is used only where the SDK cannot express a
request (malformed JSON, a body without `messages`, a chunked upload) and to
read the admin port's `/metrics`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import struct
import time

import httpx
import openai
import pytest

from conftest import (
    API_KEY,
    CHAT_ROUTE,
    EMBED_ROUTE,
    MAX_BODY_BYTES,
    MOCK_PROVIDER,
)
from helpers import MOCK_OUTPUT_TOKENS, WEATHER, check_weather_args, openai_tool, unique_prompt


def chat(client: openai.OpenAI, ledger, prompt: str, **kwargs):
    """One successful non-streamed completion on the `chat` route."""
    completion = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": prompt}], **kwargs
    )
    ledger.success(CHAT_ROUTE)
    return completion


def stream_chunks(client: openai.OpenAI, ledger, prompt: str, **kwargs) -> list:
    """All chunks of one streamed completion, consumed to the end."""
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": prompt}], stream=True, **kwargs
    )
    with stream:
        chunks = list(stream)
    ledger.success(CHAT_ROUTE)
    return chunks


def content_deltas(chunks) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


# ------------------------------------------------------------------ 1. chat

def test_chat_non_stream(client, ledger):
    prompt = unique_prompt("Say something about gateways.")
    first = chat(client, ledger, prompt)

    assert first.object == "chat.completion"
    assert first.model == "mock-chat"
    assert len(first.choices) == 1
    choice = first.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None

    usage = first.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    # The mock generates one word per token.
    assert usage.completion_tokens == len(choice.message.content.split()) == MOCK_OUTPUT_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # Deterministic: the same prompt gets the same answer...
    second = chat(client, ledger, prompt)
    assert second.choices[0].message.content == choice.message.content
    assert second.usage.prompt_tokens == usage.prompt_tokens
    # ...and a different prompt a different one (the answer is not a constant).
    other = chat(client, ledger, unique_prompt("Something else entirely."))
    assert other.choices[0].message.content != choice.message.content


def test_chat_max_tokens_caps_output(client, ledger):
    completion = chat(client, ledger, unique_prompt("Be brief."), max_tokens=4)
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.choices[0].message.content.split()) == 4
    assert completion.usage.completion_tokens == 4


def test_route_and_provider_headers(client, ledger):
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": unique_prompt("headers")}]
    )
    ledger.success(CHAT_ROUTE)
    assert raw.status_code == 200
    assert raw.headers["x-tollgate-route"] == CHAT_ROUTE
    assert raw.headers["x-tollgate-provider"] == MOCK_PROVIDER
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices[0].message.content


# ---------------------------------------------------------------- 2. stream

def test_chat_stream_matches_non_stream(client, ledger):
    prompt = unique_prompt("Stream me a sentence.")
    expected = chat(client, ledger, prompt).choices[0].message.content

    chunks = stream_chunks(client, ledger, prompt)
    assert chunks, "the stream produced no chunks"
    # The gateway asked upstream for usage but must strip the usage-only
    # chunk because this client did not ask for it.
    assert all(c.choices != [] for c in chunks), [c.model_dump() for c in chunks if not c.choices]
    assert all(c.usage is None for c in chunks)
    assert all(c.object == "chat.completion.chunk" and c.model == "mock-chat" for c in chunks)
    assert len({c.id for c in chunks}) == 1

    assert "".join(content_deltas(chunks)) == expected
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_stream_include_usage(client, ledger):
    prompt = unique_prompt("Stream with usage.")
    reference = chat(client, ledger, prompt)

    chunks = stream_chunks(client, ledger, prompt, stream_options={"include_usage": True})
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    deltas = content_deltas(chunks)
    assert final.usage.completion_tokens == len(deltas) == MOCK_OUTPUT_TOKENS
    assert final.usage.prompt_tokens == reference.usage.prompt_tokens
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    # Only the final chunk carries usage and only it has no choices.
    assert all(c.usage is None and c.choices for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert "".join(deltas) == reference.choices[0].message.content


# ------------------------------------------------------------ 3. tool calls

WEATHER_TOOL = openai_tool(WEATHER)


def test_tool_call(client, ledger):
    prompt = unique_prompt("What's the weather in Paris?")
    completion = chat(client, ledger, prompt, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    check_weather_args(args)

    # Streamed, the fragments reassemble into the same call.
    chunks = stream_chunks(client, ledger, prompt, tools=[WEATHER_TOOL])
    name, fragments = None, []
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            assert tc.index == 0
            if tc.function and tc.function.name:
                name = tc.function.name
            if tc.function and tc.function.arguments:
                fragments.append(tc.function.arguments)
    assert name == "get_weather"
    assert len(fragments) > 1, "expected the arguments to arrive in fragments"
    assert json.loads("".join(fragments)) == args
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_answers_in_text(client, ledger):
    completion = chat(client, ledger, unique_prompt("No tools please."), tools=[WEATHER_TOOL], tool_choice="none")
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content


# ------------------------------------------------------------ 4. embeddings

def _f32(values) -> bytes:
    """Exact float32 bytes: JSON floats are shortest-repr of an f32, so round
    both sides to f32 before comparing."""
    return struct.pack(f"<{len(values)}f", *values)


def test_embeddings_base64_and_float_agree(client, ledger):
    text = unique_prompt("embed me")
    default = client.embeddings.create(model="embed", input=text, dimensions=64)
    as_float = client.embeddings.create(model="embed", input=text, dimensions=64, encoding_format="float")
    ledger.success(EMBED_ROUTE, 2)

    for response in (default, as_float):
        assert response.model == "mock-embed"
        assert len(response.data) == 1
        assert response.data[0].index == 0
        assert response.usage.prompt_tokens > 0
        vector = response.data[0].embedding
        assert isinstance(vector, list) and len(vector) == 64
        assert all(isinstance(x, float) for x in vector)
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)

    assert _f32(default.data[0].embedding) == _f32(as_float.data[0].embedding)


def test_embeddings_raw_base64_wire_format(client, ledger):
    """The SDK's default asks for base64 and decodes it; check the wire."""
    text = unique_prompt("wire format")
    raw = client.embeddings.with_raw_response.create(model="embed", input=text, dimensions=32)
    ledger.success(EMBED_ROUTE)
    assert raw.headers["x-tollgate-route"] == EMBED_ROUTE
    body = json.loads(raw.text)
    encoded = body["data"][0]["embedding"]
    assert isinstance(encoded, str), "the SDK default should request encoding_format=base64"
    decoded = base64.b64decode(encoded)
    assert len(decoded) == 32 * 4
    assert decoded == _f32(raw.parse().data[0].embedding)


def test_embeddings_batch_and_dimensions(client, ledger):
    a, b = unique_prompt("first"), unique_prompt("second")
    response = client.embeddings.create(model="embed", input=[a, b, a], encoding_format="float")
    ledger.success(EMBED_ROUTE)
    assert [d.index for d in response.data] == [0, 1, 2]
    vectors = [d.embedding for d in response.data]
    assert all(len(v) == 256 for v in vectors), "mock default dimension is 256"
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]

    for dims in (1, 8, 1536):
        one = client.embeddings.create(model="embed", input=a, dimensions=dims)
        ledger.success(EMBED_ROUTE)
        assert len(one.data[0].embedding) == dims


# ---------------------------------------------------------------- 5. models

def test_models_list_and_retrieve(client):
    models = client.models.list()
    ids = {m.id for m in models}
    assert ids == {"chat", "embed"}
    assert all(m.object == "model" for m in models)

    chat_model = client.models.retrieve("chat")
    assert chat_model.id == "chat"
    assert chat_model.object == "model"

    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("no-such-model")
    assert exc.value.status_code == 404
    assert exc.value.code == "model_not_found"


# ------------------------------------------------------------ 6. exceptions

def test_bad_api_key_is_authentication_error(gateway):
    with gateway.client(api_key="tg-wrong-key") as bad:
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert exc.value.status_code == 401
        assert exc.value.type == "authentication_error"

        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model="embed", input="hi")


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 404
    assert exc.value.code == "model_not_found"
    assert exc.value.param == "model"


def test_empty_messages_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="chat", messages=[])
    assert exc.value.status_code == 400
    assert exc.value.type == "invalid_request_error"
    assert exc.value.param == "messages"


def test_a_route_serves_only_the_endpoints_its_model_does(client):
    # `chat` is a chat model, `embed` an embedding model (by name): each on
    # the other's endpoint is a 400 the SDK raises, naming what is served.
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="chat", input="hello")
    assert exc.value.code == "unsupported_endpoint"
    assert exc.value.param == "model"
    assert "/v1/chat/completions" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.code == "unsupported_endpoint"
    assert "/v1/embeddings" in exc.value.message
    assert client.embeddings.create(model="embed", input="hello").data[0].embedding


def test_invalid_stream_type_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], extra_body={"stream": "yes"}
        )
    assert exc.value.param == "stream"


@pytest.mark.parametrize(
    ("directive", "exc_type", "status"),
    [
        ("[mock status=503]", openai.InternalServerError, 503),
        ("[mock status=500]", openai.InternalServerError, 502),
        ("[mock status=504]", openai.InternalServerError, 504),
        ("[mock status=429]", openai.RateLimitError, 429),
        ("[mock status=400]", openai.BadRequestError, 400),
    ],
)
def test_upstream_errors_map_to_sdk_exceptions(client, ledger, directive, exc_type, status):
    with pytest.raises(exc_type) as exc:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"{unique_prompt('fail')} {directive}"}]
        )
    assert exc.value.status_code == status
    ledger.failure(CHAT_ROUTE, status)
    # Every error reaches the SDK in the OpenAI shape, with a message.
    assert isinstance(exc.value.body, dict) and exc.value.body.get("message")


def test_upstream_error_before_stream_starts(client):
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": f"{unique_prompt('fail')} [mock status=503]"}],
            stream=True,
        )
    assert exc.value.status_code == 503


def test_rate_limit_passthrough_keeps_upstream_body(client):
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "slow down [mock status=429]"}]
        )
    assert exc.value.code == "rate_limit_exceeded"
    assert exc.value.response.headers.get("retry-after") == "1"


def test_oversized_body_is_413(client):
    big = "x" * (MAX_BODY_BYTES + 1024)
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": big}])
    assert exc.value.status_code == 413
    assert exc.value.code == "request_too_large"
    # 413 has no dedicated SDK subclass.
    assert not isinstance(exc.value, (openai.BadRequestError, openai.InternalServerError))


def test_oversized_chunked_body_is_413(gateway):
    """Without Content-Length the limit is enforced while reading."""
    payload = json.dumps(
        {"model": "chat", "messages": [{"role": "user", "content": "y" * (MAX_BODY_BYTES * 2)}]}
    ).encode()

    def chunks():
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    response = httpx.post(
        f"{gateway.data_url}/v1/chat/completions",
        content=chunks(),
        headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "chat", "messages": [', "invalid_json"),
        (b"[1, 2, 3]", "invalid_body"),
        (b'{"model": "chat"}', "missing_required_parameter"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "missing_required_parameter"),
    ],
)
def test_malformed_requests_are_400(gateway, body, code):
    response = httpx.post(
        f"{gateway.data_url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["message"]


# -------------------------------------------------------------- 8. fallback

def test_fallback_to_second_priority(fallback_gateway):
    with fallback_gateway.client() as fb:
        prompt = unique_prompt("fallback please")
        raw = fb.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": prompt}]
        )
        assert raw.status_code == 200
        assert raw.headers["x-tollgate-provider"] == MOCK_PROVIDER
        assert raw.headers["x-tollgate-route"] == CHAT_ROUTE
        completion = raw.parse()
        assert completion.model == "mock-chat"
        assert completion.choices[0].message.content

        # Streams fall back too, before the first byte.
        with fb.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": prompt}], stream=True
        ) as stream:
            text = "".join(content_deltas(list(stream)))
        assert text == completion.choices[0].message.content

    # The dead provider was tried (and counted) before the mock answered.
    metrics = scrape(fallback_gateway.admin_url)
    assert total(metrics, "tollgate_upstream_errors_total", provider="dead", reason="connect") >= 2
    assert total(metrics, "tollgate_requests_total", route=CHAT_ROUTE, provider=MOCK_PROVIDER, status="200") >= 1
    assert total(metrics, "tollgate_requests_total", provider="dead") == 0


def test_all_backends_down_is_502(fallback_gateway):
    with fallback_gateway.client() as fb:
        with pytest.raises(openai.InternalServerError) as exc:
            fb.chat.completions.create(model="dead", messages=[{"role": "user", "content": "anyone there?"}])
    assert exc.value.status_code == 502
    assert exc.value.code == "upstream_error"


# ------------------------------------------------------ async, concurrently

def test_async_client_concurrent_streams(gateway, client, ledger):
    """AsyncOpenAI over one pooled connection set: concurrent streams and
    plain calls each get their own, correct answer."""
    prompts = [unique_prompt(f"concurrent {i}") for i in range(6)]
    expected = [chat(client, ledger, p).choices[0].message.content for p in prompts]

    async def one_stream(aclient, prompt):
        stream = await aclient.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": prompt}], stream=True
        )
        async with stream:
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def one_plain(aclient, prompt):
        completion = await aclient.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompt}])
        return completion.choices[0].message.content

    async def main():
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.data_url}/v1", api_key=API_KEY, max_retries=0, timeout=30
        ) as aclient:
            jobs = [one_stream(aclient, p) for p in prompts] + [one_plain(aclient, p) for p in prompts]
            return await asyncio.wait_for(asyncio.gather(*jobs), timeout=60)

    results = asyncio.run(main())
    ledger.success(CHAT_ROUTE, len(results))
    assert results == expected + expected


# -------------------------------------------------- 9. mid-stream disconnect

STREAM_FAILURES = (openai.APIError, httpx.HTTPError)
try:  # the SDK's own HTTP client (httpx2 in openai>=3)
    import httpx2

    STREAM_FAILURES = (*STREAM_FAILURES, httpx2.HTTPError)
except ImportError:  # pragma: no cover
    pass


def test_mid_stream_disconnect_raises(client, ledger):
    seen = []
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": f"{unique_prompt('cut me off')} [mock disconnect_after=3]"}],
        stream=True,
    )
    with pytest.raises(STREAM_FAILURES):
        with stream:
            for chunk in stream:
                seen.append(chunk)
    # The client must not mistake a truncated stream for a complete one.
    assert not any(c.choices and c.choices[0].finish_reason for c in seen)
    assert len(content_deltas(seen)) < MOCK_OUTPUT_TOKENS
    # The gateway accounts the broken stream as a 502, not a success.
    ledger.failure(CHAT_ROUTE, 502)


def test_truncated_non_stream_body_is_502(client, ledger):
    """A plain response cut off mid-body upstream becomes a clean 502."""
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": f"{unique_prompt('truncate')} [mock disconnect_after=1]"}],
        )
    assert exc.value.status_code == 502
    assert exc.value.code == "upstream_error"
    ledger.failure(CHAT_ROUTE, 502)


# --------------------------------------------------------------- 7. metrics

SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(admin_url: str) -> list[tuple[str, dict[str, str], float]]:
    response = httpx.get(f"{admin_url}/metrics", timeout=10)
    assert response.status_code == 200
    samples = []
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"unparseable metrics line: {line!r}"
        name, labels, value = match.groups()
        samples.append((name, dict(LABEL.findall(labels or "")), float(value)))
    return samples


def total(samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == want for k, want in labels.items()))


@pytest.mark.run_last
def test_metrics_account_for_traffic(gateway, client, ledger):
    # Self-sufficient even when run alone: make sure there is traffic.
    chat(client, ledger, unique_prompt("metrics"))
    expected_chat = ledger.ok[CHAT_ROUTE]

    # Streams settle when the relay sees the end; allow a moment for that.
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(gateway.admin_url)
        ok = total(
            samples, "tollgate_requests_total",
            endpoint="chat_completions", route=CHAT_ROUTE, provider=MOCK_PROVIDER, model="mock-chat", status="200",
        )
        if ok >= expected_chat or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ok >= expected_chat, f"requests_total{{route={CHAT_ROUTE},status=200}} = {ok}, made {expected_chat}"

    labels = dict(route=CHAT_ROUTE, provider=MOCK_PROVIDER, model="mock-chat")
    assert total(samples, "tollgate_tokens_total", direction="input", **labels) > 0
    assert total(samples, "tollgate_tokens_total", direction="output", **labels) > 0
    assert total(samples, "tollgate_cost_usd_total", **labels) > 0

    if ledger.ok.get(EMBED_ROUTE):
        assert total(samples, "tollgate_requests_total", endpoint="embeddings", route=EMBED_ROUTE, status="200") >= ledger.ok[EMBED_ROUTE]
        assert total(samples, "tollgate_tokens_total", route=EMBED_ROUTE, direction="input") > 0

    # Cost is the catalog price times the tokens (mock-chat: $0.15 / $0.60 per 1M).
    tokens_in = total(samples, "tollgate_tokens_total", direction="input", **labels)
    tokens_out = total(samples, "tollgate_tokens_total", direction="output", **labels)
    cost = total(samples, "tollgate_cost_usd_total", **labels)
    assert math.isclose(cost, tokens_in * 0.15e-6 + tokens_out * 0.60e-6, rel_tol=1e-6), (cost, tokens_in, tokens_out)

    # Failures are counted under the status the client saw, never as 200.
    for status, count in ledger.failed.get(CHAT_ROUTE, {}).items():
        seen = total(samples, "tollgate_requests_total", route=CHAT_ROUTE, provider=MOCK_PROVIDER, status=str(status))
        assert seen >= count, f"status {status}: counted {seen}, caused {count}"

    config = httpx.get(f"{gateway.admin_url}/config", timeout=10).json()
    assert config["hash"]
    assert config["providers"] == [MOCK_PROVIDER]
    assert {r["name"] for r in config["routes"]} == {CHAT_ROUTE, EMBED_ROUTE}
