//! `AIGateway`: one fleet of data-plane pods (or one standalone process).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{ResourceStatus, SecretKeyRef};

/// A gateway: its ports, its client API keys and its request limits.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AIGateway",
    plural = "aigateways",
    shortname = "aigw",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.listener.port"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.listener) || !has(self.admin) || self.listener.port != self.admin.port").message("listener and admin ports must differ"))]
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
    /// Request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<GatewayLimits>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: u32,
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
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("must be a duration such as 500ms, 30s or 1m30s"))]
    pub request_timeout: Option<String>,
}
