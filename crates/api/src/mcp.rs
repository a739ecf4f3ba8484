//! `MCPServer`: a backend MCP server that gateways put behind `/mcp`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, ResourceStatus, SecretKeyRef};

/// A backend MCP server and how one AIGateway serves it: passed through at
/// `/mcp/{path}` and aggregated into `/mcp`. The server is either reached at
/// `url` or run by the controller from `run`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    plural = "mcpservers",
    shortname = "mcps",
    category = "tollgate",
    namespaced,
    status = "MCPServerStatus",
    doc = "An MCPServer is a backend MCP server that an AIGateway serves to agents at /mcp/{path}, with the gateway's authentication in front, its own credentials to the backend, tool filters and read/write classification. The server is either external (url, Streamable HTTP) or run by the controller (run: a Deployment and a Service; a stdio server is wrapped in an HTTP bridge).",
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gatewayRef.name"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".status.path"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url","priority":1}"#,
    printcolumn = r#"{"name":"Tools","type":"integer","jsonPath":".status.tools"}"#,
    printcolumn = r#"{"name":"Catalog","type":"string","jsonPath":".status.conditions[?(@.type==\"CatalogChanged\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.status==\"False\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.run)").message(URL_OR_RUN_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.failoverUrls) || has(self.url)").message(FAILOVER_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.transport) || self.transport != 'SSE' || has(self.url)").message(TRANSPORT_MESSAGE))]
pub struct MCPServerSpec {
    /// The AIGateway (same namespace) that serves this server.
    pub gateway_ref: LocalObjectReference,
    /// The path segment under `/mcp/` (default: the MCPServer's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')").message(PATH_MESSAGE))]
    pub path: Option<String>,
    /// The endpoint of an external MCP server, `http://` or `https://`
    /// (Streamable HTTP). Exactly one of `url` and `run` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^ ]+$')").message(URL_MESSAGE))]
    pub url: Option<String>,
    /// More endpoints of the same external server (its other replicas),
    /// tried in order when `url` cannot be reached: a message that never
    /// reached one goes to the next, and so does a read (or another message
    /// safe to repeat) that one answered with 502, 503 or 504 or let time
    /// out. Each endpoint has its own circuit breaker. A session belongs to
    /// the endpoint that opened it; when that endpoint is gone the client
    /// is told the session ended (404) and starts a new one elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 2048)))]
    #[x_kube(validation = Rule::new("self.all(u, u.matches('^https?://[^ ]+$'))").message(URL_MESSAGE))]
    pub failover_urls: Vec<String>,
    /// Let clients of either MCP revision family use a server that speaks
    /// only one (default false: `/mcp/{path}` passes messages through as
    /// they are). 2026-07-28 clients then reach a server that speaks only
    /// 2025-11-25 or earlier through a session the gateway holds for each
    /// caller, and 2025-11-25 clients reach a server that speaks only
    /// 2026-07-28 through an `initialize` the gateway answers from the
    /// server's `server/discover`. The aggregated endpoint `/mcp` always
    /// does this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translate_revisions: bool,
    /// How the server at `url` (and `failoverUrls`) speaks MCP:
    /// `StreamableHTTP` (the default) or `SSE`, the legacy HTTP+SSE
    /// transport of MCP 2024-11-05 (a GET stream whose `endpoint` event
    /// names where messages are POSTed). The gateway bridges an `SSE`
    /// server to Streamable HTTP in process, so every gateway feature
    /// applies to it unchanged; each client session is one SSE connection.
    /// Only with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<ServerTransport>,
    /// A server the controller runs in this namespace: a Deployment and a
    /// Service named `mcp-<name>`, owned by this MCPServer, which the gateway
    /// reaches at `http://mcp-<name>.<namespace>.svc:<port><path>`. Exactly
    /// one of `url` and `run` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<McpRun>,
    /// What the gateway presents to the backend. The client's own token is
    /// never passed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<McpCredentials>,
    /// Longest a backend may take to answer one message (default 60s); a
    /// stream may last as long as it keeps sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub timeout: Option<String>,
    /// Which of the backend's tools are served, and which count as writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolPolicy>,
    /// Who may use which tools. Empty: every caller the gateway
    /// authenticates may use every served tool. Otherwise a caller gets the
    /// union of the grants whose subject matches; a tool it may not call is
    /// also absent from every list it sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub access: Vec<AccessGrant>,
    /// Token-bucket limits on messages, each per caller (every principal
    /// its own bucket) or for the whole server, held across replicas when
    /// the AIGateway has Redis. A message over a limit gets HTTP 429 with
    /// `Retry-After`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rate_limits: Vec<McpRateLimit>,
    /// How this server joins the gateway's aggregated endpoint `/mcp`
    /// (default: it does, its names prefixed with `{path}__`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<McpAggregation>,
    /// Review of the tool catalog. The controller lists the server's tools
    /// and reports their hash in `status.catalogHash`; a changed catalog
    /// sets the `CatalogChanged` condition and a Warning Event until
    /// `approvedHash` names the new hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogPolicy>,
    /// Agent-behaviour anomaly detection: each principal's tool calls on
    /// this server are learnt (rate, tools used, share of writes); a burst,
    /// a first call to a tool it never used, or a shift toward write tools
    /// raises one alert per incident (a Warning Event here, the
    /// `tollgate_mcp_agent_alerts_total` metric, the webhook) and can
    /// throttle or suspend the agent until an operator clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<AgentAnomalies>,
    /// What the gateway removes from `tools/call` arguments before the call
    /// leaves for the backend (audit records show the redacted arguments'
    /// shape only, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact: Option<ArgumentRedaction>,
    /// Keep results of read-only tool calls and resource reads for a while,
    /// so a repeated call does not reach the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ResultCachePolicy>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultCachePolicy {
    /// How long a result is kept (default 60s); never longer than the
    /// backend's own `ttlMs` on a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub ttl: Option<String>,
    /// Globs of the read tools whose results are kept (default: every tool
    /// that counts as a read; writes never are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 128)))]
    pub tools: Vec<String>,
    /// Serve one caller's result to another (default false: each caller has
    /// its own entries). A result the backend marks `cacheScope: private`
    /// is never shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgumentRedaction {
    /// Dotted paths into the arguments (`auth.token`, `rows.*.ssn`; `*`
    /// matches any key or index); each matching value is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    pub paths: Vec<String>,
    /// Also replace values in any string argument that look like personal
    /// data or secrets: email addresses, payment cards (Luhn-checked), US
    /// social security numbers, provider API keys, JWTs, private keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentAnomalies {
    /// Calls are counted per interval (default 1m); baselines are
    /// exponentially weighted averages of past intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub interval: Option<String>,
    /// Intervals of history before anything is judged (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("warmupIntervals must be between 1 and 1000"))]
    pub warmup_intervals: Option<u32>,
    /// Calls in one interval over this many times the agent's baseline are
    /// a burst (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 2 && self <= 1000").message("burstFactor must be between 2 and 1000"))]
    pub burst_factor: Option<u32>,
    /// A write share this many percentage points over the agent's baseline
    /// share, in an interval with at least 5 calls, is a shift toward
    /// writes (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("writeShiftPercent must be between 1 and 100"))]
    pub write_shift_percent: Option<u32>,
    /// Whether a first call to a tool the agent never used is an anomaly
    /// (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_tools: Option<bool>,
    /// Quiet time after an alert for the same agent (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::DURATION_RULE).message("cooldown must be a duration such as 15m"))]
    pub cooldown: Option<String>,
    /// `Alert` (default) only reports. `Throttle` also holds the agent to
    /// its baseline rate, and `Suspend` refuses its tool calls, until the
    /// annotation `tollgate.dev/agents-cleared-at` on this MCPServer names
    /// a time after the alert.
    #[serde(default)]
    pub action: AnomalyAction,
    /// Where alerts are POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::budget::AlertWebhook>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum AnomalyAction {
    #[default]
    Alert,
    Throttle,
    Suspend,
}

/// Annotation on an MCPServer: agents throttled or suspended for an
/// anomaly at or before this RFC 3339 instant are released.
pub const AGENTS_CLEARED_AT_ANNOTATION: &str = "tollgate.dev/agents-cleared-at";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogPolicy {
    /// Serve the server's tools only while their catalog hash equals
    /// `approvedHash`: gateways refuse lists and calls of a changed (or
    /// never approved) catalog until an operator approves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<bool>,
    /// The reviewed catalog, as `status.catalogHash` showed it
    /// (`sha256:<64 hex digits>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^sha256:[0-9a-f]{64}$')").message("approvedHash must be sha256: followed by 64 lowercase hex digits, as status.catalogHash shows it"))]
    pub approved_hash: Option<String>,
}

/// A server's part in `/mcp`, where the gateway merges every aggregated
/// server's tools, prompts and resources into one MCP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpAggregation {
    /// Whether `/mcp` includes this server (default true). It stays at
    /// `/mcp/{path}` either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// What tool and prompt names are prefixed with, followed by `__`
    /// (default: the path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 48))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]{0,46}[A-Za-z0-9])?$')").message(PREFIX_MESSAGE))]
    pub prefix: Option<String>,
    /// `Always` (default): every name is prefixed. `OnConflict`: only names
    /// another aggregated server also has. `Never`: names as the backend
    /// gives them; one that collides with an earlier server's (by path) is
    /// left out and logged.
    #[serde(default)]
    pub prefix_mode: PrefixMode,
    /// What `/mcp`'s lists do when this server cannot list: `Omit`
    /// (default) leaves its entries out, names it in the result's
    /// `_meta["dev.tollgate/unavailable"]`, logs and counts it; `Fail`
    /// answers the whole list with an error.
    #[serde(default)]
    pub on_list_failure: ListFailure,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum PrefixMode {
    #[default]
    Always,
    OnConflict,
    Never,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ListFailure {
    #[default]
    Omit,
    Fail,
}

/// What both the CEL rule and compile say of a bad prefix.
pub const PREFIX_MESSAGE: &str =
    "prefix must be 1-48 letters, digits, '.' or '-', starting and ending with a letter or digit";

/// How the controller runs an MCP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.transport) || self.transport != 'Stdio' || (has(self.command) && size(self.command) > 0)").message(STDIO_COMMAND_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.transport) || self.transport != 'Stdio' || !has(self.replicas) || self.replicas <= 1").message(STDIO_REPLICAS_MESSAGE))]
pub struct McpRun {
    /// The container image.
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("image must not be empty"))]
    pub image: String,
    /// `Http` (default): the container serves MCP Streamable HTTP itself on
    /// `port` and `path`. `Stdio`: it is a stdio MCP server (JSON-RPC lines
    /// on stdin and stdout); the controller wraps `command` and `args` in
    /// `tollgate mcp-bridge`, copied into the pod by an init container, which
    /// serves Streamable HTTP and starts one server process per MCP session.
    #[serde(default)]
    pub transport: McpTransport,
    /// The command to run. With `Http`, the container's entrypoint (default:
    /// the image's); with `Stdio`, required: the server's executable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,
    /// Arguments to `command` (with `Http` and no `command`: to the image's
    /// entrypoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,
    /// Environment variables of the server, each a value or a Secret key
    /// (read by the kubelet, never by the controller or the gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub env: Vec<McpEnvVar>,
    /// Container resources (default: requests cpu 50m, memory 64Mi; no limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// The port the server (or the bridge) listens on (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: Option<u32>,
    /// The HTTP path of the MCP endpoint (default `/mcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^/[A-Za-z0-9._~!$&()*+,;=:@%/-]*$')").message(RUN_PATH_MESSAGE))]
    pub path: Option<String>,
    /// Pods to run (default 1). A `Stdio` server runs at most one: its
    /// sessions live in that pod's processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be between 0 and 100"))]
    pub replicas: Option<u32>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum McpTransport {
    /// The container serves MCP Streamable HTTP.
    #[default]
    Http,
    /// The container is a stdio MCP server, wrapped by `tollgate mcp-bridge`.
    Stdio,
}

/// One environment variable: `value`, or the key of a Secret in the
/// MCPServer's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretKeyRef)").message(ENV_VALUE_MESSAGE))]
pub struct McpEnvVar {
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z][-._a-zA-Z0-9]*$')").message(ENV_NAME_MESSAGE))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// The transport of an external MCP server (`spec.transport`).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ServerTransport {
    /// MCP Streamable HTTP (2025-03-26 and later).
    #[default]
    #[serde(rename = "StreamableHTTP")]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (MCP 2024-11-05).
    #[serde(rename = "SSE")]
    Sse,
}

impl ServerTransport {
    pub fn is_streamable_http(&self) -> bool {
        *self == ServerTransport::StreamableHttp
    }
}

/// Defaults of `run`.
pub const DEFAULT_RUN_PORT: u16 = 8080;
pub const DEFAULT_RUN_PATH: &str = "/mcp";
pub const DEFAULT_RUN_REPLICAS: u32 = 1;

/// What both the CEL rules and compile say of bad input.
pub const URL_OR_RUN_MESSAGE: &str = "exactly one of url and run must be set";
pub const FAILOVER_MESSAGE: &str =
    "failoverUrls needs url: a server the controller runs has one Service";
pub const TRANSPORT_MESSAGE: &str = "transport SSE needs url: a server the controller runs speaks Streamable HTTP (or stdio, bridged)";
pub const STDIO_COMMAND_MESSAGE: &str = "a Stdio server needs command";
pub const STDIO_REPLICAS_MESSAGE: &str =
    "a Stdio server runs at most one replica: its sessions live in that pod's processes";
pub const RUN_PATH_MESSAGE: &str = "path must start with '/' and hold only URL path characters";
pub const ENV_VALUE_MESSAGE: &str = "exactly one of value and secretKeyRef must be set";
pub const ENV_NAME_MESSAGE: &str =
    "name must consist of letters, digits, '_', '-' or '.', and not start with a digit";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpRateLimit {
    /// Tool globs whose `tools/call`s it counts; empty: every message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 128)))]
    pub tools: Vec<String>,
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("requestsPerSecond must be between 1 and 1000000"))]
    pub requests_per_second: u32,
    /// Messages that may arrive at once above the steady rate (default:
    /// one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("burst must be between 1 and 1000000"))]
    pub burst: Option<u32>,
    /// `Caller` (default): a bucket per principal. `Server`: one for all.
    #[serde(default)]
    pub per: RateLimitScope,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RateLimitScope {
    #[default]
    Caller,
    Server,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessGrant {
    /// Whom it grants to; every field given must match. Empty: anyone
    /// authenticated.
    #[serde(default)]
    pub subject: AccessSubject,
    /// Tool globs it covers (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 128)))]
    pub tools: Vec<String>,
    /// `Read`: read tools only. `Write`: read and write tools.
    pub scope: ToolAccess,
}

/// Whom an access rule covers.
pub use crate::common::PrincipalSelector as AccessSubject;

/// What both the CEL rule and compile say of a bad path.
pub const PATH_MESSAGE: &str =
    "path must be a DNS label: lowercase letters, digits and '-', at most 63 characters";
/// What both the CEL rule and compile say of a bad URL.
pub const URL_MESSAGE: &str = "url must be an http:// or https:// URL";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpCredentials {
    /// The Secret key holding the credential.
    pub secret_ref: SecretKeyRef,
    /// The request header it goes in (default `Authorization`, as
    /// `Bearer <value>`); any other header carries the value as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&*+.^_`|~-]{1,256}$')").message("must be a valid HTTP header name"))]
    pub header: Option<String>,
}

/// Tool filters and classification. Annotations a backend puts on its tools
/// are untrusted, so `access` here overrides them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolPolicy {
    /// Globs (`*` matches any run of characters) of the tools served; empty:
    /// all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 128)))]
    pub allow: Vec<String>,
    /// Globs of tools never served, even when allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 128)))]
    pub deny: Vec<String>,
    /// Read or write per tool glob, first match wins. A tool matching none
    /// is a read when the backend marks it `readOnlyHint`, else a write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub access: Vec<ToolAccessRule>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolAccessRule {
    /// Tool name glob.
    #[schemars(length(max = 128))]
    pub tools: String,
    pub access: ToolAccess,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum ToolAccess {
    Read,
    Write,
}

/// Observed state of an MCPServer.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    #[serde(flatten)]
    pub base: ResourceStatus,
    /// Where the gateway serves it, `/mcp/{path}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The backend endpoint the gateway calls: `spec.url`, or the Service of
    /// a server the controller runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What the controller's last probe of the server found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// The protocol revision the server agreed to with the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<i64>,
    /// Hash of the tool catalog (names, descriptions, schemas,
    /// annotations); approve a reviewed catalog by copying it to
    /// `spec.catalog.approvedHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_hash: Option<String>,
}
