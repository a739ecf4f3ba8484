//! Acting on findings in a stream, and undoing masks: reversible masking
//! replaces a value by a placeholder such as `<EMAIL_1>`, restored in the
//! answer. Streams arrive in chunks and are scanned with a bounded hold-back
//! window, so a value split across chunks is still found and a placeholder
//! split across chunks is still restored.

use std::collections::HashMap;

use crate::pii::Kind;
use crate::rules::{Blocked, Rules};

/// The placeholders of one request: the same value gets the same
/// placeholder every time it appears (in any message), and each placeholder
/// maps back to its value.
#[derive(Clone, Debug, Default)]
pub struct MaskTable {
    by_value: HashMap<String, String>,
    values: HashMap<String, String>,
    counters: HashMap<String, u32>,
}

/// Longest placeholder: `<` + the longest rule name + `_` + 10 digits + `>`.
const MAX_PLACEHOLDER: usize = 1 + crate::rules::MAX_NAME + 1 + 10 + 1;

impl MaskTable {
    /// The placeholder for `value`, labelled `label` (`EMAIL`).
    pub fn placeholder(&mut self, label: &str, value: &str) -> String {
        if let Some(placeholder) = self.by_value.get(value) {
            return placeholder.clone();
        }
        let counter = self.counters.entry(label.to_string()).or_default();
        *counter += 1;
        let placeholder = format!("<{label}_{counter}>");
        self.by_value.insert(value.to_string(), placeholder.clone());
        self.values.insert(placeholder.clone(), value.to_string());
        placeholder
    }

    /// True when nothing was masked (the answer needs no unmasking).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known placeholder restored to its value; unknown
    /// `<…>` text is left as it is.
    pub fn unmask(&self, text: &str) -> String {
        self.restore(text, false)
    }

    /// [`unmask`](Self::unmask) for JSON text (tool-call arguments): a
    /// placeholder stands inside a JSON string there, so its value goes in
    /// escaped (a quote, backslash or newline in it would break the JSON).
    pub fn unmask_json(&self, text: &str) -> String {
        self.restore(text, true)
    }

    fn restore(&self, text: &str, json: bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            out.push_str(&rest[..open]);
            let candidate = &rest[open..];
            let close = candidate[..candidate.floor_char_boundary(MAX_PLACEHOLDER)].find('>');
            match close.and_then(|close| self.values.get(&candidate[..=close]).map(|v| (close, v)))
            {
                Some((close, value)) if json => {
                    escape_json(value, &mut out);
                    rest = &candidate[close + 1..];
                }
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

/// Appends `value` escaped as the inside of a JSON string.
fn escape_json(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
}

/// Restores placeholders in a stream of text chunks. A chunk ending inside
/// what may be a placeholder (`<EMA`) is held back until the next chunk
/// settles it; at most [`MAX_PLACEHOLDER`] bytes are ever held.
#[derive(Debug, Default)]
pub struct StreamUnmasker {
    pending: String,
    /// The text is JSON (streamed tool-call arguments): values go in escaped.
    json: bool,
}

impl StreamUnmasker {
    /// An unmasker for streamed JSON text (tool-call arguments).
    pub fn json() -> Self {
        Self {
            pending: String::new(),
            json: true,
        }
    }

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
        table.restore(&ready, self.json)
    }

    /// What is still held, at the end of the stream.
    pub fn finish(&mut self, table: &MaskTable) -> String {
        let rest = std::mem::take(&mut self.pending);
        table.restore(&rest, self.json)
    }
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

    /// The text that can be emitted after `chunk`, its findings acted on
    /// (their kinds added to `hits`); `Blocked` when a finding's action is
    /// block, and nothing of it may be emitted.
    pub fn push(
        &mut self,
        rules: &Rules,
        masks: &mut MaskTable,
        hits: &mut Vec<Kind>,
        chunk: &str,
    ) -> Result<String, Blocked> {
        self.pending.push_str(chunk);
        if self.pending.len() <= self.window {
            return Ok(String::new());
        }
        let findings = rules.scan(&self.pending);
        let mut cut = self
            .pending
            .floor_char_boundary(self.pending.len() - self.window);
        // A value reaching past the cut is held back whole.
        if let Some(straddling) = findings.iter().find(|f| f.start < cut && cut < f.end) {
            cut = straddling.start;
        }
        let emitted: Vec<_> = findings.into_iter().filter(|f| f.end <= cut).collect();
        let out = rules.act(&self.pending[..cut], &emitted, Some(masks), hits)?;
        self.pending.drain(..cut);
        Ok(out)
    }

    /// The rest, at the end of the stream.
    pub fn finish(
        &mut self,
        rules: &Rules,
        masks: &mut MaskTable,
        hits: &mut Vec<Kind>,
    ) -> Result<String, Blocked> {
        let rest = std::mem::take(&mut self.pending);
        let findings = rules.scan(&rest);
        rules.act(&rest, &findings, Some(masks), hits)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pii::Recognizers;
    use crate::rules::{Action, CustomRule, Matcher};

    fn rules(action: Action) -> Rules {
        let builtin: Vec<(Kind, Action)> = Kind::ALL.iter().map(|k| (*k, action)).collect();
        Rules::new(Arc::new(Recognizers::new()), &builtin, &[]).unwrap()
    }

    fn apply(rules: &Rules, masks: &mut MaskTable, text: &str) -> String {
        let mut hits = Vec::new();
        rules
            .apply(text, masks, &mut hits)
            .unwrap()
            .unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn redaction_names_the_kind() {
        let text = "card 4111 1111 1111 1111, mail ann@example.com";
        assert_eq!(
            apply(&rules(Action::Redact), &mut MaskTable::default(), text),
            "card [CREDIT_CARD], mail [EMAIL]"
        );
    }

    #[test]
    fn masking_is_consistent_and_reversible() {
        let rules = rules(Action::Mask);
        let mut table = MaskTable::default();
        let masked_first = apply(
            &rules,
            &mut table,
            "Write to ann@example.com and bob@example.com.",
        );
        let masked_second = apply(
            &rules,
            &mut table,
            "Again: ann@example.com, card 4111111111111111.",
        );
        assert_eq!(masked_first, "Write to <EMAIL_1> and <EMAIL_2>.");
        assert_eq!(masked_second, "Again: <EMAIL_1>, card <CREDIT_CARD_1>.");
        assert_eq!(
            table.unmask("Sent to <EMAIL_2>; <EMAIL_9> and <b>bold</b> stay."),
            "Sent to bob@example.com; <EMAIL_9> and <b>bold</b> stay."
        );
        // A `<` before multi-byte text near the placeholder bound.
        assert_eq!(
            table.unmask("<ééééééééééééééééééééééééé"),
            "<ééééééééééééééééééééééééé"
        );
    }

    #[test]
    fn placeholders_split_across_chunks_are_restored() {
        let mut table = MaskTable::default();
        apply(
            &rules(Action::Mask),
            &mut table,
            "My email is ann@example.com",
        );
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
    fn values_restored_into_json_are_escaped_whole_or_streamed() {
        let custom = [CustomRule {
            name: "QUOTED".into(),
            matcher: Matcher::Pattern(r#"K"[0-9]{4}\\[0-9]{2}"#.into()),
            action: Action::Mask,
        }];
        let rules = Rules::new(Arc::new(Recognizers::new()), &[], &custom).unwrap();
        let mut table = MaskTable::default();
        assert_eq!(
            apply(&rules, &mut table, "ref K\"1234\\56\n"),
            "ref <QUOTED_1>\n"
        );
        let arguments = r#"{"ref": "<QUOTED_1>", "note": "<b>"}"#;
        let expected = r#"{"ref": "K\"1234\\56", "note": "<b>"}"#;
        assert_eq!(table.unmask_json(arguments), expected);
        let parsed: serde_json::Value = serde_json::from_str(expected).unwrap();
        assert_eq!(parsed["ref"], "K\"1234\\56");
        for split in 1..arguments.len() {
            let mut unmasker = StreamUnmasker::json();
            let mut out = unmasker.push(&table, &arguments[..split]);
            out += &unmasker.push(&table, &arguments[split..]);
            out += &unmasker.finish(&table);
            assert_eq!(out, expected, "split at {split}");
        }
    }

    fn stream(
        rules: &Rules,
        masks: &mut MaskTable,
        text: &str,
        chunk_len: usize,
    ) -> Result<String, Blocked> {
        let mut scanner = StreamScanner::new(DEFAULT_WINDOW);
        let mut hits = Vec::new();
        let mut out = String::new();
        let mut at = 0;
        while at < text.len() {
            let end = text.ceil_char_boundary((at + chunk_len).min(text.len()));
            out += &scanner.push(rules, masks, &mut hits, &text[at..end])?;
            assert!(scanner.pending.len() <= DEFAULT_WINDOW + chunk_len + 32);
            at = end;
        }
        out += &scanner.finish(rules, masks, &mut hits)?;
        Ok(out)
    }

    #[test]
    fn a_card_split_across_chunks_is_redacted_and_nothing_is_lost() {
        let rules = rules(Action::Redact);
        let text = format!(
            "{} pay with 4111 1111 1111 1111 then mail ann@example.com, thanks. {}",
            "lorem ipsum ".repeat(20),
            "dolor sit amet ".repeat(20)
        );
        let expected = apply(&rules, &mut MaskTable::default(), &text);
        assert!(expected.contains("[CREDIT_CARD]") && !expected.contains("4111"));
        for chunk_len in [1, 3, 7, 16, 50, 200] {
            let out = stream(&rules, &mut MaskTable::default(), &text, chunk_len).unwrap();
            assert_eq!(out, expected, "chunks of {chunk_len}");
        }
    }

    #[test]
    fn a_blocked_value_in_a_stream_is_never_emitted() {
        let rules = rules(Action::Block);
        let text = format!("{} card 4111 1111 1111 1111 end", "a".repeat(300));
        for chunk_len in [1, 5, 64] {
            let mut scanner = StreamScanner::new(DEFAULT_WINDOW);
            let (mut masks, mut hits, mut out) = (MaskTable::default(), Vec::new(), String::new());
            let mut blocked = None;
            for chunk in text.as_bytes().chunks(chunk_len) {
                match scanner.push(
                    &rules,
                    &mut masks,
                    &mut hits,
                    std::str::from_utf8(chunk).unwrap(),
                ) {
                    Ok(emitted) => out += &emitted,
                    Err(b) => {
                        blocked = Some(b);
                        break;
                    }
                }
            }
            let blocked = blocked.or_else(|| scanner.finish(&rules, &mut masks, &mut hits).err());
            assert_eq!(
                blocked,
                Some(Blocked {
                    kind: Kind::CreditCard
                })
            );
            assert!(!out.contains("4111"), "{out}");
        }
    }

    #[test]
    fn masking_a_stream_feeds_the_same_table() {
        let mut table = MaskTable::default();
        let text = format!("{}reach me at +44 20 7946 0958 please", "x".repeat(150));
        let out = stream(&rules(Action::Mask), &mut table, &text, 10).unwrap();
        assert!(out.ends_with("reach me at <PHONE_1> please"), "{out}");
        assert_eq!(table.unmask(&out), text);
    }
}
