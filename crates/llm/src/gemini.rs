//! Google Gemini (Generative Language API, v1beta) as a provider format:
//! `POST {base}/models/{model}:generateContent` and
//! `POST {base}/models/{model}:streamGenerateContent?alt=sse`.
//!
//! Request choices worth knowing:
//! * system/developer messages (wherever they are) become `systemInstruction`;
//!   Gemini has no system role inside `contents`.
//! * tool parameters go out as `parametersJsonSchema`, not `parameters`:
//!   clients send full JSON Schema (`additionalProperties`, `$ref`, `anyOf`,
//!   `const`, ...), which the OpenAPI-subset `parameters` field rejects with a
//!   400, while `parametersJsonSchema` takes it as is. The same goes for
//!   `responseJsonSchema` over `responseSchema`.
//! * tool results need the function *name*: it is recovered from the latest
//!   earlier assistant call with the same id (or the message's `name`).
//!   Call ids are not sent: Gemini pairs calls and results by order and name.
//! * thought signatures: Gemini wants each back on the part it came with,
//!   which is the first `functionCall` of a step, or the last part of a reply
//!   without calls. Canonical keeps them in `Message::thinking` without the
//!   part, so the last signature of an assistant message goes on its first
//!   function call, else on its last part. A first function call with no
//!   signature (history from another provider, or hand-written) carries
//!   Google's documented `skip_thought_signature_validator`, without which
//!   Gemini 3 answers 400. Thought *text* is not sent back: it is a summary
//!   for the reader, the signature is what carries the reasoning.
//! * thinking: `thinking_budget` wins, else `reasoning_effort` through
//!   [`crate::openai::budget_for_effort`] (`"none"` is a budget of 0, which
//!   also turns thought summaries off).
//!
//! Dropped on purpose (no Gemini equivalent, or nothing here to read them
//! back): `parallel_tool_calls`, `user`, `stream_options` (usage is always
//! streamed), `logprobs`/`top_logprobs`, `logit_bias`, `store`, `metadata`,
//! `service_tier`, `prediction`, `modalities`/`audio`, image `detail`,
//! message `name` on user/assistant turns, assistant `reasoning_content` (see
//! signatures above), non-text parts of tool results (Gemini takes results
//! as JSON), text part extras such as `cache_control`, function `strict` and
//! the json_schema `name`, `strict` and `description` (Gemini always follows
//! a given schema), and any other unknown top-level field. An assistant
//! `refusal` is kept, as the model's text; `presence_penalty` and
//! `frequency_penalty` are mapped from `extra`.
//!
//! Response choices: a prompt blocked before generation (`promptFeedback.
//! blockReason`, no candidates) is a normal `content_filter` answer, as OpenAI
//! reports its own filtering, not an error: retrying elsewhere would be the
//! gateway's policy decision, not the parser's. Gemini has no creation time,
//! so `created` is 0; `id` is `responseId`. Output parts other than text,
//! thoughts and function calls (generated images, code execution) are
//! ignored: nothing Tollgate sends asks for them. A thought signature on an
//! answer part (text or function call) belongs to the thinking before it:
//! parsed, it becomes that thinking block's signature (or a block of its own
//! with empty text); streamed, a chunk with only `thinking_signature`, sent
//! before the part.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, CompletionTokensDetails, Content,
    ContentPart, Delta, Extra, FunctionCall, FunctionCallDelta, ImageUrl, Message, NativeStop,
    PromptTokensDetails, ResponseFormat, Role, Thinking, Tool, ToolCall, ToolCallDelta, ToolChoice,
    Usage, finish,
};
use crate::error::{ErrorKind, LlmError};
use crate::openai::budget_for_effort;
use crate::sse;
use crate::stream::{ChunkSink, StreamDecoder, StreamItem};

/// Google's documented placeholder for a function call whose signature was
/// never issued by Gemini (history from elsewhere).
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

// ---------------------------------------------------------------------------
// Request.

/// The path under the API base (`.../v1beta`). A `models/` prefix is accepted;
/// the rest is percent-encoded so a model name cannot change the path.
pub fn request_path(model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let mut path = String::with_capacity(model.len() + 40);
    path.push_str("/models/");
    for byte in model.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push_str(if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    });
    path
}

/// The `GenerateContentRequest` body. `model` is in the path, not here; it is
/// taken for symmetry with the other provider formats.
pub fn request_body(request: &ChatRequest, _model: &str) -> Result<Vec<u8>, LlmError> {
    let mut body = Map::new();
    if let Some(system) = system_instruction(request)? {
        body.insert("systemInstruction".into(), system);
    }
    body.insert(
        "contents".into(),
        Value::Array(contents(&request.messages)?),
    );
    if let Some(tools) = request.tools.as_deref().filter(|t| !t.is_empty()) {
        body.insert("tools".into(), tool_declarations(tools)?);
    }
    if let Some(choice) = &request.tool_choice {
        body.insert("toolConfig".into(), tool_config(choice)?);
    }
    let config = generation_config(request)?;
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    serde_json::to_vec(&Value::Object(body))
        .map_err(|e| LlmError::invalid_request(format!("cannot encode Gemini request: {e}")))
}

fn system_instruction(request: &ChatRequest) -> Result<Option<Value>, LlmError> {
    let mut parts = Vec::new();
    for message in request.messages.iter().filter(|m| m.role.is_system()) {
        for part in message.content.iter().flat_map(Content::parts) {
            match part {
                ContentPart::Text { text, .. } if !text.is_empty() => {
                    parts.push(json!({ "text": text }))
                }
                ContentPart::Text { .. } => {}
                _ => {
                    return Err(LlmError::invalid_request(
                        "Gemini system instructions take text only",
                    )
                    .with_param("messages"));
                }
            }
        }
    }
    Ok((!parts.is_empty()).then(|| json!({ "parts": parts })))
}

/// `contents`: user/model turns, consecutive turns of one role merged
/// (Gemini wants them alternating; tool results are user turns).
fn contents(messages: &[Message]) -> Result<Vec<Value>, LlmError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in messages {
        let (role, parts) = match message.role {
            Role::System | Role::Developer => continue,
            Role::User => ("user", content_parts(message.content.as_ref())?),
            Role::Assistant => {
                for call in message.tool_calls.iter().flatten() {
                    call_names.insert(&call.id, &call.function.name);
                }
                ("model", model_parts(message)?)
            }
            Role::Tool | Role::Function => {
                let name = message
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied())
                    .or(message.name.as_deref())
                    .ok_or_else(|| {
                        LlmError::invalid_request(format!(
                            "tool message answers unknown tool_call_id {:?}: Gemini needs the function name",
                            message.tool_call_id.as_deref().unwrap_or("")
                        ))
                        .with_param("messages")
                    })?;
                let text = message
                    .content
                    .as_ref()
                    .map(Content::text)
                    .unwrap_or_default();
                let part = json!({
                    "functionResponse": { "name": name, "response": tool_response(&text) }
                });
                ("user", vec![part])
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect())
}

/// A tool result as the object Gemini requires: JSON objects as they are,
/// anything else (other JSON, plain text) under `result`.
fn tool_response(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Value::Object(object),
        Ok(other) => json!({ "result": other }),
        Err(_) => json!({ "result": text }),
    }
}

fn model_parts(message: &Message) -> Result<Vec<Value>, LlmError> {
    let signature = message
        .thinking
        .iter()
        .rev()
        .filter(|t| t.redacted_data.is_none())
        .find_map(|t| t.signature.as_deref().filter(|s| !s.is_empty()));
    let mut parts = content_parts(message.content.as_ref())?;
    if parts.is_empty()
        && let Some(refusal) = message.refusal.as_deref().filter(|r| !r.is_empty())
    {
        parts.push(json!({ "text": refusal }));
    }
    let calls = message.tool_calls.as_deref().unwrap_or_default();
    for (i, call) in calls.iter().enumerate() {
        let mut part = Map::new();
        part.insert(
            "functionCall".into(),
            json!({ "name": call.function.name, "args": call_arguments(&call.function.arguments)? }),
        );
        if i == 0 {
            part.insert(
                "thoughtSignature".into(),
                signature.unwrap_or(SKIP_SIGNATURE).into(),
            );
        }
        parts.push(Value::Object(part));
    }
    if calls.is_empty()
        && let (Some(signature), Some(Value::Object(last))) = (signature, parts.last_mut())
    {
        last.insert("thoughtSignature".into(), signature.into());
    }
    Ok(parts)
}

/// OpenAI arguments are JSON text; Gemini `args` is an object.
fn call_arguments(arguments: &str) -> Result<Value, LlmError> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(object)) => Ok(Value::Object(object)),
        Ok(Value::Null) => Ok(json!({})),
        Ok(_) => Err(
            LlmError::invalid_request("tool call arguments must be a JSON object")
                .with_param("messages"),
        ),
        Err(e) => Err(LlmError::invalid_request(format!(
            "tool call arguments are not valid JSON: {e}"
        ))
        .with_param("messages")),
    }
}

fn content_parts(content: Option<&Content>) -> Result<Vec<Value>, LlmError> {
    let Some(content) = content else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::new();
    for part in content.parts() {
        match part {
            ContentPart::Text { text, .. } => {
                if !text.is_empty() {
                    parts.push(json!({ "text": text }));
                }
            }
            ContentPart::ImageUrl { image_url } => parts.push(image_part(&image_url)?),
            ContentPart::InputAudio { input_audio } => {
                let data = input_audio.get("data").and_then(Value::as_str);
                let format = input_audio.get("format").and_then(Value::as_str);
                let (Some(data), Some(format)) = (data, format) else {
                    return Err(
                        LlmError::invalid_request("input_audio needs data and format")
                            .with_param("messages"),
                    );
                };
                parts.push(json!({
                    "inlineData": { "mimeType": format!("audio/{format}"), "data": data }
                }));
            }
            ContentPart::File { file } => {
                let data = file
                    .get("file_data")
                    .and_then(Value::as_str)
                    .map(|url| ImageUrl {
                        url: url.to_string(),
                        detail: None,
                    });
                let Some((mime, data)) = data.as_ref().and_then(ImageUrl::as_data) else {
                    return Err(LlmError::invalid_request(
                        "Gemini takes files as base64 data URLs in file_data (file_id is not supported)",
                    )
                    .with_param("messages"));
                };
                parts.push(json!({ "inlineData": { "mimeType": mime, "data": data } }));
            }
            // What the assistant said when it refused is still what it said.
            ContentPart::Other(value)
                if value.get("type").and_then(Value::as_str) == Some("refusal") =>
            {
                if let Some(text) = value
                    .get("refusal")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    parts.push(json!({ "text": text }));
                }
            }
            ContentPart::Other(value) => {
                let kind = value.get("type").and_then(Value::as_str).unwrap_or("?");
                return Err(LlmError::invalid_request(format!(
                    "content part type {kind:?} cannot be sent to Gemini"
                ))
                .with_param("messages"));
            }
        }
    }
    Ok(parts)
}

fn image_part(image: &ImageUrl) -> Result<Value, LlmError> {
    if let Some((mime, data)) = image.as_data() {
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    let url = image.url.as_str();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(LlmError::invalid_request(
            "image_url must be a base64 data URL or an http(s) URL",
        )
        .with_param("messages"));
    }
    let mime = mime_from_extension(url).ok_or_else(|| {
        LlmError::invalid_request(format!(
            "cannot tell the media type of {url:?} from its extension (Gemini fileData needs one); send it as a data URL"
        ))
        .with_param("messages")
    })?;
    Ok(json!({ "fileData": { "mimeType": mime, "fileUri": url } }))
}

/// Gemini's `fileData` needs a media type and the URL is all there is.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "flac" => "audio/flac",
        "aac" => "audio/aac",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "mov" => "video/mov",
        "webm" => "video/webm",
        "txt" => "text/plain",
        _ => return None,
    })
}

fn tool_declarations(tools: &[Tool]) -> Result<Value, LlmError> {
    let mut declarations = Vec::with_capacity(tools.len());
    for tool in tools {
        let function = match (&tool.function, tool.kind.as_str()) {
            (Some(function), "function") => function,
            _ => {
                return Err(LlmError::invalid_request(format!(
                    "tool type {:?} cannot be sent to Gemini (function tools only)",
                    tool.kind
                ))
                .with_param("tools"));
            }
        };
        let mut declaration = Map::new();
        declaration.insert("name".into(), function.name.clone().into());
        if let Some(description) = &function.description {
            declaration.insert("description".into(), description.clone().into());
        }
        if let Some(parameters) = &function.parameters {
            declaration.insert("parametersJsonSchema".into(), parameters.clone());
        }
        declarations.push(Value::Object(declaration));
    }
    Ok(json!([{ "functionDeclarations": declarations }]))
}

fn tool_config(choice: &ToolChoice) -> Result<Value, LlmError> {
    let config = match choice {
        ToolChoice::Mode(mode) => {
            let mode = match mode.as_str() {
                "none" => "NONE",
                "auto" => "AUTO",
                "required" => "ANY",
                other => {
                    return Err(LlmError::invalid_request(format!(
                        "unknown tool_choice {other:?}"
                    ))
                    .with_param("tool_choice"));
                }
            };
            json!({ "mode": mode })
        }
        ToolChoice::Named(named) => {
            let Some(function) = &named.function else {
                return Err(LlmError::invalid_request(format!(
                    "tool_choice type {:?} cannot be sent to Gemini",
                    named.kind
                ))
                .with_param("tool_choice"));
            };
            json!({ "mode": "ANY", "allowedFunctionNames": [function.name] })
        }
    };
    Ok(json!({ "functionCallingConfig": config }))
}

fn generation_config(request: &ChatRequest) -> Result<Map<String, Value>, LlmError> {
    let mut config = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            config.insert(key.into(), value);
        }
    };
    put("temperature", request.temperature.map(Value::from));
    put("topP", request.top_p.map(Value::from));
    put("topK", request.top_k.map(Value::from));
    put(
        "maxOutputTokens",
        request.max_output_tokens().map(Value::from),
    );
    put(
        "stopSequences",
        request
            .stop
            .as_ref()
            .map(|s| s.to_vec())
            .filter(|s| !s.is_empty())
            .map(Value::from),
    );
    put("candidateCount", request.n.map(Value::from));
    put("seed", request.seed.map(Value::from));
    for (from, to) in [
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        put(
            to,
            request.extra.get(from).filter(|v| v.is_number()).cloned(),
        );
    }
    if let Some(format) = &request.response_format {
        let (mime, schema) = response_format(format)?;
        put("responseMimeType", mime.map(Value::from));
        put("responseJsonSchema", schema);
    }
    let budget = match (request.thinking_budget, request.reasoning_effort.as_deref()) {
        (Some(budget), _) => Some(budget),
        (None, Some("none")) => Some(0),
        (None, Some(effort)) => Some(budget_for_effort(effort).ok_or_else(|| {
            LlmError::invalid_request(format!("unknown reasoning_effort {effort:?}"))
                .with_param("reasoning_effort")
        })?),
        (None, None) => None,
    };
    put(
        "thinkingConfig",
        budget.map(|budget| {
            if budget == 0 {
                json!({ "thinkingBudget": 0 })
            } else {
                json!({ "thinkingBudget": budget, "includeThoughts": true })
            }
        }),
    );
    Ok(config)
}

fn response_format(format: &ResponseFormat) -> Result<(Option<&str>, Option<Value>), LlmError> {
    match format.kind.as_str() {
        "text" => Ok((None, None)),
        "json_object" => Ok((Some("application/json"), None)),
        "json_schema" => Ok((
            Some("application/json"),
            format.json_schema.as_ref().and_then(|s| s.schema.clone()),
        )),
        other => Err(
            LlmError::invalid_request(format!("unknown response_format type {other:?}"))
                .with_param("response_format"),
        ),
    }
}

// ---------------------------------------------------------------------------
// Response.

/// The parts of `GenerateContentResponse` translated; the rest (safety
/// ratings, citations, grounding) is ignored. `null` lists read as empty.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GenerateContentResponse {
    candidates: Option<Vec<Candidate>>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    response_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Candidate {
    content: Option<CandidateContent>,
    finish_reason: Option<String>,
    index: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CandidateContent {
    parts: Option<Vec<Part>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Part {
    text: Option<String>,
    thought: Option<bool>,
    thought_signature: Option<String>,
    function_call: Option<PartFunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PartFunctionCall {
    id: Option<String>,
    name: String,
    args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct UsageMetadata {
    prompt_token_count: u64,
    cached_content_token_count: Option<u64>,
    candidates_token_count: u64,
    thoughts_token_count: Option<u64>,
}

impl UsageMetadata {
    /// Thought tokens are billed as output, so they count as completion
    /// tokens, as OpenAI counts its reasoning tokens.
    fn usage(&self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        // Built by hand: `Usage::new` adds unchecked, and these are untrusted.
        let completion = self.candidates_token_count.saturating_add(thoughts);
        let mut usage = Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: completion,
            total_tokens: self.prompt_token_count.saturating_add(completion),
            ..Usage::default()
        };
        if let Some(cached) = self.cached_content_token_count {
            usage.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: cached,
                cache_creation_tokens: 0,
            });
        }
        if let Some(thoughts) = self.thoughts_token_count {
            usage.completion_tokens_details = Some(CompletionTokensDetails {
                reasoning_tokens: thoughts,
            });
        }
        usage
    }
}

impl Part {
    fn is_thought(&self) -> bool {
        self.thought == Some(true)
    }

    fn signature(&self) -> Option<&str> {
        self.thought_signature.as_deref().filter(|s| !s.is_empty())
    }
}

impl PartFunctionCall {
    fn arguments(&self) -> String {
        match &self.args {
            Some(args) => args.to_string(),
            None => "{}".into(),
        }
    }
}

/// Gemini's finish reasons in OpenAI's words. STOP with function calls is
/// `tool_calls` (Gemini has no reason of its own for it). Everything that
/// withholds output for policy reasons is `content_filter`; the rest
/// (`OTHER`, `MALFORMED_FUNCTION_CALL`, `UNEXPECTED_TOOL_CALL`,
/// `TOO_MANY_TOOL_CALLS`, `MISSING_THOUGHT_SIGNATURE`, unknown ones) has no
/// OpenAI word and is `stop`, the native reason kept in `native_stop`.
fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "STOP" if has_calls => finish::TOOL_CALLS,
        "STOP" => finish::STOP,
        "MAX_TOKENS" => finish::LENGTH,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => finish::CONTENT_FILTER,
        _ => finish::STOP,
    }
}

fn native_stop(reason: &str) -> NativeStop {
    NativeStop {
        reason: reason.to_string(),
        stop_sequence: None,
    }
}

/// Deterministic call ids, distinct across turns when Gemini gave a
/// `responseId` (Gemini's own call `id` wins when present).
fn call_id(call: &PartFunctionCall, response_id: &str, n: usize) -> String {
    match call.id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None if response_id.is_empty() => format!("call_{n}"),
        None => format!("call_{response_id}_{n}"),
    }
}

fn parse_body(body: &[u8]) -> Result<GenerateContentResponse, LlmError> {
    serde_json::from_slice(body)
        .map_err(|e| LlmError::bad_gateway(format!("Gemini sent an unreadable response: {e}")))
}

pub fn parse_response(body: &[u8], model: &str) -> Result<ChatResponse, LlmError> {
    let response = parse_body(body)?;
    let id = response.response_id.clone().unwrap_or_default();
    let mut choices = Vec::new();
    let mut native = None;
    for (position, candidate) in response.candidates.iter().flatten().enumerate() {
        let message = candidate_message(candidate, &id);
        let has_calls = message.tool_calls.is_some();
        let reason = candidate.finish_reason.as_deref();
        if native.is_none() {
            native = reason.map(native_stop);
        }
        choices.push(Choice {
            index: candidate.index.unwrap_or(position as u32),
            message,
            finish_reason: reason.map(|r| finish_reason(r, has_calls).to_string()),
            logprobs: None,
        });
    }
    if choices.is_empty()
        && let Some(block) = response
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
    {
        choices.push(Choice {
            index: 0,
            message: Message::new(Role::Assistant, ""),
            finish_reason: Some(finish::CONTENT_FILTER.into()),
            logprobs: None,
        });
        native = Some(native_stop(block));
    }
    Ok(ChatResponse {
        id,
        object: "chat.completion".into(),
        created: 0,
        model: response.model_version.unwrap_or_else(|| model.to_string()),
        choices,
        usage: response.usage_metadata.as_ref().map(UsageMetadata::usage),
        extra: Extra::new(),
        native_stop: native,
    })
}

fn candidate_message(candidate: &Candidate, response_id: &str) -> Message {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking = Vec::new();
    let mut calls = Vec::new();
    let parts = candidate
        .content
        .iter()
        .flat_map(|c| c.parts.iter().flatten());
    for part in parts {
        if let Some(call) = &part.function_call {
            calls.push(ToolCall {
                id: call_id(call, response_id, calls.len()),
                kind: "function".into(),
                function: FunctionCall {
                    name: call.name.clone(),
                    arguments: call.arguments(),
                },
            });
        } else if part.is_thought() {
            let piece = part.text.clone().unwrap_or_default();
            reasoning.push_str(&piece);
            thinking.push(Thinking {
                text: piece,
                signature: part.signature().map(str::to_string),
                redacted_data: None,
            });
            continue;
        } else if let Some(piece) = &part.text {
            text.push_str(piece);
        }
        // A signature on an answer part closes the thinking before it (one
        // block, as Anthropic-style clients expect); alone, it is a block.
        if let Some(signature) = part.signature() {
            match thinking.last_mut() {
                Some(block) if block.signature.is_none() => {
                    block.signature = Some(signature.to_string());
                }
                _ => thinking.push(Thinking {
                    text: String::new(),
                    signature: Some(signature.to_string()),
                    redacted_data: None,
                }),
            }
        }
    }
    let mut message = Message::new(Role::Assistant, text);
    if message
        .content
        .as_ref()
        .is_some_and(|c| c.text().is_empty())
        && !calls.is_empty()
    {
        message.content = None;
    }
    message.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
    message.tool_calls = (!calls.is_empty()).then_some(calls);
    message.thinking = thinking;
    message
}

// ---------------------------------------------------------------------------
// Errors.

/// A Gemini error body, `{"error":{"code","message","status","details"}}`,
/// sometimes wrapped in a one-element array. The kind comes from the gRPC
/// `status` string, else from the HTTP status; the message is kept.
pub fn parse_error(status: u16, body: &[u8]) -> LlmError {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let error = value.as_ref().and_then(|v| match v {
        Value::Array(items) => items.first().and_then(|i| i.get("error")),
        other => other.get("error"),
    });
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    // Errors inside a 200 stream carry their status only in `code`.
    let status = if status >= 400 {
        status
    } else {
        code.filter(|c| *c >= 400).unwrap_or(500)
    };
    let grpc = error.and_then(|e| e.get("status")).and_then(Value::as_str);
    let key_invalid = error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .is_some_and(|details| {
            details
                .iter()
                .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
        });
    let kind = if key_invalid {
        ErrorKind::Authentication
    } else {
        grpc.and_then(kind_for_grpc)
            .unwrap_or_else(|| ErrorKind::from_status(status))
    };
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("Gemini answered with status {status}"));
    let mut parsed = LlmError::new(kind, message).with_status(status);
    if let Some(grpc) = grpc {
        parsed = parsed.with_code(grpc);
    }
    parsed
}

fn kind_for_grpc(status: &str) -> Option<ErrorKind> {
    Some(match status {
        "INVALID_ARGUMENT"
        | "FAILED_PRECONDITION"
        | "OUT_OF_RANGE"
        | "ALREADY_EXISTS"
        | "UNIMPLEMENTED" => ErrorKind::InvalidRequest,
        "UNAUTHENTICATED" => ErrorKind::Authentication,
        "PERMISSION_DENIED" => ErrorKind::PermissionDenied,
        "NOT_FOUND" => ErrorKind::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorKind::RateLimit,
        "UNAVAILABLE" => ErrorKind::Overloaded,
        "DEADLINE_EXCEEDED" => ErrorKind::Timeout,
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" | "ABORTED" | "CANCELLED" => ErrorKind::Api,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Stream.

/// `streamGenerateContent?alt=sse`: every `data:` event is a whole
/// `GenerateContentResponse` holding the next parts. Gemini has no end
/// event, so the stream is complete when the body ends after a
/// `finishReason`; usage (cumulative on each event) goes out once, last.
pub struct GeminiStreamDecoder {
    model: String,
    parser: sse::Parser,
    events: Vec<sse::Event>,
    id: String,
    model_version: Option<String>,
    /// Per candidate index: whether the role went out, calls so far.
    candidates: HashMap<u32, CandidateState>,
    usage: Option<Usage>,
    finished: bool,
    /// An error event ended the stream; it is the stream's last word.
    failed: bool,
}

#[derive(Default)]
struct CandidateState {
    role_sent: bool,
    calls: u32,
}

impl GeminiStreamDecoder {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            parser: sse::Parser::default(),
            events: Vec::new(),
            id: String::new(),
            model_version: None,
            candidates: HashMap::new(),
            usage: None,
            finished: false,
            failed: false,
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: self
                .model_version
                .clone()
                .unwrap_or_else(|| self.model.clone()),
            choices,
            ..ChatChunk::default()
        }
    }

    fn drain(&mut self, out: &mut ChunkSink) -> Result<(), LlmError> {
        for event in std::mem::take(&mut self.events) {
            if self.failed {
                continue;
            }
            let value: Value = serde_json::from_str(&event.data).map_err(|e| {
                LlmError::bad_gateway(format!("Gemini sent an unreadable stream event: {e}"))
            })?;
            let is_error = match &value {
                Value::Array(items) => items.first().is_some_and(|i| i.get("error").is_some()),
                other => other.get("error").is_some(),
            };
            if is_error {
                self.failed = true;
                out.push(StreamItem::Error(parse_error(200, event.data.as_bytes())));
                continue;
            }
            let response: GenerateContentResponse = serde_json::from_value(value).map_err(|e| {
                LlmError::bad_gateway(format!("Gemini sent an unreadable stream event: {e}"))
            })?;
            self.event(response, out);
        }
        Ok(())
    }

    fn event(&mut self, response: GenerateContentResponse, out: &mut ChunkSink) {
        if self.id.is_empty()
            && let Some(id) = &response.response_id
        {
            self.id.clone_from(id);
        }
        if response.model_version.is_some() {
            self.model_version = response.model_version;
        }
        if let Some(usage) = &response.usage_metadata {
            self.usage = Some(usage.usage());
        }
        let candidates = response.candidates.unwrap_or_default();
        if candidates.is_empty()
            && let Some(block) = response.prompt_feedback.and_then(|f| f.block_reason)
        {
            let state = self.candidates.entry(0).or_default();
            let role = (!state.role_sent).then_some(Role::Assistant);
            state.role_sent = true;
            let mut chunk = self.chunk(vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    role,
                    ..Delta::default()
                },
                finish_reason: Some(finish::CONTENT_FILTER.into()),
                logprobs: None,
            }]);
            chunk.native_stop = Some(native_stop(&block));
            self.finished = true;
            out.push(StreamItem::Chunk(chunk));
            return;
        }
        for (position, candidate) in candidates.into_iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u32);
            let parts = candidate.content.and_then(|c| c.parts).unwrap_or_default();
            for part in parts {
                // The signature closes the thinking before this part, so it
                // goes out first, on its own.
                if let Some(signature) = part.signature() {
                    let delta = Delta {
                        thinking_signature: Some(signature.to_string()),
                        ..Delta::default()
                    };
                    out.push(StreamItem::Chunk(self.choice_chunk(index, delta, None)));
                }
                if let Some(delta) = self.part_delta(index, &part) {
                    out.push(StreamItem::Chunk(self.choice_chunk(index, delta, None)));
                }
            }
            if let Some(reason) = candidate.finish_reason {
                let calls = self.candidates.get(&index).is_some_and(|s| s.calls > 0);
                let finish = finish_reason(&reason, calls).to_string();
                let mut chunk = self.choice_chunk(index, Delta::default(), Some(finish));
                chunk.native_stop = Some(native_stop(&reason));
                self.finished = true;
                out.push(StreamItem::Chunk(chunk));
            }
        }
    }

    /// One part as a delta; `None` for a part with nothing to say.
    fn part_delta(&mut self, index: u32, part: &Part) -> Option<Delta> {
        let mut delta = Delta::default();
        if let Some(call) = &part.function_call {
            let state = self.candidates.entry(index).or_default();
            let n = state.calls;
            state.calls = state.calls.saturating_add(1);
            delta.tool_calls = Some(vec![ToolCallDelta {
                index: n,
                id: Some(call_id(call, &self.id, n as usize)),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta {
                    name: Some(call.name.clone()),
                    arguments: Some(call.arguments()),
                }),
            }]);
        } else if let Some(text) = part.text.as_ref().filter(|t| !t.is_empty()) {
            if part.is_thought() {
                delta.reasoning_content = Some(text.clone());
            } else {
                delta.content = Some(text.clone());
            }
        }
        let empty = delta.tool_calls.is_none()
            && delta.content.is_none()
            && delta.reasoning_content.is_none();
        (!empty).then_some(delta)
    }

    /// A chunk for one candidate; its first chunk carries the role.
    fn choice_chunk(&mut self, index: u32, mut delta: Delta, finish: Option<String>) -> ChatChunk {
        let state = self.candidates.entry(index).or_default();
        if !state.role_sent {
            state.role_sent = true;
            delta.role = Some(Role::Assistant);
        }
        self.chunk(vec![ChunkChoice {
            index,
            delta,
            finish_reason: finish,
            logprobs: None,
        }])
    }
}

impl StreamDecoder for GeminiStreamDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut ChunkSink) -> Result<(), LlmError> {
        self.parser.push(bytes, &mut self.events)?;
        self.drain(out)
    }

    fn finish(&mut self, out: &mut ChunkSink) -> Result<(), LlmError> {
        self.parser.finish(&mut self.events);
        self.drain(out)?;
        if self.failed {
            return Ok(());
        }
        if !self.finished {
            return Err(LlmError::bad_gateway(
                "Gemini stream ended before a finishReason (truncated)",
            ));
        }
        if let Some(usage) = self.usage.take() {
            let mut chunk = self.chunk(Vec::new());
            chunk.usage = Some(usage);
            out.push(StreamItem::Chunk(chunk));
        }
        out.push(StreamItem::Done);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> ChatRequest {
        serde_json::from_value(json).unwrap()
    }

    fn body(request: &ChatRequest) -> Value {
        serde_json::from_slice(&request_body(request, "gemini-2.5-flash").unwrap()).unwrap()
    }

    #[test]
    fn paths_encode_the_model() {
        assert_eq!(
            request_path("gemini-2.5-flash", false),
            "/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            request_path("models/gemini-2.5-pro", true),
            "/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            request_path("../x?y#z:w", false),
            "/models/..%2Fx%3Fy%23z%3Aw:generateContent"
        );
    }

    #[test]
    fn tool_results_need_a_known_call() {
        let req = request(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "nope", "content": "1"}
        ]}));
        let error = request_body(&req, "m").unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn bad_arguments_and_parts_are_refused() {
        for messages in [
            json!([{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]),
            json!([{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]),
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/image"}}]}]),
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}]}]),
            json!([{"role": "user", "content": [{"type": "future", "x": 1}]}]),
            json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]),
        ] {
            let req = request(json!({"model": "m", "messages": messages}));
            assert_eq!(
                request_body(&req, "m").unwrap_err().kind,
                ErrorKind::InvalidRequest,
                "{messages}"
            );
        }
        let req = request(json!({"model": "m", "messages": [], "reasoning_effort": "extreme"}));
        assert_eq!(
            request_body(&req, "m").unwrap_err().param.as_deref(),
            Some("reasoning_effort")
        );
    }

    #[test]
    fn signatures_go_back_where_gemini_wants_them() {
        let mut req = request(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "call"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "a", "content": "[1,2]"},
            {"role": "tool", "tool_call_id": "b", "content": "plain"}
        ]}));
        req.messages[1].thinking = vec![Thinking {
            text: "t".into(),
            signature: Some("SIG1".into()),
            redacted_data: None,
        }];
        let body = body(&req);
        let contents = body["contents"].as_array().unwrap();
        assert_eq!(contents[1]["parts"][0]["thoughtSignature"], "SIG1");
        assert_eq!(contents[3]["parts"][0]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(contents[3]["parts"][1].get("thoughtSignature").is_none());
        assert_eq!(
            contents[4]["parts"],
            json!([
                {"functionResponse": {"name": "f", "response": {"result": [1, 2]}}},
                {"functionResponse": {"name": "g", "response": {"result": "plain"}}}
            ])
        );
    }

    #[test]
    fn errors_map_status_strings_and_arrays() {
        let body =
            br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#;
        let error = parse_error(429, body);
        assert_eq!(error.kind, ErrorKind::RateLimit);
        assert_eq!(error.message, "Quota exceeded");
        assert_eq!(error.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        let garbage = parse_error(502, b"<html>");
        assert_eq!(garbage.kind, ErrorKind::BadGateway);
        assert_eq!(garbage.status, 502);
    }

    #[test]
    fn no_panic_on_odd_bodies() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"candidates\":null}",
            b"{\"candidates\":[{\"content\":{\"parts\":null}}]}",
            b"{\"candidates\":[{\"content\":{\"parts\":[{}]}}]}",
            b"{\"candidates\":[{}],\"usageMetadata\":{\"promptTokenCount\":18446744073709551615,\"candidatesTokenCount\":18446744073709551615,\"thoughtsTokenCount\":5}}",
        ] {
            let _ = parse_response(body, "m");
            let _ = parse_error(400, body);
            let mut decoder = GeminiStreamDecoder::new("m");
            let mut out = Vec::new();
            let mut event = b"data: ".to_vec();
            event.extend_from_slice(body);
            event.extend_from_slice(b"\n\n");
            let _ = decoder.push(&event, &mut out);
            let _ = decoder.finish(&mut out);
        }
    }

    #[test]
    fn truncated_stream_is_an_error_and_error_event_ends_it() {
        let mut decoder = GeminiStreamDecoder::new("m");
        let mut out = Vec::new();
        decoder
            .push(
                b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n",
                &mut out,
            )
            .unwrap();
        assert!(decoder.finish(&mut out).is_err());

        let mut decoder = GeminiStreamDecoder::new("m");
        let mut out = Vec::new();
        decoder
            .push(
                b"data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n\n",
                &mut out,
            )
            .unwrap();
        decoder.finish(&mut out).unwrap();
        assert!(
            matches!(&out[..], [StreamItem::Error(e)] if e.kind == ErrorKind::Overloaded && e.status == 503)
        );
    }
}
