//! Guard policies: what a gateway looks for in prompts and answers (personal
//! data, secrets, its own words and patterns, prompt injection) and what it
//! does about it. Policies are defined once on the AIGateway and chosen by
//! name on each AIRoute (`guardPolicy`), or applied to every route
//! (`defaultGuardPolicy`): route owners pick among the policies the
//! gateway's owner approved and cannot write a weaker one for themselves.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// One named policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardPolicySpec {
    /// How routes refer to this policy (`guardPolicy: strict`).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a guard policy name is a DNS label: lowercase letters, digits and '-'"))]
    pub name: String,
    /// Checks on what the client sends, before it leaves for a provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputGuard>,
    /// Checks on the provider's answer, streams included, before the client
    /// reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ContentRules>,
}

/// Checks on a request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputGuard {
    /// Personal data and secrets in every message (system, user,
    /// assistant, tool results and tool-call arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<PiiRules>,
    /// The policy's own rules: regular expressions or word lists, each with
    /// a name and an action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub custom: Vec<CustomRuleSpec>,
    /// A moderation provider asked about every request (all its texts):
    /// a flagged category refuses it with 400 `content_policy_violation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationSpec>,
    /// Prompt-injection detection on user messages and tool results
    /// (indirect injection arrives through documents and tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<InjectionGuard>,
}

/// Recognizers and rules for one direction.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.streamModerationWindow) || has(self.moderation)").message("streamModerationWindow sets the window of output moderation: it needs moderation"))]
pub struct ContentRules {
    /// The built-in recognizers (with validators: Luhn, IBAN checksum, SSN
    /// rules, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<PiiRules>,
    /// The policy's own rules: regular expressions or word lists (deny
    /// lists), each with a name and an action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub custom: Vec<CustomRuleSpec>,
    /// Streams only: bytes of an answer held back before they are released
    /// (default 128), so a value split across chunks is seen whole. The
    /// first visible text waits for this much output (at 50 tokens a second,
    /// 128 bytes are about half a second); values longer than it (a PEM
    /// key) are only found when they arrive within one chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 4096").message("streamHoldBack is between 0 and 4096 bytes"))]
    pub stream_hold_back: Option<u32>,
    /// Output only: a moderation provider asked about every answer; a
    /// flagged category ends it with `finish_reason: content_filter`
    /// (Anthropic `stop_reason: refusal`). A streamed answer's text is held
    /// until a call passed it, window by window (`streamModerationWindow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationSpec>,
    /// Output with `moderation`, streams only: bytes of an answer's text
    /// per moderation call (default 256), each sent with the 1 KiB before
    /// it as context. No text reaches the client before a call passed it,
    /// so the first visible text waits for `streamHoldBack` plus this much
    /// output plus one call, and text then arrives in windows; a smaller
    /// window shows text sooner and makes more calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 16 && self <= 16384").message("streamModerationWindow is between 16 and 16384 bytes"))]
    pub stream_moderation_window: Option<u32>,
}

/// A moderation provider: a ModelProvider of this namespace speaking the
/// OpenAI moderation API (`POST /moderations`: types OpenAI,
/// OpenAICompatible, Mock), within the gateway's `allowedRegions`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModerationSpec {
    pub provider_ref: crate::common::LocalObjectReference,
    /// Default `omni-moderation-latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub model: Option<String>,
    /// The categories that count (`violence`, `hate`, `self-harm`, ...);
    /// default: whatever the provider flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 64)))]
    pub categories: Vec<String>,
    /// Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub timeout: Option<String>,
    /// A call that fails: `Open` lets the request or answer through
    /// (counted), `Closed` refuses it (503, or `content_filter` for an
    /// answer). Default `Open`.
    #[serde(default)]
    pub on_failure: crate::budget::FailureMode,
}

/// Which built-in kinds to look for, and the action for each.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PiiRules {
    /// Kinds looked for (default: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub entities: Vec<PiiEntity>,
    /// What a finding leads to (default `Redact`). `Mask` replaces values
    /// with placeholders such as `<EMAIL_1>` that are restored in the answer,
    /// streams included, so the provider never sees them and the client
    /// still reads them; on output `Mask` is the same as `Redact`.
    #[serde(default)]
    pub action: GuardAction,
    /// Actions for single kinds, overriding `action` (for example `SECRET:
    /// Block` with `action: Mask`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<PiiEntity, GuardAction>,
}

/// The built-in recognizers.
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiEntity {
    Email,
    /// International (E.164) and national formats.
    Phone,
    /// Luhn and network prefix checked.
    CreditCard,
    UsSsn,
    /// Country length and mod-97 checked.
    Iban,
    /// IPv4 and IPv6.
    IpAddress,
    /// Provider API keys (OpenAI, Anthropic, AWS, GitHub, Slack, Stripe,
    /// Google, GitLab), JWTs, private key blocks, high-entropy values
    /// assigned to key-like names.
    Secret,
}

impl PiiEntity {
    pub const ALL: [PiiEntity; 7] = [
        PiiEntity::Email,
        PiiEntity::Phone,
        PiiEntity::CreditCard,
        PiiEntity::UsSsn,
        PiiEntity::Iban,
        PiiEntity::IpAddress,
        PiiEntity::Secret,
    ];
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum GuardAction {
    /// The value is replaced by its kind: `[EMAIL]`.
    #[default]
    Redact,
    /// The value is replaced by a placeholder restored in the answer.
    Mask,
    /// The request is refused (400 in the client's error shape), or the
    /// answer is ended with `finish_reason: content_filter`.
    Block,
}

/// A policy's own rule: exactly one of `pattern` and `words`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.pattern) != has(self.words)").message("a custom rule has exactly one of pattern and words"))]
pub struct CustomRuleSpec {
    /// Labels findings (`[PROJECT_NAME]`, `<EMPLOYEE_ID_1>`) and metrics.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Z][A-Z0-9_]*$')").message("a custom rule name is upper case: A-Z, 0-9 and '_', starting with a letter"))]
    pub name: String,
    /// A regular expression (RE2-like syntax, matched in linear time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub pattern: Option<String>,
    /// Words or phrases matched whole and case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10000), inner(length(max = 256)))]
    pub words: Option<Vec<String>>,
    /// Default `Redact`.
    #[serde(default)]
    pub action: GuardAction,
}

/// Prompt-injection detection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionGuard {
    /// `Block` refuses the request (400 `prompt_injection_detected`);
    /// `Flag` lets it through, counted, logged and marked with the response
    /// header `x-tollgate-guard-flags: prompt_injection`.
    #[serde(default)]
    pub action: InjectionAction,
    /// Score (0 to 1) at or above which a message is flagged; default 0.5.
    /// Lower catches more and refuses more benign text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("threshold is a score above 0 and at most 1"))]
    pub threshold: Option<f64>,
    /// An LLM judge asked about the messages the heuristics let through
    /// (user messages and tool results), catching what phrasing rules miss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSpec>,
}

/// An LLM classifier behind a ModelProvider of this namespace. The provider
/// must satisfy the gateway's `allowedRegions`: what it is sent is the
/// prompt itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JudgeSpec {
    pub provider_ref: crate::common::LocalObjectReference,
    /// The model asked (any chat model; answers with a JSON verdict).
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// How long the gateway waits for a verdict (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub timeout: Option<String>,
    /// A judge that fails, times out or answers nonsense: `Open` lets the
    /// request through (counted), `Closed` refuses it with 503 (default
    /// `Open`).
    #[serde(default)]
    pub on_failure: crate::budget::FailureMode,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum InjectionAction {
    #[default]
    Block,
    Flag,
}
