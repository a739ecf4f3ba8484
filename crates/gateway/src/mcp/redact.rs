//! Tool-call arguments: redaction before a call leaves the gateway
//! (configured paths, and values that look like personal data or secrets),
//! and the shape of arguments for audit records (types and sizes, never
//! values). Pure: no IO.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};
use tollgate_config::snapshot::mcp::Redaction;

/// What a redacted value becomes.
pub fn marker(kind: &str) -> Value {
    Value::String(format!("[REDACTED:{kind}]"))
}

struct Pattern {
    kind: &'static str,
    regex: Regex,
    /// A further check of a match (card numbers: Luhn).
    valid: fn(&str) -> bool,
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let any = |_: &str| true;
    let build = |kind, pattern: &str, valid: fn(&str) -> bool| Pattern {
        kind,
        regex: Regex::new(pattern).unwrap_or_else(|e| unreachable!("built-in pattern {kind}: {e}")),
        valid,
    };
    vec![
        build(
            "EMAIL",
            r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b",
            any,
        ),
        build("CARD", r"\b(?:\d[ -]?){12,18}\d\b", luhn),
        build("SSN", r"\b\d{3}-\d{2}-\d{4}\b", any),
        build(
            "SECRET",
            r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[baprs]-[A-Za-z0-9-]{10,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
            any,
        ),
        build(
            "SECRET",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
            any,
        ),
    ]
});

fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Redacts `arguments` in place as `policy` says; returns where (JSON
/// pointer-ish paths such as `auth.token` or `cards[0]`) and what kind.
pub fn redact_arguments(arguments: &mut Value, policy: &Redaction) -> Vec<String> {
    let mut redacted = Vec::new();
    for path in &policy.paths {
        redact_path(arguments, path, String::new(), &mut redacted);
    }
    if policy.pii {
        redact_pii(arguments, String::new(), &mut redacted);
    }
    redacted
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn redact_path(value: &mut Value, path: &[String], at: String, out: &mut Vec<String>) {
    let Some((first, rest)) = path.split_first() else {
        if !matches!(value, Value::Null) {
            *value = marker("FIELD");
            out.push(at);
        }
        return;
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if first == "*" || first == key {
                    redact_path(child, rest, join(&at, key), out);
                }
            }
        }
        Value::Array(items) if first == "*" => {
            for (index, child) in items.iter_mut().enumerate() {
                redact_path(child, rest, format!("{at}[{index}]"), out);
            }
        }
        _ => {}
    }
}

fn redact_pii(value: &mut Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            let mut changed = false;
            let mut result = text.clone();
            for pattern in PATTERNS.iter() {
                let replaced = pattern
                    .regex
                    .replace_all(&result, |caps: &regex::Captures<'_>| {
                        let found = &caps[0];
                        if (pattern.valid)(found) {
                            changed = true;
                            out.push(format!(
                                "{}:{}",
                                if at.is_empty() { "$" } else { &at },
                                pattern.kind
                            ));
                            format!("[REDACTED:{}]", pattern.kind)
                        } else {
                            found.to_string()
                        }
                    });
                result = replaced.into_owned();
            }
            if changed {
                *text = result;
            }
        }
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                redact_pii(child, join(&at, key), out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                redact_pii(child, format!("{at}[{index}]"), out);
            }
        }
        _ => {}
    }
}

/// The arguments' shape for audit: keys kept, values replaced by their
/// type (and a string's length), so records show what was sent without
/// holding it.
pub fn shape(value: &Value) -> Value {
    match value {
        Value::Null => Value::String("null".into()),
        Value::Bool(_) => Value::String("bool".into()),
        Value::Number(_) => Value::String("number".into()),
        Value::String(text) if text.starts_with("[REDACTED:") => Value::String(text.clone()),
        Value::String(text) => Value::String(format!("string({})", text.chars().count())),
        Value::Array(items) => Value::Array(items.iter().take(8).map(shape).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .take(64)
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(paths: &[&str], pii: bool) -> Redaction {
        Redaction {
            paths: paths
                .iter()
                .map(|p| p.split('.').map(str::to_string).collect())
                .collect(),
            pii,
        }
    }

    #[test]
    fn configured_paths_are_redacted_wherever_they_match() {
        let mut args = json!({"user": "ada", "auth": {"token": "t0k3n", "scheme": "basic"},
            "rows": [{"ssn": "1"}, {"ssn": "2"}]});
        let redacted = redact_arguments(&mut args, &policy(&["auth.token", "rows.*.ssn"], false));
        assert_eq!(args["auth"]["token"], "[REDACTED:FIELD]");
        assert_eq!(args["auth"]["scheme"], "basic");
        assert_eq!(args["rows"][1]["ssn"], "[REDACTED:FIELD]");
        assert_eq!(redacted, ["auth.token", "rows[0].ssn", "rows[1].ssn"]);
    }

    #[test]
    fn personal_data_and_secrets_in_strings_are_redacted() {
        let mut args = json!({
            "note": "mail ada@example.com, card 4111 1111 1111 1111, ssn 123-45-6789",
            "order": "1234567812345678",
            "key": "use sk-abcdefghijklmnopqrstuvwx please",
            "list": ["AKIAABCDEFGHIJKLMNOP"],
        });
        let redacted = redact_arguments(&mut args, &policy(&[], true));
        assert_eq!(
            args["note"],
            "mail [REDACTED:EMAIL], card [REDACTED:CARD], ssn [REDACTED:SSN]"
        );
        assert_eq!(args["order"], "1234567812345678", "fails Luhn: not a card");
        assert_eq!(args["key"], "use [REDACTED:SECRET] please");
        assert_eq!(args["list"][0], "[REDACTED:SECRET]");
        assert!(redacted.contains(&"note:CARD".to_string()), "{redacted:?}");
        assert!(
            redacted.contains(&"list[0]:SECRET".to_string()),
            "{redacted:?}"
        );
    }

    #[test]
    fn shapes_hold_no_values() {
        let args = json!({"q": "secret text", "n": 3, "flags": [true], "auth": "[REDACTED:FIELD]"});
        assert_eq!(
            shape(&args),
            json!({"q": "string(11)", "n": "number", "flags": ["bool"], "auth": "[REDACTED:FIELD]"})
        );
    }
}
