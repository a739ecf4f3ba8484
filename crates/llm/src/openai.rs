//! OpenAI Chat Completions, both as a dialect (what OpenAI SDK clients send)
//! and as a provider format (OpenAI, Azure OpenAI and OpenAI-compatible
//! servers). The canonical model *is* this format, so both directions are
//! close to serde; what is here is the edges: thinking budgets, usage on
//! streams, errors.

use bytes::BytesMut;
use serde::Serialize;
use serde_json::Value;

use crate::canonical::{ChatChunk, ChatRequest, ChatResponse, StreamOptions, Usage};
use crate::error::{ErrorKind, LlmError};
use crate::sse;
use crate::stream::{ChunkSink, StreamDecoder, StreamEncoder, StreamItem};

// ---------------------------------------------------------------------------
// Dialect: an OpenAI client.

/// Parses a client's Chat Completions body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    serde_json::from_slice(body)
        .map_err(|e| LlmError::invalid_request(format!("Invalid chat completion request: {e}")))
}

pub fn render_response(response: &ChatResponse) -> Vec<u8> {
    to_json(response)
}

/// The OpenAI error object: `{"error":{"message","type","param","code"}}`.
pub fn render_error(error: &LlmError) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    to_json(&Body {
        error: Inner {
            message: &error.message,
            kind: error_type(error.kind),
            param: error.param.as_deref(),
            code: error.code.as_deref(),
        },
    })
}

/// OpenAI's `type` for each kind (what the OpenAI SDKs and the gateway's own
/// errors use).
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::RequestTooLarge => {
            "invalid_request_error"
        }
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api | ErrorKind::BadGateway | ErrorKind::Overloaded | ErrorKind::Timeout => {
            "api_error"
        }
    }
}

/// Canonical chunks → `data: {chunk}` events, `data: [DONE]` at the end.
/// Usage goes out as the final `choices: []` chunk only when the client
/// asked for it (`stream_options.include_usage`).
pub struct ChatStreamEncoder {
    include_usage: bool,
    usage: Option<Usage>,
    /// For the usage chunk: the stream's id, model and created time.
    last: Option<(String, String, u64)>,
}

impl ChatStreamEncoder {
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            usage: None,
            last: None,
        }
    }
}

impl StreamEncoder for ChatStreamEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if self.last.is_none() {
            self.last = Some((chunk.id.clone(), chunk.model.clone(), chunk.created));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
            if chunk.choices.is_empty() {
                return; // emitted once, in `done`
            }
        }
        if chunk.usage.is_some() && !self.include_usage {
            let mut without = chunk.clone();
            without.usage = None;
            sse::write_json(out, None, &without);
        } else {
            sse::write_json(out, None, chunk);
        }
    }

    fn done(&mut self, out: &mut BytesMut) {
        if self.include_usage
            && let Some(usage) = self.usage
        {
            let (id, model, created) = self.last.clone().unwrap_or_default();
            let chunk = ChatChunk {
                id,
                model,
                created,
                usage: Some(usage),
                ..ChatChunk::default()
            };
            sse::write_json(
                out,
                None,
                &ChatChunk {
                    object: "chat.completion.chunk".into(),
                    ..chunk
                },
            );
        }
        sse::write_event(out, None, b"[DONE]");
    }

    fn error(&mut self, error: &LlmError, out: &mut BytesMut) {
        sse::write_event(out, None, &render_error(error));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------
// Provider format: an OpenAI-format upstream.

/// The upstream body for `model`, for a request translated from another
/// dialect (an OpenAI Chat client is passed through, never translated). A
/// thinking budget becomes `reasoning_effort` (OpenAI takes no budget);
/// streams always ask for usage so the gateway can account tokens. Unknown
/// fields inside messages and content parts came from the other dialect
/// (Anthropic `cache_control`, a tool result's `is_error`): OpenAI refuses
/// unknown message fields, so they are dropped; top-level ones are kept.
pub fn request_body(request: &ChatRequest, model: &str) -> Vec<u8> {
    let mut request = request.clone();
    model.clone_into(&mut request.model);
    for message in &mut request.messages {
        message.extra.clear();
        if let Some(crate::canonical::Content::Parts(parts)) = &mut message.content {
            for part in parts {
                if let crate::canonical::ContentPart::Text { extra, .. } = part {
                    extra.clear();
                }
            }
        }
    }
    if request.reasoning_effort.is_none()
        && let Some(budget) = request.thinking_budget
    {
        request.reasoning_effort = Some(effort_for_budget(budget).into());
    }
    if request.stream {
        let options = request
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        options.include_usage = Some(true);
    }
    to_json(&request)
}

/// The documented mapping from a token budget to OpenAI's effort levels.
pub fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=2048 => "low",
        2049..=8192 => "medium",
        _ => "high",
    }
}

/// The documented mapping from an effort level to a token budget, for
/// providers that take a budget.
pub fn budget_for_effort(effort: &str) -> Option<u64> {
    match effort {
        "minimal" => Some(1024),
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

pub fn parse_response(body: &[u8]) -> Result<ChatResponse, LlmError> {
    serde_json::from_slice(body)
        .map_err(|e| LlmError::bad_gateway(format!("provider sent an unreadable response: {e}")))
}

/// An OpenAI-format error body (`{"error":{"message",...}}`) with its status;
/// the provider's own message is kept.
pub fn parse_error(status: u16, body: &[u8]) -> LlmError {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let error = value.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("provider answered with status {status}"));
    let mut parsed = LlmError::new(ErrorKind::from_status(status), message).with_status(status);
    if let Some(param) = error.and_then(|e| e.get("param")).and_then(Value::as_str) {
        parsed = parsed.with_param(param);
    }
    if let Some(code) = error.and_then(|e| e.get("code")).and_then(Value::as_str) {
        parsed = parsed.with_code(code);
    }
    parsed
}

/// `data: {chunk}` events → canonical chunks; `[DONE]` ends the stream, an
/// `{"error":..}` event is a stream error.
#[derive(Default)]
pub struct ChatStreamDecoder {
    parser: sse::Parser,
    events: Vec<sse::Event>,
    done: bool,
}

impl ChatStreamDecoder {
    fn drain(&mut self, out: &mut ChunkSink) -> Result<(), LlmError> {
        for event in self.events.drain(..) {
            if self.done {
                continue;
            }
            if event.data == "[DONE]" {
                self.done = true;
                out.push(StreamItem::Done);
                continue;
            }
            let value: Value = serde_json::from_str(&event.data).map_err(|e| {
                LlmError::bad_gateway(format!("provider sent an unreadable stream event: {e}"))
            })?;
            if value.get("error").is_some() {
                // A status outside HTTP's range is the provider's garbage: 500.
                let status = value
                    .pointer("/error/status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (100..=599).contains(s))
                    .unwrap_or(500);
                out.push(StreamItem::Error(parse_error(
                    status,
                    event.data.as_bytes(),
                )));
                continue;
            }
            let chunk: ChatChunk = serde_json::from_value(value).map_err(|e| {
                LlmError::bad_gateway(format!("provider sent an unreadable stream chunk: {e}"))
            })?;
            out.push(StreamItem::Chunk(chunk));
        }
        Ok(())
    }
}

impl StreamDecoder for ChatStreamDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut ChunkSink) -> Result<(), LlmError> {
        self.parser.push(bytes, &mut self.events)?;
        self.drain(out)
    }

    fn finish(&mut self, out: &mut ChunkSink) -> Result<(), LlmError> {
        self.parser.finish(&mut self.events);
        self.drain(out)?;
        if self.done {
            Ok(())
        } else {
            Err(LlmError::bad_gateway("provider stream ended before [DONE]"))
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // The crate's own types always serialize.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_sets_model_usage_and_effort() {
        let mut request = parse_request(
            br#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":3}"#,
        )
        .unwrap();
        request.thinking_budget = Some(10_000);
        let body: Value = serde_json::from_slice(&request_body(&request, "gpt-4o")).unwrap();
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["reasoning_effort"], "high");
        assert_eq!(body["seed"], 3);
    }

    #[test]
    fn stream_decodes_chunks_errors_and_done() {
        let mut decoder = ChatStreamDecoder::default();
        let mut out = Vec::new();
        decoder
            .push(
                b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\ndata: [DONE]\n\n",
                &mut out,
            )
            .unwrap();
        decoder.finish(&mut out).unwrap();
        assert!(
            matches!(&out[0], StreamItem::Chunk(c) if c.choices[0].delta.content.as_deref() == Some("Hi"))
        );
        assert!(matches!(&out[1], StreamItem::Error(e) if e.message == "boom"));
        assert_eq!(out[2], StreamItem::Done);
    }

    #[test]
    fn an_in_stream_error_status_outside_http_is_a_500() {
        let statuses = |data: &[u8]| {
            let mut decoder = ChatStreamDecoder::default();
            let mut out = Vec::new();
            decoder.push(data, &mut out).unwrap();
            out.iter()
                .filter_map(|item| match item {
                    StreamItem::Error(e) => Some(e.status),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // 70000 would have wrapped to 4464 as a u16.
        assert_eq!(
            statuses(b"data: {\"error\":{\"message\":\"x\",\"status\":70000}}\n\n"),
            [500]
        );
        assert_eq!(
            statuses(b"data: {\"error\":{\"message\":\"x\",\"status\":42}}\n\n"),
            [500]
        );
        assert_eq!(
            statuses(b"data: {\"error\":{\"message\":\"x\",\"status\":429}}\n\n"),
            [429]
        );
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let mut decoder = ChatStreamDecoder::default();
        let mut out = Vec::new();
        decoder
            .push(
                b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[]}\n\n",
                &mut out,
            )
            .unwrap();
        assert!(decoder.finish(&mut out).is_err());
    }

    #[test]
    fn encoder_emits_usage_only_when_asked() {
        let usage_chunk = ChatChunk {
            id: "c".into(),
            model: "m".into(),
            usage: Some(Usage::new(3, 4)),
            ..ChatChunk::default()
        };
        for (asked, expect_usage) in [(true, true), (false, false)] {
            let mut encoder = ChatStreamEncoder::new(asked);
            let mut out = BytesMut::new();
            encoder.chunk(&usage_chunk, &mut out);
            encoder.done(&mut out);
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert_eq!(text.contains("\"usage\""), expect_usage, "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(encoder.usage(), Some(Usage::new(3, 4)));
        }
    }

    #[test]
    fn errors_keep_the_provider_message() {
        let error = parse_error(
            400,
            br#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#,
        );
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.message, "bad temperature");
        assert_eq!(error.param.as_deref(), Some("temperature"));
        let rendered: Value = serde_json::from_slice(&render_error(&error)).unwrap();
        assert_eq!(rendered["error"]["type"], "invalid_request_error");
        assert_eq!(rendered["error"]["message"], "bad temperature");
    }
}
