//! Anthropic Messages API (`POST /v1/messages`).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::api_error::ApiError;
use crate::body::{MockBody, StreamBuilder};
use crate::config::Behavior;
use crate::request::Content;
use crate::server::{State, generation_time, json_response, pause, push_json, sse_response};
use crate::text::{
    PromptCounter, Rng, arguments_for_schema, completion_text, estimate_tokens, fragments, make_id,
    words,
};

/// Bytes per streamed `input_json_delta` fragment.
const ARGUMENT_FRAGMENT: usize = 8;

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    /// Kept raw: its exact bytes seed the generated answer.
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(borrow, default)]
    tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Content<'a>,
}

#[derive(Deserialize)]
struct Tool {
    name: String,
    /// Absent for server tools; they get empty input.
    #[serde(default)]
    input_schema: Value,
}

#[derive(Deserialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

enum Reply<'t> {
    Text {
        seed: u64,
        tokens: u32,
        stop_reason: &'static str,
    },
    ToolUse {
        id: String,
        name: &'t str,
        input: Value,
        /// `input` serialised once, for streaming and token counting.
        json: String,
    },
}

impl Reply<'_> {
    fn output_tokens(&self) -> u64 {
        match self {
            Self::Text { tokens, .. } => u64::from(*tokens),
            Self::ToolUse { json, .. } => estimate_tokens(json.len()).max(1),
        }
    }

    fn stop_reason(&self) -> &'static str {
        match self {
            Self::Text { stop_reason, .. } => stop_reason,
            Self::ToolUse { .. } => "tool_use",
        }
    }
}

pub(crate) async fn messages(
    state: &State,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let req: MessagesRequest<'_> =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let model = req
        .model
        .as_deref()
        .ok_or_else(|| ApiError::missing("model"))?;
    let raw_messages = req.messages.ok_or_else(|| ApiError::missing("messages"))?;
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| ApiError::missing("max_tokens"))?;
    let messages: Vec<Message<'_>> = serde_json::from_str(raw_messages.get())
        .map_err(|e| ApiError::invalid(format!("messages: {e}"), Some("messages")))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
            Some("messages"),
        ));
    }
    let system: Option<Content<'_>> = req
        .system
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| ApiError::invalid(format!("system: {e}"), Some("system")))?;

    let mut behavior = state.behavior(headers)?;
    if let Some(last_user) = messages.iter().rev().find(|m| m.role == "user") {
        for text in last_user.content.texts() {
            behavior.apply_directives(text)?;
        }
    }
    let mut prompt = PromptCounter::default();
    for text in system.iter().flat_map(Content::texts) {
        prompt.text(text);
    }
    for message in &messages {
        prompt.message();
        for text in message.content.texts() {
            prompt.text(text);
        }
    }
    let system_bytes = req.system.map_or(&b""[..], |s| s.get().as_bytes());
    let seed = state.content_seed(model, &[raw_messages.get().as_bytes(), system_bytes]);
    let tool = select_tool(&req, &messages)?;

    state.gate(&behavior, &body).await?;

    let mut rng = state.rng();
    let id = make_id("msg_", &mut rng);
    let reply = match tool {
        Some(tool) => {
            let input = arguments_for_schema(&tool.input_schema, &mut Rng::new(seed));
            Reply::ToolUse {
                id: make_id("toolu_", &mut rng),
                name: &tool.name,
                json: input.to_string(),
                input,
            }
        }
        None => Reply::Text {
            seed,
            tokens: max_tokens.min(behavior.output_tokens),
            stop_reason: if max_tokens < behavior.output_tokens {
                "max_tokens"
            } else {
                "end_turn"
            },
        },
    };
    let meta = Meta {
        id: &id,
        model,
        input_tokens: prompt.tokens(),
    };

    if req.stream == Some(true) {
        return Ok(sse_response(stream_message(&meta, &reply, &behavior)));
    }
    pause(generation_time(&behavior, reply.output_tokens())).await;
    let block = match &reply {
        Reply::Text { seed, tokens, .. } => ContentBlock::Text {
            text: completion_text(*seed, *tokens as usize),
        },
        Reply::ToolUse {
            id, name, input, ..
        } => ContentBlock::ToolUse { id, name, input },
    };
    let message = MessageOut {
        content: vec![block],
        stop_reason: Some(reply.stop_reason()),
        usage: UsageOut {
            input_tokens: meta.input_tokens,
            output_tokens: reply.output_tokens(),
        },
        ..meta.message()
    };
    Ok(json_response(&message, behavior.disconnect_after))
}

/// The tool to use, if tools are offered, allowed, and the conversation is
/// not already returning a tool result.
fn select_tool<'r>(
    req: &'r MessagesRequest<'_>,
    messages: &[Message<'_>],
) -> Result<Option<&'r Tool>, ApiError> {
    let mut tools = req.tools.iter().flatten();
    let answering_tool = messages
        .last()
        .is_some_and(|m| m.role == "user" && m.content.has_part("tool_result"));
    match &req.tool_choice {
        _ if answering_tool => Ok(None),
        Some(choice) if choice.kind == "none" => Ok(None),
        Some(choice) if choice.kind == "tool" => {
            let name = choice.name.as_deref().unwrap_or_default();
            tools.find(|t| t.name == name).map(Some).ok_or_else(|| {
                ApiError::invalid(
                    format!("tool_choice names unknown tool '{name}'"),
                    Some("tool_choice"),
                )
            })
        }
        _ => Ok(tools.next()),
    }
}

struct Meta<'a> {
    id: &'a str,
    model: &'a str,
    input_tokens: u64,
}

impl<'a> Meta<'a> {
    /// The message as announced by `message_start`: no content yet.
    fn message(&self) -> MessageOut<'a> {
        MessageOut {
            id: self.id,
            kind: "message",
            role: "assistant",
            model: self.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: UsageOut {
                input_tokens: self.input_tokens,
                output_tokens: 1,
            },
        }
    }
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<ContentBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: UsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: String,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
}

#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
}

/// Renders the SSE event sequence; ttft before `message_start`,
/// `token_delay` between deltas.
fn stream_message(meta: &Meta<'_>, reply: &Reply<'_>, behavior: &Behavior) -> MockBody {
    let pieces = match reply {
        Reply::Text { tokens, .. } => *tokens as usize,
        Reply::ToolUse { json, .. } => json.len().div_ceil(ARGUMENT_FRAGMENT),
    };
    let mut out = StreamBuilder::with_capacity(512 + 110 * pieces, pieces + 6);
    let event =
        |out: &mut StreamBuilder, name: &str, data: &dyn Fn(&mut Vec<u8>), delay: Duration| {
            let buf = out.buf();
            buf.extend_from_slice(b"event: ");
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b"\ndata: ");
            data(buf);
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
        "message_start",
        &|b| {
            b.extend_from_slice(br#"{"type":"message_start","message":"#);
            push_json(b, &meta.message());
            b.push(b'}');
        },
        behavior.ttft,
    );
    let block_start = |b: &mut Vec<u8>| {
        b.extend_from_slice(br#"{"type":"content_block_start","index":0,"content_block":"#);
        match reply {
            Reply::Text { .. } => b.extend_from_slice(br#"{"type":"text","text":""}"#),
            Reply::ToolUse { id, name, .. } => {
                b.extend_from_slice(br#"{"type":"tool_use","id":"#);
                push_json(b, id);
                b.extend_from_slice(br#","name":"#);
                push_json(b, name);
                b.extend_from_slice(br#","input":{}}"#);
            }
        }
        b.push(b'}');
    };
    event(
        &mut out,
        "content_block_start",
        &block_start,
        Duration::ZERO,
    );
    event(
        &mut out,
        "ping",
        &|b| b.extend_from_slice(br#"{"type": "ping"}"#),
        Duration::ZERO,
    );

    let delta_prefix = br#"{"type":"content_block_delta","index":0,"delta":"#;
    match reply {
        Reply::Text { seed, tokens, .. } => {
            for (i, word) in words(*seed, *tokens as usize).enumerate() {
                let delta = |b: &mut Vec<u8>| {
                    // Words are plain ASCII letters: no JSON escaping needed.
                    b.extend_from_slice(delta_prefix);
                    b.extend_from_slice(br#"{"type":"text_delta","text":""#);
                    if i > 0 {
                        b.push(b' ');
                    }
                    b.extend_from_slice(word.as_bytes());
                    b.extend_from_slice(b"\"}}");
                };
                event(&mut out, "content_block_delta", &delta, gap(i));
            }
        }
        Reply::ToolUse { json, .. } => {
            for (i, fragment) in fragments(json, ARGUMENT_FRAGMENT).enumerate() {
                let delta = |b: &mut Vec<u8>| {
                    b.extend_from_slice(delta_prefix);
                    b.extend_from_slice(br#"{"type":"input_json_delta","partial_json":"#);
                    push_json(b, fragment);
                    b.extend_from_slice(b"}}");
                };
                event(&mut out, "content_block_delta", &delta, gap(i));
            }
        }
    }
    event(
        &mut out,
        "content_block_stop",
        &|b| b.extend_from_slice(br#"{"type":"content_block_stop","index":0}"#),
        Duration::ZERO,
    );
    let message_delta = |b: &mut Vec<u8>| {
        b.extend_from_slice(br#"{"type":"message_delta","delta":{"stop_reason":"#);
        push_json(b, reply.stop_reason());
        b.extend_from_slice(br#","stop_sequence":null},"usage":{"output_tokens":"#);
        push_json(b, &reply.output_tokens());
        b.extend_from_slice(b"}}");
    };
    event(&mut out, "message_delta", &message_delta, Duration::ZERO);
    event(
        &mut out,
        "message_stop",
        &|b| b.extend_from_slice(br#"{"type":"message_stop"}"#),
        Duration::ZERO,
    );
    out.finish(behavior.disconnect_after)
}
