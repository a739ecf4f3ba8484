"""Drives the gateway's Anthropic Messages API (`/v1/messages`,
`/v1/messages/count_tokens`) with the official `anthropic` Python SDK,
against every provider format: each test runs once per route of the
formats gateway (conftest.py), whose mock checks each format's credentials.

`openai` and `azure` answer through translation to Chat Completions,
`gemini` and `bedrock` through translation to generateContent and Converse,
`anthropic` is a passthrough. Every client has `max_retries=0`.
"""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from conftest import API_KEY, BACKENDS, FALLBACK_ROUTE
from helpers import (
    MOCK_OUTPUT_TOKENS,
    TIME,
    WEATHER,
    anthropic_tool,
    check_weather_args,
    unique_prompt,
)

MAX_TOKENS = 256

# Text cut by stop sequences happens in the mock's Messages, Gemini and
# Converse endpoints; its Chat Completions endpoint ignores `stop`.
HONOURS_STOP = {"anthropic", "gemini", "bedrock"}

STREAM_FAILURES: tuple[type[BaseException], ...] = (anthropic.APIError, httpx.HTTPError)
try:  # the SDK's own HTTP client
    import httpx2

    STREAM_FAILURES = (*STREAM_FAILURES, httpx2.HTTPError)
except ImportError:  # pragma: no cover
    pass


def user(text) -> dict:
    return {"role": "user", "content": text}


@pytest.fixture(params=list(BACKENDS))
def backend(request, formats_gateway) -> str:
    """The route alias (= model name) of one provider format."""
    return request.param


@pytest.fixture()
def claude(formats_gateway) -> anthropic.Anthropic:
    with formats_gateway.anthropic() as c:
        yield c


def texts(message) -> list[str]:
    return [b.text for b in message.content if b.type == "text"]


def tool_uses(message) -> list:
    return [b for b in message.content if b.type == "tool_use"]


WEATHER_TOOL = anthropic_tool(WEATHER)
TIME_TOOL = anthropic_tool(TIME)


# ------------------------------------------------------------- messages.create

def test_create_plain(claude, backend):
    prompt = unique_prompt("Say something about gateways.")
    msg = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, messages=[user(prompt)])

    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.id
    assert msg.model
    assert [b.type for b in msg.content] == ["text"]
    text = msg.content[0].text
    assert text.strip()
    assert msg.stop_reason == "end_turn"
    assert msg.stop_sequence is None
    assert msg.usage.input_tokens > 0
    assert msg.usage.output_tokens == len(text.split()) == MOCK_OUTPUT_TOKENS

    # Deterministic upstream: same prompt, same answer; another, another.
    again = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, messages=[user(prompt)])
    assert again.content[0].text == text
    assert again.usage.input_tokens == msg.usage.input_tokens
    other = claude.messages.create(
        model=backend, max_tokens=MAX_TOKENS, messages=[user(unique_prompt("Something else."))]
    )
    assert other.content[0].text != text


def test_route_and_provider_headers(claude, backend):
    raw = claude.messages.with_raw_response.create(
        model=backend, max_tokens=MAX_TOKENS, messages=[user(unique_prompt("headers"))]
    )
    assert raw.status_code == 200
    # The answer came from this format's provider, not another route's.
    assert raw.headers["x-tollgate-route"] == f"default/{backend}"
    assert raw.headers["x-tollgate-provider"] == f"fmt-{backend}"
    assert raw.headers["content-type"].startswith("application/json")
    assert texts(raw.parse())


def test_bearer_auth_and_content_blocks(formats_gateway, backend):
    """`Authorization: Bearer` works as well as `x-api-key`, and content
    given as a list of blocks is read like a plain string."""
    prompt = unique_prompt("Blocks please.")
    with anthropic.Anthropic(
        base_url=formats_gateway.data_url, api_key=None, auth_token=API_KEY, max_retries=0, timeout=30
    ) as bearer:
        msg = bearer.messages.create(
            model=backend,
            max_tokens=MAX_TOKENS,
            messages=[user([{"type": "text", "text": prompt}])],
        )
    assert texts(msg) and texts(msg)[0].strip()
    assert msg.usage.input_tokens > 0


def test_system_prompt_and_multi_turn(claude, backend):
    question = unique_prompt("And what about routing?")
    alone = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, messages=[user(question)])
    history = [
        user(unique_prompt("Tell me about gateways.")),
        {"role": "assistant", "content": "Gateways route requests between clients and providers."},
        user(question),
    ]
    multi = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, messages=history)
    with_system = claude.messages.create(
        model=backend,
        max_tokens=MAX_TOKENS,
        system="You are a terse assistant who answers in one paragraph about network plumbing.",
        messages=history,
    )
    for msg in (alone, multi, with_system):
        assert texts(msg) and texts(msg)[0].strip()
        assert msg.stop_reason == "end_turn"
    # The earlier turns and the system prompt reach the provider: they are
    # counted, and they change the (content-seeded) answer.
    assert multi.usage.input_tokens > alone.usage.input_tokens
    assert with_system.usage.input_tokens > multi.usage.input_tokens
    assert texts(multi) != texts(alone)
    assert texts(with_system) != texts(multi)


def test_consecutive_user_messages(claude, backend):
    """Anthropic accepts several user turns in a row; Gemini and Converse
    need alternating roles, so translation must merge them, not drop any."""
    first = unique_prompt("First part.")
    one = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, messages=[user(first)])
    two = claude.messages.create(
        model=backend, max_tokens=MAX_TOKENS, messages=[user(first), user("Second part, with more words in it.")]
    )
    assert two.stop_reason == "end_turn"
    assert texts(two) and texts(two)[0].strip()
    assert two.usage.input_tokens > one.usage.input_tokens


def test_max_tokens_stops_early(claude, backend):
    msg = claude.messages.create(model=backend, max_tokens=3, messages=[user(unique_prompt("Be brief."))])
    assert msg.stop_reason == "max_tokens"
    assert len(texts(msg)[0].split()) == 3
    assert msg.usage.output_tokens == 3


def test_stop_sequences(claude, backend):
    if backend not in HONOURS_STOP:
        pytest.skip("the mock's Chat Completions endpoint ignores `stop`")
    prompt = unique_prompt("Tell a long story.")
    full = texts(claude.messages.create(model=backend, max_tokens=MAX_TOKENS, messages=[user(prompt)]))[0]
    words = full.split()
    assert len(words) > 5
    # A later word that does not also occur at the very start (a short word
    # can be a prefix of the first one), so the cut leaves some text.
    stop = next(w for w in words[4:] if len(w) >= 3 and full.find(w) > 0)
    cut_at = full.find(stop)

    msg = claude.messages.create(
        model=backend, max_tokens=MAX_TOKENS, messages=[user(prompt)], stop_sequences=["@@never@@", stop]
    )
    if backend == "gemini":
        # Gemini reports a stop sequence as finishReason STOP, naming none.
        assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    else:
        assert msg.stop_reason == "stop_sequence"
        assert msg.stop_sequence == stop
    text = texts(msg)[0] if texts(msg) else ""
    assert text.rstrip() == full[:cut_at].rstrip()
    assert stop not in text


# ------------------------------------------------------------------ streaming

def test_stream_helper(claude, backend):
    prompt = unique_prompt("Stream me a sentence.")
    reference = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, messages=[user(prompt)])

    with claude.messages.stream(model=backend, max_tokens=MAX_TOKENS, messages=[user(prompt)]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) > 1, pieces
    assert "".join(pieces) == reference.content[0].text
    assert final.id
    assert final.role == "assistant"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == MOCK_OUTPUT_TOKENS
    assert final.usage.input_tokens == reference.usage.input_tokens > 0


def test_stream_raw_events(claude, backend):
    """`stream=True` without the helper: the event sequence is well formed."""
    events = list(
        claude.messages.create(
            model=backend, max_tokens=4, messages=[user(unique_prompt("raw events"))], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds.count("message_delta") == 1
    assert kinds.index("content_block_start") < kinds.index("content_block_delta")
    assert kinds.index("content_block_stop") < kinds.index("message_delta")
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 4
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert len(text.split()) == 4


# ------------------------------------------------------------------ tool use

def test_tool_use_plain_and_streamed(claude, backend):
    prompt = unique_prompt("What's the weather in Paris?")
    msg = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, tools=[WEATHER_TOOL], messages=[user(prompt)])
    assert msg.stop_reason == "tool_use"
    calls = tool_uses(msg)
    assert len(calls) == 1
    call = calls[0]
    assert call.id
    assert call.name == "get_weather"
    check_weather_args(call.input)
    assert msg.usage.output_tokens > 0

    with claude.messages.stream(
        model=backend, max_tokens=MAX_TOKENS, tools=[WEATHER_TOOL], messages=[user(prompt)]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = tool_uses(final)
    assert len(streamed) == 1
    assert streamed[0].id
    assert streamed[0].name == "get_weather"
    assert streamed[0].input == call.input
    fragments = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert fragments, "no input_json_delta events"
    assert json.loads("".join(fragments)) == call.input


def test_tool_choice(claude, backend):
    prompt = unique_prompt("Weather or time?")
    forced = claude.messages.create(
        model=backend,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "tool", "name": "get_time"},
        messages=[user(prompt)],
    )
    assert forced.stop_reason == "tool_use"
    assert [c.name for c in tool_uses(forced)] == ["get_time"]
    assert isinstance(tool_uses(forced)[0].input.get("timezone"), str)

    if backend == "anthropic":  # only the mock's Messages API honours disabling parallel calls
        single = claude.messages.create(
            model=backend,
            max_tokens=MAX_TOKENS,
            tools=[WEATHER_TOOL, TIME_TOOL],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            messages=[user(f"{prompt} [mock parallel_tools=2]")],
        )
        assert [c.name for c in tool_uses(single)] == ["get_weather"]

    if backend == "bedrock":
        return  # Converse has no "none" tool choice
    none = claude.messages.create(
        model=backend,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "none"},
        messages=[user(prompt)],
    )
    assert none.stop_reason == "end_turn"
    assert not tool_uses(none)
    assert texts(none) and texts(none)[0].strip()


def test_tool_result_round_trip(claude, backend):
    prompt = unique_prompt("What's the weather in Paris?")
    first = claude.messages.create(model=backend, max_tokens=MAX_TOKENS, tools=[WEATHER_TOOL], messages=[user(prompt)])
    call = tool_uses(first)[0]

    answer = claude.messages.create(
        model=backend,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL],
        messages=[
            user(prompt),
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            user([{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"}]),
        ],
    )
    assert answer.stop_reason == "end_turn", answer
    assert not tool_uses(answer)
    assert texts(answer) and texts(answer)[0].strip()
    assert answer.usage.input_tokens > first.usage.input_tokens


def test_parallel_tool_use_round_trip(claude, backend):
    prompt = f"{unique_prompt('Weather and time in Paris?')} [mock parallel_tools=2]"
    msg = claude.messages.create(
        model=backend, max_tokens=MAX_TOKENS, tools=[WEATHER_TOOL, TIME_TOOL], messages=[user(prompt)]
    )
    assert msg.stop_reason == "tool_use"
    calls = tool_uses(msg)
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2 and all(c.id for c in calls)
    check_weather_args(calls[0].input)
    assert isinstance(calls[1].input.get("timezone"), str)

    # Streamed, the helper assembles both blocks.
    with claude.messages.stream(
        model=backend, max_tokens=MAX_TOKENS, tools=[WEATHER_TOOL, TIME_TOOL], messages=[user(prompt)]
    ) as stream:
        final = stream.get_final_message()
    assert [(c.name, c.input) for c in tool_uses(final)] == [(c.name, c.input) for c in calls]

    answer = claude.messages.create(
        model=backend,
        max_tokens=MAX_TOKENS,
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[
            user(prompt),
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
            user(
                [
                    {"type": "tool_result", "tool_use_id": calls[0].id, "content": "18 degrees"},
                    {"type": "tool_result", "tool_use_id": calls[1].id, "content": "14:05"},
                ]
            ),
        ],
    )
    assert answer.stop_reason == "end_turn", answer
    assert texts(answer) and texts(answer)[0].strip()


# ------------------------------------------------------- thinking and caching

# Formats with reasoning the mock returns (Chat Completions has none to show).
HAS_THINKING = {"anthropic", "gemini", "bedrock"}
THINKING = {"type": "enabled", "budget_tokens": 1024}


def test_thinking_with_tool_round_trip(claude, backend):
    """Thinking blocks come back with a signature, plain and streamed, and
    can be sent back with the tool result (Bedrock refuses unsigned ones)."""
    prompt = unique_prompt("Think, then check the weather.")
    kwargs = dict(model=backend, max_tokens=4096, thinking=THINKING, tools=[WEATHER_TOOL])
    msg = claude.messages.create(**kwargs, messages=[user(prompt)])
    kinds = [b.type for b in msg.content]
    if backend in HAS_THINKING:
        assert kinds == ["thinking", "tool_use"], kinds
        thinking = msg.content[0]
        assert thinking.thinking.strip()
        assert thinking.signature
    else:
        assert kinds == ["tool_use"], kinds
    assert msg.stop_reason == "tool_use"

    with claude.messages.stream(**kwargs, messages=[user(prompt)]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == kinds
    if backend in HAS_THINKING:
        assert final.content[0].thinking == msg.content[0].thinking
        assert final.content[0].signature == msg.content[0].signature

    call = tool_uses(msg)[0]
    answer = claude.messages.create(
        **kwargs,
        messages=[
            user(prompt),
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
            user([{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees"}]),
        ],
    )
    assert answer.stop_reason == "end_turn", answer
    assert texts(answer) and texts(answer)[-1].strip()


# The mock reports cache reads for marked prompts in Messages and Converse
# (cachePoint); Gemini has no per-request cache markers.
CACHES = {"anthropic", "bedrock"}


@pytest.mark.parametrize(
    "backend",
    [
        "anthropic",
        "bedrock",
    ],
)
def test_prompt_caching_marker_reaches_provider(claude, backend):
    system = [{"type": "text", "text": "You are a careful assistant. " * 20, "cache_control": {"type": "ephemeral"}}]
    msg = claude.messages.create(
        model=backend, max_tokens=64, system=system, messages=[user(unique_prompt("cached?"))]
    )
    assert msg.usage.cache_read_input_tokens > 0, msg.usage
    # Anthropic's input_tokens exclude cache reads.
    plain = claude.messages.create(
        model=backend, max_tokens=64, system=system[0]["text"], messages=[user(unique_prompt("cached?"))]
    )
    assert msg.usage.input_tokens + msg.usage.cache_read_input_tokens == plain.usage.input_tokens


# --------------------------------------------------------------- count_tokens

def test_count_tokens(claude, backend):
    short = claude.messages.count_tokens(model=backend, messages=[user("Hello there.")])
    long = claude.messages.count_tokens(
        model=backend,
        system="You are a careful assistant.",
        messages=[user("Hello there. " + "Tell me about network gateways and routing. " * 20)],
    )
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens * 5
    if backend == "anthropic":
        # Passthrough: the provider's own count, the one messages.create bills.
        msg = claude.messages.create(model=backend, max_tokens=16, messages=[user("Hello there.")])
        assert short.input_tokens == msg.usage.input_tokens

    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="claude-nonexistent", messages=[user("Hello there.")])


def test_async_concurrent_streams_all_formats(formats_gateway, claude):
    """AsyncAnthropic: streams to every format at once each get their own answer."""
    import asyncio

    prompts = {b: unique_prompt(f"concurrent {b}") for b in BACKENDS}
    expected = {
        b: claude.messages.create(model=b, max_tokens=MAX_TOKENS, messages=[user(p)]).content[0].text
        for b, p in prompts.items()
    }

    async def one(aclient, b):
        async with aclient.messages.stream(model=b, max_tokens=MAX_TOKENS, messages=[user(prompts[b])]) as s:
            text = "".join([t async for t in s.text_stream])
            final = await s.get_final_message()
        assert final.stop_reason == "end_turn"
        return b, text

    async def main():
        async with anthropic.AsyncAnthropic(
            base_url=formats_gateway.data_url, api_key=API_KEY, max_retries=0, timeout=30
        ) as aclient:
            jobs = [one(aclient, b) for b in BACKENDS for _ in range(2)]
            return await asyncio.wait_for(asyncio.gather(*jobs), timeout=60)

    results = asyncio.run(main())
    assert len(results) == 2 * len(BACKENDS)
    for b, text in results:
        assert text == expected[b], b


# --------------------------------------------------------------------- errors

def test_bad_key_is_authentication_error(formats_gateway, backend):
    with formats_gateway.anthropic(api_key="tg-wrong-key") as bad:
        with pytest.raises(anthropic.AuthenticationError) as exc:
            bad.messages.create(model=backend, max_tokens=16, messages=[user("hi")])
    assert exc.value.status_code == 401
    assert exc.value.body["error"]["type"] == "authentication_error"


def test_unknown_model_is_not_found(claude):
    with pytest.raises(anthropic.NotFoundError) as exc:
        claude.messages.create(model="claude-nonexistent", max_tokens=16, messages=[user("hi")])
    assert exc.value.status_code == 404
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "not_found_error"


def test_missing_max_tokens_is_bad_request(claude, backend):
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.post("/v1/messages", body={"model": backend, "messages": [user("hi")]}, cast_to=object)
    assert exc.value.status_code == 400
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in exc.value.body["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": 16, "messages": []},
        {"max_tokens": 16, "messages": [{"role": "system", "content": "hi"}]},
        {"max_tokens": "lots", "messages": [{"role": "user", "content": "hi"}]},
    ],
    ids=["empty-messages", "bad-role", "max-tokens-string"],
)
def test_invalid_request_is_bad_request(claude, backend, body):
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.post("/v1/messages", body={"model": backend, **body}, cast_to=object)
    assert exc.value.status_code == 400
    assert exc.value.body["error"]["type"] == "invalid_request_error"


def test_upstream_429_is_rate_limit_error(claude, backend):
    with pytest.raises(anthropic.RateLimitError) as exc:
        claude.messages.create(
            model=backend, max_tokens=16, messages=[user(f"{unique_prompt('slow down')} [mock status=429]")]
        )
    assert exc.value.status_code == 429
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "rate_limit_error"


def test_upstream_400_is_bad_request(claude, backend):
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.messages.create(
            model=backend, max_tokens=16, messages=[user(f"{unique_prompt('bad')} [mock status=400]")]
        )
    assert exc.value.status_code == 400
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert exc.value.body["error"]["message"]


@pytest.mark.parametrize(
    "backend",
    [
        "openai",
        "anthropic",
        "gemini",
        "bedrock",
        "azure",
    ],
)
def test_provider_rejecting_gateway_credentials_is_502(formats_gateway, claude, backend):
    """A provider refusing the gateway's own credentials is the gateway's
    problem: 502, never a 4xx that blames the client's request or key."""
    with pytest.raises(anthropic.InternalServerError) as exc:
        claude.messages.create(model=f"{backend}-badcreds", max_tokens=16, messages=[user("hi")])
    assert exc.value.status_code == 502
    assert exc.value.body["error"]["type"] == "api_error"
    with formats_gateway.client() as oai:
        with pytest.raises(openai.InternalServerError) as oexc:
            oai.chat.completions.create(model=f"{backend}-badcreds", messages=[user("hi")])
    assert oexc.value.status_code == 502


def _upstream_errors(admin_url: str, provider: str, reason: str) -> float:
    from test_openai_sdk import scrape, total

    return total(scrape(admin_url), "tollgate_upstream_errors_total", provider=provider, reason=reason)


def test_rate_limit_after_fallback_is_exhausted(formats_gateway, claude):
    # An injected 429 in an earlier test (the mock sends `Retry-After: 1`)
    # has the gateway skip that provider for a second while another backend
    # remains (quota-aware routing): let it pass.
    time.sleep(1.2)
    raw = claude.messages.with_raw_response.create(
        model=FALLBACK_ROUTE, max_tokens=MAX_TOKENS, messages=[user(unique_prompt("first choice"))]
    )
    assert raw.headers["x-tollgate-provider"] == "fmt-anthropic"
    assert texts(raw.parse())

    admin = formats_gateway.admin_url
    before = {p: _upstream_errors(admin, p, "rate_limited") for p in ("fmt-anthropic", "fmt-bedrock")}
    with pytest.raises(anthropic.RateLimitError) as exc:
        claude.messages.create(
            model=FALLBACK_ROUTE, max_tokens=16, messages=[user(f"{unique_prompt('busy')} [mock status=429]")]
        )
    assert exc.value.status_code == 429
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    # Both formats were tried (Anthropic, then Bedrock) before giving up.
    after = {p: _upstream_errors(admin, p, "rate_limited") for p in before}
    assert {p: after[p] - before[p] for p in before} == {"fmt-anthropic": 1, "fmt-bedrock": 1}


def test_upstream_503_before_stream_is_server_error(claude, backend):
    with pytest.raises(anthropic.InternalServerError) as exc:
        with claude.messages.stream(
            model=backend, max_tokens=16, messages=[user(f"{unique_prompt('down')} [mock status=503]")]
        ) as stream:
            stream.until_done()
    assert exc.value.status_code >= 500


# Formats whose streams carry in-band errors the gateway re-renders as the
# client's error event (Messages `error`, Gemini error element, Converse
# exception frame); Chat Completions streams are cut instead.
IN_BAND_STREAM_ERRORS = {"anthropic", "gemini", "bedrock"}


def test_error_inside_stream_raises(claude, backend):
    in_band = backend in IN_BAND_STREAM_ERRORS
    directive = "[mock stream_error_after=3]" if in_band else "[mock disconnect_after=3]"
    pieces = []
    with pytest.raises(STREAM_FAILURES) as exc:
        with claude.messages.stream(
            model=backend, max_tokens=MAX_TOKENS, messages=[user(f"{unique_prompt('break')} {directive}")]
        ) as stream:
            for piece in stream.text_stream:
                pieces.append(piece)
                assert len(pieces) < 1000
    # The SDK did not see a complete message first.
    assert len(pieces) < MOCK_OUTPUT_TOKENS
    if in_band:
        # An Anthropic `error` event with the upstream's message.
        assert isinstance(exc.value, anthropic.APIStatusError), repr(exc.value)
        assert exc.value.body["type"] == "error"
        assert exc.value.body["error"]["type"]
        assert exc.value.body["error"]["message"]


def test_an_embedding_model_is_refused_on_messages(gateway):
    # The main gateway's `embed` route serves an embedding model: on the
    # Messages API it is a 400 in Anthropic's error shape.
    client = anthropic.Anthropic(base_url=gateway.data_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model="embed", max_tokens=16, messages=[user("hi")])
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "not served on /v1/messages" in exc.value.body["error"]["message"]
