//! Golden tests for the Anthropic Messages translation: every
//! `tests/golden/anthropic/<direction>/<case>.in.*` is translated and compared
//! (as JSON values, streams as event sequences) with `<case>.out.json`.
//! `UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test golden_anthropic`
//! rewrites the expectations; review the diff by hand before committing.

mod common;

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use common::*;
use serde_json::{Value, json};
use tollgate_llm::anthropic::{dialect, provider};
use tollgate_llm::{LlmError, StreamDecoder, StreamEncoder};

const MODEL: &str = "claude-sonnet-4-5";

fn dir(direction: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/anthropic")
        .join(direction)
}

fn result_json<T>(result: Result<T, LlmError>, ok: impl FnOnce(T) -> Value) -> Value {
    match result {
        Ok(value) => ok(value),
        Err(error) => json!({"error": error_to_json(&error)}),
    }
}

/// Runs `translate` on every input of `direction` and compares with the
/// expected output; returns how many cases ran.
fn run(direction: &str, translate: impl Fn(&[u8]) -> Value) -> usize {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(dir(direction))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".in."))
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no cases in {direction}");
    let mut failures = Vec::new();
    for input in &inputs {
        let name = input.file_name().unwrap().to_str().unwrap();
        let case = &name[..name.find(".in.").unwrap()];
        let expected_path = input.with_file_name(format!("{case}.out.json"));
        let actual = translate(&std::fs::read(input).unwrap());
        if update {
            let mut text = serde_json::to_string_pretty(&actual).unwrap();
            text.push('\n');
            std::fs::write(&expected_path, text).unwrap();
            continue;
        }
        let expected: Value = match std::fs::read(&expected_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(_) => {
                failures.push(format!("{direction}/{case}: no {case}.out.json"));
                continue;
            }
        };
        if actual != expected {
            failures.push(format!(
                "{direction}/{case}:\nexpected {}\n  actual {}",
                serde_json::to_string_pretty(&expected).unwrap(),
                serde_json::to_string_pretty(&actual).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    inputs.len()
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
    run("provider_stream", |body| {
        let whole = decode_all(&[body]);
        // Split at every byte boundary: the same items.
        for at in 1..body.len() {
            assert_eq!(
                decode_all(&[&body[..at], &body[at..]]),
                whole,
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode_all(&bytes), whole, "one byte at a time");
        whole
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
