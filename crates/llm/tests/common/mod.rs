//! Test helpers: canonical types as JSON *including* their `#[serde(skip)]`
//! fields (under `_`-prefixed keys), so golden files show everything.
#![allow(dead_code)]

pub mod golden;

use serde_json::{Map, Value, json};
use tollgate_llm::canonical::{NativeStop, Thinking};
use tollgate_llm::{ChatChunk, ChatRequest, ChatResponse, ErrorKind, LlmError, StreamItem};

fn thinking_json(thinking: &[Thinking]) -> Value {
    thinking
        .iter()
        .map(|t| {
            let mut v = Map::new();
            v.insert("text".into(), t.text.clone().into());
            if let Some(s) = &t.signature {
                v.insert("signature".into(), s.clone().into());
            }
            if let Some(d) = &t.redacted_data {
                v.insert("redacted_data".into(), d.clone().into());
            }
            Value::Object(v)
        })
        .collect()
}

fn thinking_from(value: Option<Value>) -> Vec<Thinking> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .map(|t| Thinking {
            text: t["text"].as_str().unwrap_or_default().into(),
            signature: t["signature"].as_str().map(Into::into),
            redacted_data: t["redacted_data"].as_str().map(Into::into),
        })
        .collect()
}

fn native_json(native: &Option<NativeStop>) -> Option<Value> {
    native
        .as_ref()
        .map(|n| json!({"reason": n.reason, "stop_sequence": n.stop_sequence}))
}

fn native_from(value: Option<Value>) -> Option<NativeStop> {
    value.map(|n| NativeStop {
        reason: n["reason"].as_str().unwrap_or_default().into(),
        stop_sequence: n["stop_sequence"].as_str().map(Into::into),
    })
}

fn take(value: &mut Value, key: &str) -> Option<Value> {
    value.as_object_mut().and_then(|o| o.remove(key))
}

pub fn request_to_json(request: &ChatRequest) -> Value {
    let mut v = serde_json::to_value(request).unwrap();
    if let Some(b) = request.thinking_budget {
        v["_thinking_budget"] = b.into();
    }
    if let Some(k) = request.top_k {
        v["_top_k"] = k.into();
    }
    for (i, m) in request.messages.iter().enumerate() {
        if !m.thinking.is_empty() {
            v["messages"][i]["_thinking"] = thinking_json(&m.thinking);
        }
    }
    v
}

pub fn request_from_json(mut v: Value) -> ChatRequest {
    let budget = take(&mut v, "_thinking_budget").and_then(|b| b.as_u64());
    let top_k = take(&mut v, "_top_k").and_then(|b| b.as_u64());
    let mut thinking = Vec::new();
    if let Some(messages) = v["messages"].as_array_mut() {
        for m in messages {
            thinking.push(thinking_from(take(m, "_thinking")));
        }
    }
    let mut request: ChatRequest = serde_json::from_value(v).unwrap();
    request.thinking_budget = budget;
    request.top_k = top_k;
    for (m, t) in request.messages.iter_mut().zip(thinking) {
        m.thinking = t;
    }
    request
}

pub fn response_to_json(response: &ChatResponse) -> Value {
    let mut v = serde_json::to_value(response).unwrap();
    if let Some(n) = native_json(&response.native_stop) {
        v["_native_stop"] = n;
    }
    for (i, c) in response.choices.iter().enumerate() {
        if !c.message.thinking.is_empty() {
            v["choices"][i]["message"]["_thinking"] = thinking_json(&c.message.thinking);
        }
    }
    v
}

pub fn response_from_json(mut v: Value) -> ChatResponse {
    let native = take(&mut v, "_native_stop");
    let mut thinking = Vec::new();
    if let Some(choices) = v["choices"].as_array_mut() {
        for c in choices {
            thinking.push(thinking_from(take(&mut c["message"], "_thinking")));
        }
    }
    let mut response: ChatResponse = serde_json::from_value(v).unwrap();
    response.native_stop = native_from(native);
    for (c, t) in response.choices.iter_mut().zip(thinking) {
        c.message.thinking = t;
    }
    response
}

pub fn chunk_to_json(chunk: &ChatChunk) -> Value {
    let mut v = serde_json::to_value(chunk).unwrap();
    if let Some(n) = native_json(&chunk.native_stop) {
        v["_native_stop"] = n;
    }
    for (i, c) in chunk.choices.iter().enumerate() {
        if let Some(s) = &c.delta.thinking_signature {
            v["choices"][i]["delta"]["_thinking_signature"] = s.clone().into();
        }
    }
    v
}

pub fn chunk_from_json(mut v: Value) -> ChatChunk {
    let native = take(&mut v, "_native_stop");
    let mut signatures = Vec::new();
    if let Some(choices) = v["choices"].as_array_mut() {
        for c in choices {
            signatures.push(take(&mut c["delta"], "_thinking_signature"));
        }
    }
    let mut chunk: ChatChunk = serde_json::from_value(v).unwrap();
    chunk.native_stop = native_from(native);
    for (c, s) in chunk.choices.iter_mut().zip(signatures) {
        c.delta.thinking_signature = s.and_then(|s| s.as_str().map(Into::into));
    }
    chunk
}

pub fn error_to_json(error: &LlmError) -> Value {
    json!({
        "kind": format!("{:?}", error.kind),
        "status": error.status,
        "message": error.message,
        "param": error.param,
    })
}

pub fn kind_from_str(kind: &str) -> ErrorKind {
    match kind {
        "InvalidRequest" => ErrorKind::InvalidRequest,
        "Authentication" => ErrorKind::Authentication,
        "PermissionDenied" => ErrorKind::PermissionDenied,
        "NotFound" => ErrorKind::NotFound,
        "RequestTooLarge" => ErrorKind::RequestTooLarge,
        "RateLimit" => ErrorKind::RateLimit,
        "BadGateway" => ErrorKind::BadGateway,
        "Overloaded" => ErrorKind::Overloaded,
        "Timeout" => ErrorKind::Timeout,
        _ => ErrorKind::Api,
    }
}

pub fn item_to_json(item: &StreamItem) -> Value {
    match item {
        StreamItem::Chunk(chunk) => json!({"chunk": chunk_to_json(chunk)}),
        StreamItem::Error(error) => json!({"error": error_to_json(error)}),
        StreamItem::Done => json!("done"),
    }
}

/// SSE bytes → `[{"event": name, "data": json}]`, to compare event sequences.
pub fn sse_events(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut name = Value::Null;
        let mut data = Value::Null;
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.into();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = serde_json::from_str(d).unwrap();
            }
        }
        events.push(json!({"event": name, "data": data}));
    }
    events
}

/// Checks an Anthropic event sequence the way the SDKs' stream accumulators
/// do: `message_start` first, block indexes contiguous from 0, deltas only
/// into open blocks of the matching kind, every block closed before
/// `message_delta`, `message_stop` last (or an `error` ending the stream).
pub fn assert_valid_sequence(events: &[Value]) {
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for event in events {
        assert_eq!(event["event"], event["data"]["type"], "event name = type");
    }
    if names.first() == Some(&"error") {
        assert_eq!(names.len(), 1);
        return;
    }
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    let mut blocks: Vec<(String, bool)> = Vec::new(); // (type, open)
    let mut delta_seen = false;
    for (i, event) in events.iter().enumerate().skip(1) {
        let data = &event["data"];
        match names[i] {
            "content_block_start" => {
                assert!(!delta_seen);
                assert!(blocks.iter().all(|b| !b.1), "previous block still open");
                assert_eq!(data["index"], blocks.len(), "indexes contiguous");
                blocks.push((data["content_block"]["type"].as_str().unwrap().into(), true));
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap() as usize;
                let (kind, _) = &blocks[index];
                let expected: &[&str] = match kind.as_str() {
                    "text" => &["text_delta"],
                    "tool_use" => &["input_json_delta"],
                    "thinking" => &["thinking_delta", "signature_delta"],
                    _ => &[],
                };
                assert!(
                    expected.contains(&data["delta"]["type"].as_str().unwrap()),
                    "{kind} got {}",
                    data["delta"]
                );
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().unwrap() as usize;
                assert!(blocks[index].1, "block {index} stopped twice");
                blocks[index].1 = false;
            }
            "message_delta" => {
                assert!(blocks.iter().all(|b| !b.1), "block left open");
                assert!(data["delta"]["stop_reason"].is_string());
                assert!(data["usage"]["output_tokens"].is_u64());
                delta_seen = true;
            }
            "message_stop" => {
                assert!(delta_seen);
                assert_eq!(i, events.len() - 1, "message_stop is last");
            }
            "error" => assert_eq!(i, events.len() - 1, "error is last"),
            "ping" => {}
            other => panic!("unexpected event {other}"),
        }
    }
}
