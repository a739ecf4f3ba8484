//! `AIRoute.spec.prompts`: prompt templates with versions and variables,
//! decorators, and context fetched from URLs, applied to a route's requests
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
    /// Text fetched from URLs and injected as messages (after the
    /// template's, before the client's). Fetched copies are kept for
    /// `cacheFor`, so a request does not wait for a fetch unless the copy is
    /// stale. The text is used as it is, never rendered as a template.
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

/// Text fetched from a URL and injected as a message.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptContextSource {
    /// Where the text is fetched (GET; a 2xx answer with a UTF-8 body).
    /// Loopback addresses are refused unless `allowLoopback`; link-local
    /// and cloud metadata addresses always are.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(CONTEXT_URL_RULE).message(CONTEXT_URL_MESSAGE))]
    pub url: String,
    /// Largest body accepted, in bytes (default 65536, at most 1 MiB). A
    /// larger body is a failed fetch, never cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1048576").message("maxBytes must be between 1 and 1048576"))]
    pub max_bytes: Option<u64>,
    /// Deadline of one fetch (default 2s).
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
    /// A source that cannot be fetched fails the request with 502
    /// `prompt_context_unavailable` (default `true`); when `false` it is
    /// left out and counted in
    /// `tollgate_prompt_context_degraded_total{outcome="unavailable"}`.
    #[serde(default = "default_required")]
    pub required: bool,
    /// Allow a loopback address (a sidecar). Off by default: a route's
    /// author could otherwise read the gateway's own admin port into a
    /// prompt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_loopback: bool,
}

fn default_required() -> bool {
    true
}
