//! ConverseStream: the `application/vnd.amazon.eventstream` body → canonical
//! chunks. Framing, lengths and both CRCs are checked by
//! `aws-smithy-eventstream`'s `MessageFrameDecoder`; this module reads the
//! `:message-type` / `:event-type` / `:exception-type` headers and the JSON
//! payloads.

use std::collections::HashMap;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::BytesMut;
use serde_json::Value;

use super::converse::{kind_for_exception, response_id};
use super::{WireUsage, map_stop_reason};
use crate::canonical::{
    ChatChunk, ChunkChoice, Delta, FunctionCallDelta, NativeStop, Role, ToolCallDelta,
};
use crate::error::{ErrorKind, LlmError};
use crate::stream::{ChunkSink, StreamDecoder, StreamItem};

/// Largest frame accepted: the event-stream limit is a 16 MiB payload plus
/// 128 KiB of headers; a larger length prefix is garbage, and must not make
/// the decoder buffer gigabytes waiting for it.
const MAX_FRAME: usize = 16 * 1024 * 1024 + 128 * 1024 + 16;

/// Decodes one ConverseStream body, fed one network read at a time.
pub struct ConverseStreamDecoder {
    model: String,
    frames: MessageFrameDecoder,
    buffer: BytesMut,
    /// The frame decoder has not yet consumed the next frame's prelude.
    at_frame_start: bool,
    /// Derived from the first frame (Converse streams carry no id).
    id: Option<String>,
    /// contentBlockIndex → OpenAI tool call index.
    tools: HashMap<u64, u32>,
    next_tool: u32,
    saw_stop: bool,
    saw_metadata: bool,
    /// `Done` was emitted, or an exception ended the stream.
    ended: bool,
    /// A framing error made the rest of the body unreadable.
    broken: Option<LlmError>,
}

impl ConverseStreamDecoder {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            frames: MessageFrameDecoder::new(),
            buffer: BytesMut::new(),
            at_frame_start: true,
            id: None,
            tools: HashMap::new(),
            next_tool: 0,
            saw_stop: false,
            saw_metadata: false,
            ended: false,
            broken: None,
        }
    }

    /// Sets the chunks' id. ConverseStream carries none, so by default one is
    /// derived from the first frame; the gateway should pass something unique
    /// per call, e.g. the `x-amzn-requestid` response header.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    fn next_message(&mut self) -> Result<Option<Message>, LlmError> {
        if self.at_frame_start && self.buffer.len() >= 4 {
            let len = u32::from_be_bytes([
                self.buffer[0],
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
            ]) as usize;
            if len > MAX_FRAME {
                return Err(LlmError::bad_gateway(format!(
                    "Bedrock stream frame of {len} bytes exceeds the event-stream limit"
                )));
            }
        }
        let before = self.buffer.len();
        let decoded = self
            .frames
            .decode_frame(&mut self.buffer)
            .map_err(|e| LlmError::bad_gateway(format!("unreadable Bedrock stream frame: {e}")))?;
        match decoded {
            DecodedFrame::Complete(message) => {
                self.at_frame_start = true;
                Ok(Some(message))
            }
            DecodedFrame::Incomplete => {
                if self.buffer.len() < before {
                    self.at_frame_start = false;
                }
                Ok(None)
            }
        }
    }

    fn chunk(&mut self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone().unwrap_or_default(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
            }],
            ..ChatChunk::default()
        }
    }

    fn handle(&mut self, message: &Message, out: &mut ChunkSink) -> Result<(), LlmError> {
        if self.ended {
            return Ok(());
        }
        if self.id.is_none() {
            let mut first = Vec::new();
            let _ = write_message_to(message, &mut first);
            self.id = Some(response_id(&first));
        }
        match header(message, ":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => {
                let name = header(message, ":exception-type").unwrap_or("exception");
                out.push(StreamItem::Error(stream_exception(name, message.payload())));
                self.ended = true;
                return Ok(());
            }
            "error" => {
                let code = header(message, ":error-code").unwrap_or("error");
                let text = header(message, ":error-message").unwrap_or("Bedrock stream error");
                let kind = kind_for_exception(code).unwrap_or(ErrorKind::Api);
                out.push(StreamItem::Error(LlmError::new(kind, text).with_code(code)));
                self.ended = true;
                return Ok(());
            }
            other => {
                return Err(LlmError::bad_gateway(format!(
                    "unknown Bedrock stream message type {other:?}"
                )));
            }
        }
        let event_type = header(message, ":event-type")
            .unwrap_or_default()
            .to_string();
        let payload: Value = if message.payload().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(message.payload()).map_err(|e| {
                LlmError::bad_gateway(format!(
                    "unreadable Bedrock {event_type} event payload: {e}"
                ))
            })?
        };
        match event_type.as_str() {
            "messageStart" => {
                let role = match payload.get("role").and_then(Value::as_str) {
                    Some("user") => Role::User,
                    _ => Role::Assistant,
                };
                let chunk = self.chunk(
                    Delta {
                        role: Some(role),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                );
                out.push(StreamItem::Chunk(chunk));
            }
            "contentBlockStart" => {
                if let Some(tool) = payload.pointer("/start/toolUse") {
                    let block = payload
                        .get("contentBlockIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(u64::MAX);
                    let index = self.next_tool;
                    self.next_tool = self.next_tool.saturating_add(1);
                    self.tools.insert(block, index);
                    let field =
                        |name: &str| tool.get(name).and_then(Value::as_str).map(str::to_string);
                    let delta = Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index,
                            id: field("toolUseId"),
                            kind: Some("function".into()),
                            function: Some(FunctionCallDelta {
                                name: field("name"),
                                arguments: Some(String::new()),
                            }),
                        }]),
                        ..Delta::default()
                    };
                    let chunk = self.chunk(delta, None);
                    out.push(StreamItem::Chunk(chunk));
                }
            }
            "contentBlockDelta" => {
                let block = payload
                    .get("contentBlockIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                let Some(delta) = payload.get("delta") else {
                    return Ok(());
                };
                let mut out_delta = Delta::default();
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    out_delta.content = Some(text.to_string());
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let index = *self.tools.get(&block).ok_or_else(|| {
                        LlmError::bad_gateway(
                            "Bedrock streamed tool input before its toolUse start",
                        )
                    })?;
                    out_delta.tool_calls = Some(vec![ToolCallDelta {
                        index,
                        function: Some(FunctionCallDelta {
                            name: None,
                            arguments: Some(input.to_string()),
                        }),
                        ..ToolCallDelta::default()
                    }]);
                } else if let Some(reasoning) = delta.get("reasoningContent") {
                    if let Some(text) = reasoning.get("text").and_then(Value::as_str) {
                        out_delta.reasoning_content = Some(text.to_string());
                    } else if let Some(signature) =
                        reasoning.get("signature").and_then(Value::as_str)
                    {
                        out_delta.thinking_signature = Some(signature.to_string());
                    } else {
                        return Ok(()); // redactedContent: no canonical delta for it
                    }
                } else {
                    return Ok(()); // citations and future delta kinds
                }
                let chunk = self.chunk(out_delta, None);
                out.push(StreamItem::Chunk(chunk));
            }
            "messageStop" => {
                let reason = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                let stop_sequence = payload
                    .pointer("/additionalModelResponseFields/stop_sequence")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let (finish, native): (&str, Option<NativeStop>) =
                    map_stop_reason(reason, stop_sequence);
                let mut chunk = self.chunk(Delta::default(), Some(finish.to_string()));
                chunk.native_stop = native;
                out.push(StreamItem::Chunk(chunk));
                self.saw_stop = true;
            }
            "metadata" => {
                if let Some(usage) = payload.get("usage") {
                    let usage: WireUsage = serde_json::from_value(usage.clone()).map_err(|e| {
                        LlmError::bad_gateway(format!("unreadable Bedrock usage: {e}"))
                    })?;
                    let chunk = ChatChunk {
                        id: self.id.clone().unwrap_or_default(),
                        object: "chat.completion.chunk".into(),
                        model: self.model.clone(),
                        usage: Some(usage.to_canonical()),
                        ..ChatChunk::default()
                    };
                    out.push(StreamItem::Chunk(chunk));
                }
                self.saw_metadata = true;
            }
            _ => {} // contentBlockStop and future events carry nothing canonical
        }
        if self.saw_stop && self.saw_metadata {
            out.push(StreamItem::Done);
            self.ended = true;
        }
        Ok(())
    }
}

impl StreamDecoder for ConverseStreamDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut ChunkSink) -> Result<(), LlmError> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        self.buffer.extend_from_slice(bytes);
        loop {
            let message = match self.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.broken = Some(error.clone());
                    return Err(error);
                }
            };
            if let Err(error) = self.handle(&message, out) {
                self.broken = Some(error.clone());
                return Err(error);
            }
        }
    }

    fn finish(&mut self, out: &mut ChunkSink) -> Result<(), LlmError> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        if self.ended {
            return Ok(());
        }
        if !self.buffer.is_empty() || !self.at_frame_start {
            return Err(LlmError::bad_gateway(
                "Bedrock stream ended in the middle of a frame",
            ));
        }
        if self.saw_stop {
            self.ended = true;
            out.push(StreamItem::Done);
            return Ok(());
        }
        Err(LlmError::bad_gateway(
            "Bedrock stream ended before messageStop",
        ))
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

/// An exception frame's payload (`{"message": ...}`) → canonical error; the
/// `:exception-type` (e.g. `throttlingException`) decides the kind.
fn stream_exception(name: &str, payload: &[u8]) -> LlmError {
    let value: Option<Value> = serde_json::from_slice(payload).ok();
    let message = value
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("Bedrock stream {name}"));
    let kind = kind_for_exception(name).unwrap_or(ErrorKind::Api);
    LlmError::new(kind, message).with_code(name)
}

/// One `event` frame as Bedrock sends it (for tests and fixtures). Empty
/// only if the frame would exceed the format's size limits.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(":event-type", event_type, "event", payload)
}

/// One `exception` frame as Bedrock sends it (for tests and fixtures).
pub fn encode_exception(exception_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(":exception-type", exception_type, "exception", payload)
}

fn encode(type_header: &str, kind: &str, message_type: &str, payload: &[u8]) -> Vec<u8> {
    let message = Message::new(payload.to_vec())
        .add_header(Header::new(
            type_header.to_string(),
            HeaderValue::String(kind.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.to_string().into()),
        ));
    let mut out = Vec::new();
    match write_message_to(&message, &mut out) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> (ChunkSink, Result<(), LlmError>) {
        let mut decoder = ConverseStreamDecoder::new("m");
        let mut out = Vec::new();
        let result = decoder
            .push(bytes, &mut out)
            .and_then(|()| decoder.finish(&mut out));
        (out, result)
    }

    fn text_stream() -> Vec<u8> {
        [
            encode_event("messageStart", br#"{"role":"assistant"}"#),
            encode_event(
                "contentBlockDelta",
                br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
            ),
            encode_event("contentBlockStop", br#"{"contentBlockIndex":0}"#),
            encode_event("messageStop", br#"{"stopReason":"end_turn"}"#),
            encode_event(
                "metadata",
                br#"{"usage":{"inputTokens":3,"outputTokens":1,"totalTokens":4},"metrics":{"latencyMs":9}}"#,
            ),
        ]
        .concat()
    }

    #[test]
    fn bad_crc_is_an_error() {
        let mut bytes = text_stream();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let (_, result) = decode_all(&bytes);
        assert!(result.is_err());
        // The prelude CRC too.
        let mut bytes = text_stream();
        bytes[9] ^= 0x01;
        assert!(decode_all(&bytes).1.is_err());
    }

    #[test]
    fn cut_streams_are_errors() {
        let bytes = text_stream();
        let first_two = [
            encode_event("messageStart", br#"{"role":"assistant"}"#),
            encode_event(
                "contentBlockDelta",
                br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
            ),
        ]
        .concat();
        assert!(decode_all(&first_two).1.is_err());
        assert!(decode_all(&bytes[..bytes.len() - 3]).1.is_err());
    }

    #[test]
    fn stop_without_metadata_ends_at_body_end() {
        let bytes = [
            encode_event("messageStart", br#"{"role":"assistant"}"#),
            encode_event("messageStop", br#"{"stopReason":"max_tokens"}"#),
        ]
        .concat();
        let (out, result) = decode_all(&bytes);
        result.unwrap();
        assert_eq!(out.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn with_id_names_every_chunk() {
        let mut decoder = ConverseStreamDecoder::new("m").with_id("req-1");
        let mut out = Vec::new();
        decoder.push(&text_stream(), &mut out).unwrap();
        decoder.finish(&mut out).unwrap();
        assert!(out.iter().all(|item| match item {
            StreamItem::Chunk(chunk) => chunk.id == "req-1",
            _ => true,
        }));
        assert_eq!(out.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn huge_length_prefix_is_refused_at_once() {
        let mut decoder = ConverseStreamDecoder::new("m");
        let mut out = Vec::new();
        assert!(
            decoder
                .push(&[0xff, 0xff, 0xff, 0xff, 0, 0], &mut out)
                .is_err()
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed & 0xff) as u8
                })
                .collect();
            let _ = decode_all(&bytes);
            let mut framed = text_stream();
            framed.extend_from_slice(&bytes);
            let _ = decode_all(&framed);
        }
    }
}
