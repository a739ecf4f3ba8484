//! Bedrock Runtime Converse API: `POST /model/{modelId}/converse` (JSON) and
//! `POST /model/{modelId}/converse-stream` (AWS event-stream frames), with
//! the conversation rules Bedrock validates.

use std::collections::HashSet;
use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::api_error::ApiError;
use crate::body::{MockBody, StreamBuilder};
use crate::config::Behavior;
use crate::plan::{
    Stop, ToolCall, cached_tokens, pieces, plan_text, signature, thinking_text, tool_calls,
};
use crate::server::{State, generation_time, json_response, pause};
use crate::text::{PromptCounter, fragments, make_id};

/// Bytes per streamed `toolUse.input` fragment.
const ARGUMENT_FRAGMENT: usize = 8;

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::invalid(message, None)
}

fn blocks_of(message: &Value) -> &[Value] {
    message
        .get("content")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Roles alternate starting with the user; every toolResult answers a
/// toolUse of the assistant turn right before it.
fn validate(messages: &[Value], has_tool_config: bool) -> Result<(), ApiError> {
    let mut previous_role = None;
    let mut previous_tool_uses: HashSet<&str> = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant")) => role,
            other => {
                return Err(invalid(format!(
                    "1 validation error detected: Value '{}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                    other.unwrap_or("null"),
                    i + 1
                )));
            }
        };
        if previous_role.is_none() && role != "user" {
            return Err(invalid(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        if previous_role == Some(role) {
            return Err(invalid(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
            ));
        }
        let blocks = blocks_of(message);
        if blocks.is_empty() {
            return Err(invalid(format!(
                "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
            )));
        }
        let uses_tools = blocks
            .iter()
            .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some());
        if uses_tools && !has_tool_config {
            return Err(invalid(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
            ));
        }
        let results: Vec<&str> = blocks
            .iter()
            .filter_map(|b| b.get("toolResult"))
            .map(|r| r.get("toolUseId").and_then(Value::as_str).unwrap_or(""))
            .collect();
        if results.len() > previous_tool_uses.len() {
            return Err(invalid(format!(
                "The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks of previous turn."
            )));
        }
        if let Some(unknown) = results.iter().find(|id| !previous_tool_uses.contains(*id)) {
            return Err(invalid(format!(
                "The toolUseId '{unknown}' in the toolResult block at messages.{i}.content does not match any toolUse block of the previous turn."
            )));
        }
        previous_tool_uses = blocks
            .iter()
            .filter_map(|b| b.get("toolUse"))
            .filter_map(|u| u.get("toolUseId")?.as_str())
            .collect();
        previous_role = Some(role);
    }
    Ok(())
}

fn count_blocks(blocks: &[Value], prompt: &mut PromptCounter) {
    for block in blocks {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            prompt.text(text);
        }
        for key in ["toolUse", "toolResult"] {
            if let Some(value) = block.get(key) {
                prompt.text(&value.to_string());
            }
        }
        if ["image", "document", "video"]
            .iter()
            .any(|k| block.get(*k).is_some())
        {
            prompt.media();
        }
    }
}

/// One content block of the answer.
enum Block {
    Reasoning { text: String, signature: String },
    Text(String),
    ToolUse { id: String, call: ToolCall },
}

pub(crate) async fn converse(
    state: &State,
    headers: &HeaderMap,
    model: &str,
    stream: bool,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let req: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if messages.is_empty() {
        return Err(invalid(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    let tool_config = req.get("toolConfig");
    validate(messages, tool_config.is_some())?;

    let mut behavior = state.behavior(headers)?;
    if let Some(last_user) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    {
        for text in blocks_of(last_user)
            .iter()
            .filter_map(|b| b.get("text")?.as_str())
        {
            behavior.apply_directives(text)?;
        }
    }
    let system = req
        .get("system")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut prompt = PromptCounter::default();
    let mut system_prompt = PromptCounter::default();
    count_blocks(system, &mut prompt);
    count_blocks(system, &mut system_prompt);
    for message in messages {
        prompt.message();
        count_blocks(blocks_of(message), &mut prompt);
    }
    let marked = system.iter().any(|b| b.get("cachePoint").is_some())
        || messages
            .iter()
            .any(|m| blocks_of(m).iter().any(|b| b.get("cachePoint").is_some()));
    let total = prompt.tokens();
    let cached = cached_tokens(marked, total, system_prompt.tokens());
    let seed = state.content_seed(
        model,
        &[
            Value::Array(messages.to_vec()).to_string().as_bytes(),
            Value::Array(system.to_vec()).to_string().as_bytes(),
        ],
    );

    let answering_tool = messages
        .last()
        .is_some_and(|m| blocks_of(m).iter().any(|b| b.get("toolResult").is_some()));
    let specs: Vec<(&str, &Value)> = tool_config
        .and_then(|c| c.get("tools"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("toolSpec"))
        .filter_map(|s| {
            let schema = s.pointer("/inputSchema/json").unwrap_or(&Value::Null);
            Some((s.get("name")?.as_str()?, schema))
        })
        .collect();
    let forced = tool_config
        .and_then(|c| c.pointer("/toolChoice/tool/name"))
        .and_then(Value::as_str);
    let candidates: Vec<(&str, &Value)> = match forced {
        _ if answering_tool => Vec::new(),
        Some(name) => {
            let found: Vec<_> = specs.iter().filter(|(n, _)| *n == name).copied().collect();
            if found.is_empty() {
                return Err(invalid(format!(
                    "The tool {name} in toolChoice is not defined in toolConfig.tools."
                )));
            }
            found
        }
        None => specs,
    };
    let inference = req.get("inferenceConfig");
    let max_tokens = inference
        .and_then(|c| c.get("maxTokens"))
        .and_then(Value::as_u64)
        .map(|m| u32::try_from(m).unwrap_or(u32::MAX));
    let stops: Vec<&str> = inference
        .and_then(|c| c.get("stopSequences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let thinking = req
        .pointer("/additionalModelRequestFields/thinking")
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("enabled"))
        .map(|t| {
            t.get("budget_tokens")
                .and_then(Value::as_u64)
                .map(|b| u32::try_from(b).unwrap_or(u32::MAX))
        });

    state.gate(&behavior, &body).await?;

    let mut rng = state.rng();
    let mut blocks = Vec::with_capacity(2);
    if let Some(budget) = thinking {
        let text = thinking_text(seed, budget);
        blocks.push(Block::Reasoning {
            signature: signature(&text),
            text,
        });
    }
    let stop = if candidates.is_empty() {
        let plan = plan_text(seed, behavior.output_tokens, max_tokens, &stops);
        blocks.push(Block::Text(plan.text));
        plan.stop
    } else {
        for call in tool_calls(candidates.into_iter(), seed, behavior.parallel_tools) {
            blocks.push(Block::ToolUse {
                id: make_id("tooluse_", &mut rng),
                call,
            });
        }
        Stop::End
    };
    let uses_tool = blocks.iter().any(|b| matches!(b, Block::ToolUse { .. }));
    let (stop_reason, stop_sequence) = match stop {
        _ if uses_tool => ("tool_use", None),
        Stop::End => ("end_turn", None),
        Stop::MaxTokens => ("max_tokens", None),
        Stop::Sequence(s) => ("stop_sequence", Some(s)),
    };
    let output_tokens: u64 = blocks
        .iter()
        .map(|b| match b {
            Block::Reasoning { text, .. } | Block::Text(text) => {
                text.split_whitespace().count() as u64
            }
            Block::ToolUse { call, .. } => call.tokens(),
        })
        .sum();
    let latency = generation_time(&behavior, output_tokens);
    let mut usage = Map::new();
    usage.insert("inputTokens".into(), json!(total - cached));
    usage.insert("outputTokens".into(), json!(output_tokens));
    usage.insert("totalTokens".into(), json!(total + output_tokens));
    if cached > 0 {
        usage.insert("cacheReadInputTokens".into(), json!(cached));
        usage.insert("cacheWriteInputTokens".into(), json!(0));
    }
    let usage = Value::Object(usage);
    let metrics = json!({"latencyMs": latency.as_millis() as u64});

    if stream {
        let mut out = Frames {
            out: StreamBuilder::with_capacity(4096, 16 + output_tokens as usize * 2),
            emitted: 0,
            limit: behavior.stream_error_after,
        };
        let mut first = true;
        let mut gap = || {
            if std::mem::take(&mut first) {
                Duration::ZERO
            } else {
                behavior.token_delay
            }
        };
        out.event("messageStart", &json!({"role": "assistant"}), behavior.ttft);
        for (index, block) in blocks.iter().enumerate() {
            let delta = |delta: Value| json!({"contentBlockIndex": index, "delta": delta});
            match block {
                Block::Reasoning { text, signature } => {
                    for piece in pieces(text) {
                        let d = gap();
                        out.event(
                            "contentBlockDelta",
                            &delta(json!({"reasoningContent": {"text": piece}})),
                            d,
                        );
                    }
                    out.event(
                        "contentBlockDelta",
                        &delta(json!({"reasoningContent": {"signature": signature}})),
                        Duration::ZERO,
                    );
                }
                Block::Text(text) => {
                    for piece in pieces(text) {
                        let d = gap();
                        out.event("contentBlockDelta", &delta(json!({"text": piece})), d);
                    }
                }
                Block::ToolUse { id, call } => {
                    out.event(
                        "contentBlockStart",
                        &json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": id, "name": call.name}}}),
                        Duration::ZERO,
                    );
                    for fragment in fragments(&call.json, ARGUMENT_FRAGMENT) {
                        let d = gap();
                        out.event(
                            "contentBlockDelta",
                            &delta(json!({"toolUse": {"input": fragment}})),
                            d,
                        );
                    }
                }
            }
            out.event(
                "contentBlockStop",
                &json!({"contentBlockIndex": index}),
                Duration::ZERO,
            );
        }
        let mut stop_event = json!({"stopReason": stop_reason});
        if let Some(sequence) = &stop_sequence {
            stop_event["additionalModelResponseFields"] = json!({"stop_sequence": sequence});
        }
        out.event("messageStop", &stop_event, Duration::ZERO);
        out.event(
            "metadata",
            &json!({"usage": usage, "metrics": metrics}),
            Duration::ZERO,
        );
        let body = out.finish(&behavior);
        let mut response = Response::new(body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        return Ok(response);
    }

    pause(latency).await;
    let content: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Reasoning { text, signature } => {
                json!({"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}})
            }
            Block::Text(text) => json!({"text": text}),
            Block::ToolUse { id, call } => {
                json!({"toolUse": {"toolUseId": id, "name": call.name, "input": call.input}})
            }
        })
        .collect();
    let mut answer = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": usage,
        "metrics": metrics
    });
    if let Some(sequence) = stop_sequence {
        answer["additionalModelResponseFields"] = json!({"stop_sequence": sequence});
    }
    Ok(json_response(&answer, behavior.disconnect_after))
}

/// Event-stream frames; after `stream_error_after` events one exception
/// frame replaces the rest, as Bedrock reports errors mid-stream.
struct Frames {
    out: StreamBuilder,
    emitted: u32,
    limit: Option<u32>,
}

impl Frames {
    fn event(&mut self, kind: &'static str, payload: &Value, delay: Duration) {
        if self.limit.is_some_and(|l| self.emitted >= l) {
            return;
        }
        self.emitted += 1;
        let message = Message::new_from_parts(
            vec![
                Header::new(":event-type", HeaderValue::String(kind.into())),
                Header::new(
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                Header::new(":message-type", HeaderValue::String("event".into())),
            ],
            Bytes::from(payload.to_string()),
        );
        self.write(&message, delay);
    }

    fn write(&mut self, message: &Message, delay: Duration) {
        // Writing to a Vec fails only for oversized headers, which these are not.
        if let Err(err) = write_message_to(message, self.out.buf()) {
            tracing::warn!(%err, "cannot frame event-stream message");
        }
        self.out.end_frame(delay);
    }

    fn finish(mut self, behavior: &Behavior) -> MockBody {
        if self.limit.is_some_and(|l| self.emitted >= l) {
            let status = StatusCode::from_u16(behavior.error_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = exception_event_type(ApiError::injected(status).bedrock_type());
            let message = Message::new_from_parts(
                vec![
                    Header::new(":exception-type", HeaderValue::String(kind.into())),
                    Header::new(
                        ":content-type",
                        HeaderValue::String("application/json".into()),
                    ),
                    Header::new(":message-type", HeaderValue::String("exception".into())),
                ],
                Bytes::from(
                    json!({"message": "The model stream failed (injected by tollgate-mock)."})
                        .to_string(),
                ),
            );
            self.write(&message, Duration::ZERO);
        }
        self.out.finish(behavior.disconnect_after)
    }
}

/// Stream exceptions use the camelCase member name (`throttlingException`).
fn exception_event_type(kind: &'static str) -> &'static str {
    match kind {
        "ThrottlingException" => "throttlingException",
        "ValidationException" => "validationException",
        "ServiceUnavailableException" => "serviceUnavailableException",
        "ModelErrorException" | "ModelTimeoutException" => "modelStreamErrorException",
        _ => "internalServerException",
    }
}
