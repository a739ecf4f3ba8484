//! The Tollgate API, group `tollgate.dev`, version `v1alpha1`.
//!
//! These types are the single source of the CRD schemas (`tollgate crds`), of
//! what `tollgate validate` checks offline, and of what `config::compile`
//! reads. Value rules live in the schema as CEL (`x-kubernetes-validations`)
//! so the apiserver and `tollgate validate` enforce exactly the same rules.

pub mod common;
pub mod conditions;
pub mod duration;
pub mod gateway;
pub mod provider;
pub mod route;

pub use common::{LocalObjectReference, ResourceStatus, SecretKeyRef};
pub use gateway::{AIGateway, AIGatewaySpec};
pub use provider::{ModelProvider, ModelProviderSpec, ProviderType};
pub use route::{AIRoute, AIRouteSpec};

/// API group of every Tollgate kind.
pub const GROUP: &str = "tollgate.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "tollgate.dev/v1alpha1";

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD this crate defines, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![AIGateway::crd(), ModelProvider::crd(), AIRoute::crd()]
}

/// The CRDs as a multi-document YAML stream, exactly as `make crds` writes them.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// File name under `crds/` for one CRD: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}
