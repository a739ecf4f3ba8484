//! `AIRoute.spec.prompts`: versions, variables, decorators and context
//! sources checked and defaulted, and every template compiled once, so a
//! broken template is reported on its route and never reaches a gateway.

use tollgate_api::conditions::reason;
use tollgate_api::prompt::{
    CONTEXT_URL_MESSAGE, DEFAULT_VERSION_MESSAGE, MAX_CONTEXT_BYTES, RoutePrompts,
    VARIABLE_NAME_MESSAGE, VERSION_MESSAGE, VERSIONS_UNIQUE_MESSAGE,
};

use super::parse_duration_ms;
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::prompt::PromptSet;
use crate::snapshot::prompt::{
    ContextSource, PromptDecorator, PromptMessage, PromptTemplate, Prompts,
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
        if !is_context_url(&source.url) {
            invalid(
                diagnostics,
                format!("{field}.url"),
                CONTEXT_URL_MESSAGE.into(),
            );
        }
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
        if let (Ok(Some(timeout_ms)), Ok(Some(cache_for_ms))) = (timeout, cache_for) {
            context.push(ContextSource {
                url: source.url.clone(),
                max_bytes,
                timeout_ms,
                cache_for_ms,
                role: source.role,
                required: source.required,
                allow_loopback: source.allow_loopback,
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
    if diagnostics.len() > errors_before {
        return Err(());
    }
    Ok(prompts)
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
