//! `AIRoute.spec.prompts`: prompt templates with versions and variables,
//! decorators, and context from URLs, ConfigMaps and MCP resources, applied to a route's requests
//! before they go out (and before the guard sees them).

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The route's prompt management. Templates are rendered with
/// [MiniJinja](https://docs.rs/minijinja) (Jinja2 syntax) in strict mode: a
/// variable a template uses without a default must be given, or the request
/// gets 400 `prompt_variable_missing`. Every template has `principal`
/// (`user`, `team`, `app`, `labels`; absent values are empty strings) besides
/// its variables. The messages of a request then read: prepended
/// decorators, the chosen template's messages, the context sources, the
/// client's own messages, appended decorators. A route with prompts runs
/// through the canonical form (parsed and re-encoded) instead of the byte
/// passthrough.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.defaultVersion) || (has(self.templates) && self.templates.exists(t, t.version == self.defaultVersion))").message(DEFAULT_VERSION_MESSAGE))]
pub struct RoutePrompts {
    /// Versions of the route's prompt. A request picks one with
    /// `"model": "ALIAS@VERSION"` or the header `x-tollgate-prompt-version`;
    /// a request that names none gets `defaultVersion`, or no template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.version == t.version))").message(VERSIONS_UNIQUE_MESSAGE))]
    pub templates: Vec<PromptTemplate>,
    /// The version applied when a request names none. Unset: such requests
    /// get no template (decorators and context still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub default_version: Option<String>,
    /// Messages added to every request of the route, after the template:
    /// `Prepend` ones first (before the template's messages), `Append` ones
    /// last (after the client's). They are templates too, with the request's
    /// variables and `principal`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub decorators: Vec<PromptDecorator>,
    /// Text from URLs, ConfigMaps or MCP resources, injected as messages
    /// (after the template's, before the client's). Fetched copies are
    /// kept for `cacheFor`, so a request does not wait for a fetch unless
    /// the copy is stale. The text is used as it is, never rendered as a
    /// template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub context: Vec<PromptContextSource>,
}

/// What both the CEL rule and compile say of a default version that is not listed.
pub const DEFAULT_VERSION_MESSAGE: &str = "defaultVersion must name one of templates";

/// What both the CEL rule and compile say of a version listed twice.
pub const VERSIONS_UNIQUE_MESSAGE: &str = "template versions must be unique";

/// CEL rule of a version name.
pub const VERSION_RULE: &str = "self.matches('^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$')";

/// What both the CEL rule and compile say of a malformed version name.
pub const VERSION_MESSAGE: &str =
    "a version is 1-63 letters, digits, '.', '-' or '_', starting with a letter or digit";

/// CEL rule of variable names: identifiers, and not `principal`.
pub const VARIABLE_NAMES_RULE: &str =
    "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]{0,62}$') && k != 'principal')";

/// What both the CEL rule and compile say of a bad variable name.
pub const VARIABLE_NAME_MESSAGE: &str = "variable names are identifiers (letters, digits, '_', not starting with a digit, at most 63 characters) other than principal";

/// CEL rule of a context URL: http(s) with a host, no user info or fragment.
pub const CONTEXT_URL_RULE: &str =
    "self.size() <= 2048 && self.matches('^https?://[^/?#@]+([/?][^#]*)?$')";

/// What both the CEL rule and compile say of a bad context URL.
pub const CONTEXT_URL_MESSAGE: &str = "url must be an http:// or https:// URL with a host and no user info or fragment, such as https://docs.example.com/policy.txt";

/// Largest `maxBytes` of a context source.
pub const MAX_CONTEXT_BYTES: u64 = 1024 * 1024;

/// Longest template text (a message's or a decorator's content), in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 32 * 1024;

/// One version of a route's prompt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptTemplate {
    /// The version's name, as requests give it (`support-bot@v3`).
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new(VERSION_RULE).message(VERSION_MESSAGE))]
    pub version: String,
    /// The messages, rendered and put before the client's messages.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("a template needs at least one message"))]
    pub messages: Vec<PromptMessage>,
    /// Default values of variables; a request's own variables override them.
    /// Values are strings here (a request may also send numbers and
    /// booleans).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new(VARIABLE_NAMES_RULE).message(VARIABLE_NAME_MESSAGE))]
    pub variables: BTreeMap<String, String>,
}

/// A message template.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptMessage {
    pub role: PromptRole,
    /// MiniJinja template text.
    #[schemars(length(max = 32768))]
    pub content: String,
}

/// The role of an added message.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PromptRole {
    #[default]
    System,
    User,
    Assistant,
}

impl PromptRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PromptRole::System => "system",
            PromptRole::User => "user",
            PromptRole::Assistant => "assistant",
        }
    }
}

/// Where a decorator goes.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoratorPosition {
    /// Before every other message.
    Prepend,
    /// After the client's messages.
    Append,
}

/// A message added to every request of the route.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptDecorator {
    pub position: DecoratorPosition,
    pub role: PromptRole,
    /// MiniJinja template text.
    #[schemars(length(max = 32768))]
    pub content: String,
}

/// Text injected as a message: fetched from a URL, read from a ConfigMap,
/// or read from an MCP server's resource. Exactly one of `url`,
/// `configMapKeyRef` and `mcpResource`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(CONTEXT_ONE_SOURCE_RULE).message(CONTEXT_ONE_SOURCE_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.allowLoopback) || !self.allowLoopback || has(self.url)").message(CONTEXT_LOOPBACK_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.configMapKeyRef) || (!has(self.timeout) && !has(self.cacheFor))").message(CONTEXT_CONFIG_MAP_TIMING_MESSAGE))]
pub struct PromptContextSource {
    /// Where the text is fetched (GET; a 2xx answer with a UTF-8 body).
    /// Loopback addresses are refused unless `allowLoopback`; link-local
    /// and cloud metadata addresses always are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(CONTEXT_URL_RULE).message(CONTEXT_URL_MESSAGE))]
    pub url: Option<String>,
    /// A key of a ConfigMap in the route's namespace. Its value is read
    /// when the configuration is compiled and travels with it: a change to
    /// the ConfigMap reaches the gateways like any configuration change
    /// (no fetch on the request path, so no `timeout` or `cacheFor`). A
    /// missing ConfigMap or key keeps a required source's route from being
    /// served; an optional one is left out, with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
    /// A resource of an MCPServer the route's gateway serves, read with
    /// `resources/read` through the gateway's own MCP client (the
    /// MCPServer's credential, failover and circuit breaker). Text contents
    /// are joined with blank lines; a resource with binary contents only
    /// is a failed read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_resource: Option<McpResourceRef>,
    /// Largest text accepted, in bytes (default 65536, at most 1 MiB). A
    /// larger text is a failed read, never cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1048576").message("maxBytes must be between 1 and 1048576"))]
    pub max_bytes: Option<u64>,
    /// Deadline of one fetch or read (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub timeout: Option<String>,
    /// How long a fetched copy is used before it is fetched again (default
    /// 60s). When that fetch fails, the last copy keeps serving (the failure
    /// is counted); a source never fetched successfully is not tried again
    /// for a few seconds after a failure, so an unreachable source does not
    /// hold every request up for its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub cache_for: Option<String>,
    /// The role of the injected message (default `system`).
    #[serde(default)]
    pub role: PromptRole,
    /// A source that cannot be read fails the request with 502
    /// `prompt_context_unavailable` (default `true`); when `false` it is
    /// left out and counted in
    /// `tollgate_prompt_context_degraded_total{outcome="unavailable"}`.
    #[serde(default = "default_required")]
    pub required: bool,
    /// Allow a loopback address (a sidecar) for `url`. Off by default: a
    /// route's author could otherwise read the gateway's own admin port
    /// into a prompt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_loopback: bool,
}

/// CEL rule: a context source names exactly one origin.
pub const CONTEXT_ONE_SOURCE_RULE: &str = "(has(self.url) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0) + (has(self.mcpResource) ? 1 : 0) == 1";

/// What both the CEL rule and compile say of a source naming none or several origins.
pub const CONTEXT_ONE_SOURCE_MESSAGE: &str =
    "a context source has exactly one of url, configMapKeyRef and mcpResource";

/// What both the CEL rule and compile say of `allowLoopback` without a URL.
pub const CONTEXT_LOOPBACK_MESSAGE: &str = "allowLoopback applies to url sources only";

/// What both the CEL rule and compile say of timing on a ConfigMap source.
pub const CONTEXT_CONFIG_MAP_TIMING_MESSAGE: &str =
    "a configMapKeyRef source is read with the configuration: timeout and cacheFor do not apply";

/// A key of a ConfigMap in the route's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("name must be 1-253 characters"))]
    pub name: String,
    /// Key within its `data`.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("key must be 1-253 characters"))]
    pub key: String,
}

/// A resource of an MCPServer, by URI.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpResourceRef {
    /// Name of an MCPServer in the route's namespace, served by the
    /// route's gateway.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("server must be 1-253 characters"))]
    pub server: String,
    /// The resource's URI, as the server lists it (`file:///policy.md`,
    /// `docs://handbook/refunds`).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(MCP_RESOURCE_URI_RULE).message(MCP_RESOURCE_URI_MESSAGE))]
    pub uri: String,
}

/// CEL rule of a resource URI: a scheme, then no spaces (compile also
/// refuses other whitespace).
pub const MCP_RESOURCE_URI_RULE: &str = "self.matches('^[A-Za-z][A-Za-z0-9+.-]*:[^ ]+$')";

/// What both the CEL rule and compile say of a malformed resource URI.
pub const MCP_RESOURCE_URI_MESSAGE: &str =
    "uri must be an absolute URI (a scheme such as file: or docs: and no whitespace)";

fn default_required() -> bool {
    true
}
