//! Anthropic Messages as a dialect: an Anthropic SDK client talking to the
//! gateway. Requests are parsed into canonical; canonical responses, stream
//! chunks and errors are rendered back in Anthropic's shapes.
//!
//! Choices made here (and why):
//! * `max_tokens` becomes canonical `max_completion_tokens` (the name OpenAI
//!   reasoning models accept; both include thinking tokens).
//! * A user turn's `tool_result` blocks become `tool` messages, in order; text
//!   and images around them become user messages, so nothing is reordered.
//! * `is_error` and `cache_control` on a tool result are kept in the tool
//!   message's `extra`.
//! * A base64 PDF `document` becomes an OpenAI `file` part (so it translates);
//!   other documents, `search_result` and newer block types are kept verbatim
//!   as [`ContentPart::Other`].
//! * Server tools (`web_search_20250305`, ...) are kept as tools whose `type`
//!   is the server tool's type, the rest of the definition in `extra`.
//! * `thinking: {type: enabled}` becomes `thinking_budget`; other thinking
//!   shapes (`adaptive`, ...) are kept in `extra` as `thinking`.
//! * A tool call whose arguments are not a JSON object renders as
//!   `input: {}`: Anthropic clients cannot represent anything else, and an
//!   empty object is what the model meant when it produced no arguments.
//!
//! Dropped on purpose: `cache_control` on images and tool_use blocks, metadata
//! other than `user_id`, `redacted_thinking` in streams (no chunk slot).

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    BlockDelta, ContentBlock, DeltaUsage, ErrorBody, Extra, ImageSource, MessageContent,
    MessageDeltaBody, MessageResponse, MessagesRequest, STOP_REASONS, StreamEvent, WireUsage,
    provider, to_json,
};
use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDefinition,
    FunctionName, ImageUrl, Message, NamedToolChoice, NativeStop, Role, Stop, Thinking, Tool,
    ToolCall, ToolChoice, Usage, finish,
};
use crate::error::{ErrorKind, LlmError};
use crate::sse;
use crate::stream::StreamEncoder;

// ---------------------------------------------------------------------------
// Requests.

/// Parses a client's `POST /v1/messages` body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    parse(body, true)
}

/// Parses a client's `POST /v1/messages/count_tokens` body (the Messages
/// body without `max_tokens`).
pub fn parse_count_tokens(body: &[u8]) -> Result<ChatRequest, LlmError> {
    parse(body, false)
}

/// The count_tokens answer: `{"input_tokens":N}`.
pub fn render_count_tokens(input_tokens: u64) -> Vec<u8> {
    to_json(&json!({ "input_tokens": input_tokens }))
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> LlmError {
    LlmError::invalid_request(message).with_param(param)
}

fn parse(body: &[u8], require_max_tokens: bool) -> Result<ChatRequest, LlmError> {
    let wire: MessagesRequest = serde_json::from_slice(body)
        .map_err(|e| LlmError::invalid_request(format!("Invalid Messages request: {e}")))?;
    if require_max_tokens && wire.max_tokens.is_none() {
        return Err(invalid("max_tokens: Field required", "max_tokens"));
    }
    let mut messages = Vec::new();
    if let Some(system) = wire.system {
        messages.push(system_message(system)?);
    }
    for (i, message) in wire.messages.into_iter().enumerate() {
        match message.role.as_str() {
            "user" => user_messages(i, message.content, &mut messages)?,
            "assistant" => messages.push(assistant_message(i, message.content)?),
            other => {
                return Err(invalid(
                    format!(
                        "messages.{i}.role: unexpected role {other:?}, expected user or assistant"
                    ),
                    format!("messages.{i}.role"),
                ));
            }
        }
    }
    let mut extra = wire.extra;
    let mut thinking_budget = None;
    if let Some(thinking) = wire.thinking {
        match thinking.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                let budget = thinking
                    .get("budget_tokens")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| {
                        invalid(
                            "thinking.budget_tokens: Field required",
                            "thinking.budget_tokens",
                        )
                    })?;
                thinking_budget = Some(budget);
            }
            Some("disabled") => {}
            _ => {
                extra.insert("thinking".into(), thinking);
            }
        }
    }
    let (tool_choice, parallel_tool_calls) = match wire.tool_choice {
        Some(choice) => {
            let parallel = choice.disable_parallel_tool_use.map(|disable| !disable);
            let mapped = match choice.kind.as_str() {
                "auto" => ToolChoice::Mode("auto".into()),
                "any" => ToolChoice::Mode("required".into()),
                "none" => ToolChoice::Mode("none".into()),
                "tool" => {
                    let name = choice.name.ok_or_else(|| {
                        invalid("tool_choice.name: Field required", "tool_choice.name")
                    })?;
                    ToolChoice::Named(NamedToolChoice {
                        kind: "function".into(),
                        function: Some(FunctionName { name }),
                        extra: Extra::new(),
                    })
                }
                other => {
                    return Err(invalid(
                        format!("tool_choice.type: unknown type {other:?}"),
                        "tool_choice.type",
                    ));
                }
            };
            (Some(mapped), parallel)
        }
        None => (None, None),
    };
    let tools = wire
        .tools
        .map(|tools| {
            tools
                .into_iter()
                .enumerate()
                .map(|(i, tool)| parse_tool(i, tool))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(ChatRequest {
        model: wire.model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls,
        temperature: wire.temperature,
        top_p: wire.top_p,
        max_completion_tokens: wire.max_tokens,
        stop: wire.stop_sequences.map(Stop::Many),
        stream: wire.stream.unwrap_or(false),
        user: wire.metadata.and_then(|m| m.user_id),
        extra,
        thinking_budget,
        top_k: wire.top_k,
        ..ChatRequest::default()
    })
}

fn system_message(system: MessageContent) -> Result<Message, LlmError> {
    let content = match system {
        MessageContent::Text(text) => Content::Text(text),
        MessageContent::Blocks(blocks) => Content::Parts(
            blocks
                .into_iter()
                .enumerate()
                .map(|(j, block)| match block {
                    ContentBlock::Text { text, extra } => Ok(ContentPart::Text { text, extra }),
                    _ => Err(invalid(
                        format!("system.{j}: only text blocks are allowed in system"),
                        format!("system.{j}"),
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Message {
        content: Some(content),
        ..Message::new(Role::System, "")
    })
}

fn message(role: Role, content: Option<Content>) -> Message {
    Message {
        content,
        ..Message::new(role, "")
    }
}

/// A user turn: tool results become `tool` messages, everything else user
/// messages, in the order the client wrote them.
fn user_messages(
    i: usize,
    content: MessageContent,
    out: &mut Vec<Message>,
) -> Result<(), LlmError> {
    let blocks = match content {
        MessageContent::Text(text) => {
            out.push(Message::new(Role::User, text));
            return Ok(());
        }
        MessageContent::Blocks(blocks) => blocks,
    };
    if blocks.is_empty() {
        // Kept (not dropped) so turns still alternate; the upstream judges it.
        out.push(message(Role::User, Some(Content::Parts(Vec::new()))));
        return Ok(());
    }
    let mut parts = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
                extra,
            } => {
                if !parts.is_empty() {
                    out.push(message(
                        Role::User,
                        Some(Content::Parts(std::mem::take(&mut parts))),
                    ));
                }
                let content = match content {
                    None => Content::Text(String::new()),
                    Some(MessageContent::Text(text)) => Content::Text(text),
                    Some(MessageContent::Blocks(blocks)) => Content::Parts(
                        blocks
                            .into_iter()
                            .enumerate()
                            .map(|(k, b)| user_part(&format!("{at}.content.{k}"), b))
                            .collect::<Result<_, _>>()?,
                    ),
                };
                let mut tool = message(Role::Tool, Some(content));
                tool.tool_call_id = Some(tool_use_id);
                if let Some(is_error) = is_error {
                    tool.extra.insert("is_error".into(), Value::Bool(is_error));
                }
                if let Some(cache_control) = extra.get("cache_control") {
                    tool.extra
                        .insert("cache_control".into(), cache_control.clone());
                }
                out.push(tool);
            }
            other => parts.push(user_part(&at, other)?),
        }
    }
    if !parts.is_empty() {
        out.push(message(Role::User, Some(Content::Parts(parts))));
    }
    Ok(())
}

/// One user-side block (also tool result content) as a canonical part.
fn user_part(at: &str, block: ContentBlock) -> Result<ContentPart, LlmError> {
    Ok(match block {
        ContentBlock::Text { text, extra } => ContentPart::Text { text, extra },
        ContentBlock::Image { source, extra } => match source {
            ImageSource::Base64 { media_type, data } => ContentPart::ImageUrl {
                image_url: ImageUrl::from_data(&media_type, &data),
            },
            ImageSource::Url { url } => ContentPart::ImageUrl {
                image_url: ImageUrl { url, detail: None },
            },
            ImageSource::Other(source) => {
                let mut block = extra;
                block.insert("type".into(), "image".into());
                block.insert("source".into(), source);
                ContentPart::Other(Value::Object(block))
            }
        },
        ContentBlock::Other(value) => other_part(at, value)?,
        ContentBlock::ToolUse { .. }
        | ContentBlock::ToolResult { .. }
        | ContentBlock::Thinking { .. }
        | ContentBlock::RedactedThinking { .. } => {
            return Err(invalid(
                format!("{at}: this block type is not allowed here"),
                at,
            ));
        }
    })
}

/// Block types that parse into a variant; one that fell through to `Other`
/// is malformed.
const TYPED_BLOCKS: &[&str] = &[
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
];

fn other_part(at: &str, value: Value) -> Result<ContentPart, LlmError> {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() || TYPED_BLOCKS.contains(&kind) {
        return Err(invalid(
            format!("{at}: malformed {kind:?} content block"),
            at,
        ));
    }
    if kind == "document"
        && let Some(source) = value.get("source")
        && source.get("type").and_then(Value::as_str) == Some("base64")
        && let (Some(media_type), Some(data)) = (
            source.get("media_type").and_then(Value::as_str),
            source.get("data").and_then(Value::as_str),
        )
    {
        let mut file = json!({ "file_data": format!("data:{media_type};base64,{data}") });
        if let Some(title) = value.get("title").and_then(Value::as_str) {
            file["filename"] = title.into();
        }
        return Ok(ContentPart::File { file });
    }
    Ok(ContentPart::Other(value))
}

fn assistant_message(i: usize, content: MessageContent) -> Result<Message, LlmError> {
    let blocks = match content {
        MessageContent::Text(text) => return Ok(Message::new(Role::Assistant, text)),
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    let mut thinking = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block {
            ContentBlock::Text { text, extra } => parts.push(ContentPart::Text { text, extra }),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
            }),
            ContentBlock::Thinking {
                thinking: text,
                signature,
            } => thinking.push(Thinking {
                text,
                signature: (!signature.is_empty()).then_some(signature),
                redacted_data: None,
            }),
            ContentBlock::RedactedThinking { data } => thinking.push(Thinking {
                redacted_data: Some(data),
                ..Thinking::default()
            }),
            ContentBlock::ToolResult { .. } => {
                return Err(invalid(
                    format!("{at}: tool_result blocks belong in user messages"),
                    at,
                ));
            }
            ContentBlock::Image { .. } => {
                return Err(invalid(format!("{at}: images belong in user messages"), at));
            }
            ContentBlock::Other(value) => parts.push(other_part(&at, value)?),
        }
    }
    let mut message = message(
        Role::Assistant,
        (!parts.is_empty()).then_some(Content::Parts(parts)),
    );
    message.tool_calls = (!tool_calls.is_empty()).then_some(tool_calls);
    message.thinking = thinking;
    Ok(message)
}

fn parse_tool(i: usize, tool: Value) -> Result<Tool, LlmError> {
    let Value::Object(mut tool) = tool else {
        return Err(invalid(
            format!("tools.{i}: expected an object"),
            format!("tools.{i}"),
        ));
    };
    match tool.remove("type") {
        // A server tool (`web_search_20250305`, `bash_20250124`, ...).
        Some(Value::String(kind)) if kind != "custom" => Ok(Tool {
            kind,
            function: None,
            extra: tool,
        }),
        Some(Value::String(_)) | None => {
            let name = match tool.remove("name") {
                Some(Value::String(name)) => name,
                _ => {
                    return Err(invalid(
                        format!("tools.{i}.name: Field required"),
                        format!("tools.{i}.name"),
                    ));
                }
            };
            let description = match tool.remove("description") {
                Some(Value::String(description)) => Some(description),
                _ => None,
            };
            let parameters = tool.remove("input_schema");
            if parameters.is_none() {
                return Err(invalid(
                    format!("tools.{i}.input_schema: Field required"),
                    format!("tools.{i}.input_schema"),
                ));
            }
            let strict = tool.remove("strict").and_then(|s| s.as_bool());
            Ok(Tool {
                kind: "function".into(),
                function: Some(FunctionDefinition {
                    name,
                    description,
                    parameters,
                    strict,
                }),
                extra: tool,
            })
        }
        Some(_) => Err(invalid(
            format!("tools.{i}.type: expected a string"),
            format!("tools.{i}.type"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Responses.

/// The Message object for a canonical response (its first choice).
pub fn render_response(response: &ChatResponse) -> Vec<u8> {
    to_json(&response_message(response))
}

fn response_message(response: &ChatResponse) -> MessageResponse {
    let choice = response.choices.first();
    let mut content = Vec::new();
    if let Some(message) = choice.map(|c| &c.message) {
        for thinking in &message.thinking {
            content.push(match &thinking.redacted_data {
                Some(data) => ContentBlock::RedactedThinking { data: data.clone() },
                None => ContentBlock::Thinking {
                    thinking: thinking.text.clone(),
                    signature: thinking.signature.clone().unwrap_or_default(),
                },
            });
        }
        if message.thinking.is_empty()
            && let Some(reasoning) = message.reasoning_content.as_ref().filter(|r| !r.is_empty())
        {
            content.push(ContentBlock::Thinking {
                thinking: reasoning.clone(),
                signature: String::new(),
            });
        }
        let before = content.len();
        match &message.content {
            Some(Content::Text(text)) if !text.is_empty() => content.push(ContentBlock::text(text)),
            Some(Content::Parts(parts)) => {
                for part in parts {
                    if let ContentPart::Text { text, extra } = part {
                        content.push(ContentBlock::Text {
                            text: text.clone(),
                            extra: extra.clone(),
                        });
                    }
                }
            }
            _ => {}
        }
        if content.len() == before
            && let Some(refusal) = &message.refusal
        {
            content.push(ContentBlock::text(refusal));
        }
        for call in message.tool_calls.iter().flatten() {
            content.push(ContentBlock::ToolUse {
                id: call.id.clone(),
                name: call.function.name.clone(),
                input: tool_input(&call.function.arguments),
                extra: Extra::new(),
            });
        }
    }
    let has_tools =
        choice.is_some_and(|c| c.message.tool_calls.as_ref().is_some_and(|t| !t.is_empty()));
    let (stop_reason, stop_sequence) = stop_reason(
        choice.and_then(|c| c.finish_reason.as_deref()),
        response.native_stop.as_ref(),
        has_tools,
    );
    MessageResponse {
        id: message_id(&response.id),
        kind: "message".into(),
        role: "assistant".into(),
        content,
        model: response.model.clone(),
        stop_reason: Some(stop_reason),
        stop_sequence,
        usage: wire_usage(response.usage.unwrap_or_default()),
        extra: Extra::new(),
    }
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

/// Tool arguments as Anthropic `input`: a JSON object, else `{}` (see the
/// module doc).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => Value::Object(Extra::new()),
    }
}

/// Anthropic's stop reason: the provider's own when it was Anthropic's and
/// still agrees with the canonical finish reason, else mapped.
fn stop_reason(
    finish_reason: Option<&str>,
    native: Option<&NativeStop>,
    has_tools: bool,
) -> (String, Option<String>) {
    if let Some(native) = native
        && STOP_REASONS.contains(&native.reason.as_str())
        && finish_reason.is_none_or(|f| provider::finish_reason(&native.reason) == f)
    {
        let sequence = native
            .stop_sequence
            .clone()
            .filter(|_| native.reason == "stop_sequence");
        return (native.reason.clone(), sequence);
    }
    let reason = match finish_reason {
        Some(finish::LENGTH) => "max_tokens",
        Some(finish::TOOL_CALLS) => "tool_use",
        Some(finish::CONTENT_FILTER) => "refusal",
        Some(_) => "end_turn",
        None if has_tools => "tool_use",
        None => "end_turn",
    };
    (reason.into(), None)
}

fn wire_usage(usage: Usage) -> WireUsage {
    let cached = usage.cached_tokens();
    let created = usage.cache_creation_tokens();
    WireUsage {
        input_tokens: usage
            .prompt_tokens
            .saturating_sub(cached.saturating_add(created)),
        output_tokens: usage.completion_tokens,
        cache_creation_input_tokens: Some(created),
        cache_read_input_tokens: Some(cached),
        extra: Extra::new(),
    }
}

// ---------------------------------------------------------------------------
// Errors.

/// `{"type":"error","error":{"type","message"}}`.
pub fn render_error(error: &LlmError) -> Vec<u8> {
    to_json(&error_envelope(error))
}

#[derive(Serialize)]
struct ErrorEnvelope {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorBody,
}

fn error_envelope(error: &LlmError) -> ErrorEnvelope {
    ErrorEnvelope {
        kind: "error",
        error: ErrorBody {
            kind: error_type(error.kind).into(),
            message: error.message.clone(),
        },
    }
}

/// Anthropic's error `type` for each kind (the documented list; a gateway
/// fault is `api_error`, as Anthropic reports its own upstream faults).
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api | ErrorKind::BadGateway => "api_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
    }
}

// ---------------------------------------------------------------------------
// Streams.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by canonical tool-call index.
    Tool(u32),
}

/// Canonical chunks → Anthropic's event sequence: `message_start`, then per
/// block `content_block_start` / `_delta`s / `_stop` (a new block whenever
/// the kind changes, one per tool call), then — held until [`done`], because
/// usage may arrive only in the last chunk — `message_delta` and
/// `message_stop`.
///
/// A late argument fragment for a tool call whose block was already closed
/// (parallel calls interleaved by the upstream) is sent with the old block's
/// index: the SDKs accumulate by index, and dropping it would corrupt the call.
///
/// [`done`]: StreamEncoder::done
#[derive(Debug, Default)]
pub struct MessagesStreamEncoder {
    started: bool,
    finished: bool,
    /// The open block and its Anthropic index.
    open: Option<(Block, u32)>,
    next_index: u32,
    /// Canonical tool-call index → Anthropic block index.
    tools: Vec<(u32, u32)>,
    finish_reason: Option<String>,
    native_stop: Option<NativeStop>,
    usage: Option<Usage>,
}

impl MessagesStreamEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn event(out: &mut BytesMut, event: &StreamEvent) {
        sse::write_json(out, Some(event.name()), event);
    }

    fn start(&mut self, id: &str, model: &str, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let message = MessageResponse {
            id: message_id(id),
            kind: "message".into(),
            role: "assistant".into(),
            content: Vec::new(),
            model: model.into(),
            stop_reason: None,
            stop_sequence: None,
            usage: wire_usage(self.usage.unwrap_or_default()),
            extra: Extra::new(),
        };
        Self::event(out, &StreamEvent::MessageStart { message });
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            Self::event(out, &StreamEvent::ContentBlockStop { index });
        }
    }

    /// The index of an open block of `kind`, opening it (and closing the
    /// previous one) when needed.
    fn open(&mut self, kind: Block, start: ContentBlock, out: &mut BytesMut) -> u32 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        Self::event(
            out,
            &StreamEvent::ContentBlockStart {
                index,
                content_block: start,
            },
        );
        index
    }

    fn delta(out: &mut BytesMut, index: u32, delta: BlockDelta) {
        Self::event(out, &StreamEvent::ContentBlockDelta { index, delta });
    }
}

impl StreamEncoder for MessagesStreamEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if chunk.native_stop.is_some() {
            self.native_stop.clone_from(&chunk.native_stop);
        }
        self.start(&chunk.id, &chunk.model, out);
        // Anthropic has one message: only the first choice is rendered.
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return;
        };
        let delta = &choice.delta;
        if let Some(thinking) = delta.reasoning_content.as_ref().filter(|t| !t.is_empty()) {
            let index = self.open(Block::Thinking, thinking_start(), out);
            Self::delta(
                out,
                index,
                BlockDelta::ThinkingDelta {
                    thinking: thinking.clone(),
                },
            );
        }
        if let Some(signature) = &delta.thinking_signature {
            let index = self.open(Block::Thinking, thinking_start(), out);
            Self::delta(
                out,
                index,
                BlockDelta::SignatureDelta {
                    signature: signature.clone(),
                },
            );
        }
        for text in [&delta.content, &delta.refusal].into_iter().flatten() {
            if !text.is_empty() {
                let index = self.open(Block::Text, ContentBlock::text(""), out);
                Self::delta(out, index, BlockDelta::TextDelta { text: text.clone() });
            }
        }
        for call in delta.tool_calls.iter().flatten() {
            let known = self
                .tools
                .iter()
                .find(|(tool, _)| *tool == call.index)
                .map(|t| t.1);
            let index = match known {
                Some(index) => index,
                None => {
                    let start = ContentBlock::ToolUse {
                        id: call
                            .id
                            .clone()
                            .unwrap_or_else(|| format!("toolu_{}", call.index)),
                        name: call
                            .function
                            .as_ref()
                            .and_then(|f| f.name.clone())
                            .unwrap_or_default(),
                        input: Value::Object(Extra::new()),
                        extra: Extra::new(),
                    };
                    let index = self.open(Block::Tool(call.index), start, out);
                    self.tools.push((call.index, index));
                    index
                }
            };
            if let Some(arguments) = call
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_ref())
                .filter(|a| !a.is_empty())
            {
                Self::delta(
                    out,
                    index,
                    BlockDelta::InputJsonDelta {
                        partial_json: arguments.clone(),
                    },
                );
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
    }

    fn done(&mut self, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.start("", "", out);
        self.close(out);
        self.finished = true;
        let (stop_reason, stop_sequence) = stop_reason(
            self.finish_reason.as_deref(),
            self.native_stop.as_ref(),
            !self.tools.is_empty(),
        );
        let usage = wire_usage(self.usage.unwrap_or_default());
        Self::event(
            out,
            &StreamEvent::MessageDelta {
                delta: MessageDeltaBody {
                    stop_reason: Some(stop_reason),
                    stop_sequence,
                },
                usage: DeltaUsage {
                    output_tokens: usage.output_tokens,
                    input_tokens: Some(usage.input_tokens),
                    cache_creation_input_tokens: usage.cache_creation_input_tokens,
                    cache_read_input_tokens: usage.cache_read_input_tokens,
                },
            },
        );
        Self::event(out, &StreamEvent::MessageStop);
    }

    fn error(&mut self, error: &LlmError, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        sse::write_json(out, Some("error"), &error_envelope(error));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

fn thinking_start() -> ContentBlock {
    ContentBlock::Thinking {
        thinking: String::new(),
        signature: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_is_required_but_not_for_count_tokens() {
        let body = br#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#;
        let error = parse_request(body).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.param.as_deref(), Some("max_tokens"));
        let request = parse_count_tokens(body).unwrap();
        assert_eq!(request.messages.len(), 1);
        assert_eq!(render_count_tokens(42), br#"{"input_tokens":42}"#);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for body in [
            &b"not json"[..],
            br#"{"model":1}"#,
            br#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#,
            br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b","input":{}}]}]}"#,
            br#"{"model":"m","max_tokens":1,"messages":[],"tools":[{"description":"x"}]}"#,
            br#"{"model":"m","max_tokens":1,"messages":[],"tool_choice":{"type":"tool"}}"#,
            br#"{"model":"m","max_tokens":1,"messages":[],"thinking":{"type":"enabled"}}"#,
            br#"{"model":"m","max_tokens":1,"messages":[],"system":[{"type":"image","source":{"type":"url","url":"u"}}]}"#,
        ] {
            let error = parse_request(body).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidRequest, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn every_error_kind_has_a_documented_type() {
        let kinds = [
            (ErrorKind::InvalidRequest, "invalid_request_error"),
            (ErrorKind::Authentication, "authentication_error"),
            (ErrorKind::PermissionDenied, "permission_error"),
            (ErrorKind::NotFound, "not_found_error"),
            (ErrorKind::RequestTooLarge, "request_too_large"),
            (ErrorKind::RateLimit, "rate_limit_error"),
            (ErrorKind::Api, "api_error"),
            (ErrorKind::BadGateway, "api_error"),
            (ErrorKind::Overloaded, "overloaded_error"),
            (ErrorKind::Timeout, "timeout_error"),
        ];
        for (kind, expected) in kinds {
            let body: Value =
                serde_json::from_slice(&render_error(&LlmError::new(kind, "m"))).unwrap();
            assert_eq!(
                body,
                json!({"type":"error","error":{"type":expected,"message":"m"}})
            );
        }
    }

    #[test]
    fn invalid_tool_arguments_become_an_empty_object() {
        assert_eq!(tool_input("{\"a\":1}"), json!({"a":1}));
        assert_eq!(tool_input(""), json!({}));
        assert_eq!(tool_input("[1]"), json!({}));
        assert_eq!(tool_input("{\"a\":"), json!({}));
    }

    #[test]
    fn interleaved_tool_arguments_keep_their_block() {
        use crate::canonical::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};
        let call = |index: u32, id: Option<&str>, arguments: &str| ChatChunk {
            id: "c".into(),
            model: "m".into(),
            choices: vec![ChunkChoice {
                delta: Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index,
                        id: id.map(Into::into),
                        function: Some(FunctionCallDelta {
                            name: id.map(|_| "f".into()),
                            arguments: Some(arguments.into()),
                        }),
                        ..ToolCallDelta::default()
                    }]),
                    ..Delta::default()
                },
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        };
        let mut encoder = MessagesStreamEncoder::new();
        let mut out = BytesMut::new();
        encoder.chunk(&call(0, Some("a"), "{\"x\":"), &mut out);
        encoder.chunk(&call(1, Some("b"), "{}"), &mut out);
        encoder.chunk(&call(0, None, "1}"), &mut out);
        encoder.done(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains(r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#), "{text}");
        assert!(text.contains(r#""stop_reason":"tool_use""#));
    }

    #[test]
    fn encoder_without_chunks_still_emits_a_valid_sequence() {
        let mut encoder = MessagesStreamEncoder::new();
        let mut out = BytesMut::new();
        encoder.done(&mut out);
        encoder.done(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    }
}
