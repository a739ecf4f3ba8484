//! Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`).

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
use crate::plan::{
    Stop, ToolCall, cached_tokens, pieces, plan_text, signature, thinking_text, tool_calls,
};
use crate::request::Content;
use crate::server::{State, generation_time, json_response, pause, push_json, sse_response};
use crate::text::{PromptCounter, fragments, make_id};

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
    #[serde(borrow, default)]
    stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    thinking: Option<Thinking<'a>>,
}

#[derive(Deserialize)]
struct Thinking<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    budget_tokens: Option<u32>,
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
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

/// One content block of the answer.
enum Block {
    Thinking { text: String, signature: String },
    Text(String),
    ToolUse { id: String, call: ToolCall },
}

/// A parsed, validated request and its prompt-token count.
struct Parsed<'a> {
    req: MessagesRequest<'a>,
    messages: Vec<Message<'a>>,
    input_tokens: u64,
    cached_tokens: u64,
}

fn parse<'a>(body: &'a [u8], need_max_tokens: bool) -> Result<Parsed<'a>, ApiError> {
    let req: MessagesRequest<'_> =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_json(&e))?;
    if req.model.is_none() {
        return Err(ApiError::missing("model"));
    }
    let raw_messages = req.messages.ok_or_else(|| ApiError::missing("messages"))?;
    if need_max_tokens && req.max_tokens.is_none() {
        return Err(ApiError::missing("max_tokens"));
    }
    let messages: Vec<Message<'_>> = serde_json::from_str(raw_messages.get())
        .map_err(|e| ApiError::invalid(format!("messages: {e}"), Some("messages")))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
            Some("messages"),
        ));
    }
    if let Some(bad) = messages
        .iter()
        .find(|m| m.role != "user" && m.role != "assistant")
    {
        return Err(ApiError::invalid(
            format!(
                "messages: Unexpected role \"{}\". Allowed roles are \"user\" or \"assistant\".",
                bad.role
            ),
            Some("messages"),
        ));
    }
    let system: Option<Content<'_>> = req
        .system
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| ApiError::invalid(format!("system: {e}"), Some("system")))?;
    let mut prompt = PromptCounter::default();
    let mut system_prompt = PromptCounter::default();
    for text in system.iter().flat_map(Content::texts) {
        prompt.text(text);
        system_prompt.text(text);
    }
    for message in &messages {
        prompt.message();
        for text in message.content.texts() {
            prompt.text(text);
        }
    }
    let total = prompt.tokens();
    // Every cache breakpoint is written as a `cache_control` key.
    let marked = memchr_contains(body, b"\"cache_control\"");
    let cached = cached_tokens(marked, total, system_prompt.tokens());
    Ok(Parsed {
        req,
        messages,
        input_tokens: total - cached,
        cached_tokens: cached,
    })
}

fn memchr_contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `POST /v1/messages/count_tokens`: the same count `/v1/messages` reports
/// (cached and uncached input together).
pub(crate) async fn count_tokens(
    state: &State,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let parsed = parse(&body, false)?;
    let mut behavior = state.behavior(headers)?;
    if let Some(last_user) = parsed.messages.iter().rev().find(|m| m.role == "user") {
        for text in last_user.content.texts() {
            behavior.apply_directives(text)?;
        }
    }
    state.gate(&behavior, &body).await?;
    pause(behavior.ttft).await;
    Ok(json_response(
        &serde_json::json!({"input_tokens": parsed.input_tokens + parsed.cached_tokens}),
        behavior.disconnect_after,
    ))
}

pub(crate) async fn messages(
    state: &State,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let parsed = parse(&body, true)?;
    let req = &parsed.req;
    let model = req.model.as_deref().unwrap_or_default();
    let max_tokens = req.max_tokens.unwrap_or_default();
    let raw_messages = req.messages.map_or("", |m| m.get());

    let mut behavior = state.behavior(headers)?;
    if let Some(last_user) = parsed.messages.iter().rev().find(|m| m.role == "user") {
        for text in last_user.content.texts() {
            behavior.apply_directives(text)?;
        }
    }
    let system_bytes = req.system.map_or(&b""[..], |s| s.get().as_bytes());
    let seed = state.content_seed(model, &[raw_messages.as_bytes(), system_bytes]);
    let tools = select_tools(req, &parsed.messages)?;
    let thinking = req
        .thinking
        .as_ref()
        .filter(|t| t.kind == "enabled" || t.kind == "adaptive");

    state.gate(&behavior, &body).await?;

    let mut rng = state.rng();
    let id = make_id("msg_", &mut rng);
    let mut blocks = Vec::with_capacity(2);
    if let Some(thinking) = thinking {
        let text = thinking_text(seed, thinking.budget_tokens);
        blocks.push(Block::Thinking {
            signature: signature(&text),
            text,
        });
    }
    let mut stop = Stop::End;
    if tools.is_empty() {
        let stops: Vec<&str> = req
            .stop_sequences
            .iter()
            .flatten()
            .map(|s| s.as_ref())
            .collect();
        if behavior.echo {
            let last_user = parsed.messages.iter().rev().find(|m| m.role == "user");
            let text =
                crate::config::echo_text(last_user.into_iter().flat_map(|m| m.content.texts()));
            blocks.push(Block::Text(text));
        } else {
            let plan = plan_text(seed, behavior.output_tokens, Some(max_tokens), &stops);
            stop = plan.stop;
            blocks.push(Block::Text(plan.text));
        }
    } else {
        let count = match &req.tool_choice {
            Some(choice) if choice.disable_parallel_tool_use == Some(true) => 1,
            _ => behavior.parallel_tools,
        };
        let candidates = tools.iter().map(|t| (t.name.as_str(), &t.input_schema));
        for call in tool_calls(candidates, seed, count) {
            blocks.push(Block::ToolUse {
                id: make_id("toolu_", &mut rng),
                call,
            });
        }
    }
    let (stop_reason, stop_sequence) = if tools.is_empty() {
        match stop {
            Stop::End => ("end_turn", None),
            Stop::MaxTokens => ("max_tokens", None),
            Stop::Sequence(s) => ("stop_sequence", Some(s)),
        }
    } else {
        ("tool_use", None)
    };
    let output_tokens: u64 = blocks
        .iter()
        .map(|b| match b {
            Block::Thinking { text, .. } | Block::Text(text) => {
                text.split_whitespace().count() as u64
            }
            Block::ToolUse { call, .. } => call.tokens(),
        })
        .sum();
    let meta = Meta {
        id: &id,
        model,
        input_tokens: parsed.input_tokens,
        cached_tokens: parsed.cached_tokens,
    };
    let end = End {
        stop_reason,
        stop_sequence: stop_sequence.as_deref(),
        output_tokens,
    };

    if req.stream == Some(true) {
        return Ok(sse_response(stream_message(
            &meta, &blocks, &end, &behavior,
        )));
    }
    pause(generation_time(&behavior, output_tokens)).await;
    let message = MessageOut {
        content: blocks.iter().map(ContentBlock::from).collect(),
        stop_reason: Some(stop_reason),
        stop_sequence: end.stop_sequence,
        usage: meta.usage(output_tokens),
        ..meta.message()
    };
    Ok(json_response(&message, behavior.disconnect_after))
}

/// The tools to use, if tools are offered, allowed, and the conversation is
/// not already returning a tool result. `tool` forces that one tool.
fn select_tools<'r>(
    req: &'r MessagesRequest<'_>,
    messages: &[Message<'_>],
) -> Result<Vec<&'r Tool>, ApiError> {
    let tools = req.tools.iter().flatten();
    let answering_tool = messages
        .last()
        .is_some_and(|m| m.role == "user" && m.content.has_part("tool_result"));
    match &req.tool_choice {
        _ if answering_tool => Ok(Vec::new()),
        Some(choice) if choice.kind == "none" => Ok(Vec::new()),
        Some(choice) if choice.kind == "tool" => {
            let name = choice.name.as_deref().unwrap_or_default();
            let found: Vec<&Tool> = tools.filter(|t| t.name == name).collect();
            if found.is_empty() {
                return Err(ApiError::invalid(
                    format!("tool_choice names unknown tool '{name}'"),
                    Some("tool_choice"),
                ));
            }
            Ok(found)
        }
        _ => Ok(tools.collect()),
    }
}

struct Meta<'a> {
    id: &'a str,
    model: &'a str,
    input_tokens: u64,
    cached_tokens: u64,
}

/// How the message ends.
struct End<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    output_tokens: u64,
}

impl<'a> Meta<'a> {
    fn usage(&self, output_tokens: u64) -> UsageOut {
        UsageOut {
            input_tokens: self.input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: self.cached_tokens,
            output_tokens,
        }
    }

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
            usage: self.usage(1),
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
    stop_sequence: Option<&'a str>,
    usage: UsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
}

impl<'a> From<&'a Block> for ContentBlock<'a> {
    fn from(block: &'a Block) -> Self {
        match block {
            Block::Thinking { text, signature } => Self::Thinking {
                thinking: text,
                signature,
            },
            Block::Text(text) => Self::Text { text },
            Block::ToolUse { id, call } => Self::ToolUse {
                id,
                name: &call.name,
                input: &call.input,
            },
        }
    }
}

#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

/// Writes SSE events, replacing everything after `stream_error_after`
/// events with one `error` event, as Anthropic does when it overloads mid-stream.
struct Events {
    out: StreamBuilder,
    emitted: u32,
    limit: Option<u32>,
}

impl Events {
    fn event(&mut self, name: &str, data: &dyn Fn(&mut Vec<u8>), delay: Duration) {
        if self.limit.is_some_and(|l| self.emitted >= l) {
            return;
        }
        self.emitted += 1;
        let buf = self.out.buf();
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\ndata: ");
        data(buf);
        buf.extend_from_slice(b"\n\n");
        self.out.end_frame(delay);
    }

    fn finish(mut self, disconnect_after: Option<u32>) -> MockBody {
        if self.limit.is_some_and(|l| self.emitted >= l) {
            self.out.buf().extend_from_slice(
                b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            );
            self.out.end_frame(Duration::ZERO);
        }
        self.out.finish(disconnect_after)
    }
}

/// Renders the SSE event sequence; ttft before `message_start`,
/// `token_delay` between deltas.
fn stream_message(
    meta: &Meta<'_>,
    blocks: &[Block],
    end: &End<'_>,
    behavior: &Behavior,
) -> MockBody {
    let pieces_hint: usize = blocks
        .iter()
        .map(|b| match b {
            Block::Thinking { text, .. } | Block::Text(text) => text.len() / 4 + 2,
            Block::ToolUse { call, .. } => call.json.len().div_ceil(ARGUMENT_FRAGMENT),
        })
        .sum();
    let mut events = Events {
        out: StreamBuilder::with_capacity(512 + 110 * pieces_hint, pieces_hint + 8),
        emitted: 0,
        limit: behavior.stream_error_after,
    };
    let mut first_delta = true;
    let mut gap = || {
        if std::mem::take(&mut first_delta) {
            Duration::ZERO
        } else {
            behavior.token_delay
        }
    };

    events.event(
        "message_start",
        &|b| {
            b.extend_from_slice(br#"{"type":"message_start","message":"#);
            push_json(b, &meta.message());
            b.push(b'}');
        },
        behavior.ttft,
    );
    for (index, block) in blocks.iter().enumerate() {
        let block_start = |b: &mut Vec<u8>| {
            b.extend_from_slice(br#"{"type":"content_block_start","index":"#);
            push_json(b, &index);
            b.extend_from_slice(br#","content_block":"#);
            match block {
                Block::Thinking { .. } => {
                    b.extend_from_slice(br#"{"type":"thinking","thinking":"","signature":""}"#)
                }
                Block::Text(_) => b.extend_from_slice(br#"{"type":"text","text":""}"#),
                Block::ToolUse { id, call } => {
                    b.extend_from_slice(br#"{"type":"tool_use","id":"#);
                    push_json(b, id);
                    b.extend_from_slice(br#","name":"#);
                    push_json(b, &call.name);
                    b.extend_from_slice(br#","input":{}}"#);
                }
            }
            b.push(b'}');
        };
        events.event("content_block_start", &block_start, Duration::ZERO);
        if index == 0 {
            events.event(
                "ping",
                &|b| b.extend_from_slice(br#"{"type": "ping"}"#),
                Duration::ZERO,
            );
        }
        let delta = |b: &mut Vec<u8>, kind: &str, field: &str, value: &str| {
            b.extend_from_slice(br#"{"type":"content_block_delta","index":"#);
            push_json(b, &index);
            b.extend_from_slice(br#","delta":{"type":"#);
            push_json(b, kind);
            b.push(b',');
            push_json(b, field);
            b.push(b':');
            push_json(b, value);
            b.extend_from_slice(b"}}");
        };
        match block {
            Block::Thinking { text, signature } => {
                for piece in pieces(text) {
                    let d = gap();
                    events.event(
                        "content_block_delta",
                        &|b| delta(b, "thinking_delta", "thinking", piece),
                        d,
                    );
                }
                events.event(
                    "content_block_delta",
                    &|b| delta(b, "signature_delta", "signature", signature),
                    Duration::ZERO,
                );
            }
            Block::Text(text) => {
                for piece in pieces(text) {
                    let d = gap();
                    events.event(
                        "content_block_delta",
                        &|b| delta(b, "text_delta", "text", piece),
                        d,
                    );
                }
            }
            Block::ToolUse { call, .. } => {
                for fragment in fragments(&call.json, ARGUMENT_FRAGMENT) {
                    let d = gap();
                    events.event(
                        "content_block_delta",
                        &|b| delta(b, "input_json_delta", "partial_json", fragment),
                        d,
                    );
                }
            }
        }
        events.event(
            "content_block_stop",
            &|b| {
                b.extend_from_slice(br#"{"type":"content_block_stop","index":"#);
                push_json(b, &index);
                b.push(b'}');
            },
            Duration::ZERO,
        );
    }
    let message_delta = |b: &mut Vec<u8>| {
        b.extend_from_slice(br#"{"type":"message_delta","delta":{"stop_reason":"#);
        push_json(b, end.stop_reason);
        b.extend_from_slice(br#","stop_sequence":"#);
        push_json(b, &end.stop_sequence);
        b.extend_from_slice(br#"},"usage":{"output_tokens":"#);
        push_json(b, &end.output_tokens);
        b.extend_from_slice(b"}}");
    };
    events.event("message_delta", &message_delta, Duration::ZERO);
    events.event(
        "message_stop",
        &|b| b.extend_from_slice(br#"{"type":"message_stop"}"#),
        Duration::ZERO,
    );
    events.finish(behavior.disconnect_after)
}
