//! MCPServer: checked and resolved (credential from its Secret) for the data plane.
//!
//! A server the controller runs (`spec.run`) is reached at its Service:
//! [`run_object_name`] names the Deployment and Service, [`run_url`] is
//! the in-cluster address compile hands the gateway.

use std::sync::Arc;

use kube::ResourceExt;
use tollgate_api::MCPServer;
use tollgate_api::conditions::reason;
use tollgate_api::mcp::{self as api};

use super::budget::{
    DEFAULT_ALERT_COOLDOWN_MS, DEFAULT_ALERT_INTERVAL_MS, DEFAULT_WARMUP_INTERVALS,
};
use super::{SecretIndex, parse_duration_ms};
use crate::diagnostics::Diagnostic;
use crate::resources::object_ref;
use crate::snapshot::Credential;
use crate::snapshot::budget::{Bucket, Subject};
use crate::snapshot::mcp::{
    AgentPolicy, Aggregation, CachePolicy, CatalogGate, Grant, McpCredential, McpRateLimit,
    McpServer, Redaction, ToolFilter,
};

/// How long a backend may take to answer one message, unless the spec says.
pub const DEFAULT_MCP_TIMEOUT_MS: u64 = 60_000;
/// How long a cached result is kept, unless the spec says.
pub const DEFAULT_CACHE_TTL_MS: u64 = 60_000;

/// Longest name a Service may have (a DNS-1035 label).
const MAX_SERVICE_NAME: usize = 63;

/// Name of the Deployment and Service that run MCPServer `name`:
/// `mcp-<name>` when that is a valid Service name (a DNS label of at most
/// 63 characters), else a cut, cleaned prefix plus 8 hex digits of the
/// name's SHA-256, so every MCPServer name maps to its own Service name and
/// always to the same one.
pub fn run_object_name(name: &str) -> String {
    let plain = format!("mcp-{name}");
    if plain.len() <= MAX_SERVICE_NAME && is_dns_label(&plain) {
        return plain;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let suffix = hex::encode(&digest[..4]);
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    // "mcp-" + prefix + "-" + 8 hex digits.
    let room = MAX_SERVICE_NAME - 4 - 1 - suffix.len();
    let prefix = cleaned[..cleaned.len().min(room)].trim_end_matches('-');
    if prefix.is_empty() {
        format!("mcp-{suffix}")
    } else {
        format!("mcp-{prefix}-{suffix}")
    }
}

/// The in-cluster URL of a server the controller runs:
/// `http://<service>.<namespace>.svc:<port><path>`.
pub fn run_url(name: &str, namespace: &str, run: &api::McpRun) -> String {
    let port = run.port.map_or(api::DEFAULT_RUN_PORT, |p| p as u16);
    let path = run.path.as_deref().unwrap_or(api::DEFAULT_RUN_PATH);
    format!(
        "http://{}.{namespace}.svc:{port}{path}",
        run_object_name(name)
    )
}

/// The backend URL of `server` as the gateway calls it (also shown in its
/// status), when the spec names one.
pub fn backend_url(server: &MCPServer) -> Option<String> {
    match (&server.spec.url, &server.spec.run) {
        (Some(url), None) => Some(url.trim_end_matches('/').to_string()),
        (None, Some(run)) => Some(run_url(
            &server.name_any(),
            &crate::resources::namespace_of(server),
            run,
        )),
        _ => None,
    }
}

/// Most `spec.failoverUrls` (as the CRD's schema says).
const MAX_FAILOVER_URLS: usize = 8;

fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some())
}

/// The server for the data plane, or `None` (with diagnostics) when invalid.
pub(super) fn compile_mcp_server(
    server: &MCPServer,
    secrets: &SecretIndex,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<McpServer> {
    let object = object_ref(server);
    let spec = &server.spec;
    let errors_before = diagnostics.len();
    let mut error = |field: &str, why: &str, message: String| {
        diagnostics.push(Diagnostic::error(&object, field, why, message));
    };
    let path = spec.path.clone().unwrap_or_else(|| server.name_any());
    if !is_dns_label(&path) {
        let field = if spec.path.is_some() {
            "spec.path"
        } else {
            "metadata.name"
        };
        error(field, reason::INVALID, api::PATH_MESSAGE.into());
    }
    match (&spec.url, &spec.run) {
        (Some(url), None) => {
            if !is_http_url(url) {
                error("spec.url", reason::INVALID, api::URL_MESSAGE.into());
            }
            for (i, url) in spec.failover_urls.iter().enumerate() {
                if !is_http_url(url) {
                    error(
                        &format!("spec.failoverUrls[{i}]"),
                        reason::INVALID,
                        api::URL_MESSAGE.into(),
                    );
                }
            }
            if spec.failover_urls.len() > MAX_FAILOVER_URLS {
                error(
                    "spec.failoverUrls",
                    reason::INVALID,
                    format!("at most {MAX_FAILOVER_URLS} failover URLs"),
                );
            }
        }
        (None, Some(run)) => {
            check_run(run, &mut error);
            if spec.transport == Some(api::ServerTransport::Sse) {
                error(
                    "spec.transport",
                    reason::INVALID,
                    api::TRANSPORT_MESSAGE.into(),
                );
            }
            if !spec.failover_urls.is_empty() {
                error(
                    "spec.failoverUrls",
                    reason::INVALID,
                    api::FAILOVER_MESSAGE.into(),
                );
            }
        }
        _ => error("spec", reason::INVALID, api::URL_OR_RUN_MESSAGE.into()),
    }
    let timeout_ms = parse_duration_ms(
        spec.timeout.as_ref(),
        Some(DEFAULT_MCP_TIMEOUT_MS),
        &object,
        "spec.timeout",
        diagnostics,
    )
    .ok()
    .flatten()
    .unwrap_or(DEFAULT_MCP_TIMEOUT_MS);
    let cache = match &spec.cache {
        None => None,
        Some(policy) => parse_duration_ms(
            policy.ttl.as_ref(),
            Some(DEFAULT_CACHE_TTL_MS),
            &object,
            "spec.cache.ttl",
            diagnostics,
        )
        .ok()
        .map(|ttl| CachePolicy {
            ttl_ms: ttl.unwrap_or(DEFAULT_CACHE_TTL_MS),
            tools: policy.tools.clone(),
            shared: policy.shared == Some(true),
        }),
    };
    let mut error = |field: &str, why: &str, message: String| {
        diagnostics.push(Diagnostic::error(&object, field, why, message));
    };
    let aggregation = spec.aggregation.clone().unwrap_or_default();
    if let Some(prefix) = &aggregation.prefix
        && !is_prefix(prefix)
    {
        error(
            "spec.aggregation.prefix",
            reason::INVALID,
            api::PREFIX_MESSAGE.into(),
        );
    }
    let anomalies = match &spec.anomalies {
        None => None,
        Some(anomalies) => match agent_policy(server, anomalies) {
            Ok(policy) => Some(policy),
            Err((field, message)) => {
                error(field, reason::INVALID, message);
                None
            }
        },
    };
    let credential = match &spec.credentials {
        None => None,
        Some(credentials) => match secrets.value(&object.namespace, &credentials.secret_ref) {
            Ok(value) => {
                let header = credentials
                    .header
                    .as_deref()
                    .unwrap_or("authorization")
                    .to_ascii_lowercase();
                let value = if header == "authorization" {
                    format!("Bearer {value}")
                } else {
                    value
                };
                if http::HeaderValue::from_str(&value).is_err() {
                    error(
                        "spec.credentials.secretRef",
                        reason::INVALID,
                        "the credential is not a valid HTTP header value".into(),
                    );
                }
                Some(McpCredential {
                    header,
                    value: Credential(value),
                })
            }
            Err((why, message)) => {
                error("spec.credentials.secretRef", why, message);
                None
            }
        },
    };
    if diagnostics[errors_before..]
        .iter()
        .any(Diagnostic::is_error)
    {
        return None;
    }
    let tools = spec.tools.clone().unwrap_or_default();
    Some(McpServer {
        name: Arc::from(format!("{}/{}", object.namespace, object.name)),
        url: backend_url(server)?,
        failover_urls: spec
            .failover_urls
            .iter()
            .map(|url| url.trim_end_matches('/').to_string())
            .collect(),
        transport: spec.transport.unwrap_or_default(),
        credential,
        translate_revisions: spec.translate_revisions,
        timeout_ms,
        tools: ToolFilter {
            allow: tools.allow,
            deny: tools.deny,
            access: tools
                .access
                .into_iter()
                .map(|rule| (rule.tools, rule.access))
                .collect(),
        },
        access: spec
            .access
            .iter()
            .map(|grant| Grant {
                subject: Subject {
                    user: grant.subject.user.clone(),
                    team: grant.subject.team.clone(),
                    app: grant.subject.app.clone(),
                    key: None,
                    match_labels: grant.subject.match_labels.clone(),
                    per_member: None,
                },
                tools: grant.tools.clone(),
                write: grant.scope == api::ToolAccess::Write,
            })
            .collect(),
        rate_limits: spec
            .rate_limits
            .iter()
            .map(|limit| McpRateLimit {
                tools: limit.tools.clone(),
                bucket: Bucket {
                    per_second: f64::from(limit.requests_per_second),
                    capacity: f64::from(limit.burst.unwrap_or(limit.requests_per_second)),
                },
                per_caller: limit.per == api::RateLimitScope::Caller,
            })
            .collect(),
        aggregation: (aggregation.enabled != Some(false)).then(|| Aggregation {
            prefix: aggregation.prefix.clone().unwrap_or_else(|| path.clone()),
            prefix_mode: aggregation.prefix_mode,
            fail_lists: aggregation.on_list_failure == api::ListFailure::Fail,
        }),
        anomalies,
        cache,
        redact: spec
            .redact
            .as_ref()
            .filter(|r| !r.paths.is_empty() || r.pii == Some(true))
            .map(|r| Redaction {
                paths: r
                    .paths
                    .iter()
                    .map(|p| p.split('.').map(str::to_string).collect())
                    .collect(),
                pii: r.pii == Some(true),
            }),
        catalog_gate: spec
            .catalog
            .as_ref()
            .filter(|c| c.require_approval == Some(true))
            .map(|c| CatalogGate {
                approved: c.approved_hash.clone(),
            }),
        path,
    })
}

/// The anomaly policy with its defaults, or the field at fault.
fn agent_policy(
    server: &MCPServer,
    spec: &api::AgentAnomalies,
) -> Result<AgentPolicy, (&'static str, String)> {
    let duration = |text: &Option<String>, default: u64, field: &'static str| {
        let Some(text) = text else { return Ok(default) };
        match tollgate_api::duration::parse(text) {
            Ok(d) if !d.is_zero() => Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            _ => Err((
                field,
                tollgate_api::duration::POSITIVE_DURATION_MESSAGE.to_string(),
            )),
        }
    };
    let in_range = |value: Option<u32>,
                    default: u32,
                    range: std::ops::RangeInclusive<u32>,
                    field: &'static str| {
        let value = value.unwrap_or(default);
        if range.contains(&value) {
            Ok(value)
        } else {
            Err((
                field,
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    };
    let webhook = match &spec.webhook {
        None => None,
        Some(w) if w.url.starts_with("http://") || w.url.starts_with("https://") => {
            Some(crate::snapshot::budget::Webhook {
                url: w.url.clone(),
                slack: w.format == tollgate_api::budget::WebhookFormat::Slack,
            })
        }
        Some(_) => {
            return Err((
                "spec.anomalies.webhook.url",
                "webhook url must be an http:// or https:// URL".into(),
            ));
        }
    };
    let cleared_at_ms = match server
        .annotations()
        .get(api::AGENTS_CLEARED_AT_ANNOTATION)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(text) => Some(
            text.parse::<k8s_openapi::jiff::Timestamp>()
                .map_err(|_| {
                    (
                        "metadata.annotations",
                        format!(
                            "{} must be an RFC 3339 instant such as 2026-12-07T10:00:00Z",
                            api::AGENTS_CLEARED_AT_ANNOTATION
                        ),
                    )
                })?
                .as_millisecond(),
        ),
    };
    Ok(AgentPolicy {
        interval_ms: duration(
            &spec.interval,
            DEFAULT_ALERT_INTERVAL_MS,
            "spec.anomalies.interval",
        )?,
        warmup_intervals: in_range(
            spec.warmup_intervals,
            DEFAULT_WARMUP_INTERVALS,
            1..=1000,
            "spec.anomalies.warmupIntervals",
        )?,
        burst_factor: in_range(spec.burst_factor, 5, 2..=1000, "spec.anomalies.burstFactor")?,
        write_shift: f64::from(in_range(
            spec.write_shift_percent,
            50,
            1..=100,
            "spec.anomalies.writeShiftPercent",
        )?) / 100.0,
        new_tools: spec.new_tools != Some(false),
        cooldown_ms: duration(
            &spec.cooldown,
            DEFAULT_ALERT_COOLDOWN_MS,
            "spec.anomalies.cooldown",
        )?,
        action: spec.action,
        webhook,
        cleared_at_ms,
    })
}

/// The checks of `spec.run` that its CEL rules also make.
fn check_run(run: &api::McpRun, error: &mut impl FnMut(&str, &str, String)) {
    if run.image.is_empty() {
        error(
            "spec.run.image",
            reason::INVALID,
            "image must not be empty".into(),
        );
    }
    if run.transport == api::McpTransport::Stdio {
        if run.command.is_empty() {
            error(
                "spec.run.command",
                reason::INVALID,
                api::STDIO_COMMAND_MESSAGE.into(),
            );
        }
        if run.replicas.is_some_and(|n| n > 1) {
            error(
                "spec.run.replicas",
                reason::INVALID,
                api::STDIO_REPLICAS_MESSAGE.into(),
            );
        }
    }
    if run.port.is_some_and(|p| !(1..=65535).contains(&p)) {
        error(
            "spec.run.port",
            reason::INVALID,
            "port must be between 1 and 65535".into(),
        );
    }
    if run.replicas.is_some_and(|n| n > 100) {
        error(
            "spec.run.replicas",
            reason::INVALID,
            "replicas must be between 0 and 100".into(),
        );
    }
    let path_ok = run.path.as_deref().is_none_or(|path| {
        path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~!$&()*+,;=:@%/-".contains(&b))
    });
    if !path_ok {
        error(
            "spec.run.path",
            reason::INVALID,
            api::RUN_PATH_MESSAGE.into(),
        );
    }
    for (i, var) in run.env.iter().enumerate() {
        let name_ok = var.name.bytes().enumerate().all(|(at, b)| {
            b.is_ascii_alphabetic() || b"-._".contains(&b) || (at > 0 && b.is_ascii_digit())
        }) && !var.name.is_empty();
        if !name_ok {
            error(
                &format!("spec.run.env[{i}].name"),
                reason::INVALID,
                api::ENV_NAME_MESSAGE.into(),
            );
        }
        if var.value.is_some() == var.secret_key_ref.is_some() {
            error(
                &format!("spec.run.env[{i}]"),
                reason::INVALID,
                api::ENV_VALUE_MESSAGE.into(),
            );
        }
    }
}

/// What `/mcp` may put before `__` in a name: tool names allow letters,
/// digits, `_`, `-` and `.`; no `_` so the separator stays unambiguous.
fn is_prefix(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=48).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{BASE, compile, gw, load};
    use tollgate_api::conditions::reason;
    use tollgate_api::mcp::{self as api, ToolAccess};

    fn server(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n{spec}\n"
        )
    }

    #[test]
    fn servers_compile_with_their_credential_sorted_by_path() {
        let yaml = format!(
            "{BASE}{}{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: mcp}}\nstringData: {{token: s3cret}}\n",
            server(
                "tickets",
                "  url: https://tickets.example.com/mcp/\n  credentials: {secretRef: {name: mcp, key: token}}\n  \
                 tools: {deny: [\"delete_*\"], access: [{tools: search, access: Read}]}"
            ),
            server(
                "docs",
                "  path: wiki\n  url: http://127.0.0.1:9/mcp\n  timeout: 5s\n  \
                 failoverUrls: [\"http://127.0.0.2:9/mcp/\"]\n  \
                 credentials: {secretRef: {name: mcp, key: token}, header: X-Api-Key}"
            ),
        );
        let compiled = compile(&load(&yaml).resources);
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        let servers = &compiled.snapshots[&gw()].config.mcp_servers;
        let paths: Vec<&str> = servers.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["tickets", "wiki"]);
        let tickets = &servers[0];
        assert_eq!(&*tickets.name, "default/tickets");
        assert_eq!(tickets.url, "https://tickets.example.com/mcp");
        let credential = tickets.credential.as_ref().unwrap();
        assert_eq!(credential.header, "authorization");
        assert_eq!(credential.value.0, "Bearer s3cret");
        assert_eq!(tickets.timeout_ms, super::DEFAULT_MCP_TIMEOUT_MS);
        assert!(!tickets.tools.serves("delete_ticket"));
        assert_eq!(tickets.tools.access("search", false), ToolAccess::Read);
        assert!(tickets.failover_urls.is_empty());
        let wiki = &servers[1];
        assert_eq!(wiki.timeout_ms, 5_000);
        assert_eq!(wiki.failover_urls, ["http://127.0.0.2:9/mcp"]);
        let credential = wiki.credential.as_ref().unwrap();
        assert_eq!(
            (credential.header.as_str(), credential.value.0.as_str()),
            ("x-api-key", "s3cret")
        );
    }

    #[test]
    fn failover_urls_must_be_urls_of_an_external_server() {
        let yaml = format!(
            "{BASE}{}{}",
            server(
                "alpha",
                "  url: http://127.0.0.1:9/mcp\n  failoverUrls: [\"ftp://x\"]"
            ),
            server(
                "beta",
                "  run: {image: ghcr.io/x/y:1}\n  failoverUrls: [\"http://127.0.0.1:9/mcp\"]"
            ),
        );
        let mut loaded = crate::load::Loaded::default();
        crate::load::add_documents(&mut loaded, "test.yaml", &yaml, &|_| None);
        let fields: Vec<(&str, &str)> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                (
                    d.object.as_ref().map_or("", |o| o.name.as_str()),
                    d.field.as_str(),
                )
            })
            .collect();
        assert_eq!(
            fields,
            [("alpha", "spec.failoverUrls"), ("beta", "spec")],
            "{:?}",
            loaded.diagnostics
        );
    }

    #[test]
    fn legacy_sse_servers_need_url() {
        let yaml = format!(
            "{BASE}{}{}",
            server("legacy", "  url: http://127.0.0.1:9/sse\n  transport: SSE"),
            server(
                "modern",
                "  url: http://127.0.0.1:9/mcp\n  transport: StreamableHTTP"
            ),
        );
        let compiled = compile(&load(&yaml).resources);
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        let servers = &compiled.snapshots[&gw()].config.mcp_servers;
        assert_eq!(servers[0].transport, api::ServerTransport::Sse);
        assert_eq!(servers[1].transport, api::ServerTransport::StreamableHttp);
        // The snapshot says nothing of the default.
        let json = serde_json::to_string(&servers[1]).unwrap();
        assert!(!json.contains("transport"), "{json}");

        let run = server("ran", "  run: {image: ghcr.io/x/y:1}\n  transport: SSE");
        // The CRD's rule refuses it at load; compile refuses it too.
        let mut loaded = crate::load::Loaded::default();
        crate::load::add_documents(&mut loaded, "test.yaml", &format!("{BASE}{run}"), &|_| None);
        assert!(
            loaded
                .diagnostics
                .iter()
                .any(|d| d.is_error() && d.message.contains(api::TRANSPORT_MESSAGE)),
            "{:?}",
            loaded.diagnostics
        );
        // Past the CRD's rule (as a resource with no schema check would be):
        // compile refuses it too.
        let mut resources = load(BASE).resources;
        let parsed = serde_yaml::from_str(run.trim_start_matches("---\n")).unwrap();
        resources.mcp_servers.push(parsed);
        let compiled = compile(&resources);
        let fields: Vec<&str> = compiled
            .diagnostics
            .iter()
            .map(|d| d.field.as_str())
            .collect();
        assert!(fields.contains(&"spec.transport"), "{fields:?}");
        assert!(compiled.snapshots[&gw()].config.mcp_servers.is_empty());
    }

    #[test]
    fn a_path_taken_twice_and_a_missing_secret_are_reported_on_their_server() {
        let yaml = format!(
            "{BASE}{}{}",
            server("alpha", "  path: tools\n  url: http://127.0.0.1:9/mcp"),
            server(
                "beta",
                "  path: tools\n  url: http://127.0.0.1:9/mcp\n  credentials: {secretRef: {name: nope, key: k}}"
            ),
        );
        let compiled = compile(&load(&yaml).resources);
        let on_beta: Vec<_> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.object.as_ref().is_some_and(|o| o.name == "beta"))
            .collect();
        assert_eq!(on_beta.len(), 1, "{:?}", compiled.diagnostics);
        assert_eq!(on_beta[0].reason, reason::SECRET_NOT_FOUND);
        let yaml = format!(
            "{BASE}{}{}",
            server("alpha", "  path: tools\n  url: http://127.0.0.1:9/mcp"),
            server("beta", "  path: tools\n  url: http://127.0.0.1:9/mcp"),
        );
        let compiled = compile(&load(&yaml).resources);
        let d = &compiled.diagnostics[0];
        assert_eq!(d.field, "spec.path");
        assert_eq!(d.object.as_ref().unwrap().name, "beta");
        assert!(d.message.contains("default/alpha"), "{}", d.message);
        let servers = &compiled.snapshots[&gw()].config.mcp_servers;
        assert_eq!(servers.len(), 1);
    }

    #[test]
    fn aggregation_defaults_to_the_path_and_prefixes_are_unique() {
        use tollgate_api::mcp::PrefixMode;
        let yaml = format!(
            "{BASE}{}{}{}{}",
            server("alpha", "  url: http://127.0.0.1:9/mcp"),
            server(
                "beta",
                "  url: http://127.0.0.1:9/mcp\n  aggregation: {prefix: alpha}"
            ),
            server(
                "gamma",
                "  url: http://127.0.0.1:9/mcp\n  aggregation: {enabled: false, prefix: alpha}"
            ),
            server(
                "delta",
                "  url: http://127.0.0.1:9/mcp\n  aggregation: {prefix: d, prefixMode: Never, onListFailure: Fail}"
            ),
        );
        let compiled = compile(&load(&yaml).resources);
        let errors: Vec<_> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].object.as_ref().unwrap().name, "beta");
        assert_eq!(errors[0].field, "spec.aggregation.prefix");
        let servers = &compiled.snapshots[&gw()].config.mcp_servers;
        let alpha = servers.iter().find(|s| s.path == "alpha").unwrap();
        let aggregation = alpha.aggregation.as_ref().unwrap();
        assert_eq!(
            (
                aggregation.prefix.as_str(),
                aggregation.prefix_mode,
                aggregation.fail_lists
            ),
            ("alpha", PrefixMode::Always, false)
        );
        let gamma = servers.iter().find(|s| s.path == "gamma").unwrap();
        assert!(gamma.aggregation.is_none(), "disabled: not in /mcp");
        let delta = servers.iter().find(|s| s.path == "delta").unwrap();
        let aggregation = delta.aggregation.as_ref().unwrap();
        assert_eq!(
            (
                aggregation.prefix.as_str(),
                aggregation.prefix_mode,
                aggregation.fail_lists
            ),
            ("d", PrefixMode::Never, true)
        );
    }

    #[test]
    fn a_server_the_controller_runs_is_reached_at_its_service() {
        let yaml = format!(
            "{BASE}{}{}",
            server(
                "notes",
                "  run: {image: \"notes:1\", transport: Stdio, command: [notes-mcp]}"
            ),
            server(
                "wiki",
                "  run: {image: \"wiki:2\", port: 3000, path: /rpc/v1}"
            ),
        );
        let compiled = compile(&load(&yaml).resources);
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        let servers = &compiled.snapshots[&gw()].config.mcp_servers;
        let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://mcp-notes.default.svc:8080/mcp",
                "http://mcp-wiki.default.svc:3000/rpc/v1"
            ]
        );
    }

    #[test]
    fn url_and_run_are_exclusive_and_run_is_checked() {
        let cases = [
            (
                "  url: http://127.0.0.1:9/mcp\n  run: {image: x}",
                "spec",
                "exactly one of url and run",
            ),
            ("  tools: {}", "spec", "exactly one of url and run"),
            (
                "  run: {image: x, transport: Stdio}",
                "spec.run.command",
                "needs command",
            ),
            (
                "  run: {image: x, transport: Stdio, command: [a], replicas: 2}",
                "spec.run.replicas",
                "at most one replica",
            ),
            (
                "  run: {image: x, path: mcp}",
                "spec.run.path",
                "must start with '/'",
            ),
            (
                "  run: {image: x, env: [{name: A}]}",
                "spec.run.env[0]",
                "exactly one of value and secretKeyRef",
            ),
            (
                "  run: {image: x, env: [{name: 1A, value: v}]}",
                "spec.run.env[0].name",
                "not start with a digit",
            ),
        ];
        for (spec, field, words) in cases {
            let manifest = server("bad", spec);
            // The CEL rules refuse these first, with the same words.
            let mut loaded = crate::load::Loaded::default();
            crate::load::add_documents(&mut loaded, "bad.yaml", &manifest, &|_| None);
            assert!(
                loaded.diagnostics.iter().any(|d| d.message.contains(words)),
                "{spec}: {:?}",
                loaded.diagnostics
            );
            // Compile says the same of an object that got past them.
            let mut resources = load(BASE).resources;
            let mut bad: tollgate_api::MCPServer =
                serde_yaml::from_str(manifest.trim_start_matches("---\n")).unwrap();
            bad.metadata.namespace = Some("default".into());
            resources.mcp_servers.push(bad);
            let compiled = compile(&resources);
            let found = compiled
                .diagnostics
                .iter()
                .find(|d| d.field == field)
                .unwrap_or_else(|| panic!("{spec}: {:?}", compiled.diagnostics));
            assert!(found.message.contains(words), "{spec}: {}", found.message);
            assert_eq!(found.reason, reason::INVALID);
        }
    }

    #[test]
    fn run_names_are_service_names_one_per_server() {
        use super::run_object_name;
        assert_eq!(run_object_name("notes"), "mcp-notes");
        let long = "n".repeat(63);
        let cut = run_object_name(&long);
        assert!(cut.len() <= 63 && cut.starts_with("mcp-nnn"), "{cut}");
        assert_eq!(cut, run_object_name(&long), "deterministic");
        assert_ne!(cut, run_object_name(&"n".repeat(62)), "{cut}");
        // Dots are fine in object names, not in Service names.
        let dotted = run_object_name("team.notes");
        assert!(dotted.starts_with("mcp-team-notes-"), "{dotted}");
        assert_ne!(dotted, run_object_name("team-notes"));
        assert_eq!(run_object_name("team-notes"), "mcp-team-notes");
        for name in [long.as_str(), "team.notes", "a.b.c", "x"] {
            let service = run_object_name(name);
            assert!(
                super::is_dns_label(&service) && service.len() <= 63,
                "{service}"
            );
        }
    }
}
