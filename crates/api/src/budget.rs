//! `TokenBudget`: how many tokens, dollars and requests a principal (or a
//! group of them) may use per window on one gateway, and what happens beyond.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, ResourceStatus};

/// Limits per window on the requests of matching principals. Every budget
/// that matches a request must admit it; the request's estimated cost is
/// reserved against each before it goes upstream and settled with the
/// provider's actual usage when the answer ends.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "TokenBudget",
    plural = "tokenbudgets",
    shortname = "tb",
    category = "tollgate",
    namespaced,
    status = "TokenBudgetStatus",
    doc = "A TokenBudget limits the tokens, cost in USD and requests that matching principals (a user, team, app, key, label selector, or each member of a group) may use per window (minute, hour, day, calendar month; fixed or rolling) on one AIGateway. The estimated cost of a request is reserved before it goes upstream, so concurrent requests and streams cannot run past the limit; beyond it a request is rejected (429 with Retry-After), downgraded to a cheaper model, or only logged.",
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gatewayRef.name"}"#,
    printcolumn = r#"{"name":"Used","type":"string","jsonPath":".status.used"}"#,
    printcolumn = r#"{"name":"Limit","type":"string","jsonPath":".status.limit"}"#,
    printcolumn = r#"{"name":"Remaining","type":"string","jsonPath":".status.remaining"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.onExceed.action"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.onExceed.action != 'Downgrade' || has(self.onExceed.model)").message(DOWNGRADE_MODEL_MESSAGE))]
#[x_kube(validation = Rule::new("(has(self.limits) && self.limits.size() > 0) || has(self.rateLimit)").message(NOTHING_LIMITED_MESSAGE))]
pub struct TokenBudgetSpec {
    /// The AIGateway (same namespace) whose requests this budget counts.
    pub gateway_ref: LocalObjectReference,
    /// Whose requests count. Every field given must match; an empty subject
    /// matches every request on the gateway (an organisation-wide budget).
    #[serde(default)]
    pub subject: BudgetSubject,
    /// Limits, each on one window. A request is admitted only if it fits
    /// every limit of every budget that applies to it. Optional with a
    /// `rateLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.window == l.window && m.rolling == l.rolling))").message(LIMITS_UNIQUE_MESSAGE))]
    pub limits: Vec<BudgetLimit>,
    /// What happens to a request that does not fit (default `Reject`).
    #[serde(default)]
    pub on_exceed: ExceedPolicy,
    /// Output tokens reserved for a request that sets no `max_tokens`
    /// (`max_completion_tokens`, `max_output_tokens`), default 4096. A
    /// streamed answer that outgrows its reservation and the budget is ended
    /// (see `streams`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000000").message("defaultMaxOutputTokens must be between 1 and 10000000"))]
    pub default_max_output_tokens: Option<u64>,
    /// A stream that runs past the budget: `Cut` ends it at an event boundary
    /// with an error event in the client's format (default); `Finish` lets
    /// it complete and charges what it used.
    #[serde(default)]
    pub streams: StreamOverrun,
    /// Percentages of a limit (for example 80) whose crossing is reported
    /// like an alert (see `alerts`): once per window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = Rule::new("self.all(p, p >= 1 && p <= 100)").message("soft thresholds are percentages between 1 and 100"))]
    pub soft_thresholds: Vec<u32>,
    /// When the shared state (Redis) cannot be reached: `Open` admits
    /// requests uncounted, `Closed` refuses them with 503 (default `Open`).
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Usage-anomaly alerts: a spike in the token rate of a member (or the
    /// whole group) against its own learned baseline, and soft-threshold
    /// crossings. Each raises a metric, a log line, a Warning Event on this
    /// budget and, if set, a webhook: once per incident, then quiet for
    /// `cooldown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<BudgetAlerts>,
    /// Smooth throttling of each member (or the group): requests per
    /// second and tokens per minute as token buckets, refused with 429 and
    /// the exact `Retry-After`. Counted per gateway process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.requestsPerSecond) || has(self.tokensPerMinute)").message(RATE_LIMIT_EMPTY_MESSAGE))]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("requestsPerSecond must be between 1 and 1000000"))]
    pub requests_per_second: Option<u32>,
    /// Requests that may arrive at once above the steady rate (default:
    /// one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("burst must be between 1 and 1000000"))]
    pub burst: Option<u32>,
    /// Estimated tokens (prompt + output cap) per minute, settled with the
    /// actual count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("tokensPerMinute must be at least 1"))]
    pub tokens_per_minute: Option<u64>,
}

/// What both the CEL rule and compile say of an empty rate limit.
pub const RATE_LIMIT_EMPTY_MESSAGE: &str = "rateLimit needs requestsPerSecond or tokensPerMinute";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetAlerts {
    /// A rate this many times the baseline is a spike (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 2 && self <= 1000").message("spikeFactor must be between 2 and 1000"))]
    pub spike_factor: Option<u32>,
    /// The rate is measured per interval (default 1m); the baseline is an
    /// exponentially weighted average of past intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub interval: Option<String>,
    /// Intervals of history before spikes are judged (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("warmupIntervals must be between 1 and 1000"))]
    pub warmup_intervals: Option<u32>,
    /// Quiet time after an alert for the same member (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::DURATION_RULE).message("cooldown must be a duration such as 15m"))]
    pub cooldown: Option<String>,
    /// Where alerts are POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<AlertWebhook>,
    /// After a spike, hold the offending member (the budget's subject, or
    /// the member with `perMember`) to this rate until an operator clears it
    /// by setting the annotation `tollgate.dev/throttle-cleared-at` on this
    /// TokenBudget to a time after the alert. Unset: alert only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_offender: Option<RateLimit>,
}

/// Annotation on a TokenBudget: offenders throttled (see
/// `alerts.throttleOffender`) at or before this RFC 3339 instant are released.
pub const THROTTLE_CLEARED_AT_ANNOTATION: &str = "tollgate.dev/throttle-cleared-at";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertWebhook {
    /// `http://` or `https://` URL.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^ ]+$')").message("webhook url must be an http:// or https:// URL"))]
    pub url: String,
    /// `Json` (default): the alert as a JSON object. `Slack`: `{"text": ...}`
    /// for a Slack incoming webhook (or anything that takes that shape).
    #[serde(default)]
    pub format: WebhookFormat,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// What both the CEL rule and compile say of a downgrade without a model.
pub const DOWNGRADE_MODEL_MESSAGE: &str = "onExceed.model is required when the action is Downgrade";

/// What both the CEL rule and compile say of a budget that limits nothing.
pub const NOTHING_LIMITED_MESSAGE: &str = "at least one limit or a rateLimit is required";

/// What both the CEL rule and compile say of two limits on one window.
pub const LIMITS_UNIQUE_MESSAGE: &str = "at most one limit per window and rolling setting";

/// Whom a budget counts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetSubject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub app: Option<String>,
    /// One API key, by the name of its Secret (a `tollgate.dev/api-key`
    /// labelled Secret) or `secret/key` for an AIGateway `apiKeys` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 507))]
    pub key: Option<String>,
    /// Principal labels that must all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub match_labels: BTreeMap<String, String>,
    /// Count each member separately instead of the whole group: with
    /// `team: a` and `perMember: User`, every user of team a gets the limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_member: Option<Member>,
}

/// What a per-member budget keeps separate counters by.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    User,
    Team,
    App,
    Key,
}

/// Caps on one window. Give at least one of the caps.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.inputTokens) || has(self.outputTokens) || has(self.totalTokens) || has(self.costUsd) || has(self.requests)").message(LIMIT_EMPTY_MESSAGE))]
pub struct BudgetLimit {
    pub window: BudgetWindow,
    /// `false` (default): the window starts at fixed times (the minute, the
    /// UTC hour, UTC midnight, the 1st of the month). `true`: the window is
    /// the last minute, hour, day or 30 days, counted in twelfths (days:
    /// hours; 30 days: days), so usage leaves it gradually.
    #[serde(default)]
    pub rolling: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// US dollars, as a decimal string with up to 6 decimals (`"25.50"`),
    /// priced from the ModelProvider catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new(USD_RULE).message(USD_MESSAGE))]
    pub cost_usd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
}

/// What both the CEL rule and compile say of a limit without caps.
pub const LIMIT_EMPTY_MESSAGE: &str =
    "a limit needs at least one of inputTokens, outputTokens, totalTokens, costUsd, requests";

/// CEL rule of a dollar amount.
pub const USD_RULE: &str = "self.matches('^[0-9]{1,12}([.][0-9]{1,6})?$')";
/// What both the CEL rule and compile say of a bad dollar amount.
pub const USD_MESSAGE: &str = "costUsd must be a decimal number of dollars with at most 6 decimals, such as \"25\" or \"0.50\"";

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
pub enum BudgetWindow {
    Minute,
    Hour,
    Day,
    /// A calendar month (UTC) when fixed, 30 days when rolling.
    Month,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExceedPolicy {
    #[serde(default)]
    pub action: ExceedAction,
    /// `Downgrade`: the model alias (an AIRoute of the same gateway) that
    /// requests go to once this budget is spent. They still count here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub model: Option<String>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ExceedAction {
    /// 429 in the client's API shape, with `Retry-After`.
    #[default]
    Reject,
    /// Served by `model` instead.
    Downgrade,
    /// Served and counted; a log line and a metric say it ran over.
    Warn,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum StreamOverrun {
    #[default]
    Cut,
    Finish,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum FailureMode {
    #[default]
    Open,
    Closed,
}

/// Observed state: conditions, usage per window, and one summary line per
/// column for `kubectl get`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenBudgetStatus {
    #[serde(flatten)]
    pub base: ResourceStatus,
    /// Usage of the first limit's first cap, e.g. `12.5k tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    /// Usage per limit and cap in the current window (summed over members
    /// for a per-member budget; the busiest member is named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<BudgetUsage>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetUsage {
    pub window: String,
    /// `inputTokens`, `outputTokens`, `totalTokens`, `costUsd` or `requests`.
    pub metric: String,
    /// Used so far, in-flight reservations included (dollars as a decimal string).
    pub used: String,
    pub limit: String,
    /// When the fixed window restarts (RFC 3339); absent for rolling windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}
