//! What clients see of a provider's failures (AIGateway `spec.upstreamErrors`).
//! Pure. By default server errors and connection failures are reported with
//! a generic message (the original is logged), identifiers of the operator's
//! accounts are masked in the messages that do pass, and a provider's
//! `Retry-After` is capped at what the gateway accepts: a provider asking a
//! client to wait a day should not stall it that long when the gateway may
//! have another backend in a minute.

/// Masks tokens that identify the operator's provider accounts: OpenAI
/// `org-…`, `proj_…`, `user-…`, `sk-…` key fragments, Anthropic
/// `acct_…`/`org_…`, AWS ARNs and 12-digit account ids.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if is_identifier(token) {
            out.push_str("[redacted]");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in message.chars() {
        if c.is_whitespace() || matches!(c, ',' | '\'' | '"' | '(' | ')' | '[' | ']' | '`') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn is_identifier(token: &str) -> bool {
    let token = token.trim_end_matches(['.', ';', ':']);
    const PREFIXES: &[&str] = &["org-", "org_", "proj_", "user-", "acct_", "sk-", "arn:aws"];
    let prefixed = PREFIXES
        .iter()
        .any(|p| token.starts_with(p) && token.len() > p.len() + 3);
    let account_id = token.len() == 12 && token.bytes().all(|b| b.is_ascii_digit());
    prefixed || account_id
}

/// A connection failure as a category safe to show a client (the full chain,
/// with addresses and OS error numbers, is logged instead).
pub fn connect_failure(chain: &str) -> &'static str {
    let chain = chain.to_ascii_lowercase();
    if chain.contains("ssrf guard") {
        "its address is refused by the gateway's SSRF guard"
    } else if chain.contains("certificate") || chain.contains("tls") {
        "its TLS certificate is not trusted"
    } else if chain.contains("refused") {
        "connection refused"
    } else if chain.contains("dns") || chain.contains("resolve") || chain.contains("lookup") {
        "its host name did not resolve"
    } else if chain.contains("timed out") || chain.contains("timeout") {
        "connection timed out"
    } else if chain.contains("reset") || chain.contains("closed") {
        "connection closed"
    } else {
        "connection failed"
    }
}

/// The `Retry-After` to pass on: whole seconds, at most `max_seconds`. An
/// HTTP date or garbage becomes the cap.
pub fn retry_after(value: Option<&str>, max_seconds: u64) -> u64 {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(max_seconds, |seconds| seconds.min(max_seconds))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_identifiers_are_masked_and_the_rest_kept() {
        let message = "Rate limit reached for gpt-4o in organization org-AbC123xyz on tokens per min (TPM): Limit 30000. Project proj_9f8e7d6c.";
        let scrubbed = scrub(message);
        assert_eq!(
            scrubbed,
            "Rate limit reached for gpt-4o in organization [redacted] on tokens per min (TPM): Limit 30000. Project [redacted]"
        );
        assert_eq!(
            scrub("User: arn:aws:iam::123456789012:user/ci is not authorized"),
            "User: [redacted] is not authorized"
        );
        assert_eq!(
            scrub("account 123456789012 throttled"),
            "account [redacted] throttled"
        );
        assert_eq!(
            scrub("max_tokens: 100000 > 4096"),
            "max_tokens: 100000 > 4096"
        );
    }

    #[test]
    fn connect_failures_become_categories() {
        assert_eq!(
            connect_failure(
                "client error (Connect): tcp connect error: Connection refused (os error 111)"
            ),
            "connection refused"
        );
        assert_eq!(
            connect_failure("invalid peer certificate: UnknownIssuer"),
            "its TLS certificate is not trusted"
        );
        assert_eq!(connect_failure("something odd"), "connection failed");
    }

    #[test]
    fn retry_after_is_capped() {
        assert_eq!(retry_after(Some("86400"), 60), 60);
        assert_eq!(retry_after(Some("7"), 60), 7);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), 60), 60);
        assert_eq!(retry_after(None, 60), 60);
        assert_eq!(retry_after(Some("0"), 60), 1);
    }
}
