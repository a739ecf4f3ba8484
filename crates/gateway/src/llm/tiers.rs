//! Stage `tiers` (smart routing): on a route that declares tiers, pick the
//! tier for this request from the request itself, put that tier's backends
//! first, and say which tier and why on the answer
//! (`x-tollgate-route-tier`, `x-tollgate-route-reason`) and in metrics.
//!
//! The choice is a [`TierPolicy`]: [`Heuristic`] today; an embedding- or
//! model-based classifier implements the same trait later. The heuristic is
//! pure (no IO, deterministic) and reads only the canonical request: it runs
//! per request, and only on routes with tiers.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue};
use regex::{Regex, RegexSet, RegexSetBuilder};
use tollgate_api::TierClassifier;
use tollgate_config::snapshot::Tiers;
use tollgate_llm::ChatRequest;
use tollgate_llm::canonical::{Content, ContentPart, Message, Role};

use super::ingress::Inbound;
use super::{Answer, Failure};
use crate::dialect::Endpoint;

/// Which tier a request goes to, and the one signal that decided it (a
/// fixed, small set of words: it is a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index into the route's tier names, cheapest first.
    pub tier: usize,
    pub reason: &'static str,
}

/// Picks a tier for a request. Implementations must be deterministic for a
/// given request and cheap: they run before every attempt on tiered routes.
pub trait TierPolicy {
    /// The tier (an index into `tiers`, cheapest first) for `request`.
    fn decide(&self, request: &ChatRequest, tiers: usize) -> Decision;
}

/// Reasons a decision can give.
pub mod reason {
    pub const LONG_PROMPT: &str = "long_prompt";
    pub const REASONING: &str = "reasoning_requested";
    pub const MATH: &str = "math";
    pub const CODE: &str = "code";
    pub const TOOLS: &str = "tools";
    pub const ANALYSIS: &str = "analysis";
    pub const DEEP_CONVERSATION: &str = "deep_conversation";
    /// No signal strong enough: the cheapest tier.
    pub const SIMPLE: &str = "simple";
    /// The body could not be read as a chat request: the default tier.
    pub const UNREADABLE: &str = "unreadable";
    /// Embeddings and token counting are not classified: the default tier.
    pub const NOT_CHAT: &str = "not_chat";
}

/// The tier for this request on a tiered route.
pub fn decide(tiers: &Tiers, inbound: &Inbound<'_>) -> Decision {
    let fallback = |reason| Decision {
        tier: tiers.default_tier,
        reason,
    };
    if matches!(
        inbound.endpoint,
        Endpoint::Embeddings | Endpoint::CountTokens
    ) {
        return fallback(reason::NOT_CHAT);
    }
    let Ok(canonical) = inbound.canonical() else {
        return fallback(reason::UNREADABLE);
    };
    let mut decision = match tiers.classifier {
        TierClassifier::Heuristic => {
            Heuristic::new(tiers).decide(&canonical.request, tiers.names.len())
        }
    };
    // A policy cannot name a tier the route does not have.
    decision.tier = decision.tier.min(tiers.names.len().saturating_sub(1));
    decision
}

/// `x-tollgate-route-tier` and `x-tollgate-route-reason` on whatever the
/// request ends in, an error included (answered here in the client's shape,
/// exactly as the caller would have answered it).
pub fn stamp(
    answer: Result<Answer, Failure>,
    tier: &str,
    decision: Decision,
    endpoint: Endpoint,
) -> Result<Answer, Failure> {
    let headers = |headers: &mut HeaderMap| {
        if let Ok(value) = HeaderValue::from_str(tier) {
            headers.insert("x-tollgate-route-tier", value);
        }
        headers.insert(
            "x-tollgate-route-reason",
            HeaderValue::from_static(decision.reason),
        );
    };
    Ok(match answer {
        Ok(Answer::Full(mut response, status)) => {
            headers(response.headers_mut());
            Answer::Full(response, status)
        }
        Ok(Answer::Stream(mut head, stream)) => {
            headers(head.headers_mut());
            Answer::Stream(head, stream)
        }
        Err(failure) => {
            let mut response = failure.respond(endpoint);
            headers(response.headers_mut());
            let status = response.status().as_u16();
            Answer::Full(response, status)
        }
    })
}

/// Points at which a request goes to the strongest tier.
const STRONG_AT: i32 = 2;
/// Most points one kind of signal can add (many code words are still code).
const SIGNAL_CAP: i32 = 4;
/// How much of a message's text is scanned for words (the signals sit at
/// the start of a request far more often than deep inside a pasted file).
const SCAN_BYTES: usize = 16 * 1024;

/// The heuristic classifier: points per signal read from the request; at
/// [`STRONG_AT`] points the strongest tier, else the cheapest. A prompt of
/// `long_prompt_tokens` or an explicit reasoning parameter decides alone.
#[derive(Clone, Copy, Debug)]
pub struct Heuristic {
    pub long_prompt_tokens: u64,
    pub deep_conversation_turns: u32,
}

impl Heuristic {
    pub fn new(tiers: &Tiers) -> Self {
        Self {
            long_prompt_tokens: tiers.long_prompt_tokens,
            deep_conversation_turns: tiers.deep_conversation_turns,
        }
    }
}

impl Default for Heuristic {
    fn default() -> Self {
        Self {
            long_prompt_tokens: Tiers::DEFAULT_LONG_PROMPT_TOKENS,
            deep_conversation_turns: Tiers::DEFAULT_DEEP_CONVERSATION_TURNS,
        }
    }
}

/// The kinds of signal, in the order that breaks ties for the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Reasoning,
    Math,
    Code,
    Tools,
    Analysis,
    Depth,
    Length,
    /// Words of easy tasks (translate, summarize, rephrase): points off.
    Easy,
}

const SIGNALS: [Signal; 8] = [
    Signal::Reasoning,
    Signal::Math,
    Signal::Code,
    Signal::Tools,
    Signal::Analysis,
    Signal::Depth,
    Signal::Length,
    Signal::Easy,
];

impl Signal {
    fn reason(self) -> &'static str {
        match self {
            Signal::Reasoning => reason::REASONING,
            Signal::Math => reason::MATH,
            Signal::Code => reason::CODE,
            Signal::Tools => reason::TOOLS,
            Signal::Analysis => reason::ANALYSIS,
            Signal::Depth => reason::DEEP_CONVERSATION,
            Signal::Length => reason::LONG_PROMPT,
            Signal::Easy => reason::SIMPLE,
        }
    }
}

/// Word patterns (case-insensitive) and the points each adds to its signal.
const PATTERNS: &[(Signal, i32, &str)] = &[
    // Explicit requests for careful reasoning.
    (Signal::Reasoning, 3, r"\bstep[- ]by[- ]step\b"),
    (
        Signal::Reasoning,
        3,
        r"\bthink (it )?(carefully|hard|deeply|through)\b",
    ),
    (
        Signal::Reasoning,
        3,
        r"\b(reason (carefully|through|it out)|chain of thought)\b",
    ),
    (
        Signal::Reasoning,
        3,
        r"\bshow (your|all( of)?( your)?|the) (work|reasoning|steps|derivation)\b",
    ),
    (
        Signal::Reasoning,
        2,
        r"\b(rigorous(ly)?|justify (each|every|your)|explain your reasoning)\b",
    ),
    // Mathematics beyond arithmetic.
    (
        Signal::Math,
        3,
        r"\b(prove|proof|theorem|lemma|corollary|induction)\b",
    ),
    (
        Signal::Math,
        3,
        r"\b(integral|integrate|antiderivative|differential equation|eigen\w*|determinant|converge[sd]?|convergence|diverge[sd]?)\b",
    ),
    (
        Signal::Math,
        2,
        r"\b(expected value|variance|bayes\w*|conditional probability|how many (ways|distinct|different)|combinatori\w*|modulo|congruen\w*|recurrence|asymptotic\w*)\b",
    ),
    (
        Signal::Math,
        3,
        r"\\(frac|int|sum|prod|sqrt|lim|infty|partial|mathbb|binom)",
    ),
    (
        Signal::Math,
        1,
        r"\b(derivative|limit|probability|equation|solve for|polynomial|matrix|vectors?|logarithm|factorial|primes?|minimi[sz]e|maximi[sz]e|optimal)\b",
    ),
    (
        Signal::Math,
        1,
        r"\b\d*[a-z]\s*(\^|\*\*)\s*\d|\b\d+[a-z]\s*[-+=]|[a-z]\([a-z]\)\s*=",
    ),
    (
        Signal::Math,
        2,
        r"\b(show that|find all|closed form|last (two|three|\d+) digits|divisible by|remainder|how fast|expected number|smallest (such|positive)|how many (positive )?(integers|numbers)|angle between)\b",
    ),
    // Puzzles, constraints and long-form work: reasoning without the word.
    (
        Signal::Reasoning,
        2,
        r"\b(minimum number|maximum number|guarantee[sd]?|arrangements?|valid (schedule|arrangement|plan|order)|critical path|weighings?|puzzle|riddle|lies|lying|liars?|knaves?|tell(s)? the truth|counterfeit|rearrange the letters)\b",
    ),
    (
        Signal::Reasoning,
        1,
        r"\b(without|must|can't|cannot|refuse|no more than|at most|at least|exactly|nobody|none of|every assumption|so that)\b",
    ),
    (
        Signal::Reasoning,
        2,
        r"\b(\d{1,2},?\d{3}|[5-9]\d\d)[- ]words?\b|\b(in the style of|strict|foreshadow\w*|palindrome|iambic|told backwards|consistent with)\b",
    ),
    // Code: pasted code, errors, and engineering work.
    (Signal::Code, 2, r"```"),
    (
        Signal::Code,
        2,
        r"(traceback \(most recent call last\)|panicked at|exception in thread|segmentation fault|error\[e\d{4}\]|nullpointerexception|\bat [\w.$]+\(\w+\.(java|kt|scala):\d+\))",
    ),
    (
        Signal::Code,
        2,
        r"\b(refactor\w*|debug\w*|race condition|deadlock\w*|memory leak|thread[- ]safe\w*|concurren\w*|time complexity|big[- ]o|lock[- ]free|migrat(e|ion) (the|our|this|a)|production (bug|incident|issue))\b",
    ),
    (
        Signal::Code,
        2,
        r"\b(implement\w*|architect\w*|scal(e|able|ing) (to|out|up)|optimi[sz]e (this|my|the|our) (code|query|function|loop|algorithm))\b",
    ),
    (
        Signal::Code,
        1,
        r"\b(function|class|method|regex|sql|python|rust|javascript|typescript|java|golang|c\+\+|bash|kotlin|swift|compiler?|algorithm|api|endpoint|database|query|bug|stack trace)\b",
    ),
    (
        Signal::Code,
        1,
        r"(\bdef \w+\(|\bfn \w+|\bselect\s.+\sfrom\s|#include|=>|\w::\w|\w+\(\)\s*[;{])",
    ),
    (
        Signal::Code,
        2,
        r"\b(schema|operator|kernel|parser|security|vulnerab\w*|leak\w*|oom|hangs?|review this|reconcil\w*|borrow\w*|lifetimes?|memory orderings?|rate limiter|microservices?)\b",
    ),
    // Analysis and multi-step work.
    (
        Signal::Analysis,
        2,
        r"\b(trade-?offs?|pros and cons|root cause|implications|critique|second-order)\b",
    ),
    (
        Signal::Analysis,
        2,
        r"\b(analy[sz]e|analysis|evaluate|assess(ment)?|strateg(y|ic|ies)|roadmap|design (a|an|the)|plan (for|a|an|the|out)|recommend(ation)?s?)\b",
    ),
    (
        Signal::Analysis,
        2,
        r"\b(what could (cause|explain)|how would you|likely (cause|going on)|what (is|'s) likely|investigate|diagnos\w+|justify|risks?|decide|prioriti[sz]e|sensitiv\w+|significan\w+|synthesi[sz]e|estimate|assumptions?|weigh(ing)?|disagree|balance|postmortem|incident|think (it|this) through|help me (think|decide|weigh))\b",
    ),
    (
        Signal::Analysis,
        1,
        r"\b(compare|comparison|versus|vs\.?|why does|why do|explain why|what would happen|under what conditions)\b",
    ),
    (
        Signal::Analysis,
        1,
        r"\b(first\b.{1,200}\bthen|and then|after that|finally|for each)\b",
    ),
    // Easy tasks: points off.
    (
        Signal::Easy,
        -2,
        r"\b(translate|translation|summari[sz]e|summary|tl;?dr|proofread|rephrase|reword|paraphrase|fix (the |my )?(grammar|spelling|typos?))\b",
    ),
    (
        Signal::Easy,
        -1,
        r"\b(shorter|one sentence|friendlier|more formal|more polite|a title|a subject line|a tagline|a haiku|synonyms?|define|definition of|what does .{1,40} stand for)\b",
    ),
];

static PATTERN_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSetBuilder::new(PATTERNS.iter().map(|(_, _, p)| *p))
        .case_insensitive(true)
        .build()
        .unwrap_or_else(|e| unreachable!("built-in tier patterns: {e}"))
});

/// Three or more numbered items: a multi-step instruction.
static NUMBERED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^\s*(\d+[.)]|[-*])\s+\S").unwrap_or_else(|e| unreachable!("{e}"))
});

/// What the heuristic reads off a request, before scoring: kept apart so
/// it can be tested and reported on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Estimated prompt tokens: four characters a token, four a message.
    pub prompt_tokens: u64,
    pub user_turns: u32,
    /// Tools declared on the request.
    pub tools: usize,
    /// Assistant turns that called tools (an agent loop in progress).
    pub tool_rounds: u32,
    /// `reasoning_effort` medium or high, or a thinking budget.
    pub reasoning_param: bool,
    /// `reasoning_effort` minimal or low.
    pub low_effort: bool,
    /// Estimated tokens of the last user turn: the instruction itself.
    pub last_user_tokens: u64,
}

impl Features {
    pub fn of(request: &ChatRequest) -> Self {
        let mut features = Features {
            tools: request.tools.as_ref().map_or(0, Vec::len),
            reasoning_param: request.thinking_budget.is_some_and(|b| b > 0)
                || matches!(
                    request.reasoning_effort.as_deref(),
                    Some("medium" | "high" | "xhigh")
                ),
            low_effort: matches!(
                request.reasoning_effort.as_deref(),
                Some("minimal" | "low" | "none")
            ),
            ..Features::default()
        };
        let mut chars: u64 = 0;
        for message in &request.messages {
            let these = texts(message)
                .map(|t| t.chars().count() as u64)
                .sum::<u64>();
            chars += these;
            features.prompt_tokens += 4;
            match message.role {
                Role::User => {
                    features.user_turns += 1;
                    features.last_user_tokens = these.div_ceil(4);
                }
                Role::Assistant if message.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) => {
                    features.tool_rounds += 1
                }
                _ => {}
            }
        }
        features.prompt_tokens += chars.div_ceil(4);
        features
    }
}

/// The text parts of a message, borrowed.
fn texts(message: &Message) -> impl Iterator<Item = &str> {
    let (one, parts) = match &message.content {
        Some(Content::Text(text)) => (Some(text.as_str()), &[][..]),
        Some(Content::Parts(parts)) => (None, parts.as_slice()),
        None => (None, &[][..]),
    };
    one.into_iter().chain(parts.iter().filter_map(|p| match p {
        ContentPart::Text { text, .. } => Some(text.as_str()),
        _ => None,
    }))
}

/// The first `SCAN_BYTES` of `text`, cut on a character boundary.
fn head(text: &str) -> &str {
    if text.len() <= SCAN_BYTES {
        return text;
    }
    let mut end = SCAN_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Points per signal, in [`SIGNALS`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Score([i32; SIGNALS.len()]);

impl Score {
    fn add(&mut self, signal: Signal, points: i32) {
        let at = SIGNALS.iter().position(|s| *s == signal).unwrap_or(0);
        let slot = &mut self.0[at];
        *slot = (*slot + points).clamp(-SIGNAL_CAP, SIGNAL_CAP);
    }

    pub fn total(&self) -> i32 {
        self.0.iter().sum()
    }

    /// The signal that added the most points (ties: the earlier in [`SIGNALS`]).
    fn strongest(&self) -> Signal {
        let mut best = (Signal::Easy, 0);
        for (signal, points) in SIGNALS.iter().zip(self.0) {
            if points > best.1 {
                best = (*signal, points);
            }
        }
        best.0
    }
}

impl Heuristic {
    /// The points of `request`, signal by signal.
    pub fn score(&self, request: &ChatRequest, features: &Features) -> Score {
        let mut score = Score::default();
        // Words: the last two user turns (a short follow-up leans on the
        // turn before it); the system prompt sets a role, not the task.
        let mut matched = [false; PATTERNS.len()];
        let mut numbered = 0;
        let mut questions = 0;
        let mut latest = true;
        for message in request
            .messages
            .iter()
            .rev()
            .filter(|m| m.role == Role::User)
            .take(2)
        {
            for text in texts(message) {
                let text = head(text);
                for index in PATTERN_SET.matches(text).iter() {
                    matched[index] = true;
                }
                numbered += NUMBERED.find_iter(text).take(3).count();
                if latest {
                    questions += text.bytes().filter(|b| *b == b'?').count();
                }
            }
            latest = false;
        }
        for ((signal, points, _), hit) in PATTERNS.iter().zip(matched) {
            if hit {
                score.add(*signal, *points);
            }
        }
        if numbered >= 3 {
            score.add(Signal::Analysis, 2);
        }
        if features.tools >= 5 {
            score.add(Signal::Tools, 2);
        } else if features.tools > 0 {
            score.add(Signal::Tools, 1);
        }
        score.add(Signal::Tools, features.tool_rounds.min(2) as i32);
        if features.user_turns >= self.deep_conversation_turns {
            score.add(Signal::Depth, 2);
        } else if features.user_turns * 2 >= self.deep_conversation_turns && features.user_turns > 1
        {
            score.add(Signal::Depth, 1);
        }
        // Longer requests carry more constraints; a quarter of the long
        // threshold adds a point too.
        if features.last_user_tokens >= 60 {
            score.add(Signal::Length, 1);
        }
        if features.last_user_tokens >= 150 || features.prompt_tokens * 4 >= self.long_prompt_tokens
        {
            score.add(Signal::Length, 1);
        }
        if questions >= 2 {
            score.add(Signal::Analysis, 1);
        }
        if features.low_effort {
            score.add(Signal::Easy, -3);
        }
        score
    }
}

impl TierPolicy for Heuristic {
    fn decide(&self, request: &ChatRequest, tiers: usize) -> Decision {
        let strongest = tiers.saturating_sub(1);
        let features = Features::of(request);
        if features.reasoning_param {
            return Decision {
                tier: strongest,
                reason: reason::REASONING,
            };
        }
        if features.prompt_tokens >= self.long_prompt_tokens {
            return Decision {
                tier: strongest,
                reason: reason::LONG_PROMPT,
            };
        }
        let score = self.score(request, &features);
        if score.total() >= STRONG_AT {
            Decision {
                tier: strongest,
                reason: score.strongest().reason(),
            }
        } else {
            Decision {
                tier: 0,
                reason: reason::SIMPLE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_llm::canonical::{FunctionCall, Tool, ToolCall};

    fn request(turns: &[(Role, &str)]) -> ChatRequest {
        let messages: Vec<serde_json::Value> = turns
            .iter()
            .map(|(role, text)| serde_json::json!({"role": role.as_str(), "content": text}))
            .collect();
        serde_json::from_value(serde_json::json!({"model": "m", "messages": messages})).unwrap()
    }

    fn ask(text: &str) -> Decision {
        Heuristic::default().decide(&request(&[(Role::User, text)]), 2)
    }

    #[test]
    fn simple_requests_go_to_the_cheapest_tier() {
        for text in [
            "Hi! How are you today?",
            "What is the capital of Portugal?",
            "Translate 'where is the train station' into German.",
            "Summarize this in one sentence: the meeting moved to Thursday at 3pm.",
            "How do I reverse a list in Python?",
            "What is 15% of 80?",
        ] {
            assert_eq!(
                ask(text),
                Decision {
                    tier: 0,
                    reason: reason::SIMPLE
                },
                "{text}"
            );
        }
    }

    #[test]
    fn hard_requests_go_to_the_strongest_tier_with_their_reason() {
        for (text, why) in [
            (
                "Prove that there are infinitely many primes of the form 4k+3.",
                reason::MATH,
            ),
            (
                "Compute \\int_0^1 x^2 e^x dx and show your work.",
                reason::MATH,
            ),
            (
                "Think carefully: which of these three contracts exposes us to more risk?",
                reason::REASONING,
            ),
            (
                "Our Go service deadlocks under load. Here is the code:\n```go\nmu.Lock()\nch <- v\n```",
                reason::CODE,
            ),
            (
                "Analyze the trade-offs between event sourcing and a plain relational model for our billing system.",
                reason::ANALYSIS,
            ),
        ] {
            assert_eq!(
                ask(text),
                Decision {
                    tier: 1,
                    reason: why
                },
                "{text}"
            );
        }
    }

    #[test]
    fn parameters_and_length_decide_alone() {
        let mut r = request(&[(Role::User, "hi")]);
        r.reasoning_effort = Some("high".into());
        assert_eq!(
            Heuristic::default().decide(&r, 3),
            Decision {
                tier: 2,
                reason: reason::REASONING
            }
        );
        r.reasoning_effort = None;
        r.thinking_budget = Some(2048);
        assert_eq!(Heuristic::default().decide(&r, 2).tier, 1);

        // A long history with a short last question: the length decides.
        let long = "lorem ipsum ".repeat(1_100);
        let chat = request(&[
            (Role::User, "hi"),
            (Role::Assistant, &long),
            (Role::User, "thanks!"),
        ]);
        let policy = Heuristic::default();
        assert_eq!(
            policy.decide(&chat, 2),
            Decision {
                tier: 1,
                reason: reason::LONG_PROMPT
            }
        );
        let lenient = Heuristic {
            long_prompt_tokens: 100_000,
            ..policy
        };
        assert_eq!(lenient.decide(&chat, 2).tier, 0);
    }

    #[test]
    fn tools_and_depth_add_up() {
        let mut r = request(&[(Role::User, "What's the weather in Lisbon?")]);
        let tool = |name: &str| -> Tool {
            serde_json::from_value(
                serde_json::json!({"type": "function", "function": {"name": name}}),
            )
            .unwrap()
        };
        r.tools = Some(vec![tool("weather")]);
        assert_eq!(
            Heuristic::default().decide(&r, 2).tier,
            0,
            "one tool, one question"
        );
        r.tools = Some((0..6).map(|i| tool(&format!("t{i}"))).collect());
        let mut call = Message::new(Role::Assistant, "");
        call.content = None;
        call.tool_calls = Some(vec![ToolCall {
            id: "c".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "t0".into(),
                arguments: "{}".into(),
            },
        }]);
        r.messages.push(call);
        assert_eq!(
            Heuristic::default().decide(&r, 2),
            Decision {
                tier: 1,
                reason: reason::TOOLS
            }
        );

        let chat: Vec<(Role, &str)> = (0..8)
            .flat_map(|_| {
                [
                    (Role::User, "and what about the next one?"),
                    (Role::Assistant, "sure"),
                ]
            })
            .collect();
        let features = Features::of(&request(&chat));
        assert_eq!(features.user_turns, 8);
        assert_eq!(
            Heuristic::default().decide(&request(&chat), 2),
            Decision {
                tier: 1,
                reason: reason::DEEP_CONVERSATION
            }
        );
        let half = request(&chat[..8]);
        let score = Heuristic::default().score(&half, &Features::of(&half));
        assert!(
            score.total() < STRONG_AT,
            "4 turns alone are not deep: {score:?}"
        );
    }

    #[test]
    fn easy_words_and_low_effort_take_points_off() {
        let text = "Translate this Python docstring into French: \"Return the user's id.\"";
        assert_eq!(ask(text).tier, 0);
        let mut r = request(&[(
            Role::User,
            "Implement a function that compares two versions.",
        )]);
        assert_eq!(Heuristic::default().decide(&r, 2).tier, 1);
        r.reasoning_effort = Some("low".into());
        assert_eq!(Heuristic::default().decide(&r, 2).tier, 0);
    }

    #[test]
    fn word_boundaries_hold_and_scans_are_bounded() {
        // "improve" is no "prove", "summary" no "sum".
        assert_eq!(ask("How can I improve my summary of the week?").tier, 0);
        let huge = format!("{}```", "é".repeat(SCAN_BYTES));
        assert!(head(&huge).len() <= SCAN_BYTES);
        assert!(!head(&huge).contains("```"), "the tail is not scanned");
    }

    #[test]
    fn features_count_parts_and_messages() {
        let r: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}]}
            ]
        }))
        .unwrap();
        let f = Features::of(&r);
        assert_eq!(f.user_turns, 1);
        // 8 + 8 characters = 4 tokens, plus 4 a message.
        assert_eq!(f.prompt_tokens, 12);
    }
}

/// The labelled prompts of `tests/routing/prompts.jsonl` through the
/// heuristic: how often it picks the intended tier, and what it saves
/// against sending everything to the strong tier. Run with `--nocapture`
/// to read the report.
#[cfg(test)]
mod dataset {
    use super::*;
    use std::collections::BTreeMap;

    const PROMPTS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/routing/prompts.jsonl"
    ));
    /// Example prices, USD per million tokens (input, output).
    const CHEAP: (f64, f64) = (0.15, 0.60);
    const STRONG: (f64, f64) = (2.50, 10.0);
    /// Assumed answer length, the same whichever tier writes it.
    const OUTPUT_TOKENS: f64 = 500.0;

    struct Case {
        id: String,
        category: String,
        strong: bool,
        request: ChatRequest,
    }

    fn cases() -> Vec<Case> {
        PROMPTS
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                let mut body = serde_json::json!({"model": "m", "messages": row["messages"]});
                if let Some(tools) = row.get("tools") {
                    body["tools"] = tools.clone();
                }
                Case {
                    id: row["id"].as_str().unwrap().to_string(),
                    category: row["category"].as_str().unwrap().to_string(),
                    strong: match row["intended"].as_str() {
                        Some("strong") => true,
                        Some("cheap") => false,
                        other => panic!("{line}: intended {other:?}"),
                    },
                    request: serde_json::from_value(body).unwrap_or_else(|e| panic!("{line}: {e}")),
                }
            })
            .collect()
    }

    fn cost((input, output): (f64, f64), tokens: u64) -> f64 {
        (tokens as f64 * input + OUTPUT_TOKENS * output) / 1_000_000.0
    }

    #[test]
    fn the_labelled_prompts_route_to_their_intended_tier() {
        let cases = cases();
        let policy = Heuristic::default();
        let mut per_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let (mut cheap_to_strong, mut strong_to_cheap) = (0, 0);
        let (mut routed, mut always_strong, mut oracle) = (0.0, 0.0, 0.0);
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        let mut misses = Vec::new();
        for case in &cases {
            let decision = policy.decide(&case.request, 2);
            let strong = decision.tier == 1;
            let tokens = Features::of(&case.request).prompt_tokens;
            routed += cost(if strong { STRONG } else { CHEAP }, tokens);
            always_strong += cost(STRONG, tokens);
            oracle += cost(if case.strong { STRONG } else { CHEAP }, tokens);
            *reasons.entry(decision.reason).or_default() += 1;
            let entry = per_category.entry(&case.category).or_default();
            entry.1 += 1;
            if strong == case.strong {
                entry.0 += 1;
            } else {
                if strong {
                    cheap_to_strong += 1;
                } else {
                    strong_to_cheap += 1;
                }
                misses.push(format!(
                    "  {} intended {} got {} ({})",
                    case.id,
                    if case.strong { "strong" } else { "cheap" },
                    if strong { "strong" } else { "cheap" },
                    decision.reason
                ));
            }
        }
        let total = cases.len();
        let correct: usize = per_category.values().map(|(c, _)| c).sum();
        let accuracy = correct as f64 / total as f64;
        let strong_total = cases.iter().filter(|c| c.strong).count();
        let saved = 1.0 - routed / always_strong;
        println!(
            "smart tiers, heuristic, {total} labelled prompts ({strong_total} intended strong)"
        );
        println!("accuracy {:.1}% ({correct}/{total})", accuracy * 100.0);
        for (category, (c, n)) in &per_category {
            println!(
                "  {category:<10} {:>5.1}% ({c}/{n})",
                *c as f64 * 100.0 / *n as f64
            );
        }
        println!(
            "misroutes: cheap->strong {cheap_to_strong} ({:.1}% of cheap), strong->cheap {strong_to_cheap} ({:.1}% of strong)",
            cheap_to_strong as f64 * 100.0 / (total - strong_total) as f64,
            strong_to_cheap as f64 * 100.0 / strong_total as f64,
        );
        println!(
            "cost at ${}/${} (cheap) and ${}/${} (strong) per M tokens in/out, {OUTPUT_TOKENS} output tokens each:",
            CHEAP.0, CHEAP.1, STRONG.0, STRONG.1
        );
        println!(
            "  always strong ${always_strong:.4}, routed ${routed:.4}: {:.1}% saved (perfect labels would save {:.1}%)",
            saved * 100.0,
            (1.0 - oracle / always_strong) * 100.0
        );
        println!("reasons: {reasons:?}");
        let sweep: Vec<String> = (1..=5)
            .map(|at| {
                let right = cases
                    .iter()
                    .filter(|c| {
                        let f = Features::of(&c.request);
                        let strong = f.reasoning_param
                            || f.prompt_tokens >= policy.long_prompt_tokens
                            || policy.score(&c.request, &f).total() >= at;
                        strong == c.strong
                    })
                    .count();
                format!("at {at}: {:.1}%", right as f64 * 100.0 / total as f64)
            })
            .collect();
        println!(
            "accuracy by threshold (in use: {STRONG_AT}): {}",
            sweep.join(", ")
        );
        println!("misroutes:\n{}", misses.join("\n"));

        assert!(total >= 200, "{total} prompts");
        assert!(accuracy >= 0.80, "accuracy {accuracy:.3}");
        assert!(
            strong_to_cheap * 100 <= strong_total * 15,
            "{strong_to_cheap} of {strong_total} strong prompts went cheap"
        );
        assert!(saved >= 0.40, "saved {saved:.3}");
    }

    #[test]
    fn the_dataset_is_well_formed() {
        let cases = cases();
        let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), cases.len(), "ids are unique");
        for category in ["chat", "support", "code", "math", "analysis", "reasoning"] {
            let of: Vec<&Case> = cases.iter().filter(|c| c.category == category).collect();
            assert!(of.len() >= 30, "{category}: {}", of.len());
            assert!(of.iter().any(|c| c.strong) && of.iter().any(|c| !c.strong));
        }
        assert!(cases.iter().filter(|c| c.request.tools.is_some()).count() >= 8);
        assert!(
            cases
                .iter()
                .filter(|c| c.request.messages.len() > 2)
                .count()
                >= 5
        );
    }
}
