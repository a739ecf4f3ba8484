//! A policy's detection rules, compiled: which built-in kinds it looks for,
//! its own patterns and word lists, and what each finding leads to
//! (redact, mask, block). [`Rules::apply`] acts on one text;
//! [`crate::StreamScanner`] on a stream.

use std::sync::Arc;

use regex::{Regex, RegexBuilder};

use crate::pii::{Finding, Kind, Recognizers, resolve};
use crate::redact::MaskTable;

/// What a finding leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Replaced by `[KIND]`.
    Redact,
    /// Replaced by a placeholder restored in the answer (input only; on
    /// output it is the same as `Redact`).
    Mask,
    /// The request or answer is refused.
    Block,
}

/// How a custom rule matches.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// A regular expression (the `regex` crate's syntax: linear time).
    Pattern(String),
    /// Whole words or phrases, case-insensitive.
    Words(Vec<String>),
}

/// A policy's own rule: `name` labels its findings (`[PROJECT]`,
/// `<EMPLOYEE_ID_1>`).
#[derive(Clone, Debug)]
pub struct CustomRule {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuleError {
    #[error("rule {name:?}: the name must be 1-32 of A-Z, 0-9 and _, starting with a letter")]
    Name { name: String },
    #[error("rule {name:?}: {reason}")]
    Matcher { name: String, reason: String },
    #[error("at most {MAX_CUSTOM_RULES} custom rules per policy")]
    TooMany,
}

/// The text was refused: the first finding whose action is block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub kind: Kind,
}

pub const MAX_CUSTOM_RULES: usize = 64;
/// Longest rule name: it becomes part of a placeholder.
pub const MAX_NAME: usize = 32;
/// Compiled size allowed for one custom rule's automaton.
const MAX_RULE_SIZE: usize = 1 << 20;

struct Compiled {
    name: String,
    regex: Regex,
    action: Action,
}

/// The compiled rules of one side (input or output) of a policy.
pub struct Rules {
    recognizers: Arc<Recognizers>,
    builtin: [Option<Action>; Kind::ALL.len()],
    custom: Vec<Compiled>,
}

impl Rules {
    /// `builtin`: the built-in kinds looked for and their actions.
    pub fn new(
        recognizers: Arc<Recognizers>,
        builtin: &[(Kind, Action)],
        custom: &[CustomRule],
    ) -> Result<Self, RuleError> {
        if custom.len() > MAX_CUSTOM_RULES {
            return Err(RuleError::TooMany);
        }
        let mut actions = [None; Kind::ALL.len()];
        for (kind, action) in builtin {
            if let Some(index) = kind.builtin_index() {
                actions[index] = Some(*action);
            }
        }
        let custom = custom
            .iter()
            .map(compile_rule)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            recognizers,
            builtin: actions,
            custom,
        })
    }

    /// No rule at all: nothing to scan.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.builtin.iter().all(Option::is_none)
    }

    /// Every finding of these rules in `text`, ordered by start, none
    /// overlapping.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        if self.builtin.iter().any(Option::is_some) {
            found = self.recognizers.scan(text);
            found.retain(|f| self.action(f.kind).is_some());
        }
        for (index, rule) in self.custom.iter().enumerate() {
            for m in rule.regex.find_iter(text) {
                if m.start() < m.end() {
                    found.push(Finding {
                        kind: Kind::Custom(index as u8),
                        start: m.start(),
                        end: m.end(),
                    });
                }
            }
        }
        if self.custom.is_empty() {
            found
        } else {
            resolve(found)
        }
    }

    /// The name of a kind in placeholders, redactions and reports.
    pub fn label(&self, kind: Kind) -> &str {
        match kind {
            Kind::Custom(index) => self
                .custom
                .get(index as usize)
                .map_or("CUSTOM", |rule| rule.name.as_str()),
            builtin => builtin.as_str(),
        }
    }

    pub fn action(&self, kind: Kind) -> Option<Action> {
        match kind {
            Kind::Custom(index) => self.custom.get(index as usize).map(|rule| rule.action),
            builtin => builtin.builtin_index().and_then(|i| self.builtin[i]),
        }
    }

    /// `text` with its findings acted on, or `None` when nothing was found
    /// (the text stays as it is). Each finding's kind is added to `hits`.
    pub fn apply(
        &self,
        text: &str,
        masks: &mut MaskTable,
        hits: &mut Vec<Kind>,
    ) -> Result<Option<String>, Blocked> {
        let findings = self.scan(text);
        if findings.is_empty() {
            return Ok(None);
        }
        self.act(text, &findings, Some(masks), hits).map(Some)
    }

    /// [`apply`](Self::apply) where masking acts as redaction: for text
    /// nothing will be restored into (embeddings input).
    pub fn redact(&self, text: &str, hits: &mut Vec<Kind>) -> Result<Option<String>, Blocked> {
        let findings = self.scan(text);
        if findings.is_empty() {
            return Ok(None);
        }
        self.act(text, &findings, None, hits).map(Some)
    }

    /// `text` with `findings` (from [`Rules::scan`]) acted on; without
    /// `masks`, masking acts as redaction.
    pub(crate) fn act(
        &self,
        text: &str,
        findings: &[Finding],
        mut masks: Option<&mut MaskTable>,
        hits: &mut Vec<Kind>,
    ) -> Result<String, Blocked> {
        if let Some(blocked) = findings
            .iter()
            .find(|f| self.action(f.kind) == Some(Action::Block))
        {
            hits.push(blocked.kind);
            return Err(Blocked { kind: blocked.kind });
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in findings {
            hits.push(f.kind);
            out.push_str(&text[at..f.start]);
            let label = self.label(f.kind);
            match (self.action(f.kind), masks.as_deref_mut()) {
                (Some(Action::Mask), Some(masks)) => {
                    out.push_str(&masks.placeholder(label, &text[f.start..f.end]))
                }
                _ => {
                    out.push('[');
                    out.push_str(label);
                    out.push(']');
                }
            }
            at = f.end;
        }
        out.push_str(&text[at..]);
        Ok(out)
    }
}

fn compile_rule(rule: &CustomRule) -> Result<Compiled, RuleError> {
    let name = &rule.name;
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !valid_name {
        return Err(RuleError::Name { name: name.clone() });
    }
    let invalid = |reason: String| RuleError::Matcher {
        name: name.clone(),
        reason,
    };
    let pattern = match &rule.matcher {
        Matcher::Pattern(pattern) if pattern.is_empty() => {
            return Err(invalid("the pattern is empty".into()));
        }
        Matcher::Pattern(pattern) => pattern.clone(),
        Matcher::Words(words) => {
            // Word boundaries only where the word itself starts or ends
            // with a word character (`C++` still matches).
            let words: Vec<String> = words
                .iter()
                .map(|w| w.trim())
                .filter(|w| !w.is_empty())
                .map(|w| {
                    let word_char =
                        |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                    let before = if word_char(w.chars().next()) {
                        r"\b"
                    } else {
                        ""
                    };
                    let after = if word_char(w.chars().last()) {
                        r"\b"
                    } else {
                        ""
                    };
                    format!("{before}{}{after}", regex::escape(w))
                })
                .collect();
            if words.is_empty() {
                return Err(invalid("the word list is empty".into()));
            }
            format!("(?i:{})", words.join("|"))
        }
    };
    let regex = RegexBuilder::new(&pattern)
        .size_limit(MAX_RULE_SIZE)
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    if regex.is_match("") {
        return Err(invalid("the pattern matches empty text".into()));
    }
    Ok(Compiled {
        name: name.clone(),
        regex,
        action: rule.action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(builtin: &[(Kind, Action)], custom: &[CustomRule]) -> Rules {
        Rules::new(Arc::new(Recognizers::new()), builtin, custom).unwrap()
    }

    fn custom(name: &str, matcher: Matcher, action: Action) -> CustomRule {
        CustomRule {
            name: name.into(),
            matcher,
            action,
        }
    }

    #[test]
    fn only_the_kinds_asked_for_are_acted_on() {
        let rules = rules(&[(Kind::Email, Action::Redact)], &[]);
        let mut hits = Vec::new();
        let text = "mail ann@example.com, card 4111 1111 1111 1111";
        let out = rules
            .apply(text, &mut MaskTable::default(), &mut hits)
            .unwrap();
        assert_eq!(
            out.as_deref(),
            Some("mail [EMAIL], card 4111 1111 1111 1111")
        );
        assert_eq!(hits, vec![Kind::Email]);
        let mut hits = Vec::new();
        assert_eq!(
            rules.apply("nothing here", &mut MaskTable::default(), &mut hits),
            Ok(None)
        );
        assert!(hits.is_empty());
    }

    #[test]
    fn actions_per_kind_block_wins() {
        let rules = rules(
            &[(Kind::Email, Action::Mask), (Kind::Secret, Action::Block)],
            &[],
        );
        let mut masks = MaskTable::default();
        let mut hits = Vec::new();
        let masked = rules
            .apply("to ann@example.com", &mut masks, &mut hits)
            .unwrap();
        assert_eq!(masked.as_deref(), Some("to <EMAIL_1>"));
        let refused = rules.apply(
            "to ann@example.com key sk-proj-abcdefghijklmnopqrstuvwx",
            &mut masks,
            &mut hits,
        );
        assert_eq!(refused, Err(Blocked { kind: Kind::Secret }));
    }

    #[test]
    fn custom_patterns_and_words_are_labelled_by_name() {
        let rules = rules(
            &[],
            &[
                custom(
                    "EMPLOYEE_ID",
                    Matcher::Pattern(r"\bEMP-[0-9]{6}\b".into()),
                    Action::Mask,
                ),
                custom(
                    "PROJECT",
                    Matcher::Words(vec!["Falcon".into(), "blue heron".into(), "C++".into()]),
                    Action::Redact,
                ),
            ],
        );
        let mut masks = MaskTable::default();
        let mut hits = Vec::new();
        let out = rules
            .apply(
                "EMP-004211 leads falcon and Blue Heron in C++; falconry stays",
                &mut masks,
                &mut hits,
            )
            .unwrap();
        assert_eq!(
            out.as_deref(),
            Some("<EMPLOYEE_ID_1> leads [PROJECT] and [PROJECT] in [PROJECT]; falconry stays")
        );
        assert_eq!(masks.unmask("ask <EMPLOYEE_ID_1>"), "ask EMP-004211");
        assert_eq!(rules.label(hits[0]), "EMPLOYEE_ID");
    }

    #[test]
    fn bad_rules_are_refused_with_their_name() {
        let build = |rule: CustomRule| Rules::new(Arc::new(Recognizers::new()), &[], &[rule]);
        assert!(matches!(
            build(custom(
                "lower",
                Matcher::Pattern("x".into()),
                Action::Redact
            )),
            Err(RuleError::Name { .. })
        ));
        let error = build(custom("BAD", Matcher::Pattern("(".into()), Action::Redact))
            .err()
            .unwrap();
        assert!(error.to_string().starts_with("rule \"BAD\": "), "{error}");
        assert!(matches!(
            build(custom(
                "EMPTY",
                Matcher::Pattern("a*".into()),
                Action::Redact
            )),
            Err(RuleError::Matcher { .. })
        ));
        assert!(matches!(
            build(custom(
                "NONE",
                Matcher::Words(vec![" ".into()]),
                Action::Redact
            )),
            Err(RuleError::Matcher { .. })
        ));
    }
}
