//! Acting on findings: redaction (the value replaced by its kind), reversible
//! masking (the value replaced by a placeholder such as `<EMAIL_1>`, restored
//! in the answer), and both applied to a stream arriving in chunks with a
//! bounded hold-back window, so that a value split across chunks is still
//! found and a placeholder split across chunks is still restored.

use std::collections::HashMap;

use crate::pii::{Finding, Kind, Recognizers};

/// `text` with every finding replaced by `[KIND]` (`[EMAIL]`, `[CREDIT_CARD]`).
pub fn redact(text: &str, findings: &[Finding]) -> String {
    replace(text, findings, |f, _| format!("[{}]", f.kind.as_str()))
}

/// `text` with each finding replaced by what `with` makes of it; findings
/// are ordered by start and do not overlap ([`Recognizers::scan`]).
fn replace(
    text: &str,
    findings: &[Finding],
    mut with: impl FnMut(&Finding, &str) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.start]);
        out.push_str(&with(f, &text[f.start..f.end]));
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The placeholders of one request: the same value gets the same
/// placeholder every time it appears (in any message), and each placeholder
/// maps back to its value.
#[derive(Debug, Default)]
pub struct MaskTable {
    by_value: HashMap<String, String>,
    values: HashMap<String, String>,
    counters: HashMap<Kind, u32>,
}

/// Longest placeholder: `<` + the longest kind name + `_` + 10 digits + `>`.
const MAX_PLACEHOLDER: usize = 1 + 11 + 1 + 10 + 1;

impl MaskTable {
    /// `text` with each finding replaced by its placeholder.
    pub fn mask(&mut self, text: &str, findings: &[Finding]) -> String {
        replace(text, findings, |f, value| {
            if let Some(placeholder) = self.by_value.get(value) {
                return placeholder.clone();
            }
            let counter = self.counters.entry(f.kind).or_default();
            *counter += 1;
            let placeholder = format!("<{}_{}>", f.kind.as_str(), counter);
            self.by_value.insert(value.to_string(), placeholder.clone());
            self.values.insert(placeholder.clone(), value.to_string());
            placeholder
        })
    }

    /// True when nothing was masked (the answer needs no unmasking).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known placeholder restored to its value; unknown
    /// `<…>` text is left as it is.
    pub fn unmask(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            out.push_str(&rest[..open]);
            let candidate = &rest[open..];
            let close = candidate[..candidate.len().min(MAX_PLACEHOLDER)].find('>');
            match close.and_then(|close| self.values.get(&candidate[..=close]).map(|v| (close, v)))
            {
                Some((close, value)) => {
                    out.push_str(value);
                    rest = &candidate[close + 1..];
                }
                None => {
                    out.push('<');
                    rest = &candidate[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Restores placeholders in a stream of text chunks. A chunk ending inside
/// what may be a placeholder (`<EMA`) is held back until the next chunk
/// settles it; at most [`MAX_PLACEHOLDER`] bytes are ever held.
#[derive(Debug, Default)]
pub struct StreamUnmasker {
    pending: String,
}

impl StreamUnmasker {
    /// The text that can be emitted after `chunk`.
    pub fn push(&mut self, table: &MaskTable, chunk: &str) -> String {
        self.pending.push_str(chunk);
        // Hold from the last `<` that has no `>` after it, if it is recent
        // enough to still become a placeholder.
        let hold_from = self
            .pending
            .rfind('<')
            .filter(|&open| {
                !self.pending[open..].contains('>') && self.pending.len() - open < MAX_PLACEHOLDER
            })
            .unwrap_or(self.pending.len());
        let ready: String = self.pending[..hold_from].to_string();
        self.pending.drain(..hold_from);
        table.unmask(&ready)
    }

    /// What is still held, at the end of the stream.
    pub fn finish(&mut self, table: &MaskTable) -> String {
        let rest = std::mem::take(&mut self.pending);
        table.unmask(&rest)
    }
}

/// What a [`StreamScanner`] does with the findings in a stream.
pub enum StreamAction<'t> {
    Redact,
    Mask(&'t mut MaskTable),
}

/// Finds values in a stream of text chunks, holding back the last `window`
/// bytes so that a value of up to `window` bytes split across chunks is
/// seen whole before any of it is emitted.
#[derive(Debug)]
pub struct StreamScanner {
    pending: String,
    window: usize,
}

/// Default hold-back: longer than any card, IBAN, phone number or API key
/// the recognizers know, short enough not to be noticed in a stream.
pub const DEFAULT_WINDOW: usize = 128;

impl StreamScanner {
    pub fn new(window: usize) -> Self {
        Self {
            pending: String::new(),
            window,
        }
    }

    /// The text that can be emitted after `chunk`, its findings acted on.
    pub fn push(
        &mut self,
        recognizers: &Recognizers,
        action: &mut StreamAction<'_>,
        chunk: &str,
    ) -> String {
        self.pending.push_str(chunk);
        if self.pending.len() <= self.window {
            return String::new();
        }
        let findings = recognizers.scan(&self.pending);
        let mut cut = self
            .pending
            .floor_char_boundary(self.pending.len() - self.window);
        // A value reaching past the cut is held back whole.
        if let Some(straddling) = findings.iter().find(|f| f.start < cut && cut < f.end) {
            cut = straddling.start;
        }
        let emitted: Vec<Finding> = findings.into_iter().filter(|f| f.end <= cut).collect();
        let out = act(&self.pending[..cut], &emitted, action);
        self.pending.drain(..cut);
        out
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self, recognizers: &Recognizers, action: &mut StreamAction<'_>) -> String {
        let rest = std::mem::take(&mut self.pending);
        let findings = recognizers.scan(&rest);
        act(&rest, &findings, action)
    }
}

fn act(text: &str, findings: &[Finding], action: &mut StreamAction<'_>) -> String {
    match action {
        StreamAction::Redact => redact(text, findings),
        StreamAction::Mask(table) => table.mask(text, findings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_names_the_kind() {
        let recognizers = Recognizers::new();
        let text = "card 4111 1111 1111 1111, mail ann@example.com";
        assert_eq!(
            redact(text, &recognizers.scan(text)),
            "card [CREDIT_CARD], mail [EMAIL]"
        );
    }

    #[test]
    fn masking_is_consistent_and_reversible() {
        let recognizers = Recognizers::new();
        let mut table = MaskTable::default();
        let first = "Write to ann@example.com and bob@example.com.";
        let second = "Again: ann@example.com, card 4111111111111111.";
        let masked_first = table.mask(first, &recognizers.scan(first));
        let masked_second = table.mask(second, &recognizers.scan(second));
        assert_eq!(masked_first, "Write to <EMAIL_1> and <EMAIL_2>.");
        assert_eq!(masked_second, "Again: <EMAIL_1>, card <CREDIT_CARD_1>.");
        assert_eq!(
            table.unmask("Sent to <EMAIL_2>; <EMAIL_9> and <b>bold</b> stay."),
            "Sent to bob@example.com; <EMAIL_9> and <b>bold</b> stay."
        );
    }

    #[test]
    fn placeholders_split_across_chunks_are_restored() {
        let recognizers = Recognizers::new();
        let mut table = MaskTable::default();
        let prompt = "My email is ann@example.com";
        table.mask(prompt, &recognizers.scan(prompt));
        let answer = "I will write to <EMAIL_1> today, <not a placeholder> ok";
        // Every split of the answer into two chunks, and one byte at a time.
        for split in 1..answer.len() {
            let mut unmasker = StreamUnmasker::default();
            let mut out = unmasker.push(&table, &answer[..split]);
            out += &unmasker.push(&table, &answer[split..]);
            out += &unmasker.finish(&table);
            assert_eq!(
                out,
                "I will write to ann@example.com today, <not a placeholder> ok"
            );
        }
        let mut unmasker = StreamUnmasker::default();
        let mut out = String::new();
        for c in answer.chars() {
            out += &unmasker.push(&table, &c.to_string());
            assert!(unmasker.pending.len() <= MAX_PLACEHOLDER);
        }
        out += &unmasker.finish(&table);
        assert!(out.contains("ann@example.com"));
    }

    #[test]
    fn a_card_split_across_chunks_is_redacted_and_nothing_is_lost() {
        let recognizers = Recognizers::new();
        let text = format!(
            "{} pay with 4111 1111 1111 1111 then mail ann@example.com, thanks. {}",
            "lorem ipsum ".repeat(20),
            "dolor sit amet ".repeat(20)
        );
        let expected = redact(&text, &recognizers.scan(&text));
        assert!(expected.contains("[CREDIT_CARD]") && !expected.contains("4111"));
        for chunk_len in [1, 3, 7, 16, 50, 200] {
            let mut scanner = StreamScanner::new(DEFAULT_WINDOW);
            let mut out = String::new();
            let bytes = text.as_bytes();
            let mut at = 0;
            while at < bytes.len() {
                let end = text.ceil_char_boundary((at + chunk_len).min(bytes.len()));
                out += &scanner.push(&recognizers, &mut StreamAction::Redact, &text[at..end]);
                assert!(scanner.pending.len() <= DEFAULT_WINDOW + chunk_len + 32);
                at = end;
            }
            out += &scanner.finish(&recognizers, &mut StreamAction::Redact);
            assert_eq!(out, expected, "chunks of {chunk_len}");
        }
    }

    #[test]
    fn masking_a_stream_feeds_the_same_table() {
        let recognizers = Recognizers::new();
        let mut table = MaskTable::default();
        let mut scanner = StreamScanner::new(DEFAULT_WINDOW);
        let text = format!("{}reach me at +44 20 7946 0958 please", "x".repeat(150));
        let mut out = String::new();
        for chunk in text.as_bytes().chunks(10) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            out += &scanner.push(&recognizers, &mut StreamAction::Mask(&mut table), chunk);
        }
        out += &scanner.finish(&recognizers, &mut StreamAction::Mask(&mut table));
        assert!(out.ends_with("reach me at <PHONE_1> please"), "{out}");
        assert_eq!(table.unmask(&out), text);
    }
}
