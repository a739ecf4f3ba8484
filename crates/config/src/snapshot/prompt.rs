//! A route's compiled prompt management (`AIRoute.spec.prompts`): data only,
//! defaults applied and references resolved. The gateway builds the template
//! engine from it when it builds its runtime ([`crate::prompt::PromptSet`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tollgate_api::prompt::{DecoratorPosition, PromptRole};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prompts {
    /// In the route's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<PromptTemplate>,
    /// Index into `templates` of the version for requests that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decorators: Vec<PromptDecorator>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextSource>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptTemplate {
    pub version: String,
    pub messages: Vec<PromptMessage>,
    /// Default values; a request's variables override them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptMessage {
    pub role: PromptRole,
    /// Template text.
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptDecorator {
    pub position: DecoratorPosition,
    pub role: PromptRole,
    /// Template text.
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextSource {
    pub from: ContextFrom,
    pub max_bytes: u64,
    pub timeout_ms: u64,
    pub cache_for_ms: u64,
    pub role: PromptRole,
    pub required: bool,
}

/// Where a context source's text comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContextFrom {
    /// Fetched with a GET.
    #[serde(rename_all = "camelCase")]
    Url {
        url: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_loopback: bool,
    },
    /// Read from a ConfigMap when the configuration was compiled.
    #[serde(rename_all = "camelCase")]
    Text {
        text: String,
        /// `configmap/NAMESPACE/NAME/KEY`, for metrics and messages.
        origin: String,
    },
    /// Read with `resources/read` from an MCPServer of the gateway.
    #[serde(rename_all = "camelCase")]
    McpResource {
        /// `namespace/name` of the MCPServer ([`super::McpServer::name`]).
        server: String,
        uri: String,
    },
}
