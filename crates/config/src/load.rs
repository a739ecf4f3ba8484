//! Standalone loading: the same manifests a user would `kubectl apply`, read
//! from files or directories of multi-document YAML.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::diagnostics::{Diagnostic, Severity};
use crate::document::{self, Document};
use crate::resources::Resources;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no manifests (*.yaml, *.yml, *.json) found in {0}")]
    Empty(String),
}

/// What a set of paths holds: the valid resources, and every problem found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Resources,
    pub diagnostics: Vec<Diagnostic>,
    /// The files read, for watching.
    pub files: Vec<PathBuf>,
    /// The CRD schemas this load has built so far (see [`document::Schemas`]).
    schemas: document::Schemas,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Reads every manifest under `paths`, using the process environment for `${NAME}`.
pub fn load_paths(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    load_paths_with_env(paths, &|name| std::env::var(name).ok())
}

pub fn load_paths_with_env(
    paths: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for path in paths {
        let files = manifest_files(path)?;
        if files.is_empty() {
            return Err(LoadError::Empty(path.display().to_string()));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
                path: file.display().to_string(),
                source,
            })?;
            add_documents(&mut loaded, &file.display().to_string(), &text, env);
            loaded.files.push(file);
        }
    }
    // Every file is read: nothing needs the schemas any more.
    loaded.schemas = document::Schemas::default();
    Ok(loaded)
}

/// A file as itself; a directory as its manifest files, recursively, sorted,
/// skipping kustomization files (they are not resources).
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        // Symlinked directories are not followed: a link cycle would recurse
        // forever (files behind links, as in ConfigMap mounts, are read).
        let is_link = std::fs::symlink_metadata(&entry).is_ok_and(|m| m.file_type().is_symlink());
        if entry.is_dir() && !is_link {
            files.extend(manifest_files(&entry)?);
        } else if entry.is_dir() {
            continue;
        } else if is_manifest(name) {
            files.push(entry);
        }
    }
    Ok(files)
}

fn is_manifest(name: &str) -> bool {
    let is_kustomization = matches!(
        name,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    );
    !is_kustomization
        && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

/// Parses one file's documents into `loaded`. Pure but for `env`.
pub fn add_documents(
    loaded: &mut Loaded,
    origin: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) {
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(error) => {
                loaded.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    origin: Some(yaml_origin(origin, &error)),
                    object: None,
                    field: String::new(),
                    reason: tollgate_api::conditions::reason::INVALID.into(),
                    message: format!("invalid YAML: {error}"),
                });
                // A syntax error leaves the rest of the stream unreadable.
                return;
            }
        };
        let value: Value = match serde_json::to_value(&value) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) | Err(_) => {
                loaded.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    origin: Some(origin.to_string()),
                    object: None,
                    field: String::new(),
                    reason: tollgate_api::conditions::reason::INVALID.into(),
                    message: "a manifest must be a mapping with apiVersion, kind and metadata"
                        .into(),
                });
                continue;
            }
        };
        let checked = document::check(value, env, &mut loaded.schemas);
        for mut diagnostic in checked.diagnostics {
            diagnostic.origin = Some(origin.to_string());
            loaded.diagnostics.push(diagnostic);
        }
        if let Some(document) = checked.document {
            add(loaded, origin, document);
        }
    }
}

fn add(loaded: &mut Loaded, origin: &str, document: Document) {
    let object = document.object_ref();
    if let Some(first) = loaded.resources.origins.get(&object) {
        let mut diagnostic = Diagnostic::error(
            &object,
            "metadata.name",
            tollgate_api::conditions::reason::INVALID,
            format!("defined twice; first definition is in {first}"),
        );
        diagnostic.origin = Some(origin.to_string());
        loaded.diagnostics.push(diagnostic);
        return;
    }
    loaded.resources.origins.insert(object, origin.to_string());
    let resources = &mut loaded.resources;
    match document {
        Document::Gateway(o) => resources.gateways.push(*o),
        Document::Provider(o) => resources.providers.push(*o),
        Document::Route(o) => resources.routes.push(*o),
        Document::Budget(o) => resources.budgets.push(*o),
        Document::McpServer(o) => resources.mcp_servers.push(*o),
        Document::Secret(o) => resources.secrets.push(*o),
        Document::ConfigMap(o) => resources.config_maps.push(*o),
    }
}

fn yaml_origin(origin: &str, error: &serde_yaml::Error) -> String {
    match error.location() {
        Some(location) => format!("{origin}:{}:{}", location.line(), location.column()),
        None => origin.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec: {}
---
apiVersion: v1
kind: Secret
metadata: {name: key}
stringData: {apiKey: "${TEST_KEY}"}
---
# an empty document is skipped
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock}
spec: {type: Mock, endpoint: "http://127.0.0.1:1/v1"}
"#;

    fn env(name: &str) -> Option<String> {
        (name == "TEST_KEY").then(|| "secret".to_string())
    }

    #[test]
    fn reads_multi_document_streams() {
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "a.yaml", GOOD, &env);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.resources.gateways.len(), 1);
        assert_eq!(loaded.resources.providers.len(), 1);
        assert_eq!(loaded.resources.secrets.len(), 1);
    }

    #[test]
    fn duplicate_objects_are_errors_naming_both_files() {
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "a.yaml", GOOD, &env);
        add_documents(&mut loaded, "b.yaml", GOOD, &env);
        let messages: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages[0].starts_with(
                "b.yaml:AIGateway/gw: metadata.name: defined twice; first definition is in a.yaml"
            ),
            "{messages:?}"
        );
    }

    #[test]
    fn yaml_syntax_errors_carry_line_numbers() {
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "bad.yaml", "kind: [unclosed\n", &env);
        let message = loaded.diagnostics[0].to_string();
        assert!(message.starts_with("bad.yaml:"), "{message}");
        assert!(message.contains("invalid YAML"), "{message}");
    }

    #[test]
    fn directories_are_read_recursively_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("sub/a.yml"), "").unwrap();
        std::fs::write(dir.path().join("kustomization.yaml"), "resources: [b.yaml]").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let loaded = load_paths_with_env(&[dir.path().to_path_buf()], &env).unwrap();
        let names: Vec<String> = loaded
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["b.yaml", "a.yml"]);
        assert!(!loaded.has_errors());
    }
}
