//! Stage `guard`: the route's guard policy on the request (guard in) and on
//! the answer (guard out, in [`relay`](super::relay) and `forward`).
//!
//! A guarded request is read in its canonical form, whatever the client's
//! API: every text of every message (tool results and tool-call arguments
//! included) is scanned, acted on (redact, mask, block), and checked for
//! prompt injection; the request then goes out translated from that form.
//! The answer is filtered in the same form: a full answer at once, a stream
//! chunk by chunk with a bounded hold-back window ([`StreamGuard`], which
//! also holds a moderated stream's text until a moderation call passed it),
//! and masked values are restored for the client, in text and tool-call
//! arguments. Embeddings input gets the input rules alone
//! ([`inspect_embeddings`]). A route without a policy never reaches this
//! module and keeps the byte passthrough.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use tollgate_config::guard::GuardPolicy;
use tollgate_guard::injection::InjectionDetector;
use tollgate_guard::{
    Action, Blocked, Kind, MaskTable, Recognizers, Rules, StreamScanner, StreamUnmasker,
};
use tollgate_llm::canonical::{
    ChatChunk, ChatResponse, ChunkChoice, Content, ContentPart, FunctionCallDelta, Message, Role,
    ToolCallDelta, finish,
};

use super::ingress::Inbound;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::metrics::GuardLabels;

/// The built-in recognizers, compiled once per process on first use.
pub fn recognizers() -> &'static Arc<Recognizers> {
    static RECOGNIZERS: LazyLock<Arc<Recognizers>> = LazyLock::new(|| Arc::new(Recognizers::new()));
    &RECOGNIZERS
}

fn injection_detector() -> &'static InjectionDetector {
    static DETECTOR: LazyLock<InjectionDetector> = LazyLock::new(InjectionDetector::new);
    &DETECTOR
}

/// Response header naming what a policy flagged but let through.
pub const FLAGS_HEADER: &str = "x-tollgate-guard-flags";

/// One request's guard: its policy, its placeholders, what was found.
pub struct GuardState {
    pub policy: Arc<GuardPolicy>,
    pub masks: MaskTable,
    /// What was acted on, aggregated, for metrics and audit.
    pub decisions: Vec<Decision>,
    /// Flagged and let through (`prompt_injection`).
    pub flags: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub stage: &'static str,
    pub rule: Arc<str>,
    pub action: &'static str,
    pub count: u32,
}

impl GuardState {
    fn new(policy: Arc<GuardPolicy>) -> Self {
        Self {
            policy,
            masks: MaskTable::default(),
            decisions: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// Adds `hits` of `rules` on `stage` to the decisions.
    fn record(&mut self, stage: &'static str, rules: &Rules, hits: &[Kind]) {
        record(&mut self.decisions, stage, rules, hits, true);
    }

    fn record_one(&mut self, stage: &'static str, rule: &str, action: &'static str) {
        add(&mut self.decisions, stage, rule, action, 1);
    }

    /// Counts every decision in the metrics (once, when the request settles).
    pub fn count(&self, metrics: &crate::metrics::Metrics, route: &Arc<str>) {
        let policy: Arc<str> = Arc::from(self.policy.name.as_str());
        for decision in &self.decisions {
            metrics
                .guard_decisions
                .get_or_create(&GuardLabels {
                    route: route.clone(),
                    policy: policy.clone(),
                    stage: decision.stage,
                    rule: decision.rule.clone(),
                    action: decision.action,
                })
                .inc_by(u64::from(decision.count));
        }
    }
}

/// `masking`: a mask rule masked (else it redacted, as on embeddings).
fn record(
    decisions: &mut Vec<Decision>,
    stage: &'static str,
    rules: &Rules,
    hits: &[Kind],
    masking: bool,
) {
    for kind in hits {
        let action = match rules.action(*kind) {
            Some(Action::Block) => "block",
            Some(Action::Mask) if masking => "mask",
            _ => "redact",
        };
        add(decisions, stage, rules.label(*kind), action, 1);
    }
}

fn add(
    decisions: &mut Vec<Decision>,
    stage: &'static str,
    rule: &str,
    action: &'static str,
    count: u32,
) {
    match decisions
        .iter_mut()
        .find(|d| d.stage == stage && d.action == action && &*d.rule == rule)
    {
        Some(decision) => decision.count += count,
        None => decisions.push(Decision {
            stage,
            rule: Arc::from(rule),
            action,
            count,
        }),
    }
}

/// Guard in: applies `policy` to the request. The request is then sent in
/// its (possibly rewritten) canonical form; a blocked one is refused with a
/// 400 in the client's error shape.
pub async fn inspect_request(
    context: &mut RequestContext,
    runtime: &crate::runtime::Runtime,
    policy: &Arc<GuardPolicy>,
    inbound: &mut Inbound<'_>,
) -> Result<(), ApiError> {
    let mut state = GuardState::new(policy.clone());
    // count_tokens sends the text to be counted, not answered: the input
    // rules apply (the provider sees what a Messages request would send),
    // injection checks and moderation do not (no model acts on it).
    let answered = inbound.endpoint != crate::dialect::Endpoint::CountTokens;
    let mut outcome = inspect(&mut state, inbound, answered);
    // The judge and the moderation provider see what the provider would:
    // the rewritten messages.
    if outcome.is_ok() && answered {
        outcome = ask_judge(&mut state, runtime, inbound).await;
    }
    if outcome.is_ok() && answered {
        outcome = moderate_request(&mut state, runtime, inbound).await;
    }
    // Counted and kept whatever the outcome: a block is a decision too.
    context.guard = Some(Box::new(state));
    outcome
}

/// The policy's input moderation over every text of the request.
async fn moderate_request(
    state: &mut GuardState,
    runtime: &crate::runtime::Runtime,
    inbound: &mut Inbound<'_>,
) -> Result<(), ApiError> {
    let policy = state.policy.clone();
    let Some(moderation) = &policy.input_moderation else {
        return Ok(());
    };
    let canonical = inbound.canonical().map_err(unreadable)?;
    let text: Vec<String> = canonical
        .request
        .messages
        .iter()
        .map(message_text)
        .collect();
    match super::moderation::ask(runtime, moderation, &text.join("\n\n")).await {
        Ok(categories) if categories.is_empty() => Ok(()),
        Ok(categories) => {
            for category in &categories {
                state.record_one("input", &format!("moderation:{category}"), "block");
            }
            Err(ApiError::invalid_request(
                "content_policy_violation",
                format!(
                    "The request was blocked by guard policy {:?}: its moderation flags {}.",
                    policy.name,
                    categories.join(", ")
                ),
            ))
        }
        Err(why) => moderation_failed(
            &mut state.decisions,
            &policy.name,
            moderation,
            "input",
            &why,
        )
        .map_err(|()| {
            ApiError::unavailable(format!(
                "Guard policy {:?} could not get an answer from its moderation provider, and refuses requests without one.",
                policy.name
            ))
        }),
    }
}

/// A moderation call failed: counted; `Err` when the policy fails closed.
fn moderation_failed(
    decisions: &mut Vec<Decision>,
    policy: &str,
    moderation: &tollgate_config::guard::Moderation,
    stage: &'static str,
    why: &str,
) -> Result<(), ()> {
    let action = if moderation.fail_closed {
        "block"
    } else {
        "allow"
    };
    add(decisions, stage, "moderation_unavailable", action, 1);
    tracing::warn!(policy, stage, %why, action, "guard moderation failed");
    if moderation.fail_closed {
        Err(())
    } else {
        Ok(())
    }
}

/// Guard out on a full answer: the policy's output moderation. A flagged
/// (or, failing closed, unmoderated) choice loses its content and ends with
/// `content_filter`.
pub async fn moderate_answer(
    state: &mut GuardState,
    runtime: &crate::runtime::Runtime,
    answer: &mut ChatResponse,
) {
    let policy = state.policy.clone();
    let Some(moderation) = &policy.output_moderation else {
        return;
    };
    let text: Vec<String> = answer
        .choices
        .iter()
        .map(|c| message_text(&c.message))
        .collect();
    let text = text.join("\n\n");
    if text.trim().is_empty() {
        return;
    }
    let blocked = match super::moderation::ask(runtime, moderation, &text).await {
        Ok(categories) => {
            for category in &categories {
                state.record_one("output", &format!("moderation:{category}"), "block");
            }
            !categories.is_empty()
        }
        Err(why) => moderation_failed(
            &mut state.decisions,
            &policy.name,
            moderation,
            "output",
            &why,
        )
        .is_err(),
    };
    if blocked {
        for choice in &mut answer.choices {
            choice.message.content = Some(Content::Text(String::new()));
            choice.message.tool_calls = None;
            choice.finish_reason = Some(finish::CONTENT_FILTER.into());
        }
        answer.native_stop = None;
    }
}

/// The policy's LLM judge on the user messages and tool results the
/// heuristics let through. A judge that cannot answer lets the request
/// through (`Open`, counted) or refuses it with 503 (`Closed`).
async fn ask_judge(
    state: &mut GuardState,
    runtime: &crate::runtime::Runtime,
    inbound: &mut Inbound<'_>,
) -> Result<(), ApiError> {
    let policy = state.policy.clone();
    let Some(injection) = &policy.injection else {
        return Ok(());
    };
    let Some(judge) = &injection.judge else {
        return Ok(());
    };
    if state.flags.contains(&"prompt_injection") {
        return Ok(());
    }
    let canonical = inbound.canonical().map_err(unreadable)?;
    let judged: Vec<String> = canonical
        .request
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::User | Role::Tool))
        .map(message_text)
        .filter(|t| !t.trim().is_empty())
        .collect();
    if judged.is_empty() {
        return Ok(());
    }
    match super::judge::ask(runtime, judge, &judged.join("\n\n")).await {
        Ok(verdict) if verdict.injection && verdict.confidence >= injection.threshold => {
            if injection.block {
                state.record_one("input", "prompt_injection_judge", "block");
                return Err(ApiError::invalid_request(
                    "prompt_injection_detected",
                    format!(
                        "The request was blocked by guard policy {:?}: its judge reads it as a prompt injection (confidence {:.2}).",
                        policy.name, verdict.confidence
                    ),
                ));
            }
            state.record_one("input", "prompt_injection_judge", "flag");
            state.flags.push("prompt_injection");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(why) if judge.fail_closed => {
            state.record_one("input", "judge_unavailable", "block");
            tracing::warn!(policy = %policy.name, %why, "guard judge failed: request refused (onFailure: Closed)");
            Err(ApiError::unavailable(format!(
                "Guard policy {:?} could not get a verdict from its judge, and refuses requests without one.",
                policy.name
            )))
        }
        Err(why) => {
            state.record_one("input", "judge_unavailable", "allow");
            tracing::warn!(policy = %policy.name, %why, "guard judge failed: request let through (onFailure: Open)");
            Ok(())
        }
    }
}

fn inspect(
    state: &mut GuardState,
    inbound: &mut Inbound<'_>,
    answered: bool,
) -> Result<(), ApiError> {
    let policy = state.policy.clone();
    let canonical = inbound.canonical_mut().map_err(unreadable)?;
    let messages = &mut canonical.request.messages;
    if let Some(injection) = policy.injection.as_ref().filter(|_| answered) {
        for message in messages.iter() {
            if !matches!(message.role, Role::User | Role::Tool) {
                continue;
            }
            let verdict = injection_detector().assess(&message_text(message));
            if !verdict.flagged(injection.threshold) {
                continue;
            }
            if injection.block {
                state.record_one("input", "prompt_injection", "block");
                return Err(ApiError::invalid_request(
                    "prompt_injection_detected",
                    format!(
                        "The request was blocked by guard policy {:?}: a {} message reads as a prompt injection ({}).",
                        policy.name,
                        role_name(message.role),
                        verdict.signals.join(", ")
                    ),
                ));
            }
            state.record_one("input", "prompt_injection", "flag");
            if !state.flags.contains(&"prompt_injection") {
                state.flags.push("prompt_injection");
            }
        }
    }
    let Some(rules) = &policy.input else {
        return Ok(());
    };
    let mut hits = Vec::new();
    let mut outcome = Ok(());
    for message in messages.iter_mut() {
        outcome = each_text(message, |text, _| {
            if let Some(changed) = rules.apply(text, &mut state.masks, &mut hits)? {
                *text = changed;
            }
            Ok(())
        });
        if outcome.is_err() {
            break;
        }
    }
    state.record("input", rules, &hits);
    outcome.map_err(|Blocked { kind }| blocked_input(&policy, rules, kind))
}

/// A request refused for what it contains, in the client's shape.
fn blocked_input(policy: &GuardPolicy, rules: &Rules, kind: Kind) -> ApiError {
    ApiError::invalid_request(
        "content_policy_violation",
        format!(
            "The request was blocked by guard policy {:?}: it contains {}.",
            policy.name,
            rules.label(kind)
        ),
    )
}

/// Guard in on an embeddings request: the policy's input rules on every
/// text of `input`. Masking acts as redaction (there is no answer text to
/// restore a value into); token arrays cannot be read and are refused when
/// the policy has input rules. Injection checks and moderation do not
/// apply: no model acts on the text or answers it.
pub fn inspect_embeddings(
    context: &mut RequestContext,
    policy: &Arc<GuardPolicy>,
    inbound: &mut Inbound<'_>,
) -> Result<(), ApiError> {
    let mut state = GuardState::new(policy.clone());
    let outcome = embeddings_input(&mut state, inbound);
    context.guard = Some(Box::new(state));
    outcome
}

/// Why an embeddings input was not let through.
enum Refused {
    Blocked(Blocked),
    /// Token ids: nothing to scan.
    Tokens,
}

fn embeddings_input(state: &mut GuardState, inbound: &mut Inbound<'_>) -> Result<(), ApiError> {
    let policy = state.policy.clone();
    let Some(rules) = &policy.input else {
        return Ok(());
    };
    let Some(raw) = inbound.payload.field("input") else {
        return Ok(());
    };
    let mut input: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::invalid_request("invalid_request", e.to_string()))?;
    let mut hits = Vec::new();
    let mut changed = false;
    let mut scan = |text: &mut String| -> Result<(), Refused> {
        if let Some(redacted) = rules.redact(text, &mut hits).map_err(Refused::Blocked)? {
            *text = redacted;
            changed = true;
        }
        Ok(())
    };
    let outcome = match &mut input {
        serde_json::Value::String(text) => scan(text),
        serde_json::Value::Array(items) => items.iter_mut().try_for_each(|item| match item {
            serde_json::Value::String(text) => scan(text),
            serde_json::Value::Number(_) | serde_json::Value::Array(_) => Err(Refused::Tokens),
            // Left to the provider to refuse.
            _ => Ok(()),
        }),
        _ => Ok(()),
    };
    record(&mut state.decisions, "input", rules, &hits, false);
    match outcome {
        Err(Refused::Blocked(Blocked { kind })) => Err(blocked_input(&policy, rules, kind)),
        Err(Refused::Tokens) => {
            state.record_one("input", "token_input", "block");
            Err(ApiError::invalid_request(
                "content_policy_violation",
                format!(
                    "Guard policy {:?} reads the text it lets through: send embeddings input as text, not token ids.",
                    policy.name
                ),
            ))
        }
        Ok(()) if changed => {
            let rewritten = serde_json::value::to_raw_value(&input)
                .map_err(|e| ApiError::invalid_request("invalid_request", e.to_string()))?;
            inbound.payload.rewrite("input", rewritten);
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// A request the canonical form cannot read, in the client's shape.
fn unreadable(error: tollgate_llm::LlmError) -> ApiError {
    ApiError::invalid_request("invalid_request", error.message)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Tool => "tool result",
        _ => "user",
    }
}

/// The text of a message, parts joined.
fn message_text(message: &Message) -> String {
    message
        .content
        .as_ref()
        .map(Content::text)
        .unwrap_or_default()
}

/// Calls `f` on every text of a message: its content, its text parts, and
/// the arguments of its tool calls (`true`: the text is JSON).
fn each_text(
    message: &mut Message,
    mut f: impl FnMut(&mut String, bool) -> Result<(), Blocked>,
) -> Result<(), Blocked> {
    match &mut message.content {
        Some(Content::Text(text)) => f(text, false)?,
        Some(Content::Parts(parts)) => {
            for part in parts {
                if let ContentPart::Text { text, .. } = part {
                    f(text, false)?;
                }
            }
        }
        None => {}
    }
    for call in message.tool_calls.iter_mut().flatten() {
        f(&mut call.function.arguments, true)?;
    }
    Ok(())
}

/// Guard out on a full answer: output rules, then masked values restored.
/// A blocked choice loses its content and ends with `content_filter`.
pub fn filter_answer(state: &mut GuardState, answer: &mut ChatResponse) {
    let policy = state.policy.clone();
    let mut hits = Vec::new();
    for choice in &mut answer.choices {
        if let Some(rules) = &policy.output {
            // Output rules never mask: a scratch table keeps the request's
            // placeholders apart.
            let mut scratch = MaskTable::default();
            let outcome = each_text(&mut choice.message, |text, _| {
                if let Some(changed) = rules.apply(text, &mut scratch, &mut hits)? {
                    *text = changed;
                }
                Ok(())
            });
            if outcome.is_err() {
                choice.message.content = Some(Content::Text(String::new()));
                choice.message.tool_calls = None;
                choice.finish_reason = Some(finish::CONTENT_FILTER.into());
                answer.native_stop = None;
            }
        }
        if !state.masks.is_empty() {
            let masks = &state.masks;
            let _ = each_text(&mut choice.message, |text, json| {
                // Arguments are JSON: a restored value goes in escaped.
                *text = if json {
                    masks.unmask_json(text)
                } else {
                    masks.unmask(text)
                };
                Ok(())
            });
        }
    }
    if let Some(rules) = &policy.output {
        state.record("output", rules, &hits);
    }
}

/// A stream's moderation call in flight, polled by the relay: the flagged
/// categories, or why there is no answer.
pub type ModerationCall =
    Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'static>>;

/// Bytes of already passed text sent before each window as context, so a
/// phrase cut by a window boundary is judged whole.
const MODERATION_CONTEXT: usize = 1024;

/// Guard out on a stream. Per choice the text, and each tool call's
/// arguments, go through the output rules with a hold-back window (a value
/// split across chunks is still found);
/// with output moderation it is then held until a moderation call passed
/// it (in windows of `streamModerationWindow` bytes, and at the choice's
/// end); last, placeholders are restored in the text and in tool-call
/// arguments. What is still held is released at the choice's end. A
/// blocked or flagged answer ends with `content_filter` and the stream with
/// it.
pub struct StreamGuard {
    policy: Arc<GuardPolicy>,
    masks: MaskTable,
    choices: Vec<ChoiceFilter>,
    hits: Vec<Kind>,
    /// Decisions beyond the rules' hits (moderation).
    decisions: Vec<Decision>,
    /// The stream was cut by a block: nothing more is sent.
    blocked: bool,
    /// Identity of the stream's chunks, for chunks the guard adds.
    id: String,
    model: String,
    created: u64,
    /// Output moderation, while it runs (none after a block, or after a
    /// failed call of a policy that fails open).
    moderation: Option<StreamModeration>,
}

struct StreamModeration {
    runtime: Arc<crate::runtime::Runtime>,
    config: Arc<tollgate_config::guard::Moderation>,
    window: usize,
    /// Chunks waiting for their text to pass moderation, in stream order.
    held: VecDeque<Held>,
    /// The call in flight: its choice, and where its text ends.
    asking: Option<(u32, usize)>,
}

struct Held {
    chunk: ChatChunk,
    /// Per choice in the chunk: the offset its text ends at.
    ends: Vec<(u32, usize)>,
    /// The stream's end: the choices' unmaskers are emptied.
    closing: bool,
}

struct ChoiceFilter {
    index: u32,
    scanner: StreamScanner,
    unmasker: StreamUnmasker,
    /// Per tool call (by index): its arguments' scanner (output rules).
    tool_scanners: Vec<(u32, StreamScanner)>,
    /// Per tool call (by index): its arguments' unmasker.
    tools: Vec<(u32, StreamUnmasker)>,
    /// Its finish reason (or the stream's end) was seen.
    ended: bool,
    /// Its finish reason went out to the client.
    closed: bool,
    /// Moderation: bytes of its (filtered) text so far, up to where a call
    /// may moderate, and up to where calls passed it.
    seen: usize,
    sealed: usize,
    passed: usize,
    /// Its text from `passed` to `seen`.
    unmoderated: String,
    /// The end of what passed, sent before the next window.
    context: String,
}

impl ChoiceFilter {
    fn new(index: u32, hold_back: usize) -> Self {
        Self {
            index,
            scanner: StreamScanner::new(hold_back),
            unmasker: StreamUnmasker::default(),
            tool_scanners: Vec::new(),
            tools: Vec::new(),
            ended: false,
            closed: false,
            seen: 0,
            sealed: 0,
            passed: 0,
            unmoderated: String::new(),
            context: String::new(),
        }
    }

    /// Text filtered by the output rules joins what awaits moderation.
    fn hold(&mut self, text: &str, window: usize) {
        self.unmoderated.push_str(text);
        self.seen += text.len();
        if self.ended || self.seen - self.sealed >= window {
            self.sealed = self.seen;
        }
    }

    /// A call passed the text up to `upto`: it becomes context.
    fn pass(&mut self, upto: usize) {
        let upto = upto.clamp(self.passed, self.seen);
        self.context
            .extend(self.unmoderated.drain(..upto - self.passed));
        self.passed = upto;
        if self.context.len() > MODERATION_CONTEXT {
            let cut = self
                .context
                .ceil_char_boundary(self.context.len() - MODERATION_CONTEXT);
            self.context.drain(..cut);
        }
    }

    /// Restores placeholders in one delta of this choice; `closing` empties
    /// the unmaskers (the choice ends).
    fn unmask(
        &mut self,
        masks: &MaskTable,
        delta: &mut tollgate_llm::canonical::Delta,
        closing: bool,
    ) {
        if let Some(text) = delta.content.take() {
            let mut out = self.unmasker.push(masks, &text);
            if closing {
                out += &self.unmasker.finish(masks);
            }
            delta.content = (!out.is_empty()).then_some(out);
        } else if closing {
            let out = self.unmasker.finish(masks);
            delta.content = (!out.is_empty()).then_some(out);
        }
        let mut calls = Vec::new();
        for mut call in delta.tool_calls.take().into_iter().flatten() {
            if !self.tools.iter().any(|(index, _)| *index == call.index) {
                // A new call: what earlier ones hold goes first (an
                // Anthropic client's block for them closes here).
                Self::tails(masks, &mut self.tools, &mut calls);
                self.tools.push((call.index, StreamUnmasker::json()));
            }
            if let Some(arguments) = call.function.as_mut().and_then(|f| f.arguments.as_mut())
                && let Some((_, unmasker)) = self.tools.iter_mut().find(|(i, _)| *i == call.index)
            {
                *arguments = unmasker.push(masks, arguments);
            }
            calls.push(call);
        }
        if closing {
            Self::tails(masks, &mut self.tools, &mut calls);
        }
        delta.tool_calls = (!calls.is_empty()).then_some(calls);
    }

    /// What the tool calls' unmaskers still hold, as argument deltas.
    fn tails(
        masks: &MaskTable,
        tools: &mut [(u32, StreamUnmasker)],
        calls: &mut Vec<ToolCallDelta>,
    ) {
        for (index, unmasker) in tools {
            let tail = unmasker.finish(masks);
            if !tail.is_empty() {
                calls.push(argument_delta(*index, tail));
            }
        }
    }
}

impl StreamGuard {
    /// `None` when there is nothing to do on output (no output rules, no
    /// output moderation and nothing masked).
    pub fn new(state: &GuardState, runtime: &Arc<crate::runtime::Runtime>) -> Option<Box<Self>> {
        let policy = &state.policy;
        if policy.output.is_none() && policy.output_moderation.is_none() && state.masks.is_empty() {
            return None;
        }
        let moderation = policy
            .output_moderation
            .as_ref()
            .map(|config| StreamModeration {
                runtime: runtime.clone(),
                config: Arc::new(config.clone()),
                window: policy.stream_moderation_window,
                held: VecDeque::new(),
                asking: None,
            });
        Some(Box::new(Self {
            policy: policy.clone(),
            masks: state.masks.clone(),
            choices: Vec::new(),
            hits: Vec::new(),
            decisions: Vec::new(),
            blocked: false,
            id: String::new(),
            model: String::new(),
            created: 0,
            moderation,
        }))
    }

    /// Filters one chunk; what may go to the client now is added to `out`.
    pub fn push(&mut self, mut chunk: ChatChunk, out: &mut Vec<ChatChunk>) {
        if self.blocked {
            // After a block no more of the answer goes out, but its usage
            // still does (it is what the client pays and budgets count).
            return usage_only(chunk, out);
        }
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
            self.created = chunk.created;
        }
        for choice in &mut chunk.choices {
            let ends = choice.finish_reason.is_some();
            let text = choice.delta.content.take().unwrap_or_default();
            let calls = choice.delta.tool_calls.take();
            // Text before a tool call is whole: what the scanner holds of
            // it goes out before the call opens (an Anthropic client's text
            // block closes there). Some servers send an empty `tool_calls`
            // in every delta: that opens nothing.
            let flush = ends || calls.as_ref().is_some_and(|calls| !calls.is_empty());
            let filtered = self
                .filter(choice.index, &text, flush, ends)
                .and_then(|text| {
                    let calls = match calls {
                        Some(calls) => self.filter_calls(choice.index, calls, ends)?,
                        None if ends => self.filter_calls(choice.index, Vec::new(), true)?,
                        None => Vec::new(),
                    };
                    Ok((text, calls))
                });
            match filtered {
                Ok((text, calls)) => {
                    choice.delta.content = (!text.is_empty()).then_some(text);
                    choice.delta.tool_calls = (!calls.is_empty()).then_some(calls);
                }
                Err(Blocked { .. }) => {
                    self.block(out);
                    return usage_only(chunk, out);
                }
            }
        }
        self.pass_on(chunk, false, out);
    }

    /// After the output rules: held for moderation, or unmasked and out.
    fn pass_on(&mut self, chunk: ChatChunk, closing: bool, out: &mut Vec<ChatChunk>) {
        match &mut self.moderation {
            Some(moderation) => {
                let mut ends = Vec::with_capacity(chunk.choices.len());
                for choice in &chunk.choices {
                    let at = choice_at(&mut self.choices, &self.policy, choice.index);
                    let filter = &mut self.choices[at];
                    filter.ended |= closing;
                    filter.hold(
                        choice.delta.content.as_deref().unwrap_or_default(),
                        moderation.window,
                    );
                    ends.push((choice.index, filter.seen));
                }
                moderation.held.push_back(Held {
                    chunk,
                    ends,
                    closing,
                });
                self.release(out);
            }
            None => self.unmask_out(chunk, closing, out),
        }
    }

    /// The held chunks whose text passed, in order.
    fn release(&mut self, out: &mut Vec<ChatChunk>) {
        loop {
            let Some(moderation) = &mut self.moderation else {
                return;
            };
            let ready = moderation.held.front().is_some_and(|held| {
                held.ends.iter().all(|(index, end)| {
                    self.choices
                        .iter()
                        .any(|c| c.index == *index && c.passed >= *end)
                })
            });
            if !ready {
                return;
            }
            let Some(held) = moderation.held.pop_front() else {
                return;
            };
            self.unmask_out(held.chunk, held.closing, out);
        }
    }

    fn unmask_out(&mut self, mut chunk: ChatChunk, closing: bool, out: &mut Vec<ChatChunk>) {
        for choice in &mut chunk.choices {
            let at = choice_at(&mut self.choices, &self.policy, choice.index);
            let filter = &mut self.choices[at];
            let ends = closing || choice.finish_reason.is_some();
            if !self.masks.is_empty() {
                filter.unmask(&self.masks, &mut choice.delta, ends);
            }
            filter.closed |= choice.finish_reason.is_some();
        }
        if worth_sending(&chunk) {
            out.push(chunk);
        }
    }

    /// Text of choice `index` that the output rules let out after `text`;
    /// with `flush`, all that is held (the choice `ends`, or a tool call
    /// follows).
    fn filter(
        &mut self,
        index: u32,
        text: &str,
        flush: bool,
        ends: bool,
    ) -> Result<String, Blocked> {
        let at = choice_at(&mut self.choices, &self.policy, index);
        let choice = &mut self.choices[at];
        if ends {
            choice.ended = true;
        }
        let Some(rules) = &self.policy.output else {
            return Ok(text.to_string());
        };
        // Output rules never mask: a scratch table keeps the request's
        // placeholders apart.
        let mut scratch = MaskTable::default();
        let mut out = choice
            .scanner
            .push(rules, &mut scratch, &mut self.hits, text)?;
        if flush {
            out += &choice.scanner.finish(rules, &mut scratch, &mut self.hits)?;
        }
        Ok(out)
    }

    /// Tool-call deltas of choice `index` after the output rules: each
    /// call's arguments are scanned like text, with a hold-back window of
    /// their own; what a call holds goes out before the next call opens,
    /// and at the choice's end (`ends`). A delta left with nothing to say
    /// is dropped.
    fn filter_calls(
        &mut self,
        index: u32,
        calls: Vec<ToolCallDelta>,
        ends: bool,
    ) -> Result<Vec<ToolCallDelta>, Blocked> {
        let Some(rules) = &self.policy.output else {
            return Ok(calls);
        };
        let at = choice_at(&mut self.choices, &self.policy, index);
        let scanners = &mut self.choices[at].tool_scanners;
        let mut scratch = MaskTable::default();
        let mut out = Vec::with_capacity(calls.len() + 1);
        for mut call in calls {
            if !scanners.iter().any(|(i, _)| *i == call.index) {
                argument_tails(rules, scanners, &mut scratch, &mut self.hits, &mut out)?;
                scanners.push((call.index, StreamScanner::new(self.policy.stream_hold_back)));
            }
            if let Some(arguments) = call.function.as_mut().and_then(|f| f.arguments.as_mut())
                && let Some((_, scanner)) = scanners.iter_mut().find(|(i, _)| *i == call.index)
            {
                *arguments = scanner.push(rules, &mut scratch, &mut self.hits, arguments)?;
            }
            if says_something(&call) {
                out.push(call);
            }
        }
        if ends {
            argument_tails(rules, scanners, &mut scratch, &mut self.hits, &mut out)?;
        }
        Ok(out)
    }

    /// The provider's stream ended: what the choices that saw no finish
    /// reason still hold goes on (to the client, or to moderation).
    pub fn end(&mut self, out: &mut Vec<ChatChunk>) {
        if self.blocked {
            return;
        }
        for index in self.indices(|c| !c.ended) {
            let mut chunk = self.chunk_for(index);
            let held = self
                .filter(index, "", true, true)
                .and_then(|text| Ok((text, self.filter_calls(index, Vec::new(), true)?)));
            match held {
                Ok((text, calls)) => {
                    let delta = &mut chunk.choices[0].delta;
                    delta.content = (!text.is_empty()).then_some(text);
                    delta.tool_calls = (!calls.is_empty()).then_some(calls);
                }
                Err(Blocked { .. }) => return self.block(out),
            }
            self.pass_on(chunk, true, out);
        }
    }

    /// Something is held for moderation: the stream's end waits for it.
    pub fn holding(&self) -> bool {
        self.moderation
            .as_ref()
            .is_some_and(|m| !m.held.is_empty() || m.asking.is_some())
    }

    /// The next moderation call, when one is due and none is in flight.
    pub fn next_call(&mut self) -> Option<ModerationCall> {
        let moderation = self.moderation.as_mut()?;
        if moderation.asking.is_some() {
            return None;
        }
        let choice = self.choices.iter().find(|c| c.sealed > c.passed)?;
        // The window, cut so that context and window fit one call.
        let room = super::moderation::MAX_MODERATED - MODERATION_CONTEXT;
        let window = &choice.unmoderated[..choice
            .unmoderated
            .floor_char_boundary((choice.sealed - choice.passed).min(room))];
        let upto = choice.passed + window.len();
        let text = format!("{}{window}", choice.context);
        moderation.asking = Some((choice.index, upto));
        let runtime = moderation.runtime.clone();
        let config = moderation.config.clone();
        Some(Box::pin(async move {
            super::moderation::ask(&runtime, &config, &text).await
        }))
    }

    /// A moderation call answered: its text is released, or the stream is
    /// ended (flagged, or failing closed without an answer).
    pub fn answered(&mut self, verdict: Result<Vec<String>, String>, out: &mut Vec<ChatChunk>) {
        let Some(moderation) = &mut self.moderation else {
            return;
        };
        let Some((index, upto)) = moderation.asking.take() else {
            return;
        };
        let config = moderation.config.clone();
        match verdict {
            Ok(categories) if categories.is_empty() => {
                if let Some(choice) = self.choices.iter_mut().find(|c| c.index == index) {
                    choice.pass(upto);
                }
                self.release(out);
            }
            Ok(categories) => {
                for category in &categories {
                    add(
                        &mut self.decisions,
                        "output",
                        &format!("moderation:{category}"),
                        "block",
                        1,
                    );
                }
                self.block(out);
            }
            Err(why) => {
                if moderation_failed(
                    &mut self.decisions,
                    &self.policy.name,
                    &config,
                    "output",
                    &why,
                )
                .is_err()
                {
                    return self.block(out);
                }
                // Failing open: the rest of the stream goes unmoderated
                // rather than waiting for a provider that just failed at
                // every window.
                for choice in &mut self.choices {
                    choice.pass(choice.seen);
                }
                self.release(out);
                self.moderation = None;
            }
        }
    }

    /// Ends the answer: every choice not yet closed gets `content_filter`;
    /// held text is dropped, held usage still goes out.
    fn block(&mut self, out: &mut Vec<ChatChunk>) {
        self.blocked = true;
        for index in self.indices(|c| !c.closed) {
            let mut chunk = self.chunk_for(index);
            chunk.choices[0].finish_reason = Some(finish::CONTENT_FILTER.into());
            out.push(chunk);
        }
        for choice in &mut self.choices {
            choice.closed = true;
        }
        if let Some(moderation) = self.moderation.take() {
            for held in moderation.held {
                usage_only(held.chunk, out);
            }
        }
    }

    /// The indices of the choices `pick` picks.
    fn indices(&self, pick: impl Fn(&ChoiceFilter) -> bool) -> Vec<u32> {
        self.choices
            .iter()
            .filter(|c| pick(c))
            .map(|c| c.index)
            .collect()
    }

    /// An empty chunk of this stream for choice `index`.
    fn chunk_for(&self, index: u32) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// What the output rules and moderation decided, for the request's
    /// decisions.
    pub fn settle_into(&self, state: &mut GuardState) {
        if let Some(rules) = &self.policy.output {
            state.record("output", rules, &self.hits);
        }
        for decision in &self.decisions {
            add(
                &mut state.decisions,
                decision.stage,
                &decision.rule,
                decision.action,
                decision.count,
            );
        }
    }
}

/// The position of choice `index`'s filter, added on first sight.
fn choice_at(choices: &mut Vec<ChoiceFilter>, policy: &GuardPolicy, index: u32) -> usize {
    match choices.iter().position(|c| c.index == index) {
        Some(at) => at,
        None => {
            choices.push(ChoiceFilter::new(index, policy.stream_hold_back));
            choices.len() - 1
        }
    }
}

/// What the tool calls' argument scanners still hold, as argument deltas.
fn argument_tails(
    rules: &Rules,
    scanners: &mut [(u32, StreamScanner)],
    scratch: &mut MaskTable,
    hits: &mut Vec<Kind>,
    out: &mut Vec<ToolCallDelta>,
) -> Result<(), Blocked> {
    for (index, scanner) in scanners {
        let tail = scanner.finish(rules, scratch, hits)?;
        if !tail.is_empty() {
            out.push(argument_delta(*index, tail));
        }
    }
    Ok(())
}

/// A delta adding `arguments` to tool call `index`.
fn argument_delta(index: u32, arguments: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        function: Some(FunctionCallDelta {
            arguments: Some(arguments),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a tool-call delta carries anything once its arguments were
/// scanned (an id, a type, a name, or argument text).
fn says_something(call: &ToolCallDelta) -> bool {
    call.id.is_some()
        || call.kind.is_some()
        || call.function.as_ref().is_some_and(|f| {
            f.name.is_some() || f.arguments.as_ref().is_some_and(|a| !a.is_empty())
        })
}

/// `chunk` without its choices, if it carries usage.
fn usage_only(mut chunk: ChatChunk, out: &mut Vec<ChatChunk>) {
    chunk.choices.clear();
    chunk.native_stop = None;
    if chunk.usage.is_some() {
        out.push(chunk);
    }
}

/// Whether anything is left of `chunk` to send.
fn worth_sending(chunk: &ChatChunk) -> bool {
    chunk.usage.is_some()
        || chunk.choices.iter().any(|c| {
            c.finish_reason.is_some()
                || c.delta.role.is_some()
                || c.delta.content.is_some()
                || c.delta.tool_calls.is_some()
                || c.delta.reasoning_content.is_some()
                || c.delta.refusal.is_some()
                || c.delta.thinking_signature.is_some()
                || !c.delta.extra.is_empty()
        })
}
