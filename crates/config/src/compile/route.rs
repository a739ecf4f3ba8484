//! AIRoute: aliases, header matches and backends, resolved against providers.

use std::collections::BTreeMap;

use tollgate_api::conditions::reason;
use tollgate_api::route::{
    ALIASES_UNIQUE_MESSAGE, BACKEND_TIER_MESSAGE, BACKENDS_WEIGHT_MESSAGE, DEFAULT_TIER_MESSAGE,
    ENDPOINTS_UNIQUE_MESSAGE, HEADERS_UNIQUE_MESSAGE, PASS_THROUGH_MESSAGE,
    PRINCIPAL_MATCH_EMPTY_MESSAGE, TIER_EMPTY_MESSAGE, TIER_NAME_MESSAGE, TIER_POLICY_MESSAGE,
    TIERS_UNIQUE_MESSAGE,
};
use tollgate_api::{AIRoute, ModelKind};

use super::parse_duration_ms;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::resources::object_ref;
use crate::snapshot::{Backend, Endpoints, GatewayConfig, Provider, Resilience, Route, Tiers};

/// Compiles one route into `gateway`, adding the providers it uses.
pub(super) fn compile_route(
    route: &AIRoute,
    providers: &BTreeMap<ObjectRef, Option<Provider>>,
    config_maps: &super::prompt::ConfigMapIndex<'_>,
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

    let mut principals = Vec::with_capacity(spec.principals.len());
    for (index, entry) in spec.principals.iter().enumerate() {
        let subject = crate::snapshot::budget::Subject {
            user: entry.user.clone(),
            team: entry.team.clone(),
            app: entry.app.clone(),
            key: None,
            match_labels: entry.match_labels.clone(),
            per_member: None,
        };
        if subject == crate::snapshot::budget::Subject::default() {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("spec.principals[{index}]"),
                reason::INVALID,
                PRINCIPAL_MATCH_EMPTY_MESSAGE,
            ));
        }
        principals.push(subject);
    }

    let tiers = tiers(spec, &object, diagnostics);

    // Resolve backends against a scratch provider list so a failed route
    // adds nothing to the gateway.
    let mut wanted: Vec<(Provider, Backend)> = Vec::new();
    for (index, backend) in spec.backends.iter().enumerate() {
        let field = format!("spec.backends[{index}]");
        let tier = match (&tiers, &backend.tier) {
            (None, None) => Some(0),
            (Some(tiers), Some(name)) => tiers.names.iter().position(|n| **n == **name),
            _ => None,
        };
        let Some(tier) = tier else {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("{field}.tier"),
                reason::INVALID,
                BACKEND_TIER_MESSAGE,
            ));
            continue;
        };
        let Some(provider) = resolve_provider(
            providers,
            &object,
            &backend.provider_ref.name,
            &field,
            diagnostics,
        ) else {
            continue;
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
                tier,
                long_context: false,
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

    if let Some(tiers) = &tiers {
        for (index, name) in tiers.names.iter().enumerate() {
            let served = spec
                .backends
                .iter()
                .any(|b| b.weight != 0 && b.tier.as_deref() == Some(&**name));
            if !served {
                diagnostics.push(Diagnostic::error(
                    &object,
                    format!("spec.tiers[{index}]"),
                    reason::INVALID,
                    format!("{TIER_EMPTY_MESSAGE}: no backend serves {name:?}"),
                ));
            }
        }
    }

    let endpoints = endpoints(spec, &object, &wanted, diagnostics);
    let long_context = context_fallback(spec, &object, providers, diagnostics);
    let resilience = resilience(spec, &object, !long_context.is_empty(), diagnostics);

    let prompts = spec
        .prompts
        .as_ref()
        .map(|p| {
            let refs = super::prompt::ContextRefs {
                config_maps,
                mcp_servers: &gateway.mcp_servers,
            };
            super::prompt::prompts(p, &refs, &object, diagnostics).map(Box::new)
        })
        .transpose();

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

    if diagnostics[errors_before..]
        .iter()
        .any(Diagnostic::is_error)
    {
        return None;
    }
    // Weight 0: the long-context models are never drawn, only appended.
    wanted.extend(long_context);
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
    let guard = match &spec.guard_policy {
        None => gateway.default_guard,
        Some(name) => match gateway.guard_policies.iter().position(|p| &p.name == name) {
            Some(index) => Some(index),
            None => {
                // Unguarded is not a fallback for a route that asked for a
                // policy: it is not served until the policy exists.
                diagnostics.push(Diagnostic::error(
                    &object,
                    "spec.guardPolicy",
                    reason::INVALID,
                    format!(
                        "AIGateway {} defines no guard policy {name:?}",
                        spec.gateway_ref.name
                    ),
                ));
                return None;
            }
        },
    };
    Some(Route {
        name: format!("{}/{}", object.namespace, object.name).into(),
        aliases,
        globs,
        headers,
        principals,
        backends,
        request_timeout_ms: request.ok().flatten(),
        stream_idle_timeout_ms: idle.ok().flatten(),
        endpoints,
        tiers: tiers.map(Box::new),
        allowed_regions: spec.allowed_regions.clone(),
        resilience: resilience?,
        guard,
        prompts: prompts.ok()?,
    })
}

/// The ModelProvider `name` of the route's namespace, or a diagnostic on
/// `field` saying why not.
pub(super) fn resolve_provider<'a>(
    providers: &'a BTreeMap<ObjectRef, Option<Provider>>,
    object: &ObjectRef,
    name: &str,
    field: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<&'a Provider> {
    let provider_ref = ObjectRef::new("ModelProvider", &object.namespace, name);
    let message = match providers.get(&provider_ref) {
        Some(Some(provider)) => return Some(provider),
        None => format!(
            "ModelProvider {:?} not found in namespace {}",
            provider_ref.name, provider_ref.namespace
        ),
        Some(None) => format!(
            "ModelProvider {:?} is invalid; see its diagnostics",
            provider_ref.name
        ),
    };
    diagnostics.push(Diagnostic::error(
        object,
        format!("{field}.providerRef.name"),
        reason::PROVIDER_NOT_FOUND,
        message,
    ));
    None
}

/// `spec.contextFallback`, resolved: weight-0 backends marked long-context,
/// whose models must be in their providers' catalogs when those list any.
fn context_fallback(
    spec: &tollgate_api::AIRouteSpec,
    object: &ObjectRef,
    providers: &BTreeMap<ObjectRef, Option<Provider>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(Provider, Backend)> {
    let mut resolved = Vec::new();
    for (index, fallback) in spec.context_fallback.iter().enumerate() {
        let field = format!("spec.contextFallback[{index}]");
        let Some(provider) = resolve_provider(
            providers,
            object,
            &fallback.provider_ref.name,
            &field,
            diagnostics,
        ) else {
            continue;
        };
        if !provider.models.is_empty() && !provider.models.contains_key(&fallback.model) {
            diagnostics.push(Diagnostic::error(
                object,
                format!("{field}.model"),
                reason::INVALID,
                format!(
                    "model {:?} is not in the catalog of ModelProvider {:?}",
                    fallback.model, provider.name
                ),
            ));
            continue;
        }
        resolved.push((
            provider.clone(),
            Backend {
                provider: 0,
                model: fallback.model.as_str().into(),
                pass_model: false,
                weight: 0,
                priority: 0,
                tier: 0,
                long_context: true,
            },
        ));
    }
    resolved
}

/// Default first backoff before a retry.
const DEFAULT_BACKOFF_MS: u64 = 100;
/// Default longest backoff.
const DEFAULT_MAX_BACKOFF_MS: u64 = 2_000;

/// Retries, per-attempt timeouts and balancing; `None` after a diagnostic.
fn resilience(
    spec: &tollgate_api::AIRouteSpec,
    object: &ObjectRef,
    has_long_context: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Resilience> {
    let timeouts = spec.timeouts.clone().unwrap_or_default();
    let attempt = parse_duration_ms(
        timeouts.attempt.as_ref(),
        None,
        object,
        "spec.timeouts.attempt",
        diagnostics,
    );
    let first_token = parse_duration_ms(
        timeouts.first_token.as_ref(),
        None,
        object,
        "spec.timeouts.firstToken",
        diagnostics,
    );
    let retries = spec.retries.clone().unwrap_or_default();
    if retries.attempts > 10 {
        diagnostics.push(Diagnostic::error(
            object,
            "spec.retries.attempts",
            reason::INVALID,
            "attempts must be between 0 and 10",
        ));
        return None;
    }
    let (backoff, max_backoff) = if retries.attempts == 0 {
        (Ok(None), Ok(None))
    } else {
        (
            parse_duration_ms(
                retries.backoff.as_ref(),
                Some(DEFAULT_BACKOFF_MS),
                object,
                "spec.retries.backoff",
                diagnostics,
            ),
            parse_duration_ms(
                retries.max_backoff.as_ref(),
                Some(DEFAULT_MAX_BACKOFF_MS),
                object,
                "spec.retries.maxBackoff",
                diagnostics,
            ),
        )
    };
    let backoff_ms = backoff.ok()?.unwrap_or(0);
    Some(Resilience {
        retries: retries.attempts,
        backoff_ms,
        max_backoff_ms: max_backoff.ok()?.unwrap_or(0).max(backoff_ms),
        attempt_timeout_ms: attempt.ok()?,
        first_token_timeout_ms: first_token.ok()?,
        weighted_only: spec.balancing == Some(tollgate_api::route::Balancing::Weighted),
        has_long_context,
    })
}

/// The route's smart-routing tiers, checked: names well formed and unique,
/// at least two, a policy only with tiers, a default tier that is listed.
/// Backends are matched to them by the caller.
fn tiers(
    spec: &tollgate_api::AIRouteSpec,
    object: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Tiers> {
    let policy = spec.tier_policy.clone().unwrap_or_default();
    let Some(declared) = &spec.tiers else {
        if spec.tier_policy.is_some() {
            diagnostics.push(Diagnostic::error(
                object,
                "spec.tierPolicy",
                reason::INVALID,
                TIER_POLICY_MESSAGE,
            ));
        }
        return None;
    };
    let mut names: Vec<std::sync::Arc<str>> = Vec::with_capacity(declared.len());
    for (index, tier) in declared.iter().enumerate() {
        let field = format!("spec.tiers[{index}].name");
        if !valid_tier_name(&tier.name) {
            diagnostics.push(Diagnostic::error(
                object,
                field,
                reason::INVALID,
                TIER_NAME_MESSAGE,
            ));
        } else if names.iter().any(|n| **n == *tier.name) {
            diagnostics.push(Diagnostic::error(
                object,
                field,
                reason::INVALID,
                format!("{TIERS_UNIQUE_MESSAGE}: {:?} is listed twice", tier.name),
            ));
        }
        names.push(tier.name.as_str().into());
    }
    if !(2..=8).contains(&names.len()) {
        diagnostics.push(Diagnostic::error(
            object,
            "spec.tiers",
            reason::INVALID,
            "between two and eight tiers are needed",
        ));
    }
    let default_tier = match &policy.default_tier {
        None => names.len().saturating_sub(1),
        Some(name) => match names.iter().position(|n| **n == **name) {
            Some(index) => index,
            None => {
                diagnostics.push(Diagnostic::error(
                    object,
                    "spec.tierPolicy.defaultTier",
                    reason::INVALID,
                    format!("{DEFAULT_TIER_MESSAGE}: {name:?} is not listed"),
                ));
                0
            }
        },
    };
    Some(Tiers {
        names,
        classifier: policy.classifier,
        default_tier,
        long_prompt_tokens: policy
            .long_prompt_tokens
            .unwrap_or(Tiers::DEFAULT_LONG_PROMPT_TOKENS)
            .max(1),
        deep_conversation_turns: policy
            .deep_conversation_turns
            .unwrap_or(Tiers::DEFAULT_DEEP_CONVERSATION_TURNS)
            .max(1),
    })
}

/// `^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`, as the CEL rule says.
fn valid_tier_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-' || *b == b'_')
}

/// The endpoints a route serves: `spec.endpoints` when given (checked
/// against the catalog kinds of its backends' models), else what those
/// models are: chat, embedding, or all four when a backend passes the
/// client's model through or the backends mix kinds (with a warning).
fn endpoints(
    spec: &tollgate_api::AIRouteSpec,
    object: &ObjectRef,
    backends: &[(Provider, Backend)],
    diagnostics: &mut Vec<Diagnostic>,
) -> Endpoints {
    // Per backend: its model's kind, and whether the catalog said so.
    let kinds: Vec<Option<(ModelKind, bool)>> = backends
        .iter()
        .map(|(provider, backend)| {
            if backend.pass_model {
                return None;
            }
            Some(match provider.models.get(&*backend.model) {
                Some(entry) => (entry.kind, true),
                None => (ModelKind::guess(&backend.model), false),
            })
        })
        .collect();
    let served_by = |kind: ModelKind| match kind {
        ModelKind::Chat => Endpoints::CHAT,
        ModelKind::Embedding => Endpoints::EMBEDDINGS,
    };

    if !spec.endpoints.is_empty() {
        let declared = Endpoints::of(&spec.endpoints);
        if declared.iter().count() != spec.endpoints.len() {
            diagnostics.push(Diagnostic::error(
                object,
                "spec.endpoints",
                reason::INVALID,
                ENDPOINTS_UNIQUE_MESSAGE,
            ));
        }
        // Only a catalog's word is firm enough to refuse a route over.
        for ((provider, backend), kind) in backends.iter().zip(&kinds) {
            if let Some((kind, true)) = kind
                && let Some(wrong) = declared.iter().find(|e| !served_by(*kind).contains(*e))
            {
                diagnostics.push(Diagnostic::error(
                    object,
                    "spec.endpoints",
                    reason::INVALID,
                    format!(
                        "{wrong:?} is not served by model {:?}, a {kind:?} model in the catalog of ModelProvider {:?}",
                        backend.model, provider.name
                    ),
                ));
            }
        }
        return declared;
    }

    // What the known models serve; both chat and embedding make every endpoint.
    let known = kinds
        .iter()
        .flatten()
        .map(|(kind, _)| served_by(*kind))
        .reduce(Endpoints::union);
    if known == Some(Endpoints::ALL) {
        diagnostics.push(Diagnostic::warning(
            object,
            "spec.backends",
            reason::INVALID,
            "the backends mix chat and embedding models, so the route serves every endpoint; set spec.endpoints to say which it serves",
        ));
    }
    // A pass-through backend (kind unknown) may serve anything.
    match known {
        Some(served) if kinds.iter().all(Option::is_some) => served,
        _ => Endpoints::ALL,
    }
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
    use super::super::fixtures::compile;
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
    fn guard_policies_resolve_by_name_with_the_gateway_default() {
        let guarded = BASE.replace(
            "    principal: {user: demo, team: platform}\n",
            "    principal: {user: demo, team: platform}\n  guardPolicies:\n  - {name: strict, input: {pii: {action: Mask}}}\n  - {name: light, output: {pii: {entities: [SECRET]}}}\n  defaultGuardPolicy: light\n",
        );
        let route = |name: &str, policy: &str| {
            format!(
                "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [{name}]\n{policy}  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n"
            )
        };
        let text = format!(
            "{guarded}{}{}",
            route("strict", "  guardPolicy: strict\n"),
            route("typo", "  guardPolicy: strikt\n")
        );
        let compiled = compile(&load(&text).resources);
        // The route naming a missing policy is not served: unguarded is no
        // fallback. The others are.
        assert_eq!(compiled.diagnostics.len(), 1, "{:?}", compiled.diagnostics);
        let d = &compiled.diagnostics[0];
        assert_eq!(
            d.to_string(),
            "test.yaml:AIRoute/typo: spec.guardPolicy: AIGateway gw defines no guard policy \"strikt\""
        );
        let config = &compiled.snapshots[&gw()].config;
        let guard_of = |name: &str| {
            config
                .routes
                .iter()
                .find(|r| *r.name == *format!("default/{name}"))
                .map(|r| r.guard)
        };
        assert_eq!(guard_of("strict"), Some(Some(0)));
        assert_eq!(guard_of("chat"), Some(Some(1)), "the default applies");
        assert_eq!(guard_of("typo"), None);
    }

    #[test]
    fn a_judge_must_exist_and_stay_within_the_gateways_regions() {
        let with = |judge: &str, regions: &str| {
            BASE.replace(
                "    principal: {user: demo, team: platform}\n",
                &format!("    principal: {{user: demo, team: platform}}\n  guardPolicies:\n  - {{name: j, input: {{injection: {{judge: {{providerRef: {{name: {judge}}}, model: m}}}}}}}}\n{regions}"),
            )
        };
        // Resolved: the judge's provider joins the gateway's providers.
        let compiled = compile(&load(&with("alpha", "")).resources);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let judge_field = "spec.guardPolicies[0].input.injection.judge.providerRef.name";
        let errors_on_judge = |text: String| {
            let compiled = compile(&load(&text).resources);
            compiled
                .diagnostics
                .iter()
                .filter(|d| d.field == judge_field)
                .map(|d| d.message.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            errors_on_judge(with("nope", "")),
            ["ModelProvider \"nope\" not found in namespace default"]
        );
        // Moderation speaks the OpenAI moderation API.
        let moderation = BASE.replace(
            "    principal: {user: demo, team: platform}\n",
            "    principal: {user: demo, team: platform}\n  guardPolicies:\n  - {name: m, input: {moderation: {providerRef: {name: claude}}}}\n",
        ) + "---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {name: claude}\nspec: {type: Anthropic, credentials: {secretRef: {name: keys, key: openai}}}\n";
        let compiled = compile(&load(&moderation).resources);
        assert!(
            compiled.diagnostics.iter().any(|d| d.field
                == "spec.guardPolicies[0].input.moderation.providerRef.name"
                && d.message.contains("OpenAI moderation API")),
            "{:?}",
            compiled.diagnostics
        );
        // A judge is sent prompts: outside the allowed regions it is refused.
        let outside = errors_on_judge(with("alpha", "  allowedRegions: [eu-*]\n"));
        assert_eq!(outside.len(), 1, "{outside:?}");
        assert!(
            outside[0].contains("outside the gateway's allowedRegions"),
            "{outside:?}"
        );
    }

    #[test]
    fn a_broken_guard_policy_stops_the_gateways_new_config() {
        let text = BASE.replace(
            "    principal: {user: demo, team: platform}\n",
            "    principal: {user: demo, team: platform}\n  guardPolicies:\n  - {name: bad, output: {custom: [{name: X, pattern: '(unclosed'}]}}\n  defaultGuardPolicy: nope\n",
        );
        let compiled = compile(&load(&text).resources);
        let fields: Vec<&str> = compiled
            .diagnostics
            .iter()
            .map(|d| d.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.guardPolicies[0].output.custom[0]",
                "spec.defaultGuardPolicy",
                // The route: its gateway is not accepted.
                "spec.gatewayRef.name",
            ]
        );
        assert!(!compiled.snapshots.contains_key(&gw()));
    }

    /// The gateway's config and route `name` of a compile without diagnostics.
    fn clean_route<'a>(
        compiled: &'a super::super::Compiled,
        name: &str,
    ) -> (
        &'a crate::snapshot::GatewayConfig,
        &'a crate::snapshot::Route,
    ) {
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let config = &compiled.snapshots[&gw()].config;
        let route = config
            .routes
            .iter()
            .find(|r| *r.name == *format!("default/{name}"))
            .unwrap();
        (config, route)
    }

    #[test]
    fn backend_without_model_passes_the_client_model_through() {
        // alpha has a catalog (gpt-4o-mini only): a passed-through name skips it.
        let text = format!(
            "{BASE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: any}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [\"o*\"]\n  backends: [{{providerRef: {{name: alpha}}}}]\n"
        );
        let compiled = compile(&load(&text).resources);
        let (config, route) = clean_route(&compiled, "any");
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
    fn retries_timeouts_balancing_and_context_fallback_compile() {
        let text = format!(
            "{BASE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: tough}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [tough]\n  timeouts: {{attempt: 2s, firstToken: 500ms}}\n  retries: {{attempts: 3}}\n  balancing: Weighted\n  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n  contextFallback: [{{providerRef: {{name: alpha}}, model: gpt-4o-mini}}]\n"
        );
        let compiled = compile(&load(&text).resources);
        let (config, route) = clean_route(&compiled, "tough");
        let r = &route.resilience;
        assert_eq!((r.retries, r.backoff_ms, r.max_backoff_ms), (3, 100, 2_000));
        assert_eq!(r.attempt_timeout_ms, Some(2_000));
        assert_eq!(r.first_token_timeout_ms, Some(500));
        assert!(r.weighted_only && r.has_long_context);
        let fallback = &route.backends[1];
        assert!(fallback.long_context);
        assert_eq!(fallback.weight, 0, "never drawn");
        assert_eq!(&*config.providers[fallback.provider].name, "alpha");
        // A route without any of it keeps the default, which the snapshot
        // omits (older snapshots hash the same).
        let (_, chat) = clean_route(&compiled, "chat");
        assert!(chat.resilience.is_default());

        // The fallback model must be in the provider's catalog.
        let text = text.replace("model: gpt-4o-mini}]", "model: gpt-5}]");
        let compiled = compile(&load(&text).resources);
        let d = &compiled.diagnostics[0];
        assert_eq!(d.field, "spec.contextFallback[0].model");
        assert!(d.message.contains("not in the catalog"), "{}", d.message);
    }

    #[test]
    fn routes_for_different_principals_share_an_alias() {
        let team_route = |name: &str, principals: &str| {
            format!(
                "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [chat]\n  principals: {principals}\n  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n"
            )
        };
        let text = format!(
            "{BASE}{}{}",
            team_route(
                "research",
                "[{team: research}, {user: ann, matchLabels: {tier: gold}}]"
            ),
            team_route("sales", "[{team: sales}]"),
        );
        let compiled = compile(&load(&text).resources);
        let (_, research) = clean_route(&compiled, "research");
        assert_eq!(research.principals.len(), 2);
        assert_eq!(research.principals[1].user.as_deref(), Some("ann"));
        let (_, sales) = clean_route(&compiled, "sales");
        assert_eq!(sales.principals[0].team.as_deref(), Some("sales"));

        // The same principals twice: the newer route loses the alias.
        let text = format!("{text}{}", team_route("sales-again", "[{team: sales}]"));
        let compiled = compile(&load(&text).resources);
        assert_eq!(compiled.diagnostics.len(), 1, "{:?}", compiled.diagnostics);
        assert_eq!(compiled.diagnostics[0].reason, reason::DUPLICATE_ALIAS);
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

    #[test]
    fn prompts_compile_to_data_and_a_broken_template_is_reported_on_its_field() {
        let route = |name: &str, content: &str| {
            format!(
                "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [{name}]\n  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n  prompts:\n    templates:\n    - version: v1\n      messages:\n      - {{role: system, content: \"fine {{{{ x }}}}\"}}\n      - {{role: user, content: \"{content}\"}}\n      variables: {{x: one}}\n    defaultVersion: v1\n    decorators: [{{position: Append, role: user, content: \"{{{{ principal.user }}}}\"}}]\n    context: [{{url: \"http://127.0.0.1:8000/policy.txt?v=2\", required: false}}]\n"
            )
        };
        let text = format!(
            "{BASE}{}{}",
            route("good", "Hello {{ x }}"),
            route("broken", "{{ x ")
        );
        let compiled = compile(&load(&text).resources);
        assert_eq!(compiled.diagnostics.len(), 1, "{:?}", compiled.diagnostics);
        let d = &compiled.diagnostics[0];
        assert_eq!(d.object.as_ref().unwrap().name, "broken");
        assert_eq!(d.field, "spec.prompts.templates[0].messages[1].content");
        assert!(d.message.starts_with("syntax error"), "{}", d.message);
        let (config, good) = clean_route_of(&compiled, "good");
        let prompts = good.prompts.as_deref().unwrap();
        assert_eq!(prompts.default_version, Some(0));
        assert_eq!(prompts.templates[0].variables["x"], "one");
        let source = &prompts.context[0];
        assert_eq!(
            (
                source.max_bytes,
                source.timeout_ms,
                source.cache_for_ms,
                source.required
            ),
            (65_536, 2_000, 60_000, false)
        );
        assert!(
            !config.routes.iter().any(|r| r.name.ends_with("broken")),
            "a broken template never reaches a gateway"
        );
        // A route without prompts has none in its snapshot (hashes as before).
        let (_, chat) = clean_route_of(&compiled, "chat");
        assert!(chat.prompts.is_none());
    }

    #[test]
    fn context_from_config_maps_and_mcp_resources_resolves_at_compile() {
        use crate::snapshot::prompt::ContextFrom;
        use tollgate_api::conditions::reason;
        let route = |name: &str, context: &str| {
            format!(
                "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [{name}]\n  backends: [{{providerRef: {{name: zeta}}, model: m}}]\n  prompts:\n    context: {context}\n"
            )
        };
        let text = [
            BASE.to_string(),
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: policy}\ndata: {refunds: \"Refunds within 30 days.\"}\nbinaryData: {logo: AAAA}\n".into(),
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: docs}\nspec:\n  gatewayRef: {name: gw}\n  url: http://127.0.0.1:9/mcp\n".into(),
            route(
                "both",
                "[{configMapKeyRef: {name: policy, key: refunds}, role: user}, {mcpResource: {server: docs, uri: \"docs://handbook\"}, maxBytes: 100}]",
            ),
            route("missing", "[{configMapKeyRef: {name: nope, key: refunds}}]"),
            route("optional", "[{configMapKeyRef: {name: nope, key: refunds}, required: false}]"),
            route("binary", "[{configMapKeyRef: {name: policy, key: logo}}]"),
            route("large", "[{configMapKeyRef: {name: policy, key: refunds}, maxBytes: 5}]"),
            route("other-server", "[{mcpResource: {server: tickets, uri: \"docs://a\"}}]"),
        ]
        .concat();
        let compiled = compile(&load(&text).resources);
        let problems: Vec<(&str, &str, &str, bool)> = compiled
            .diagnostics
            .iter()
            .map(|d| {
                (
                    d.object.as_ref().map_or("", |o| o.name.as_str()),
                    d.field.as_str(),
                    d.reason.as_str(),
                    d.is_error(),
                )
            })
            .collect();
        assert_eq!(
            problems,
            [
                (
                    "binary",
                    "spec.prompts.context[0].configMapKeyRef",
                    reason::CONFIG_MAP_NOT_FOUND,
                    true
                ),
                (
                    "large",
                    "spec.prompts.context[0].configMapKeyRef",
                    reason::INVALID,
                    true
                ),
                (
                    "missing",
                    "spec.prompts.context[0].configMapKeyRef",
                    reason::CONFIG_MAP_NOT_FOUND,
                    true
                ),
                (
                    "optional",
                    "spec.prompts.context[0].configMapKeyRef",
                    reason::CONFIG_MAP_NOT_FOUND,
                    false
                ),
                (
                    "other-server",
                    "spec.prompts.context[0].mcpResource.server",
                    reason::MCP_SERVER_NOT_FOUND,
                    true
                ),
            ],
            "{:?}",
            compiled.diagnostics
        );
        assert!(compiled.diagnostics[0].message.contains("binaryData"));
        let config = &compiled.snapshots[&gw()].config;
        let served: Vec<&str> = config.routes.iter().map(|r| r.name.as_ref()).collect();
        assert!(
            served.contains(&"default/both") && served.contains(&"default/optional"),
            "{served:?}"
        );
        for refused in ["binary", "large", "missing", "other-server"] {
            assert!(
                !served.contains(&format!("default/{refused}").as_str()),
                "{refused} is not served"
            );
        }
        let (_, both) = clean_route_of(&compiled, "both");
        let context = &both.prompts.as_deref().unwrap().context;
        assert_eq!(
            context[0].from,
            ContextFrom::Text {
                text: "Refunds within 30 days.".into(),
                origin: "configmap/default/policy/refunds".into()
            }
        );
        assert_eq!(context[0].role, tollgate_api::prompt::PromptRole::User);
        assert_eq!(
            context[1].from,
            ContextFrom::McpResource {
                server: "default/docs".into(),
                uri: "docs://handbook".into()
            }
        );
        assert_eq!(context[1].max_bytes, 100);
        let (_, optional) = clean_route_of(&compiled, "optional");
        assert!(optional.prompts.as_deref().unwrap().context.is_empty());
    }

    /// Like `clean_route`, ignoring other routes' diagnostics.
    fn clean_route_of<'a>(
        compiled: &'a super::super::Compiled,
        name: &str,
    ) -> (
        &'a crate::snapshot::GatewayConfig,
        &'a crate::snapshot::Route,
    ) {
        let config = &compiled.snapshots[&gw()].config;
        let route = config
            .routes
            .iter()
            .find(|r| *r.name == *format!("default/{name}"))
            .unwrap();
        (config, route)
    }

    fn route_endpoints(
        extra: &str,
        name: &str,
    ) -> (Vec<String>, Option<crate::snapshot::Endpoints>) {
        let text = format!("{BASE}---\n{extra}");
        let compiled = compile(&load(&text).resources);
        let diagnostics = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
        let endpoints = compiled.snapshots[&gw()]
            .config
            .routes
            .iter()
            .find(|r| *r.name == *format!("default/{name}"))
            .map(|r| r.endpoints);
        (diagnostics, endpoints)
    }

    #[test]
    fn endpoints_follow_the_models_unless_declared() {
        use crate::snapshot::Endpoints;
        // The fixture's chat route: a mock model by name, a catalog model of kind Chat.
        assert_eq!(route_endpoints("", "chat").1, Some(Endpoints::CHAT));
        // By name: "embed" in it.
        let embed = "apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: e}\nspec:\n  gatewayRef: {name: gw}\n  models: [e]\n  backends: [{providerRef: {name: zeta}, model: text-embedding-3-small}]\n";
        assert_eq!(
            route_endpoints(embed, "e"),
            (vec![], Some(Endpoints::EMBEDDINGS))
        );
        // Pass-through: the client's model could be anything.
        let any = "apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: any}\nspec:\n  gatewayRef: {name: gw}\n  models: [\"x-*\"]\n  backends: [{providerRef: {name: zeta}}]\n";
        assert_eq!(route_endpoints(any, "any"), (vec![], Some(Endpoints::ALL)));
        // Declared wins over the name.
        let declared = "apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: d}\nspec:\n  gatewayRef: {name: gw}\n  models: [d]\n  endpoints: [Messages]\n  backends: [{providerRef: {name: zeta}, model: embedder-but-chat}]\n";
        assert_eq!(
            route_endpoints(declared, "d"),
            (
                vec![],
                Some(Endpoints::of(&[tollgate_api::RouteEndpoint::Messages]))
            )
        );
    }

    #[test]
    fn mixed_kinds_warn_and_serve_everything() {
        use crate::snapshot::Endpoints;
        let mixed = "apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: m}\nspec:\n  gatewayRef: {name: gw}\n  models: [m]\n  backends:\n  - {providerRef: {name: zeta}, model: mock-embed}\n  - {providerRef: {name: zeta}, model: mock-chat, priority: 1}\n";
        let (diagnostics, endpoints) = route_endpoints(mixed, "m");
        assert_eq!(endpoints, Some(Endpoints::ALL));
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(
            diagnostics[0].contains("mix chat and embedding"),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn declared_endpoints_must_agree_with_the_catalog() {
        let wrong = "apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: w}\nspec:\n  gatewayRef: {name: gw}\n  models: [w]\n  endpoints: [ChatCompletions, Embeddings]\n  backends: [{providerRef: {name: alpha}, model: gpt-4o-mini}]\n";
        let (diagnostics, endpoints) = route_endpoints(wrong, "w");
        assert_eq!(endpoints, None, "the route is refused");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(
            diagnostics[0].contains(
                "spec.endpoints: Embeddings is not served by model \"gpt-4o-mini\", a Chat model"
            ),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn tiers_compile_to_indexes_and_disagreements_name_the_field() {
        let tiered = "apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: t}\nspec:\n  gatewayRef: {name: gw}\n  models: [t]\n  tiers: [{name: cheap}, {name: strong}]\n  tierPolicy: {defaultTier: cheap, longPromptTokens: 500}\n  backends:\n  - {providerRef: {name: zeta}, model: mock-chat, tier: strong}\n  - {providerRef: {name: zeta}, model: mock-chat, tier: cheap}\n";
        let compiled = compile(&load(&format!("{BASE}---\n{tiered}")).resources);
        let (config, route) = clean_route(&compiled, "t");
        let tiers = route.tiers.as_deref().unwrap();
        assert_eq!(
            tiers.names.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["cheap", "strong"]
        );
        assert_eq!((tiers.default_tier, tiers.long_prompt_tokens), (0, 500));
        assert_eq!(
            tiers.deep_conversation_turns,
            crate::snapshot::Tiers::DEFAULT_DEEP_CONVERSATION_TURNS
        );
        assert_eq!(
            route.backends.iter().map(|b| b.tier).collect::<Vec<_>>(),
            [1, 0]
        );
        let plain = config
            .routes
            .iter()
            .find(|r| *r.name == *"default/chat")
            .unwrap();
        assert!(plain.tiers.is_none(), "no tiers, nothing to pay");

        // CEL refuses all of these; compile must too (the apiserver may run older CRDs).
        type Edit = fn(&mut tollgate_api::AIRouteSpec);
        let cases: [(Edit, &str); 5] = [
            (|s| s.backends[1].tier = None, "spec.backends[1].tier"),
            (
                |s| s.backends[0].tier = Some("gold".into()),
                "spec.backends[0].tier",
            ),
            (
                |s| s.tier_policy.as_mut().unwrap().default_tier = Some("gold".into()),
                "spec.tierPolicy.defaultTier",
            ),
            (
                |s| {
                    s.tiers.as_mut().unwrap().push(tollgate_api::RouteTier {
                        name: "spare".into(),
                    })
                },
                "spec.tiers[2]",
            ),
            (
                |s| s.tiers.as_mut().unwrap()[1].name = "Strong!".into(),
                "spec.tiers[1].name",
            ),
        ];
        for (edit, field) in cases {
            let mut resources = load(&format!("{BASE}---\n{tiered}")).resources;
            let route = resources
                .routes
                .iter_mut()
                .find(|r| r.metadata.name.as_deref() == Some("t"))
                .unwrap();
            edit(&mut route.spec);
            let compiled = compile(&resources);
            let fields: Vec<&str> = compiled
                .diagnostics
                .iter()
                .map(|d| d.field.as_str())
                .collect();
            assert!(fields.contains(&field), "{field}: {fields:?}");
            let config = &compiled.snapshots[&gw()].config;
            assert!(
                !config.routes.iter().any(|r| *r.name == *"default/t"),
                "{field}: refused"
            );
        }
    }
}
