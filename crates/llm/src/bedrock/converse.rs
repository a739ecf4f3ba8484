//! Converse translation: canonical request → Converse body and path;
//! Converse response and error bodies → canonical.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{WireUsage, map_stop_reason};
use crate::canonical::{
    ChatRequest, ChatResponse, Choice, Content, ContentPart, FunctionCall, ImageUrl, Message, Role,
    Thinking, ToolCall, ToolChoice,
};
use crate::error::{ErrorKind, LlmError};
use crate::openai::budget_for_effort;

/// RFC 3986 unreserved characters stay; everything else in a model id (`:`
/// in versioned ids, `/` in ARNs) is escaped so the id is one path segment.
const MODEL_ID: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Bedrock-only top-level fields a client may send in `extra`; passed through.
const PASSTHROUGH: &[&str] = &[
    "guardrailConfig",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
    "promptVariables",
    "serviceTier",
];

/// `/model/{modelId}/converse` or `/model/{modelId}/converse-stream`.
pub fn request_path(model: &str, stream: bool) -> String {
    let id = utf8_percent_encode(model, MODEL_ID);
    if stream {
        format!("/model/{id}/converse-stream")
    } else {
        format!("/model/{id}/converse")
    }
}

/// The Converse / ConverseStream body (the model rides in the path).
pub fn request_body(request: &ChatRequest) -> Result<Vec<u8>, LlmError> {
    if request.n.is_some_and(|n| n > 1) {
        return Err(LlmError::invalid_request(
            "Bedrock Converse returns a single choice; n > 1 is not supported",
        )
        .with_param("n"));
    }
    let mut body = Map::new();

    // Prompt-cache markers (Anthropic `cache_control` on a text part) become
    // Converse `cachePoint` blocks right after the text they close.
    let mut system: Vec<Value> = Vec::new();
    for message in request.messages.iter().filter(|m| m.role.is_system()) {
        match &message.content {
            Some(Content::Parts(parts)) => {
                for part in parts {
                    if let ContentPart::Text { text, extra } = part
                        && !text.is_empty()
                    {
                        system.push(json!({ "text": text }));
                        if extra.contains_key("cache_control") {
                            system.push(cache_point());
                        }
                    }
                }
            }
            Some(content) => {
                let text = content.text();
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
            }
            None => {}
        }
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }

    let messages = messages(&request.messages)?;
    let history_has_tools = messages.iter().any(|m| {
        m["content"].as_array().is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some())
        })
    });
    body.insert("messages".into(), Value::Array(messages));

    let mut inference = Map::new();
    if let Some(max) = request.max_output_tokens() {
        inference.insert("maxTokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if let Some(stop) = &request.stop {
        let stops = stop.to_vec();
        if !stops.is_empty() {
            inference.insert("stopSequences".into(), json!(stops));
        }
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }

    if let Some(tool_config) = tool_config(request, history_has_tools)? {
        body.insert("toolConfig".into(), tool_config);
    }

    // Model-specific fields, in the shape Anthropic models on Bedrock take.
    let mut additional = match request.extra.get("additionalModelRequestFields") {
        Some(Value::Object(fields)) => fields.clone(),
        _ => Map::new(),
    };
    let budget = request.thinking_budget.or_else(|| {
        request
            .reasoning_effort
            .as_deref()
            .and_then(budget_for_effort)
    });
    if let Some(budget) = budget {
        additional.insert(
            "thinking".into(),
            json!({ "type": "enabled", "budget_tokens": budget }),
        );
    }
    if let Some(top_k) = request.top_k {
        additional.insert("top_k".into(), json!(top_k));
    }
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }

    if let Some(format) = &request.response_format
        && format.kind == "json_schema"
    {
        let schema = format.json_schema.as_ref().ok_or_else(|| {
            LlmError::invalid_request("response_format json_schema needs a json_schema object")
                .with_param("response_format")
        })?;
        let text = schema
            .schema
            .as_ref()
            .map_or_else(|| "{}".to_string(), Value::to_string);
        let mut definition = json!({ "schema": text, "name": schema.name });
        if let Some(description) = &schema.description {
            definition["description"] = json!(description);
        }
        body.insert(
            "outputConfig".into(),
            json!({ "textFormat": { "type": "json_schema", "structure": { "jsonSchema": definition } } }),
        );
    }

    for key in PASSTHROUGH {
        if let Some(value) = request.extra.get(*key) {
            body.insert((*key).into(), value.clone());
        }
    }

    serde_json::to_vec(&Value::Object(body))
        .map_err(|e| LlmError::invalid_request(format!("request cannot be serialized: {e}")))
}

/// Canonical messages → Converse turns. System messages were hoisted; tool
/// results become user turns; same-role neighbours are merged because
/// Bedrock requires user/assistant alternation.
fn messages(messages: &[Message]) -> Result<Vec<Value>, LlmError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let param = || format!("messages[{index}]");
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => continue,
            Role::User => (
                "user",
                user_blocks(message).map_err(|e| e.with_param(param()))?,
            ),
            Role::Assistant => (
                "assistant",
                assistant_blocks(message).map_err(|e| e.with_param(param()))?,
            ),
            Role::Tool | Role::Function => (
                "user",
                vec![tool_result(message).map_err(|e| e.with_param(param()))?],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect())
}

/// A Converse prompt-cache checkpoint: everything before it may be cached.
fn cache_point() -> Value {
    json!({ "cachePoint": { "type": "default" } })
}

fn user_blocks(message: &Message) -> Result<Vec<Value>, LlmError> {
    let Some(content) = &message.content else {
        return Ok(Vec::new());
    };
    let mut blocks = Vec::new();
    for part in content.parts() {
        match part {
            ContentPart::Text { text, extra } => {
                if !text.is_empty() {
                    blocks.push(json!({ "text": text }));
                    if extra.contains_key("cache_control") {
                        blocks.push(cache_point());
                    }
                }
            }
            ContentPart::ImageUrl { image_url } => blocks.push(image_block(&image_url)?),
            ContentPart::File { file } => blocks.push(document_block(&file)?),
            ContentPart::InputAudio { .. } => {
                return Err(LlmError::invalid_request(
                    "Bedrock Converse does not take audio input",
                ));
            }
            ContentPart::Other(_) => {
                return Err(LlmError::invalid_request(
                    "content part type not supported by Bedrock Converse",
                ));
            }
        }
    }
    Ok(blocks)
}

/// `{image: {format, source: {bytes}}}`; only data URLs: Bedrock reads
/// images from the request bytes or S3, never from a URL.
fn image_block(image: &ImageUrl) -> Result<Value, LlmError> {
    let Some((media_type, data)) = image.as_data() else {
        return Err(LlmError::invalid_request(
            "Bedrock takes images as base64 data or from S3, not by URL: send a data: URL",
        ));
    };
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(LlmError::invalid_request(format!(
                "image type {other} not supported by Bedrock (png, jpeg, gif, webp)"
            )));
        }
    };
    Ok(json!({ "image": { "format": format, "source": { "bytes": data } } }))
}

/// OpenAI `file` part with inline `file_data` → Converse `document` block.
fn document_block(file: &Value) -> Result<Value, LlmError> {
    let data = file.get("file_data").and_then(Value::as_str);
    let Some((media_type, bytes)) = data.and_then(|d| {
        d.strip_prefix("data:")
            .and_then(|rest| rest.split_once(";base64,"))
    }) else {
        return Err(LlmError::invalid_request(
            "Bedrock takes files as inline base64 file_data (a data: URL)",
        ));
    };
    let format = match media_type.to_ascii_lowercase().as_str() {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        other => {
            return Err(LlmError::invalid_request(format!(
                "document type {other} not supported by Bedrock"
            )));
        }
    };
    // Bedrock restricts document names; keep the allowed characters only
    // (letters, digits, single spaces, hyphens, parentheses, brackets).
    let filename = file
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("document");
    let stem = filename.rsplit_once('.').map_or(filename, |(stem, _)| stem);
    let mut name = String::new();
    for c in stem.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') {
            c
        } else if c.is_whitespace() {
            ' '
        } else {
            '-'
        };
        if !(c == ' ' && name.ends_with(' ')) {
            name.push(c);
        }
    }
    let name = match name.trim() {
        "" => "document".to_string(),
        trimmed => trimmed.to_string(),
    };
    Ok(json!({ "document": { "format": format, "name": name, "source": { "bytes": bytes } } }))
}

fn assistant_blocks(message: &Message) -> Result<Vec<Value>, LlmError> {
    let mut blocks = Vec::new();
    for thinking in &message.thinking {
        if let Some(redacted) = &thinking.redacted_data {
            blocks.push(json!({ "reasoningContent": { "redactedContent": redacted } }));
        } else {
            let mut text = json!({ "text": thinking.text });
            if let Some(signature) = &thinking.signature {
                text["signature"] = json!(signature);
            }
            blocks.push(json!({ "reasoningContent": { "reasoningText": text } }));
        }
    }
    if let Some(content) = &message.content {
        let text = content.text();
        if !text.is_empty() {
            blocks.push(json!({ "text": text }));
        }
    }
    for call in message.tool_calls.iter().flatten() {
        let arguments = call.function.arguments.trim();
        let input: Value = if arguments.is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|e| {
                LlmError::invalid_request(format!(
                    "tool call {} has arguments that are not valid JSON: {e}",
                    call.id
                ))
            })?
        };
        blocks.push(json!({
            "toolUse": { "toolUseId": call.id, "name": call.function.name, "input": input }
        }));
    }
    Ok(blocks)
}

/// A `tool` message → `toolResult`. A JSON object result goes as `{json}`
/// (Bedrock's structured form), anything else as `{text}`; `is_error: true`
/// in the message's extra fields sets `status: error`.
fn tool_result(message: &Message) -> Result<Value, LlmError> {
    let id = message
        .tool_call_id
        .as_ref()
        .or(message.name.as_ref())
        .ok_or_else(|| LlmError::invalid_request("tool message without tool_call_id"))?;
    let mut content = Vec::new();
    match &message.content {
        Some(Content::Text(text)) => content.push(tool_text(text)),
        Some(Content::Parts(parts)) => {
            for part in parts {
                match part {
                    ContentPart::Text { text, .. } => content.push(tool_text(text)),
                    ContentPart::ImageUrl { image_url } => content.push(image_block(image_url)?),
                    _ => {
                        return Err(LlmError::invalid_request(
                            "tool results take text and images only on Bedrock",
                        ));
                    }
                }
            }
        }
        None => {}
    }
    if content.is_empty() {
        content.push(json!({ "text": "" }));
    }
    let mut result = json!({ "toolUseId": id, "content": content });
    if message.extra.get("is_error") == Some(&Value::Bool(true)) {
        result["status"] = json!("error");
    }
    Ok(json!({ "toolResult": result }))
}

fn tool_text(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => json!({ "json": value }),
        _ => json!({ "text": text }),
    }
}

/// `toolConfig`. Converse cannot forbid tool use, so `tool_choice: "none"`
/// omits the tools; they are still sent (without a choice) when the history
/// holds tool blocks, because Bedrock rejects those without a toolConfig.
fn tool_config(request: &ChatRequest, history_has_tools: bool) -> Result<Option<Value>, LlmError> {
    let tools: Vec<Value> = request
        .tools
        .iter()
        .flatten()
        .filter_map(|tool| tool.function.as_ref())
        .map(|function| {
            let mut spec = json!({
                "name": function.name,
                "inputSchema": { "json": function.parameters.clone()
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} })) },
            });
            if let Some(description) = &function.description {
                spec["description"] = json!(description);
            }
            if let Some(strict) = function.strict {
                spec["strict"] = json!(strict);
            }
            json!({ "toolSpec": spec })
        })
        .collect();
    if tools.is_empty() {
        return Ok(None);
    }
    let choice = match &request.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => Some(json!({ "auto": {} })),
            "required" => Some(json!({ "any": {} })),
            "none" if history_has_tools => None,
            "none" => return Ok(None),
            other => {
                return Err(
                    LlmError::invalid_request(format!("unknown tool_choice {other:?}"))
                        .with_param("tool_choice"),
                );
            }
        },
        Some(ToolChoice::Named(named)) => {
            let name = named.function.as_ref().ok_or_else(|| {
                LlmError::invalid_request("tool_choice names no function").with_param("tool_choice")
            })?;
            Some(json!({ "tool": { "name": name.name } }))
        }
    };
    let mut config = json!({ "tools": tools });
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

// ---------------------------------------------------------------------------
// Responses.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    output: WireOutput,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    additional_model_response_fields: Option<Value>,
}

#[derive(Deserialize)]
struct WireOutput {
    #[serde(default)]
    message: Option<WireMessage>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Vec<Value>,
}

/// A Converse response → canonical. Converse has no response id, so one is
/// derived from the body: the same answer always gets the same id.
pub fn parse_response(body: &[u8], model: &str) -> Result<ChatResponse, LlmError> {
    let wire: WireResponse = serde_json::from_slice(body).map_err(|e| {
        LlmError::bad_gateway(format!("Bedrock sent an unreadable Converse response: {e}"))
    })?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut thinking = Vec::new();
    for block in wire.output.message.map(|m| m.content).unwrap_or_default() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            let field = |name: &str| tool.get(name).and_then(Value::as_str).unwrap_or_default();
            let arguments = tool
                .get("input")
                .map_or_else(|| "{}".to_string(), Value::to_string);
            tool_calls.push(ToolCall {
                id: field("toolUseId").to_string(),
                kind: "function".into(),
                function: FunctionCall {
                    name: field("name").to_string(),
                    arguments,
                },
            });
        } else if let Some(reasoning) = block.get("reasoningContent") {
            if let Some(r) = reasoning.get("reasoningText") {
                thinking.push(Thinking {
                    text: r
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    signature: r
                        .get("signature")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    redacted_data: None,
                });
            } else if let Some(data) = reasoning.get("redactedContent").and_then(Value::as_str) {
                thinking.push(Thinking {
                    redacted_data: Some(data.to_string()),
                    ..Thinking::default()
                });
            }
        }
    }
    let reasoning: String = thinking.iter().map(|t| t.text.as_str()).collect();
    let stop_sequence = wire
        .additional_model_response_fields
        .as_ref()
        .and_then(|f| f.get("stop_sequence"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (finish_reason, native_stop) = match wire.stop_reason.as_deref() {
        Some(reason) => {
            let (finish, native) = map_stop_reason(reason, stop_sequence);
            (Some(finish.to_string()), native)
        }
        None => (None, None),
    };
    let mut message = Message::new(Role::Assistant, text);
    if tool_calls.is_empty() {
        message.tool_calls = None;
    } else {
        if message
            .content
            .as_ref()
            .is_some_and(|c| c.text().is_empty())
        {
            message.content = None;
        }
        message.tool_calls = Some(tool_calls);
    }
    message.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
    message.thinking = thinking;
    Ok(ChatResponse {
        id: response_id(body),
        object: "chat.completion".into(),
        created: 0,
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason,
            logprobs: None,
        }],
        usage: wire.usage.map(WireUsage::to_canonical),
        extra: Map::new(),
        native_stop,
    })
}

/// `bedrock-` and 24 hex digits of the body's SHA-256.
pub(crate) fn response_id(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("bedrock-{}", hex::encode(&digest[..12]))
}

// ---------------------------------------------------------------------------
// Errors.

/// A Bedrock error → canonical. `error_type` is the `x-amzn-ErrorType`
/// header (`ValidationException:http://internal.amazon.com/...`); without
/// it the body's `__type` and then the status decide. The kind's own status
/// is used (Bedrock says 429 for ModelNotReady, 400 for quota errors), the
/// exception name goes in `code`, and Bedrock's message is kept.
pub fn parse_error(status: u16, error_type: Option<&str>, body: &[u8]) -> LlmError {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let message = value
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("Bedrock answered with status {status}"));
    let name = error_type
        .or_else(|| {
            value
                .as_ref()
                .and_then(|v| v.get("__type"))
                .and_then(Value::as_str)
        })
        .map(exception_name)
        .filter(|n| !n.is_empty());
    let kind = name
        .as_deref()
        .and_then(kind_for_exception)
        .unwrap_or_else(|| ErrorKind::from_status(status));
    let error = LlmError::new(kind, message);
    match name {
        Some(name) => error.with_code(name),
        None => error.with_status(status),
    }
}

/// `ValidationException:http://...` or `com.amazon...#ValidationException`
/// → `ValidationException`.
fn exception_name(raw: &str) -> String {
    let name = raw.split(':').next().unwrap_or(raw);
    let name = name.rsplit('#').next().unwrap_or(name);
    name.trim().to_string()
}

/// Bedrock's exception names (REST headers and stream `:exception-type`,
/// which is lowerCamel) → kinds.
pub(crate) fn kind_for_exception(name: &str) -> Option<ErrorKind> {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix("exception").unwrap_or(&lower);
    Some(match base {
        "validation" | "serialization" => ErrorKind::InvalidRequest,
        "accessdenied" => ErrorKind::PermissionDenied,
        "unrecognizedclient"
        | "expiredtoken"
        | "invalidsignature"
        | "missingauthenticationtoken"
        | "incompletesignature" => ErrorKind::Authentication,
        "resourcenotfound" => ErrorKind::NotFound,
        "throttling" | "servicequotaexceeded" | "toomanyrequests" => ErrorKind::RateLimit,
        "modelnotready" | "serviceunavailable" => ErrorKind::Overloaded,
        "modeltimeout" => ErrorKind::Timeout,
        "internalserver" | "internalfailure" => ErrorKind::Api,
        "modelerror" | "modelstreamerror" => ErrorKind::BadGateway,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai;

    fn request(json: &str) -> ChatRequest {
        openai::parse_request(json.as_bytes()).unwrap()
    }

    #[test]
    fn paths_escape_model_ids() {
        assert_eq!(
            request_path("anthropic.claude-3-5-sonnet-20240620-v1:0", false),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(
            request_path(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude",
                true
            ),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude/converse-stream"
        );
    }

    #[test]
    fn http_images_and_bad_arguments_are_refused() {
        let r = request(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]}"#,
        );
        let error = request_body(&r).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert!(error.message.contains("not by URL"), "{}", error.message);

        let r = request(
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
        );
        assert_eq!(
            request_body(&r).unwrap_err().kind,
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn n_above_one_is_refused() {
        let r = request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#);
        assert_eq!(request_body(&r).unwrap_err().param.as_deref(), Some("n"));
    }

    #[test]
    fn tool_choice_none_omits_tools_unless_history_has_tool_blocks() {
        let tools = r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"none""#;
        let plain = request(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{tools}}}"#
        ));
        let body: Value = serde_json::from_slice(&request_body(&plain).unwrap()).unwrap();
        assert!(body.get("toolConfig").is_none());
        let history = request(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}},{{"role":"assistant","tool_calls":[{{"id":"t","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"t","content":"ok"}}],{tools}}}"#
        ));
        let body: Value = serde_json::from_slice(&request_body(&history).unwrap()).unwrap();
        assert!(body["toolConfig"]["tools"].is_array());
        assert!(body["toolConfig"].get("toolChoice").is_none());
    }

    #[test]
    fn response_ids_are_deterministic() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn"}"#;
        let a = parse_response(body, "m").unwrap();
        let b = parse_response(body, "m").unwrap();
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("bedrock-"));
        assert!(parse_response(b"{}", "m").is_err());
        assert!(parse_response(b"\xff", "m").is_err());
    }

    #[test]
    fn errors_map_by_header_then_body_then_status() {
        let e = parse_error(
            400,
            Some("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"Malformed input request"}"#,
        );
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert_eq!(e.code.as_deref(), Some("ValidationException"));
        assert_eq!(e.message, "Malformed input request");
        let e = parse_error(403, None, br#"{"Message":"The security token included in the request is invalid.","__type":"com.amazon.coral.service#UnrecognizedClientException"}"#);
        assert_eq!(e.kind, ErrorKind::Authentication);
        let e = parse_error(502, None, b"not json");
        assert_eq!(e.kind, ErrorKind::BadGateway);
        assert_eq!(e.status, 502);
    }
}
