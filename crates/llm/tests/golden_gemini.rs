//! Golden tests for the Gemini provider format. Each direction has a folder
//! under `tests/golden/gemini/`: `<case>.in.json` (or `.sse`) is the input,
//! `<case>.out.json` the expected output, compared as JSON values.
//! `UPDATE_GOLDEN=1 cargo test -p tollgate-llm --test golden_gemini` rewrites
//! the expectations; review the diff by hand before committing.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tollgate_llm::canonical::{ChatRequest, Message, NativeStop, Thinking};
use tollgate_llm::gemini::{self, GeminiStreamDecoder};
use tollgate_llm::{LlmError, StreamDecoder, StreamItem};

fn dir(direction: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/gemini")
        .join(direction)
}

/// The inputs of one direction, sorted, with the given extension.
fn cases(direction: &str, extension: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir(direction))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(extension))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no {direction} cases");
    cases
}

fn out_path(input: &Path) -> PathBuf {
    let name = input.file_name().unwrap().to_string_lossy();
    let stem = name.split_once('.').unwrap().0;
    input.with_file_name(format!("{stem}.out.json"))
}

/// Compares with (or, under UPDATE_GOLDEN, writes) the expectation.
fn check(input: &Path, actual: Value, failures: &mut Vec<String>) {
    let path = out_path(input);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let mut text = serde_json::to_string_pretty(&actual).unwrap();
        text.push('\n');
        fs::write(&path, text).unwrap();
        return;
    }
    let expected: Value = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(e) => {
            failures.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    if expected != actual {
        failures.push(format!(
            "{}\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            serde_json::to_string_pretty(&expected).unwrap(),
            serde_json::to_string_pretty(&actual).unwrap()
        ));
    }
}

fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
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

fn native_json(native: &Option<NativeStop>) -> Value {
    native.as_ref().map_or(
        Value::Null,
        |n| json!({ "reason": n.reason, "stop_sequence": n.stop_sequence }),
    )
}

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
    let mut failures = Vec::new();
    for input in cases("request", ".in.json") {
        let case: Value = serde_json::from_slice(&fs::read(&input).unwrap()).unwrap();
        let mut request: ChatRequest = serde_json::from_value(case["request"].clone()).unwrap();
        request.thinking_budget = case["thinking_budget"].as_u64();
        request.top_k = case["top_k"].as_u64();
        if let Some(thinking) = case["thinking"].as_object() {
            for (index, blocks) in thinking {
                let message: &mut Message = &mut request.messages[index.parse::<usize>().unwrap()];
                message.thinking = blocks
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| Thinking {
                        text: b["text"].as_str().unwrap_or_default().into(),
                        signature: b["signature"].as_str().map(Into::into),
                        redacted_data: None,
                    })
                    .collect();
            }
        }
        let model = case["model"].as_str().unwrap();
        let actual = match gemini::request_body(&request, model) {
            Ok(body) => json!({
                "path": gemini::request_path(model, request.stream),
                "body": serde_json::from_slice::<Value>(&body).unwrap(),
            }),
            Err(error) => json!({ "error": error_json(&error) }),
        };
        check(&input, actual, &mut failures);
    }
    report(failures);
}

/// Input: a Gemini body. Output: `{"response", "native_stop", "thinking"}`
/// (thinking per choice) or `{"error"}`.
#[test]
fn response_golden() {
    let mut failures = Vec::new();
    for input in cases("response", ".in.json") {
        let body = fs::read(&input).unwrap();
        let actual = match gemini::parse_response(&body, "gemini-requested") {
            Ok(response) => json!({
                "response": serde_json::to_value(&response).unwrap(),
                "native_stop": native_json(&response.native_stop),
                "thinking": response
                    .choices
                    .iter()
                    .map(|c| thinking_json(&c.message.thinking))
                    .collect::<Vec<_>>(),
            }),
            Err(error) => json!({ "error": error_json(&error) }),
        };
        check(&input, actual, &mut failures);
    }
    report(failures);
}

fn item_json(item: &StreamItem) -> Value {
    match item {
        StreamItem::Chunk(chunk) => {
            let mut value = json!({ "chunk": serde_json::to_value(chunk).unwrap() });
            if chunk.native_stop.is_some() {
                value["native_stop"] = native_json(&chunk.native_stop);
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
    let mut failures = Vec::new();
    for input in cases("stream", ".sse") {
        let body = fs::read(&input).unwrap();
        let whole = decode(&[&body]);
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            if decode(&[a, b]) != whole {
                failures.push(format!(
                    "{}: differs when split at {split}",
                    input.display()
                ));
                break;
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        if decode(&bytes) != whole {
            failures.push(format!("{}: differs byte by byte", input.display()));
        }
        check(&input, whole, &mut failures);
    }
    report(failures);
}

/// Input: `{"status", "body"}` (`body` a JSON value, or a string sent as
/// is). Output: the parsed error.
#[test]
fn errors_golden() {
    let mut failures = Vec::new();
    for input in cases("errors", ".in.json") {
        let case: Value = serde_json::from_slice(&fs::read(&input).unwrap()).unwrap();
        let status = case["status"].as_u64().unwrap() as u16;
        let body = match &case["body"] {
            Value::String(text) => text.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap(),
        };
        check(
            &input,
            error_json(&gemini::parse_error(status, &body)),
            &mut failures,
        );
    }
    report(failures);
}
