//! A route's prompt templates (`AIRoute.spec.prompts`) compiled into one
//! MiniJinja environment. `compile` builds it to report syntax errors on the
//! route; the gateway builds the same when it loads the snapshot and renders
//! with it. One function for both, so a template that compiles also runs.
//!
//! The environment: strict undefined values (a variable used without a
//! default is an error, never an empty string), a fuel budget per render
//! (bounding both time and memory), no auto-escaping, no loader, and no
//! `include`/`extends`/`import` (MiniJinja is built without them), so a
//! template sees nothing but its own text and the values it is given.

use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use tollgate_api::prompt::{DecoratorPosition, MAX_TEMPLATE_BYTES, PromptRole};

use crate::snapshot::prompt::Prompts;

/// Fuel of one render: about 100k instructions, or some 6 MB of values.
pub const RENDER_FUEL: u64 = 100_000;

/// One message template: its role and its name in the environment (the
/// field it came from, `templates[0].messages[1].content`).
#[derive(Clone, Debug)]
pub struct MessageTemplate {
    pub role: PromptRole,
    pub name: String,
}

/// One version: its name, messages, and default variables.
#[derive(Clone, Debug)]
pub struct Version {
    pub name: Arc<str>,
    pub messages: Vec<MessageTemplate>,
    /// Default values, overridden by the request's.
    pub defaults: Vec<(String, Value)>,
}

/// A route's prompts, ready to render.
pub struct PromptSet {
    pub env: Environment<'static>,
    pub versions: Vec<Version>,
    /// Index into `versions`.
    pub default_version: Option<usize>,
    pub prepend: Vec<MessageTemplate>,
    pub append: Vec<MessageTemplate>,
}

impl std::fmt::Debug for PromptSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptSet")
            .field("versions", &self.versions)
            .field("default_version", &self.default_version)
            .field("prepend", &self.prepend)
            .field("append", &self.append)
            .finish_non_exhaustive()
    }
}

/// What is wrong with a template, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct PromptError {
    /// Relative to `spec.prompts`: `templates[0].messages[1].content`.
    pub field: String,
    pub message: String,
}

/// The environment every route's templates live in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(RENDER_FUEL));
    // Spans of failing expressions, to name a missing variable.
    env.set_debug(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env
}

/// A template error as one line: what and where in the text.
pub fn describe(error: &minijinja::Error) -> String {
    let mut text = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(line) = error.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

impl PromptSet {
    /// Compiles every template of `prompts`; the first error wins.
    pub fn build(prompts: &Prompts) -> Result<Self, PromptError> {
        let mut env = environment();
        let mut add = |field: String, role: PromptRole, source: &str| {
            if source.len() > MAX_TEMPLATE_BYTES {
                return Err(PromptError {
                    field,
                    message: format!("a template is at most {MAX_TEMPLATE_BYTES} bytes"),
                });
            }
            match env.add_template_owned(field.clone(), source.to_string()) {
                Ok(()) => Ok(MessageTemplate { role, name: field }),
                Err(error) => Err(PromptError {
                    field,
                    message: describe(&error),
                }),
            }
        };
        let mut versions = Vec::with_capacity(prompts.templates.len());
        for (i, template) in prompts.templates.iter().enumerate() {
            let messages = template
                .messages
                .iter()
                .enumerate()
                .map(|(j, message)| {
                    add(
                        format!("templates[{i}].messages[{j}].content"),
                        message.role,
                        &message.content,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            versions.push(Version {
                name: Arc::from(template.version.as_str()),
                messages,
                defaults: template
                    .variables
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
                    .collect(),
            });
        }
        let mut prepend = Vec::new();
        let mut append = Vec::new();
        for (k, decorator) in prompts.decorators.iter().enumerate() {
            let message = add(
                format!("decorators[{k}].content"),
                decorator.role,
                &decorator.content,
            )?;
            match decorator.position {
                DecoratorPosition::Prepend => prepend.push(message),
                DecoratorPosition::Append => append.push(message),
            }
        }
        Ok(Self {
            env,
            versions,
            default_version: prompts.default_version,
            prepend,
            append,
        })
    }

    /// The index of version `name`.
    pub fn version(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| &*v.name == name)
    }

    /// The version names, comma separated (for messages).
    pub fn known_versions(&self) -> String {
        let names: Vec<&str> = self.versions.iter().map(|v| &*v.name).collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::prompt::{PromptDecorator, PromptMessage, PromptTemplate};

    fn prompts(content: &str) -> Prompts {
        Prompts {
            templates: vec![PromptTemplate {
                version: "v1".into(),
                messages: vec![
                    PromptMessage {
                        role: PromptRole::System,
                        content: "fine {{ x }}".into(),
                    },
                    PromptMessage {
                        role: PromptRole::User,
                        content: content.into(),
                    },
                ],
                variables: Default::default(),
            }],
            default_version: None,
            decorators: vec![PromptDecorator {
                position: DecoratorPosition::Append,
                role: PromptRole::User,
                content: "ok".into(),
            }],
            context: Vec::new(),
        }
    }

    #[test]
    fn syntax_errors_name_the_field_and_line() {
        let error = PromptSet::build(&prompts("line one\n{{ x ")).unwrap_err();
        assert_eq!(error.field, "templates[0].messages[1].content");
        assert!(error.message.contains("syntax error"), "{}", error.message);
        assert!(error.message.contains("line 2"), "{}", error.message);
        let error = PromptSet::build(&prompts("{% if x %}never closed")).unwrap_err();
        assert_eq!(error.field, "templates[0].messages[1].content");
    }

    #[test]
    fn no_includes_or_loader() {
        // Without the multi-template feature, `include` is not syntax.
        let error =
            PromptSet::build(&prompts("{% include 'decorators[0].content' %}")).unwrap_err();
        assert!(error.message.contains("syntax error"), "{}", error.message);
        let set = PromptSet::build(&prompts("hello")).unwrap();
        assert_eq!(set.versions[0].messages.len(), 2);
        assert_eq!(set.append.len(), 1);
        assert_eq!(set.version("v1"), Some(0));
        assert_eq!(set.version("v2"), None);
    }

    #[test]
    fn oversized_templates_are_refused() {
        let error = PromptSet::build(&prompts(&"x".repeat(MAX_TEMPLATE_BYTES + 1))).unwrap_err();
        assert!(error.message.contains("at most"), "{}", error.message);
    }
}
