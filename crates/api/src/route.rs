//! `AIRoute`: which model aliases a gateway serves, and from which backends.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, ResourceStatus};

/// Maps model aliases (and optional header matches) on one gateway to
/// weighted, prioritized provider backends.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AIRoute",
    plural = "airoutes",
    shortname = "air",
    category = "tollgate",
    namespaced,
    status = "AIRouteStatus",
    doc = "An AIRoute maps the model names clients ask for (exact aliases, globs, optional header matches) on one AIGateway to weighted, prioritized ModelProvider backends, with request and stream timeouts. The oldest route keeps an alias that several routes claim.",
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gatewayRef.name"}"#,
    printcolumn = r#"{"name":"Models","type":"string","jsonPath":".status.models"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"ResolvedRefs","type":"string","jsonPath":".status.conditions[?(@.type==\"ResolvedRefs\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Backends","type":"string","jsonPath":".status.backends","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.status==\"False\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.models.exists(m, m.contains('*')) || self.backends.all(b, has(b.model))").message(PASS_THROUGH_MESSAGE))]
#[x_kube(validation = Rule::new("has(self.tiers) ? self.backends.all(b, has(b.tier) && self.tiers.exists(t, t.name == b.tier)) : self.backends.all(b, !has(b.tier))").message(BACKEND_TIER_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.tiers) || self.tiers.all(t, self.backends.exists(b, has(b.tier) && b.tier == t.name && b.weight != 0))").message(TIER_EMPTY_MESSAGE))]
#[x_kube(validation = Rule::new("has(self.tiers) || !has(self.tierPolicy)").message(TIER_POLICY_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.tierPolicy) || !has(self.tierPolicy.defaultTier) || (has(self.tiers) && self.tiers.exists(t, t.name == self.tierPolicy.defaultTier))").message(DEFAULT_TIER_MESSAGE))]
pub struct AIRouteSpec {
    /// The AIGateway (same namespace) that serves this route.
    pub gateway_ref: LocalObjectReference,
    /// Model names clients ask for. An entry with `*` is a glob (`gpt-4o*`);
    /// exact names win over globs and are listed by `GET /v1/models`. Backends
    /// without `model` (pass-through) need at least one glob here. When two
    /// routes of one gateway claim an alias with the same header (and principal) matches, the
    /// older route keeps it (oldest `creationTimestamp`, then namespace/name)
    /// and the newer one is not accepted (reason `DuplicateAlias`).
    #[schemars(length(max = 64), inner(length(max = 256)))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("at least one model alias is required"))]
    #[x_kube(validation = Rule::new("self.all(m, m.size() > 0 && m.size() <= 256)").message("model aliases must be 1-256 characters"))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n == m))").message(ALIASES_UNIQUE_MESSAGE))]
    pub models: Vec<ModelAlias>,
    /// Request headers that must all match (exact value) for this route to apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(h, self.exists_one(g, g.name.lowerAscii() == h.name.lowerAscii()))").message(HEADERS_UNIQUE_MESSAGE))]
    pub headers: Vec<HeaderMatch>,
    /// Callers this route serves: the request's principal (API key or JWT
    /// identity) must match one entry, and an entry matches when every field
    /// it sets does. Empty: every caller. A route with principals beats one
    /// without for the same model (as header matches do), so a team can get
    /// its own backends under a shared alias; an anonymous request (a
    /// gateway without keys) never matches one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(p, has(p.user) || has(p.team) || has(p.app) || (has(p.matchLabels) && size(p.matchLabels) > 0))").message(PRINCIPAL_MATCH_EMPTY_MESSAGE))]
    pub principals: Vec<crate::common::PrincipalSelector>,
    /// Where requests go. The lowest `priority` tier is tried first, split by
    /// `weight`; the next tier is the fallback when a tier fails. A backend
    /// without `model` sends upstream the model name the client asked for.
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("at least one backend is required"))]
    #[x_kube(validation = Rule::new("self.exists(b, b.weight != 0)").message(BACKENDS_WEIGHT_MESSAGE))]
    pub backends: Vec<RouteBackend>,
    /// The client endpoints this route serves. When omitted, they follow from
    /// the backends' models (the provider catalog's `kind`, else the name):
    /// chat models serve `ChatCompletions`, `Responses` and `Messages`
    /// (with `count_tokens`), embedding models `Embeddings`; a route that
    /// passes the client's model through serves all four. A request for
    /// an endpoint the route does not serve gets 400 `unsupported_endpoint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(f, f == e))").message(ENDPOINTS_UNIQUE_MESSAGE))]
    pub endpoints: Vec<RouteEndpoint>,
    /// Per-route timeouts, overriding the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    /// Data residency: the regions (names or globs such as `eu-*`) whose
    /// providers may serve this route. A backend whose provider's
    /// `dataRegion` is outside them (or unset) is never tried, fallback
    /// included; with none left the client gets 503. Empty: no restriction
    /// beyond the gateway's and the caller's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new(crate::common::REGION_GLOB_RULE).message(crate::common::REGION_GLOB_MESSAGE))]
    pub allowed_regions: Vec<String>,
    /// The guard policy (defined on the AIGateway, `spec.guardPolicies`)
    /// applied to this route's requests and answers; default: the gateway's
    /// `defaultGuardPolicy`. A route with a policy runs through the canonical
    /// form (parsed and re-encoded) instead of the byte passthrough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub guard_policy: Option<String>,
    /// Smart routing: named tiers, cheapest first (for example `cheap`, then
    /// `strong`). Every backend then names its tier (`backends[].tier`), and
    /// `tierPolicy` picks the tier per request from the request itself. The
    /// chosen tier's backends are tried first (by priority and weight as
    /// usual); the other tiers' backends are the fallback after them,
    /// stronger tiers before cheaper ones. The answer says which tier and why
    /// in `x-tollgate-route-tier` and `x-tollgate-route-reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 8))]
    #[x_kube(validation = Rule::new("self.size() >= 2").message("at least two tiers are needed to choose between"))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.name == t.name))").message(TIERS_UNIQUE_MESSAGE))]
    pub tiers: Option<Vec<RouteTier>>,
    /// How a request's tier is chosen (default: the heuristic classifier
    /// with its default thresholds). Needs `tiers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_policy: Option<TierPolicy>,
    /// Retries of a backend before falling back (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RouteRetries>,
    /// How backends of one priority share the load (default
    /// `LeastInFlight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancing: Option<Balancing>,
    /// Larger models, tried in order, for a request too long for the
    /// backends it would go to: one whose estimated prompt plus
    /// `max_tokens` exceeds a backend model's catalog `contextWindow`, or
    /// that a provider refused as too long. Other requests never go here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub context_fallback: Vec<ContextFallbackBackend>,
    /// Prompt management: versioned templates with variables, decorators
    /// and context fetched from URLs, applied to every chat request of the
    /// route before guards and budgets see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<crate::prompt::RoutePrompts>,
}

/// What both the CEL rule and compile say of backends and tiers that disagree.
pub const BACKEND_TIER_MESSAGE: &str =
    "with tiers, every backend names one of them in tier; without tiers, no backend may";

/// What both the CEL rule and compile say of a tier no usable backend serves.
pub const TIER_EMPTY_MESSAGE: &str = "every tier needs a backend with a non-zero weight";

/// What both the CEL rule and compile say of a policy without tiers.
pub const TIER_POLICY_MESSAGE: &str = "tierPolicy needs tiers";

/// What both the CEL rule and compile say of a default tier that is not listed.
pub const DEFAULT_TIER_MESSAGE: &str = "tierPolicy.defaultTier must name one of tiers";

/// What both the CEL rule and compile say of a tier listed twice.
pub const TIERS_UNIQUE_MESSAGE: &str = "tier names must be unique";

/// One tier of a route's smart routing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTier {
    /// The tier's name, as backends name it and as the answer's
    /// `x-tollgate-route-tier` header and the metrics say it.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$')").message(TIER_NAME_MESSAGE))]
    pub name: String,
}

/// What both the CEL rule and compile say of a malformed tier name.
pub const TIER_NAME_MESSAGE: &str = "a tier name is 1-63 lower-case letters, digits, '-' or '_', starting and ending with a letter or digit";

/// How a route's tier is chosen per request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierPolicy {
    /// The classifier (default `Heuristic`).
    #[serde(default)]
    pub classifier: TierClassifier,
    /// The tier for requests the classifier cannot read (a body that is not
    /// a chat request). Default: the strongest (last) tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tier: Option<String>,
    /// Heuristic: a prompt of at least this many estimated tokens (four
    /// characters a token) goes to the strongest tier (default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000000").message("longPromptTokens must be between 1 and 10000000"))]
    pub long_prompt_tokens: Option<u64>,
    /// Heuristic: a conversation with at least this many user turns counts
    /// as deep, one signal towards the strongest tier (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("deepConversationTurns must be between 1 and 10000"))]
    pub deep_conversation_turns: Option<u32>,
}

/// The classifiers a tier policy can use.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum TierClassifier {
    /// Signals read from the request itself: prompt length, conversation
    /// depth, code, math, tool use, explicit reasoning requests, analysis
    /// and multi-step instructions. No IO, microseconds per request.
    #[default]
    Heuristic,
}

/// What both the CEL rule and compile say of an alias listed twice.
pub const ALIASES_UNIQUE_MESSAGE: &str = "model aliases must be unique";

/// What both the CEL rule and compile say of an endpoint listed twice.
pub const ENDPOINTS_UNIQUE_MESSAGE: &str = "endpoints must be unique";

/// What both the CEL rule and compile say of a header matched twice.
pub const HEADERS_UNIQUE_MESSAGE: &str = "header names must be unique (case-insensitive)";

/// What both the CEL rule and compile say of a route with no usable backend.
pub const BACKENDS_WEIGHT_MESSAGE: &str = "at least one backend needs a non-zero weight";

/// What both the CEL rule and compile say of a pass-through backend without a glob.
pub const PASS_THROUGH_MESSAGE: &str = "a backend without model passes the client's model name through, which needs a glob alias in models";

/// A model alias; a string so that it stays a plain list in YAML.
pub type ModelAlias = String;

/// A client-facing API a route can serve.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum RouteEndpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages` and `/v1/messages/count_tokens`.
    Messages,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
}

impl RouteEndpoint {
    pub const ALL: [RouteEndpoint; 4] = [
        RouteEndpoint::ChatCompletions,
        RouteEndpoint::Responses,
        RouteEndpoint::Messages,
        RouteEndpoint::Embeddings,
    ];
    /// What a chat model serves.
    pub const CHAT: [RouteEndpoint; 3] = [
        RouteEndpoint::ChatCompletions,
        RouteEndpoint::Responses,
        RouteEndpoint::Messages,
    ];

    /// The request path, for messages.
    pub fn path(self) -> &'static str {
        match self {
            RouteEndpoint::ChatCompletions => "/v1/chat/completions",
            RouteEndpoint::Responses => "/v1/responses",
            RouteEndpoint::Messages => "/v1/messages",
            RouteEndpoint::Embeddings => "/v1/embeddings",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&*+.^_`|~-]{1,256}$')").message("must be a valid HTTP header name"))]
    pub name: String,
    /// Exact value the header must have.
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("self.size() <= 4096").message("value must be at most 4096 characters"))]
    pub value: String,
}

/// What both the CEL rule and compile say of an entry that matches anyone.
pub const PRINCIPAL_MATCH_EMPTY_MESSAGE: &str =
    "a principal match needs user, team, app or matchLabels";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteBackend {
    /// The ModelProvider (same namespace).
    pub provider_ref: LocalObjectReference,
    /// Model name sent upstream (for AzureOpenAI, the deployment name). Omit
    /// it to send the name the client asked for, which needs a glob alias on
    /// the route; the provider's model catalog is then not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 256").message("model must be 1-256 characters"))]
    pub model: Option<String>,
    /// Share of traffic within its priority tier, 0-100 (default 1; 0 disables).
    #[serde(default = "default_weight")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("weight must be between 0 and 100"))]
    pub weight: u32,
    /// Tier, lower first (default 0). Higher tiers serve only as fallback.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("priority must be between 0 and 1000"))]
    pub priority: u32,
    /// The smart-routing tier (one of the route's `tiers`) this backend
    /// serves. Required when the route has tiers, refused when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub tier: Option<String>,
}

fn default_weight() -> u32 {
    1
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTimeouts {
    /// Deadline for the upstream answer: the whole body for a plain request,
    /// the first chunk for a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub request: Option<String>,
    /// Longest silence allowed between two chunks of a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub stream_idle: Option<String>,
    /// Deadline for one attempt at one backend (each retry and each
    /// fallback gets its own, within `request`). Default: the provider's
    /// `timeouts.request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub attempt: Option<String>,
    /// Streams: longest wait for the first output of an attempt (time to
    /// first token). A stream that has produced nothing by then is
    /// abandoned and retried or falls back, like a timeout; once output
    /// reached the client it is never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub first_token: Option<String>,
}

/// Retries of one backend before falling back to the next.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRetries {
    /// Further attempts at the same backend after a connection error,
    /// timeout, 429, 500, 502, 503, 504 or 529 (default 0: fall back at
    /// once). A 429 with a reset time falls back at once when another
    /// backend remains, and waits for the reset on the last one.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 10").message("attempts must be between 0 and 10"))]
    pub attempts: u32,
    /// First backoff (default 100ms); each retry doubles it, with jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub backoff: Option<String>,
    /// Longest backoff (default 2s). A provider's `Retry-After` may ask for
    /// longer; either way no wait outlasts the route's request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub max_backoff: Option<String>,
}

/// How a request picks among backends of the same priority.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Balancing {
    /// Two backends drawn by weight; the one with fewer requests in flight
    /// on this replica (relative to its weight) goes first. Idle, this is
    /// the weighted split.
    #[default]
    LeastInFlight,
    /// A weighted random draw only.
    Weighted,
}

/// A larger model for requests too long for the route's backends.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContextFallbackBackend {
    /// The ModelProvider (same namespace).
    pub provider_ref: LocalObjectReference,
    /// Model name sent upstream.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 256").message("model must be 1-256 characters"))]
    pub model: String,
}

/// Observed state of a route: the conditions every kind has, and lists for
/// the printer columns.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteStatus {
    #[serde(flatten)]
    pub base: ResourceStatus,
    /// The model aliases, comma separated (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
    /// The backends as `provider/model`, comma separated (for `kubectl get -o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<String>,
}
