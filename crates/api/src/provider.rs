//! `ModelProvider`: one upstream LLM API and the models it sells.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ResourceStatus, SecretKeyRef};

/// An upstream LLM provider: where it is, how to authenticate, what its models cost.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ModelProvider",
    plural = "modelproviders",
    shortname = "mp",
    category = "tollgate",
    namespaced,
    status = "ModelProviderStatus",
    doc = "A ModelProvider is one upstream LLM API (OpenAI, Anthropic, Azure OpenAI, Bedrock, Gemini, an OpenAI-compatible server such as vLLM or Ollama, or the built-in mock): its endpoint, the Secret holding its credentials, the models it serves and their prices, timeouts and concurrency. AIRoutes send traffic to it.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"ResolvedRefs","type":"string","jsonPath":".status.conditions[?(@.type==\"ResolvedRefs\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Circuit","type":"string","jsonPath":".status.circuit"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.status==\"False\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type in ['OpenAI', 'Anthropic', 'Gemini', 'Bedrock'] || has(self.endpoint)").message("endpoint is required unless type is OpenAI, Anthropic, Gemini or Bedrock"))]
#[x_kube(validation = Rule::new("!(self.type in ['OpenAI', 'Anthropic', 'Gemini', 'AzureOpenAI']) || (has(self.credentials) && has(self.credentials.secretRef))").message("credentials.secretRef is required for types OpenAI, Anthropic, Gemini and AzureOpenAI"))]
#[x_kube(validation = Rule::new("self.type != 'Bedrock' || (has(self.credentials) && has(self.credentials.aws))").message("credentials.aws is required for type Bedrock"))]
#[x_kube(validation = Rule::new("self.type == 'Bedrock' || !has(self.credentials) || !has(self.credentials.aws)").message("credentials.aws is only valid for type Bedrock"))]
#[x_kube(validation = Rule::new("self.type != 'Bedrock' || !has(self.credentials) || !has(self.credentials.secretRef)").message("credentials.secretRef is not used by type Bedrock: use credentials.aws"))]
#[x_kube(validation = Rule::new("self.type != 'Bedrock' || has(self.bedrock)").message("bedrock.region is required for type Bedrock"))]
#[x_kube(validation = Rule::new("self.type == 'Bedrock' || !has(self.bedrock)").message("bedrock is only valid for type Bedrock"))]
#[x_kube(validation = Rule::new("self.type == 'AzureOpenAI' || !has(self.azure)").message("azure is only valid for type AzureOpenAI"))]
#[x_kube(validation = Rule::new("self.type == 'Anthropic' || !has(self.anthropic)").message("anthropic is only valid for type Anthropic"))]
#[x_kube(validation = Rule::new("!has(self.fairness) || has(self.maxConcurrentRequests)").message("fairness needs maxConcurrentRequests"))]
pub struct ModelProviderSpec {
    /// Wire protocol and defaults: `OpenAI` (api.openai.com), `OpenAICompatible`
    /// (any server speaking the OpenAI API: vLLM, Ollama, ...), `AzureOpenAI`
    /// (an Azure OpenAI resource; backend `model` is the deployment name),
    /// `Anthropic` (api.anthropic.com), `Bedrock` (AWS Bedrock Runtime, SigV4),
    /// `Gemini` (generativelanguage.googleapis.com), `Mock` (`tollgate mock`).
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Where this provider processes requests, for data residency (for
    /// example `eu-west-1`). Routes, gateways and principals that restrict
    /// regions never send requests to a provider outside them, nor to one
    /// without a region. Default: Bedrock's AWS region; none for the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new(crate::common::REGION_RULE).message(crate::common::REGION_MESSAGE))]
    pub data_region: Option<String>,
    /// Outlier ejection on each gateway replica: a provider that keeps
    /// failing is skipped (its requests fall back at once) until a probe
    /// succeeds. On by default; these override the thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Base URL. Defaults: OpenAI `https://api.openai.com/v1`, Anthropic
    /// `https://api.anthropic.com/v1`, Gemini
    /// `https://generativelanguage.googleapis.com/v1beta`, Bedrock
    /// `https://bedrock-runtime.<region>.amazonaws.com`. Required for
    /// AzureOpenAI (the resource URL, e.g. `https://myres.openai.azure.com`),
    /// OpenAICompatible and Mock (including the API version path, e.g. `http://vllm:8000/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE))]
    pub endpoint: Option<String>,
    /// How the gateway authenticates upstream: `secretRef` (an API key) for
    /// every type but Bedrock, `aws` for Bedrock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ProviderCredentials>,
    /// Bedrock settings; required for, and only valid with, type Bedrock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bedrock: Option<BedrockSettings>,
    /// Azure OpenAI settings; only valid with type AzureOpenAI (defaults apply when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
    /// Anthropic settings; only valid with type Anthropic (defaults apply when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<AnthropicSettings>,
    /// Models this provider serves and their prices. When non-empty, routes may
    /// only use models listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // Unique names: a CEL rule comparing every pair of 512 entries exceeds
    // the apiserver's cost budget; a list map keyed by name is free (and lets
    // server-side apply merge entries by name).
    #[schemars(length(max = 512), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub models: Vec<ModelCatalogEntry>,
    /// Connection and request timeouts for this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<ProviderTimeouts>,
    /// Requests in flight to this provider at most; further requests fall back
    /// to the next backend or get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("maxConcurrentRequests must be between 1 and 1000000"))]
    pub max_concurrent_requests: Option<u32>,
    /// How `maxConcurrentRequests` is shared between callers (API-key
    /// principals), so one key cannot take every slot. Defaults apply when
    /// omitted: a caller under its fair share waits up to 2s for the next
    /// free slot instead of getting 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<ProviderFairness>,
    /// Addresses the gateway may connect to for this provider beyond
    /// ordinary ones (the SSRF guard). By default loopback and link-local
    /// addresses (cloud metadata at 169.254.169.254 among them) are refused,
    /// whether written in `endpoint` or resolved from its host name at
    /// connect time; type `Mock` allows both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ProviderNetwork>,
}

/// Observed state of a provider: the conditions every kind has, and its
/// circuit breaker as the gateway replicas that serve it report it.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderStatus {
    #[serde(flatten)]
    pub base: ResourceStatus,
    /// The circuit breaker on the gateway replicas serving the provider:
    /// `Closed`, `Open 2/3` (open on 2 of 3 replicas), `HalfOpen 1/3` (a
    /// probe may try it), or both (`Open 1/3, HalfOpen 1/3`). Absent while
    /// no gateway serves the provider. The `CircuitClosed` condition says more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<String>,
}

/// Egress exceptions for one provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderNetwork {
    /// Allow 127.0.0.0/8, `::1` and `localhost` (a model server on the
    /// gateway's own host, e.g. Ollama beside a standalone gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_loopback: Option<bool>,
    /// Allow 169.254.0.0/16 and fe80::/10, where cloud metadata services live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_link_local: Option<bool>,
}

/// CEL rule of `endpoint`: an http(s) URL with a host, without query or
/// fragment. Compile checks the same with a URL parser.
pub const ENDPOINT_RULE: &str =
    "self.size() <= 2048 && self.matches('^https?://[^/?#@]+(/[^?#]*)?$')";

/// What both the CEL rule and compile say of a bad endpoint.
pub const ENDPOINT_MESSAGE: &str = "endpoint must be an http:// or https:// URL with a host and no query or fragment, such as https://api.example.com/v1";

/// Fair sharing of a provider's concurrency cap. A caller alone may always
/// use every slot; when the provider is full, a caller holding less than its
/// fair share (the cap divided by the callers holding or waiting for slots)
/// waits, and each freed slot goes to the waiting caller with the fewest in
/// flight. Callers at or above their share get 429 at once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderFairness {
    /// Largest fraction of the slots one caller may hold while another caller
    /// holds or waits for one (default 1: no cap beyond fair queueing). Set
    /// it below 1 to keep headroom when streams outlast `maxQueueWait`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("maxShare must be greater than 0 and at most 1"))]
    pub max_share: Option<f64>,
    /// How long a caller under its fair share waits for a slot of a full
    /// provider before 429 (default `2s`; `0s`: never wait). Only the
    /// route's last backend waits; earlier ones fall back at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("must be a duration such as 0s, 500ms or 2s"))]
    pub max_queue_wait: Option<String>,
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum ProviderType {
    OpenAI,
    OpenAICompatible,
    AzureOpenAI,
    Anthropic,
    Bedrock,
    Gemini,
    Mock,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::OpenAI => "OpenAI",
            ProviderType::OpenAICompatible => "OpenAICompatible",
            ProviderType::AzureOpenAI => "AzureOpenAI",
            ProviderType::Anthropic => "Anthropic",
            ProviderType::Bedrock => "Bedrock",
            ProviderType::Gemini => "Gemini",
            ProviderType::Mock => "Mock",
        }
    }
}

/// Upstream credentials, read from Secrets in the provider's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.secretRef) || has(self.aws)").message("credentials need secretRef or aws"))]
pub struct ProviderCredentials {
    /// The Secret key holding the API key. Sent as `Authorization: Bearer`
    /// (OpenAI, OpenAICompatible, Mock; AzureOpenAI with `auth: EntraId`, where
    /// it holds the token), `api-key` (AzureOpenAI), `x-api-key` (Anthropic)
    /// or `x-goog-api-key` (Gemini). Not used by Bedrock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Bedrock: AWS access keys for SigV4 signing, all from one Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsCredentialsRef>,
}

/// Where a Bedrock provider's AWS credentials are: keys of one Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentialsRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("secretName must be 1-253 characters"))]
    pub secret_name: String,
    /// Key holding the access key ID (default `accessKeyId`).
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("key must be 1-253 characters"))]
    pub access_key_id_key: String,
    /// Key holding the secret access key (default `secretAccessKey`).
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("key must be 1-253 characters"))]
    pub secret_access_key_key: String,
    /// Key holding a session token, for temporary credentials. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("key must be 1-253 characters"))]
    pub session_token_key: Option<String>,
}

fn default_access_key_id_key() -> String {
    "accessKeyId".into()
}

fn default_secret_access_key_key() -> String {
    "secretAccessKey".into()
}

/// Bedrock: where requests go and what they are signed for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BedrockSettings {
    /// AWS region, e.g. `us-east-1`: picks the default endpoint and the SigV4 scope.
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$')").message("region must be an AWS region such as us-east-1"))]
    pub region: String,
}

/// Azure OpenAI: API version and how the key is sent. Backend `model` names
/// the Azure deployment, not the underlying model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSettings {
    /// The `api-version` query parameter (default `2024-10-21`). Quote it in YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$')").message("apiVersion must look like 2024-10-21 or 2025-01-01-preview"))]
    pub api_version: Option<String>,
    /// `ApiKey` (default): the Secret holds the resource key, sent as `api-key`.
    /// `EntraId`: it holds a Microsoft Entra ID token, sent as `Authorization: Bearer`.
    #[serde(default)]
    pub auth: AzureAuthMode,
}

/// Default Azure OpenAI `api-version`: the latest GA version. Applied by
/// compile, not the schema: a bare date as a schema default is a YAML timestamp.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// How an Azure OpenAI credential is sent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AzureAuthMode {
    #[default]
    ApiKey,
    EntraId,
}

/// Anthropic: the API version header.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnthropicSettings {
    /// The `anthropic-version` header (default `2023-06-01`). Quote it in YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}$')").message("version must look like 2023-06-01"))]
    pub version: Option<String>,
}

/// Default `anthropic-version`: the current Messages API version. Applied by
/// compile, like [`DEFAULT_AZURE_API_VERSION`].
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelCatalogEntry {
    /// Upstream model name, as the provider spells it.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 256").message("model name must be 1-256 characters"))]
    pub name: String,
    /// What the model does, which decides the endpoints a route to it serves
    /// by default: `Chat` (chat completions, responses, messages) or
    /// `Embedding`. When omitted, a name containing `embed` is taken for an
    /// embedding model and any other name for a chat model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ModelKind>,
    /// Prices in USD per one million tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<ModelPricing>,
    /// The most tokens (prompt plus output) the model takes. A route with
    /// `contextFallback` sends a request that would not fit to a larger
    /// model instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("contextWindow must be at least 1"))]
    pub context_window: Option<u64>,
}

/// What a catalog model does.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Text generation: chat completions, responses, messages.
    Chat,
    /// Vectors from text: embeddings.
    Embedding,
}

impl ModelKind {
    /// The kind a catalog entry without `kind` is taken for, from its name.
    pub fn guess(model: &str) -> Self {
        if model.to_ascii_lowercase().contains("embed") {
            ModelKind::Embedding
        } else {
            ModelKind::Chat
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelPricing {
    /// USD per 1M prompt tokens.
    #[x_kube(validation = Rule::new("self >= 0.0").message("prices cannot be negative"))]
    pub input_per_million: f64,
    /// USD per 1M completion tokens.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0.0").message("prices cannot be negative"))]
    pub output_per_million: f64,
    /// USD per 1M prompt tokens served from the provider's prompt cache;
    /// defaults to the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0").message("prices cannot be negative"))]
    pub cached_input_per_million: Option<f64>,
}

/// When the gateway stops trying a failing provider, and for how long.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Failures in a row (no connection, timeout, 5xx, a stream that ends
    /// before any output) that open the breaker (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("consecutiveFailures must be between 1 and 1000"))]
    pub consecutive_failures: Option<u32>,
    /// Share of failures among the last 32 attempts that opens it too
    /// (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("errorRatePercent must be between 1 and 100"))]
    pub error_rate_percent: Option<u32>,
    /// Attempts seen before the error rate counts (default 20, at most 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 32").message("minRequests must be between 1 and 32"))]
    pub min_requests: Option<u32>,
    /// How long an open breaker skips the provider before one probe
    /// request may try it (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub open_for: Option<String>,
    /// `false` turns the breaker off: every request tries the provider
    /// however often it fails (a spent quota is still skipped). Default
    /// true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderTimeouts {
    /// TCP + TLS connect timeout (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub connect: Option<String>,
    /// Time allowed for the whole upstream request (default 300s). Routes may set a shorter one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::POSITIVE_DURATION_RULE).message(crate::duration::POSITIVE_DURATION_MESSAGE))]
    pub request: Option<String>,
}
