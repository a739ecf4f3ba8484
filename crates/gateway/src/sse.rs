//! Server-sent-event relay for OpenAI streams: forwards whole events as soon
//! as they are complete, reads the usage chunk, and drops it when the client
//! did not ask for usage (the gateway always asks, to account tokens).
//! Pure: bytes in, bytes out.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use tollgate_llm::Usage;

/// Reads `usage` out of a complete (non-streamed) response body.
pub fn usage_of_body(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct WithUsage {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}

/// Largest incomplete event held while waiting for its end. A provider that
/// never delimits events (or ignores `stream`) must not grow memory forever.
pub const MAX_PENDING_EVENT: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("provider sent an event larger than {MAX_PENDING_EVENT} bytes without a delimiter")]
pub struct EventTooLarge;

#[derive(Debug, Default)]
pub struct SseRelay {
    pending: BytesMut,
    /// How much of `pending` is known to hold no event delimiter, so each
    /// read scans only new bytes.
    scanned: usize,
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    finished: bool,
    /// Count generated characters (a budget may end the stream); off, the
    /// fast path stays zero-copy and parses nothing.
    count_output: bool,
    output_chars: u64,
}

impl SseRelay {
    /// `strip_usage_chunk`: drop the final `choices: []` usage event.
    pub fn new(strip_usage_chunk: bool) -> Self {
        Self {
            strip_usage_chunk,
            ..Self::default()
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Counts the characters of generated text (content, reasoning, tool
    /// arguments) of every event from now on.
    pub fn counting_output(mut self) -> Self {
        self.count_output = true;
        self
    }

    pub fn output_chars(&self) -> u64 {
        self.output_chars
    }

    /// True once `data: [DONE]` went by: the stream ended cleanly.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Feeds upstream bytes; returns what to forward now (complete events only).
    pub fn push(&mut self, chunk: Bytes) -> Result<Option<Bytes>, EventTooLarge> {
        // Fast path: a chunk of whole events with no usage in it passes
        // through untouched, without a copy.
        if !self.count_output
            && self.pending.is_empty()
            && ends_with_boundary(&chunk)
            && !mentions_usage(&chunk)
        {
            self.note_done(&chunk);
            return Ok(Some(chunk));
        }
        self.pending.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        // A delimiter may straddle the previous read: back up 3 bytes.
        let mut from = self.scanned.saturating_sub(3);
        while let Some(end) = event_end(&self.pending[from..]).map(|e| e + from) {
            let event = self.pending.split_to(end).freeze();
            from = 0;
            if self.keep(&event) {
                out.extend_from_slice(&event);
            }
        }
        self.scanned = self.pending.len();
        if self.pending.len() > MAX_PENDING_EVENT {
            return Err(EventTooLarge);
        }
        Ok(if out.is_empty() {
            None
        } else {
            Some(out.freeze())
        })
    }

    /// At upstream EOF: whatever partial event is left, unchanged.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.pending.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.pending).freeze();
        self.scanned = 0;
        self.note_done(&rest);
        Some(rest)
    }

    /// Inspects one complete event; false means drop it.
    fn keep(&mut self, event: &Bytes) -> bool {
        self.note_done(event);
        if self.count_output
            && let Some(data) = event_data(event)
            && let Ok(chunk) = serde_json::from_slice::<tollgate_llm::ChatChunk>(data)
        {
            self.output_chars += generated_chars(&chunk);
        }
        if !mentions_usage(event) {
            return true;
        }
        #[derive(Deserialize)]
        struct Chunk {
            #[serde(default)]
            choices: Vec<IgnoredAny>,
            usage: Option<Usage>,
        }
        let Some(data) = event_data(event) else {
            return true;
        };
        match serde_json::from_slice::<Chunk>(data) {
            Ok(Chunk {
                choices,
                usage: Some(usage),
            }) => {
                self.usage = Some(usage);
                !(self.strip_usage_chunk && choices.is_empty())
            }
            _ => true,
        }
    }

    /// `data: [DONE]` at the start of a line; the same text inside model
    /// output sits within a JSON string on a `data: {` line and does not count.
    fn note_done(&mut self, bytes: &[u8]) {
        if !self.finished {
            self.finished = bytes.starts_with(b"data: [DONE]")
                || memchr::memmem::find(bytes, b"\ndata: [DONE]").is_some();
        }
    }
}

/// Characters of generated text in a chunk: content, reasoning, refusal and
/// tool-call arguments.
pub fn generated_chars(chunk: &tollgate_llm::ChatChunk) -> u64 {
    let len = |s: &Option<String>| s.as_deref().map_or(0, |s| s.chars().count() as u64);
    chunk
        .choices
        .iter()
        .map(|c| {
            let d = &c.delta;
            len(&d.content)
                + len(&d.reasoning_content)
                + len(&d.refusal)
                + d.tool_calls
                    .iter()
                    .flatten()
                    .map(|t| {
                        t.function
                            .as_ref()
                            .map_or(0, |f| len(&f.arguments) + len(&f.name))
                    })
                    .sum::<u64>()
        })
        .sum()
}

fn ends_with_boundary(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\n\n") || bytes.ends_with(b"\r\n\r\n")
}

/// Cheap pre-filter: does an object-valued `"usage"` key appear?
fn mentions_usage(bytes: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(b"\"usage\"");
    finder.find_iter(bytes).any(|at| {
        let rest = &bytes[at + 7..];
        let rest = rest.trim_ascii_start();
        rest.first() == Some(&b':') && rest[1..].trim_ascii_start().first() == Some(&b'{')
    })
}

/// Index just past the first complete event, if any.
fn event_end(bytes: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(bytes, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(bytes, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The payload of the event's `data:` line (single-line data, as OpenAI sends).
fn event_data(event: &[u8]) -> Option<&[u8]> {
    let mut rest = event;
    while !rest.is_empty() {
        let line_end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest[..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&rest[..line_end]);
        if let Some(data) = line.strip_prefix(b"data:") {
            return Some(data.trim_ascii_start());
        }
        rest = &rest[(line_end + 1).min(rest.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(relay: &mut SseRelay, pieces: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for piece in pieces {
            if let Some(b) = relay.push(Bytes::copy_from_slice(piece)).unwrap() {
                out.extend_from_slice(&b);
            }
        }
        if let Some(b) = relay.finish() {
            out.extend_from_slice(&b);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strips_usage_chunk_when_not_requested_but_records_usage() {
        let mut relay = SseRelay::new(true);
        let all = format!("{CHUNK}{CHUNK}{USAGE}{DONE}");
        let out = run(&mut relay, &[all.as_bytes()]);
        assert_eq!(out, format!("{CHUNK}{CHUNK}{DONE}"));
        let usage = relay.usage().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens()
            ),
            (7, 3, 2)
        );
        assert!(relay.finished());
    }

    #[test]
    fn keeps_usage_chunk_when_requested() {
        let mut relay = SseRelay::new(false);
        let all = format!("{CHUNK}{USAGE}{DONE}");
        assert_eq!(run(&mut relay, &[all.as_bytes()]), all);
        assert_eq!(relay.usage().unwrap().completion_tokens, 3);
    }

    #[test]
    fn events_split_across_reads_are_forwarded_whole() {
        let mut relay = SseRelay::new(true);
        let all = format!("{CHUNK}{USAGE}{DONE}");
        let bytes = all.as_bytes();
        // Every split point, including inside "\n\n" and inside the usage JSON.
        for cut in 1..bytes.len() {
            let mut relay_i = SseRelay::new(true);
            let out = run(&mut relay_i, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(out, format!("{CHUNK}{DONE}"), "cut at {cut}");
            assert_eq!(
                relay_i.usage().map(|u| u.prompt_tokens),
                Some(7),
                "cut at {cut}"
            );
        }
        let first = relay.push(Bytes::copy_from_slice(&bytes[..10])).unwrap();
        assert!(first.is_none(), "an incomplete event is held back");
    }

    #[test]
    fn usage_with_spaces_is_recognised() {
        let mut relay = SseRelay::new(true);
        let spaced = "data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 1, \"completion_tokens\": 2}}\r\n\r\n";
        assert_eq!(run(&mut relay, &[spaced.as_bytes()]), "");
        assert_eq!(relay.usage().unwrap().completion_tokens, 2);
    }

    #[test]
    fn truncated_stream_is_not_finished() {
        let mut relay = SseRelay::new(true);
        let out = run(&mut relay, &[CHUNK.as_bytes(), b"data: {\"partial"]);
        assert!(out.ends_with("data: {\"partial"));
        assert!(!relay.finished());
    }

    #[test]
    fn done_inside_model_output_does_not_finish_the_stream() {
        let mut relay = SseRelay::new(true);
        let tricky = "data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\"}}]}\n\n";
        run(&mut relay, &[tricky.as_bytes()]);
        assert!(!relay.finished());
        run(&mut relay, &[DONE.as_bytes()]);
        assert!(relay.finished());
    }

    #[test]
    fn an_undelimited_flood_is_refused_not_buffered_forever() {
        let mut relay = SseRelay::new(true);
        let piece = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut result = Ok(None);
        for _ in 0..=(MAX_PENDING_EVENT / piece.len()) {
            result = relay.push(piece.clone());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(EventTooLarge));
    }

    #[test]
    fn many_small_reads_of_one_event_are_reassembled() {
        let mut relay = SseRelay::new(false);
        let event = format!("{CHUNK}{DONE}");
        let pieces: Vec<&[u8]> = event.as_bytes().chunks(3).collect();
        assert_eq!(run(&mut relay, &pieces), event);
    }

    #[test]
    fn body_usage() {
        let usage = usage_of_body(
            br#"{"id":"x","usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#,
        )
        .unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 6));
        assert!(usage_of_body(b"{}").is_none());
        assert!(usage_of_body(b"not json").is_none());
    }
}
