//! OpenAI Responses API (`POST /v1/responses`), plain and streamed.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::body::{MockBody, StreamBuilder};
use crate::plan::{Stop, TextPlan, ToolCall, pieces, plan_text, tool_calls};
use crate::server::{
    State, generation_time, json_response, pause, push_json, sse_response, unix_now,
};
use crate::text::{PromptCounter, fragments, make_id};

/// Bytes per streamed `function_call_arguments.delta`.
const ARGUMENT_FRAGMENT: usize = 8;

/// Texts of an input item's `content` (string or typed parts).
fn content_texts(content: &Value) -> Vec<&str> {
    match content {
        Value::String(s) => vec![s.as_str()],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

enum Answer {
    Text(TextPlan),
    Tools(Vec<(String, String, ToolCall)>),
}

pub(crate) async fn responses(
    state: &State,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let req: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::missing("model"))?;
    let input = req.get("input").ok_or_else(|| ApiError::missing("input"))?;
    let items: Vec<&Value> = match input {
        Value::String(_) => vec![input],
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        _ => {
            return Err(ApiError::invalid(
                "Invalid 'input': expected a string or a non-empty array of input items.",
                Some("input"),
            ));
        }
    };
    let instructions = req.get("instructions").and_then(Value::as_str);

    let mut behavior = state.behavior(headers)?;
    let mut prompt = PromptCounter::default();
    if let Some(text) = instructions {
        prompt.message();
        prompt.text(text);
    }
    let mut last_user = None;
    for item in &items {
        prompt.message();
        match item {
            Value::String(text) => {
                prompt.text(text);
                last_user = Some(vec![text.as_str()]);
            }
            _ => {
                let texts = item.get("content").map(content_texts).unwrap_or_default();
                texts.iter().for_each(|t| prompt.text(t));
                if let Some(output) = item.get("output").and_then(Value::as_str) {
                    prompt.text(output);
                }
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    last_user = Some(texts);
                }
            }
        }
    }
    for text in last_user.iter().flatten() {
        behavior.apply_directives(text)?;
    }
    let seed = state.content_seed(
        model,
        &[
            input.to_string().as_bytes(),
            instructions.unwrap_or("").as_bytes(),
        ],
    );

    // Same decision as chat: tools offered, allowed, not answering a tool result.
    let answering_tool = items
        .last()
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        == Some("function_call_output");
    let tools: Vec<(&str, &Value)> = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            Some((
                t.get("name")?.as_str()?,
                t.get("parameters").unwrap_or(&Value::Null),
            ))
        })
        .collect();
    let choice = req.get("tool_choice");
    let forced = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
    let candidates: Vec<(&str, &Value)> = match (choice, forced) {
        _ if answering_tool => Vec::new(),
        (Some(Value::String(mode)), _) if mode == "none" => Vec::new(),
        (_, Some(name)) => {
            let found: Vec<_> = tools.iter().filter(|(n, _)| *n == name).copied().collect();
            if found.is_empty() {
                return Err(ApiError::invalid(
                    format!("Tool choice '{name}' not found in 'tools' parameter."),
                    Some("tool_choice"),
                ));
            }
            found
        }
        _ => tools,
    };
    let max_output = req
        .get("max_output_tokens")
        .and_then(Value::as_u64)
        .map(|m| u32::try_from(m).unwrap_or(u32::MAX));

    state.gate(&behavior, &body).await?;

    let mut rng = state.rng();
    let id = make_id("resp_", &mut rng);
    let answer = if candidates.is_empty() {
        Answer::Text(plan_text(seed, behavior.output_tokens, max_output, &[]))
    } else {
        let calls = tool_calls(candidates.into_iter(), seed, behavior.parallel_tools);
        Answer::Tools(
            calls
                .into_iter()
                .map(|c| (make_id("fc_", &mut rng), make_id("call_", &mut rng), c))
                .collect(),
        )
    };
    let msg_id = make_id("msg_", &mut rng);
    let output_tokens = match &answer {
        Answer::Text(plan) => plan.tokens,
        Answer::Tools(calls) => calls.iter().map(|(_, _, c)| c.tokens()).sum(),
    };
    let incomplete = matches!(&answer, Answer::Text(p) if p.stop == Stop::MaxTokens);
    let output: Vec<Value> = match &answer {
        Answer::Text(plan) => vec![message_item(&msg_id, &plan.text, "completed")],
        Answer::Tools(calls) => calls
            .iter()
            .map(|(item_id, call_id, c)| function_item(item_id, call_id, c, &c.json, "completed"))
            .collect(),
    };
    let created_at = unix_now();
    let envelope = |status: &str, output: Vec<Value>, usage: Value| {
        json!({
            "id": id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "error": null,
            "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": instructions,
            "max_output_tokens": max_output,
            "model": model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": choice.cloned().unwrap_or_else(|| json!("auto")),
            "tools": req.get("tools").cloned().unwrap_or_else(|| json!([])),
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {}
        })
    };
    let usage = json!({
        "input_tokens": prompt.tokens(),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt.tokens() + output_tokens
    });
    let final_status = if incomplete {
        "incomplete"
    } else {
        "completed"
    };

    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let mut out = StreamBuilder::with_capacity(4096, 16 + output_tokens as usize);
        let mut seq = 0u64;
        let limit = behavior.stream_error_after.map(u64::from);
        let mut event = |out: &mut StreamBuilder, mut data: Value, delay: Duration| {
            if limit.is_some_and(|l| seq > l) {
                return;
            }
            if limit == Some(seq) {
                // OpenAI ends a failing stream with an `error` event.
                let err = ApiError::injected(
                    StatusCode::from_u16(behavior.error_status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                );
                data = json!({
                    "type": "error",
                    "code": err.code.unwrap_or(err.openai_type()),
                    "message": err.message,
                    "param": null
                });
            }
            let kind = data
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if let Some(obj) = data.as_object_mut() {
                obj.insert("sequence_number".to_owned(), json!(seq));
            }
            seq += 1;
            let buf = out.buf();
            buf.extend_from_slice(b"event: ");
            buf.extend_from_slice(kind.as_bytes());
            buf.extend_from_slice(b"\ndata: ");
            push_json(buf, &data);
            buf.extend_from_slice(b"\n\n");
            out.end_frame(delay);
        };
        let gap = |i: usize| {
            if i == 0 {
                Duration::ZERO
            } else {
                behavior.token_delay
            }
        };
        event(
            &mut out,
            json!({"type": "response.created", "response": envelope("in_progress", vec![], Value::Null)}),
            behavior.ttft,
        );
        event(
            &mut out,
            json!({"type": "response.in_progress", "response": envelope("in_progress", vec![], Value::Null)}),
            Duration::ZERO,
        );
        match &answer {
            Answer::Text(plan) => {
                event(
                    &mut out,
                    json!({"type": "response.output_item.added", "output_index": 0, "item": message_item_empty(&msg_id)}),
                    Duration::ZERO,
                );
                event(
                    &mut out,
                    json!({"type": "response.content_part.added", "item_id": msg_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
                    Duration::ZERO,
                );
                for (i, piece) in pieces(&plan.text).into_iter().enumerate() {
                    event(
                        &mut out,
                        json!({"type": "response.output_text.delta", "item_id": msg_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
                        gap(i),
                    );
                }
                event(
                    &mut out,
                    json!({"type": "response.output_text.done", "item_id": msg_id, "output_index": 0, "content_index": 0, "text": plan.text, "logprobs": []}),
                    Duration::ZERO,
                );
                event(
                    &mut out,
                    json!({"type": "response.content_part.done", "item_id": msg_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": plan.text, "annotations": []}}),
                    Duration::ZERO,
                );
                event(
                    &mut out,
                    json!({"type": "response.output_item.done", "output_index": 0, "item": message_item(&msg_id, &plan.text, "completed")}),
                    Duration::ZERO,
                );
            }
            Answer::Tools(calls) => {
                for (index, (item_id, call_id, call)) in calls.iter().enumerate() {
                    event(
                        &mut out,
                        json!({"type": "response.output_item.added", "output_index": index, "item": function_item(item_id, call_id, call, "", "in_progress")}),
                        Duration::ZERO,
                    );
                    for (i, fragment) in fragments(&call.json, ARGUMENT_FRAGMENT).enumerate() {
                        event(
                            &mut out,
                            json!({"type": "response.function_call_arguments.delta", "item_id": item_id, "output_index": index, "delta": fragment}),
                            gap(i),
                        );
                    }
                    event(
                        &mut out,
                        json!({"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": index, "arguments": call.json}),
                        Duration::ZERO,
                    );
                    event(
                        &mut out,
                        json!({"type": "response.output_item.done", "output_index": index, "item": function_item(item_id, call_id, call, &call.json, "completed")}),
                        Duration::ZERO,
                    );
                }
            }
        }
        let done = if incomplete {
            "response.incomplete"
        } else {
            "response.completed"
        };
        event(
            &mut out,
            json!({"type": done, "response": envelope(final_status, output, usage)}),
            Duration::ZERO,
        );
        return Ok(sse_response(out.finish(behavior.disconnect_after)));
    }
    pause(generation_time(&behavior, output_tokens)).await;
    Ok(json_response(
        &envelope(final_status, output, usage),
        behavior.disconnect_after,
    ))
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    })
}

fn message_item_empty(id: &str) -> Value {
    json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []})
}

fn function_item(id: &str, call_id: &str, call: &ToolCall, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": call.name,
        "arguments": arguments,
        "status": status
    })
}
