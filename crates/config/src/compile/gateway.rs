//! AIGateway: ports, limits and client keys.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tollgate_api::conditions::reason;
use tollgate_api::{AIGateway, SecretKeyRef, keys};

use super::{
    DEFAULT_ADMIN_PORT, DEFAULT_LISTENER_PORT, DEFAULT_MAX_REQUEST_BODY_BYTES,
    DEFAULT_REQUEST_TIMEOUT_MS, SecretIndex, parse_duration_ms,
};
use crate::diagnostics::Diagnostic;
use crate::digest::DigestKey;
use crate::resources::object_ref;
use crate::snapshot::{self, ApiKey, GatewayConfig, Limits, Principal};

/// One key from a Secret labelled [`keys::API_KEY_LABEL`].
fn labelled_key(
    secret: &Secret,
    secrets: &SecretIndex,
    namespace: &str,
    digest_key: &DigestKey,
) -> Result<ApiKey, String> {
    let name = secret.name_any();
    let reference = SecretKeyRef {
        name: name.clone(),
        key: keys::KEY_DATA.to_string(),
    };
    let key = secrets
        .value(namespace, &reference)
        .map_err(|(_, message)| message)?;
    let annotations = secret.annotations();
    let annotation = |name: &str| annotations.get(name).filter(|v| !v.is_empty()).cloned();
    let expires_at = match annotation(keys::EXPIRES_AT_ANNOTATION) {
        None => None,
        Some(text) => {
            let instant: Timestamp = text.parse().map_err(|_| {
                format!(
                    "{} {text:?} is not an RFC 3339 instant",
                    keys::EXPIRES_AT_ANNOTATION
                )
            })?;
            Some(u64::try_from(instant.as_second()).unwrap_or(0))
        }
    };
    let labels = match annotation(keys::LABELS_ANNOTATION) {
        None => BTreeMap::new(),
        Some(text) => parse_labels(&text).ok_or_else(|| {
            format!(
                "{} {text:?} is not a list of key=value pairs separated by commas",
                keys::LABELS_ANNOTATION
            )
        })?,
    };
    Ok(ApiKey {
        digest: snapshot::api_key_digest(digest_key, &key),
        principal: Principal {
            user: annotation(keys::USER_ANNOTATION).unwrap_or(name),
            team: annotation(keys::TEAM_ANNOTATION),
            app: annotation(keys::APP_ANNOTATION),
            key: secret.name_any(),
            labels,
        },
        expires_at,
    })
}

/// Default for `spec.redis.timeout`.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 250;

fn compile_redis(
    spec: &tollgate_api::gateway::RedisSpec,
    secrets: &SecretIndex,
    object: &crate::diagnostics::ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<snapshot::RedisConfig> {
    let mut valid = true;
    if !is_redis_url(&spec.url) {
        diagnostics.push(Diagnostic::error(
            object,
            "spec.redis.url",
            reason::INVALID,
            tollgate_api::gateway::REDIS_URL_MESSAGE,
        ));
        valid = false;
    }
    let password = match &spec.password_secret_ref {
        None => None,
        Some(reference) => match secrets.value(&object.namespace, reference) {
            Ok(password) => Some(snapshot::Credential(password)),
            Err((why, message)) => {
                diagnostics.push(Diagnostic::error(
                    object,
                    "spec.redis.passwordSecretRef",
                    why,
                    message,
                ));
                valid = false;
                None
            }
        },
    };
    let timeout = parse_duration_ms(
        spec.timeout.as_ref(),
        Some(DEFAULT_REDIS_TIMEOUT_MS),
        object,
        "spec.redis.timeout",
        diagnostics,
    );
    let timeout_ms = timeout.ok()?.unwrap_or(DEFAULT_REDIS_TIMEOUT_MS);
    valid.then(|| snapshot::RedisConfig {
        url: spec.url.clone(),
        username: spec.username.clone().filter(|u| !u.is_empty()),
        password,
        timeout_ms,
    })
}

/// The CEL rule on `spec.redis.url`, for files.
fn is_redis_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return false;
    };
    let (host, db) = rest.split_once('/').unwrap_or((rest, ""));
    let db_ok = rest.find('/').is_none()
        || (!db.is_empty() && db.len() <= 2 && db.bytes().all(|b| b.is_ascii_digit()));
    !host.is_empty() && !host.contains('@') && db_ok
}

/// `env=prod, cost-center=42` as a map; `None` when a pair has no `=` or
/// an empty key.
pub fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_string(), value.trim().to_string()))
        })
        .collect()
}

pub(super) fn compile_gateway(
    gateway: &AIGateway,
    secrets: &SecretIndex,
    digest_key: &DigestKey,
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

    let stream_write_timeout = parse_duration_ms(
        limits.stream_write_timeout.as_ref(),
        Some(snapshot::DEFAULT_STREAM_WRITE_TIMEOUT_MS),
        &object,
        "spec.limits.streamWriteTimeout",
        diagnostics,
    );
    let errors_policy = spec.upstream_errors.clone().unwrap_or_default();
    let max_retry_after = parse_duration_ms(
        errors_policy.max_retry_after.as_ref(),
        Some(60_000),
        &object,
        "spec.upstreamErrors.maxRetryAfter",
        diagnostics,
    );

    let mut jwt = Vec::new();
    for (index, issuer) in spec.jwt.iter().enumerate() {
        let jwks = match (&issuer.jwks_url, &issuer.jwks) {
            (Some(url), None) => snapshot::JwksSource::Url(url.clone()),
            (None, Some(inline)) => snapshot::JwksSource::Inline(inline.clone()),
            _ => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    format!("spec.jwt[{index}]"),
                    reason::INVALID,
                    tollgate_api::gateway::JWKS_SOURCE_MESSAGE,
                ));
                continue;
            }
        };
        let claims = issuer.claims.clone().unwrap_or_default();
        jwt.push(snapshot::JwtIssuer {
            issuer: issuer.issuer.clone(),
            audiences: issuer.audiences.clone(),
            jwks,
            user_claim: claims.user.unwrap_or_else(|| "sub".into()),
            team_claim: claims.team,
            app_claim: claims.app,
            label_claims: claims.labels,
        });
    }

    let redis = spec
        .redis
        .as_ref()
        .and_then(|r| compile_redis(r, secrets, &object, diagnostics));

    let mut api_keys = Vec::new();
    let mut digests = BTreeSet::new();
    for (index, source) in spec.api_keys.iter().enumerate() {
        let field = format!("spec.apiKeys[{index}].secretRef");
        match secrets.value(&object.namespace, &source.secret_ref) {
            Ok(key) => {
                let digest = snapshot::api_key_digest(digest_key, &key);
                if !digests.insert(digest.clone()) {
                    diagnostics.push(Diagnostic::error(
                        &object,
                        field,
                        reason::INVALID,
                        "the same key is configured twice",
                    ));
                    continue;
                }
                api_keys.push(ApiKey {
                    digest,
                    principal: Principal {
                        user: source.principal.user.clone(),
                        team: source.principal.team.clone(),
                        app: source.principal.app.clone(),
                        key: format!("{}/{}", source.secret_ref.name, source.secret_ref.key),
                        labels: source.principal.labels.clone(),
                    },
                    expires_at: None,
                });
            }
            Err((why, message)) => {
                diagnostics.push(Diagnostic::error(&object, field, why, message))
            }
        }
    }
    // Keys minted as labelled Secrets. Whoever may create a Secret here may
    // add one, but a broken one must not take the gateway down: it is
    // skipped with a warning.
    for secret in secrets.labelled_keys(&object.namespace, &object.name) {
        match labelled_key(secret, secrets, &object.namespace, digest_key) {
            Ok(key) if digests.insert(key.digest.clone()) => api_keys.push(key),
            Ok(_) => diagnostics.push(Diagnostic::warning(
                &object,
                format!("Secret {}", secret.name_any()),
                reason::INVALID,
                "this key is already configured; the labelled copy is ignored",
            )),
            Err(message) => diagnostics.push(Diagnostic::warning(
                &object,
                format!("Secret {}", secret.name_any()),
                reason::INVALID,
                format!("{message}; the key is ignored"),
            )),
        }
    }
    api_keys.sort_by(|a, b| a.digest.cmp(&b.digest));

    let mut mcp_session_keys = Vec::new();
    for (index, reference) in spec.mcp.iter().flat_map(|m| &m.session_keys).enumerate() {
        let field = format!("spec.mcp.sessionKeys[{index}]");
        match secrets.value(&object.namespace, reference) {
            Ok(key) if key.len() >= 32 => mcp_session_keys.push(snapshot::Credential(key)),
            Ok(_) => diagnostics.push(Diagnostic::error(
                &object,
                field,
                reason::INVALID,
                "an MCP session key must be at least 32 bytes",
            )),
            Err((why, message)) => {
                diagnostics.push(Diagnostic::error(&object, field, why, message));
            }
        }
    }
    if diagnostics[errors_before..]
        .iter()
        .any(Diagnostic::is_error)
    {
        return None;
    }
    Some(GatewayConfig {
        digest_key: digest_key.clone(),
        mcp_servers: Vec::new(),
        mcp_session_keys,
        mcp_allowed_origins: spec
            .mcp
            .as_ref()
            .map(|m| {
                m.allowed_origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default(),
        jwt,
        budgets: Vec::new(),
        redis,
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
            stream_write_timeout_ms: stream_write_timeout
                .ok()
                .flatten()
                .unwrap_or(snapshot::DEFAULT_STREAM_WRITE_TIMEOUT_MS),
        },
        upstream_errors: snapshot::UpstreamErrors {
            pass_through: errors_policy.detail == Some(tollgate_api::ErrorDetail::PassThrough),
            max_retry_after_s: max_retry_after
                .ok()
                .flatten()
                .unwrap_or(60_000)
                .div_ceil(1000),
        },
        api_keys,
        providers: Vec::new(),
        routes: Vec::new(),
        allowed_regions: spec.allowed_regions.clone(),
        default_guard: spec
            .default_guard_policy
            .as_ref()
            .and_then(|name| spec.guard_policies.iter().position(|p| &p.name == name)),
        guard_policies: compile_guard_policies(spec, &object, diagnostics)?,
        audit: match &spec.audit {
            Some(audit) => Some(compile_audit(audit, secrets, &object, diagnostics)?),
            None => None,
        },
    })
}

/// Adds the ModelProviders the guard policies' judges call to the
/// gateway's providers. Each must exist, be valid, and lie within the
/// gateway's `allowedRegions` (a judge is sent the prompt itself). `false`
/// when one does not: the gateway's new configuration stops there.
pub(super) fn add_guard_providers(
    config: &mut GatewayConfig,
    providers: &BTreeMap<crate::diagnostics::ObjectRef, Option<snapshot::Provider>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let object = config.gateway.clone();
    let mut valid = true;
    let mut wanted = Vec::new();
    for (index, policy) in config.guard_policies.iter().enumerate() {
        let input = policy.input.as_ref();
        let judge = input
            .and_then(|i| i.injection.as_ref())
            .and_then(|i| i.judge.as_ref());
        if let Some(judge) = judge {
            wanted.push((
                index,
                "input.injection.judge",
                judge.provider_ref.name.clone(),
                false,
            ));
        }
        if let Some(m) = input.and_then(|i| i.moderation.as_ref()) {
            wanted.push((index, "input.moderation", m.provider_ref.name.clone(), true));
        }
        if let Some(m) = policy.output.as_ref().and_then(|o| o.moderation.as_ref()) {
            wanted.push((
                index,
                "output.moderation",
                m.provider_ref.name.clone(),
                true,
            ));
        }
    }
    for (index, what, name, moderation) in wanted {
        let at = format!("spec.guardPolicies[{index}].{what}");
        let Some(provider) =
            super::route::resolve_provider(providers, &object, &name, &at, diagnostics)
        else {
            valid = false;
            continue;
        };
        let field = format!("{at}.providerRef.name");
        // The OpenAI moderation API: OpenAI-format providers only.
        use tollgate_api::ProviderType as T;
        if moderation
            && !matches!(
                provider.provider_type,
                T::OpenAI | T::OpenAICompatible | T::Mock
            )
        {
            valid = false;
            diagnostics.push(Diagnostic::error(
                &object,
                field,
                reason::INVALID,
                format!(
                    "ModelProvider {:?} is of type {}: moderation needs the OpenAI moderation API (types OpenAI, OpenAICompatible, Mock)",
                    name,
                    provider.provider_type.as_str()
                ),
            ));
            continue;
        }
        let within = config.allowed_regions.is_empty()
            || provider.data_region.as_deref().is_some_and(|region| {
                config
                    .allowed_regions
                    .iter()
                    .any(|glob| snapshot::glob_matches(glob, region))
            });
        if !within {
            valid = false;
            diagnostics.push(Diagnostic::error(
                &object,
                field,
                reason::INVALID,
                format!(
                    "the {what} ModelProvider {:?} (dataRegion {}) is outside the gateway's allowedRegions {:?}: it would be sent prompts",
                    name,
                    provider.data_region.as_deref().unwrap_or("unset"),
                    config.allowed_regions
                ),
            ));
            continue;
        }
        if !config.providers.iter().any(|p| p.name == provider.name) {
            let at = config.providers.partition_point(|p| p.name < provider.name);
            config.providers.insert(at, provider.clone());
        }
    }
    valid
}

/// Default of `spec.audit.spool.path`.
pub const DEFAULT_AUDIT_SPOOL: &str = "/var/lib/tollgate/audit";
/// Default of `spec.audit.spool.maxBytes`.
pub const DEFAULT_AUDIT_SPOOL_BYTES: u64 = 256 * 1024 * 1024;
/// Default of an audit sink's `timeout`.
pub const DEFAULT_AUDIT_TIMEOUT_MS: u64 = 10_000;

fn compile_audit(
    spec: &tollgate_api::audit::AuditSpec,
    secrets: &SecretIndex,
    object: &crate::diagnostics::ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<snapshot::Audit> {
    let mut valid = true;
    let mut sinks = Vec::with_capacity(spec.sinks.len());
    for (index, sink) in spec.sinks.iter().enumerate() {
        let field = format!("spec.audit.sinks[{index}]");
        let timeout_ms = match parse_duration_ms(
            sink.timeout.as_ref(),
            Some(DEFAULT_AUDIT_TIMEOUT_MS),
            object,
            &format!("{field}.timeout"),
            diagnostics,
        ) {
            Ok(ms) => ms.unwrap_or(DEFAULT_AUDIT_TIMEOUT_MS),
            Err(()) => {
                valid = false;
                0
            }
        };
        let mut headers = Vec::with_capacity(sink.headers.len());
        for (h, header) in sink.headers.iter().enumerate() {
            let value = match (&header.value, &header.secret_ref) {
                (Some(value), _) => Ok(value.clone()),
                (None, Some(reference)) => secrets
                    .value(&object.namespace, reference)
                    .map_err(|(_, message)| message),
                (None, None) => Err("a header has exactly one of value and secretRef".into()),
            };
            match value {
                Ok(value)
                    if http::HeaderName::from_bytes(header.name.as_bytes()).is_ok()
                        && http::HeaderValue::from_str(value.trim()).is_ok() =>
                {
                    headers.push((
                        header.name.clone(),
                        snapshot::Credential(value.trim().to_string()),
                    ));
                }
                Ok(_) => {
                    valid = false;
                    diagnostics.push(Diagnostic::error(
                        object,
                        format!("{field}.headers[{h}]"),
                        reason::INVALID,
                        "not a valid HTTP header name and value",
                    ));
                }
                Err(message) => {
                    valid = false;
                    diagnostics.push(Diagnostic::error(
                        object,
                        format!("{field}.headers[{h}].secretRef"),
                        reason::SECRET_NOT_FOUND,
                        message,
                    ));
                }
            }
        }
        sinks.push(snapshot::AuditSink {
            kind: sink.kind,
            name: sink
                .name
                .clone()
                .unwrap_or_else(|| sink.kind.as_str().to_string()),
            path: sink.path.clone(),
            max_bytes: sink.max_bytes,
            max_files: sink.max_files,
            url: sink.url.clone(),
            headers,
            timeout_ms,
        });
    }
    let spool = spec.spool.clone().unwrap_or_default();
    valid.then(|| snapshot::Audit {
        content: spec.content,
        spool_path: spool
            .path
            .unwrap_or_else(|| DEFAULT_AUDIT_SPOOL.to_string()),
        spool_max_bytes: spool.max_bytes.unwrap_or(DEFAULT_AUDIT_SPOOL_BYTES),
        sinks,
    })
}

/// The gateway's guard policies, each built once to find what is wrong
/// with it. A broken policy stops the whole gateway's new configuration
/// (the running one stays): serving its routes unguarded is not an option.
fn compile_guard_policies(
    spec: &tollgate_api::AIGatewaySpec,
    object: &crate::diagnostics::ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Vec<tollgate_api::guard::GuardPolicySpec>> {
    if spec.guard_policies.is_empty() && spec.default_guard_policy.is_none() {
        return Some(Vec::new());
    }
    let recognizers = std::sync::Arc::new(tollgate_guard::Recognizers::new());
    let mut valid = true;
    for (index, policy) in spec.guard_policies.iter().enumerate() {
        if spec.guard_policies[..index]
            .iter()
            .any(|p| p.name == policy.name)
        {
            valid = false;
            diagnostics.push(Diagnostic::error(
                object,
                format!("spec.guardPolicies[{index}].name"),
                reason::INVALID,
                format!(
                    "guard policy names must be unique: {:?} is used twice",
                    policy.name
                ),
            ));
        }
        if let Err(error) = crate::guard::GuardPolicy::build(policy, &recognizers) {
            valid = false;
            diagnostics.push(Diagnostic::error(
                object,
                format!("spec.guardPolicies[{index}].{}", error.field),
                reason::INVALID,
                error.message,
            ));
        }
    }
    if let Some(default) = &spec.default_guard_policy
        && !spec.guard_policies.iter().any(|p| &p.name == default)
    {
        valid = false;
        diagnostics.push(Diagnostic::error(
            object,
            "spec.defaultGuardPolicy",
            reason::INVALID,
            format!("no guard policy {default:?} in spec.guardPolicies"),
        ));
    }
    valid.then(|| spec.guard_policies.clone())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{BASE, compile, gw, load, test_key};
    use crate::snapshot::api_key_digest;

    fn labelled(name: &str, gateway: &str, key: &str, annotations: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{tollgate.dev/api-key: \"true\"}}\n  annotations: {{tollgate.dev/gateway: \"{gateway}\"{annotations}}}\nstringData: {{key: {key}}}\n"
        )
    }

    #[test]
    fn labelled_secrets_add_keys_without_editing_the_gateway() {
        let text = format!(
            "{BASE}{}{}{}{}",
            labelled(
                "ranker",
                "gw",
                "tg-ranker",
                ", tollgate.dev/team: search, tollgate.dev/app: ranker, tollgate.dev/labels: \"env=prod, cost-center=42\", tollgate.dev/expires-at: \"2027-01-15T08:00:00Z\""
            ),
            labelled("anyone", "*", "tg-anyone", ", tollgate.dev/user: ann"),
            labelled("elsewhere", "other-gateway", "tg-elsewhere", ""),
            // Not labelled: an ordinary Secret that happens to hold a `key`.
            "---\napiVersion: v1\nkind: Secret\nmetadata: {name: plain, annotations: {tollgate.dev/gateway: gw}}\nstringData: {key: tg-plain}\n",
        );
        let compiled = compile(&load(&text).resources);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let keys = &compiled.snapshots[&gw()].config.api_keys;
        let find = |key: &str| {
            keys.iter()
                .find(|k| k.digest == api_key_digest(&test_key(), key))
        };
        let ranker = find("tg-ranker").expect("labelled key for gw");
        assert_eq!(
            ranker.principal.user, "ranker",
            "user defaults to the Secret's name"
        );
        assert_eq!(ranker.principal.team.as_deref(), Some("search"));
        assert_eq!(ranker.principal.app.as_deref(), Some("ranker"));
        assert_eq!(ranker.expires_at, Some(1_800_000_000));
        assert_eq!(
            ranker.principal.labels,
            [("cost-center", "42"), ("env", "prod")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into()
        );
        assert_eq!(find("tg-anyone").unwrap().principal.user, "ann");
        assert_eq!(find("tg-anyone").unwrap().expires_at, None);
        assert!(find("tg-elsewhere").is_none(), "named another gateway");
        assert!(find("tg-plain").is_none(), "not labelled");
        assert!(find("tg-demo").is_some(), "spec.apiKeys still count");
    }

    #[test]
    fn a_broken_labelled_secret_is_skipped_with_a_warning_not_fatal() {
        let text = format!(
            "{BASE}{}{}{}",
            labelled(
                "bad-date",
                "gw",
                "tg-bad-date",
                ", tollgate.dev/expires-at: next-week"
            ),
            labelled(
                "bad-labels",
                "gw",
                "tg-bad-labels",
                ", tollgate.dev/labels: env"
            ),
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: no-key\n  labels: {tollgate.dev/api-key: \"true\"}\n  annotations: {tollgate.dev/gateway: gw}\nstringData: {other: x}\n",
        );
        let compiled = compile(&load(&text).resources);
        assert!(
            compiled.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            compiled.diagnostics
        );
        let messages: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages
                .iter()
                .any(|m| m.contains("Secret bad-labels") && m.contains("key=value")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("Secret bad-date") && m.contains("RFC 3339")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("Secret no-key")),
            "{messages:?}"
        );
        let config = &compiled.snapshots[&gw()].config;
        assert_eq!(config.api_keys.len(), 1, "only spec.apiKeys' key serves");
    }

    #[test]
    fn redis_resolves_its_password_and_refuses_credentials_in_the_url() {
        let with_redis = |redis: &str| {
            BASE.replace(
                "spec:\n  apiKeys:",
                &format!("spec:\n  redis: {redis}\n  apiKeys:"),
            )
        };
        let compiled = compile(&load(&with_redis(
            "{url: \"redis://127.0.0.1:6379/2\", username: tollgate, passwordSecretRef: {name: keys, key: openai}, timeout: 100ms}",
        )).resources);
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        let redis = compiled.snapshots[&gw()].config.redis.clone().unwrap();
        assert_eq!(redis.url, "redis://127.0.0.1:6379/2");
        assert_eq!(
            redis.password,
            Some(crate::snapshot::Credential("sk-test".into()))
        );
        assert_eq!(
            (redis.username.as_deref(), redis.timeout_ms),
            (Some("tollgate"), 100)
        );

        // The CEL rule refuses the bad URLs in files and in the cluster;
        // compile refuses them too, for snapshots built without the schema.
        for (url, secret, field) in [
            ("redis://user:pw@127.0.0.1:6379", "keys", "spec.redis.url"),
            ("http://127.0.0.1:6379", "keys", "spec.redis.url"),
            ("redis://h:1/123", "keys", "spec.redis.url"),
            ("redis://h:1", "nope", "spec.redis.passwordSecretRef"),
        ] {
            let mut resources = load(&with_redis(
                "{url: \"redis://h:1\", passwordSecretRef: {name: keys, key: openai}}",
            ))
            .resources;
            let redis = resources.gateways[0].spec.redis.as_mut().unwrap();
            redis.url = url.into();
            redis.password_secret_ref.as_mut().unwrap().name = secret.into();
            let compiled = compile(&resources);
            let redis = url;
            assert!(
                compiled
                    .diagnostics
                    .iter()
                    .any(|d| d.is_error() && d.field == field),
                "{redis}: {:?}",
                compiled.diagnostics
            );
            assert!(!compiled.snapshots.contains_key(&gw()), "{redis}");
        }
    }

    #[test]
    fn jwt_issuers_compile_with_default_claims_and_need_one_key_source() {
        let with_jwt = |jwt: &str| {
            BASE.replace(
                "spec:\n  apiKeys:",
                &format!("spec:\n  jwt: {jwt}\n  apiKeys:"),
            )
        };
        let compiled = compile(
            &load(&with_jwt(
                "[{issuer: \"https://idp\", audiences: [tg], jwksUrl: \"https://idp/jwks\"}]",
            ))
            .resources,
        );
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        let issuer = &compiled.snapshots[&gw()].config.jwt[0];
        assert_eq!(issuer.user_claim, "sub", "the default user claim");
        assert_eq!(
            issuer.jwks,
            crate::snapshot::JwksSource::Url("https://idp/jwks".into())
        );
        // Neither or both key sources: refused (CEL for files and clusters, compile too).
        let mut resources = load(&with_jwt("[{issuer: i, jwks: \"{}\"}]")).resources;
        resources.gateways[0].spec.jwt[0].jwks_url = Some("https://idp/jwks".into());
        let compiled = compile(&resources);
        assert!(
            compiled
                .diagnostics
                .iter()
                .any(|d| d.is_error() && d.field == "spec.jwt[0]"),
            "{:?}",
            compiled.diagnostics
        );
    }
}
