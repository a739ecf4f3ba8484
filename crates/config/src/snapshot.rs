//! The compiled configuration of one gateway: everything the data plane needs,
//! resolved, defaulted and sorted, with no references left to follow.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::egress::EgressPolicy;

use serde::{Deserialize, Serialize};
use tollgate_api::{ModelKind, ProviderType, RouteEndpoint, TierClassifier};

use crate::diagnostics::ObjectRef;
use crate::digest::DigestKey;

pub mod budget;
pub mod mcp;
pub mod prompt;
pub use budget::Budget;
pub use mcp::McpServer;

/// A versioned gateway configuration. `hash` is the HMAC-SHA256 of the
/// canonical JSON of `config` under its digest key: equal configurations have
/// equal hashes wherever they share the key, and the hash reveals nothing
/// checkable offline about the credentials inside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hash: String,
    pub config: GatewayConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("snapshot hash mismatch: header says {claimed}, content hashes to {actual}")]
    HashMismatch { claimed: String, actual: String },
    #[error("snapshot is inconsistent: {0}")]
    Invalid(String),
}

impl Snapshot {
    pub fn new(config: GatewayConfig) -> Self {
        Self {
            hash: hash_config(&config),
            config,
        }
    }

    /// Canonical bytes, for transport and storage.
    pub fn to_json(&self) -> Result<Vec<u8>, SnapshotError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Parses and checks the hash, so a corrupted snapshot is never served.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        let actual = hash_config(&snapshot.config);
        if actual != snapshot.hash {
            return Err(SnapshotError::HashMismatch {
                claimed: snapshot.hash,
                actual,
            });
        }
        snapshot.validate()?;
        Ok(snapshot)
    }

    /// Checks every internal reference, so the data plane can index without
    /// bounds checks on the request path. Compile output always passes; a
    /// snapshot from elsewhere that fails is refused like a hash mismatch.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let config = &self.config;
        let providers = config.providers.len();
        for route in &config.routes {
            if route.backends.is_empty() {
                return Err(SnapshotError::Invalid(format!(
                    "route {} has no backends",
                    route.name
                )));
            }
            for backend in &route.backends {
                if backend.provider >= providers {
                    return Err(SnapshotError::Invalid(format!(
                        "route {} names provider #{} of {providers}",
                        route.name, backend.provider
                    )));
                }
                let tiers = route.tiers.as_ref().map_or(1, |t| t.names.len());
                if backend.tier >= tiers {
                    return Err(SnapshotError::Invalid(format!(
                        "route {} names tier #{} of {tiers}",
                        route.name, backend.tier
                    )));
                }
                if !backend.pass_model && backend.model.is_empty() {
                    return Err(SnapshotError::Invalid(format!(
                        "route {} has a backend without a model",
                        route.name
                    )));
                }
            }
        }
        if let Some(route) = config.routes.iter().find(|r| {
            r.prompts.as_ref().is_some_and(|p| {
                p.default_version
                    .is_some_and(|index| index >= p.templates.len())
            })
        }) {
            return Err(SnapshotError::Invalid(format!(
                "route {} names a default prompt version past its templates",
                route.name
            )));
        }
        if let Some(route) = config
            .routes
            .iter()
            .find(|r| r.guard.is_some_and(|g| g >= config.guard_policies.len()))
        {
            return Err(SnapshotError::Invalid(format!(
                "route {} names guard policy #{:?} of {}",
                route.name,
                route.guard,
                config.guard_policies.len()
            )));
        }
        for key in &config.api_keys {
            let hex = key.digest.len() == 64 && key.digest.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(SnapshotError::Invalid(format!(
                    "API key digest for user {:?} is not an HMAC-SHA256 hex digest",
                    key.principal.user
                )));
            }
        }
        Ok(())
    }

    /// First 12 hex digits: enough to tell versions apart in logs and status.
    pub fn short_hash(&self) -> &str {
        short_hash(&self.hash)
    }
}

/// The first 12 hex digits of a snapshot hash, as logs and status show it.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn hash_config(config: &GatewayConfig) -> String {
    // Serializing plain structs, Vecs and BTreeMaps cannot fail and is
    // deterministic: field order is declaration order, maps are sorted.
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    config.digest_key.mac_hex(&bytes)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayConfig {
    pub gateway: ObjectRef,
    /// Keys the snapshot hash and [`ApiKey::digest`]; never shown on `/config`.
    pub digest_key: DigestKey,
    pub listener_port: u16,
    pub admin_port: u16,
    pub limits: Limits,
    #[serde(default)]
    pub upstream_errors: UpstreamErrors,
    /// Sorted by digest; empty (and no `jwt`) means the gateway is open.
    pub api_keys: Vec<ApiKey>,
    /// Token issuers accepted besides keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<JwtIssuer>,
    /// Only the providers this gateway's routes use, sorted by name.
    pub providers: Vec<Provider>,
    /// In precedence order (oldest first, then by namespace/name).
    pub routes: Vec<Route>,
    /// TokenBudgets of this gateway, sorted by namespace/name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// Shared budget state; `None`: each process counts alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// MCPServers served at `/mcp/{path}`, sorted by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServer>,
    /// Browser origins allowed on the MCP endpoints besides local ones,
    /// lowercase `scheme://host[:port]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_allowed_origins: Vec<String>,
    /// Keys sealing MCP session ids, newest first; empty: derived from
    /// `digest_key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_session_keys: Vec<Credential>,
    /// Region globs every provider this gateway uses must match; empty: no
    /// restriction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_regions: Vec<String>,
    /// Guard policies, in the gateway's order; routes index into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard_policies: Vec<tollgate_api::guard::GuardPolicySpec>,
    /// Index of the policy of routes that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_guard: Option<usize>,
    /// Audit records and their sinks; `None`: no records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// `spec.audit`, with defaults applied and header Secrets resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    pub content: tollgate_api::audit::AuditContent,
    pub spool_path: String,
    pub spool_max_bytes: u64,
    pub sinks: Vec<AuditSink>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditSink {
    pub kind: tollgate_api::audit::AuditSinkType,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, Credential)>,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisConfig {
    /// `redis://host:port[/db]` or `rediss://…`, without credentials.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Credential>,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_request_body_bytes: u64,
    pub request_timeout_ms: u64,
    /// A stream whose client reads nothing for this long is ended.
    #[serde(default = "default_stream_write_timeout_ms")]
    pub stream_write_timeout_ms: u64,
}

pub const DEFAULT_STREAM_WRITE_TIMEOUT_MS: u64 = 30_000;

fn default_stream_write_timeout_ms() -> u64 {
    DEFAULT_STREAM_WRITE_TIMEOUT_MS
}

/// What clients see of a provider's failures (AIGateway `spec.upstreamErrors`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamErrors {
    /// Provider messages reach clients as they are.
    pub pass_through: bool,
    /// Longest `Retry-After` passed on, in seconds.
    pub max_retry_after_s: u64,
}

impl Default for UpstreamErrors {
    fn default() -> Self {
        Self {
            pass_through: false,
            max_retry_after_s: 60,
        }
    }
}

/// A client key, held only as its digest so a leaked snapshot leaks no keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// [`api_key_digest`] of the key, hex.
    pub digest: String,
    pub principal: Principal,
    /// Unix seconds after which the key is refused; checked per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtIssuer {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    pub user_claim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_claim: Option<String>,
    /// Principal label → claim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_claims: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JwksSource {
    Url(String),
    Inline(String),
}

/// Who a request is, for limits, budgets, metrics and audit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub user: String,
    pub team: Option<String>,
    pub app: Option<String>,
    /// Which key authenticated it: the name of a labelled key Secret, or
    /// `secret/key` for an AIGateway `apiKeys` entry. Not secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// HMAC-SHA256 hex of a client key, as stored in [`ApiKey::digest`].
pub fn api_key_digest(digest_key: &DigestKey, key: &str) -> String {
    digest_key.mac_hex(key.as_bytes())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    /// Shared, not copied, by every metric label and request that names it.
    pub name: Arc<str>,
    pub provider_type: ProviderType,
    /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<Credential>,
    /// Bedrock: AWS credentials for SigV4 signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsCredentials>,
    /// Bedrock: the AWS region requests are signed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Where the provider processes data (`spec.dataRegion`), for residency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_region: Option<String>,
    /// Azure OpenAI: the `api-version` query parameter. Anthropic: the
    /// `anthropic-version` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Azure OpenAI: how the credential is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_auth: Option<AzureAuth>,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_concurrent_requests: Option<u32>,
    /// How `max_concurrent_requests` is shared across principals. Omitted
    /// when default, so snapshots from before it hash the same.
    #[serde(default, skip_serializing_if = "Fairness::is_default")]
    pub fairness: Fairness,
    /// The SSRF guard's exceptions for this provider. Omitted when default,
    /// so snapshots from before it hash the same.
    #[serde(default, skip_serializing_if = "EgressPolicy::is_default")]
    pub network: EgressPolicy,
    /// The circuit breaker's thresholds; omitted when default.
    #[serde(default, skip_serializing_if = "CircuitBreaker::is_default")]
    pub circuit_breaker: CircuitBreaker,
    /// The catalog: upstream model name to kind and price. Empty: any
    /// model, cost unknown.
    pub models: BTreeMap<String, CatalogModel>,
}

/// When a provider's circuit breaker opens, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CircuitBreaker {
    pub consecutive_failures: u32,
    pub error_rate_percent: u32,
    pub min_requests: u32,
    pub open_for_ms: u64,
    /// `enabled: false`: outcomes are not recorded and the circuit never
    /// opens. Omitted when false, so snapshots from before it hash the same.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_rate_percent: 50,
            min_requests: 20,
            open_for_ms: 30_000,
            disabled: false,
        }
    }
}

impl CircuitBreaker {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Default `maxQueueWait`: long enough for one of a busy provider's streams
/// to end, short next to an LLM request's own latency.
pub const DEFAULT_MAX_QUEUE_WAIT_MS: u64 = 2000;

/// Fair sharing of a provider's concurrency cap (`spec.fairness`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Fairness {
    /// Largest fraction of the slots one principal may hold while another
    /// holds or waits for one; 1 = no cap beyond fair queueing.
    pub max_share: f64,
    /// How long a principal under its fair share may wait for a slot of a
    /// full provider; 0 = never wait.
    pub max_queue_wait_ms: u64,
}

impl Default for Fairness {
    fn default() -> Self {
        Self {
            max_share: 1.0,
            max_queue_wait_ms: DEFAULT_MAX_QUEUE_WAIT_MS,
        }
    }
}

impl Fairness {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// AWS credentials as a Bedrock provider's Secret holds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    pub access_key_id: Credential,
    pub secret_access_key: Credential,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Credential>,
}

/// How an Azure OpenAI credential is sent: the resource key as `api-key`,
/// or a Microsoft Entra ID token as `Authorization: Bearer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AzureAuth {
    ApiKey,
    EntraId,
}

/// One model of a provider's catalog.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogModel {
    /// The catalog's `kind`, or the one its name suggests.
    pub kind: ModelKind,
    #[serde(flatten)]
    pub pricing: Pricing,
    /// Prompt plus output tokens the model takes, when the catalog says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    pub input_per_million: f64,
    pub output_per_million: f64,
    pub cached_input_per_million: f64,
}

impl Pricing {
    /// USD for one request's usage.
    pub fn cost(
        &self,
        prompt_tokens: u64,
        cached_prompt_tokens: u64,
        completion_tokens: u64,
    ) -> f64 {
        let cached = cached_prompt_tokens.min(prompt_tokens);
        let uncached = prompt_tokens - cached;
        (uncached as f64 * self.input_per_million
            + cached as f64 * self.cached_input_per_million
            + completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

/// A provider secret. Serialized in the clear (the snapshot must carry it to
/// the gateway) but never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(pub String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `namespace/name` of the AIRoute (shared by metric labels).
    pub name: Arc<str>,
    /// Exact aliases.
    pub aliases: Vec<String>,
    /// Glob aliases (`*` matches any run of characters).
    pub globs: Vec<String>,
    /// Header name (lower-case) and exact value; all must match.
    pub headers: Vec<(String, String)>,
    /// Callers served: the principal must match one. Empty: everyone.
    /// Omitted when empty, so snapshots from before it hash the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<budget::Subject>,
    pub backends: Vec<Backend>,
    pub request_timeout_ms: Option<u64>,
    pub stream_idle_timeout_ms: Option<u64>,
    /// The client endpoints the route serves. Omitted when all, so
    /// snapshots from before it hash the same.
    #[serde(default, skip_serializing_if = "Endpoints::is_all")]
    pub endpoints: Endpoints,
    /// Region globs this route's providers must match; empty: no
    /// restriction beyond the gateway's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_regions: Vec<String>,
    /// Smart routing, when the route declares tiers; `None` costs a
    /// request nothing. Omitted when absent, so snapshots from before it
    /// hash the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Box<Tiers>>,
    /// Retries, per-attempt timeouts, balancing. Omitted when default, so
    /// snapshots from before it hash the same.
    #[serde(default, skip_serializing_if = "Resilience::is_default")]
    pub resilience: Resilience,
    /// Index of the route's guard policy in `guard_policies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<usize>,
    /// Prompt templates, decorators and context; `None` costs a request
    /// nothing. Omitted when absent, so snapshots from before it hash the
    /// same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Box<prompt::Prompts>>,
}

/// How a route retries and spreads its requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resilience {
    /// Further attempts at one backend before falling back.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
    /// First backoff before a retry, doubled each time.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub backoff_ms: u64,
    /// Longest backoff.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_backoff_ms: u64,
    /// One attempt's deadline, over the provider's request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_timeout_ms: Option<u64>,
    /// Streams: an attempt's deadline for its first output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_timeout_ms: Option<u64>,
    /// Weighted draw only, instead of least in flight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weighted_only: bool,
    /// Some backend is a `contextFallback` model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_long_context: bool,
}

impl Resilience {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

/// A route's smart-routing tiers: names cheapest first (each backend's
/// [`Backend::tier`] indexes them) and the policy that picks one per request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tiers {
    /// Tier names, cheapest first (2 to 8).
    pub names: Vec<Arc<str>>,
    pub classifier: TierClassifier,
    /// The tier for requests the classifier cannot read.
    pub default_tier: usize,
    /// Heuristic: prompts of at least this many estimated tokens go to the
    /// strongest tier.
    pub long_prompt_tokens: u64,
    /// Heuristic: this many user turns make a conversation deep.
    pub deep_conversation_turns: u32,
}

impl Tiers {
    pub const DEFAULT_LONG_PROMPT_TOKENS: u64 = 3_000;
    pub const DEFAULT_DEEP_CONVERSATION_TURNS: u32 = 8;
}

/// A set of [`RouteEndpoint`]s, one bit each: a request checks membership
/// without touching memory beyond the route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<RouteEndpoint>", into = "Vec<RouteEndpoint>")]
pub struct Endpoints(u8);

impl Endpoints {
    pub const ALL: Endpoints = Endpoints::of(&RouteEndpoint::ALL);
    pub const CHAT: Endpoints = Endpoints::of(&RouteEndpoint::CHAT);
    pub const EMBEDDINGS: Endpoints = Endpoints::of(&[RouteEndpoint::Embeddings]);

    pub const fn of(endpoints: &[RouteEndpoint]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < endpoints.len() {
            bits |= 1 << endpoints[i] as u8;
            i += 1;
        }
        Endpoints(bits)
    }

    pub fn contains(self, endpoint: RouteEndpoint) -> bool {
        self.0 & (1 << endpoint as u8) != 0
    }

    pub fn union(self, other: Endpoints) -> Self {
        Endpoints(self.0 | other.0)
    }

    pub fn is_all(&self) -> bool {
        *self == Self::ALL
    }

    /// The members, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = RouteEndpoint> {
        RouteEndpoint::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::ALL
    }
}

impl From<Vec<RouteEndpoint>> for Endpoints {
    fn from(endpoints: Vec<RouteEndpoint>) -> Self {
        Endpoints::of(&endpoints)
    }
}

impl From<Endpoints> for Vec<RouteEndpoint> {
    fn from(endpoints: Endpoints) -> Self {
        endpoints.iter().collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Index into [`GatewayConfig::providers`].
    pub provider: usize,
    /// Upstream model name; unused when `pass_model` is set.
    pub model: Arc<str>,
    /// Send the model name the client asked for (glob routes) instead of `model`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_model: bool,
    pub weight: u32,
    pub priority: u32,
    /// Index into the route's [`Tiers::names`]; 0 on routes without tiers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tier: usize,
    /// One of the route's `contextFallback` models: tried only for a
    /// request too long for the others (always after them, weight 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub long_context: bool,
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

/// True when `pattern` (with `*` wildcards) matches all of `text`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("gpt-4o*", "gpt-4o-mini"));
        assert!(glob_matches("gpt-4o*", "gpt-4o"));
        assert!(!glob_matches("gpt-4o*", "gpt-4"));
        assert!(glob_matches("*-mini", "gpt-4o-mini"));
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(!glob_matches("a*b*c", "aXcYb"));
        assert!(glob_matches("*", "anything"));
        assert!(!glob_matches("ab*ba", "aba"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
    }

    #[test]
    fn pricing_splits_cached_tokens() {
        let p = Pricing {
            input_per_million: 2.0,
            output_per_million: 8.0,
            cached_input_per_million: 0.5,
        };
        let cost = p.cost(1_000_000, 500_000, 250_000);
        assert!((cost - (1.0 + 0.25 + 2.0)).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn validate_refuses_dangling_provider_indexes() {
        let mut config = GatewayConfig {
            digest_key: DigestKey::from_bytes([7; 32]),
            mcp_servers: Vec::new(),
            mcp_allowed_origins: Vec::new(),
            mcp_session_keys: Vec::new(),
            jwt: Vec::new(),
            budgets: Vec::new(),
            redis: None,
            gateway: ObjectRef::new("AIGateway", "ns", "gw"),
            listener_port: 8080,
            admin_port: 9090,
            limits: Limits {
                max_request_body_bytes: 1,
                request_timeout_ms: 1,
                stream_write_timeout_ms: 1,
            },
            upstream_errors: UpstreamErrors::default(),
            api_keys: vec![],
            providers: vec![],
            routes: vec![Route {
                name: "r".into(),
                aliases: vec!["m".into()],
                globs: vec![],
                headers: vec![],
                principals: Vec::new(),
                backends: vec![Backend {
                    provider: 0,
                    model: "m".into(),
                    pass_model: false,
                    weight: 1,
                    priority: 0,
                    tier: 0,
                    long_context: false,
                }],
                request_timeout_ms: None,
                stream_idle_timeout_ms: None,
                endpoints: Endpoints::default(),
                tiers: None,
                resilience: Default::default(),
                allowed_regions: Vec::new(),
                guard: None,
                prompts: None,
            }],
            allowed_regions: Vec::new(),
            guard_policies: Vec::new(),
            default_guard: None,
            audit: None,
        };
        let snapshot = Snapshot::new(config.clone());
        assert!(matches!(
            snapshot.validate(),
            Err(SnapshotError::Invalid(_))
        ));
        let bytes = snapshot.to_json().unwrap();
        assert!(matches!(
            Snapshot::from_json(&bytes),
            Err(SnapshotError::Invalid(_))
        ));
        config.routes.clear();
        assert!(Snapshot::new(config).validate().is_ok());
    }

    #[test]
    fn endpoints_serialize_as_names_and_default_to_all() {
        let embeddings = serde_json::to_value(Endpoints::EMBEDDINGS).unwrap();
        assert_eq!(embeddings, serde_json::json!(["Embeddings"]));
        let chat: Endpoints = serde_json::from_value(serde_json::json!([
            "Messages",
            "ChatCompletions",
            "Responses"
        ]))
        .unwrap();
        assert_eq!(chat, Endpoints::CHAT);
        assert!(chat.contains(RouteEndpoint::Messages));
        assert!(!chat.contains(RouteEndpoint::Embeddings));
        assert!(Endpoints::default().is_all());
        assert_eq!(Endpoints::CHAT.union(Endpoints::EMBEDDINGS), Endpoints::ALL);
    }

    #[test]
    fn credentials_never_print() {
        assert_eq!(
            format!("{:?}", Credential("sk-live".into())),
            "Credential(<redacted>)"
        );
    }
}
