//! End-to-end smoke tests of the binary: built-in stub mock, nginx if
//! installed, and a tollgate binary that doesn't exist (must be skipped,
//! not fatal); and the MCP section against the real tollgate when it is
//! built next to this harness.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn stub_run_writes_report_and_skips_missing_tollgate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate-bench"))
        .args([
            "--stub-mock",
            "--quick",
            "--duration-secs",
            "0.5",
            "--warmup-secs",
            "0.2",
            "--rates",
            "200",
            "--stream-requests",
            "10",
            "--tollgate",
            "/nonexistent/tollgate",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SKIPPED"), "{stdout}");

    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let targets = v["targets"].as_array().unwrap();
    let by_name = |n: &str| targets.iter().find(|t| t["name"] == n).unwrap();

    let direct = by_name("mock-direct");
    assert!(direct["skipped"].is_null());
    assert_eq!(direct["open_loop"][0]["ok"], 100);
    assert_eq!(direct["streaming_ttfb"]["ok"], 10);

    if Path::new("/usr/sbin/nginx").exists() {
        let nginx = by_name("nginx");
        assert!(nginx["skipped"].is_null(), "{nginx}");
        assert_eq!(nginx["open_loop"][0]["ok"], 100);
        assert!(nginx["open_loop"][0]["cpu_per_request"]["target_us"].is_number());
    }

    assert!(
        by_name("tollgate")["skipped"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    assert!(
        v["summary"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["verdict"] == "SKIPPED")
    );

    // MCP: the direct targets run against the stub's /mcp; the gateway's
    // are skipped, with the reason, since there is no tollgate.
    let mcp = &v["mcp"];
    let mcp_target = |n: &str| {
        mcp["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
            .clone()
    };
    for name in ["mcp-call-direct", "mcp-list-direct"] {
        let t = mcp_target(name);
        assert!(t["skipped"].is_null(), "{t}");
        assert!(t["closed_loop"]["ok"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(t["closed_loop"]["errors"], 0, "{t}");
    }
    for name in [
        "mcp-call-passthrough",
        "mcp-call-aggregated",
        "mcp-list-aggregated",
    ] {
        let t = mcp_target(name);
        assert!(t["skipped"].as_str().unwrap().contains("not found"), "{t}");
    }
    assert!(mcp["tools_call"]["direct"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(mcp["tools_call"]["via"].as_array().unwrap().is_empty());
    assert!(stdout.contains("MCP: tools/call overhead"), "{stdout}");
    assert!(
        stdout.contains("NOTE: MCP target mcp-call-passthrough SKIPPED"),
        "{stdout}"
    );
}

/// The tollgate binary this harness was built with (`cargo test
/// --workspace` builds it into the same directory), or `TOLLGATE_BIN`.
fn tollgate_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("TOLLGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_tollgate-bench")).with_file_name("tollgate")
        });
    bin.is_file().then_some(bin)
}

#[test]
fn mcp_section_through_a_real_gateway() {
    let Some(tollgate) = tollgate_bin() else {
        eprintln!(
            "SKIP: no tollgate binary next to tollgate-bench (run `cargo test --workspace` or set TOLLGATE_BIN)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate-bench"))
        .args([
            "--sections",
            "mcp",
            "--duration-secs",
            "0.4",
            "--warmup-secs",
            "0.2",
            "--concurrency",
            "4",
        ])
        .arg("--tollgate")
        .arg(&tollgate)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    // Only the MCP section ran.
    assert!(v["targets"].as_array().unwrap().is_empty());
    assert!(!stdout.contains("== Open loop"), "{stdout}");
    let mcp = &v["mcp"];
    for t in mcp["targets"].as_array().unwrap() {
        assert!(t["skipped"].is_null(), "{t}\nstderr:\n{stderr}");
        assert!(t["closed_loop"]["ok"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(t["closed_loop"]["errors"], 0, "{t}");
        assert!(
            t["closed_loop"]["cpu_per_request"]["target_us"].is_number(),
            "{t}"
        );
    }
    let call = &mcp["tools_call"];
    assert_eq!(call["direct"]["target"], "mcp-call-direct");
    let via: Vec<&str> = call["via"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["figures"]["target"].as_str().unwrap())
        .collect();
    assert_eq!(via, ["mcp-call-passthrough", "mcp-call-aggregated"]);
    assert!(call["via"][1]["added"]["p50_us"].is_number());
    let list = &mcp["tools_list"];
    assert_eq!(list["via"][0]["figures"]["target"], "mcp-list-aggregated");
    assert!(list["via"][0]["figures"]["cpu_us"].is_number());
    assert!(
        mcp["gateway_shutdown"]
            .as_str()
            .unwrap()
            .starts_with("stopped")
    );
    for needle in [
        "tools/call tools__add -> gw /mcp",
        "10 backends, 40 tools",
        "gw cpu",
    ] {
        assert!(stdout.contains(needle), "missing {needle}:\n{stdout}");
    }
}
