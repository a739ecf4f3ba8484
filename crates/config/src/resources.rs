//! The input of [`crate::compile`]: the resources as read from files or the apiserver.

use std::collections::{BTreeMap, BTreeSet};

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

/// The Secrets (namespace, name) that providers and gateways reference:
/// the only ones compile reads, so a caller holding every Secret in a
/// cluster need hand over just these.
pub fn referenced_secrets(
    gateways: &[AIGateway],
    providers: &[ModelProvider],
) -> BTreeSet<(String, String)> {
    let from_providers = providers.iter().flat_map(|p| {
        let namespace = namespace_of(p);
        let credentials = p.spec.credentials.as_ref();
        let api_key = credentials.and_then(|c| c.secret_ref.as_ref().map(|r| r.name.clone()));
        let aws = credentials.and_then(|c| c.aws.as_ref().map(|a| a.secret_name.clone()));
        api_key
            .into_iter()
            .chain(aws)
            .map(move |name| (namespace.clone(), name))
    });
    let from_gateways = gateways.iter().flat_map(|g| {
        let namespace = namespace_of(g);
        g.spec
            .api_keys
            .iter()
            .map(move |k| (namespace.clone(), k.secret_ref.name.clone()))
    });
    from_providers.chain(from_gateways).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Loaded, add_documents};

    #[test]
    fn only_secrets_a_provider_or_gateway_names_are_referenced() {
        let yaml = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw, namespace: team-a}
spec:
  apiKeys:
  - secretRef: {name: client-keys, key: a}
    principal: {user: a}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: openai}
spec:
  type: OpenAI
  credentials: {secretRef: {name: openai-key, key: apiKey}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock}
spec: {type: Mock, endpoint: "http://127.0.0.1:1/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: bedrock, namespace: team-b}
spec:
  type: Bedrock
  bedrock: {region: us-east-1}
  credentials: {aws: {secretName: aws-keys}}
"#;
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "t.yaml", yaml, &|_| None);
        let resources = &loaded.resources;
        let referenced = referenced_secrets(&resources.gateways, &resources.providers);
        let expected: BTreeSet<(String, String)> = [
            ("default".to_string(), "openai-key".to_string()),
            ("team-a".to_string(), "client-keys".to_string()),
            ("team-b".to_string(), "aws-keys".to_string()),
        ]
        .into();
        assert_eq!(referenced, expected);
    }
}
