//! Golden tests for the OpenAI Responses dialect. Each direction has a folder
//! under `tests/golden/responses/`: `<case>.in.json` is the input,
//! `<case>.out.json` the expected output, compared as JSON values.
//! `UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test golden_responses`
//! rewrites the expectations; review the diff by hand before committing.

mod common;

use std::collections::BTreeMap;

use bytes::BytesMut;
use common::golden::{self, error_json, thinking_json};
use serde_json::{Value, json};
use tollgate_llm::canonical::{
    ChatChunk, ChatResponse, Choice, Content, FunctionCall, Message, Role, Thinking, ToolCall,
};
use tollgate_llm::responses::{self, ResponsesEcho, ResponsesStreamEncoder};
use tollgate_llm::sse;
use tollgate_llm::{ErrorKind, LlmError, StreamEncoder};

fn error_from_json(value: &Value) -> LlmError {
    let kind = match value["kind"].as_str().unwrap() {
        "InvalidRequest" => ErrorKind::InvalidRequest,
        "Authentication" => ErrorKind::Authentication,
        "RateLimit" => ErrorKind::RateLimit,
        "Overloaded" => ErrorKind::Overloaded,
        "BadGateway" => ErrorKind::BadGateway,
        "Timeout" => ErrorKind::Timeout,
        _ => ErrorKind::Api,
    };
    let mut error = LlmError::new(kind, value["message"].as_str().unwrap());
    if let Some(status) = value["status"].as_u64() {
        error = error.with_status(status as u16);
    }
    if let Some(param) = value["param"].as_str() {
        error = error.with_param(param);
    }
    if let Some(code) = value["code"].as_str() {
        error = error.with_code(code);
    }
    error
}

fn thinking_from_json(value: &Value) -> Vec<Thinking> {
    value
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .map(|b| Thinking {
                    text: b["text"].as_str().unwrap_or_default().into(),
                    signature: b["signature"].as_str().map(Into::into),
                    redacted_data: b["redacted_data"].as_str().map(Into::into),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn echo_json(echo: &ResponsesEcho) -> Value {
    json!({
        "model": echo.model,
        "instructions": echo.instructions,
        "tools": echo.tools,
        "tool_choice": echo.tool_choice,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "temperature": echo.temperature,
        "top_p": echo.top_p,
        "max_output_tokens": echo.max_output_tokens,
        "text": echo.text,
        "reasoning": echo.reasoning,
        "metadata": echo.metadata,
        "user": echo.user,
        "truncation": echo.truncation,
    })
}

fn echo_for(case: &Value) -> ResponsesEcho {
    match case.get("request") {
        Some(request) => {
            responses::parse_request_with_echo(request.to_string().as_bytes())
                .unwrap()
                .1
        }
        None => ResponsesEcho::default(),
    }
}

/// Input: a Responses request body. Output: `{"request": <canonical JSON>,
/// "thinking": {"<message index>": [...]}, "echo"}` or `{"error"}`.
#[test]
fn request_golden() {
    golden::run("responses", "request", |input| {
        let body = &input.bytes;
        match responses::parse_request_with_echo(body) {
            Ok((request, echo)) => {
                let thinking: BTreeMap<String, Value> = request
                    .messages
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| !m.thinking.is_empty())
                    .map(|(i, m)| (i.to_string(), thinking_json(&m.thinking)))
                    .collect();
                assert_eq!(
                    responses::parse_request(body).unwrap(),
                    request,
                    "{}",
                    input.name
                );
                json!({
                    "request": serde_json::to_value(&request).unwrap(),
                    "thinking": thinking,
                    "echo": echo_json(&echo),
                })
            }
            Err(error) => json!({ "error": error_json(&error) }),
        }
    });
}

/// Input: `{"request"?: <Responses body, for the echo>, "response":
/// <canonical JSON>, "thinking"?: [...] (on choice 0)}`. Output: the
/// rendered Responses object.
#[test]
fn response_golden() {
    golden::run("responses", "response", |input| {
        let case = input.json();
        let mut response: ChatResponse = serde_json::from_value(case["response"].clone()).unwrap();
        if let Some(choice) = response.choices.first_mut() {
            choice.message.thinking = thinking_from_json(&case["thinking"]);
        }
        serde_json::from_slice(&responses::render_response(&response, &echo_for(&case))).unwrap()
    });
}

/// Input: `{"request"?, "items": [{"chunk", "thinking_signature"?} | "done" |
/// {"error": <LlmError JSON>}]}`. Output: the events, `{"event", "data"}`.
#[test]
fn stream_golden() {
    golden::run("responses", "stream", |input| {
        let events = encode(&input.json());
        check_event_invariants(&input.name, &events);
        Value::Array(events)
    });
}

fn chunks_of(case: &Value) -> Vec<ChatChunk> {
    case["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item.get("chunk").is_some())
        .map(|item| {
            let mut chunk: ChatChunk = serde_json::from_value(item["chunk"].clone()).unwrap();
            if let Some(signature) = item["thinking_signature"].as_str() {
                chunk.choices[0].delta.thinking_signature = Some(signature.into());
            }
            chunk
        })
        .collect()
}

fn encode(case: &Value) -> Vec<Value> {
    let mut encoder = ResponsesStreamEncoder::new(echo_for(case));
    let mut out = BytesMut::new();
    let mut chunks = chunks_of(case).into_iter();
    for item in case["items"].as_array().unwrap() {
        if item.get("chunk").is_some() {
            encoder.chunk(&chunks.next().unwrap(), &mut out);
        } else if let Some(error) = item.get("error") {
            encoder.error(&error_from_json(error), &mut out);
        } else {
            assert_eq!(item, "done");
            encoder.done(&mut out);
        }
    }
    parse_events(&out)
}

fn parse_events(bytes: &[u8]) -> Vec<Value> {
    let mut parser = sse::Parser::default();
    let mut events = Vec::new();
    parser.push(bytes, &mut events).unwrap();
    parser.finish(&mut events);
    events
        .into_iter()
        .map(|e| json!({ "event": e.event, "data": serde_json::from_str::<Value>(&e.data).unwrap() }))
        .collect()
}

/// What every stream must satisfy whatever the case: event name = `type`,
/// sequence numbers 0, 1, 2..., deltas adding up to their `done` texts.
fn check_event_invariants(case: &str, events: &[Value]) {
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        let data = &event["data"];
        assert_eq!(event["event"], data["type"], "{case}");
        assert_eq!(data["sequence_number"], i, "{case}");
        let key = format!(
            "{}/{}/{}",
            data["output_index"], data["content_index"], data["summary_index"]
        );
        match data["type"].as_str().unwrap() {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
            | "response.reasoning_summary_text.delta" => {
                texts
                    .entry(key)
                    .or_default()
                    .push_str(data["delta"].as_str().unwrap());
            }
            "response.output_text.done" | "response.reasoning_summary_text.done" => {
                assert_eq!(texts[&key], data["text"], "{case}");
            }
            "response.refusal.done" => {
                assert_eq!(texts[&key], data["refusal"], "{case}");
            }
            "response.function_call_arguments.done" => {
                assert_eq!(
                    texts.get(&key).map_or("", String::as_str),
                    data["arguments"],
                    "{case}"
                );
            }
            _ => {}
        }
    }
}

/// The streamed events, accumulated, equal the plain rendering of the same
/// answer: the chunks are folded into one canonical response (as a
/// non-streaming provider would have returned it) and rendered, and that
/// must equal both the final event's response and the items assembled from
/// `output_item.done` events.
#[test]
fn streamed_events_accumulate_to_the_plain_response() {
    let mut compared = 0;
    for input in golden::cases("responses", "stream") {
        let case = input.json();
        if case["items"].as_array().unwrap().last() != Some(&json!("done"))
            || chunks_of(&case).is_empty()
        {
            continue;
        }
        let events = encode(&case);
        let last = &events.last().unwrap()["data"];
        assert!(
            matches!(
                last["type"].as_str(),
                Some("response.completed" | "response.incomplete")
            ),
            "{}",
            input.name
        );
        let streamed = &last["response"];
        let items: Vec<Value> = events
            .iter()
            .filter(|e| e["event"] == "response.output_item.done")
            .map(|e| e["data"]["item"].clone())
            .collect();
        assert_eq!(streamed["output"], Value::Array(items), "{}", input.name);

        let response = fold(&chunks_of(&case));
        let plain: Value =
            serde_json::from_slice(&responses::render_response(&response, &echo_for(&case)))
                .unwrap();
        assert_eq!(&plain, streamed, "{}", input.name);
        compared += 1;
    }
    assert!(compared >= 4, "only {compared} stream cases compared");
}

/// Canonical chunks → the canonical response they add up to.
fn fold(chunks: &[ChatChunk]) -> ChatResponse {
    let mut message = Message {
        content: None,
        ..Message::new(Role::Assistant, "")
    };
    let mut text = String::new();
    let mut refusal = String::new();
    let mut reasoning = String::new();
    let mut calls: BTreeMap<u32, ToolCall> = BTreeMap::new();
    let mut finish_reason = None;
    let mut usage = None;
    for chunk in chunks {
        usage = chunk.usage.or(usage);
        for choice in &chunk.choices {
            let delta = &choice.delta;
            if let Some(part) = &delta.reasoning_content {
                reasoning.push_str(part);
            }
            if let Some(signature) = &delta.thinking_signature {
                message.thinking.push(Thinking {
                    text: std::mem::take(&mut reasoning),
                    signature: Some(signature.clone()),
                    redacted_data: None,
                });
            }
            text.push_str(delta.content.as_deref().unwrap_or_default());
            refusal.push_str(delta.refusal.as_deref().unwrap_or_default());
            for call in delta.tool_calls.iter().flatten() {
                let entry = calls.entry(call.index).or_insert_with(|| ToolCall {
                    id: call.id.clone().unwrap_or_default(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: String::new(),
                        arguments: String::new(),
                    },
                });
                if let Some(function) = &call.function {
                    if let Some(name) = &function.name {
                        entry.function.name.clone_from(name);
                    }
                    entry
                        .function
                        .arguments
                        .push_str(function.arguments.as_deref().unwrap_or_default());
                }
            }
            finish_reason = choice.finish_reason.clone().or(finish_reason);
        }
    }
    if !reasoning.is_empty() {
        if message.thinking.is_empty() {
            message.reasoning_content = Some(reasoning);
        } else {
            message.thinking.push(Thinking {
                text: reasoning,
                ..Thinking::default()
            });
        }
    }
    message.content = (!text.is_empty()).then_some(Content::Text(text));
    message.refusal = (!refusal.is_empty()).then_some(refusal);
    message.tool_calls = (!calls.is_empty()).then(|| calls.into_values().collect());
    let first = &chunks[0];
    ChatResponse {
        id: first.id.clone(),
        object: "chat.completion".into(),
        created: first.created,
        model: first.model.clone(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason,
            logprobs: None,
        }],
        usage,
        extra: Default::default(),
        native_stop: None,
    }
}

/// Input: an `LlmError` as JSON. Output: `{"status", "body"}`.
#[test]
fn errors_golden() {
    golden::run("responses", "errors", |input| {
        let error = error_from_json(&input.json());
        let body: Value = serde_json::from_slice(&responses::render_error(&error)).unwrap();
        json!({ "status": error.status, "body": body })
    });
}
