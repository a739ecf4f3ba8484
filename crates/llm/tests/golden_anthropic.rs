//! Golden tests for the Anthropic Messages translation: every
//! `tests/golden/anthropic/<direction>/<case>.in.*` is translated and compared
//! (as JSON values, streams as event sequences) with `<case>.out.json`.
//! `UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test golden_anthropic`
//! rewrites the expectations; review the diff by hand before committing.

mod common;

use bytes::BytesMut;
use common::golden;
use common::*;
use serde_json::{Value, json};
use tollgate_llm::anthropic::{dialect, provider};
use tollgate_llm::{LlmError, StreamDecoder, StreamEncoder};

const MODEL: &str = "claude-sonnet-4-5";

fn result_json<T>(result: Result<T, LlmError>, ok: impl FnOnce(T) -> Value) -> Value {
    match result {
        Ok(value) => ok(value),
        Err(error) => json!({"error": error_to_json(&error)}),
    }
}

/// Runs `translate` on every input of `direction` and compares with the
/// expected output; returns how many cases ran.
fn run(direction: &str, translate: impl Fn(&[u8]) -> Value) -> usize {
    golden::run("anthropic", direction, |case| translate(&case.bytes))
}

fn json_in(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn dialect_request() {
    run("dialect_request", |body| {
        result_json(dialect::parse_request(body), |r| request_to_json(&r))
    });
}

#[test]
fn dialect_count_tokens() {
    run("dialect_count_tokens", |body| {
        result_json(dialect::parse_count_tokens(body), |r| request_to_json(&r))
    });
}

#[test]
fn dialect_response() {
    run("dialect_response", |body| {
        json_in(&dialect::render_response(&response_from_json(json_in(
            body,
        ))))
    });
}

/// Input: `[{"chunk": ..} | "done" | {"error": {"kind", "message"}}]`.
pub fn encode_items(items: &Value) -> BytesMut {
    let mut encoder = dialect::MessagesStreamEncoder::new();
    let mut out = BytesMut::new();
    for item in items.as_array().unwrap() {
        if item == "done" {
            encoder.done(&mut out);
        } else if let Some(chunk) = item.get("chunk") {
            encoder.chunk(&chunk_from_json(chunk.clone()), &mut out);
        } else if let Some(error) = item.get("error") {
            let error = LlmError::new(
                kind_from_str(error["kind"].as_str().unwrap()),
                error["message"].as_str().unwrap(),
            );
            encoder.error(&error, &mut out);
        }
    }
    out
}

#[test]
fn dialect_stream() {
    run("dialect_stream", |body| {
        let events = sse_events(&encode_items(&json_in(body)));
        assert_valid_sequence(&events);
        Value::Array(events)
    });
}

#[test]
fn provider_request() {
    run("provider_request", |body| {
        result_json(
            provider::request_body(&request_from_json(json_in(body)), MODEL),
            |b| json_in(&b),
        )
    });
}

#[test]
fn provider_response() {
    run("provider_response", |body| {
        result_json(provider::parse_response(body), |r| response_to_json(&r))
    });
}

pub fn decode_all(chunks: &[&[u8]]) -> Value {
    let mut decoder = provider::MessagesStreamDecoder::new();
    let mut out = Vec::new();
    let mut items: Vec<Value> = Vec::new();
    for chunk in chunks {
        if let Err(error) = decoder.push(chunk, &mut out) {
            items.extend(out.iter().map(item_to_json));
            items.push(json!({"push_error": error_to_json(&error)}));
            return Value::Array(items);
        }
    }
    let finished = decoder.finish(&mut out);
    items.extend(out.iter().map(item_to_json));
    if let Err(error) = finished {
        items.push(json!({"finish_error": error_to_json(&error)}));
    }
    Value::Array(items)
}

#[test]
fn provider_stream() {
    // Split at every byte boundary: the same items.
    golden::run_checked("anthropic", "provider_stream", |case, failures| {
        golden::decode_every_split(case, decode_all, failures)
    });
}

/// Input: `{"status": N, "body": <provider error body>}`; output: the parsed
/// error and how the dialect renders it back.
#[test]
fn errors() {
    run("errors", |input| {
        let input = json_in(input);
        let body = match &input["body"] {
            Value::String(text) => text.as_bytes().to_vec(),
            other => serde_json::to_vec(other).unwrap(),
        };
        let error = provider::parse_error(input["status"].as_u64().unwrap() as u16, &body);
        json!({
            "parsed": error_to_json(&error),
            "rendered": json_in(&dialect::render_error(&error)),
        })
    });
}
