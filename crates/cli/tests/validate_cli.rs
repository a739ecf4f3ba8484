//! `tollgate validate`: exit codes and messages that name file, resource and field.

mod common;

use std::process::Command;

use common::{BIN, write};

fn validate(paths: &[&std::path::Path]) -> (i32, String) {
    let output = Command::new(BIN)
        .arg("validate")
        .args(paths)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn quickstart_and_examples_are_valid() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples");
    let (code, out) = validate(&[std::path::Path::new(examples)]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn broken_manifests_are_rejected_with_file_resource_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let routes = write(
        dir.path(),
        "routes.yaml",
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: heavy}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends: [{providerRef: {name: mock}, model: m, weight: 101}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: dangling}
spec:
  gatewayRef: {name: gw}
  models: [other]
  backends: [{providerRef: {name: missing}, model: m}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: typo}
spec:
  gatewayRef: {name: gw}
  modles: [x]
  backends: [{providerRef: {name: mock}, model: m}]
"#,
    );
    let providers = write(
        dir.path(),
        "providers.yaml",
        r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock}
spec: {type: Mock, endpoint: "http://127.0.0.1:1/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: openai}
spec:
  type: OpenAI
  credentials: {secretRef: {name: openai-key, key: apiKey}}
"#,
    );
    let (code, out) = validate(&[&routes, &providers]);
    assert_eq!(code, 1, "{out}");
    let routes = routes.display().to_string();
    let providers = providers.display().to_string();
    for expected in [
        format!(
            "{routes}:AIRoute/heavy: spec.backends[0].weight: weight must be between 0 and 100"
        ),
        format!(
            "{routes}:AIRoute/dangling: spec.backends[0].providerRef.name: ModelProvider \"missing\" not found in namespace default"
        ),
        format!("{routes}:AIRoute/typo: spec.modles: unknown field `modles`, expected one of"),
        format!(
            "{providers}:ModelProvider/openai: spec.credentials.secretRef: Secret \"openai-key\" not found in namespace default"
        ),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{out}"
        );
    }
}

#[test]
fn yaml_syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let (code, out) = validate(&[&bad]);
    assert_eq!(code, 1);
    let rest = out
        .strip_prefix(&format!("{}:", bad.display()))
        .unwrap_or_else(|| panic!("{out}"));
    let (line, rest) = rest.split_once(':').unwrap();
    assert!(
        line.parse::<u32>().is_ok_and(|l| l >= 2),
        "line number in {out}"
    );
    assert!(rest.contains("invalid YAML"), "{out}");
}

#[test]
fn crds_command_prints_three_crds() {
    let output = Command::new(BIN).arg("crds").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for name in [
        "aigateways.tollgate.dev",
        "modelproviders.tollgate.dev",
        "airoutes.tollgate.dev",
    ] {
        assert!(text.contains(&format!("name: {name}")), "{name}");
    }
}
