//! `tollgate validate`: what the apiserver and the compiler would say, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_config::{Diagnostic, compile};

pub fn run(paths: &[PathBuf]) -> ExitCode {
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
    let compiled = compile(&loaded.resources);
    let diagnostics: Vec<&Diagnostic> = loaded
        .diagnostics
        .iter()
        .chain(&compiled.diagnostics)
        .collect();
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
