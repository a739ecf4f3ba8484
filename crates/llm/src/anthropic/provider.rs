//! Anthropic Messages as a provider format: the gateway calling an
//! Anthropic-format upstream. Canonical requests are rendered as Messages
//! bodies; responses, stream events and errors are parsed back.
//!
//! Choices made here (and why):
//! * `system`/`developer` messages, wherever they are, become the one
//!   `system` prompt (Anthropic has no system role in `messages`); one plain
//!   string stays a string, anything else becomes text blocks.
//! * Consecutive messages of the same role are merged into one turn (what
//!   Anthropic does anyway), so `tool` messages and the user text after them
//!   form one user turn, `tool_result` blocks first as Anthropic requires.
//! * `max_tokens` is required: the request's cap, else [`DEFAULT_MAX_TOKENS`];
//!   with thinking and no cap, the default is raised above the budget.
//! * Thinking: `thinking_budget`, else `reasoning_effort` through
//!   [`openai::budget_for_effort`], becomes `thinking: {type: enabled}`; the
//!   budget is raised to Anthropic's minimum (1024) and kept below
//!   `max_tokens`. It is left off when `tool_choice` forces a tool, a
//!   combination Anthropic refuses.
//! * `response_format`: `json_schema` becomes structured outputs
//!   (`output_config.format`, generally available on current models);
//!   `json_object` has no Anthropic equivalent and becomes a system
//!   instruction to answer with one JSON object.
//! * `parallel_tool_calls: false` becomes `disable_parallel_tool_use`;
//!   `user` becomes `metadata.user_id`; `n > 1` is refused.
//! * From `extra`, only Anthropic's own top-level fields pass through
//!   (`container`, `context_management`, `mcp_servers`, `output_config`,
//!   `thinking`, and `service_tier` when its value is Anthropic's).
//!
//! Dropped on purpose (OpenAI-only, no Anthropic equivalent): `logprobs`,
//! `top_logprobs`, `seed`, `frequency_penalty`, `presence_penalty`,
//! `logit_bias`, `stream_options` (Anthropic always reports usage), `store`,
//! `metadata`, `modalities`, `audio`, `prediction`, `verbosity`,
//! `prompt_cache_key`, `safety_identifier`, `web_search_options`, a message's
//! `name`, image `detail`. In responses: `citations` and server-tool blocks.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{
    BlockDelta, ContentBlock, DeltaUsage, Extra, ImageSource, InputMessage, MessageContent,
    MessageResponse, MessagesRequest, Metadata, PASSTHROUGH_BLOCKS, StreamEvent, ToolChoice,
    to_json,
};
use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta,
    FunctionCall, FunctionCallDelta, Message, NativeStop, PromptTokensDetails, Role, Thinking,
    ToolCall, ToolCallDelta, ToolChoice as CanonicalChoice, Usage, finish,
};
use crate::error::{ErrorKind, LlmError};
use crate::openai;
use crate::sse;
use crate::stream::{ChunkSink, StreamDecoder, StreamItem};

/// `max_tokens` when the request sets no cap (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Top-level fields of Anthropic's own that a client may have sent through
/// canonical `extra` (from the Anthropic dialect).
const PASSTHROUGH_FIELDS: &[&str] = &[
    "container",
    "context_management",
    "mcp_servers",
    "output_config",
    "thinking",
];

const JSON_OBJECT_INSTRUCTION: &str =
    "Respond only with a single valid JSON object, with no text before or after it.";

fn invalid(message: impl Into<String>, param: impl Into<String>) -> LlmError {
    LlmError::invalid_request(message).with_param(param)
}

// ---------------------------------------------------------------------------
// Requests.

/// The upstream Messages body for `model`.
pub fn request_body(request: &ChatRequest, model: &str) -> Result<Vec<u8>, LlmError> {
    Ok(to_json(&messages_request(request, model)?))
}

/// A `count_tokens` body for `request`: the Messages body without the
/// generation settings, which count_tokens refuses.
pub fn count_tokens_body(request: &ChatRequest, model: &str) -> Result<Vec<u8>, LlmError> {
    let mut body = messages_request(request, model)?;
    body.max_tokens = None;
    body.stream = None;
    body.stop_sequences = None;
    body.temperature = None;
    body.top_p = None;
    body.top_k = None;
    body.metadata = None;
    Ok(to_json(&body))
}

fn messages_request(request: &ChatRequest, model: &str) -> Result<MessagesRequest, LlmError> {
    if request.n.is_some_and(|n| n > 1) {
        return Err(invalid("Anthropic returns one choice: n must be 1", "n"));
    }
    let mut system: Vec<ContentBlock> = Vec::new();
    let mut system_is_string = true;
    let mut turns: Vec<InputMessage> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        match message.role {
            Role::System | Role::Developer => match &message.content {
                Some(Content::Text(text)) => system.push(ContentBlock::text(text)),
                Some(Content::Parts(parts)) => {
                    system_is_string = false;
                    for (j, part) in parts.iter().enumerate() {
                        match part {
                            ContentPart::Text { text, extra } => system.push(ContentBlock::Text {
                                text: text.clone(),
                                extra: text_extra(extra),
                            }),
                            _ => {
                                return Err(invalid(
                                    format!(
                                        "messages.{i}.content.{j}: system messages may only hold text"
                                    ),
                                    format!("messages.{i}.content"),
                                ));
                            }
                        }
                    }
                }
                None => {}
            },
            Role::User => {
                let content = match &message.content {
                    Some(Content::Text(text)) => MessageContent::Text(text.clone()),
                    Some(Content::Parts(parts)) => MessageContent::Blocks(
                        parts
                            .iter()
                            .enumerate()
                            .map(|(j, p)| part_block(&format!("messages.{i}.content.{j}"), p))
                            .collect::<Result<_, _>>()?,
                    ),
                    None => MessageContent::Text(String::new()),
                };
                push_turn(&mut turns, "user", content);
            }
            Role::Assistant => {
                if let Some(content) = assistant_content(i, message)? {
                    push_turn(&mut turns, "assistant", content);
                }
            }
            Role::Tool => {
                let block = tool_result(i, message)?;
                push_turn(&mut turns, "user", MessageContent::Blocks(vec![block]));
            }
            Role::Function => {
                return Err(invalid(
                    format!(
                        "messages.{i}.role: the deprecated function role is not supported; use tool"
                    ),
                    format!("messages.{i}.role"),
                ));
            }
        }
    }

    let json_object = request
        .response_format
        .as_ref()
        .is_some_and(|f| f.kind == "json_object");
    if json_object {
        system.push(ContentBlock::text(JSON_OBJECT_INSTRUCTION));
    }
    let system = match system.len() {
        0 => None,
        1 if system_is_string => match system.pop() {
            Some(ContentBlock::Text { text, .. }) => Some(MessageContent::Text(text)),
            _ => None,
        },
        _ if system_is_string => Some(MessageContent::Text(
            system
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n\n"),
        )),
        _ => Some(MessageContent::Blocks(system)),
    };

    let mut extra = Extra::new();
    for field in PASSTHROUGH_FIELDS {
        if let Some(value) = request.extra.get(*field) {
            extra.insert((*field).into(), value.clone());
        }
    }
    if let Some(tier) = request.extra.get("service_tier")
        && matches!(tier.as_str(), Some("auto" | "standard_only"))
    {
        extra.insert("service_tier".into(), tier.clone());
    }
    if let Some(format) = &request.response_format
        && format.kind == "json_schema"
    {
        let schema = format
            .json_schema
            .as_ref()
            .and_then(|s| s.schema.clone())
            .ok_or_else(|| {
                invalid(
                    "response_format.json_schema.schema is required",
                    "response_format.json_schema.schema",
                )
            })?;
        let config = extra
            .entry("output_config")
            .or_insert_with(|| Value::Object(Extra::new()));
        if let Value::Object(config) = config {
            config.insert(
                "format".into(),
                json!({"type": "json_schema", "schema": schema}),
            );
        }
    }

    let mut max_tokens = request.max_output_tokens();
    let budget = request.thinking_budget.or_else(|| {
        request
            .reasoning_effort
            .as_deref()
            .and_then(openai::budget_for_effort)
    });
    // Anthropic refuses thinking with a forced tool (`any` / `tool`).
    let forced_tool = match &request.tool_choice {
        Some(CanonicalChoice::Mode(mode)) => mode == "required",
        Some(CanonicalChoice::Named(_)) => true,
        None => false,
    };
    let budget = budget.filter(|_| !forced_tool);
    let mut thinking = None;
    if let Some(budget) = budget {
        let mut budget = budget.max(MIN_THINKING_BUDGET);
        match max_tokens {
            Some(max) if max <= MIN_THINKING_BUDGET => {
                return Err(invalid(
                    format!(
                        "max_tokens must be greater than {MIN_THINKING_BUDGET} when thinking is enabled"
                    ),
                    "max_tokens",
                ));
            }
            Some(max) => budget = budget.min(max - 1),
            None => max_tokens = Some(budget.saturating_add(DEFAULT_MAX_TOKENS)),
        }
        thinking = Some(json!({"type": "enabled", "budget_tokens": budget}));
        extra.remove("thinking");
    }

    let tools = request
        .tools
        .as_ref()
        .map(|tools| {
            tools
                .iter()
                .enumerate()
                .map(|(i, tool)| tool_definition(i, tool))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let disable_parallel = (request.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = match &request.tool_choice {
        Some(CanonicalChoice::Mode(mode)) => Some(match mode.as_str() {
            "auto" => choice("auto", None, disable_parallel),
            "required" => choice("any", None, disable_parallel),
            "none" => choice("none", None, None),
            other => {
                return Err(invalid(
                    format!("tool_choice: unknown mode {other:?}"),
                    "tool_choice",
                ));
            }
        }),
        Some(CanonicalChoice::Named(named)) => match &named.function {
            Some(function) => Some(choice(
                "tool",
                Some(function.name.clone()),
                disable_parallel,
            )),
            None => {
                return Err(invalid(
                    format!(
                        "tool_choice: type {:?} is not supported by Anthropic",
                        named.kind
                    ),
                    "tool_choice",
                ));
            }
        },
        None if disable_parallel.is_some() && tools.as_ref().is_some_and(|t| !t.is_empty()) => {
            Some(choice("auto", None, disable_parallel))
        }
        None => None,
    };

    Ok(MessagesRequest {
        model: model.into(),
        messages: turns,
        max_tokens: Some(max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        system,
        stop_sequences: request.stop.as_ref().map(|s| s.to_vec()),
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        stream: request.stream.then_some(true),
        tools,
        tool_choice,
        thinking,
        metadata: request.user.as_ref().map(|user| Metadata {
            user_id: Some(user.clone()),
            extra: Extra::new(),
        }),
        extra,
    })
}

fn choice(kind: &str, name: Option<String>, disable_parallel: Option<bool>) -> ToolChoice {
    ToolChoice {
        kind: kind.into(),
        name,
        disable_parallel_tool_use: disable_parallel,
    }
}

/// Appends a turn, merging it into the previous one of the same role;
/// `tool_result` blocks go before any other block of the merged turn.
fn push_turn(turns: &mut Vec<InputMessage>, role: &str, content: MessageContent) {
    let Some(last) = turns.last_mut().filter(|t| t.role == role) else {
        turns.push(InputMessage {
            role: role.into(),
            content,
        });
        return;
    };
    let mut blocks = match std::mem::replace(&mut last.content, MessageContent::Blocks(Vec::new()))
    {
        MessageContent::Text(text) => vec![ContentBlock::text(text)],
        MessageContent::Blocks(blocks) => blocks,
    };
    let new = match content {
        MessageContent::Text(text) => vec![ContentBlock::text(text)],
        MessageContent::Blocks(blocks) => blocks,
    };
    for block in new {
        if matches!(block, ContentBlock::ToolResult { .. }) {
            let at = blocks
                .iter()
                .take_while(|b| matches!(b, ContentBlock::ToolResult { .. }))
                .count();
            blocks.insert(at, block);
        } else {
            blocks.push(block);
        }
    }
    last.content = MessageContent::Blocks(blocks);
}

/// The text-block fields Anthropic knows (`cache_control`, `citations`).
fn text_extra(extra: &Extra) -> Extra {
    extra
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "cache_control" | "citations"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn part_block(at: &str, part: &ContentPart) -> Result<ContentBlock, LlmError> {
    Ok(match part {
        ContentPart::Text { text, extra } => ContentBlock::Text {
            text: text.clone(),
            extra: text_extra(extra),
        },
        ContentPart::ImageUrl { image_url } => {
            let source = if let Some((media_type, data)) = image_url.as_data() {
                ImageSource::Base64 {
                    media_type: media_type.into(),
                    data: data.into(),
                }
            } else if image_url.url.starts_with("https://") || image_url.url.starts_with("http://")
            {
                ImageSource::Url {
                    url: image_url.url.clone(),
                }
            } else {
                return Err(invalid(
                    format!("{at}: images must be base64 data URLs or http(s) URLs"),
                    at,
                ));
            };
            ContentBlock::Image {
                source,
                extra: Extra::new(),
            }
        }
        ContentPart::File { file } => document_block(at, file)?,
        ContentPart::InputAudio { .. } => {
            return Err(invalid(
                format!("{at}: Anthropic does not accept audio input"),
                at,
            ));
        }
        ContentPart::Other(value) => {
            let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
            if kind == "image" || PASSTHROUGH_BLOCKS.contains(&kind) {
                ContentBlock::Other(value.clone())
            } else {
                return Err(invalid(
                    format!("{at}: content type {kind:?} is not supported by Anthropic"),
                    at,
                ));
            }
        }
    })
}

/// An OpenAI `file` part with inline data as a `document` block: PDFs as a
/// base64 source, plain text as a text source. File ids name OpenAI's file
/// store, which Anthropic cannot read.
fn document_block(at: &str, file: &Value) -> Result<ContentBlock, LlmError> {
    let data_url = file.get("file_data").and_then(Value::as_str);
    let Some((media_type, data)) = data_url
        .and_then(|u| u.strip_prefix("data:"))
        .and_then(|u| u.split_once(";base64,"))
    else {
        return Err(invalid(
            format!("{at}: only files with inline base64 data can be sent to Anthropic"),
            at,
        ));
    };
    let source = if media_type == "text/plain" {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| invalid(format!("{at}: file_data is not valid base64: {e}"), at))?;
        json!({"type": "text", "media_type": "text/plain", "data": String::from_utf8_lossy(&bytes)})
    } else {
        json!({"type": "base64", "media_type": media_type, "data": data})
    };
    let mut block = json!({"type": "document", "source": source});
    if let Some(name) = file.get("filename").and_then(Value::as_str) {
        block["title"] = name.into();
    }
    Ok(ContentBlock::Other(block))
}

/// Thinking first (Anthropic requires it before text and tool use), then
/// text, then tool calls. `None` for a message with nothing to send.
fn assistant_content(i: usize, message: &Message) -> Result<Option<MessageContent>, LlmError> {
    let plain =
        message.thinking.is_empty() && message.tool_calls.as_ref().is_none_or(|c| c.is_empty());
    if plain && let Some(Content::Text(text)) = &message.content {
        return Ok(Some(MessageContent::Text(text.clone())));
    }
    let mut blocks = Vec::new();
    for thinking in &message.thinking {
        blocks.push(match &thinking.redacted_data {
            Some(data) => ContentBlock::RedactedThinking { data: data.clone() },
            None => ContentBlock::Thinking {
                thinking: thinking.text.clone(),
                signature: thinking.signature.clone().unwrap_or_default(),
            },
        });
    }
    match &message.content {
        Some(Content::Text(text)) if !text.is_empty() => blocks.push(ContentBlock::text(text)),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                blocks.push(part_block(&format!("messages.{i}.content.{j}"), part)?);
            }
        }
        _ => {}
    }
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        let arguments = call.function.arguments.trim();
        let input = if arguments.is_empty() {
            Value::Object(Extra::new())
        } else {
            match serde_json::from_str::<Value>(arguments) {
                Ok(value @ Value::Object(_)) => value,
                _ => {
                    return Err(invalid(
                        format!(
                            "messages.{i}.tool_calls.{j}.function.arguments: must be a JSON object"
                        ),
                        format!("messages.{i}.tool_calls.{j}.function.arguments"),
                    ));
                }
            }
        };
        blocks.push(ContentBlock::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input,
            extra: Extra::new(),
        });
    }
    Ok((!blocks.is_empty()).then_some(MessageContent::Blocks(blocks)))
}

fn tool_result(i: usize, message: &Message) -> Result<ContentBlock, LlmError> {
    let tool_use_id = message.tool_call_id.clone().ok_or_else(|| {
        invalid(
            format!("messages.{i}.tool_call_id: Field required"),
            format!("messages.{i}.tool_call_id"),
        )
    })?;
    let content = match &message.content {
        None => None,
        Some(Content::Text(text)) if text.is_empty() => None,
        Some(Content::Text(text)) => Some(MessageContent::Text(text.clone())),
        Some(Content::Parts(parts)) => Some(MessageContent::Blocks(
            parts
                .iter()
                .enumerate()
                .map(|(j, p)| part_block(&format!("messages.{i}.content.{j}"), p))
                .collect::<Result<_, _>>()?,
        )),
    };
    Ok(ContentBlock::ToolResult {
        tool_use_id,
        content,
        is_error: message.extra.get("is_error").and_then(Value::as_bool),
        extra: message
            .extra
            .get("cache_control")
            .map(|c| Extra::from_iter([("cache_control".to_string(), c.clone())]))
            .unwrap_or_default(),
    })
}

/// Server tools are named by a dated type (`web_search_20250305`).
fn is_server_tool(kind: &str) -> bool {
    kind.rsplit_once('_').is_some_and(|(name, date)| {
        !name.is_empty() && date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())
    })
}

fn tool_definition(i: usize, tool: &crate::canonical::Tool) -> Result<Value, LlmError> {
    if tool.kind == "function" {
        let function = tool.function.as_ref().ok_or_else(|| {
            invalid(
                format!("tools.{i}.function: Field required"),
                format!("tools.{i}.function"),
            )
        })?;
        let mut definition = tool.extra.clone();
        definition.insert("name".into(), function.name.clone().into());
        if let Some(description) = &function.description {
            definition.insert("description".into(), description.clone().into());
        }
        definition.insert(
            "input_schema".into(),
            function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        );
        if let Some(strict) = function.strict {
            definition.insert("strict".into(), strict.into());
        }
        return Ok(Value::Object(definition));
    }
    if is_server_tool(&tool.kind) {
        let mut definition = tool.extra.clone();
        definition.insert("type".into(), tool.kind.clone().into());
        return Ok(Value::Object(definition));
    }
    Err(invalid(
        format!(
            "tools.{i}.type: tool type {:?} is not supported by Anthropic",
            tool.kind
        ),
        format!("tools.{i}.type"),
    ))
}

// ---------------------------------------------------------------------------
// Responses.

/// An upstream Message object as a canonical response.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, LlmError> {
    let wire: MessageResponse = serde_json::from_slice(body)
        .map_err(|e| LlmError::bad_gateway(format!("provider sent an unreadable message: {e}")))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut thinking = Vec::new();
    for block in wire.content {
        match block {
            ContentBlock::Text { text: t, .. } => text.push_str(&t),
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
                thinking: t,
                signature,
            } => thinking.push(Thinking {
                text: t,
                signature: (!signature.is_empty()).then_some(signature),
                redacted_data: None,
            }),
            ContentBlock::RedactedThinking { data } => thinking.push(Thinking {
                redacted_data: Some(data),
                ..Thinking::default()
            }),
            // Images, server-tool blocks and newer types: see the module doc.
            _ => {}
        }
    }
    let reasoning: String = thinking.iter().map(|t| t.text.as_str()).collect();
    let mut message = Message::new(Role::Assistant, text);
    if tool_calls.is_empty() {
        // Keep `content: ""` for an empty answer, as OpenAI does.
    } else if message
        .content
        .as_ref()
        .is_some_and(|c| c.text().is_empty())
    {
        message.content = None;
    }
    message.tool_calls = (!tool_calls.is_empty()).then_some(tool_calls);
    message.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
    message.thinking = thinking;
    Ok(ChatResponse {
        id: wire.id,
        object: "chat.completion".into(),
        created: 0,
        model: wire.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: wire.stop_reason.as_deref().map(|r| finish_reason(r).into()),
            logprobs: None,
        }],
        usage: Some(canonical_usage(
            wire.usage.input_tokens,
            wire.usage.output_tokens,
            wire.usage.cache_read_input_tokens.unwrap_or(0),
            wire.usage.cache_creation_input_tokens.unwrap_or(0),
        )),
        extra: Default::default(),
        native_stop: wire.stop_reason.map(|reason| NativeStop {
            reason,
            stop_sequence: wire.stop_sequence,
        }),
    })
}

/// OpenAI's finish reason for an Anthropic stop reason.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => finish::LENGTH,
        "tool_use" => finish::TOOL_CALLS,
        "refusal" => finish::CONTENT_FILTER,
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => finish::STOP,
    }
}

/// Anthropic counts → OpenAI's: `prompt_tokens` includes cache reads and
/// writes, which Anthropic's `input_tokens` excludes.
fn canonical_usage(input: u64, output: u64, cache_read: u64, cache_creation: u64) -> Usage {
    // Saturating: the numbers come from the network.
    let prompt = input
        .saturating_add(cache_read)
        .saturating_add(cache_creation);
    let mut usage = Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: prompt.saturating_add(output),
        ..Usage::default()
    };
    if cache_read > 0 || cache_creation > 0 {
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: cache_read,
            cache_creation_tokens: cache_creation,
        });
    }
    usage
}

// ---------------------------------------------------------------------------
// Errors.

/// An Anthropic error body (`{"type":"error","error":{"type","message"}}`)
/// with its status; the provider's own message is kept.
pub fn parse_error(status: u16, body: &[u8]) -> LlmError {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let error = value.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("provider answered with status {status}"));
    let kind = error
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .and_then(kind_for_type)
        .unwrap_or_else(|| ErrorKind::from_status(status));
    LlmError::new(kind, message).with_status(status)
}

fn kind_for_type(kind: &str) -> Option<ErrorKind> {
    Some(match kind {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" => ErrorKind::PermissionDenied,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        "rate_limit_error" => ErrorKind::RateLimit,
        "api_error" => ErrorKind::Api,
        "overloaded_error" => ErrorKind::Overloaded,
        "timeout_error" => ErrorKind::Timeout,
        // billing_error and newer types: the status says it.
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Streams.

/// Event types that parse into a variant; one that fell through to
/// `Other` is malformed.
const KNOWN_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool_use block: its canonical tool-call index, and whether any
    /// argument text arrived.
    Tool(u32, bool),
    /// Redacted thinking, server tools: not translated.
    Ignored,
}

/// Anthropic SSE → canonical chunks. Each block's deltas become content,
/// reasoning or tool-call deltas; `message_delta` becomes a finish chunk and
/// a usage chunk (`choices: []`); `message_stop` is [`StreamItem::Done`]. An
/// `error` event also ends the stream (nothing follows it), so a body that
/// ends after one is not reported again as truncated.
#[derive(Debug, Default)]
pub struct MessagesStreamDecoder {
    parser: sse::Parser,
    events: Vec<sse::Event>,
    ended: bool,
    id: String,
    model: String,
    /// Block kinds by Anthropic index.
    blocks: Vec<(u32, Block)>,
    tools: u32,
    /// From `message_start`: input, cache read, cache creation.
    input: (u64, u64, u64),
}

impl MessagesStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn chunk(&self, delta: Delta) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        }
    }

    fn block(&mut self, index: u32) -> Option<&mut Block> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    fn tool_delta(&self, index: u32, arguments: String) -> Delta {
        Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index,
                function: Some(FunctionCallDelta {
                    name: None,
                    arguments: Some(arguments),
                }),
                ..ToolCallDelta::default()
            }]),
            ..Delta::default()
        }
    }

    fn drain(&mut self, out: &mut ChunkSink) -> Result<(), LlmError> {
        let events = std::mem::take(&mut self.events);
        for event in events {
            if self.ended {
                break;
            }
            let parsed: StreamEvent = serde_json::from_str(&event.data).map_err(|e| {
                LlmError::bad_gateway(format!(
                    "provider sent an unreadable {:?} stream event: {e}",
                    event.event
                ))
            })?;
            if let StreamEvent::Other(value) = &parsed
                && let Some(kind) = value.get("type").and_then(Value::as_str)
                && KNOWN_EVENTS.contains(&kind)
            {
                return Err(LlmError::bad_gateway(format!(
                    "provider sent a malformed {kind} stream event"
                )));
            }
            self.event(parsed, out);
        }
        Ok(())
    }

    fn event(&mut self, event: StreamEvent, out: &mut ChunkSink) {
        match event {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.input = (
                    message.usage.input_tokens,
                    message.usage.cache_read_input_tokens.unwrap_or(0),
                    message.usage.cache_creation_input_tokens.unwrap_or(0),
                );
                out.push(StreamItem::Chunk(self.chunk(Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                })));
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let (block, delta) = match content_block {
                    ContentBlock::Text { text, .. } => (
                        Block::Text,
                        (!text.is_empty()).then(|| Delta {
                            content: Some(text),
                            ..Delta::default()
                        }),
                    ),
                    ContentBlock::Thinking { thinking, .. } => (
                        Block::Thinking,
                        (!thinking.is_empty()).then(|| Delta {
                            reasoning_content: Some(thinking),
                            ..Delta::default()
                        }),
                    ),
                    ContentBlock::ToolUse {
                        id, name, input, ..
                    } => {
                        let tool = self.tools;
                        self.tools += 1;
                        // Arguments stream as deltas; a start that already
                        // carries input (non-streaming-style) is sent whole.
                        let arguments = match &input {
                            Value::Object(map) if !map.is_empty() => input.to_string(),
                            _ => String::new(),
                        };
                        let has_arguments = !arguments.is_empty();
                        (
                            Block::Tool(tool, has_arguments),
                            Some(Delta {
                                tool_calls: Some(vec![ToolCallDelta {
                                    index: tool,
                                    id: Some(id),
                                    kind: Some("function".into()),
                                    function: Some(FunctionCallDelta {
                                        name: Some(name),
                                        arguments: Some(arguments),
                                    }),
                                }]),
                                ..Delta::default()
                            }),
                        )
                    }
                    _ => (Block::Ignored, None),
                };
                self.blocks.push((index, block));
                if let Some(delta) = delta {
                    out.push(StreamItem::Chunk(self.chunk(delta)));
                }
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let block = self.block(index).copied();
                let delta = match (block, delta) {
                    (Some(Block::Text), BlockDelta::TextDelta { text }) => Delta {
                        content: Some(text),
                        ..Delta::default()
                    },
                    (Some(Block::Thinking), BlockDelta::ThinkingDelta { thinking }) => Delta {
                        reasoning_content: Some(thinking),
                        ..Delta::default()
                    },
                    (Some(Block::Thinking), BlockDelta::SignatureDelta { signature }) => Delta {
                        thinking_signature: Some(signature),
                        ..Delta::default()
                    },
                    (Some(Block::Tool(tool, _)), BlockDelta::InputJsonDelta { partial_json })
                        if !partial_json.is_empty() =>
                    {
                        if let Some(b) = self.block(index) {
                            *b = Block::Tool(tool, true);
                        }
                        self.tool_delta(tool, partial_json)
                    }
                    // Citations, ignored blocks, mismatched deltas.
                    _ => return,
                };
                out.push(StreamItem::Chunk(self.chunk(delta)));
            }
            StreamEvent::ContentBlockStop { index } => {
                // A tool called without arguments still gets a JSON object,
                // which OpenAI clients parse.
                if let Some(Block::Tool(tool, false)) = self.block(index).copied() {
                    out.push(StreamItem::Chunk(
                        self.chunk(self.tool_delta(tool, "{}".into())),
                    ));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                self.message_delta(delta.stop_reason, delta.stop_sequence, usage, out);
            }
            StreamEvent::MessageStop => {
                self.ended = true;
                out.push(StreamItem::Done);
            }
            StreamEvent::Error { error } => {
                self.ended = true;
                let kind = kind_for_type(&error.kind).unwrap_or(ErrorKind::Api);
                let status = if error.kind == "overloaded_error" {
                    529
                } else {
                    kind.status()
                };
                out.push(StreamItem::Error(
                    LlmError::new(kind, error.message).with_status(status),
                ));
            }
            StreamEvent::Ping | StreamEvent::Other(_) => {}
        }
    }

    fn message_delta(
        &mut self,
        stop_reason: Option<String>,
        stop_sequence: Option<String>,
        usage: DeltaUsage,
        out: &mut ChunkSink,
    ) {
        if let Some(reason) = stop_reason {
            let mut chunk = self.chunk(Delta::default());
            if let Some(choice) = chunk.choices.first_mut() {
                choice.finish_reason = Some(finish_reason(&reason).into());
            }
            chunk.native_stop = Some(NativeStop {
                reason,
                stop_sequence,
            });
            out.push(StreamItem::Chunk(chunk));
        }
        let usage = canonical_usage(
            usage.input_tokens.unwrap_or(self.input.0),
            usage.output_tokens,
            usage.cache_read_input_tokens.unwrap_or(self.input.1),
            usage.cache_creation_input_tokens.unwrap_or(self.input.2),
        );
        out.push(StreamItem::Chunk(ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            model: self.model.clone(),
            usage: Some(usage),
            ..ChatChunk::default()
        }));
    }
}

impl StreamDecoder for MessagesStreamDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut ChunkSink) -> Result<(), LlmError> {
        self.parser.push(bytes, &mut self.events)?;
        self.drain(out)
    }

    fn finish(&mut self, out: &mut ChunkSink) -> Result<(), LlmError> {
        self.parser.finish(&mut self.events);
        self.drain(out)?;
        if self.ended {
            Ok(())
        } else {
            Err(LlmError::bad_gateway(
                "provider stream ended before message_stop",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{ImageUrl, Stop};

    fn body(request: &ChatRequest) -> Value {
        serde_json::from_slice(&request_body(request, "claude").unwrap()).unwrap()
    }

    fn user(text: &str) -> ChatRequest {
        ChatRequest {
            model: "alias".into(),
            messages: vec![Message::new(Role::User, text)],
            ..ChatRequest::default()
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let value = body(&user("hi"));
        assert_eq!(value["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(value["model"], "claude");
        let mut request = user("hi");
        request.n = Some(2);
        assert_eq!(
            request_body(&request, "c").unwrap_err().param.as_deref(),
            Some("n")
        );
    }

    #[test]
    fn thinking_budget_respects_max_tokens() {
        let mut request = user("hi");
        request.reasoning_effort = Some("high".into());
        let value = body(&request);
        assert_eq!(
            value["thinking"],
            json!({"type":"enabled","budget_tokens":24576})
        );
        assert_eq!(value["max_tokens"], 24576 + DEFAULT_MAX_TOKENS);
        request.max_completion_tokens = Some(2000);
        assert_eq!(body(&request)["thinking"]["budget_tokens"], 1999);
        request.max_completion_tokens = Some(1000);
        assert!(request_body(&request, "c").is_err());
        request.max_completion_tokens = None;
        request.reasoning_effort = None;
        request.thinking_budget = Some(10);
        assert_eq!(
            body(&request)["thinking"]["budget_tokens"],
            MIN_THINKING_BUDGET
        );
    }

    #[test]
    fn thinking_is_left_off_with_a_forced_tool() {
        let mut request = user("hi");
        request.thinking_budget = Some(4000);
        request.tool_choice = Some(CanonicalChoice::Mode("required".into()));
        assert!(body(&request).get("thinking").is_none());
        request.tool_choice = Some(CanonicalChoice::Mode("auto".into()));
        assert_eq!(body(&request)["thinking"]["budget_tokens"], 4000);
    }

    #[test]
    fn huge_numbers_saturate() {
        let mut request = user("hi");
        request.thinking_budget = Some(u64::MAX);
        assert_eq!(body(&request)["max_tokens"], u64::MAX);
        let response = parse_response(
            format!(
                r#"{{"id":"m","content":[],"usage":{{"input_tokens":{0},"output_tokens":{0},"cache_read_input_tokens":{0}}}}}"#,
                u64::MAX
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(response.usage.unwrap().total_tokens, u64::MAX);
    }

    #[test]
    fn invalid_tool_arguments_are_refused() {
        let mut request = user("hi");
        let mut assistant = Message::new(Role::Assistant, "");
        assistant.tool_calls = Some(vec![ToolCall {
            id: "t".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "f".into(),
                arguments: "{oops".into(),
            },
        }]);
        request.messages.push(assistant);
        let error = request_body(&request, "c").unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn unsupported_parts_are_refused() {
        for part in [
            ContentPart::InputAudio {
                input_audio: json!({"data":"x","format":"wav"}),
            },
            ContentPart::File {
                file: json!({"file_id":"file-1"}),
            },
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: "ftp://x".into(),
                    detail: None,
                },
            },
            ContentPart::Other(json!({"type":"mystery"})),
        ] {
            let mut request = user("");
            request.messages[0].content = Some(Content::Parts(vec![part]));
            assert!(request_body(&request, "c").is_err());
        }
    }

    #[test]
    fn openai_only_fields_are_dropped_and_stop_mapped() {
        let mut request: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [{"role":"user","content":"hi"}],
            "logprobs": true, "seed": 1, "frequency_penalty": 0.5, "service_tier": "flex",
            "stop": "END", "user": "u1", "parallel_tool_calls": false,
            "tools": [{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]
        }))
        .unwrap();
        request.top_k = Some(5);
        let value = body(&request);
        for field in [
            "logprobs",
            "seed",
            "frequency_penalty",
            "service_tier",
            "stop",
            "user",
        ] {
            assert!(value.get(field).is_none(), "{field} leaked");
        }
        assert_eq!(value["stop_sequences"], json!(["END"]));
        assert_eq!(value["metadata"], json!({"user_id":"u1"}));
        assert_eq!(value["top_k"], 5);
        assert_eq!(
            value["tool_choice"],
            json!({"type":"auto","disable_parallel_tool_use":true})
        );
        request.stop = Some(Stop::Many(vec!["a".into(), "b".into()]));
        assert_eq!(body(&request)["stop_sequences"], json!(["a", "b"]));
    }

    #[test]
    fn server_tool_names_are_dated() {
        assert!(is_server_tool("web_search_20250305"));
        assert!(is_server_tool("text_editor_20250728"));
        assert!(!is_server_tool("custom"));
        assert!(!is_server_tool("file_search"));
        assert!(!is_server_tool("_20250305"));
    }

    #[test]
    fn errors_map_types_and_keep_messages() {
        let error = parse_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(error.kind, ErrorKind::Overloaded);
        assert_eq!(error.message, "Overloaded");
        assert_eq!(error.status, 529);
        let error = parse_error(529, b"<html>");
        assert_eq!(error.kind, ErrorKind::Overloaded);
        let error = parse_error(
            402,
            br#"{"type":"error","error":{"type":"billing_error","message":"pay"}}"#,
        );
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.message, "pay");
    }

    #[test]
    fn truncated_stream_is_an_error_and_garbage_too() {
        let mut decoder = MessagesStreamDecoder::new();
        let mut out = Vec::new();
        decoder
            .push(b"event: ping\ndata: {\"type\":\"ping\"}\n\n", &mut out)
            .unwrap();
        assert!(decoder.finish(&mut out).is_err());
        let mut decoder = MessagesStreamDecoder::new();
        assert!(decoder.push(b"data: {not json\n\n", &mut out).is_err());
        let mut decoder = MessagesStreamDecoder::new();
        assert!(
            decoder
                .push(
                    b"data: {\"type\":\"content_block_delta\",\"index\":\"x\"}\n\n",
                    &mut out
                )
                .is_err()
        );
    }
}
