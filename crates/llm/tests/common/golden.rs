//! The golden-file runner every format's `golden_*` test uses.
//!
//! Fixtures live in `tests/golden/<format>/<direction>/`: `<case>.in.<ext>`
//! is an input and `<case>.out.json` what it must translate to, compared as
//! JSON values. Any other file there is an error, so a misnamed fixture
//! cannot be skipped silently. `UPDATE_GOLDEN=1 cargo test -p tollgate-llm
//! --test golden_<format>` rewrites the expectations instead of comparing;
//! review the diff by hand before committing.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tollgate_llm::LlmError;
use tollgate_llm::canonical::{ChatRequest, NativeStop, Thinking};

/// One input fixture.
pub struct Case {
    pub path: PathBuf,
    /// `<direction>/<case>`, for messages.
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Case {
    /// The input parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }

    fn expected_path(&self) -> PathBuf {
        let file = self.path.file_name().unwrap().to_str().unwrap();
        let case = &file[..file.find(".in.").unwrap()];
        self.path.with_file_name(format!("{case}.out.json"))
    }
}

/// Every input of `tests/golden/<format>/<direction>/`, sorted by name.
pub fn cases(format: &str, direction: &str) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format)
        .join(direction);
    let mut paths = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap();
        if file.contains(".in.") {
            paths.push(path);
        } else {
            assert!(
                file.ends_with(".out.json"),
                "{}: neither <case>.in.* nor <case>.out.json",
                path.display()
            );
        }
    }
    paths.sort();
    assert!(!paths.is_empty(), "no cases in {format}/{direction}");
    paths
        .into_iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_str().unwrap();
            let name = format!("{direction}/{}", &file[..file.find(".in.").unwrap()]);
            let bytes = fs::read(&path).unwrap();
            Case { path, name, bytes }
        })
        .collect()
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Compares `actual` with the case's `<case>.out.json` (under
/// `UPDATE_GOLDEN=1`, writes it instead); the mismatch, if any.
pub fn check(case: &Case, actual: &Value) -> Option<String> {
    let path = case.expected_path();
    if updating() {
        let mut text = serde_json::to_string_pretty(actual).unwrap();
        text.push('\n');
        fs::write(&path, text).unwrap();
        return None;
    }
    let expected: Value = match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    (expected != *actual).then(|| {
        format!(
            "{}\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            serde_json::to_string_pretty(&expected).unwrap(),
            serde_json::to_string_pretty(actual).unwrap()
        )
    })
}

/// Translates every case of `format/direction` and compares it with its
/// expectation; fails listing every mismatch. Returns how many cases ran.
pub fn run(format: &str, direction: &str, mut translate: impl FnMut(&Case) -> Value) -> usize {
    run_checked(format, direction, |case, _| translate(case))
}

/// [`run`], for a translation that also checks something of its own and
/// adds what failed to the list it is given.
pub fn run_checked(
    format: &str,
    direction: &str,
    mut translate: impl FnMut(&Case, &mut Vec<String>) -> Value,
) -> usize {
    let cases = cases(format, direction);
    let mut failures = Vec::new();
    for case in &cases {
        let actual = translate(case, &mut failures);
        failures.extend(check(case, &actual));
    }
    eprintln!("{format}/{direction}: {} golden cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} golden failures in {format}/{direction} (UPDATE_GOLDEN=1 rewrites the expectations):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    cases.len()
}

/// Decodes the case's bytes whole, split in two at every offset, and one
/// byte per read: all must decode the same, else a failure is added. The
/// whole decoding.
pub fn decode_every_split(
    case: &Case,
    decode: impl Fn(&[&[u8]]) -> Value,
    failures: &mut Vec<String>,
) -> Value {
    let bytes = &case.bytes[..];
    let whole = decode(&[bytes]);
    for at in 0..=bytes.len() {
        let (a, b) = bytes.split_at(at);
        if decode(&[a, b]) != whole {
            failures.push(format!("{}: differs when split at {at}", case.name));
            return whole;
        }
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    if decode(&singles) != whole {
        failures.push(format!("{}: differs byte by byte", case.name));
    }
    whole
}

pub fn error_json(error: &LlmError) -> Value {
    json!({
        "kind": format!("{:?}", error.kind),
        "status": error.status,
        "message": error.message,
        "param": error.param,
        "code": error.code,
    })
}

pub fn native_stop_json(stop: &Option<NativeStop>) -> Value {
    stop.as_ref().map_or(
        Value::Null,
        |s| json!({ "reason": s.reason, "stop_sequence": s.stop_sequence }),
    )
}

pub fn thinking_json(thinking: &[Thinking]) -> Value {
    thinking
        .iter()
        .map(|t| json!({ "text": t.text, "signature": t.signature, "redacted_data": t.redacted_data }))
        .collect()
}

/// A provider-request case: `{"request": <OpenAI Chat body>,
/// "thinking_budget"?, "top_k"?, "thinking"?: {"<message index>": [{"text",
/// "signature"?, "redacted_data"?}]}}` (the last three set canonical fields
/// that OpenAI JSON cannot carry).
pub fn request_from_case(case: &Value) -> ChatRequest {
    let mut request: ChatRequest = serde_json::from_value(case["request"].clone()).unwrap();
    request.thinking_budget = case["thinking_budget"].as_u64();
    request.top_k = case["top_k"].as_u64();
    if let Some(map) = case["thinking"].as_object() {
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
    request
}
