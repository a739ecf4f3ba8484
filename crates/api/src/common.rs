//! Small types shared by several kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to another object in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// Name of the referenced object.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("name must be 1-253 characters"))]
    pub name: String,
}

/// A key inside a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("name must be 1-253 characters"))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("key must be 1-253 characters"))]
    pub key: String,
}

/// Status shared by kinds that only report conditions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The generation of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Programmed`, as `metav1.Condition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the controller last confirmed this status (it does so every few
    /// minutes): an older time means the controller is not running and the
    /// status may be stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_confirmed_time: Option<Time>,
}

/// Data residency: what a region name and an allowed-region glob look like.
pub const REGION_RULE: &str = "self.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')";
pub const REGION_MESSAGE: &str = "a region is lowercase letters, digits and '-', such as eu-west-1";
pub const REGION_GLOB_RULE: &str =
    "self.all(r, r.matches('^[a-z0-9*]([a-z0-9*-]{0,61}[a-z0-9*])?$'))";
pub const REGION_GLOB_MESSAGE: &str = "allowed regions are region names or globs such as eu-*";

/// Callers, by their principal: every field given must match.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrincipalSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub app: Option<String>,
    /// Principal labels that must all match.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub match_labels: std::collections::BTreeMap<String, String>,
}
