//! Durations as written in specs: `250ms`, `30s`, `5m`, `1h`, or sums like `1m30s`.
//!
//! The same grammar is enforced by the CEL rule [`DURATION_RULE`] in the schema,
//! so anything the apiserver accepts parses here.

use std::time::Duration;

/// CEL rule of durations that may be zero.
pub const DURATION_RULE: &str = "self.matches('^([0-9]+(ms|s|m|h))+$')";

/// CEL rule of durations that must be positive (timeouts): a digit other
/// than 0 somewhere, since units hold no digits.
pub const POSITIVE_DURATION_RULE: &str =
    "self.matches('^([0-9]+(ms|s|m|h))+$') && self.matches('[1-9]')";

/// What both the CEL rule and compile say of a bad positive duration.
pub const POSITIVE_DURATION_MESSAGE: &str =
    "must be a duration greater than zero, such as 500ms, 30s or 1m30s";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {0:?}: expected a number with a unit (ms, s, m, h), e.g. 30s or 1m30s")]
pub struct InvalidDuration(pub String);

/// Parses the spec duration grammar.
pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration(text.to_string());
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(invalid());
        }
        let value: u64 = text[start..i].parse().map_err(|_| invalid())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let part = match &text[unit_start..i] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "30", "s", "1.5s", "10sec", "-1s", "1m 30s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
