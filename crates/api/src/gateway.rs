//! `AIGateway`: one fleet of data-plane pods (or one standalone process).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;

/// A gateway: its ports, its client API keys and its request limits.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AIGateway",
    plural = "aigateways",
    shortname = "aigw",
    category = "tollgate",
    namespaced,
    status = "AIGatewayStatus",
    doc = "An AIGateway is one fleet of Tollgate data-plane pods (or one standalone process): its client and admin ports, client API keys, request limits and error policy, and how the controller runs its Deployment. AIRoutes attach to it; the controller compiles them into the configuration it pushes to the gateway's pods.",
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.listener.port"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Connected","type":"integer","jsonPath":".status.connectedGateways"}"#,
    printcolumn = r#"{"name":"Up-to-date","type":"integer","jsonPath":".status.updatedGateways"}"#,
    printcolumn = r#"{"name":"Routes","type":"string","jsonPath":".status.routes"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Config","type":"string","jsonPath":".status.configHash","priority":1}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.status==\"False\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The defaults (8080, 9090) count: a listener on 9090 alone clashes with admin.
#[x_kube(validation = Rule::new("(has(self.listener) ? self.listener.port : 8080) != (has(self.admin) ? self.admin.port : 9090)").message("listener and admin ports must differ"))]
pub struct AIGatewaySpec {
    /// The client-facing API port (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<PortSpec>,
    /// The admin port: `/metrics`, `/healthz`, `/readyz` (default 9090).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<PortSpec>,
    /// Client API keys. When any are configured every request needs one
    /// (`Authorization: Bearer` or `x-api-key`); each names a principal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub api_keys: Vec<ApiKeySource>,
    /// OIDC/JWT bearer tokens accepted besides API keys: a token signed by
    /// one of these issuers (keys from its JWKS) maps to a principal by its
    /// claims. With any issuer or key configured, every request needs one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub jwt: Vec<JwtIssuerSpec>,
    /// Request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<GatewayLimits>,
    /// What clients are told when a provider fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_errors: Option<UpstreamErrorPolicy>,
    /// How the controller runs this gateway in a cluster; ignored standalone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadSpec>,
    /// Shared state for TokenBudgets, so every replica counts against the
    /// same totals. Without it each gateway process counts on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// The MCP endpoints (`/mcp`, `/mcp/{server}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<GatewayMcpSpec>,
    /// Data residency for every route of this gateway: the regions (names
    /// or globs such as `eu-*`) whose providers may be used. A caller may
    /// be restricted further by its principal label `allowed-regions`
    /// (regions separated by `|`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new(crate::common::REGION_GLOB_RULE).message(crate::common::REGION_GLOB_MESSAGE))]
    pub allowed_regions: Vec<String>,
    /// Guard policies routes choose by name (`AIRoute.spec.guardPolicy`):
    /// personal data, secrets, custom rules and prompt injection on input;
    /// filters on output, streams included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("guard policy names must be unique"))]
    pub guard_policies: Vec<crate::guard::GuardPolicySpec>,
    /// Tamper-evident audit records of every LLM request and MCP tool call,
    /// and where they go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::AuditSpec>,
    /// The guard policy of every route that names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub default_guard_policy: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayMcpSpec {
    /// Browser origins (`https://app.example.com`) allowed to call the MCP
    /// endpoints. A request with an `Origin` header is refused (403) unless
    /// the origin is listed or is on this machine (localhost, 127.0.0.0/8,
    /// [::1]): a web page must not reach MCP servers through a user's
    /// gateway by DNS rebinding. Requests without `Origin` (non-browser
    /// clients) are not affected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub allowed_origins: Vec<String>,
    /// Keys that seal MCP session ids (each Secret value at least 32
    /// bytes). The first seals new sessions; every one listed still opens
    /// the sessions it sealed, so a key is rotated by putting the new one
    /// first and removing the old one a day later (sessions last 24h).
    /// Unset: a key derived from the gateway's digest key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub session_keys: Vec<SecretKeyRef>,
}

/// A Redis server (or a proxy in front of a cluster: every key of one gateway
/// shares a hash tag).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSpec {
    /// `redis://host:port/db`, or `rediss://` for TLS. No credentials here:
    /// use `username` and `passwordSecretRef`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^rediss?://[^@/]+(/[0-9]{1,2})?$')").message(REDIS_URL_MESSAGE))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub username: Option<String>,
    /// Secret key holding the password (Redis `AUTH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Longest a budget check waits for Redis before the budget's
    /// `failureMode` applies (default 250ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub timeout: Option<String>,
}

/// What both the CEL rule and compile say of a bad Redis URL.
pub const REDIS_URL_MESSAGE: &str = "url must be redis://host:port or rediss://host:port, optionally with /db, and without credentials";

/// Deployment, autoscaling and disruption settings for the gateway pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct WorkloadSpec {
    /// Fewest pods the autoscaler keeps (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("minReplicas must be between 1 and 1000"))]
    pub min_replicas: Option<u32>,
    /// Most pods the autoscaler runs (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxReplicas must be between 1 and 1000"))]
    pub max_replicas: Option<u32>,
    /// Average CPU utilization the autoscaler aims for, percent (default 70).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("targetCPUUtilizationPercentage must be between 1 and 100"))]
    pub target_cpu_utilization_percentage: Option<u32>,
    /// Gateway container resources (default requests cpu 100m, memory 64Mi; limit memory 256Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Gateway image; defaults to the controller's `--gateway-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
}

/// Observed state of a gateway fleet.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AIGatewayStatus {
    /// The generation of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Programmed`, as `metav1.Condition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// Gateway pods that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Gateway pods ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// In-cluster URL of the gateway's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Short hash of the configuration the controller serves to this gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Gateway processes subscribed to the controller for configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_gateways: Option<i32>,
    /// Subscribed gateway processes that acknowledged running `configHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_gateways: Option<i32>,
    /// Routes served out of the routes naming this gateway, e.g. `3/4`: a
    /// lower first number means a route was rejected (see its conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<String>,
    /// Providers usable out of those its routes reference, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<String>,
    /// When the controller last confirmed this status (it does so every few
    /// minutes): an older time means the controller is not running and the
    /// status may be stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_confirmed_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: u32,
}

/// One token issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.jwksUrl) != has(self.jwks)").message(JWKS_SOURCE_MESSAGE))]
pub struct JwtIssuerSpec {
    /// The `iss` the tokens must carry, exactly.
    #[schemars(length(max = 2048))]
    pub issuer: String,
    /// `aud` must hold one of these (when any are given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 2048)))]
    pub audiences: Vec<String>,
    /// Where the signing keys are (`https://…/.well-known/jwks.json`):
    /// fetched with a 5 s timeout and 1 MiB cap, cached for 5 minutes and
    /// fetched again for an unknown key id (at most every 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^ ]+$')").message("jwksUrl must be an http:// or https:// URL"))]
    pub jwks_url: Option<String>,
    /// The key set itself, as JSON (`{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub jwks: Option<String>,
    /// Which claims say who the caller is (default: `sub` is the user).
    /// Dotted names reach into objects; from an array the first value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ClaimMapping>,
}

/// What both the CEL rule and compile say of a JWT issuer without keys.
pub const JWKS_SOURCE_MESSAGE: &str = "give exactly one of jwksUrl and jwks";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub app: Option<String>,
    /// Principal label → claim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub labels: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySource {
    /// Secret key holding the client API key.
    pub secret_ref: SecretKeyRef,
    /// Who a request carrying this key is.
    pub principal: PrincipalSpec,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrincipalSpec {
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("user must be 1-253 characters"))]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub app: Option<String>,
    /// Free-form attributes (cost center, environment, ...) that budgets and
    /// reports can select on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub labels: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayLimits {
    /// Largest request body accepted, in bytes (default 4 MiB); larger gets 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1024 && self <= 1073741824").message("maxRequestBodyBytes must be between 1KiB and 1GiB"))]
    pub max_request_body_bytes: Option<u64>,
    /// Default upstream deadline for routes that set none (default 300s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub request_timeout: Option<String>,
    /// How long a stream may wait on a client that stopped reading before it
    /// is ended and its provider slot freed (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub stream_write_timeout: Option<String>,
}

/// What clients see of a provider's failures.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamErrorPolicy {
    /// `Sanitize` (default): server errors and connection failures are
    /// reported with the provider's error type and a generic message, and
    /// account or organisation ids are masked in client errors; the original
    /// is logged. `PassThrough`: the provider's messages reach the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ErrorDetail>,
    /// Longest `Retry-After` passed on to clients (default 60s); a provider
    /// asking for longer is capped, since the gateway may fall back sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub max_retry_after: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorDetail {
    Sanitize,
    PassThrough,
}
