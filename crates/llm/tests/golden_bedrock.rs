//! Golden tests for the Bedrock provider format. Each `NAME.in.json` under
//! `tests/golden/bedrock/{request,response,stream,errors}/` is an input and
//! `NAME.out.json` what it must translate to. `UPDATE_GOLDEN=1`
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

mod common;

use common::golden::{self, error_json, native_stop_json, request_from_case, thinking_json};
use serde_json::{Value, json};
use tollgate_llm::bedrock::{self, ConverseStreamDecoder, encode_event, encode_exception};
use tollgate_llm::{StreamDecoder, StreamItem};

/// Runs `translate` on every (JSON) input of `kind` and compares.
fn run(kind: &str, translate: impl Fn(&Value) -> Value) {
    golden::run("bedrock", kind, |case| translate(&case.json()));
}

#[test]
fn requests() {
    run("request", |input| {
        let request = request_from_case(input);
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
    let mut failures = Vec::new();
    for mut case in golden::cases("bedrock", "stream") {
        case.bytes = encode_frames(&case.json());
        golden::decode_every_split(&case, decode, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
    for case in golden::cases("bedrock", "response") {
        let body = serde_json::to_vec(&case.json()).unwrap();
        for at in 0..body.len() {
            let _ = bedrock::parse_response(&body[..at], "m");
        }
    }
    for case in golden::cases("bedrock", "errors") {
        let input = case.json();
        let body = serde_json::to_vec(&input["body"]).unwrap();
        for at in 0..body.len() {
            let _ = bedrock::parse_error(500, input["errorType"].as_str(), &body[..at]);
        }
    }
}
