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
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type == 'OpenAI' || has(self.endpoint)").message("endpoint is required unless type is OpenAI"))]
#[x_kube(validation = Rule::new("self.type != 'OpenAI' || has(self.credentials)").message("credentials are required for type OpenAI"))]
pub struct ModelProviderSpec {
    /// Wire protocol and defaults: `OpenAI` (api.openai.com), `OpenAICompatible`
    /// (any server speaking the OpenAI API: vLLM, Ollama, ...), `Mock` (`tollgate mock`).
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL including the API version path, e.g. `https://api.openai.com/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.size() <= 2048 && (self.startsWith('http://') || self.startsWith('https://'))").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// API key, sent as `Authorization: Bearer <key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ProviderCredentials>,
    /// Models this provider serves and their prices. When non-empty, routes may
    /// only use models listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub models: Vec<ModelCatalogEntry>,
    /// Connection and request timeouts for this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<ProviderTimeouts>,
    /// Requests in flight to this provider at most; further requests fall back
    /// to the next backend or get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000000").message("maxConcurrentRequests must be between 1 and 1000000"))]
    pub max_concurrent_requests: Option<u32>,
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

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderCredentials {
    /// The Secret key holding the provider API key.
    pub secret_ref: SecretKeyRef,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelCatalogEntry {
    /// Upstream model name, as the provider spells it.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 256").message("model name must be 1-256 characters"))]
    pub name: String,
    /// Prices in USD per one million tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<ModelPricing>,
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

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderTimeouts {
    /// TCP + TLS connect timeout (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("must be a duration such as 500ms, 30s or 1m30s"))]
    pub connect: Option<String>,
    /// Time allowed for the whole upstream request (default 300s). Routes may set a shorter one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("must be a duration such as 500ms, 30s or 1m30s"))]
    pub request: Option<String>,
}
