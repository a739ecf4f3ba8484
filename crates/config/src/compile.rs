//! `compile`: resources in, one [`Snapshot`] per AIGateway out, plus
//! diagnostics. A bad resource is reported on itself and left out; it never
//! takes the rest of the configuration down. Pure and deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tollgate_api::conditions::reason;
use tollgate_api::duration;
use tollgate_api::{AIGateway, AIRoute, ModelProvider, ProviderType, SecretKeyRef};

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::resources::{Resources, namespace_of, object_ref};
use crate::snapshot::{
    self, ApiKey, Backend, Credential, GatewayConfig, Limits, Pricing, Principal, Provider, Route,
    Snapshot,
};

pub const DEFAULT_LISTENER_PORT: u16 = 8080;
pub const DEFAULT_ADMIN_PORT: u16 = 9090;
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const OPENAI_ENDPOINT: &str = "https://api.openai.com/v1";

/// (gateway, model alias, header matches): what two routes may not both claim.
/// Per gateway, per alias: the header matches already routed and by which route.
/// Looked up once per alias of every route, so keyed for cheap `&str` lookups.
type AliasClaims = HashMap<ObjectRef, HashMap<String, Vec<(Vec<(String, String)>, String)>>>;

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

pub fn compile(resources: &Resources) -> Compiled {
    let mut out = Compiled::default();
    let secrets = SecretIndex::new(&resources.secrets);

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
        if let Some(config) = compile_gateway(gateway, &secrets, &mut out.diagnostics) {
            gateways.insert(object_ref(gateway), config);
        }
    }

    // Which (alias, headers) each gateway already serves, for duplicate checks.
    let mut claimed: AliasClaims = HashMap::new();
    for route in by_precedence(&resources.routes) {
        let route_ref = object_ref(route);
        let gateway_ref = ObjectRef::new(
            "AIGateway",
            &route_ref.namespace,
            &route.spec.gateway_ref.name,
        );
        let Some(gateway) = gateways.get_mut(&gateway_ref) else {
            let known = resources
                .gateways
                .iter()
                .any(|g| object_ref(g) == gateway_ref);
            out.diagnostics.push(Diagnostic::error(
                &route_ref,
                "spec.gatewayRef.name",
                reason::GATEWAY_NOT_FOUND,
                if known {
                    format!(
                        "AIGateway {:?} is invalid; see its diagnostics",
                        gateway_ref.name
                    )
                } else {
                    format!(
                        "AIGateway {:?} not found in namespace {}",
                        gateway_ref.name, gateway_ref.namespace
                    )
                },
            ));
            continue;
        };
        let Some(compiled) = compile_route(route, &providers, gateway, &mut out.diagnostics) else {
            continue;
        };
        let claims = claimed.entry(gateway_ref.clone()).or_default();
        let duplicate = compiled
            .aliases
            .iter()
            .chain(&compiled.globs)
            .find_map(|alias| {
                let owners = claims.get(alias.as_str())?;
                let (_, owner) = owners.iter().find(|(h, _)| *h == compiled.headers)?;
                Some((alias.clone(), owner.clone()))
            });
        if let Some((alias, owner)) = duplicate {
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
                format!("model {alias:?} with the same header matches is already routed by AIRoute {owner}"),
            ));
            continue;
        }
        for alias in compiled.aliases.iter().chain(&compiled.globs) {
            claims
                .entry(alias.clone())
                .or_default()
                .push((compiled.headers.clone(), compiled.name.clone()));
        }
        gateway.routes.push(compiled);
    }

    for (key, config) in gateways {
        out.snapshots.insert(key, Snapshot::new(config));
    }
    for diagnostic in &mut out.diagnostics {
        if let Some(object) = &diagnostic.object {
            diagnostic.origin = resources.origins.get(object).cloned();
        }
    }
    out
}

/// Objects sorted by namespace/name, so output never depends on input order.
fn sorted<K: ResourceExt>(items: &[K]) -> Vec<&K> {
    let mut items: Vec<&K> = items.iter().collect();
    items.sort_by_cached_key(|o| (namespace_of(*o), o.name_any()));
    items
}

/// Routes oldest first (the older route keeps a contested alias, as in the
/// Gateway API), then by namespace/name.
fn by_precedence(routes: &[AIRoute]) -> Vec<&AIRoute> {
    let mut routes: Vec<&AIRoute> = routes.iter().collect();
    routes.sort_by_cached_key(|r| {
        (
            r.creation_timestamp().map(|t| t.0),
            namespace_of(*r),
            r.name_any(),
        )
    });
    routes
}

/// Provider credentials and client keys, looked up by namespace/name/key.
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
            Ok(d) if d.is_zero() => {
                diagnostics.push(Diagnostic::error(
                    object,
                    field,
                    reason::INVALID,
                    "must be greater than zero",
                ));
                Err(())
            }
            Ok(d) => Ok(Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    object,
                    field,
                    reason::INVALID,
                    e.to_string(),
                ));
                Err(())
            }
        },
    }
}

fn compile_provider(
    provider: &ModelProvider,
    secrets: &SecretIndex,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Provider> {
    let object = object_ref(provider);
    let namespace = &object.namespace;
    let spec = &provider.spec;
    let errors_before = diagnostics.len();

    let endpoint = match (&spec.endpoint, spec.provider_type) {
        (Some(endpoint), _) => endpoint.trim_end_matches('/').to_string(),
        (None, ProviderType::OpenAI) => OPENAI_ENDPOINT.to_string(),
        (None, _) => {
            diagnostics.push(Diagnostic::error(
                &object,
                "spec.endpoint",
                reason::INVALID,
                "endpoint is required unless type is OpenAI",
            ));
            String::new()
        }
    };
    if !endpoint.is_empty()
        && let Err(message) = check_endpoint(&endpoint)
    {
        diagnostics.push(Diagnostic::error(
            &object,
            "spec.endpoint",
            reason::INVALID,
            message,
        ));
    }

    let api_key = match &spec.credentials {
        Some(credentials) => match secrets.value(namespace, &credentials.secret_ref) {
            // Sent as `Authorization: Bearer <key>`: it must be a valid header value.
            Ok(key) if http::HeaderValue::from_str(&format!("Bearer {key}")).is_err() => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    "spec.credentials.secretRef",
                    reason::INVALID,
                    "the key contains characters not allowed in an HTTP header (a line break?)",
                ));
                None
            }
            Ok(key) => Some(Credential(key)),
            Err((why, message)) => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    "spec.credentials.secretRef",
                    why,
                    message,
                ));
                None
            }
        },
        None if spec.provider_type == ProviderType::OpenAI => {
            diagnostics.push(Diagnostic::error(
                &object,
                "spec.credentials",
                reason::INVALID,
                "credentials are required for type OpenAI",
            ));
            None
        }
        None => None,
    };

    let timeouts = spec.timeouts.clone().unwrap_or_default();
    let connect = parse_duration_ms(
        timeouts.connect.as_ref(),
        Some(DEFAULT_CONNECT_TIMEOUT_MS),
        &object,
        "spec.timeouts.connect",
        diagnostics,
    );
    let request = parse_duration_ms(
        timeouts.request.as_ref(),
        Some(DEFAULT_REQUEST_TIMEOUT_MS),
        &object,
        "spec.timeouts.request",
        diagnostics,
    );

    let mut models = BTreeMap::new();
    for (index, model) in spec.models.iter().enumerate() {
        let pricing = model
            .pricing
            .as_ref()
            .map_or_else(Pricing::default, |p| Pricing {
                input_per_million: p.input_per_million,
                output_per_million: p.output_per_million,
                cached_input_per_million: p.cached_input_per_million.unwrap_or(p.input_per_million),
            });
        if models.insert(model.name.clone(), pricing).is_some() {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("spec.models[{index}].name"),
                reason::INVALID,
                format!("model {:?} is listed twice", model.name),
            ));
        }
    }

    if diagnostics.len() > errors_before {
        return None;
    }
    Some(Provider {
        name: object.name.clone(),
        provider_type: spec.provider_type,
        base_url: endpoint,
        api_key,
        aws: None,
        region: None,
        api_version: None,
        azure_auth: None,
        connect_timeout_ms: connect.ok().flatten().unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        request_timeout_ms: request.ok().flatten().unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
        max_concurrent_requests: spec.max_concurrent_requests,
        models,
    })
}

/// An absolute http(s) URL with a host, no query or fragment.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must be an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("URL has no host".into());
    }
    if uri.query().is_some() {
        return Err("URL must not have a query string".into());
    }
    Ok(())
}

fn compile_gateway(
    gateway: &AIGateway,
    secrets: &SecretIndex,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<GatewayConfig> {
    let object = object_ref(gateway);
    let spec = &gateway.spec;
    let errors_before = diagnostics.len();
    let port =
        |p: Option<u32>, default: u16, field: &str, diagnostics: &mut Vec<Diagnostic>| match p {
            None => default,
            Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).unwrap_or_else(|| {
                diagnostics.push(Diagnostic::error(
                    &object,
                    field,
                    reason::INVALID,
                    "port must be between 1 and 65535",
                ));
                default
            }),
        };
    let listener_port = port(
        spec.listener.as_ref().map(|l| l.port),
        DEFAULT_LISTENER_PORT,
        "spec.listener.port",
        diagnostics,
    );
    let admin_port = port(
        spec.admin.as_ref().map(|a| a.port),
        DEFAULT_ADMIN_PORT,
        "spec.admin.port",
        diagnostics,
    );
    if listener_port == admin_port {
        diagnostics.push(Diagnostic::error(
            &object,
            "spec.admin.port",
            reason::INVALID,
            "listener and admin ports must differ",
        ));
    }

    let limits = spec.limits.clone().unwrap_or_default();
    let request_timeout = parse_duration_ms(
        limits.request_timeout.as_ref(),
        Some(DEFAULT_REQUEST_TIMEOUT_MS),
        &object,
        "spec.limits.requestTimeout",
        diagnostics,
    );

    let mut api_keys = Vec::new();
    let mut digests = BTreeSet::new();
    for (index, source) in spec.api_keys.iter().enumerate() {
        let field = format!("spec.apiKeys[{index}].secretRef");
        match secrets.value(&object.namespace, &source.secret_ref) {
            Ok(key) => {
                let sha256 = snapshot::api_key_digest(&key);
                if !digests.insert(sha256.clone()) {
                    diagnostics.push(Diagnostic::error(
                        &object,
                        field,
                        reason::INVALID,
                        "the same key is configured twice",
                    ));
                    continue;
                }
                api_keys.push(ApiKey {
                    sha256,
                    principal: Principal {
                        user: source.principal.user.clone(),
                        team: source.principal.team.clone(),
                        app: source.principal.app.clone(),
                    },
                });
            }
            Err((why, message)) => {
                diagnostics.push(Diagnostic::error(&object, field, why, message))
            }
        }
    }
    api_keys.sort_by(|a, b| a.sha256.cmp(&b.sha256));

    if diagnostics.len() > errors_before {
        return None;
    }
    Some(GatewayConfig {
        gateway: object.clone(),
        listener_port,
        admin_port,
        limits: Limits {
            max_request_body_bytes: limits
                .max_request_body_bytes
                .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES),
            request_timeout_ms: request_timeout
                .ok()
                .flatten()
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
        },
        api_keys,
        providers: Vec::new(),
        routes: Vec::new(),
    })
}

/// Compiles one route into `gateway`, adding the providers it uses.
fn compile_route(
    route: &AIRoute,
    providers: &BTreeMap<ObjectRef, Option<Provider>>,
    gateway: &mut GatewayConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Route> {
    let object = object_ref(route);
    let spec = &route.spec;
    let errors_before = diagnostics.len();

    let mut aliases = Vec::new();
    let mut globs = Vec::new();
    for (index, model) in spec.models.iter().enumerate() {
        let list = if model.contains('*') {
            &mut globs
        } else {
            &mut aliases
        };
        if list.contains(model) {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("spec.models[{index}]"),
                reason::INVALID,
                format!("model {model:?} is listed twice"),
            ));
        }
        list.push(model.clone());
    }

    let mut headers: Vec<(String, String)> = Vec::new();
    for (index, header) in spec.headers.iter().enumerate() {
        let name = header.name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("spec.headers[{index}].name"),
                reason::INVALID,
                "not a valid HTTP header name",
            ));
        }
        if headers.iter().any(|(n, _)| *n == name) {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("spec.headers[{index}].name"),
                reason::INVALID,
                format!("header {name:?} is matched twice"),
            ));
        }
        headers.push((name, header.value.clone()));
    }
    headers.sort();

    // Resolve backends against a scratch provider list so a failed route
    // adds nothing to the gateway.
    let mut wanted: Vec<(Provider, Backend)> = Vec::new();
    for (index, backend) in spec.backends.iter().enumerate() {
        let field = format!("spec.backends[{index}]");
        let provider_ref = ObjectRef::new(
            "ModelProvider",
            &object.namespace,
            &backend.provider_ref.name,
        );
        let provider = match providers.get(&provider_ref) {
            None => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    format!("{field}.providerRef.name"),
                    reason::PROVIDER_NOT_FOUND,
                    format!(
                        "ModelProvider {:?} not found in namespace {}",
                        provider_ref.name, provider_ref.namespace
                    ),
                ));
                continue;
            }
            Some(None) => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    format!("{field}.providerRef.name"),
                    reason::PROVIDER_NOT_FOUND,
                    format!(
                        "ModelProvider {:?} is invalid; see its diagnostics",
                        provider_ref.name
                    ),
                ));
                continue;
            }
            Some(Some(provider)) => provider,
        };
        if !provider.models.is_empty() && !provider.models.contains_key(&backend.model) {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("{field}.model"),
                reason::INVALID,
                format!(
                    "model {:?} is not in the catalog of ModelProvider {:?}",
                    backend.model, provider.name
                ),
            ));
            continue;
        }
        if backend.weight > 100 {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("{field}.weight"),
                reason::INVALID,
                "weight must be between 0 and 100",
            ));
            continue;
        }
        wanted.push((
            provider.clone(),
            Backend {
                provider: 0,
                model: backend.model.clone(),
                pass_model: false,
                weight: backend.weight,
                priority: backend.priority,
            },
        ));
    }
    if spec.backends.is_empty() || spec.backends.iter().all(|b| b.weight == 0) {
        diagnostics.push(Diagnostic::error(
            &object,
            "spec.backends",
            reason::INVALID,
            "at least one backend with a non-zero weight is required",
        ));
    }

    let timeouts = spec.timeouts.clone().unwrap_or_default();
    let request = parse_duration_ms(
        timeouts.request.as_ref(),
        None,
        &object,
        "spec.timeouts.request",
        diagnostics,
    );
    let idle = parse_duration_ms(
        timeouts.stream_idle.as_ref(),
        None,
        &object,
        "spec.timeouts.streamIdle",
        diagnostics,
    );

    if diagnostics.len() > errors_before {
        return None;
    }
    // Add providers first, then index: an insert shifts later indices.
    for (provider, _) in &wanted {
        if !gateway.providers.iter().any(|p| p.name == provider.name) {
            insert_sorted(
                &mut gateway.providers,
                provider.clone(),
                &mut gateway.routes,
            );
        }
    }
    let mut backends = Vec::with_capacity(wanted.len());
    for (provider, mut backend) in wanted {
        backend.provider = gateway
            .providers
            .iter()
            .position(|p| p.name == provider.name)
            .unwrap_or_default();
        backends.push(backend);
    }
    Some(Route {
        name: format!("{}/{}", object.namespace, object.name),
        aliases,
        globs,
        headers,
        backends,
        request_timeout_ms: request.ok().flatten(),
        stream_idle_timeout_ms: idle.ok().flatten(),
    })
}

/// Keeps providers sorted by name (for deterministic output) and re-points
/// the backends of routes already compiled.
fn insert_sorted(providers: &mut Vec<Provider>, provider: Provider, routes: &mut [Route]) {
    let at = providers.partition_point(|p| p.name < provider.name);
    providers.insert(at, provider);
    for backend in routes.iter_mut().flat_map(|r| r.backends.iter_mut()) {
        if backend.provider >= at {
            backend.provider += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Loaded, add_documents};
    use crate::snapshot::SnapshotError;

    const BASE: &str = r#"
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

    fn load(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "test.yaml", text, &|_| None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded
    }

    fn gw() -> ObjectRef {
        ObjectRef::new("AIGateway", "default", "gw")
    }

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
            config.api_keys[0].sha256,
            snapshot::api_key_digest("tg-demo"),
            "trailing newline is trimmed"
        );
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
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
        assert_eq!(config.providers[route.backends[0].provider].name, "zeta");
        assert_eq!(config.providers[route.backends[1].provider].name, "alpha");
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
    fn dangling_provider_reference_excludes_only_that_route() {
        let text = format!(
            "{BASE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: broken}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [other]\n  backends: [{{providerRef: {{name: nope}}, model: m}}]\n"
        );
        let compiled = compile(&load(&text).resources);
        assert_eq!(compiled.diagnostics.len(), 1);
        let d = &compiled.diagnostics[0];
        assert_eq!(d.reason, reason::PROVIDER_NOT_FOUND);
        assert_eq!(
            d.to_string(),
            "test.yaml:AIRoute/broken: spec.backends[0].providerRef.name: ModelProvider \"nope\" not found in namespace default"
        );
        let config = &compiled.snapshots[&gw()].config;
        assert_eq!(config.routes.len(), 1, "the good route still serves");
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
        let canary = routes.iter().find(|r| r.name == "default/canary").unwrap();
        assert_eq!(
            canary.headers,
            [("x-canary".to_string(), "yes".to_string())]
        );
    }

    #[test]
    fn missing_secret_and_catalog_misses_name_the_field() {
        let text = BASE.replace("key: openai", "key: nokey");
        let compiled = compile(&load(&text).resources);
        let messages: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(messages.iter().any(|m| m == "test.yaml:ModelProvider/alpha: spec.credentials.secretRef: Secret \"keys\" has no key \"nokey\""), "{messages:?}");
        assert!(messages.iter().any(|m| m.starts_with("test.yaml:AIRoute/chat: spec.backends[1].providerRef.name: ModelProvider \"alpha\" is invalid")), "{messages:?}");

        let text = BASE.replace("model: gpt-4o-mini, weight", "model: gpt-5, weight");
        let compiled = compile(&load(&text).resources);
        assert_eq!(compiled.diagnostics[0].field, "spec.backends[1].model");
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_reported_on_the_provider() {
        let text = BASE.replace("openai: sk-test", "openai: \"sk-a\\nsk-b\"");
        let compiled = compile(&load(&text).resources);
        let d = compiled
            .diagnostics
            .iter()
            .find(|d| d.object.as_ref().is_some_and(|o| o.name == "alpha"))
            .unwrap();
        assert_eq!(d.field, "spec.credentials.secretRef");
        assert!(d.message.contains("HTTP header"), "{}", d.message);
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
