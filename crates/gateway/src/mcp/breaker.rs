//! Which MCP messages may be retried, and where a failed message goes
//! next. Pure. Each endpoint also has a [`Breaker`] (the shared one,
//! default policy): failures are no connection, no answer in time, or a
//! 5xx; while it is open messages get a clean JSON-RPC error at once
//! instead of each waiting out a timeout.

use std::time::Duration;

pub use crate::breaker::{Breaker, Gate};

/// Whether a message may be sent again after a failure that may not have
/// reached the backend: reads, lists and `ping`, and calls of read-only
/// tools. Writes are never repeated.
pub fn retryable(method: &str, read_only_tool: bool) -> bool {
    match method {
        "tools/call" => read_only_tool,
        "ping"
        | "server/discover"
        | "tools/list"
        | "resources/list"
        | "resources/templates/list"
        | "resources/read"
        | "prompts/list"
        | "prompts/get"
        | "completion/complete" => true,
        _ => false,
    }
}

/// Most sends of one message that may be repeated (the first included),
/// besides moving on from endpoints it never reached.
pub const MAX_ATTEMPTS: u32 = 3;

/// How one send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It never left: no connection (or the endpoint's circuit is open).
    /// Any message may go elsewhere.
    NotSent,
    /// It may have acted: the connection broke after sending, or the
    /// endpoint answered 502, 503 or 504. Only a retryable message is sent
    /// again.
    MayHaveActed,
}

/// What to do after a failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next endpoint, at once.
    NextEndpoint,
    /// Again, after a backoff, on the next endpoint in turn (the same one
    /// when the message is bound to it).
    Retry(Duration),
    /// The failure is the answer.
    GiveUp,
}

/// After `sends` sends of a message, the last failing with `failure`, and
/// `untried` endpoints not yet tried: where it goes next.
pub fn after(failure: Failure, retryable: bool, sends: u32, untried: usize) -> Step {
    let retries = sends.saturating_sub(1);
    match failure {
        Failure::NotSent if untried > 0 => Step::NextEndpoint,
        _ if !retryable || retries + 1 >= MAX_ATTEMPTS => Step::GiveUp,
        _ => Step::Retry(Duration::from_millis(100 * u64::from(retries + 1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreached_endpoints_are_passed_over_and_only_retryable_messages_repeat() {
        // A write that never left moves on to the next endpoint...
        assert_eq!(after(Failure::NotSent, false, 1, 2), Step::NextEndpoint);
        assert_eq!(after(Failure::NotSent, false, 2, 1), Step::NextEndpoint);
        // ...but is not repeated once every endpoint was tried, and is never
        // sent again when it may have acted.
        assert_eq!(after(Failure::NotSent, false, 3, 0), Step::GiveUp);
        assert_eq!(after(Failure::MayHaveActed, false, 1, 2), Step::GiveUp);
        // A read is repeated with a growing backoff, up to MAX_ATTEMPTS.
        assert_eq!(
            after(Failure::MayHaveActed, true, 1, 1),
            Step::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            after(Failure::NotSent, true, 2, 0),
            Step::Retry(Duration::from_millis(200))
        );
        assert_eq!(
            after(Failure::MayHaveActed, true, MAX_ATTEMPTS, 0),
            Step::GiveUp
        );
    }

    #[test]
    fn only_reads_and_read_only_calls_are_retried() {
        assert!(retryable("tools/list", false));
        assert!(retryable("resources/read", false));
        assert!(retryable("tools/call", true));
        assert!(!retryable("tools/call", false));
        assert!(!retryable("initialize", false));
        assert!(!retryable("notifications/cancelled", false));
    }
}
