//! Responses API requests → canonical, and canonical responses, chunks and
//! errors → Responses objects and stream events.

use std::collections::HashSet;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    CreateRequest, FunctionCallItem, FunctionCallOutputItem, FunctionTool, IncompleteDetails,
    Input, InputTokensDetails, MessageContent, MessageItem, OutputContent, OutputItem,
    OutputTokensDetails, ReasoningItem, ResponseError, ResponseObject, ResponseUsage, StreamEvent,
    SummaryPart, TextConfig, TextFormat,
};
use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDefinition,
    FunctionName, ImageUrl, JsonSchemaFormat, Message, NamedToolChoice, ResponseFormat, Role,
    Thinking, Tool, ToolCall, ToolChoice, Usage, finish,
};
use crate::error::{ErrorKind, LlmError};
use crate::sse;
use crate::stream::StreamEncoder;
use crate::{canonical::Extra, openai};

// ---------------------------------------------------------------------------
// Requests.

/// What the response object repeats from the request (the Responses API
/// echoes its parameters back; canonical has no room for them). Built by
/// [`parse_request_with_echo`]; keep it with the request until the answer
/// is rendered. `Default` is an echo of a request that set nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsesEcho {
    /// The model the client asked for; used only when the canonical response
    /// has none (an error before the first chunk).
    pub model: String,
    pub instructions: Option<Value>,
    /// The client's tools, in the Responses shape.
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u64>,
    /// `text`, with `format` defaulted to `{"type":"text"}`.
    pub text: Value,
    /// `{"effort","summary"}`.
    pub reasoning: Value,
    pub metadata: Value,
    pub user: Option<String>,
    pub truncation: String,
}

impl Default for ResponsesEcho {
    fn default() -> Self {
        Self {
            model: String::new(),
            instructions: None,
            tools: Vec::new(),
            tool_choice: json!("auto"),
            parallel_tool_calls: true,
            temperature: None,
            top_p: None,
            max_output_tokens: None,
            text: json!({"format": {"type": "text"}}),
            reasoning: json!({"effort": null, "summary": null}),
            metadata: json!({}),
            user: None,
            truncation: "disabled".into(),
        }
    }
}

/// Parses a client's Responses body into canonical.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    parse_request_with_echo(body).map(|(request, _)| request)
}

/// Parses a client's Responses body into canonical, plus what the rendered
/// response must echo back (see [`ResponsesEcho`]).
pub fn parse_request_with_echo(body: &[u8]) -> Result<(ChatRequest, ResponsesEcho), LlmError> {
    let request: CreateRequest = serde_json::from_slice(body)
        .map_err(|e| LlmError::invalid_request(format!("Invalid responses request: {e}")))?;
    refuse_stateful(&request)?;

    let echo = ResponsesEcho {
        model: request.model.clone(),
        instructions: request.instructions.as_ref().map(|i| match i {
            Input::Text(text) => Value::String(text.clone()),
            Input::Items(items) => Value::Array(items.clone()),
        }),
        tools: request.tools.clone().unwrap_or_default(),
        tool_choice: request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        temperature: request.temperature,
        top_p: request.top_p,
        max_output_tokens: request.max_output_tokens,
        text: echo_text(request.text.as_ref()),
        reasoning: json!({
            "effort": request.reasoning.as_ref().and_then(|r| r.effort.clone()),
            "summary": request
                .reasoning
                .as_ref()
                .and_then(|r| r.summary.clone().or_else(|| r.generate_summary.clone())),
        }),
        metadata: request.metadata.clone().unwrap_or_else(|| json!({})),
        user: request.user.clone(),
        truncation: request
            .truncation
            .clone()
            .unwrap_or_else(|| "disabled".into()),
    };

    let mut messages = Vec::new();
    match &request.instructions {
        Some(Input::Text(text)) => messages.push(Message::new(Role::System, text.clone())),
        Some(Input::Items(items)) => push_items(items, "instructions", &mut messages)?,
        None => {}
    }
    match &request.input {
        Some(Input::Text(text)) => messages.push(Message::new(Role::User, text.clone())),
        Some(Input::Items(items)) => push_items(items, "input", &mut messages)?,
        None => {}
    }

    let tools = match &request.tools {
        Some(tools) if !tools.is_empty() => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, tool)| parse_tool(i, tool))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => None,
    };
    let tool_choice = request
        .tool_choice
        .as_ref()
        .map(parse_tool_choice)
        .transpose()?;

    let mut extra = request.extra;
    if let Some(metadata) = request.metadata {
        extra.insert("metadata".into(), metadata);
    }
    let mut response_format = None;
    if let Some(text) = request.text {
        if let Some(verbosity) = text.verbosity {
            extra.insert("verbosity".into(), Value::String(verbosity));
        }
        response_format = text.format.map(parse_format).transpose()?;
    }

    let chat = ChatRequest {
        model: request.model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: request.parallel_tool_calls,
        temperature: request.temperature,
        top_p: request.top_p,
        max_completion_tokens: request.max_output_tokens,
        stream: request.stream.unwrap_or(false),
        response_format,
        reasoning_effort: request.reasoning.and_then(|r| r.effort),
        user: request.user,
        extra,
        ..ChatRequest::default()
    };
    Ok((chat, echo))
}

fn invalid(param: &str, message: String) -> LlmError {
    LlmError::invalid_request(message).with_param(param)
}

/// Parameters that only make sense with OpenAI's stored state.
fn refuse_stateful(request: &CreateRequest) -> Result<(), LlmError> {
    const STATELESS: &str = "this gateway translates the request for another provider and keeps no server-side state; send the whole conversation in `input`";
    if request.previous_response_id.is_some() {
        return Err(invalid(
            "previous_response_id",
            format!("`previous_response_id` is not supported: {STATELESS}"),
        ));
    }
    if request.conversation.is_some() {
        return Err(invalid(
            "conversation",
            format!("`conversation` is not supported: {STATELESS}"),
        ));
    }
    if request.store == Some(true) {
        return Err(invalid(
            "store",
            "`store: true` is not supported: responses are not stored by this gateway; set `store` to false".into(),
        ));
    }
    if request.background == Some(true) {
        return Err(invalid(
            "background",
            "`background: true` is not supported: there is no stored response to poll; use `stream` instead".into(),
        ));
    }
    if request.prompt.is_some() {
        return Err(invalid(
            "prompt",
            "`prompt` (stored prompt templates) is not supported: send `instructions` and `input` instead".into(),
        ));
    }
    Ok(())
}

fn echo_text(text: Option<&TextConfig>) -> Value {
    let mut text = text.cloned().unwrap_or_default();
    if text.format.is_none() {
        text.format = Some(TextFormat {
            kind: "text".into(),
            name: None,
            description: None,
            schema: None,
            strict: None,
        });
    }
    serde_json::to_value(text).unwrap_or_else(|_| json!({"format": {"type": "text"}}))
}

/// Appends the messages for a list of input items. Calls, reasoning and
/// assistant text of one model turn fold into one assistant message, as
/// Chat (and every provider) wants them.
fn push_items(items: &[Value], field: &str, messages: &mut Vec<Message>) -> Result<(), LlmError> {
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let kind = item.get("type").and_then(Value::as_str);
        let kind = match kind {
            None if item.get("role").is_some() => "message",
            None => {
                return Err(invalid(&path, format!("{path}: input item has no `type`")));
            }
            Some(kind) => kind,
        };
        match kind {
            "message" => {
                let message: MessageItem = from_item(item, &path)?;
                push_message(message, &path, messages)?;
            }
            "function_call" => {
                let call: FunctionCallItem = from_item(item, &path)?;
                let tool_call = ToolCall {
                    id: call.call_id,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: call.name,
                        arguments: call.arguments,
                    },
                };
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => {
                        last.tool_calls.get_or_insert_with(Vec::new).push(tool_call);
                    }
                    _ => {
                        let mut message = empty_assistant();
                        message.tool_calls = Some(vec![tool_call]);
                        messages.push(message);
                    }
                }
            }
            "function_call_output" => {
                let output: FunctionCallOutputItem = from_item(item, &path)?;
                let content = match output.output {
                    MessageContent::Text(text) => Content::Text(text),
                    MessageContent::Parts(parts) => {
                        Content::Parts(convert_parts(&parts, &format!("{path}.output"))?)
                    }
                };
                let mut message = empty_message(Role::Tool);
                message.content = Some(content);
                message.tool_call_id = Some(output.call_id);
                messages.push(message);
            }
            "reasoning" => {
                let reasoning: ReasoningItem = from_item(item, &path)?;
                let Some(thinking) = thinking_from(reasoning) else {
                    continue;
                };
                match messages.last_mut() {
                    Some(last) if is_open_assistant(last) => last.thinking.push(thinking),
                    _ => {
                        let mut message = empty_assistant();
                        message.thinking.push(thinking);
                        messages.push(message);
                    }
                }
            }
            "item_reference" => {
                return Err(invalid(
                    &path,
                    format!(
                        "{path}: `item_reference` is not supported: this gateway keeps no stored items; send the item itself"
                    ),
                ));
            }
            other => {
                return Err(invalid(
                    &path,
                    format!(
                        "{path}: input items of type `{other}` are not supported: built-in tools run on OpenAI's servers and other providers have no equivalent"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn from_item<T: serde::de::DeserializeOwned>(item: &Value, path: &str) -> Result<T, LlmError> {
    T::deserialize(item).map_err(|e| invalid(path, format!("{path}: {e}")))
}

fn empty_message(role: Role) -> Message {
    Message {
        content: None,
        ..Message::new(role, "")
    }
}

fn empty_assistant() -> Message {
    empty_message(Role::Assistant)
}

/// An assistant message that so far holds only reasoning: the text or calls
/// of the same turn still belong to it.
fn is_open_assistant(message: &Message) -> bool {
    message.role == Role::Assistant && message.content.is_none() && message.tool_calls.is_none()
}

fn thinking_from(item: ReasoningItem) -> Option<Thinking> {
    let from_content: Vec<String> = item
        .content
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.text)
        .collect();
    let texts = if from_content.iter().any(|t| !t.is_empty()) {
        from_content
    } else {
        item.summary.into_iter().map(|p| p.text).collect()
    };
    let text = texts.join("\n\n");
    match (text.is_empty(), item.encrypted_content) {
        (true, None) => None,
        (true, Some(data)) => Some(Thinking {
            text,
            signature: None,
            redacted_data: Some(data),
        }),
        (false, signature) => Some(Thinking {
            text,
            signature,
            redacted_data: None,
        }),
    }
}

fn push_message(
    item: MessageItem,
    path: &str,
    messages: &mut Vec<Message>,
) -> Result<(), LlmError> {
    let role = match item.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "developer" => Role::Developer,
        other => {
            return Err(invalid(
                &format!("{path}.role"),
                format!("{path}.role: unknown role `{other}`"),
            ));
        }
    };
    if role != Role::Assistant {
        let content = match item.content {
            MessageContent::Text(text) => Content::Text(text),
            MessageContent::Parts(parts) => {
                Content::Parts(convert_parts(&parts, &format!("{path}.content"))?)
            }
        };
        let mut message = empty_message(role);
        message.content = Some(content);
        messages.push(message);
        return Ok(());
    }

    // Assistant: text parts join into one string, refusals go to `refusal`.
    let (text, refusal) = match item.content {
        MessageContent::Text(text) => (text, None),
        MessageContent::Parts(parts) => {
            let mut text = String::new();
            let mut refusal: Option<String> = None;
            for (j, part) in parts.iter().enumerate() {
                let part_path = format!("{path}.content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("output_text" | "input_text") => {
                        text.push_str(str_field(part, "text", &part_path)?)
                    }
                    Some("refusal") => refusal
                        .get_or_insert_with(String::new)
                        .push_str(str_field(part, "refusal", &part_path)?),
                    other => {
                        return Err(invalid(
                            &part_path,
                            format!(
                                "{part_path}: assistant content of type `{}` is not supported",
                                other.unwrap_or("(none)")
                            ),
                        ));
                    }
                }
            }
            (text, refusal)
        }
    };
    let target = match messages.last_mut() {
        Some(last) if is_open_assistant(last) => last,
        _ => {
            messages.push(empty_assistant());
            match messages.last_mut() {
                Some(last) => last,
                None => return Ok(()),
            }
        }
    };
    // A refusal-only turn keeps its text as content too: providers without a
    // refusal field would otherwise see an empty assistant turn.
    let content = match (&refusal, text.is_empty()) {
        (Some(refusal), true) => refusal.clone(),
        _ => text,
    };
    target.content = Some(Content::Text(content));
    target.refusal = refusal;
    Ok(())
}

fn str_field<'a>(part: &'a Value, field: &str, path: &str) -> Result<&'a str, LlmError> {
    part.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(path, format!("{path}: `{field}` must be a string")))
}

/// User-side content parts (`input_text`, `input_image`, `input_file`) →
/// canonical parts.
fn convert_parts(parts: &[Value], path: &str) -> Result<Vec<ContentPart>, LlmError> {
    const NO_FILES: &str = "this gateway has no file store; send the content inline (`image_url` as an https or data URL, or `file_data`)";
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| {
            let path = format!("{path}[{j}]");
            match part.get("type").and_then(Value::as_str) {
                Some("input_text" | "output_text") => {
                    Ok(ContentPart::text(str_field(part, "text", &path)?))
                }
                Some("input_image") => {
                    if let Some(url) = part.get("image_url").and_then(Value::as_str) {
                        Ok(ContentPart::ImageUrl {
                            image_url: ImageUrl {
                                url: url.to_string(),
                                detail: part
                                    .get("detail")
                                    .and_then(Value::as_str)
                                    .map(str::to_string),
                            },
                        })
                    } else if part.get("file_id").is_some_and(|f| !f.is_null()) {
                        Err(invalid(
                            &format!("{path}.file_id"),
                            format!("{path}.file_id is not supported: {NO_FILES}"),
                        ))
                    } else {
                        Err(invalid(
                            &path,
                            format!("{path}: `input_image` needs `image_url`"),
                        ))
                    }
                }
                Some("input_file") => {
                    if let Some(data) = part.get("file_data").and_then(Value::as_str) {
                        let mut file = serde_json::Map::new();
                        file.insert("file_data".into(), Value::String(data.to_string()));
                        if let Some(name) = part.get("filename").and_then(Value::as_str) {
                            file.insert("filename".into(), Value::String(name.to_string()));
                        }
                        Ok(ContentPart::File {
                            file: Value::Object(file),
                        })
                    } else {
                        let field = if part.get("file_url").is_some_and(|f| !f.is_null()) {
                            "file_url"
                        } else {
                            "file_id"
                        };
                        Err(invalid(
                            &format!("{path}.{field}"),
                            format!("{path}.{field} is not supported: {NO_FILES}"),
                        ))
                    }
                }
                other => Err(invalid(
                    &path,
                    format!(
                        "{path}: content of type `{}` is not supported",
                        other.unwrap_or("(none)")
                    ),
                )),
            }
        })
        .collect()
}

fn parse_tool(i: usize, tool: &Value) -> Result<Tool, LlmError> {
    let path = format!("tools[{i}]");
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {
            let function: FunctionTool = from_item(tool, &path)?;
            Ok(Tool {
                kind: "function".into(),
                function: Some(FunctionDefinition {
                    name: function.name,
                    description: function.description,
                    parameters: function.parameters,
                    strict: function.strict,
                }),
                extra: Extra::new(),
            })
        }
        other => Err(invalid(
            &path,
            format!(
                "{path}: tools of type `{}` are not supported: built-in tools run on OpenAI's servers and other providers have no equivalent; declare a function tool instead",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

fn parse_tool_choice(choice: &Value) -> Result<ToolChoice, LlmError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => {
            Ok(ToolChoice::Mode(mode.clone()))
        }
        Value::Object(object) if object.get("type").and_then(Value::as_str) == Some("function") => {
            let name = object.get("name").and_then(Value::as_str).ok_or_else(|| {
                invalid(
                    "tool_choice",
                    "tool_choice: a function choice needs `name`".into(),
                )
            })?;
            Ok(ToolChoice::Named(NamedToolChoice {
                kind: "function".into(),
                function: Some(FunctionName { name: name.into() }),
                extra: Extra::new(),
            }))
        }
        other => Err(invalid(
            "tool_choice",
            format!(
                "tool_choice {other} is not supported: only \"none\", \"auto\", \"required\" and {{\"type\":\"function\",\"name\":...}} translate to other providers"
            ),
        )),
    }
}

fn parse_format(format: TextFormat) -> Result<ResponseFormat, LlmError> {
    let json_schema = match format.kind.as_str() {
        "text" | "json_object" => None,
        "json_schema" => Some(JsonSchemaFormat {
            name: format.name.ok_or_else(|| {
                invalid(
                    "text.format.name",
                    "text.format: `json_schema` needs `name`".into(),
                )
            })?,
            description: format.description,
            schema: format.schema,
            strict: format.strict,
        }),
        other => {
            return Err(invalid(
                "text.format.type",
                format!("text.format: unknown type `{other}`"),
            ));
        }
    };
    Ok(ResponseFormat {
        kind: format.kind,
        json_schema,
        extra: Extra::new(),
    })
}

// ---------------------------------------------------------------------------
// Responses.

/// Item ids derived from the canonical id and the output index, so a stream
/// and a plain response for the same answer name their items alike.
fn base_id(id: &str) -> String {
    let base: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
    if base.is_empty() { "0".into() } else { base }
}

fn item_id(prefix: &str, base: &str, output_index: usize) -> String {
    format!("{prefix}_{base}_{output_index}")
}

fn response_usage(usage: &Usage) -> ResponseUsage {
    ResponseUsage {
        input_tokens: usage.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.cached_tokens(),
            cache_write_tokens: usage.cache_creation_tokens(),
        },
        output_tokens: usage.completion_tokens,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: usage.reasoning_tokens(),
        },
        total_tokens: usage.total_tokens,
    }
}

/// `incomplete_details.reason` for a finish reason that cut the answer short.
fn incomplete_reason(finish_reason: Option<&str>) -> Option<&'static str> {
    match finish_reason {
        Some(finish::LENGTH) => Some("max_output_tokens"),
        Some(finish::CONTENT_FILTER) => Some("content_filter"),
        _ => None,
    }
}

fn set_status(item: &mut OutputItem, value: &str) {
    let (OutputItem::Message { status, .. }
    | OutputItem::FunctionCall { status, .. }
    | OutputItem::Reasoning { status, .. }) = item;
    value.clone_into(status);
}

struct Header<'a> {
    base: &'a str,
    created: u64,
    model: &'a str,
}

fn response_object(
    echo: &ResponsesEcho,
    header: &Header<'_>,
    status: &str,
    output: Vec<OutputItem>,
    usage: Option<&Usage>,
    incomplete: Option<&str>,
) -> ResponseObject {
    let model = if header.model.is_empty() {
        echo.model.clone()
    } else {
        header.model.to_string()
    };
    ResponseObject {
        id: format!("resp_{}", header.base),
        object: "response".into(),
        created_at: header.created,
        status: status.into(),
        background: false,
        error: None,
        incomplete_details: incomplete.map(|reason| IncompleteDetails {
            reason: reason.into(),
        }),
        instructions: echo.instructions.clone(),
        max_output_tokens: echo.max_output_tokens,
        model,
        output,
        parallel_tool_calls: echo.parallel_tool_calls,
        previous_response_id: None,
        reasoning: echo.reasoning.clone(),
        store: false,
        temperature: echo.temperature,
        text: echo.text.clone(),
        tool_choice: echo.tool_choice.clone(),
        tools: echo.tools.clone(),
        top_p: echo.top_p,
        truncation: echo.truncation.clone(),
        usage: usage.map(response_usage),
        user: echo.user.clone(),
        metadata: echo.metadata.clone(),
    }
}

fn reasoning_item(id: String, text: &str, encrypted: Option<String>) -> OutputItem {
    OutputItem::Reasoning {
        id,
        summary: if text.is_empty() {
            Vec::new()
        } else {
            vec![SummaryPart::SummaryText {
                text: text.to_string(),
            }]
        },
        encrypted_content: encrypted,
        status: "completed".into(),
    }
}

/// The Responses object for a canonical response: reasoning items, then the
/// assistant message, then one `function_call` item per tool call. A
/// `length` or `content_filter` finish makes it `incomplete`, with its last
/// item marked `incomplete`.
pub fn render_response(response: &ChatResponse, echo: &ResponsesEcho) -> Vec<u8> {
    let base = base_id(&response.id);
    let choice = response
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(response.choices.first());
    let mut output = Vec::new();
    let mut finish_reason = None;
    if let Some(choice) = choice {
        finish_reason = choice.finish_reason.as_deref();
        let message = &choice.message;
        if !message.thinking.is_empty() {
            for block in &message.thinking {
                let id = item_id("rs", &base, output.len());
                let encrypted = block.signature.clone().or(block.redacted_data.clone());
                output.push(reasoning_item(id, &block.text, encrypted));
            }
        } else if let Some(text) = message
            .reasoning_content
            .as_deref()
            .filter(|t| !t.is_empty())
        {
            output.push(reasoning_item(
                item_id("rs", &base, output.len()),
                text,
                None,
            ));
        }
        let text = message
            .content
            .as_ref()
            .map(Content::text)
            .unwrap_or_default();
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(output_text(text));
        }
        if let Some(refusal) = message.refusal.clone().filter(|r| !r.is_empty()) {
            content.push(OutputContent::Refusal { refusal });
        }
        if !content.is_empty() {
            output.push(OutputItem::Message {
                id: item_id("msg", &base, output.len()),
                role: "assistant".into(),
                status: "completed".into(),
                content,
            });
        }
        for call in message.tool_calls.iter().flatten() {
            output.push(OutputItem::FunctionCall {
                id: item_id("fc", &base, output.len()),
                call_id: call.id.clone(),
                name: call.function.name.clone(),
                arguments: call.function.arguments.clone(),
                status: "completed".into(),
            });
        }
    }
    let incomplete = incomplete_reason(finish_reason);
    if incomplete.is_some()
        && let Some(last) = output.last_mut()
    {
        set_status(last, "incomplete");
    }
    let header = Header {
        base: &base,
        created: response.created,
        model: &response.model,
    };
    let status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    to_json(&response_object(
        echo,
        &header,
        status,
        output,
        response.usage.as_ref(),
        incomplete,
    ))
}

fn output_text(text: String) -> OutputContent {
    OutputContent::OutputText {
        text,
        annotations: Vec::new(),
        logprobs: Vec::new(),
    }
}

/// The OpenAI error object, as the Responses API answers errors.
pub fn render_error(error: &LlmError) -> Vec<u8> {
    openai::render_error(error)
}

/// `response.error.code` (the Responses API's own vocabulary) for an error
/// without a provider code.
fn failure_code(error: &LlmError) -> String {
    if let Some(code) = &error.code {
        return code.clone();
    }
    match error.kind {
        ErrorKind::RateLimit => "rate_limit_exceeded",
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "invalid_prompt",
        _ => "server_error",
    }
    .into()
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // The module's own types always serialize.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

// ---------------------------------------------------------------------------
// Streams.

/// The item being streamed; every other item in `output` is closed.
#[derive(Debug)]
enum Open {
    Reasoning {
        text: String,
        signature: Option<String>,
        /// Whether `reasoning_summary_part.added` went out.
        part: bool,
    },
    Message {
        /// The content part being streamed, if any.
        part: Option<PartKind>,
    },
    FunctionCall {
        tool_index: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

/// Canonical chunks → Responses stream events: `response.created` and
/// `response.in_progress` on the first chunk, then per output item
/// `output_item.added`, its deltas and `output_item.done`, and finally
/// `response.completed` (or `response.incomplete`) with the whole response
/// and usage. Items are streamed one at a time, in the order they start;
/// only the first choice is used (the Responses API has no `n`). A tool
/// call's late deltas, after another item started, are dropped: no provider
/// interleaves them, and a closed item cannot grow.
pub struct ResponsesStreamEncoder {
    echo: ResponsesEcho,
    sequence: u64,
    started: bool,
    finished: bool,
    base: String,
    created: u64,
    model: String,
    output: Vec<OutputItem>,
    open: Option<Open>,
    tool_indexes: HashSet<u32>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl ResponsesStreamEncoder {
    pub fn new(echo: ResponsesEcho) -> Self {
        Self {
            echo,
            sequence: 0,
            started: false,
            finished: false,
            base: base_id(""),
            created: 0,
            model: String::new(),
            output: Vec::new(),
            open: None,
            tool_indexes: HashSet::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn emit(&mut self, event: &StreamEvent, out: &mut BytesMut) {
        let mut value = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
        let name = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_string();
        if let Value::Object(map) = &mut value {
            map.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        sse::write_json(out, Some(&name), &value);
    }

    fn snapshot(&self, status: &str, incomplete: Option<&str>) -> Box<ResponseObject> {
        let header = Header {
            base: &self.base,
            created: self.created,
            model: &self.model,
        };
        let output = if status == "in_progress" {
            Vec::new()
        } else {
            self.output.clone()
        };
        let usage = if status == "in_progress" {
            None
        } else {
            self.usage.as_ref()
        };
        Box::new(response_object(
            &self.echo, &header, status, output, usage, incomplete,
        ))
    }

    fn start(&mut self, chunk: Option<&ChatChunk>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(chunk) = chunk {
            self.base = base_id(&chunk.id);
            self.created = chunk.created;
            chunk.model.clone_into(&mut self.model);
        }
        let response = self.snapshot("in_progress", None);
        self.emit(
            &StreamEvent::Created {
                response: response.clone(),
            },
            out,
        );
        self.emit(&StreamEvent::InProgress { response }, out);
    }

    fn current_index(&self) -> usize {
        self.output.len().saturating_sub(1)
    }

    fn current_id(&self) -> String {
        match self.output.last() {
            Some(
                OutputItem::Message { id, .. }
                | OutputItem::FunctionCall { id, .. }
                | OutputItem::Reasoning { id, .. },
            ) => id.clone(),
            None => String::new(),
        }
    }

    fn open_item(&mut self, item: OutputItem, open: Open, out: &mut BytesMut) {
        self.close(out, "completed");
        let output_index = self.output.len();
        self.output.push(item.clone());
        self.open = Some(open);
        self.emit(&StreamEvent::OutputItemAdded { output_index, item }, out);
    }

    /// Ends the open item (its part, then the item) with `status`.
    fn close(&mut self, out: &mut BytesMut, status: &str) {
        let Some(open) = self.open.take() else {
            return;
        };
        let output_index = self.current_index();
        let item_id = self.current_id();
        match open {
            Open::Reasoning {
                text,
                signature,
                part,
            } => {
                if part {
                    self.emit(
                        &StreamEvent::ReasoningSummaryTextDone {
                            item_id: item_id.clone(),
                            output_index,
                            summary_index: 0,
                            text: text.clone(),
                        },
                        out,
                    );
                    self.emit(
                        &StreamEvent::ReasoningSummaryPartDone {
                            item_id: item_id.clone(),
                            output_index,
                            summary_index: 0,
                            part: SummaryPart::SummaryText { text: text.clone() },
                        },
                        out,
                    );
                }
                if let Some(last) = self.output.last_mut() {
                    *last = reasoning_item(item_id, &text, signature);
                }
            }
            Open::Message { part } => {
                if let Some(kind) = part {
                    self.close_part(kind, out);
                }
            }
            Open::FunctionCall { .. } => {
                if let Some(OutputItem::FunctionCall {
                    name, arguments, ..
                }) = self.output.last()
                {
                    let event = StreamEvent::FunctionCallArgumentsDone {
                        item_id,
                        output_index,
                        name: name.clone(),
                        arguments: arguments.clone(),
                    };
                    self.emit(&event, out);
                }
            }
        }
        if let Some(last) = self.output.last_mut() {
            set_status(last, status);
            let item = last.clone();
            self.emit(&StreamEvent::OutputItemDone { output_index, item }, out);
        }
    }

    /// Ends the message's current content part.
    fn close_part(&mut self, kind: PartKind, out: &mut BytesMut) {
        let output_index = self.current_index();
        let item_id = self.current_id();
        let Some(OutputItem::Message { content, .. }) = self.output.last() else {
            return;
        };
        let content_index = content.len().saturating_sub(1);
        let Some(part) = content.last().cloned() else {
            return;
        };
        let done = match (&part, kind) {
            (OutputContent::OutputText { text, .. }, PartKind::Text) => {
                StreamEvent::OutputTextDone {
                    item_id: item_id.clone(),
                    output_index,
                    content_index,
                    text: text.clone(),
                    logprobs: Vec::new(),
                }
            }
            (OutputContent::Refusal { refusal }, PartKind::Refusal) => StreamEvent::RefusalDone {
                item_id: item_id.clone(),
                output_index,
                content_index,
                refusal: refusal.clone(),
            },
            _ => return,
        };
        self.emit(&done, out);
        self.emit(
            &StreamEvent::ContentPartDone {
                item_id,
                output_index,
                content_index,
                part,
            },
            out,
        );
    }

    fn reasoning(&mut self, delta: &str, out: &mut BytesMut) {
        // A signature closes its block: more text is a new reasoning item.
        let continues = matches!(
            &self.open,
            Some(Open::Reasoning {
                signature: None,
                ..
            })
        );
        if !continues {
            let id = item_id("rs", &self.base, self.output.len());
            self.open_item(
                OutputItem::Reasoning {
                    id,
                    summary: Vec::new(),
                    encrypted_content: None,
                    status: "in_progress".into(),
                },
                Open::Reasoning {
                    text: String::new(),
                    signature: None,
                    part: false,
                },
                out,
            );
        }
        let output_index = self.current_index();
        let item_id = self.current_id();
        let mut announce = false;
        if let Some(Open::Reasoning { text, part, .. }) = &mut self.open {
            text.push_str(delta);
            announce = !*part;
            *part = true;
        }
        if announce {
            self.emit(
                &StreamEvent::ReasoningSummaryPartAdded {
                    item_id: item_id.clone(),
                    output_index,
                    summary_index: 0,
                    part: SummaryPart::SummaryText {
                        text: String::new(),
                    },
                },
                out,
            );
        }
        self.emit(
            &StreamEvent::ReasoningSummaryTextDelta {
                item_id,
                output_index,
                summary_index: 0,
                delta: delta.to_string(),
            },
            out,
        );
    }

    fn signature(&mut self, signature: &str, out: &mut BytesMut) {
        if !matches!(
            &self.open,
            Some(Open::Reasoning {
                signature: None,
                ..
            })
        ) {
            // A block without streamed text (redacted thinking).
            let id = item_id("rs", &self.base, self.output.len());
            self.open_item(
                OutputItem::Reasoning {
                    id,
                    summary: Vec::new(),
                    encrypted_content: None,
                    status: "in_progress".into(),
                },
                Open::Reasoning {
                    text: String::new(),
                    signature: None,
                    part: false,
                },
                out,
            );
        }
        if let Some(Open::Reasoning {
            signature: slot, ..
        }) = &mut self.open
        {
            *slot = Some(signature.to_string());
        }
    }

    fn text(&mut self, kind: PartKind, delta: &str, out: &mut BytesMut) {
        let current = match &self.open {
            Some(Open::Message { part }) => Some(*part),
            _ => None,
        };
        match current {
            None => {
                let id = item_id("msg", &self.base, self.output.len());
                self.open_item(
                    OutputItem::Message {
                        id,
                        role: "assistant".into(),
                        status: "in_progress".into(),
                        content: Vec::new(),
                    },
                    Open::Message { part: None },
                    out,
                );
            }
            Some(Some(open)) if open == kind => {}
            Some(Some(open)) => self.close_part(open, out),
            Some(None) => {}
        }
        let output_index = self.current_index();
        let item_id = self.current_id();
        if !matches!(&self.open, Some(Open::Message { part: Some(open) }) if *open == kind) {
            let part = match kind {
                PartKind::Text => output_text(String::new()),
                PartKind::Refusal => OutputContent::Refusal {
                    refusal: String::new(),
                },
            };
            let content_index = match self.output.last_mut() {
                Some(OutputItem::Message { content, .. }) => {
                    content.push(part.clone());
                    content.len() - 1
                }
                _ => 0,
            };
            self.open = Some(Open::Message { part: Some(kind) });
            self.emit(
                &StreamEvent::ContentPartAdded {
                    item_id: item_id.clone(),
                    output_index,
                    content_index,
                    part,
                },
                out,
            );
        }
        let mut content_index = 0;
        if let Some(OutputItem::Message { content, .. }) = self.output.last_mut() {
            content_index = content.len().saturating_sub(1);
            match content.last_mut() {
                Some(OutputContent::OutputText { text, .. }) => text.push_str(delta),
                Some(OutputContent::Refusal { refusal }) => refusal.push_str(delta),
                None => {}
            }
        }
        let event = match kind {
            PartKind::Text => StreamEvent::OutputTextDelta {
                item_id,
                output_index,
                content_index,
                delta: delta.to_string(),
                logprobs: Vec::new(),
            },
            PartKind::Refusal => StreamEvent::RefusalDelta {
                item_id,
                output_index,
                content_index,
                delta: delta.to_string(),
            },
        };
        self.emit(&event, out);
    }

    fn tool_call(&mut self, call: &crate::canonical::ToolCallDelta, out: &mut BytesMut) {
        let name = call.function.as_ref().and_then(|f| f.name.as_deref());
        let arguments = call
            .function
            .as_ref()
            .and_then(|f| f.arguments.as_deref())
            .unwrap_or_default();
        let is_open = matches!(&self.open, Some(Open::FunctionCall { tool_index }) if *tool_index == call.index);
        if !is_open {
            if !self.tool_indexes.insert(call.index) {
                return; // a late delta for a closed call
            }
            let id = item_id("fc", &self.base, self.output.len());
            let call_id = call
                .id
                .clone()
                .unwrap_or_else(|| format!("call_{}_{}", self.base, call.index));
            self.open_item(
                OutputItem::FunctionCall {
                    id,
                    call_id,
                    name: name.unwrap_or_default().to_string(),
                    arguments: String::new(),
                    status: "in_progress".into(),
                },
                Open::FunctionCall {
                    tool_index: call.index,
                },
                out,
            );
        } else if let Some(name) = name
            && let Some(OutputItem::FunctionCall { name: slot, .. }) = self.output.last_mut()
            && slot.is_empty()
        {
            name.clone_into(slot);
        }
        if arguments.is_empty() {
            return;
        }
        if let Some(OutputItem::FunctionCall { arguments: all, .. }) = self.output.last_mut() {
            all.push_str(arguments);
        }
        let event = StreamEvent::FunctionCallArgumentsDelta {
            item_id: self.current_id(),
            output_index: self.current_index(),
            delta: arguments.to_string(),
        };
        self.emit(&event, out);
    }
}

impl StreamEncoder for ResponsesStreamEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.start(Some(chunk), out);
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk
            .choices
            .iter()
            .find(|c| c.index == 0)
            .or(chunk.choices.first())
        else {
            return;
        };
        let delta = &choice.delta;
        if let Some(text) = delta.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            self.reasoning(text, out);
        }
        if let Some(signature) = delta.thinking_signature.as_deref() {
            self.signature(signature, out);
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            self.text(PartKind::Text, text, out);
        }
        if let Some(refusal) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
            self.text(PartKind::Refusal, refusal, out);
        }
        for call in delta.tool_calls.iter().flatten() {
            self.tool_call(call, out);
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
    }

    fn done(&mut self, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.start(None, out);
        self.finished = true;
        let incomplete = incomplete_reason(self.finish_reason.as_deref());
        self.close(
            out,
            if incomplete.is_some() {
                "incomplete"
            } else {
                "completed"
            },
        );
        let event = match incomplete {
            Some(reason) => StreamEvent::Incomplete {
                response: self.snapshot("incomplete", Some(reason)),
            },
            None => StreamEvent::Completed {
                response: self.snapshot("completed", None),
            },
        };
        self.emit(&event, out);
    }

    /// `response.failed` (the lifecycle end spec-following clients wait for,
    /// with what was produced so far), then an `error` event, which the SDK
    /// raises as `APIError`. Before the first chunk only the `error` event is
    /// sent: there is no response to fail yet.
    fn error(&mut self, error: &LlmError, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.started {
            self.close(out, "incomplete");
            let mut response = self.snapshot("failed", None);
            response.error = Some(ResponseError {
                code: failure_code(error),
                message: error.message.clone(),
            });
            self.emit(&StreamEvent::Failed { response }, out);
        }
        let body: Value = serde_json::from_slice(&render_error(error)).unwrap_or(Value::Null);
        let event = StreamEvent::Error {
            code: Some(
                error
                    .code
                    .clone()
                    .unwrap_or_else(|| openai::error_type(error.kind).into()),
            ),
            message: error.message.clone(),
            param: error.param.clone(),
            error: body.get("error").cloned().unwrap_or(Value::Null),
        };
        self.emit(&event, out);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};

    fn chunk(delta: Delta) -> ChatChunk {
        ChatChunk {
            id: "c".into(),
            model: "m".into(),
            choices: vec![ChunkChoice {
                delta,
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        }
    }

    fn call(index: u32, id: Option<&str>, arguments: &str) -> Delta {
        Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index,
                id: id.map(Into::into),
                kind: None,
                function: Some(FunctionCallDelta {
                    name: id.map(|_| "f".into()),
                    arguments: Some(arguments.into()),
                }),
            }]),
            ..Delta::default()
        }
    }

    fn event_types(out: &BytesMut) -> Vec<String> {
        let mut parser = sse::Parser::default();
        let mut events = Vec::new();
        parser.push(out, &mut events).unwrap();
        events.into_iter().map(|e| e.event).collect()
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        for body in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"model":"m","input":5}"#,
            br#"{"model":"m","input":["hi"]}"#,
            br#"{"model":"m","input":[{"type":"message","role":"user","content":[{"type":"input_text"}]}]}"#,
            br#"{"model":"m","input":[{"type":"message","role":"assistant","content":[{"type":"input_image","image_url":"x"}]}]}"#,
            br#"{"model":"m","input":[{"type":"function_call","name":"f"}]}"#,
            br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_url":"https://x"}]}]}"#,
            br#"{"model":"m","tools":[{"type":"function"}]}"#,
            br#"{"model":"m","tool_choice":{"type":"function"}}"#,
            br#"{"model":"m","text":{"format":{"type":"json_schema"}}}"#,
            br#"{"model":"m","text":{"format":{"type":"yaml"}}}"#,
            br#"{"model":"m","prompt":{"id":"pmpt_1"}}"#,
        ] {
            let error = parse_request(body).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
        }
    }

    #[test]
    fn refusal_only_history_keeps_its_text() {
        let request = parse_request(
            br#"{"model":"m","input":[{"role":"assistant","content":[{"type":"refusal","refusal":"No."}]}]}"#,
        )
        .unwrap();
        let message = &request.messages[0];
        assert_eq!(message.content, Some(Content::Text("No.".into())));
        assert_eq!(message.refusal.as_deref(), Some("No."));
    }

    #[test]
    fn late_deltas_for_a_closed_call_are_dropped() {
        let mut encoder = ResponsesStreamEncoder::new(ResponsesEcho::default());
        let mut out = BytesMut::new();
        encoder.chunk(&chunk(call(0, Some("a"), "{")), &mut out);
        encoder.chunk(&chunk(call(1, Some("b"), "{}")), &mut out);
        encoder.chunk(&chunk(call(0, None, "}")), &mut out);
        encoder.done(&mut out);
        encoder.chunk(&chunk(call(2, Some("c"), "{}")), &mut out);
        let types = event_types(&out);
        assert_eq!(
            types
                .iter()
                .filter(|t| *t == "response.output_item.added")
                .count(),
            2
        );
        assert_eq!(types.last().map(String::as_str), Some("response.completed"));
    }

    #[test]
    fn done_without_chunks_still_completes() {
        let mut encoder = ResponsesStreamEncoder::new(ResponsesEcho {
            model: "alias".into(),
            ..ResponsesEcho::default()
        });
        let mut out = BytesMut::new();
        encoder.done(&mut out);
        encoder.error(&LlmError::bad_gateway("late"), &mut out);
        assert_eq!(
            event_types(&out),
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains(r#""model":"alias""#), "{text}");
    }

    #[test]
    fn stream_usage_is_reported_for_accounting() {
        let mut encoder = ResponsesStreamEncoder::new(ResponsesEcho::default());
        let mut out = BytesMut::new();
        encoder.chunk(
            &ChatChunk {
                id: "c".into(),
                usage: Some(Usage::new(3, 4)),
                ..ChatChunk::default()
            },
            &mut out,
        );
        assert_eq!(encoder.usage(), Some(Usage::new(3, 4)));
    }
}
