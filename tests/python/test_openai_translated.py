"""The official `openai` SDK against providers of other formats: Chat
Completions and the Responses API translated to Anthropic Messages, Gemini
generateContent and Bedrock Converse (and Azure), plus the OpenAI-format
backend (passthrough) for the Responses API. Routes come from the formats
gateway (conftest.py), whose mock checks every format's credentials.
"""

from __future__ import annotations

import json

import openai
import pytest

from helpers import (
    MOCK_OUTPUT_TOKENS,
    TIME,
    WEATHER,
    check_weather_args,
    openai_tool,
    unique_prompt,
)

TRANSLATED = ["anthropic", "gemini", "bedrock", "azure"]
ALL = ["openai", *TRANSLATED]


@pytest.fixture()
def oai(formats_gateway) -> openai.OpenAI:
    with formats_gateway.client() as c:
        yield c


@pytest.fixture(params=TRANSLATED)
def translated(request, formats_gateway) -> str:
    return request.param


@pytest.fixture(params=ALL)
def any_backend(request, formats_gateway) -> str:
    return request.param


WEATHER_TOOL = openai_tool(WEATHER)
TIME_TOOL = openai_tool(TIME)


def responses_tool(tool: dict) -> dict:
    """The Responses API spells function tools flat."""
    return {"type": "function", **tool["function"]}


def ask(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def stream_chunks(client, model, messages, **kwargs) -> list:
    with client.chat.completions.create(model=model, messages=messages, stream=True, **kwargs) as stream:
        return list(stream)


def content_deltas(chunks) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def assemble_tool_calls(chunks) -> dict[int, dict]:
    """index -> {id, name, arguments} from streamed tool-call deltas."""
    calls: dict[int, dict] = {}
    for c in chunks:
        if not c.choices:
            continue
        for tc in c.choices[0].delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": None, "name": None, "fragments": []})
            if tc.id:
                assert call["id"] in (None, tc.id), "a tool call's id changed mid-stream"
                call["id"] = tc.id
            if tc.function and tc.function.name:
                call["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                call["fragments"].append(tc.function.arguments)
    return calls


# ------------------------------------------------------------------- chat

def test_chat_plain(oai, translated):
    prompt = unique_prompt("Say something about gateways.")
    completion = oai.chat.completions.create(model=translated, messages=ask(prompt))
    assert completion.object == "chat.completion"
    assert completion.id
    assert completion.model
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    text = choice.message.content
    assert isinstance(text, str) and text.strip()
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    usage = completion.usage
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == len(text.split()) == MOCK_OUTPUT_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    again = oai.chat.completions.create(model=translated, messages=ask(prompt))
    assert again.choices[0].message.content == text
    other = oai.chat.completions.create(model=translated, messages=ask(unique_prompt("Other.")))
    assert other.choices[0].message.content != text


def test_chat_system_and_max_tokens(oai, translated):
    prompt = unique_prompt("Be brief.")
    plain = oai.chat.completions.create(model=translated, messages=ask(prompt))
    with_system = oai.chat.completions.create(
        model=translated,
        messages=[{"role": "system", "content": "You answer about network plumbing only."}, *ask(prompt)],
    )
    assert with_system.usage.prompt_tokens > plain.usage.prompt_tokens
    assert with_system.choices[0].message.content != plain.choices[0].message.content

    capped = oai.chat.completions.create(model=translated, messages=ask(prompt), max_tokens=4)
    assert capped.choices[0].finish_reason == "length"
    assert len(capped.choices[0].message.content.split()) == 4
    assert capped.usage.completion_tokens == 4


def test_chat_stream_with_usage(oai, translated):
    prompt = unique_prompt("Stream me a sentence.")
    reference = oai.chat.completions.create(model=translated, messages=ask(prompt))

    plain_chunks = stream_chunks(oai, translated, ask(prompt))
    assert all(c.usage is None for c in plain_chunks), "usage sent without include_usage"
    assert all(c.choices for c in plain_chunks)
    assert "".join(content_deltas(plain_chunks)) == reference.choices[0].message.content

    chunks = stream_chunks(oai, translated, ask(prompt), stream_options={"include_usage": True})
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id
    deltas = content_deltas(chunks)
    assert len(deltas) > 1
    assert "".join(deltas) == reference.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.completion_tokens == MOCK_OUTPUT_TOKENS
    assert final.usage.prompt_tokens == reference.usage.prompt_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens


def test_chat_tool_call_plain_and_streamed(oai, translated):
    prompt = unique_prompt("What's the weather in Paris?")
    completion = oai.chat.completions.create(model=translated, messages=ask(prompt), tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].id
    assert calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    check_weather_args(args)

    chunks = stream_chunks(oai, translated, ask(prompt), tools=[WEATHER_TOOL])
    streamed = assemble_tool_calls(chunks)
    assert list(streamed) == [0]
    assert streamed[0]["id"]
    assert streamed[0]["name"] == "get_weather"
    assert json.loads("".join(streamed[0]["fragments"])) == args
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "tool_calls"


def test_chat_parallel_tool_calls(oai, translated):
    prompt = f"{unique_prompt('Weather and time in Paris?')} [mock parallel_tools=2]"
    tools = [WEATHER_TOOL, TIME_TOOL]
    completion = oai.chat.completions.create(model=translated, messages=ask(prompt), tools=tools)
    calls = completion.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2 and all(c.id for c in calls)
    check_weather_args(json.loads(calls[0].function.arguments))
    assert isinstance(json.loads(calls[1].function.arguments).get("timezone"), str)

    chunks = stream_chunks(oai, translated, ask(prompt), tools=tools)
    streamed = assemble_tool_calls(chunks)
    assert sorted(streamed) == [0, 1]
    assert [streamed[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert streamed[0]["id"] != streamed[1]["id"]
    for i, call in enumerate(calls):
        assert json.loads("".join(streamed[i]["fragments"])) == json.loads(call.function.arguments)


def test_chat_tool_choice(oai, translated):
    prompt = unique_prompt("Weather or time?")
    tools = [WEATHER_TOOL, TIME_TOOL]
    forced = oai.chat.completions.create(
        model=translated,
        messages=ask(prompt),
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in forced.choices[0].message.tool_calls] == ["get_time"]

    if translated == "anthropic":
        # parallel_tool_calls=false becomes disable_parallel_tool_use, which
        # only the mock's Messages API honours.
        single = oai.chat.completions.create(
            model=translated, messages=ask(f"{prompt} [mock parallel_tools=2]"), tools=tools, parallel_tool_calls=False
        )
        assert [c.function.name for c in single.choices[0].message.tool_calls] == ["get_weather"]

    if translated == "bedrock":
        return  # Converse has no "none" tool choice
    none = oai.chat.completions.create(model=translated, messages=ask(prompt), tools=tools, tool_choice="none")
    assert none.choices[0].finish_reason == "stop"
    assert not none.choices[0].message.tool_calls
    assert none.choices[0].message.content


def test_chat_tool_result_multi_turn(oai, translated):
    prompt = f"{unique_prompt('Weather and time in Paris?')} [mock parallel_tools=2]"
    tools = [WEATHER_TOOL, TIME_TOOL]
    first = oai.chat.completions.create(model=translated, messages=ask(prompt), tools=tools)
    message = first.choices[0].message
    assert len(message.tool_calls) == 2
    history = [
        *ask(prompt),
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18 degrees"},
        {"role": "tool", "tool_call_id": message.tool_calls[1].id, "content": "14:05"},
    ]
    answer = oai.chat.completions.create(model=translated, messages=history, tools=tools)
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", answer
    assert not choice.message.tool_calls
    assert choice.message.content and choice.message.content.strip()
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens

    # Streamed, the follow-up turn is text too.
    chunks = stream_chunks(oai, translated, history, tools=tools)
    assert "".join(content_deltas(chunks)) == choice.message.content


# -------------------------------------------------------------- responses

def output_items(response, kind: str) -> list:
    return [item for item in response.output if item.type == kind]


def test_responses_plain(oai, any_backend):
    prompt = unique_prompt("Describe a gateway.")
    response = oai.responses.create(model=any_backend, input=prompt)
    assert response.object == "response"
    assert response.id
    assert response.status == "completed"
    text = response.output_text
    assert text.strip()
    messages = output_items(response, "message")
    assert len(messages) == 1 and messages[0].role == "assistant"
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens == len(text.split()) == MOCK_OUTPUT_TOKENS
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    with_instructions = oai.responses.create(
        model=any_backend, input=prompt, instructions="Answer about network plumbing only."
    )
    assert with_instructions.usage.input_tokens > response.usage.input_tokens
    assert with_instructions.output_text != text

    capped = oai.responses.create(model=any_backend, input=prompt, max_output_tokens=5)
    assert capped.status == "incomplete"
    assert capped.incomplete_details.reason == "max_output_tokens"
    assert len(capped.output_text.split()) == 5


def test_responses_stream(oai, any_backend):
    prompt = unique_prompt("Stream a description.")
    reference = oai.responses.create(model=any_backend, input=prompt)

    with oai.responses.create(model=any_backend, input=prompt, stream=True) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == reference.output_text
    done = [e for e in events if e.type == "response.output_text.done"]
    assert len(done) == 1 and done[0].text == reference.output_text
    # Sequence numbers increase by one from the first event.
    seqs = [e.sequence_number for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    completed = events[-1].response
    assert completed.id and completed.id == events[0].response.id
    assert completed.status == "completed"
    assert completed.output_text == reference.output_text
    assert completed.usage.output_tokens == MOCK_OUTPUT_TOKENS
    assert completed.usage.input_tokens == reference.usage.input_tokens > 0

    # Cut by max_output_tokens, the stream ends in response.incomplete.
    with oai.responses.create(model=any_backend, input=prompt, max_output_tokens=5, stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert len("".join(e.delta for e in events if e.type == "response.output_text.delta").split()) == 5


def test_responses_function_call_and_output(oai, any_backend):
    prompt = unique_prompt("What's the weather in Paris?")
    tools = [responses_tool(WEATHER_TOOL)]
    response = oai.responses.create(model=any_backend, input=prompt, tools=tools)
    calls = output_items(response, "function_call")
    assert len(calls) == 1
    call = calls[0]
    assert call.call_id
    assert call.name == "get_weather"
    args = json.loads(call.arguments)
    check_weather_args(args)

    # Streamed: argument deltas assemble into the same call.
    with oai.responses.create(model=any_backend, input=prompt, tools=tools, stream=True) as stream:
        events = list(stream)
    fragments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert fragments
    assert json.loads("".join(fragments)) == args
    arg_done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(arg_done) == 1 and json.loads(arg_done[0].arguments) == args
    assert events[-1].type == "response.completed"
    final_calls = output_items(events[-1].response, "function_call")
    assert [(c.name, json.loads(c.arguments)) for c in final_calls] == [("get_weather", args)]
    assert final_calls[0].call_id

    # The result goes back as function_call_output; the answer is text.
    follow_up = oai.responses.create(
        model=any_backend,
        tools=tools,
        input=[
            {"role": "user", "content": prompt},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"},
        ],
    )
    assert follow_up.status == "completed", follow_up
    assert not output_items(follow_up, "function_call")
    assert follow_up.output_text.strip()


def test_responses_parallel_function_calls(oai, any_backend):
    prompt = f"{unique_prompt('Weather and time?')} [mock parallel_tools=2]"
    tools = [responses_tool(WEATHER_TOOL), responses_tool(TIME_TOOL)]
    response = oai.responses.create(model=any_backend, input=prompt, tools=tools)
    calls = output_items(response, "function_call")
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.call_id for c in calls}) == 2
    follow_up = oai.responses.create(
        model=any_backend,
        tools=tools,
        input=[
            {"role": "user", "content": prompt},
            *[{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls],
            *[{"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls],
        ],
    )
    assert follow_up.status == "completed", follow_up
    assert follow_up.output_text.strip()


STREAM_FAILURES: tuple[type[BaseException], ...] = (openai.APIError,)
try:  # the SDK's own HTTP client
    import httpx2

    STREAM_FAILURES = (*STREAM_FAILURES, httpx2.HTTPError)
except ImportError:  # pragma: no cover
    pass


IN_BAND_STREAM_ERRORS = {"anthropic", "gemini", "bedrock", "openai"}


def break_directive(backend: str) -> str:
    # Chat Completions has no in-band stream error: cut the stream instead.
    return "[mock stream_error_after=3]" if backend in IN_BAND_STREAM_ERRORS else "[mock disconnect_after=3]"


def test_chat_stream_error_raises(oai, translated):
    seen = []
    with pytest.raises(STREAM_FAILURES) as exc:
        for chunk in stream_chunks(oai, translated, ask(f"{unique_prompt('break')} {break_directive(translated)}")):
            seen.append(chunk)
    assert len(seen) < MOCK_OUTPUT_TOKENS
    assert not any(c.choices and c.choices[0].finish_reason for c in seen)
    if translated in IN_BAND_STREAM_ERRORS:
        # Rendered as a chunk with an OpenAI error object, which the SDK raises.
        assert type(exc.value) is openai.APIError, repr(exc.value)
        assert exc.value.body["message"]


def test_responses_stream_error_is_reported(oai, any_backend):
    directive = break_directive(any_backend)
    events, raised = [], None
    try:
        with oai.responses.create(model=any_backend, input=f"{unique_prompt('break')} {directive}", stream=True) as stream:
            for event in stream:
                events.append(event)
                assert len(events) < 1000
    except STREAM_FAILURES as exc:
        raised = exc
    kinds = [e.type for e in events]
    assert "response.completed" not in kinds, kinds
    if any_backend == "openai":
        # Passthrough: OpenAI's own flat `error` event, which the SDK yields.
        assert raised is None and kinds[-1] == "error", (raised, kinds)
        assert events[-1].message
    elif any_backend in IN_BAND_STREAM_ERRORS:
        # Translated: the error event also carries `error`, so the SDK raises.
        assert type(raised) is openai.APIError, repr(raised)
        assert raised.body["message"]
    else:
        assert raised is not None


@pytest.mark.parametrize("backend", ["anthropic", "gemini", "bedrock"])
def test_reasoning_surfaces_and_round_trips(oai, backend):
    """Reasoning effort becomes a thinking budget; the provider's thinking
    comes back as `reasoning_content` (chat) or a reasoning item carrying
    its signature (Responses), which can be sent back with a tool result."""
    prompt = unique_prompt("Think, then look it up.")
    tools = [WEATHER_TOOL]
    completion = oai.chat.completions.create(model=backend, messages=ask(prompt), reasoning_effort="low", tools=tools)
    message = completion.choices[0].message.model_dump(exclude_none=True)
    assert message.get("reasoning_content", "").strip(), message
    assert message["tool_calls"]
    chunks = stream_chunks(oai, backend, ask(prompt), reasoning_effort="low")
    streamed = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert streamed == message["reasoning_content"]

    rtools = [responses_tool(WEATHER_TOOL)]
    response = oai.responses.create(model=backend, input=prompt, reasoning={"effort": "low"}, tools=rtools)
    items = [i.model_dump(exclude_none=True) for i in response.output]
    assert [i["type"] for i in items] == ["reasoning", "function_call"], items
    assert items[0]["encrypted_content"]
    call = items[1]
    follow_up = oai.responses.create(
        model=backend,
        reasoning={"effort": "low"},
        tools=rtools,
        input=[
            {"role": "user", "content": prompt},
            *[{k: v for k, v in i.items() if k != "status"} for i in items],
            {"type": "function_call_output", "call_id": call["call_id"], "output": "18 degrees"},
        ],
    )
    assert follow_up.status == "completed", follow_up
    assert follow_up.output_text.strip()


def test_errors_through_translation(oai, translated):
    with pytest.raises(openai.RateLimitError) as exc:
        oai.chat.completions.create(model=translated, messages=ask(f"{unique_prompt('x')} [mock status=429]"))
    assert exc.value.status_code == 429
    with pytest.raises(openai.RateLimitError):
        oai.responses.create(model=translated, input=f"{unique_prompt('x')} [mock status=429]")
    with pytest.raises(openai.BadRequestError) as exc:
        oai.chat.completions.create(model=translated, messages=ask(f"{unique_prompt('x')} [mock status=400]"))
    assert exc.value.status_code == 400
