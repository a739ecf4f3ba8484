//! `compile`: resources in, one [`Snapshot`] per AIGateway out, plus
//! diagnostics. A bad resource is reported on itself and left out; it never
//! takes the rest of the configuration down. Pure and deterministic.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tollgate_api::conditions::reason;
use tollgate_api::duration;
use tollgate_api::keys;
use tollgate_api::{AIGateway, AIGatewaySpec, AIRoute, SecretKeyRef};

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::digest::DigestKey;
use crate::resources::{Resources, namespace_of, object_ref};
use crate::snapshot::{GatewayConfig, Provider, Snapshot};

mod budget;
mod gateway;
mod mcp;
mod prompt;
mod provider;
mod route;

pub use budget::{DEFAULT_ALERT_COOLDOWN_MS, format_micro_usd, parse_micro_usd};
use budget::{check_downgrade_target, compile_budget};
use gateway::compile_gateway;
pub use gateway::parse_labels;
use mcp::compile_mcp_server;
pub use mcp::{DEFAULT_MCP_TIMEOUT_MS, backend_url, run_object_name, run_url};
pub use provider::bedrock_endpoint;
use provider::compile_provider;
use route::compile_route;

pub const DEFAULT_LISTENER_PORT: u16 = 8080;
pub const DEFAULT_ADMIN_PORT: u16 = 9090;
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const OPENAI_ENDPOINT: &str = "https://api.openai.com/v1";
pub const ANTHROPIC_ENDPOINT: &str = "https://api.anthropic.com/v1";
pub const GEMINI_ENDPOINT: &str = "https://generativelanguage.googleapis.com/v1beta";

/// (gateway, model alias, header matches): what two routes may not both claim.
/// Per gateway, per alias: the header and principal matches already routed
/// and by which route. Looked up once per alias of every route, so keyed for
/// cheap `&str` lookups. A claim names its route and creation time, for the
/// message.
type Claim = (String, Option<Timestamp>);
type Matches = (Vec<(String, String)>, Vec<crate::snapshot::budget::Subject>);
type AliasClaims = HashMap<ObjectRef, HashMap<String, Vec<(Matches, Claim)>>>;
type Timestamp = k8s_openapi::jiff::Timestamp;

/// The output of [`compile`].
#[derive(Debug, Default)]
pub struct Compiled {
    /// One snapshot per valid AIGateway, keyed by the gateway.
    pub snapshots: BTreeMap<ObjectRef, Snapshot>,
    /// Errors and warnings, each naming its resource and field.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

pub fn compile(resources: &Resources, digest_key: &DigestKey) -> Compiled {
    let mut out = Compiled::default();
    let secrets = SecretIndex::new(&resources.secrets);
    let config_maps = prompt::ConfigMapIndex::new(&resources.config_maps);

    let mut providers: BTreeMap<ObjectRef, Option<Provider>> = BTreeMap::new();
    for provider in sorted(&resources.providers) {
        let key = object_ref(provider);
        providers.insert(
            key,
            compile_provider(provider, &secrets, &mut out.diagnostics),
        );
    }

    let mut gateways: BTreeMap<ObjectRef, GatewayConfig> = BTreeMap::new();
    for gateway in sorted(&resources.gateways) {
        if let Some(mut config) =
            compile_gateway(gateway, &secrets, digest_key, &mut out.diagnostics)
            && gateway::add_guard_providers(&mut config, &providers, &mut out.diagnostics)
        {
            gateways.insert(object_ref(gateway), config);
        }
    }

    // MCPServers before routes: a route's context may read their resources.
    for server in sorted(&resources.mcp_servers) {
        let server_ref = object_ref(server);
        let compiled = compile_mcp_server(server, &secrets, &mut out.diagnostics);
        let Some(gateway) = named_gateway(
            &mut gateways,
            &server_ref,
            &server.spec.gateway_ref.name,
            &resources.gateways,
            &mut out.diagnostics,
        ) else {
            continue;
        };
        let Some(compiled) = compiled else { continue };
        if let Some(owner) = gateway.mcp_servers.iter().find(|s| s.path == compiled.path) {
            out.diagnostics.push(Diagnostic::error(
                &server_ref,
                "spec.path",
                reason::INVALID,
                format!(
                    "path /mcp/{} is already served by MCPServer {} (which sorts first by namespace/name)",
                    compiled.path, owner.name
                ),
            ));
            continue;
        }
        let prefix_owner = compiled.aggregation.as_ref().and_then(|mine| {
            gateway.mcp_servers.iter().find(|s| {
                s.aggregation
                    .as_ref()
                    .is_some_and(|theirs| theirs.prefix == mine.prefix)
            })
        });
        if let (Some(owner), Some(mine)) = (prefix_owner, &compiled.aggregation) {
            out.diagnostics.push(Diagnostic::error(
                &server_ref,
                "spec.aggregation.prefix",
                reason::INVALID,
                format!(
                    "prefix {:?} is already used in /mcp by MCPServer {} (which sorts first by namespace/name)",
                    mine.prefix, owner.name
                ),
            ));
            continue;
        }
        gateway.mcp_servers.push(compiled);
    }

    // Gateways named by routes but missing or invalid, by reference.
    let mut stand_ins: BTreeMap<ObjectRef, GatewayConfig> = BTreeMap::new();
    // Which (alias, headers) each gateway already serves, for duplicate checks.
    let mut claimed: AliasClaims = HashMap::new();
    for route in by_precedence(&resources.routes) {
        let route_ref = object_ref(route);
        let gateway_ref = ObjectRef::new(
            "AIGateway",
            &route_ref.namespace,
            &route.spec.gateway_ref.name,
        );
        let gateway = if let Some(gateway) = gateways.get_mut(&gateway_ref) {
            gateway
        } else {
            out.diagnostics.push(gateway_not_found(
                &route_ref,
                &gateway_ref,
                &resources.gateways,
            ));
            // The route is still checked on its own, against a stand-in
            // gateway that is never shipped: a file checked alone
            // (`validate --references=off`) still hears of the route's errors.
            match stand_ins.entry(gateway_ref.clone()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => match stand_in(&gateway_ref, &secrets, digest_key) {
                    Some(config) => entry.insert(config),
                    None => continue,
                },
            }
        };
        let Some(compiled) = compile_route(
            route,
            &providers,
            &config_maps,
            gateway,
            &mut out.diagnostics,
        ) else {
            continue;
        };
        let claims = claimed.entry(gateway_ref.clone()).or_default();
        let duplicate = compiled
            .aliases
            .iter()
            .chain(&compiled.globs)
            .find_map(|alias| {
                let owners = claims.get(alias.as_str())?;
                let (_, owner) = owners.iter().find(|((headers, principals), _)| {
                    *headers == compiled.headers && *principals == compiled.principals
                })?;
                Some((alias.clone(), owner.clone()))
            });
        if let Some((alias, (owner, owner_created))) = duplicate {
            let index = route
                .spec
                .models
                .iter()
                .position(|m| *m == alias)
                .unwrap_or(0);
            out.diagnostics.push(Diagnostic::error(
                &route_ref,
                format!("spec.models[{index}]"),
                reason::DUPLICATE_ALIAS,
                duplicate_alias_message(&alias, &owner, owner_created, created(route)),
            ));
            continue;
        }
        for alias in compiled.aliases.iter().chain(&compiled.globs) {
            claims.entry(alias.clone()).or_default().push((
                (compiled.headers.clone(), compiled.principals.clone()),
                (compiled.name.to_string(), created(route)),
            ));
        }
        gateway.routes.push(compiled);
    }

    for budget in sorted(&resources.budgets) {
        let budget_ref = object_ref(budget);
        let compiled = compile_budget(budget, &mut out.diagnostics);
        let Some(gateway) = named_gateway(
            &mut gateways,
            &budget_ref,
            &budget.spec.gateway_ref.name,
            &resources.gateways,
            &mut out.diagnostics,
        ) else {
            continue;
        };
        let Some(compiled) = compiled else { continue };
        let serves = |model: &str| {
            gateway.routes.iter().any(|r| {
                r.aliases.iter().any(|a| a == model)
                    || r.globs
                        .iter()
                        .any(|g| crate::snapshot::glob_matches(g, model))
            })
        };
        check_downgrade_target(&compiled, &budget_ref, serves, &mut out.diagnostics);
        gateway.budgets.push(compiled);
    }

    for (key, mut config) in gateways {
        config.mcp_servers.sort_by(|a, b| a.path.cmp(&b.path));
        out.snapshots.insert(key, Snapshot::new(config));
    }
    for diagnostic in &mut out.diagnostics {
        if let Some(object) = &diagnostic.object {
            diagnostic.origin = resources.origins.get(object).cloned();
        }
    }
    out
}

/// The compiled AIGateway `name` (in `object`'s namespace) that a budget or
/// MCP server attaches to; when there is none, `object` is told why.
fn named_gateway<'g>(
    gateways: &'g mut BTreeMap<ObjectRef, GatewayConfig>,
    object: &ObjectRef,
    name: &str,
    all: &[AIGateway],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<&'g mut GatewayConfig> {
    let gateway_ref = ObjectRef::new("AIGateway", &object.namespace, name);
    let found = gateways.get_mut(&gateway_ref);
    if found.is_none() {
        diagnostics.push(gateway_not_found(object, &gateway_ref, all));
    }
    found
}

/// What a route or budget naming a missing or invalid gateway is told.
fn gateway_not_found(object: &ObjectRef, gateway: &ObjectRef, all: &[AIGateway]) -> Diagnostic {
    let known = all.iter().any(|g| object_ref(g) == *gateway);
    Diagnostic::error(
        object,
        "spec.gatewayRef.name",
        reason::GATEWAY_NOT_FOUND,
        if known {
            format!(
                "AIGateway {:?} is invalid; see its diagnostics",
                gateway.name
            )
        } else {
            format!(
                "AIGateway {:?} not found in namespace {}",
                gateway.name, gateway.namespace
            )
        },
    )
}

/// A gateway with every default, standing in for a missing or invalid one.
fn stand_in(
    gateway: &ObjectRef,
    secrets: &SecretIndex,
    digest_key: &DigestKey,
) -> Option<GatewayConfig> {
    let mut object = AIGateway::new(&gateway.name, AIGatewaySpec::default());
    object.metadata.namespace = Some(gateway.namespace.clone());
    compile_gateway(&object, secrets, digest_key, &mut Vec::new())
}

/// Objects sorted by namespace/name, so output never depends on input order.
fn sorted<K: ResourceExt>(items: &[K]) -> Vec<&K> {
    let mut items: Vec<&K> = items.iter().collect();
    items.sort_by_cached_key(|o| (namespace_of(*o), o.name_any()));
    items
}

fn created(route: &AIRoute) -> Option<Timestamp> {
    route.creation_timestamp().map(|t| t.0)
}

/// Names the precedence rule, so the loser knows why it lost: the oldest
/// route keeps an alias; equal (or absent, in files) times fall to namespace/name.
fn duplicate_alias_message(
    alias: &str,
    owner: &str,
    owner_created: Option<Timestamp>,
    created: Option<Timestamp>,
) -> String {
    let why = match (owner_created, created) {
        (Some(a), Some(b)) if a < b => "which is older",
        _ => "which is as old and sorts first by namespace/name",
    };
    format!(
        "model {alias:?} with the same header and principal matches is already served by AIRoute {owner}, {why}; \
         the oldest route keeps an alias (by creationTimestamp, then namespace/name)"
    )
}

/// Routes oldest first (the older route keeps a contested alias, as in the
/// Gateway API), then by namespace/name.
fn by_precedence(routes: &[AIRoute]) -> Vec<&AIRoute> {
    let mut routes: Vec<&AIRoute> = routes.iter().collect();
    routes.sort_by_cached_key(|r| (created(r), namespace_of(*r), r.name_any()));
    routes
}

/// Provider credentials and client keys, looked up by namespace/name/key.
/// Whether a Secret carries the API-key label (`"true"`).
pub fn is_labelled_key(secret: &Secret) -> bool {
    secret
        .labels()
        .get(keys::API_KEY_LABEL)
        .is_some_and(|v| v == "true")
}

struct SecretIndex<'a> {
    by_name: BTreeMap<(String, String), &'a Secret>,
}

impl<'a> SecretIndex<'a> {
    fn new(secrets: &'a [Secret]) -> Self {
        Self {
            by_name: secrets
                .iter()
                .map(|s| ((namespace_of(s), s.name_any()), s))
                .collect(),
        }
    }

    /// Secrets labelled as API keys for `gateway` (annotation naming it or
    /// `*`) in its namespace, by name.
    fn labelled_keys(&self, namespace: &str, gateway: &str) -> Vec<&'a Secret> {
        self.by_name
            .range((namespace.to_string(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, secret)| *secret)
            .filter(|secret| {
                is_labelled_key(secret)
                    && secret
                        .annotations()
                        .get(keys::GATEWAY_ANNOTATION)
                        .is_some_and(|g| g == gateway || g == "*")
            })
            .collect()
    }

    fn contains(&self, namespace: &str, name: &str) -> bool {
        self.by_name
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// The value, trimmed of surrounding whitespace (files often end in a newline).
    fn value(
        &self,
        namespace: &str,
        reference: &SecretKeyRef,
    ) -> Result<String, (&'static str, String)> {
        let secret = self
            .by_name
            .get(&(namespace.to_string(), reference.name.clone()))
            .ok_or_else(|| {
                (
                    reason::SECRET_NOT_FOUND,
                    format!(
                        "Secret {:?} not found in namespace {namespace}",
                        reference.name
                    ),
                )
            })?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| {
                (
                    reason::SECRET_NOT_FOUND,
                    format!("Secret {:?} has no key {:?}", reference.name, reference.key),
                )
            })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            (
                reason::INVALID,
                format!(
                    "Secret {:?} key {:?} is not UTF-8 text",
                    reference.name, reference.key
                ),
            )
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err((
                reason::INVALID,
                format!(
                    "Secret {:?} key {:?} is empty",
                    reference.name, reference.key
                ),
            ));
        }
        Ok(text.to_string())
    }
}

fn parse_duration_ms(
    text: Option<&String>,
    default: Option<u64>,
    object: &ObjectRef,
    field: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<u64>, ()> {
    match text {
        None => Ok(default),
        Some(text) => match duration::parse(text) {
            Ok(d) if !d.is_zero() => Ok(Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            // Zero or malformed: the CEL rule's message, so file and cluster agree.
            Ok(_) | Err(_) => {
                diagnostics.push(Diagnostic::error(
                    object,
                    field,
                    reason::INVALID,
                    duration::POSITIVE_DURATION_MESSAGE,
                ));
                Err(())
            }
        },
    }
}

/// Manifests and helpers shared by the tests of every kind.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::diagnostics::ObjectRef;
    use crate::digest::DigestKey;
    use crate::load::{Loaded, add_documents};
    use crate::resources::Resources;

    /// The digest key every compile in these tests uses.
    pub(crate) fn test_key() -> DigestKey {
        DigestKey::from_bytes([0x5a; 32])
    }

    /// [`super::compile`] under [`test_key`].
    pub(crate) fn compile(resources: &Resources) -> super::Compiled {
        super::compile(resources, &test_key())
    }

    pub(super) const BASE: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys:
  - secretRef: {name: keys, key: demo}
    principal: {user: demo, team: platform}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {demo: "tg-demo\n", openai: sk-test}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: zeta}
spec: {type: Mock, endpoint: "http://127.0.0.1:1/v1/"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: alpha}
spec:
  type: OpenAI
  credentials: {secretRef: {name: keys, key: openai}}
  models:
  - name: gpt-4o-mini
    pricing: {inputPerMillion: 0.15, outputPerMillion: 0.6}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: chat}
spec:
  gatewayRef: {name: gw}
  models: [chat, "gpt-*"]
  backends:
  - {providerRef: {name: zeta}, model: mock-chat, weight: 80}
  - {providerRef: {name: alpha}, model: gpt-4o-mini, weight: 20, priority: 1}
"#;

    pub(super) fn load(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "test.yaml", text, &|_| None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded
    }

    pub(super) fn gw() -> ObjectRef {
        ObjectRef::new("AIGateway", "default", "gw")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{BASE, compile, gw, load, test_key};
    use super::*;
    use crate::snapshot::{self, Credential, SnapshotError};
    use tollgate_api::conditions::reason;

    #[test]
    fn compiles_a_complete_gateway() {
        let compiled = compile(&load(BASE).resources);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let config = &compiled.snapshots[&gw()].config;
        assert_eq!((config.listener_port, config.admin_port), (8080, 9090));
        assert_eq!(config.api_keys.len(), 1);
        assert_eq!(
            config.api_keys[0].digest,
            snapshot::api_key_digest(&test_key(), "tg-demo"),
            "trailing newline is trimmed"
        );
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_ref()).collect();
        assert_eq!(names, ["alpha", "zeta"], "providers sorted by name");
        assert_eq!(
            config.providers[1].base_url, "http://127.0.0.1:1/v1",
            "trailing slash trimmed"
        );
        assert_eq!(config.providers[0].base_url, OPENAI_ENDPOINT);
        assert_eq!(
            config.providers[0].api_key,
            Some(Credential("sk-test".into()))
        );
        let route = &config.routes[0];
        assert_eq!(route.aliases, ["chat"]);
        assert_eq!(route.globs, ["gpt-*"]);
        assert_eq!(&*config.providers[route.backends[0].provider].name, "zeta");
        assert_eq!(&*config.providers[route.backends[1].provider].name, "alpha");
    }

    #[test]
    fn output_is_deterministic_regardless_of_input_order() {
        let a = compile(&load(BASE).resources);
        let mut reversed = load(BASE).resources;
        reversed.providers.reverse();
        reversed.secrets.reverse();
        let b = compile(&reversed);
        let (sa, sb) = (&a.snapshots[&gw()], &b.snapshots[&gw()]);
        assert_eq!(sa.to_json().unwrap(), sb.to_json().unwrap());
        assert_eq!(sa.hash, sb.hash);
        assert_eq!(sa.hash.len(), 64);
        let round = Snapshot::from_json(&sa.to_json().unwrap()).unwrap();
        assert_eq!(&round, sa);
    }

    #[test]
    fn hash_changes_with_content_and_tampering_is_detected() {
        let a = compile(&load(BASE).resources).snapshots[&gw()].clone();
        let b = compile(&load(&BASE.replace("weight: 80", "weight: 70")).resources).snapshots
            [&gw()]
            .clone();
        assert_ne!(a.hash, b.hash);
        let mut tampered = a.clone();
        tampered.config.listener_port = 1;
        let bytes = tampered.to_json().unwrap();
        assert!(matches!(
            Snapshot::from_json(&bytes),
            Err(SnapshotError::HashMismatch { .. })
        ));
    }

    #[test]
    fn hashes_and_key_digests_are_keyed() {
        use sha2::Digest;
        let resources = load(BASE).resources;
        let a = &super::compile(&resources, &DigestKey::from_bytes([1; 32])).snapshots[&gw()];
        let b = &super::compile(&resources, &DigestKey::from_bytes([2; 32])).snapshots[&gw()];
        assert_ne!(a.hash, b.hash, "the hash depends on the key");
        assert_ne!(a.config.api_keys[0].digest, b.config.api_keys[0].digest);
        let unkeyed = hex::encode(sha2::Sha256::digest(b"tg-demo"));
        assert_ne!(a.config.api_keys[0].digest, unkeyed);
        // Without the key, the content alone does not give the hash.
        let guess = hex::encode(sha2::Sha256::digest(serde_json::to_vec(&a.config).unwrap()));
        assert_ne!(a.hash, guess);
        // A gateway checks a pushed snapshot with the key it carries.
        assert_eq!(&Snapshot::from_json(&a.to_json().unwrap()).unwrap(), a);
    }

    #[test]
    fn duplicate_alias_is_reported_on_the_later_route() {
        let text = format!(
            "{BASE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: copy}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [other, chat]\n  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n"
        );
        let compiled = compile(&load(&text).resources);
        let d = &compiled.diagnostics[0];
        assert_eq!(d.reason, reason::DUPLICATE_ALIAS);
        assert_eq!(d.field, "spec.models[1]");
        assert!(d.message.contains("default/chat"), "{}", d.message);
    }

    #[test]
    fn same_alias_with_different_headers_is_allowed() {
        let text = format!(
            "{BASE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: canary}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [chat]\n  headers: [{{name: X-Canary, value: \"yes\"}}]\n  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n"
        );
        let compiled = compile(&load(&text).resources);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let routes = &compiled.snapshots[&gw()].config.routes;
        let canary = routes
            .iter()
            .find(|r| *r.name == *"default/canary")
            .unwrap();
        assert_eq!(
            canary.headers,
            [("x-canary".to_string(), "yes".to_string())]
        );
    }

    /// Every compile check that is also a CEL rule says the same thing in
    /// both places: the CEL rule via `document::check`, compile on an object
    /// that skipped CEL (as one from an apiserver with older CRDs would).
    #[test]
    fn cel_rules_and_compile_agree() {
        use serde_json::json;
        use tollgate_api::duration::POSITIVE_DURATION_MESSAGE;
        use tollgate_api::prompt::{
            CONTEXT_CONFIG_MAP_TIMING_MESSAGE, CONTEXT_LOOPBACK_MESSAGE,
            CONTEXT_ONE_SOURCE_MESSAGE, CONTEXT_URL_MESSAGE, DEFAULT_VERSION_MESSAGE,
            MCP_RESOURCE_URI_MESSAGE, VARIABLE_NAME_MESSAGE, VERSION_MESSAGE,
            VERSIONS_UNIQUE_MESSAGE,
        };
        use tollgate_api::provider::ENDPOINT_MESSAGE;
        use tollgate_api::route::{
            ALIASES_UNIQUE_MESSAGE, BACKENDS_WEIGHT_MESSAGE, HEADERS_UNIQUE_MESSAGE,
        };
        let meta = json!({"name": "x"});
        let provider = |spec| json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "ModelProvider", "metadata": meta, "spec": spec});
        let route = |spec| json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "AIRoute", "metadata": meta, "spec": spec});
        let gateway = |spec| json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "AIGateway", "metadata": meta, "spec": spec});
        let backend = json!([{"providerRef": {"name": "zeta"}, "model": "m"}]);
        let cases = [
            (
                provider(json!({"type": "Mock", "endpoint": "http://"})),
                "spec.endpoint",
                ENDPOINT_MESSAGE,
            ),
            (
                provider(json!({"type": "Mock", "endpoint": "http://h/?q=1"})),
                "spec.endpoint",
                ENDPOINT_MESSAGE,
            ),
            (
                provider(
                    json!({"type": "Mock", "endpoint": "http://h", "timeouts": {"connect": "0s"}}),
                ),
                "spec.timeouts.connect",
                POSITIVE_DURATION_MESSAGE,
            ),
            (
                provider(
                    json!({"type": "Mock", "endpoint": "http://h", "models": [{"name": "m"}, {"name": "m"}]}),
                ),
                "spec.models[1]",
                "Duplicate value: {\"name\":\"m\"}",
            ),
            (
                provider(
                    json!({"type": "Mock", "endpoint": "http://h", "maxConcurrentRequests": 2, "fairness": {"maxQueueWait": "soon"}}),
                ),
                "spec.fairness.maxQueueWait",
                "must be a duration such as 0s, 500ms or 2s",
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a", "a"], "backends": backend}),
                ),
                "spec.models",
                ALIASES_UNIQUE_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]}),
                ),
                "spec.headers",
                HEADERS_UNIQUE_MESSAGE,
            ),
            (
                route(json!({"gatewayRef": {"name": "gw"}, "models": ["a"],
                "backends": [{"providerRef": {"name": "zeta"}, "model": "m", "weight": 0}]})),
                "spec.backends",
                BACKENDS_WEIGHT_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "timeouts": {"streamIdle": "0ms"}}),
                ),
                "spec.timeouts.streamIdle",
                POSITIVE_DURATION_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"templates": [{"version": "v1", "messages": [{"role": "system", "content": "x"}]}], "defaultVersion": "v2"}}),
                ),
                "spec.prompts",
                DEFAULT_VERSION_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"templates": [
                    {"version": "v1", "messages": [{"role": "system", "content": "x"}]},
                    {"version": "v1", "messages": [{"role": "system", "content": "y"}]}]}}),
                ),
                "spec.prompts.templates",
                VERSIONS_UNIQUE_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"templates": [{"version": "v@1", "messages": [{"role": "system", "content": "x"}]}]}}),
                ),
                "spec.prompts.templates[0].version",
                VERSION_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"templates": [{"version": "v1", "messages": [{"role": "system", "content": "x"}],
                    "variables": {"principal": "me"}}]}}),
                ),
                "spec.prompts.templates[0].variables",
                VARIABLE_NAME_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"context": [{"url": "http://user:pw@docs/p.txt"}]}}),
                ),
                "spec.prompts.context[0].url",
                CONTEXT_URL_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"context": [{"url": "http://docs/p.txt", "cacheFor": "0s"}]}}),
                ),
                "spec.prompts.context[0].cacheFor",
                POSITIVE_DURATION_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"context": [{"url": "http://docs/p.txt",
                    "configMapKeyRef": {"name": "policy", "key": "text"}}]}}),
                ),
                "spec.prompts.context[0]",
                CONTEXT_ONE_SOURCE_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"context": [{"mcpResource": {"server": "docs", "uri": "docs://a"},
                    "allowLoopback": true}]}}),
                ),
                "spec.prompts.context[0]",
                CONTEXT_LOOPBACK_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"context": [{"configMapKeyRef": {"name": "policy", "key": "text"},
                    "cacheFor": "10s"}]}}),
                ),
                "spec.prompts.context[0]",
                CONTEXT_CONFIG_MAP_TIMING_MESSAGE,
            ),
            (
                route(
                    json!({"gatewayRef": {"name": "gw"}, "models": ["a"], "backends": backend,
                "prompts": {"context": [{"mcpResource": {"server": "docs", "uri": "no scheme"}}]}}),
                ),
                "spec.prompts.context[0].mcpResource.uri",
                MCP_RESOURCE_URI_MESSAGE,
            ),
            (
                gateway(json!({"listener": {"port": 9090}})),
                "spec",
                "listener and admin ports must differ",
            ),
            (
                gateway(json!({"limits": {"requestTimeout": "0s"}})),
                "spec.limits.requestTimeout",
                POSITIVE_DURATION_MESSAGE,
            ),
        ];
        let mut schemas = crate::document::Schemas::default();
        for (value, field, message) in cases {
            let checked = crate::document::check(value.clone(), &|_| None, &mut schemas);
            assert!(
                checked
                    .diagnostics
                    .iter()
                    .any(|d| d.field == field && d.message == message),
                "CEL on {value}: {:?}",
                checked.diagnostics
            );
            let mut resources = load(BASE).resources;
            match value["kind"].as_str() {
                Some("ModelProvider") => resources
                    .providers
                    .push(serde_json::from_value(value.clone()).unwrap()),
                Some("AIRoute") => resources
                    .routes
                    .push(serde_json::from_value(value.clone()).unwrap()),
                _ => resources
                    .gateways
                    .push(serde_json::from_value(value.clone()).unwrap()),
            }
            let compiled = compile(&resources);
            assert!(
                compiled
                    .diagnostics
                    .iter()
                    .any(|d| d.field.starts_with(field) && d.message.starts_with(message)),
                "compile on {value}: {:?}",
                compiled.diagnostics
            );
        }
    }

    #[test]
    fn duplicate_alias_message_names_the_rule() {
        let early = k8s_openapi::jiff::Timestamp::from_second(1).ok();
        let late = k8s_openapi::jiff::Timestamp::from_second(2).ok();
        let message = duplicate_alias_message("chat", "default/a", early, late);
        assert_eq!(
            message,
            "model \"chat\" with the same header and principal matches is already served by AIRoute default/a, \
             which is older; the oldest route keeps an alias (by creationTimestamp, then namespace/name)"
        );
        let message = duplicate_alias_message("chat", "default/a", None, None);
        assert!(
            message.contains(
                "which is as old and sorts first by namespace/name; the oldest route keeps an alias"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_route_without_its_gateway_is_still_checked_on_its_own() {
        let text = BASE.replace("gatewayRef: {name: gw}", "gatewayRef: {name: elsewhere}")
            + "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: copy}\nspec:\n  gatewayRef: {name: elsewhere}\n  models: [chat]\n  backends: [{providerRef: {name: zeta}, model: m}]\n";
        let compiled = compile(&load(&text).resources);
        let found: Vec<(&str, &str)> = compiled
            .diagnostics
            .iter()
            .map(|d| (d.reason.as_str(), d.field.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (reason::GATEWAY_NOT_FOUND, "spec.gatewayRef.name"),
                (reason::GATEWAY_NOT_FOUND, "spec.gatewayRef.name"),
                (reason::DUPLICATE_ALIAS, "spec.models[0]"),
            ],
            "{:?}",
            compiled.diagnostics
        );
        assert!(
            compiled.snapshots[&gw()].config.routes.is_empty(),
            "nothing shipped"
        );
    }

    #[test]
    fn missing_gateway_is_reported_on_the_route() {
        let text = BASE.replace("gatewayRef: {name: gw}", "gatewayRef: {name: elsewhere}");
        let compiled = compile(&load(&text).resources);
        assert_eq!(compiled.diagnostics[0].reason, reason::GATEWAY_NOT_FOUND);
        assert!(compiled.snapshots[&gw()].config.routes.is_empty());
        assert!(
            compiled.snapshots[&gw()].config.providers.is_empty(),
            "unused providers are not shipped"
        );
    }
}
