//! Server-sent events: a parser that splits a byte stream into events across
//! reads (any of `\n\n`, `\r\n\r\n`, `\r\r` ends an event), and the writer.

use bytes::{BufMut, BytesMut};

use crate::error::LlmError;

/// Largest incomplete event held while waiting for its end, so a provider
/// that never delimits events cannot grow memory without bound.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One parsed event. `data` lines are joined by `\n` as the spec says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:` field; empty means the default type `message`.
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    pending: Vec<u8>,
    /// Bytes of `pending` already scanned for a line end.
    scanned: usize,
    current: Event,
    has_data: bool,
}

impl Parser {
    /// Feeds bytes; every event completed by them is appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), LlmError> {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        let mut at = self.scanned;
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &self.pending[at..]) {
            let end = at + offset;
            // A `\r` at the very end may be the first half of `\r\n`: wait.
            if self.pending[end] == b'\r' && end + 1 == self.pending.len() {
                break;
            }
            let line_end = end;
            let next = if self.pending[end] == b'\r' && self.pending.get(end + 1) == Some(&b'\n') {
                end + 2
            } else {
                end + 1
            };
            let line = String::from_utf8_lossy(&self.pending[start..line_end]).into_owned();
            self.line(&line, out);
            start = next;
            at = next;
        }
        self.pending.drain(..start);
        self.scanned = self
            .pending
            .len()
            .saturating_sub(usize::from(self.pending.last() == Some(&b'\r')));
        if self.pending.len() + self.current.data.len() > MAX_EVENT_BYTES {
            return Err(LlmError::bad_gateway(format!(
                "provider sent a stream event larger than {MAX_EVENT_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// The body ended: an event without its blank line is still dispatched
    /// when it has data (some servers omit the last delimiter).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.pending.is_empty() {
            // A final `\r` was held back as a possible half of `\r\n`; at
            // the end it can only be a line end, not part of the value.
            let line = self.pending.strip_suffix(b"\r").unwrap_or(&self.pending);
            let line = String::from_utf8_lossy(line).into_owned();
            self.pending.clear();
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // id, retry: not needed to translate
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if self.has_data {
            out.push(std::mem::take(&mut self.current));
        } else {
            self.current = Event::default();
        }
        self.has_data = false;
    }
}

/// Appends one event: `event: <name>\n` (when named), `data: <json>\n\n`.
/// `data` must not contain a newline (serialized JSON never does).
pub fn write_event(out: &mut BytesMut, event: Option<&str>, data: &[u8]) {
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// Appends a named event whose data is `value` as JSON.
pub fn write_json<T: serde::Serialize>(out: &mut BytesMut, event: Option<&str>, value: &T) {
    // Serializing the crate's own types cannot fail; an empty object is
    // still a well-formed event if it ever did.
    let data = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    write_event(out, event, &data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out).unwrap();
        }
        parser.finish(&mut out);
        out
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let text = b"event: message_start\ndata: {\"a\":1}\n\n: ping\n\nevent: delta\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let whole = parse_all(&[text]);
        assert_eq!(
            whole,
            vec![
                Event {
                    event: "message_start".into(),
                    data: "{\"a\":1}".into()
                },
                Event {
                    event: "delta".into(),
                    data: "x\ny".into()
                },
                Event {
                    event: String::new(),
                    data: "[DONE]".into()
                },
            ]
        );
        for split in 1..text.len() {
            assert_eq!(
                parse_all(&[&text[..split], &text[split..]]),
                whole,
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn last_event_without_delimiter_is_kept() {
        assert_eq!(
            parse_all(&[b"data: tail"]),
            vec![Event {
                event: String::new(),
                data: "tail".into()
            }]
        );
    }

    /// Found by fuzzing: a stream ending in `\r` kept it in the last value.
    #[test]
    fn final_cr_ends_the_last_line() {
        let expected = vec![Event {
            event: "x".into(),
            data: "b".into(),
        }];
        assert_eq!(parse_all(&[b"event: x\rdata: b\r"]), expected);
        assert_eq!(parse_all(&[b"event: x\r", b"data: b", b"\r"]), expected);
    }

    #[test]
    fn runaway_event_is_refused() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert!(parser.push(&big, &mut out).is_err());
    }
}
