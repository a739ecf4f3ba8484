//! No input makes the Anthropic translation panic: every golden input cut at
//! every byte, and every JSON value in it replaced by each other JSON type,
//! goes through every entry point that takes it.

use std::path::Path;

use bytes::BytesMut;
use serde_json::{Value, json};
use tollgate_llm::anthropic::{dialect, provider};
use tollgate_llm::{ChatChunk, ChatRequest, ChatResponse, StreamDecoder, StreamEncoder};

fn golden_files() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/anthropic");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(dir).unwrap() {
            let path = file.unwrap().path();
            if path.to_str().unwrap().contains(".in.") {
                files.push(std::fs::read(path).unwrap());
            }
        }
    }
    files
}

/// Every entry point that takes bytes from outside.
fn feed(bytes: &[u8]) {
    let _ = dialect::parse_request(bytes);
    let _ = dialect::parse_count_tokens(bytes);
    let _ = provider::parse_response(bytes);
    let _ = provider::parse_error(400, bytes);
    let mut decoder = provider::MessagesStreamDecoder::new();
    let mut out = Vec::new();
    if decoder.push(bytes, &mut out).is_ok() {
        let _ = decoder.finish(&mut out);
    }
    // Whatever parses as canonical goes out the other way too.
    if let Ok(request) = serde_json::from_slice::<ChatRequest>(bytes) {
        let _ = provider::request_body(&request, "claude");
    }
    if let Ok(response) = serde_json::from_slice::<ChatResponse>(bytes) {
        let _ = dialect::render_response(&response);
    }
    if let Ok(chunk) = serde_json::from_slice::<ChatChunk>(bytes) {
        let mut encoder = dialect::MessagesStreamEncoder::new();
        let mut out = BytesMut::new();
        encoder.chunk(&chunk, &mut out);
        encoder.chunk(&chunk, &mut out);
        encoder.done(&mut out);
    }
}

#[test]
fn truncated_inputs_do_not_panic() {
    for file in golden_files() {
        for end in 0..file.len() {
            feed(&file[..end]);
        }
    }
}

/// Every path to a value in `value`, as JSON pointers.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(path.clone());
                pointers(v, path, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let path = format!("{at}/{i}");
                out.push(path.clone());
                pointers(v, path, out);
            }
        }
        _ => {}
    }
}

#[test]
fn retyped_values_do_not_panic() {
    let replacements = [
        json!(null),
        json!(-1),
        json!(u64::MAX),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
    ];
    for file in golden_files() {
        let Ok(value) = serde_json::from_slice::<Value>(&file) else {
            continue;
        };
        let mut paths = Vec::new();
        pointers(&value, String::new(), &mut paths);
        for path in paths {
            for replacement in &replacements {
                let mut changed = value.clone();
                if let Some(slot) = changed.pointer_mut(&path) {
                    *slot = replacement.clone();
                }
                feed(&serde_json::to_vec(&changed).unwrap());
            }
        }
    }
}

#[test]
fn stream_events_in_any_order_do_not_panic() {
    let events = [
        r#"{"type":"content_block_delta","index":7,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
        r#"{"type":"content_block_stop","index":3}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":1}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"n","input":"not an object"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
        r#"{"type":"brand_new_event","x":1}"#,
        r#"{"type":"message_start","message":{"id":"m","content":[],"model":"c","usage":{}}}"#,
        r#"{"type":"error","error":{"type":"x","message":"y"}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    // Each rotation of the list, as one stream.
    for start in 0..events.len() {
        let mut body = String::new();
        for i in 0..events.len() {
            body.push_str(&format!("data: {}\n\n", events[(start + i) % events.len()]));
        }
        feed(body.as_bytes());
    }
}
