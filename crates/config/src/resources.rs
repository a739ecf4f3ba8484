//! The input of [`crate::compile`]: the resources as read from files or the apiserver.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tollgate_api::{AIGateway, AIRoute, ModelProvider};

use crate::diagnostics::ObjectRef;

/// Namespace of a manifest that names none, as kubectl would apply it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Everything compile reads. Order does not matter: compile sorts.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub gateways: Vec<AIGateway>,
    pub providers: Vec<ModelProvider>,
    pub routes: Vec<AIRoute>,
    pub secrets: Vec<Secret>,
    /// Where each object was read from (file path), for diagnostics.
    pub origins: BTreeMap<ObjectRef, String>,
}

/// The namespace an object lives in, defaulted like kubectl does.
pub fn namespace_of<K: ResourceExt>(object: &K) -> String {
    object
        .namespace()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// The [`ObjectRef`] of a typed object.
pub fn object_ref<K: ResourceExt + kube::Resource<DynamicType = ()>>(object: &K) -> ObjectRef {
    ObjectRef::new(&K::kind(&()), &namespace_of(object), &object.name_any())
}
