//! `AIRoute.spec.prompts`: versions, variables, decorators and context
//! sources checked and defaulted, and every template compiled once, so a
//! broken template is reported on its route and never reaches a gateway.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use tollgate_api::conditions::reason;
use tollgate_api::prompt::{
    CONTEXT_CONFIG_MAP_TIMING_MESSAGE, CONTEXT_LOOPBACK_MESSAGE, CONTEXT_ONE_SOURCE_MESSAGE,
    CONTEXT_URL_MESSAGE, ConfigMapKeyRef, DEFAULT_VERSION_MESSAGE, MAX_CONTEXT_BYTES,
    MCP_RESOURCE_URI_MESSAGE, PromptContextSource, RoutePrompts, VARIABLE_NAME_MESSAGE,
    VERSION_MESSAGE, VERSIONS_UNIQUE_MESSAGE,
};

use super::parse_duration_ms;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::prompt::PromptSet;
use crate::resources::namespace_of;
use crate::snapshot::McpServer;
use crate::snapshot::prompt::{
    ContextFrom, ContextSource, PromptDecorator, PromptMessage, PromptTemplate, Prompts,
};

/// Default cap on a context body.
pub const DEFAULT_CONTEXT_MAX_BYTES: u64 = 64 * 1024;
/// Default deadline of a context fetch.
pub const DEFAULT_CONTEXT_TIMEOUT_MS: u64 = 2_000;
/// Default time a fetched context copy is used.
pub const DEFAULT_CONTEXT_CACHE_MS: u64 = 60_000;

/// The route's prompts, compiled; `Err` after a diagnostic.
pub(super) fn prompts(
    spec: &RoutePrompts,
    refs: &ContextRefs<'_>,
    object: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Prompts, ()> {
    let errors_before = diagnostics.len();
    let invalid = |diagnostics: &mut Vec<Diagnostic>, field: String, message: String| {
        diagnostics.push(Diagnostic::error(object, field, reason::INVALID, message));
    };
    let mut templates = Vec::with_capacity(spec.templates.len());
    for (i, template) in spec.templates.iter().enumerate() {
        let field = format!("spec.prompts.templates[{i}]");
        if !valid_version(&template.version) {
            invalid(
                diagnostics,
                format!("{field}.version"),
                VERSION_MESSAGE.into(),
            );
        } else if spec.templates[..i]
            .iter()
            .any(|t| t.version == template.version)
        {
            invalid(
                diagnostics,
                format!("{field}.version"),
                format!(
                    "{VERSIONS_UNIQUE_MESSAGE}: {:?} is listed twice",
                    template.version
                ),
            );
        }
        if template.messages.is_empty() {
            invalid(
                diagnostics,
                format!("{field}.messages"),
                "a template needs at least one message".into(),
            );
        }
        for name in template.variables.keys() {
            if !valid_variable(name) {
                invalid(
                    diagnostics,
                    format!("{field}.variables.{name}"),
                    VARIABLE_NAME_MESSAGE.into(),
                );
            }
        }
        templates.push(PromptTemplate {
            version: template.version.clone(),
            messages: template
                .messages
                .iter()
                .map(|m| PromptMessage {
                    role: m.role,
                    content: m.content.clone(),
                })
                .collect(),
            variables: template.variables.clone(),
        });
    }
    let default_version = match &spec.default_version {
        None => None,
        Some(name) => match spec.templates.iter().position(|t| t.version == *name) {
            Some(index) => Some(index),
            None => {
                invalid(
                    diagnostics,
                    "spec.prompts.defaultVersion".into(),
                    format!("{DEFAULT_VERSION_MESSAGE}: {name:?} is not listed"),
                );
                None
            }
        },
    };
    let mut context = Vec::with_capacity(spec.context.len());
    for (index, source) in spec.context.iter().enumerate() {
        let field = format!("spec.prompts.context[{index}]");
        let max_bytes = source.max_bytes.unwrap_or(DEFAULT_CONTEXT_MAX_BYTES);
        if !(1..=MAX_CONTEXT_BYTES).contains(&max_bytes) {
            invalid(
                diagnostics,
                format!("{field}.maxBytes"),
                format!("maxBytes must be between 1 and {MAX_CONTEXT_BYTES}"),
            );
        }
        let timeout = parse_duration_ms(
            source.timeout.as_ref(),
            Some(DEFAULT_CONTEXT_TIMEOUT_MS),
            object,
            &format!("{field}.timeout"),
            diagnostics,
        );
        let cache_for = parse_duration_ms(
            source.cache_for.as_ref(),
            Some(DEFAULT_CONTEXT_CACHE_MS),
            object,
            &format!("{field}.cacheFor"),
            diagnostics,
        );
        let Some(from) = context_from(source, &field, max_bytes, refs, object, diagnostics) else {
            continue;
        };
        if let (Ok(Some(timeout_ms)), Ok(Some(cache_for_ms))) = (timeout, cache_for) {
            context.push(ContextSource {
                from,
                max_bytes,
                timeout_ms,
                cache_for_ms,
                role: source.role,
                required: source.required,
            });
        }
    }
    let prompts = Prompts {
        templates,
        default_version,
        decorators: spec
            .decorators
            .iter()
            .map(|d| PromptDecorator {
                position: d.position,
                role: d.role,
                content: d.content.clone(),
            })
            .collect(),
        context,
    };
    // Every template, as the gateway will build them.
    if let Err(error) = PromptSet::build(&prompts) {
        invalid(
            diagnostics,
            format!("spec.prompts.{}", error.field),
            error.message,
        );
    }
    if diagnostics[errors_before..]
        .iter()
        .any(Diagnostic::is_error)
    {
        return Err(());
    }
    Ok(prompts)
}

/// What context sources may refer to: the ConfigMaps compile was given and
/// the MCPServers the route's gateway serves.
pub(super) struct ContextRefs<'a> {
    pub config_maps: &'a ConfigMapIndex<'a>,
    /// `namespace/name` of each MCPServer the gateway serves.
    pub mcp_servers: &'a [McpServer],
}

/// ConfigMaps by namespace and name.
pub(super) struct ConfigMapIndex<'a> {
    by_name: BTreeMap<(String, String), &'a ConfigMap>,
}

impl<'a> ConfigMapIndex<'a> {
    pub fn new(config_maps: &'a [ConfigMap]) -> Self {
        Self {
            by_name: config_maps
                .iter()
                .map(|c| ((namespace_of(c), c.name_any()), c))
                .collect(),
        }
    }

    /// The text under `key` of ConfigMap `name` (its `data`; binary data is
    /// not text).
    fn text(&self, namespace: &str, reference: &ConfigMapKeyRef) -> Result<&'a str, String> {
        let config_map = self
            .by_name
            .get(&(namespace.to_string(), reference.name.clone()))
            .ok_or_else(|| {
                format!(
                    "ConfigMap {:?} not found in namespace {namespace}",
                    reference.name
                )
            })?;
        if let Some(text) = config_map
            .data
            .as_ref()
            .and_then(|data| data.get(&reference.key))
        {
            return Ok(text);
        }
        let binary = config_map
            .binary_data
            .as_ref()
            .is_some_and(|data| data.contains_key(&reference.key));
        Err(if binary {
            format!(
                "ConfigMap {:?} holds key {:?} in binaryData; context is text (data)",
                reference.name, reference.key
            )
        } else {
            format!(
                "ConfigMap {:?} has no key {:?}",
                reference.name, reference.key
            )
        })
    }
}

/// A context source's origin, checked and resolved; `None` when it is
/// left out (after an error, or a warning for an optional source).
fn context_from(
    source: &PromptContextSource,
    field: &str,
    max_bytes: u64,
    refs: &ContextRefs<'_>,
    object: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ContextFrom> {
    let mut error = |field: String, reason: &str, message: String| {
        diagnostics.push(Diagnostic::error(object, field, reason, message));
        None
    };
    let origins = [
        source.url.is_some(),
        source.config_map_key_ref.is_some(),
        source.mcp_resource.is_some(),
    ];
    if origins.iter().filter(|set| **set).count() != 1 {
        return error(
            field.to_string(),
            reason::INVALID,
            CONTEXT_ONE_SOURCE_MESSAGE.into(),
        );
    }
    if source.allow_loopback && source.url.is_none() {
        return error(
            format!("{field}.allowLoopback"),
            reason::INVALID,
            CONTEXT_LOOPBACK_MESSAGE.into(),
        );
    }
    if let Some(url) = &source.url {
        if !is_context_url(url) {
            return error(
                format!("{field}.url"),
                reason::INVALID,
                CONTEXT_URL_MESSAGE.into(),
            );
        }
        return Some(ContextFrom::Url {
            url: url.clone(),
            allow_loopback: source.allow_loopback,
        });
    }
    if let Some(reference) = &source.config_map_key_ref {
        if source.timeout.is_some() || source.cache_for.is_some() {
            return error(
                field.to_string(),
                reason::INVALID,
                CONTEXT_CONFIG_MAP_TIMING_MESSAGE.into(),
            );
        }
        let field = format!("{field}.configMapKeyRef");
        let text = match refs.config_maps.text(&object.namespace, reference) {
            Ok(text) => text,
            // An optional source is left out: the route still serves.
            Err(message) if !source.required => {
                diagnostics.push(Diagnostic::warning(
                    object,
                    field,
                    reason::CONFIG_MAP_NOT_FOUND,
                    format!("{message}; the optional context source is left out"),
                ));
                return None;
            }
            Err(message) => return error(field, reason::CONFIG_MAP_NOT_FOUND, message),
        };
        if text.len() as u64 > max_bytes {
            return error(
                field,
                reason::INVALID,
                format!(
                    "ConfigMap {:?} key {:?} holds {} bytes, more than maxBytes ({max_bytes})",
                    reference.name,
                    reference.key,
                    text.len()
                ),
            );
        }
        return Some(ContextFrom::Text {
            text: text.to_string(),
            origin: format!(
                "configmap/{}/{}/{}",
                object.namespace, reference.name, reference.key
            ),
        });
    }
    let resource = source.mcp_resource.as_ref()?;
    let field = format!("{field}.mcpResource");
    if !is_resource_uri(&resource.uri) {
        return error(
            format!("{field}.uri"),
            reason::INVALID,
            MCP_RESOURCE_URI_MESSAGE.into(),
        );
    }
    let server = format!("{}/{}", object.namespace, resource.server);
    if !refs.mcp_servers.iter().any(|s| *s.name == *server) {
        return error(
            format!("{field}.server"),
            reason::MCP_SERVER_NOT_FOUND,
            format!(
                "MCPServer {:?} in namespace {} is not served by the route's gateway (missing, invalid, or attached to another AIGateway)",
                resource.server, object.namespace
            ),
        );
    }
    Some(ContextFrom::McpResource {
        server,
        uri: resource.uri.clone(),
    })
}

/// An absolute URI as the CEL rule has it, and no whitespace at all.
fn is_resource_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    uri.len() <= 2048
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
        && !rest.is_empty()
        && !rest.chars().any(char::is_whitespace)
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`, as the CEL rule says.
fn valid_version(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// An identifier of at most 63 characters, other than `principal`.
pub fn valid_variable(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && name != "principal"
}

/// An absolute http(s) URL with a host, no user info and no fragment: what
/// [`tollgate_api::prompt::CONTEXT_URL_RULE`] accepts, checked by a parser.
fn is_context_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    url.len() <= 2048
        && matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && !url.contains('#')
}
