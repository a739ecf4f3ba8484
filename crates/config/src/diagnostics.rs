//! Diagnostics name the resource and field at fault, so a user can fix a
//! manifest from the message alone.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Kubernetes object by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)?;
        if self.namespace != crate::resources::DEFAULT_NAMESPACE {
            write!(f, " (namespace {})", self.namespace)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file the resource came from, when it came from a file.
    pub origin: Option<String>,
    /// The resource at fault; `None` for a document that could not be identified.
    pub object: Option<ObjectRef>,
    /// Dotted path of the field at fault, e.g. `spec.backends[0].providerRef.name`.
    pub field: String,
    /// Machine-readable reason, used as the status condition reason.
    pub reason: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        object: &ObjectRef,
        field: impl Into<String>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            origin: None,
            object: Some(object.clone()),
            field: field.into(),
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn warning(
        object: &ObjectRef,
        field: impl Into<String>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(object, field, reason, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `file:Kind/name: field: message`, the format `tollgate validate` prints.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        if let Some(origin) = &self.origin {
            write!(f, "{origin}:")?;
        }
        match &self.object {
            Some(object) => write!(f, "{object}: ")?,
            None if self.origin.is_some() => write!(f, " ")?,
            None => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}
