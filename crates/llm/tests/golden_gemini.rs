//! Golden tests for the Gemini provider format. Each direction has a folder
//! under `tests/golden/gemini/`: `<case>.in.json` (`<case>.in.sse` for streams) is the input,
//! `<case>.out.json` the expected output, compared as JSON values.
//! `UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test golden_gemini` rewrites
//! the expectations; review the diff by hand before committing.

mod common;

use common::golden::{self, error_json, native_stop_json, request_from_case};
use serde_json::{Value, json};
use tollgate_llm::canonical::Thinking;
use tollgate_llm::gemini::{self, GeminiStreamDecoder};
use tollgate_llm::{StreamDecoder, StreamItem};

/// Gemini's thinking carries no `redacted_data`.
fn thinking_json(thinking: &[Thinking]) -> Value {
    thinking
        .iter()
        .map(|t| json!({ "text": t.text, "signature": t.signature }))
        .collect()
}

/// Input: `{"model", "request": <OpenAI JSON>, "thinking_budget"?, "top_k"?,
/// "thinking"?: {"<message index>": [{"text","signature"}]}}` (the last three
/// are the canonical fields OpenAI JSON cannot carry).
/// Output: `{"path", "body"}` or `{"error"}`.
#[test]
fn request_golden() {
    golden::run("gemini", "request", |input| {
        let case = input.json();
        let request = request_from_case(&case);
        let model = case["model"].as_str().unwrap();
        match gemini::request_body(&request, model) {
            Ok(body) => json!({
                "path": gemini::request_path(model, request.stream),
                "body": serde_json::from_slice::<Value>(&body).unwrap(),
            }),
            Err(error) => json!({ "error": error_json(&error) }),
        }
    });
}

/// Input: a Gemini body. Output: `{"response", "native_stop", "thinking"}`
/// (thinking per choice) or `{"error"}`.
#[test]
fn response_golden() {
    golden::run("gemini", "response", |input| {
        match gemini::parse_response(&input.bytes, "gemini-requested") {
            Ok(response) => json!({
                "response": serde_json::to_value(&response).unwrap(),
                "native_stop": native_stop_json(&response.native_stop),
                "thinking": response
                    .choices
                    .iter()
                    .map(|c| thinking_json(&c.message.thinking))
                    .collect::<Vec<_>>(),
            }),
            Err(error) => json!({ "error": error_json(&error) }),
        }
    });
}

fn item_json(item: &StreamItem) -> Value {
    match item {
        StreamItem::Chunk(chunk) => {
            let mut value = json!({ "chunk": serde_json::to_value(chunk).unwrap() });
            if chunk.native_stop.is_some() {
                value["native_stop"] = native_stop_json(&chunk.native_stop);
            }
            let signatures: Vec<&str> = chunk
                .choices
                .iter()
                .filter_map(|c| c.delta.thinking_signature.as_deref())
                .collect();
            if !signatures.is_empty() {
                value["thinking_signature"] = json!(signatures);
            }
            value
        }
        StreamItem::Error(error) => json!({ "error": error_json(error) }),
        StreamItem::Done => json!("done"),
    }
}

/// Feeds `pieces` in order; the items and the `finish` result as JSON.
fn decode(pieces: &[&[u8]]) -> Value {
    let mut decoder = GeminiStreamDecoder::new("gemini-requested");
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(error) = decoder.push(piece, &mut out) {
            return json!({
                "items": out.iter().map(item_json).collect::<Vec<_>>(),
                "push_error": error_json(&error),
            });
        }
    }
    let finish = match decoder.finish(&mut out) {
        Ok(()) => json!("ok"),
        Err(error) => json!({ "error": error_json(&error) }),
    };
    json!({ "items": out.iter().map(item_json).collect::<Vec<_>>(), "finish": finish })
}

/// Input: a Gemini SSE body. Output: the canonical items and how `finish`
/// ended. Every split of the body into two reads, and one byte per read,
/// must decode the same.
#[test]
fn stream_golden() {
    golden::run_checked("gemini", "stream", |input, failures| {
        golden::decode_every_split(input, decode, failures)
    });
}

/// Input: `{"status", "body"}` (`body` a JSON value, or a string sent as
/// is). Output: the parsed error.
#[test]
fn errors_golden() {
    golden::run("gemini", "errors", |input| {
        let case = input.json();
        let status = case["status"].as_u64().unwrap() as u16;
        let body = match &case["body"] {
            Value::String(text) => text.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap(),
        };
        error_json(&gemini::parse_error(status, &body))
    });
}
