//! Golden tests for the Bedrock provider format. Each `NAME.json` under
//! `tests/golden/bedrock/{request,response,stream,errors}/` is an input and
//! `NAME.expected.json` what it must translate to. `UPDATE_GOLDEN=1`
//! rewrites the expectations (review the diff by hand).
//!
//! Inputs:
//! * `request/`: `{"request": <OpenAI Chat body>, "thinking_budget"?, "top_k"?,
//!   "thinking"?: {"<message index>": [{"text", "signature"?, "redacted_data"?}]}}`
//!   (the last three set canonical fields that OpenAI JSON cannot carry);
//!   expected: the Converse body, or `{"error": ...}`.
//! * `response/`: a Converse response body; expected: the canonical response
//!   plus its non-OpenAI fields (`thinking`, `native_stop`).
//! * `stream/`: a list of `{"eventType"|"exceptionType", "payload"}` frames,
//!   encoded to binary here so fixtures stay readable; expected: the decoded
//!   items and how `finish` ended.
//! * `errors/`: `{"status", "errorType"?, "body"}`; expected: the canonical error.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tollgate_llm::bedrock::{self, ConverseStreamDecoder, encode_event, encode_exception};
use tollgate_llm::canonical::{ChatRequest, NativeStop, Thinking};
use tollgate_llm::{LlmError, StreamDecoder, StreamItem};

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/bedrock")
        .join(kind)
}

/// Every `(name, input)` in a fixture directory, sorted.
fn inputs(kind: &str) -> Vec<(PathBuf, Value)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {kind}");
    paths
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, value)
        })
        .collect()
}

/// Compares with (or, under `UPDATE_GOLDEN=1`, writes) `NAME.expected.json`.
fn check(input: &Path, actual: &Value) -> Option<String> {
    let expected_path = input.with_extension("expected.json");
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&expected_path, &pretty).unwrap();
        return None;
    }
    let Ok(expected) = fs::read_to_string(&expected_path) else {
        return Some(format!("{} missing", expected_path.display()));
    };
    let expected: Value = serde_json::from_str(&expected).unwrap();
    (expected != *actual).then(|| format!("{}:\n{pretty}", expected_path.display()))
}

fn run(kind: &str, f: impl Fn(&Value) -> Value) {
    let failures: Vec<String> = inputs(kind)
        .iter()
        .filter_map(|(path, input)| check(path, &f(input)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} golden mismatches (UPDATE_GOLDEN=1 rewrites):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn error_json(error: &LlmError) -> Value {
    json!({
        "kind": format!("{:?}", error.kind),
        "status": error.status,
        "message": error.message,
        "param": error.param,
        "code": error.code,
    })
}

fn native_stop_json(stop: &Option<NativeStop>) -> Value {
    stop.as_ref().map_or(
        Value::Null,
        |s| json!({ "reason": s.reason, "stop_sequence": s.stop_sequence }),
    )
}

fn thinking_json(thinking: &[Thinking]) -> Value {
    thinking
        .iter()
        .map(|t| json!({ "text": t.text, "signature": t.signature, "redacted_data": t.redacted_data }))
        .collect()
}

#[test]
fn requests() {
    run("request", |input| {
        let mut request: ChatRequest = serde_json::from_value(input["request"].clone()).unwrap();
        request.thinking_budget = input["thinking_budget"].as_u64();
        request.top_k = input["top_k"].as_u64();
        if let Some(map) = input["thinking"].as_object() {
            for (index, blocks) in map {
                let message = &mut request.messages[index.parse::<usize>().unwrap()];
                message.thinking = blocks
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| Thinking {
                        text: b["text"].as_str().unwrap_or_default().into(),
                        signature: b["signature"].as_str().map(Into::into),
                        redacted_data: b["redacted_data"].as_str().map(Into::into),
                    })
                    .collect();
            }
        }
        match bedrock::request_body(&request) {
            Ok(body) => json!({
                "path": bedrock::request_path(&request.model, request.stream),
                "body": serde_json::from_slice::<Value>(&body).unwrap(),
            }),
            Err(error) => json!({ "error": error_json(&error) }),
        }
    });
}

#[test]
fn responses() {
    run("response", |input| {
        let body = serde_json::to_vec(input).unwrap();
        match bedrock::parse_response(&body, "anthropic.claude-sonnet-4-v1:0") {
            Ok(response) => json!({
                "response": response,
                "thinking": thinking_json(&response.choices[0].message.thinking),
                "native_stop": native_stop_json(&response.native_stop),
            }),
            Err(error) => json!({ "error": error_json(&error) }),
        }
    });
}

fn encode_frames(input: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    for frame in input.as_array().unwrap() {
        let payload = serde_json::to_vec(&frame["payload"]).unwrap();
        if let Some(event) = frame["eventType"].as_str() {
            bytes.extend(encode_event(event, &payload));
        } else {
            let exception = frame["exceptionType"].as_str().unwrap();
            bytes.extend(encode_exception(exception, &payload));
        }
    }
    bytes
}

/// Decodes `bytes` fed in the given pieces; the items and `finish`'s result.
fn decode(pieces: &[&[u8]]) -> Value {
    let mut decoder = ConverseStreamDecoder::new("anthropic.claude-sonnet-4-v1:0");
    let mut out = Vec::new();
    let mut ending = Value::from("ok");
    for piece in pieces {
        if let Err(error) = decoder.push(piece, &mut out) {
            ending = json!({ "push_error": error_json(&error) });
            break;
        }
    }
    if ending == "ok"
        && let Err(error) = decoder.finish(&mut out)
    {
        ending = json!({ "finish_error": error_json(&error) });
    }
    let items: Vec<Value> = out
        .iter()
        .map(|item| match item {
            StreamItem::Chunk(chunk) => {
                let mut value = json!({ "chunk": chunk });
                if let Some(choice) = chunk.choices.first()
                    && let Some(signature) = &choice.delta.thinking_signature
                {
                    value["thinking_signature"] = json!(signature);
                }
                if chunk.native_stop.is_some() {
                    value["native_stop"] = native_stop_json(&chunk.native_stop);
                }
                value
            }
            StreamItem::Error(error) => json!({ "error": error_json(error) }),
            StreamItem::Done => json!("done"),
        })
        .collect();
    json!({ "items": items, "ending": ending })
}

#[test]
fn streams() {
    run("stream", |input| decode(&[&encode_frames(input)]));
}

#[test]
fn streams_split_at_every_byte_decode_the_same() {
    for (path, input) in inputs("stream") {
        let bytes = encode_frames(&input);
        let whole = decode(&[&bytes]);
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(decode(&[a, b]), whole, "{} split at {at}", path.display());
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode(&singles), whole, "{} byte by byte", path.display());
    }
}

#[test]
fn errors() {
    run("errors", |input| {
        let body = match &input["body"] {
            Value::String(text) => text.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap(),
        };
        let status = input["status"].as_u64().unwrap() as u16;
        error_json(&bedrock::parse_error(
            status,
            input["errorType"].as_str(),
            &body,
        ))
    });
}

/// Every prefix of every response and error fixture parses or fails cleanly.
#[test]
fn truncated_bodies_never_panic() {
    for (_, input) in inputs("response") {
        let body = serde_json::to_vec(&input).unwrap();
        for at in 0..body.len() {
            let _ = bedrock::parse_response(&body[..at], "m");
        }
    }
    for (_, input) in inputs("errors") {
        let body = serde_json::to_vec(&input["body"]).unwrap();
        for at in 0..body.len() {
            let _ = bedrock::parse_error(500, input["errorType"].as_str(), &body[..at]);
        }
    }
}
