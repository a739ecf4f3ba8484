//! Stage `guard`: the route's guard policy on the request (guard in) and on
//! the answer (guard out, in [`relay`](super::relay) and `forward`).
//!
//! A guarded request is read in its canonical form, whatever the client's
//! API: every text of every message (tool results and tool-call arguments
//! included) is scanned, acted on (redact, mask, block), and checked for
//! prompt injection; the request then goes out translated from that form.
//! The answer is filtered in the same form: a full answer at once, a stream
//! chunk by chunk with a bounded hold-back window ([`StreamGuard`]), and
//! masked values are restored for the client. A route without a policy never
//! reaches this module and keeps the byte passthrough.

use std::sync::{Arc, LazyLock};

use tollgate_config::guard::GuardPolicy;
use tollgate_guard::injection::InjectionDetector;
use tollgate_guard::{
    Action, Blocked, Kind, MaskTable, Recognizers, Rules, StreamScanner, StreamUnmasker,
};
use tollgate_llm::canonical::{
    ChatChunk, ChatResponse, Content, ContentPart, Message, Role, finish,
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
        record(&mut self.decisions, stage, rules, hits);
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

fn record(decisions: &mut Vec<Decision>, stage: &'static str, rules: &Rules, hits: &[Kind]) {
    for kind in hits {
        let action = match rules.action(*kind) {
            Some(Action::Block) => "block",
            Some(Action::Mask) => "mask",
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
    let mut outcome = inspect(&mut state, inbound);
    // The judge and the moderation provider see what the provider would:
    // the rewritten messages.
    if outcome.is_ok() {
        outcome = ask_judge(&mut state, runtime, inbound).await;
    }
    if outcome.is_ok() {
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
        Err(why) => moderation_failed(state, moderation, "input", &why).map_err(|()| {
            ApiError::unavailable(format!(
                "Guard policy {:?} could not get an answer from its moderation provider, and refuses requests without one.",
                policy.name
            ))
        }),
    }
}

/// A moderation call failed: counted; `Err` when the policy fails closed.
fn moderation_failed(
    state: &mut GuardState,
    moderation: &tollgate_config::guard::Moderation,
    stage: &'static str,
    why: &str,
) -> Result<(), ()> {
    let action = if moderation.fail_closed {
        "block"
    } else {
        "allow"
    };
    state.record_one(stage, "moderation_unavailable", action);
    tracing::warn!(policy = %state.policy.name, stage, %why, action, "guard moderation failed");
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
        Err(why) => moderation_failed(state, moderation, "output", &why).is_err(),
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

fn inspect(state: &mut GuardState, inbound: &mut Inbound<'_>) -> Result<(), ApiError> {
    let policy = state.policy.clone();
    let canonical = inbound.canonical_mut().map_err(unreadable)?;
    let messages = &mut canonical.request.messages;
    if let Some(injection) = &policy.injection {
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
        outcome = each_text(message, |text| {
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
    outcome.map_err(|Blocked { kind }| {
        ApiError::invalid_request(
            "content_policy_violation",
            format!(
                "The request was blocked by guard policy {:?}: it contains {}.",
                policy.name,
                rules.label(kind)
            ),
        )
    })
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
/// the arguments of its tool calls.
fn each_text(
    message: &mut Message,
    mut f: impl FnMut(&mut String) -> Result<(), Blocked>,
) -> Result<(), Blocked> {
    match &mut message.content {
        Some(Content::Text(text)) => f(text)?,
        Some(Content::Parts(parts)) => {
            for part in parts {
                if let ContentPart::Text { text, .. } = part {
                    f(text)?;
                }
            }
        }
        None => {}
    }
    for call in message.tool_calls.iter_mut().flatten() {
        f(&mut call.function.arguments)?;
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
            let outcome = each_text(&mut choice.message, |text| {
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
            let _ = each_text(&mut choice.message, |text| {
                *text = masks.unmask(text);
                Ok(())
            });
        }
    }
    if let Some(rules) = &policy.output {
        state.record("output", rules, &hits);
    }
}

/// Guard out on a stream: each choice's text goes through the output rules
/// with a hold-back window (a value split across chunks is still found),
/// then through an unmasker; what is still held is released at the choice's
/// end. A blocked choice ends with `content_filter` and the stream with it.
pub struct StreamGuard {
    policy: Arc<GuardPolicy>,
    masks: MaskTable,
    choices: Vec<ChoiceFilter>,
    hits: Vec<Kind>,
    /// The stream was cut by a block: nothing more is sent.
    pub blocked: bool,
    /// Identity of the stream's chunks, for chunks the guard adds.
    id: String,
    model: String,
    created: u64,
}

struct ChoiceFilter {
    index: u32,
    scanner: StreamScanner,
    unmasker: StreamUnmasker,
    ended: bool,
}

impl StreamGuard {
    /// `None` when there is nothing to do on output (no output rules and
    /// nothing masked).
    pub fn new(state: &GuardState) -> Option<Box<Self>> {
        if state.policy.output.is_none() && state.masks.is_empty() {
            return None;
        }
        Some(Box::new(Self {
            policy: state.policy.clone(),
            masks: state.masks.clone(),
            choices: Vec::new(),
            hits: Vec::new(),
            blocked: false,
            id: String::new(),
            model: String::new(),
            created: 0,
        }))
    }

    /// Filters one chunk in place. `false`: nothing is left of it to send.
    pub fn chunk(&mut self, chunk: &mut ChatChunk) -> bool {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
            self.created = chunk.created;
        }
        let policy = self.policy.clone();
        for choice in &mut chunk.choices {
            let ends = choice.finish_reason.is_some();
            let text = choice.delta.content.take().unwrap_or_default();
            match self.release(&policy, choice.index, &text, ends) {
                Ok(out) => choice.delta.content = (!out.is_empty()).then_some(out),
                Err(Blocked { .. }) => {
                    choice.delta.content = None;
                    choice.delta.tool_calls = None;
                    choice.finish_reason = Some(finish::CONTENT_FILTER.into());
                    self.blocked = true;
                }
            }
        }
        if self.blocked {
            chunk.native_stop = None;
        }
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

    /// Text of choice `index` that may go out after `text`; all that is
    /// held when the choice `ends`.
    fn release(
        &mut self,
        policy: &GuardPolicy,
        index: u32,
        text: &str,
        ends: bool,
    ) -> Result<String, Blocked> {
        let at = match self.choices.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.choices.push(ChoiceFilter {
                    index,
                    scanner: StreamScanner::new(policy.stream_hold_back),
                    unmasker: StreamUnmasker::default(),
                    ended: false,
                });
                self.choices.len() - 1
            }
        };
        let choice = &mut self.choices[at];
        if ends {
            choice.ended = true;
        }
        let mut out = match &policy.output {
            Some(rules) => {
                // Output rules never mask: a scratch table keeps the
                // request's placeholders apart.
                let mut scratch = MaskTable::default();
                let mut out = choice
                    .scanner
                    .push(rules, &mut scratch, &mut self.hits, text)?;
                if ends {
                    out += &choice.scanner.finish(rules, &mut scratch, &mut self.hits)?;
                }
                out
            }
            None => text.to_string(),
        };
        if !self.masks.is_empty() {
            let mut restored = choice.unmasker.push(&self.masks, &out);
            if ends {
                restored += &choice.unmasker.finish(&self.masks);
            }
            out = restored;
        }
        Ok(out)
    }

    /// The stream ended: chunks with what is still held, per choice.
    pub fn flush(&mut self) -> Vec<ChatChunk> {
        // After a block what is held stays held.
        if self.blocked {
            return Vec::new();
        }
        let policy = self.policy.clone();
        let open: Vec<u32> = self
            .choices
            .iter()
            .filter(|c| !c.ended)
            .map(|c| c.index)
            .collect();
        let mut chunks = Vec::new();
        for index in open {
            let mut chunk = ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                ..Default::default()
            };
            let mut choice = tollgate_llm::canonical::ChunkChoice {
                index,
                ..Default::default()
            };
            match self.release(&policy, index, "", true) {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => choice.delta.content = Some(out),
                Err(Blocked { .. }) => {
                    choice.finish_reason = Some(finish::CONTENT_FILTER.into());
                    self.blocked = true;
                }
            }
            chunk.choices.push(choice);
            chunks.push(chunk);
        }
        chunks
    }

    /// What the output rules found, for the request's decisions.
    pub fn settle_into(&self, state: &mut GuardState) {
        if let Some(rules) = &self.policy.output {
            state.record("output", rules, &self.hits);
        }
    }
}
