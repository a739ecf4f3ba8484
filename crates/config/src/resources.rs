//! The input of [`crate::compile`]: the resources as read from files or the apiserver.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use tollgate_api::prompt::ConfigMapKeyRef;
use tollgate_api::{AIGateway, AIRoute, MCPServer, ModelProvider, TokenBudget};

use crate::diagnostics::ObjectRef;

/// Namespace of a manifest that names none, as kubectl would apply it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Everything compile reads. Order does not matter: compile sorts.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub gateways: Vec<AIGateway>,
    pub providers: Vec<ModelProvider>,
    pub routes: Vec<AIRoute>,
    pub budgets: Vec<TokenBudget>,
    pub mcp_servers: Vec<MCPServer>,
    pub secrets: Vec<Secret>,
    /// ConfigMaps that routes read prompt context from.
    pub config_maps: Vec<ConfigMap>,
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
    mcp_servers: &[MCPServer],
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
        let redis = g
            .spec
            .redis
            .as_ref()
            .and_then(|r| r.password_secret_ref.as_ref());
        let session_keys = g.spec.mcp.iter().flat_map(|m| &m.session_keys);
        g.spec
            .api_keys
            .iter()
            .map(|k| &k.secret_ref)
            .chain(redis)
            .chain(session_keys)
            .map(move |r| (namespace.clone(), r.name.clone()))
    });
    let from_mcp = mcp_servers.iter().filter_map(|m| {
        let credentials = m.spec.credentials.as_ref()?;
        Some((namespace_of(m), credentials.secret_ref.name.clone()))
    });
    from_providers
        .chain(from_gateways)
        .chain(from_mcp)
        .collect()
}

/// Whether compile reads this Secret: referenced by name (see
/// [`referenced_secrets`]) or labelled as an API key.
pub fn is_compile_input(secret: &Secret, referenced: &BTreeSet<(String, String)>) -> bool {
    crate::compile::is_labelled_key(secret)
        || referenced.contains(&(namespace_of(secret), secret.name_any()))
}

/// The ConfigMaps (namespace, name) that routes read prompt context from:
/// the only ones compile reads.
pub fn referenced_config_maps(routes: &[AIRoute]) -> BTreeSet<(String, String)> {
    routes
        .iter()
        .flat_map(|route| {
            let namespace = namespace_of(route);
            config_map_refs(route).map(move |r| (namespace.clone(), r.name.clone()))
        })
        .collect()
}

/// The ConfigMap keys a route's context sources name.
fn config_map_refs(route: &AIRoute) -> impl Iterator<Item = &ConfigMapKeyRef> {
    route
        .spec
        .prompts
        .iter()
        .flat_map(|p| &p.context)
        .filter_map(|source| source.config_map_key_ref.as_ref())
}

/// Stand-ins for the ConfigMaps that routes name but `resources` lacks,
/// each holding every key named (a one-word text), as
/// [`stand_in_secrets`] does for Secrets. Never for serving.
pub fn stand_in_config_maps(resources: &Resources) -> Vec<ConfigMap> {
    let present: BTreeSet<(String, String)> = resources
        .config_maps
        .iter()
        .map(|c| (namespace_of(c), c.name_any()))
        .collect();
    let mut wanted: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    for route in &resources.routes {
        let namespace = namespace_of(route);
        for reference in config_map_refs(route) {
            let key = (namespace.clone(), reference.name.clone());
            if !present.contains(&key) {
                wanted
                    .entry(key)
                    .or_default()
                    .insert(reference.key.clone(), "stand-in".to_string());
            }
        }
    }
    wanted
        .into_iter()
        .map(|((namespace, name), data)| ConfigMap {
            metadata: stand_in_meta(namespace, name),
            data: Some(data),
            ..Default::default()
        })
        .collect()
}

fn stand_in_meta(namespace: String, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        ..Default::default()
    }
}

/// Stand-ins for the Secrets that providers and gateways name but
/// `resources` lacks, each holding every key named, with a value unique to
/// that key. Compiling with them checks what depends on a Secret existing
/// (routes against their providers) when Secrets live elsewhere, as for
/// `validate --references=off`. Never for serving.
pub fn stand_in_secrets(resources: &Resources) -> Vec<Secret> {
    let present: BTreeSet<(String, String)> = resources
        .secrets
        .iter()
        .map(|s| (namespace_of(s), s.name_any()))
        .collect();
    let mut wanted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut want = |namespace: String, name: &str, key: &str| {
        wanted
            .entry((namespace, name.to_string()))
            .or_default()
            .insert(key.to_string());
    };
    for provider in &resources.providers {
        let credentials = provider.spec.credentials.as_ref();
        if let Some(r) = credentials.and_then(|c| c.secret_ref.as_ref()) {
            want(namespace_of(provider), &r.name, &r.key);
        }
        if let Some(aws) = credentials.and_then(|c| c.aws.as_ref()) {
            let keys = [&aws.access_key_id_key, &aws.secret_access_key_key]
                .into_iter()
                .chain(aws.session_token_key.as_ref());
            for key in keys {
                want(namespace_of(provider), &aws.secret_name, key);
            }
        }
    }
    for gateway in &resources.gateways {
        let redis = gateway
            .spec
            .redis
            .as_ref()
            .and_then(|r| r.password_secret_ref.as_ref());
        let session_keys = gateway.spec.mcp.iter().flat_map(|m| &m.session_keys);
        for reference in gateway
            .spec
            .api_keys
            .iter()
            .map(|k| &k.secret_ref)
            .chain(redis)
            .chain(session_keys)
        {
            want(namespace_of(gateway), &reference.name, &reference.key);
        }
    }
    for server in &resources.mcp_servers {
        if let Some(credentials) = &server.spec.credentials {
            let r = &credentials.secret_ref;
            want(namespace_of(server), &r.name, &r.key);
        }
    }
    wanted
        .into_iter()
        .filter(|(id, _)| !present.contains(id))
        .map(|((namespace, name), keys)| {
            let data = keys
                .into_iter()
                .map(|key| {
                    let value = format!("stand-in {namespace}/{name}/{key}");
                    (key, k8s_openapi::ByteString(value.into_bytes()))
                })
                .collect();
            Secret {
                metadata: stand_in_meta(namespace, name),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Loaded, add_documents};

    #[test]
    fn stand_ins_cover_missing_secrets_only_with_every_key() {
        let yaml = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys:
  - {secretRef: {name: client-keys, key: a}, principal: {user: a}}
  - {secretRef: {name: client-keys, key: b}, principal: {user: b}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: bedrock}
spec:
  type: Bedrock
  bedrock: {region: us-east-1}
  credentials: {aws: {secretName: aws}}
---
apiVersion: v1
kind: Secret
metadata: {name: aws}
stringData: {accessKeyId: x}
"#;
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "t.yaml", yaml, &|_| None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let stand_ins = stand_in_secrets(&loaded.resources);
        assert_eq!(stand_ins.len(), 1, "aws exists: {stand_ins:?}");
        assert_eq!(stand_ins[0].name_any(), "client-keys");
        let data = stand_ins[0].data.as_ref().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_ne!(data["a"], data["b"], "distinct client keys");
    }

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
        let referenced = referenced_secrets(
            &resources.gateways,
            &resources.providers,
            &resources.mcp_servers,
        );
        let expected: BTreeSet<(String, String)> = [
            ("default".to_string(), "openai-key".to_string()),
            ("team-a".to_string(), "client-keys".to_string()),
            ("team-b".to_string(), "aws-keys".to_string()),
        ]
        .into();
        assert_eq!(referenced, expected);
    }
}
