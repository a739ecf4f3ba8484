//! Gemini API: `models/{model}:generateContent`, `:streamGenerateContent`
//! (SSE with `alt=sse`, else a streamed JSON array), `:countTokens` and
//! `:embedContent`, with the request rules the real API enforces.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::api_error::ApiError;
use crate::auth::query_param;
use crate::body::{MockBody, StreamBuilder};
use crate::openai::unit_vector;
use crate::plan::{
    Stop, ToolCall, cached_tokens, pieces, plan_text, signature, thinking_text, tool_calls,
};
use crate::server::{State, generation_time, json_response, pause, push_json, sse_response};
use crate::text::{PromptCounter, make_id};

const DEFAULT_EMBEDDING_DIMENSIONS: u64 = 768;
const MAX_EMBEDDING_DIMENSIONS: u64 = 8192;

/// The method after `:` in `models/{model}:{method}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Generate,
    Stream,
    CountTokens,
    Embed,
}

impl Method {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "generateContent" => Self::Generate,
            "streamGenerateContent" => Self::Stream,
            "countTokens" => Self::CountTokens,
            "embedContent" => Self::Embed,
            _ => return None,
        })
    }
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::invalid(message, None)
}

fn parts_of(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn count_parts(parts: &[Value], prompt: &mut PromptCounter) {
    for part in parts {
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            prompt.text(text);
        }
        for key in ["functionCall", "functionResponse"] {
            if let Some(value) = part.get(key) {
                prompt.text(&value.to_string());
            }
        }
        if part.get("inlineData").is_some() || part.get("fileData").is_some() {
            prompt.media();
        }
    }
}

/// Checks roles, turn alternation and function call/response pairing the
/// way the Gemini API reports them.
fn validate(contents: &[Value]) -> Result<(), ApiError> {
    let mut previous: Option<(&str, usize, bool)> = None; // role, calls, has responses
    for content in contents {
        let role = match content.get("role").and_then(Value::as_str) {
            None | Some("") if contents.len() == 1 => "user",
            Some("user" | "function") => "user",
            Some("model") => "model",
            _ => return Err(invalid("Please use a valid role: user, model.")),
        };
        let parts = parts_of(content);
        if parts.is_empty() {
            return Err(invalid(
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.",
            ));
        }
        let calls = parts
            .iter()
            .filter(|p| p.get("functionCall").is_some())
            .count();
        let responses = parts
            .iter()
            .filter(|p| p.get("functionResponse").is_some())
            .count();
        if previous.is_some_and(|(prev_role, _, _)| prev_role == role) {
            return Err(invalid(
                "Please ensure that multiturn requests alternate between user and model.",
            ));
        }
        if responses > 0 {
            match previous {
                Some(("model", prev_calls, _)) if prev_calls > 0 => {
                    if prev_calls != responses {
                        return Err(invalid(
                            "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.",
                        ));
                    }
                }
                _ => {
                    return Err(invalid(
                        "Please ensure that function response turn comes immediately after a function call turn.",
                    ));
                }
            }
        }
        if calls > 0 && matches!(previous, Some(("model", _, _))) {
            return Err(invalid(
                "Please ensure that function call turn comes immediately after a user turn or after a function response turn.",
            ));
        }
        previous = Some((role, calls, responses > 0));
    }
    match previous {
        Some(("model", _, _)) if contents.len() > 1 => Err(invalid(
            "Please ensure that multiturn requests ends with a user role or a function response.",
        )),
        _ => Ok(()),
    }
}

/// What `:generateContent` and friends read from a request.
struct Prompt<'a> {
    contents: &'a [Value],
    tokens: u64,
    cached: u64,
}

fn prompt_of(req: &Value) -> Result<Prompt<'_>, ApiError> {
    let contents = req
        .get("contents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("* GenerateContentRequest.contents: contents is not specified"))?;
    validate(contents)?;
    let mut prompt = PromptCounter::default();
    let mut system = PromptCounter::default();
    if let Some(instruction) = req.get("systemInstruction") {
        prompt.message();
        count_parts(parts_of(instruction), &mut prompt);
        count_parts(parts_of(instruction), &mut system);
    }
    for content in contents {
        prompt.message();
        count_parts(parts_of(content), &mut prompt);
    }
    let marked = req.get("cachedContent").and_then(Value::as_str).is_some();
    Ok(Prompt {
        contents,
        tokens: prompt.tokens(),
        cached: cached_tokens(marked, prompt.tokens(), system.tokens()),
    })
}

pub(crate) async fn handle(
    state: &State,
    headers: &HeaderMap,
    query: Option<&str>,
    model: &str,
    method: Method,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let req: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let mut behavior = state.behavior(headers)?;
    match method {
        Method::CountTokens => {
            let inner = req.get("generateContentRequest").unwrap_or(&req);
            let prompt = prompt_of(inner)?;
            state.gate(&behavior, &body).await?;
            pause(behavior.ttft).await;
            return Ok(json_response(
                &json!({
                    "totalTokens": prompt.tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt.tokens}]
                }),
                behavior.disconnect_after,
            ));
        }
        Method::Embed => return embed(state, &behavior, model, &req, &body).await,
        Method::Generate | Method::Stream => {}
    }
    let prompt = prompt_of(&req)?;
    if let Some(last_user) = prompt
        .contents
        .iter()
        .rev()
        .find(|c| c.get("role").and_then(Value::as_str) != Some("model"))
    {
        for text in parts_of(last_user)
            .iter()
            .filter_map(|p| p.get("text")?.as_str())
        {
            behavior.apply_directives(text)?;
        }
    }
    let contents_json = Value::Array(prompt.contents.to_vec()).to_string();
    let system_json = req
        .get("systemInstruction")
        .map(Value::to_string)
        .unwrap_or_default();
    let seed = state.content_seed(model, &[contents_json.as_bytes(), system_json.as_bytes()]);

    let answering_tool = prompt.contents.last().is_some_and(|c| {
        parts_of(c)
            .iter()
            .any(|p| p.get("functionResponse").is_some())
    });
    let calling = req.pointer("/toolConfig/functionCallingConfig");
    let mode = calling
        .and_then(|c| c.get("mode"))
        .and_then(Value::as_str)
        .unwrap_or("AUTO");
    let allowed: Option<Vec<&str>> = calling
        .and_then(|c| c.get("allowedFunctionNames"))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect());
    let declarations: Vec<(&str, &Value)> = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .filter_map(|d| {
            let schema = d
                .get("parametersJsonSchema")
                .or_else(|| d.get("parameters"))
                .unwrap_or(&Value::Null);
            Some((d.get("name")?.as_str()?, schema))
        })
        .filter(|(name, _)| allowed.as_ref().is_none_or(|a| a.contains(name)))
        .collect();
    let use_tools = !answering_tool && mode != "NONE" && !declarations.is_empty();

    let config = req.get("generationConfig");
    let max_output = config
        .and_then(|c| c.get("maxOutputTokens"))
        .and_then(Value::as_u64)
        .map(|m| u32::try_from(m).unwrap_or(u32::MAX));
    let stops: Vec<&str> = config
        .and_then(|c| c.get("stopSequences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let thinking_config = config.and_then(|c| c.get("thinkingConfig"));
    let thinking = thinking_config
        .filter(|t| t.get("thinkingBudget").and_then(Value::as_i64) != Some(0))
        .map(|t| {
            let budget = t
                .get("thinkingBudget")
                .and_then(Value::as_u64)
                .map(|b| u32::try_from(b).unwrap_or(u32::MAX));
            let include = t.get("includeThoughts").and_then(Value::as_bool) == Some(true);
            (thinking_text(seed, budget), include)
        });

    state.gate(&behavior, &body).await?;

    let mut rng = state.rng();
    let response_id = make_id("", &mut rng);
    let (answer, stop): (Answer, Stop) = if use_tools {
        (
            Answer::Calls(tool_calls(
                declarations.into_iter(),
                seed,
                behavior.parallel_tools,
            )),
            Stop::End,
        )
    } else {
        let plan = plan_text(seed, behavior.output_tokens, max_output, &stops);
        (Answer::Text(plan.text), plan.stop)
    };
    let finish_reason = match stop {
        Stop::MaxTokens => "MAX_TOKENS",
        Stop::End | Stop::Sequence(_) => "STOP",
    };
    let candidates_tokens = match &answer {
        Answer::Text(text) => text.split_whitespace().count() as u64,
        Answer::Calls(calls) => calls.iter().map(ToolCall::tokens).sum(),
    };
    let thoughts_tokens = thinking
        .as_ref()
        .map_or(0, |(text, _)| text.split_whitespace().count() as u64);
    let usage = usage(
        &prompt,
        candidates_tokens,
        thoughts_tokens,
        thinking.is_some(),
    );
    let meta = Meta {
        model,
        response_id: &response_id,
    };
    let thought_signature = thinking.as_ref().map(|(text, _)| signature(text));
    let thought_part = thinking
        .as_ref()
        .filter(|(_, include)| *include)
        .map(|(text, _)| json!({"text": text, "thought": true}));

    if method == Method::Stream {
        let sse = query.and_then(|q| query_param(q, "alt")).as_deref() == Some("sse");
        let mut chunks: Vec<(Value, Duration)> = Vec::new();
        let prompt_usage =
            json!({"promptTokenCount": prompt.tokens, "totalTokenCount": prompt.tokens});
        let mut first = true;
        let mut next_gap = || {
            if std::mem::take(&mut first) {
                Duration::ZERO
            } else {
                behavior.token_delay
            }
        };
        if let Some(part) = &thought_part {
            chunks.push((vec![part.clone()].into(), next_gap()));
        }
        let mut answer_chunks: Vec<Vec<Value>> = match &answer {
            Answer::Text(text) => {
                let mut p: Vec<Vec<Value>> = pieces(text)
                    .into_iter()
                    .map(|t| vec![json!({"text": t})])
                    .collect();
                if p.is_empty() {
                    p.push(vec![json!({"text": ""})]);
                }
                p
            }
            Answer::Calls(calls) => vec![calls.iter().map(call_part).collect()],
        };
        if let (Some(sig), Some(first_part)) = (
            &thought_signature,
            answer_chunks.first_mut().and_then(|c| c.first_mut()),
        ) {
            sign_part(first_part, sig);
        }
        for parts in answer_chunks {
            chunks.push((Value::Array(parts), next_gap()));
        }
        let last = chunks.len() - 1;
        let mut out = StreamBuilder::with_capacity(300 * (last + 1), last + 2);
        for (i, (parts, gap)) in chunks.into_iter().enumerate() {
            let delay = if i == 0 { behavior.ttft } else { gap };
            if behavior.stream_error_after.is_some_and(|n| n as usize == i) {
                // Google reports a failure mid-stream as one more element
                // holding a google.rpc.Status, then ends the stream.
                let err = ApiError::injected(
                    StatusCode::from_u16(behavior.error_status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                );
                let error = json!({"error": {
                    "code": err.status.as_u16(),
                    "message": err.message,
                    "status": err.gemini_status()
                }});
                let buf = out.buf();
                if sse {
                    buf.extend_from_slice(b"data: ");
                    push_json(buf, &error);
                    buf.extend_from_slice(b"\r\n\r\n");
                } else {
                    buf.extend_from_slice(if i == 0 { b"[" } else { b",\r\n" });
                    push_json(buf, &error);
                    buf.push(b']');
                }
                out.end_frame(delay);
                break;
            }
            let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
            let chunk_usage = if i == last {
                candidate["finishReason"] = json!(finish_reason);
                usage.clone()
            } else {
                prompt_usage.clone()
            };
            let chunk = meta.response(candidate, chunk_usage);
            let buf = out.buf();
            if sse {
                buf.extend_from_slice(b"data: ");
                push_json(buf, &chunk);
                buf.extend_from_slice(b"\r\n\r\n");
            } else {
                buf.extend_from_slice(if i == 0 { b"[" } else { b",\r\n" });
                push_json(buf, &chunk);
                if i == last {
                    buf.push(b']');
                }
            }
            out.end_frame(delay);
        }
        let body = out.finish(behavior.disconnect_after);
        return Ok(if sse {
            sse_response(body)
        } else {
            let mut response = Response::new(body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json; charset=UTF-8"),
            );
            response
        });
    }

    let mut parts: Vec<Value> = thought_part.into_iter().collect();
    let mut answer_parts: Vec<Value> = match &answer {
        Answer::Text(text) => vec![json!({"text": text})],
        Answer::Calls(calls) => calls.iter().map(call_part).collect(),
    };
    if let (Some(sig), Some(first_part)) = (&thought_signature, answer_parts.first_mut()) {
        sign_part(first_part, sig);
    }
    parts.extend(answer_parts);
    pause(generation_time(
        &behavior,
        candidates_tokens + thoughts_tokens,
    ))
    .await;
    let candidate = json!({
        "content": {"parts": parts, "role": "model"},
        "finishReason": finish_reason,
        "index": 0
    });
    Ok(json_response(
        &meta.response(candidate, usage),
        behavior.disconnect_after,
    ))
}

enum Answer {
    Text(String),
    Calls(Vec<ToolCall>),
}

struct Meta<'a> {
    model: &'a str,
    response_id: &'a str,
}

impl Meta<'_> {
    fn response(&self, candidate: Value, usage: Value) -> Value {
        json!({
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.response_id
        })
    }
}

fn call_part(call: &ToolCall) -> Value {
    json!({"functionCall": {"name": call.name, "args": call.input}})
}

fn sign_part(part: &mut Value, signature: &str) {
    if let Some(obj) = part.as_object_mut() {
        obj.insert("thoughtSignature".to_owned(), json!(signature));
    }
}

fn usage(prompt: &Prompt<'_>, candidates: u64, thoughts: u64, thinking: bool) -> Value {
    let mut usage = Map::new();
    usage.insert("promptTokenCount".into(), json!(prompt.tokens));
    usage.insert("candidatesTokenCount".into(), json!(candidates));
    usage.insert(
        "totalTokenCount".into(),
        json!(prompt.tokens + candidates + thoughts),
    );
    if thinking {
        usage.insert("thoughtsTokenCount".into(), json!(thoughts));
    }
    if prompt.cached > 0 {
        usage.insert("cachedContentTokenCount".into(), json!(prompt.cached));
    }
    usage.insert(
        "promptTokensDetails".into(),
        json!([{"modality": "TEXT", "tokenCount": prompt.tokens}]),
    );
    Value::Object(usage)
}

/// `:embedContent`: a deterministic unit vector per content.
async fn embed(
    state: &State,
    behavior: &crate::config::Behavior,
    model: &str,
    req: &Value,
    body: &[u8],
) -> Result<Response<MockBody>, ApiError> {
    let texts: Vec<&str> = req
        .get("content")
        .map(parts_of)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.get("text")?.as_str())
        .collect();
    if texts.is_empty() {
        return Err(invalid(
            "* EmbedContentRequest.content: contents is not specified",
        ));
    }
    let dimensions = req
        .get("outputDimensionality")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS);
    if !(1..=MAX_EMBEDDING_DIMENSIONS).contains(&dimensions) {
        return Err(invalid(format!(
            "outputDimensionality must be within 1..={MAX_EMBEDDING_DIMENSIONS}"
        )));
    }
    state.gate(behavior, body).await?;
    let joined = texts.concat();
    let seed = state.content_seed(model, &[joined.as_bytes()]);
    pause(behavior.ttft).await;
    Ok(json_response(
        &json!({"embedding": {"values": unit_vector(seed, dimensions as usize)}}),
        behavior.disconnect_after,
    ))
}
