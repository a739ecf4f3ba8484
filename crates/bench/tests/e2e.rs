//! End-to-end smoke test of the binary: built-in stub mock, nginx if
//! installed, and a tollgate binary that doesn't exist (must be skipped,
//! not fatal).

use std::path::Path;
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
}
