//! AIGateway: ports, limits and client keys.

use std::collections::BTreeSet;

use tollgate_api::AIGateway;
use tollgate_api::conditions::reason;

use super::{
    DEFAULT_ADMIN_PORT, DEFAULT_LISTENER_PORT, DEFAULT_MAX_REQUEST_BODY_BYTES,
    DEFAULT_REQUEST_TIMEOUT_MS, SecretIndex, parse_duration_ms,
};
use crate::diagnostics::Diagnostic;
use crate::resources::object_ref;
use crate::snapshot::{self, ApiKey, GatewayConfig, Limits, Principal};

pub(super) fn compile_gateway(
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
    })
}
