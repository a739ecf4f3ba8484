//! AIRoute: aliases, header matches and backends, resolved against providers.

use std::collections::BTreeMap;

use tollgate_api::AIRoute;
use tollgate_api::conditions::reason;
use tollgate_api::route::{
    ALIASES_UNIQUE_MESSAGE, BACKENDS_WEIGHT_MESSAGE, HEADERS_UNIQUE_MESSAGE, PASS_THROUGH_MESSAGE,
};

use super::parse_duration_ms;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::resources::object_ref;
use crate::snapshot::{Backend, GatewayConfig, Provider, Route};

/// Compiles one route into `gateway`, adding the providers it uses.
pub(super) fn compile_route(
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
                format!("{ALIASES_UNIQUE_MESSAGE}: {model:?} is listed twice"),
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
                format!("{HEADERS_UNIQUE_MESSAGE}: {name:?} is matched twice"),
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
        // No model: pass the client's through. Only a glob can match names
        // nobody listed, and such a name cannot be checked against the catalog.
        let model = match &backend.model {
            Some(model) => model.clone(),
            None if globs.is_empty() => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    format!("{field}.model"),
                    reason::INVALID,
                    PASS_THROUGH_MESSAGE,
                ));
                continue;
            }
            None => String::new(),
        };
        let pass_model = backend.model.is_none();
        if !pass_model && !provider.models.is_empty() && !provider.models.contains_key(&model) {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("{field}.model"),
                reason::INVALID,
                format!(
                    "model {model:?} is not in the catalog of ModelProvider {:?}",
                    provider.name
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
                model: model.into(),
                pass_model,
                weight: backend.weight,
                priority: backend.priority,
            },
        ));
    }
    if spec.backends.is_empty() {
        diagnostics.push(Diagnostic::error(
            &object,
            "spec.backends",
            reason::INVALID,
            "at least one backend is required",
        ));
    } else if spec.backends.iter().all(|b| b.weight == 0) {
        diagnostics.push(Diagnostic::error(
            &object,
            "spec.backends",
            reason::INVALID,
            BACKENDS_WEIGHT_MESSAGE,
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
        name: format!("{}/{}", object.namespace, object.name).into(),
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
    use super::super::compile;
    use super::super::fixtures::{BASE, gw, load};
    use tollgate_api::conditions::reason;

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
    fn backend_without_model_passes_the_client_model_through() {
        // alpha has a catalog (gpt-4o-mini only): a passed-through name skips it.
        let text = format!(
            "{BASE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: any}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [\"o*\"]\n  backends: [{{providerRef: {{name: alpha}}}}]\n"
        );
        let compiled = compile(&load(&text).resources);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let config = &compiled.snapshots[&gw()].config;
        let route = config
            .routes
            .iter()
            .find(|r| *r.name == *"default/any")
            .unwrap();
        assert_eq!(&*route.backends[0].model, "");
        assert!(route.backends[0].pass_model);
        assert_eq!(&*config.providers[route.backends[0].provider].name, "alpha");
        let chat = config
            .routes
            .iter()
            .find(|r| *r.name == *"default/chat")
            .unwrap();
        assert!(chat.backends.iter().all(|b| !b.pass_model));
    }

    #[test]
    fn backend_without_model_needs_a_glob() {
        let text = format!(
            "{BASE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: exact}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [other]\n  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n"
        );
        let mut resources = load(&text).resources;
        // CEL refuses this manifest; compile must too (the apiserver may run older CRDs).
        let route = resources
            .routes
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some("exact"))
            .unwrap();
        route.spec.backends[0].model = None;
        let compiled = compile(&resources);
        assert_eq!(compiled.diagnostics.len(), 1, "{:?}", compiled.diagnostics);
        let d = &compiled.diagnostics[0];
        assert_eq!(d.field, "spec.backends[0].model");
        assert!(d.message.contains("glob"), "{}", d.message);
        assert_eq!(compiled.snapshots[&gw()].config.routes.len(), 1);
    }
}
