//! `tollgate audit verify`: checks audit log files' hash chains and says
//! which record was edited or removed, by file and line.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Audit log files (JSON lines), oldest first when a log was rotated.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Exit 0 when every chain holds, 1 when a record was edited, removed or
/// is unreadable, 2 when a file cannot be read.
pub fn verify(args: &VerifyArgs) -> ExitCode {
    let mut lines = Vec::new();
    for file in &args.files {
        let handle = match std::fs::File::open(file) {
            Ok(handle) => handle,
            Err(error) => {
                eprintln!("tollgate audit verify: {}: {error}", file.display());
                return ExitCode::from(2);
            }
        };
        for (index, line) in std::io::BufReader::new(handle).lines().enumerate() {
            match line {
                Ok(line) => lines.push((file.display().to_string(), index + 1, line)),
                Err(error) => {
                    eprintln!("tollgate audit verify: {}: {error}", file.display());
                    return ExitCode::from(2);
                }
            }
        }
    }
    // Number the lines across files, then name the file in each problem.
    let (report, problems) = tollgate_audit::verify(
        lines
            .iter()
            .enumerate()
            .map(|(global, (_, _, text))| (global + 1, text.as_str())),
    );
    let place = |global: usize| {
        lines
            .get(global - 1)
            .map(|(file, line, _)| format!("{file}:{line}"))
            .unwrap_or_default()
    };
    for problem in &problems {
        let global = match problem {
            tollgate_audit::Tamper::Malformed { line, .. }
            | tollgate_audit::Tamper::Edited { line, .. }
            | tollgate_audit::Tamper::Missing { line, .. }
            | tollgate_audit::Tamper::BrokenLink { line, .. } => *line,
        };
        let message = problem.to_string();
        let detail = message
            .split_once(": ")
            .map_or(message.as_str(), |(_, d)| d);
        println!("TAMPERED {}: {detail}", place(global));
    }
    for (replica, chain) in &report.chains {
        println!(
            "chain {replica}: records #{}..#{}{}, last hash {}",
            chain.first,
            chain.last,
            if chain.from_genesis {
                " (from its start)"
            } else {
                " (a segment: its start is in an earlier file)"
            },
            chain.last_hash
        );
    }
    if problems.is_empty() {
        println!(
            "ok: {} records in {} chain(s) verified",
            report.records,
            report.chains.len()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "FAILED: {} problem(s) in {} records",
            problems.len(),
            report.records
        );
        ExitCode::from(1)
    }
}
