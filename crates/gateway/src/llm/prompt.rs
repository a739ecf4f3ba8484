//! Stage `prompt`: a route's prompt management (`AIRoute.spec.prompts`) on
//! the request, after routing and before the guard (which so sees the final
//! prompt).
//!
//! * The version: `"model": "ALIAS@VERSION"` (found by [`split_version`]
//!   when no route has the whole name as an alias) or the header
//!   [`VERSION_HEADER`]; else the route's default version; else none.
//! * The variables: the header [`VARIABLES_HEADER`] and the body field
//!   [`VARIABLES_FIELD`] (JSON objects of strings, numbers and booleans; the
//!   body's win), over the template's defaults, plus `principal`. The body
//!   field is removed before the request goes out.
//! * The messages then read: prepended decorators, the template's messages,
//!   the context sources' texts, the client's messages, appended decorators.
//!
//! [`render`] is the pure part (no IO); [`context`] fetches and caches
//! context sources. A route without prompts never reaches this module and
//! keeps the byte passthrough; one with prompts goes out from the canonical
//! form, like a guarded one.

pub mod context;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use http::HeaderMap;
use minijinja::{ErrorKind, Value};
use tollgate_api::prompt::PromptRole;
use tollgate_config::prompt::{MessageTemplate, PromptSet, describe};
use tollgate_config::snapshot::Principal;
use tollgate_config::snapshot::prompt::{ContextSource, Prompts};
use tollgate_llm::canonical::{Message, Role};

use super::ingress::Inbound;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::metrics::{ContextUseLabels, PromptRenderLabels};

/// Request header naming the template version.
pub const VERSION_HEADER: &str = "x-tollgate-prompt-version";
/// Request header with the variables, a JSON object.
pub const VARIABLES_HEADER: &str = "x-tollgate-prompt-variables";
/// Top-level body field with the variables; removed before the request goes out.
pub const VARIABLES_FIELD: &str = "prompt_variables";
/// Most variables one request may give.
pub const MAX_VARIABLES: usize = 64;
/// Most bytes the rendered messages of one request may hold.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// A route's prompts as the gateway runs them: the compiled templates and
/// the context sources with their labels.
pub struct RoutePrompts {
    pub set: PromptSet,
    /// Each source with its label (a URL without query, the ConfigMap or
    /// the MCP resource) for metrics and errors.
    pub context: Vec<(ContextSource, Arc<str>)>,
}

impl RoutePrompts {
    pub fn build(prompts: &Prompts) -> Result<Self, tollgate_config::prompt::PromptError> {
        Ok(Self {
            set: PromptSet::build(prompts)?,
            context: prompts
                .context
                .iter()
                .map(|source| (source.clone(), context::source_label(&source.from)))
                .collect(),
        })
    }
}

/// `"ALIAS@VERSION"` → `("ALIAS", "VERSION")`, split on the last `@`; both
/// sides non-empty.
pub fn split_version(model: &str) -> Option<(&str, &str)> {
    let (alias, version) = model.rsplit_once('@')?;
    (!alias.is_empty() && !version.is_empty()).then_some((alias, version))
}

/// Why a prompt could not be applied; each is a client error but the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptFailure {
    VersionNotFound {
        version: String,
        known: String,
    },
    VersionConflict {
        model: String,
        header: String,
    },
    InvalidVariables(String),
    /// The body could not be read as a chat request.
    Unreadable(String),
    VariableMissing {
        name: String,
        template: String,
    },
    RenderFailed {
        template: String,
        message: String,
    },
    ContextUnavailable {
        source: Arc<str>,
        error: String,
    },
}

impl PromptFailure {
    /// The metrics outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            PromptFailure::VersionNotFound { .. } => "version_not_found",
            PromptFailure::VersionConflict { .. } => "version_conflict",
            PromptFailure::InvalidVariables(_) => "invalid_variables",
            PromptFailure::Unreadable(_) => "invalid_request",
            PromptFailure::VariableMissing { .. } => "variable_missing",
            PromptFailure::RenderFailed { .. } => "render_failed",
            PromptFailure::ContextUnavailable { .. } => "context_unavailable",
        }
    }

    pub fn to_api_error(&self, model: &str) -> ApiError {
        match self {
            PromptFailure::VersionNotFound { version, known } => ApiError::invalid_request(
                "prompt_version_not_found",
                if known.is_empty() {
                    format!("The model {model:?} has no prompt version {version:?}; it has no versions.")
                } else {
                    format!(
                        "The model {model:?} has no prompt version {version:?}; its versions are: {known}."
                    )
                },
            )
            .with_param("model"),
            PromptFailure::VersionConflict { model: named, header } => ApiError::invalid_request(
                "prompt_version_conflict",
                format!(
                    "The model names prompt version {named:?} but the {VERSION_HEADER} header names {header:?}."
                ),
            ),
            PromptFailure::InvalidVariables(message) => {
                ApiError::invalid_request("prompt_variables_invalid", message.clone())
            }
            PromptFailure::Unreadable(message) => {
                ApiError::invalid_request("invalid_request", message.clone())
            }
            PromptFailure::VariableMissing { name, template } => ApiError::invalid_request(
                "prompt_variable_missing",
                format!(
                    "The prompt needs the variable {name:?} (in {template}); give it in {VARIABLES_FIELD} or the {VARIABLES_HEADER} header."
                ),
            ),
            PromptFailure::RenderFailed { template, message } => ApiError::invalid_request(
                "prompt_render_failed",
                format!("The prompt could not be rendered ({template}): {message}"),
            ),
            PromptFailure::ContextUnavailable { source, error } => ApiError::bad_gateway(format!(
                "The prompt context source {source} could not be fetched: {error}"
            ))
            .with_code("prompt_context_unavailable"),
        }
    }
}

/// The version to apply: the model's suffix or the header (which must
/// agree when both are given), else the default. `None`: no template.
pub fn choose_version(
    set: &PromptSet,
    from_model: Option<&str>,
    from_header: Option<&str>,
) -> Result<Option<usize>, PromptFailure> {
    let named = match (from_model, from_header) {
        (Some(model), Some(header)) if model != header => {
            return Err(PromptFailure::VersionConflict {
                model: model.to_string(),
                header: header.to_string(),
            });
        }
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) => return Ok(set.default_version),
    };
    set.version(named)
        .map(Some)
        .ok_or_else(|| PromptFailure::VersionNotFound {
            version: named.to_string(),
            known: set.known_versions(),
        })
}

/// Request variables, as given.
pub type Variables = BTreeMap<String, Value>;

/// Adds the variables of a JSON object (`origin` names it in messages).
pub fn add_variables(
    variables: &mut Variables,
    object: serde_json::Value,
    origin: &str,
) -> Result<(), PromptFailure> {
    let serde_json::Value::Object(object) = object else {
        return Err(PromptFailure::InvalidVariables(format!(
            "{origin} must be a JSON object of strings, numbers and booleans."
        )));
    };
    for (name, value) in object {
        if name == "principal" {
            return Err(PromptFailure::InvalidVariables(format!(
                "{origin} may not set \"principal\": it is the caller, set by the gateway."
            )));
        }
        let value = match value {
            serde_json::Value::String(s) => Value::from(s),
            serde_json::Value::Bool(b) => Value::from(b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Value::from(i),
                (None, Some(f)) => Value::from(f),
                (None, None) => Value::from(n.to_string()),
            },
            _ => {
                return Err(PromptFailure::InvalidVariables(format!(
                    "{origin}: variable {name:?} must be a string, a number or a boolean."
                )));
            }
        };
        variables.insert(name, value);
    }
    if variables.len() > MAX_VARIABLES {
        return Err(PromptFailure::InvalidVariables(format!(
            "at most {MAX_VARIABLES} prompt variables may be given."
        )));
    }
    Ok(())
}

/// The variables of the header, if given.
pub fn header_variables(headers: &HeaderMap) -> Result<Variables, PromptFailure> {
    let mut variables = Variables::new();
    if let Some(value) = headers.get(VARIABLES_HEADER) {
        let object = serde_json::from_slice(value.as_bytes()).map_err(|e| {
            PromptFailure::InvalidVariables(format!(
                "the {VARIABLES_HEADER} header is not JSON: {e}"
            ))
        })?;
        add_variables(&mut variables, object, VARIABLES_HEADER)?;
    }
    Ok(variables)
}

/// `principal` as templates see it: `user`, `team`, `app` (empty strings
/// when absent or anonymous) and `labels`.
pub fn principal_value(principal: Option<&Principal>) -> Value {
    static ANONYMOUS: LazyLock<Principal> = LazyLock::new(Principal::default);
    let p = principal.unwrap_or(&ANONYMOUS);
    let text = |s: &Option<String>| Value::from(s.as_deref().unwrap_or(""));
    let labels: BTreeMap<String, Value> = p
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let mut map = BTreeMap::new();
    map.insert("user".to_string(), Value::from(p.user.as_str()));
    map.insert("team".to_string(), text(&p.team));
    map.insert("app".to_string(), text(&p.app));
    map.insert("labels".to_string(), Value::from(labels));
    Value::from(map)
}

/// The rendered messages around the client's.
#[derive(Debug, Default, PartialEq)]
pub struct Rendered {
    /// Prepended decorators, then the template's messages.
    pub before: Vec<Message>,
    /// Appended decorators.
    pub after: Vec<Message>,
}

/// Renders decorators and (if `version` is given) that version's messages
/// with `variables` over its defaults, and `principal`. Pure.
pub fn render(
    set: &PromptSet,
    version: Option<usize>,
    variables: &Variables,
    principal: &Value,
) -> Result<Rendered, PromptFailure> {
    let mut context: BTreeMap<String, Value> = BTreeMap::new();
    let version = version.and_then(|index| set.versions.get(index));
    if let Some(version) = version {
        context.extend(version.defaults.iter().cloned());
    }
    context.extend(variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    context.insert("principal".to_string(), principal.clone());
    let context = Value::from(context);
    let mut budget = MAX_RENDERED_BYTES;
    let mut one = |template: &MessageTemplate| -> Result<Message, PromptFailure> {
        let text = render_one(set, template, &context)?;
        budget = budget
            .checked_sub(text.len())
            .ok_or_else(|| PromptFailure::RenderFailed {
                template: template.name.clone(),
                message: format!("the rendered prompt is larger than {MAX_RENDERED_BYTES} bytes"),
            })?;
        Ok(Message::new(role(template.role), text))
    };
    let mut rendered = Rendered::default();
    for template in &set.prepend {
        rendered.before.push(one(template)?);
    }
    for template in version.iter().flat_map(|v| &v.messages) {
        rendered.before.push(one(template)?);
    }
    for template in &set.append {
        rendered.after.push(one(template)?);
    }
    Ok(rendered)
}

fn render_one(
    set: &PromptSet,
    template: &MessageTemplate,
    context: &Value,
) -> Result<String, PromptFailure> {
    let failed = |message: String| PromptFailure::RenderFailed {
        template: template.name.clone(),
        message,
    };
    let compiled = set
        .env
        .get_template(&template.name)
        .map_err(|e| failed(describe(&e)))?;
    compiled.render(context).map_err(|error| {
        if error.kind() != ErrorKind::UndefinedError {
            return failed(describe(&error));
        }
        PromptFailure::VariableMissing {
            name: missing_name(&error, &compiled, context),
            template: template.name.clone(),
        }
    })
}

/// The variable an undefined-value error is about: a top-level name the
/// template uses, the context lacks and the failing expression mentions;
/// else the failing expression itself (`principal.labels.tier`).
fn missing_name(
    error: &minijinja::Error,
    template: &minijinja::Template<'_, '_>,
    context: &Value,
) -> String {
    let expression = error
        .template_source()
        .zip(error.range())
        .and_then(|(source, range)| source.get(range))
        .map(str::trim)
        .unwrap_or_default();
    let mut absent: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| {
            context
                .get_attr(name)
                .map_or(true, |value| value.is_undefined())
        })
        .collect();
    absent.sort();
    let mentioned = absent.iter().find(|name| {
        expression
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == name.as_str())
    });
    match mentioned {
        Some(name) => name.clone(),
        None if !expression.is_empty() => expression.to_string(),
        None => absent.into_iter().next().unwrap_or_default(),
    }
}

fn role(role: PromptRole) -> Role {
    match role {
        PromptRole::System => Role::System,
        PromptRole::User => Role::User,
        PromptRole::Assistant => Role::Assistant,
    }
}

/// The stage: applies `prompts` to the request. Nothing happens (and the
/// body stays bytes) when there is nothing to render, inject or remove.
pub async fn apply(
    context: &RequestContext,
    route: &Arc<str>,
    prompts: &RoutePrompts,
    version_in_model: Option<&str>,
    headers: &HeaderMap,
    inbound: &mut Inbound<'_>,
) -> Result<(), ApiError> {
    let model = inbound.payload.model.clone();
    let set = &prompts.set;
    let from_header = headers
        .get(VERSION_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    let count = |version: Option<usize>, outcome: &'static str| {
        let version: Arc<str> = version
            .and_then(|i| set.versions.get(i))
            .map_or_else(|| Arc::from(""), |v| v.name.clone());
        context
            .gateway
            .metrics
            .prompt_renders
            .get_or_create(&PromptRenderLabels {
                route: route.clone(),
                version,
                outcome,
            })
            .inc();
    };
    let version = match choose_version(set, version_in_model, from_header.as_deref()) {
        Ok(version) => version,
        Err(failure) => {
            count(None, failure.outcome());
            return Err(failure.to_api_error(&model));
        }
    };
    let nothing_to_do = version.is_none()
        && set.prepend.is_empty()
        && set.append.is_empty()
        && prompts.context.is_empty()
        && !inbound.payload.has_field(VARIABLES_FIELD);
    if nothing_to_do {
        return Ok(());
    }
    let outcome = prepare(context, prompts, version, headers, inbound).await;
    count(
        version,
        outcome.as_ref().err().map_or("ok", PromptFailure::outcome),
    );
    outcome.map_err(|failure| failure.to_api_error(&model))
}

async fn prepare(
    context: &RequestContext,
    prompts: &RoutePrompts,
    version: Option<usize>,
    headers: &HeaderMap,
    inbound: &mut Inbound<'_>,
) -> Result<(), PromptFailure> {
    let mut variables = header_variables(headers)?;
    let model = inbound.payload.model.clone();
    let canonical = inbound
        .canonical_mut()
        .map_err(|error| PromptFailure::Unreadable(error.message))?;
    canonical.request.model = model;
    if let Some(object) = canonical.request.extra.remove(VARIABLES_FIELD) {
        add_variables(&mut variables, object, VARIABLES_FIELD)?;
    }
    let principal = principal_value(context.principal.as_deref());
    let rendered = render(&prompts.set, version, &variables, &principal)?;
    // Context last: a request that cannot render waits for no fetch.
    let mut injected = Vec::with_capacity(prompts.context.len());
    if !prompts.context.is_empty() {
        let gateway = &context.gateway;
        let fetches = prompts
            .context
            .iter()
            .map(|(source, label)| gateway.prompt_context.get(source, label, gateway));
        let results = futures_util::future::join_all(fetches).await;
        for ((source, label), result) in prompts.context.iter().zip(results) {
            let degraded = |outcome: &'static str| {
                gateway
                    .metrics
                    .prompt_context_degraded
                    .get_or_create(&ContextUseLabels {
                        route: context.route.clone(),
                        source: label.clone(),
                        outcome,
                    })
                    .inc();
            };
            match result {
                Ok(fetched) => {
                    if fetched.stale {
                        degraded("stale");
                    }
                    injected.push(Message::new(role(source.role), &*fetched.text));
                }
                Err(_) if !source.required => degraded("unavailable"),
                Err(error) => {
                    return Err(PromptFailure::ContextUnavailable {
                        source: label.clone(),
                        error: error.to_string(),
                    });
                }
            }
        }
    }
    let canonical = inbound
        .canonical_mut()
        .map_err(|error| PromptFailure::Unreadable(error.message))?;
    let messages = &mut canonical.request.messages;
    let client = std::mem::take(messages);
    messages.reserve(rendered.before.len() + injected.len() + client.len() + rendered.after.len());
    messages.extend(rendered.before);
    messages.extend(injected);
    messages.extend(client);
    messages.extend(rendered.after);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_api::prompt::DecoratorPosition;
    use tollgate_config::snapshot::prompt::{PromptDecorator, PromptMessage, PromptTemplate};

    fn message(role: PromptRole, content: &str) -> PromptMessage {
        PromptMessage {
            role,
            content: content.into(),
        }
    }

    fn prompts() -> Prompts {
        Prompts {
            templates: vec![
                PromptTemplate {
                    version: "v3".into(),
                    messages: vec![message(
                        PromptRole::System,
                        "You are {{ product }} support. Answer in {{ language | default('English') }}.",
                    )],
                    variables: [("product".to_string(), "Acme".to_string())].into(),
                },
                PromptTemplate {
                    version: "v2".into(),
                    messages: vec![
                        message(PromptRole::System, "Old {{ product }} prompt, tone {{ tone }}."),
                        message(PromptRole::Assistant, "{% if vip %}Welcome back!{% else %}Hello.{% endif %} {{ count + 1 }}"),
                    ],
                    variables: Default::default(),
                },
            ],
            default_version: Some(0),
            decorators: vec![
                PromptDecorator {
                    position: DecoratorPosition::Append,
                    role: PromptRole::User,
                    content: "Reply briefly.".into(),
                },
                PromptDecorator {
                    position: DecoratorPosition::Prepend,
                    role: PromptRole::System,
                    content: "Caller {{ principal.user }} (team {{ principal.team or 'none' }}, tier {{ principal.labels.tier | default('-') }}).".into(),
                },
            ],
            context: Vec::new(),
        }
    }

    fn set() -> PromptSet {
        PromptSet::build(&prompts()).unwrap()
    }

    fn vars(json: serde_json::Value) -> Variables {
        let mut variables = Variables::new();
        add_variables(&mut variables, json, "test").unwrap();
        variables
    }

    fn ann() -> Principal {
        Principal {
            user: "ann".into(),
            team: Some("support".into()),
            app: None,
            key: String::new(),
            labels: [("tier".to_string(), "gold".to_string())].into(),
        }
    }

    fn texts(messages: &[Message]) -> Vec<(Role, String)> {
        messages
            .iter()
            .map(|m| {
                (
                    m.role,
                    m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn versions_come_from_the_model_the_header_or_the_default() {
        let set = set();
        assert_eq!(choose_version(&set, Some("v2"), None), Ok(Some(1)));
        assert_eq!(choose_version(&set, None, Some("v2")), Ok(Some(1)));
        assert_eq!(choose_version(&set, Some("v2"), Some("v2")), Ok(Some(1)));
        assert_eq!(choose_version(&set, None, None), Ok(Some(0)), "default");
        assert_eq!(
            choose_version(&set, Some("v9"), None),
            Err(PromptFailure::VersionNotFound {
                version: "v9".into(),
                known: "v3, v2".into()
            })
        );
        assert!(matches!(
            choose_version(&set, Some("v2"), Some("v3")),
            Err(PromptFailure::VersionConflict { .. })
        ));
        let mut no_default = prompts();
        no_default.default_version = None;
        let no_default = PromptSet::build(&no_default).unwrap();
        assert_eq!(choose_version(&no_default, None, None), Ok(None));
        let error = PromptFailure::VersionNotFound {
            version: "v9".into(),
            known: "v3, v2".into(),
        }
        .to_api_error("support-bot");
        assert_eq!(error.status, 400);
        assert_eq!(error.code, "prompt_version_not_found");
        assert!(error.message.contains("v3, v2"), "{}", error.message);
    }

    #[test]
    fn split_on_the_last_at() {
        assert_eq!(split_version("support-bot@v3"), Some(("support-bot", "v3")));
        assert_eq!(split_version("team@bot@v3"), Some(("team@bot", "v3")));
        assert_eq!(split_version("support-bot"), None);
        assert_eq!(split_version("support-bot@"), None);
        assert_eq!(split_version("@v3"), None);
    }

    #[test]
    fn defaults_are_overridden_by_request_variables() {
        let set = set();
        let principal = principal_value(Some(&ann()));
        let rendered = render(&set, Some(0), &Variables::new(), &principal).unwrap();
        assert_eq!(
            texts(&rendered.before)[1],
            (
                Role::System,
                "You are Acme support. Answer in English.".to_string()
            )
        );
        let rendered = render(
            &set,
            Some(0),
            &vars(serde_json::json!({"product": "Zeta", "language": "French"})),
            &principal,
        )
        .unwrap();
        assert_eq!(
            texts(&rendered.before)[1].1,
            "You are Zeta support. Answer in French."
        );
        // Numbers and booleans keep their types.
        let rendered = render(
            &set,
            Some(1),
            &vars(serde_json::json!({"product": "Acme", "tone": "dry", "vip": true, "count": 41})),
            &principal,
        )
        .unwrap();
        assert_eq!(
            texts(&rendered.before)[1..],
            [
                (Role::System, "Old Acme prompt, tone dry.".to_string()),
                (Role::Assistant, "Welcome back! 42".to_string())
            ]
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let set = set();
        let principal = principal_value(None);
        // v2 has no defaults: product is missing (tone too, later).
        let error = render(&set, Some(1), &Variables::new(), &principal).unwrap_err();
        assert_eq!(
            error,
            PromptFailure::VariableMissing {
                name: "product".into(),
                template: "templates[1].messages[0].content".into()
            }
        );
        let error = render(
            &set,
            Some(1),
            &vars(serde_json::json!({"product": "Acme"})),
            &principal,
        )
        .unwrap_err();
        assert!(
            matches!(&error, PromptFailure::VariableMissing { name, .. } if name == "tone"),
            "{error:?}"
        );
        // Strict: an undefined value is not falsy either.
        let error = render(
            &set,
            Some(1),
            &vars(serde_json::json!({"product": "Acme", "tone": "dry", "count": 1})),
            &principal,
        )
        .unwrap_err();
        assert!(
            matches!(&error, PromptFailure::VariableMissing { name, template } if name == "vip" && template.ends_with("messages[1].content")),
            "{error:?}"
        );
        let api = error.to_api_error("m");
        assert_eq!(
            (api.status.as_u16(), api.code),
            (400, "prompt_variable_missing")
        );
        assert!(api.message.contains("\"vip\""), "{}", api.message);
    }

    #[test]
    fn principal_and_decorators_in_order() {
        let set = set();
        let rendered = render(
            &set,
            Some(0),
            &Variables::new(),
            &principal_value(Some(&ann())),
        )
        .unwrap();
        assert_eq!(
            texts(&rendered.before)[0],
            (
                Role::System,
                "Caller ann (team support, tier gold).".to_string()
            ),
            "prepended decorators come before the template"
        );
        assert_eq!(rendered.before.len(), 2);
        assert_eq!(
            texts(&rendered.after),
            [(Role::User, "Reply briefly.".to_string())]
        );
        // Anonymous: empty strings, so `or` and `default` read well.
        let rendered = render(&set, None, &Variables::new(), &principal_value(None)).unwrap();
        assert_eq!(
            texts(&rendered.before),
            [(Role::System, "Caller  (team none, tier -).".to_string())],
            "no version: decorators only"
        );
    }

    #[test]
    fn variables_are_scalars_and_never_principal() {
        let mut variables = Variables::new();
        for bad in [
            serde_json::json!(["a"]),
            serde_json::json!({"x": {"nested": 1}}),
            serde_json::json!({"x": null}),
            serde_json::json!({"principal": "root"}),
        ] {
            assert!(matches!(
                add_variables(&mut variables, bad, "prompt_variables"),
                Err(PromptFailure::InvalidVariables(_))
            ));
        }
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_VARIABLES)
            .map(|i| (format!("v{i}"), serde_json::json!(i)))
            .collect();
        assert!(add_variables(&mut Variables::new(), many.into(), "x").is_err());
        let mut headers = HeaderMap::new();
        headers.insert(
            VARIABLES_HEADER,
            r#"{"product":"Zeta","n":1.5}"#.parse().unwrap(),
        );
        let from_header = header_variables(&headers).unwrap();
        assert_eq!(from_header["product"], Value::from("Zeta"));
        assert_eq!(from_header["n"], Value::from(1.5));
        headers.insert(VARIABLES_HEADER, "not json".parse().unwrap());
        assert!(header_variables(&headers).is_err());
    }

    #[test]
    fn rendering_is_bounded() {
        let mut big = prompts();
        big.templates[0].messages[0].content =
            "{% for i in range(100000) %}{{ i }}{% endfor %}".into();
        let set = PromptSet::build(&big).unwrap();
        let error = render(&set, Some(0), &Variables::new(), &principal_value(None)).unwrap_err();
        assert!(
            matches!(error, PromptFailure::RenderFailed { .. }),
            "{error:?}"
        );
        big.templates[0].messages[0].content = "{{ 'x' * 300000 }}".into();
        let set = PromptSet::build(&big).unwrap();
        let error = render(&set, Some(0), &Variables::new(), &principal_value(None)).unwrap_err();
        assert!(
            matches!(error, PromptFailure::RenderFailed { .. }),
            "{error:?}"
        );
    }
}
