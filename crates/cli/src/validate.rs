//! `tollgate validate`: what the apiserver and the compiler would say, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_api::conditions::reason;
use tollgate_config::{Diagnostic, Severity, compile};

/// How unresolved references are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum References {
    /// Not at all: they may live in other files or only in the cluster.
    Off,
    /// As warnings; the exit code ignores them.
    Warn,
    /// As errors (the default): the files must hold everything they use.
    Error,
}

pub fn run(paths: &[PathBuf], references: References) -> ExitCode {
    // `${NAME}` references are checked for form only: CI need not hold the keys.
    let loaded = match tollgate_config::load::load_paths_with_env(paths, &|_| {
        Some("placeholder".to_string())
    }) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let compiled = compile(&loaded.resources, &tollgate_config::DigestKey::generate());
    let mut diagnostics: Vec<Diagnostic> = loaded
        .diagnostics
        .iter()
        .chain(&compiled.diagnostics)
        .filter_map(|d| apply_references(d.clone(), references))
        .collect();
    if references != References::Error {
        // Secrets and ConfigMaps elsewhere must not hide what depends on
        // them (a route against its provider's catalog): compile again with
        // stand-ins and take the errors that are not about references from
        // there.
        let mut resources = loaded.resources.clone();
        resources
            .secrets
            .extend(tollgate_config::resources::stand_in_secrets(&resources));
        resources
            .config_maps
            .extend(tollgate_config::resources::stand_in_config_maps(&resources));
        let with_stand_ins = compile(&resources, &tollgate_config::DigestKey::generate());
        diagnostics.retain(|d| is_reference(d) || !compiled.diagnostics.contains(d));
        diagnostics.extend(
            with_stand_ins
                .diagnostics
                .into_iter()
                .filter(|d| !is_reference(d)),
        );
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    for diagnostic in &diagnostics {
        println!("{diagnostic}");
    }
    let objects = loaded.resources.origins.len();
    if errors > 0 {
        eprintln!("{errors} error(s) in {} file(s)", loaded.files.len());
        ExitCode::FAILURE
    } else {
        eprintln!(
            "ok: {objects} object(s) in {} file(s), {} gateway(s)",
            loaded.files.len(),
            compiled.snapshots.len()
        );
        ExitCode::SUCCESS
    }
}

/// Whether a diagnostic is about something the files point at but do not hold.
fn is_reference(diagnostic: &Diagnostic) -> bool {
    reason::is_reference(&diagnostic.reason)
}

/// Drops or downgrades an unresolved reference as `mode` says; others pass.
fn apply_references(mut diagnostic: Diagnostic, mode: References) -> Option<Diagnostic> {
    if !is_reference(&diagnostic) {
        return Some(diagnostic);
    }
    match mode {
        References::Off => None,
        References::Warn => {
            diagnostic.severity = Severity::Warning;
            Some(diagnostic)
        }
        References::Error => Some(diagnostic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::ObjectRef;

    fn diagnostic(why: &str) -> Diagnostic {
        let object = ObjectRef::new("AIRoute", "default", "r");
        Diagnostic::error(&object, "spec.gatewayRef.name", why, "m")
    }

    #[test]
    fn reference_modes() {
        let missing = diagnostic(reason::GATEWAY_NOT_FOUND);
        assert_eq!(apply_references(missing.clone(), References::Off), None);
        let warned = apply_references(missing.clone(), References::Warn).unwrap();
        assert_eq!(warned.severity, Severity::Warning);
        assert_eq!(
            apply_references(missing.clone(), References::Error),
            Some(missing)
        );
        let invalid = diagnostic(reason::INVALID);
        assert_eq!(
            apply_references(invalid.clone(), References::Off),
            Some(invalid)
        );
    }
}
