//! Generation decisions shared by the newer formats (Responses, Gemini,
//! Bedrock, Anthropic extras): text cut by limits or stop sequences,
//! thinking text with a signature, and tool calls chosen from the offer.

use base64::Engine as _;
use serde_json::Value;

use crate::text::{
    Rng, StableHasher, arguments_for_schema, completion_text, estimate_tokens, mix64,
};

/// Why generation ended, in neutral terms; each format names it its way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    End,
    MaxTokens,
    /// The generated text contained this stop sequence and was cut before it.
    Sequence(String),
}

/// A text answer, already cut.
#[derive(Debug, Clone)]
pub(crate) struct TextPlan {
    pub text: String,
    pub tokens: u64,
    pub stop: Stop,
}

/// `output_tokens` words from `seed`, capped by `max`, cut before the first
/// stop sequence that occurs: the same words every format would produce, so
/// a stop sequence picked from one answer stops the next one there.
pub(crate) fn plan_text(
    seed: u64,
    output_tokens: u32,
    max: Option<u32>,
    stops: &[&str],
) -> TextPlan {
    let n = max.map_or(output_tokens, |m| m.min(output_tokens));
    let mut text = completion_text(seed, n as usize);
    let hit = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(*s).map(|at| (at, *s)))
        .min_by_key(|(at, _)| *at);
    let stop = match hit {
        Some((at, sequence)) => {
            text.truncate(at);
            Stop::Sequence(sequence.to_owned())
        }
        None if max.is_some_and(|m| m < output_tokens) => Stop::MaxTokens,
        None => Stop::End,
    };
    TextPlan {
        tokens: text.split_whitespace().count() as u64,
        text,
        stop,
    }
}

/// Splits generated text into streamed pieces: a word with its leading space.
pub(crate) fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / 5 + 1);
    let mut start = 0;
    for (i, _) in text.match_indices(' ') {
        if i > start {
            out.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Words of the reasoning shown when thinking is enabled.
pub(crate) const THINKING_TOKENS: u32 = 8;

/// Deterministic reasoning text for a request seed.
pub(crate) fn thinking_text(seed: u64, budget: Option<u32>) -> String {
    let n = budget.map_or(THINKING_TOKENS, |b| b.clamp(1, THINKING_TOKENS));
    completion_text(mix64(seed ^ 0x7468_696e_6b69_6e67), n as usize)
}

/// An opaque signature over `text`, like the ones providers attach to
/// reasoning so it can be sent back; clients must echo it unchanged.
pub(crate) fn signature(text: &str) -> String {
    let mut bytes = Vec::with_capacity(48);
    let mut h = StableHasher::new(0x5167).write(text.as_bytes()).finish();
    for _ in 0..6 {
        bytes.extend_from_slice(&h.to_le_bytes());
        h = mix64(h);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One tool call the mock decided to make.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    pub name: String,
    pub input: Value,
    /// `input` serialised once, for streaming and token counting.
    pub json: String,
}

impl ToolCall {
    pub(crate) fn tokens(&self) -> u64 {
        estimate_tokens(self.json.len()).max(1)
    }
}

/// Calls the first `count` candidates (name, JSON schema), in offer order.
/// The first call's arguments use the request seed exactly like the chat
/// path, so one prompt yields the same arguments in every format.
pub(crate) fn tool_calls<'a>(
    candidates: impl Iterator<Item = (&'a str, &'a Value)>,
    seed: u64,
    count: u32,
) -> Vec<ToolCall> {
    candidates
        .take(count.max(1) as usize)
        .enumerate()
        .map(|(i, (name, schema))| {
            let input = arguments_for_schema(schema, &mut Rng::new(seed.wrapping_add(i as u64)));
            ToolCall {
                name: name.to_owned(),
                json: input.to_string(),
                input,
            }
        })
        .collect()
}

/// Prompt tokens served from cache when the request marks a cache point:
/// the system prompt when there is one, else half the prompt. The mock
/// keeps no state, so every marked request "hits".
pub(crate) fn cached_tokens(marked: bool, total: u64, system: u64) -> u64 {
    match marked {
        false => 0,
        true if system > 0 => system.min(total),
        true => total / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_cut_text() {
        let full = plan_text(3, 10, None, &[]);
        assert_eq!(full.stop, Stop::End);
        assert_eq!(full.tokens, 10);
        let third = full.text.split(' ').nth(2).unwrap().to_owned();
        let cut = plan_text(3, 10, None, &[&third]);
        assert_eq!(cut.stop, Stop::Sequence(third.clone()));
        assert!(!cut.text.contains(&third));
        assert!(full.text.starts_with(&cut.text));
        let capped = plan_text(3, 10, Some(4), &[]);
        assert_eq!((capped.tokens, capped.stop), (4, Stop::MaxTokens));
    }

    #[test]
    fn pieces_rejoin() {
        let text = "the gateway routes";
        assert_eq!(pieces(text), ["the", " gateway", " routes"]);
        assert_eq!(pieces(text).concat(), text);
        assert!(pieces("").is_empty());
    }
}
