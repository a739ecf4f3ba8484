//! A backend's SSE stream relayed event by event, each rewritten (or
//! dropped) on its way to the client: `/mcp` renames ids of server
//! requests, translation between revisions reshapes messages.

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};

use crate::http::BoxError;

/// Longest event the gateway holds while rewriting a stream.
const MAX_PENDING_EVENT: usize = 8 * 1024 * 1024;

pub(super) type Frames = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + Sync>,
>;

/// `body`'s events, each as `rewrite` makes it (without the blank line that
/// ends it; `None` drops it). An event larger than [`MAX_PENDING_EVENT`]
/// ends the stream with an error rather than being passed on unread.
pub(super) fn rewrite(
    body: Incoming,
    rewrite: impl FnMut(&str) -> Option<String> + Send + Sync + 'static,
) -> Frames {
    struct Relay<F> {
        body: Incoming,
        pending: BytesMut,
        ended: bool,
        rewrite: F,
    }
    let start = Relay {
        body,
        pending: BytesMut::new(),
        ended: false,
        rewrite,
    };
    Box::pin(stream::unfold(start, |mut relay| async move {
        loop {
            if let Some(end) = find_event_end(&relay.pending) {
                let event = relay.pending.split_to(end + 2);
                let text = String::from_utf8_lossy(&event[..end]).into_owned();
                if text.trim().is_empty() {
                    continue;
                }
                match (relay.rewrite)(&text) {
                    Some(mut out) => {
                        // However the rewrite ended it, one blank line ends the event.
                        while !out.ends_with("\n\n") {
                            out.push('\n');
                        }
                        return Some((Ok(Frame::data(Bytes::from(out))), relay));
                    }
                    None => continue,
                }
            }
            if relay.ended {
                return None;
            }
            match relay.body.frame().await {
                None => {
                    relay.ended = true;
                    if !relay.pending.iter().all(u8::is_ascii_whitespace) {
                        relay.pending.extend_from_slice(b"\n\n");
                    }
                }
                Some(Err(error)) => {
                    relay.ended = true;
                    return Some((Err(Box::new(error) as BoxError), relay));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        // CRLF and LF both end SSE lines; one form is simpler to cut.
                        relay
                            .pending
                            .extend(data.iter().copied().filter(|b| *b != b'\r'));
                        if relay.pending.len() > MAX_PENDING_EVENT {
                            relay.ended = true;
                            let error: BoxError =
                                "MCP server sent an event too large to relay".into();
                            return Some((Err(error), relay));
                        }
                    }
                }
            }
        }
    }))
}

fn find_event_end(buffer: &[u8]) -> Option<usize> {
    memchr::memmem::find(buffer, b"\n\n")
}

/// The JSON message in an event's `data:` lines, if it has one, and the
/// event rebuilt around a new message.
pub(super) fn data_of(event: &str) -> Option<serde_json::Value> {
    let data: Vec<&str> = event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|value| value.strip_prefix(' ').unwrap_or(value))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// `event` with its data replaced by `message` (its other fields kept).
pub(super) fn with_data(event: &str, message: &serde_json::Value) -> String {
    let mut out = String::new();
    for line in event.lines().filter(|line| !line.starts_with("data:")) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&message.to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_and_rebuilt_with_their_other_fields() {
        let event = "id: 4\nevent: message\ndata: {\"a\":\ndata: 1}";
        assert_eq!(data_of(event), Some(serde_json::json!({"a": 1})));
        assert_eq!(data_of(": keepalive"), None);
        assert_eq!(
            with_data(event, &serde_json::json!({"b": 2})),
            "id: 4\nevent: message\ndata: {\"b\":2}\n"
        );
    }
}
