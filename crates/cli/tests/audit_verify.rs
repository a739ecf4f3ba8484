//! `tollgate audit verify` on real files: an untouched log (rotated into
//! two files) verifies; a removed record and an edited record are each
//! reported by file and line, with exit status 1.

use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value, json};
use tollgate_audit::Chain;

fn record(n: u64) -> Map<String, Value> {
    let Value::Object(fields) = json!({
        "kind": "mcp", "principal": {"user": "ann"}, "tool": "tickets__create",
        "decision": {"action": "allowed"}, "latencyMs": n,
    }) else {
        unreachable!("an object literal")
    };
    fields
}

fn run(files: &[&Path]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("audit")
        .arg("verify")
        .args(files)
        .output()
        .expect("tollgate runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn removed_and_edited_records_are_found_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Chain::new("gw-0");
    let lines: Vec<String> = (1..=8).map(|n| chain.seal(record(n)).to_string()).collect();
    let older = dir.path().join("audit.log.1");
    let newer = dir.path().join("audit.log");
    std::fs::write(&older, lines[..5].join("\n") + "\n").unwrap();
    std::fs::write(&newer, lines[5..].join("\n") + "\n").unwrap();

    let (code, out) = run(&[&older, &newer]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: 8 records in 1 chain(s) verified"),
        "{out}"
    );
    assert!(out.contains("records #1..#8 (from its start)"), "{out}");

    // Record #3 removed from the older file.
    let mut removed = lines[..5].to_vec();
    removed.remove(2);
    std::fs::write(&older, removed.join("\n") + "\n").unwrap();
    let (code, out) = run(&[&older, &newer]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "TAMPERED {}:3: record gw-0#4 follows #2: record #3 is missing before it",
            older.display()
        )),
        "{out}"
    );

    // Record #7 (the newer file's second line) edited.
    std::fs::write(&older, lines[..5].join("\n") + "\n").unwrap();
    let edited = lines[6].replace("\"latencyMs\":7", "\"latencyMs\":1");
    std::fs::write(
        &newer,
        [lines[5].clone(), edited, lines[7].clone()].join("\n") + "\n",
    )
    .unwrap();
    let (code, out) = run(&[&older, &newer]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "TAMPERED {}:2: record gw-0#7 does not match its hash: it was edited",
            newer.display()
        )),
        "{out}"
    );

    let (code, _) = run(&[&dir.path().join("absent.log")]);
    assert_eq!(code, 2);
}
