//! `tollgate validate`: exit codes and messages that name file, resource and field.

mod common;

use std::process::Command;

use common::{BIN, write};

fn validate(paths: &[&std::path::Path]) -> (i32, String) {
    validate_with(&[], paths)
}

/// Validates `text` as one file; also returns that file's path.
fn validate_text(flags: &[&str], text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "manifests.yaml", text);
    let (code, out) = validate_with(flags, &[&file]);
    (code, out, file.display().to_string())
}

fn validate_with(flags: &[&str], paths: &[&std::path::Path]) -> (i32, String) {
    let output = Command::new(BIN)
        .arg("validate")
        .args(flags)
        .args(paths)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Each of `expected` is a whole line of `out`.
fn assert_lines(out: &str, expected: &[String]) {
    for line in expected {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
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
        format!("{routes}:AIRoute/typo: spec.modles: unknown field \"modles\""),
        format!("{routes}:AIRoute/typo: spec.models: Required value"),
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

#[test]
fn every_decode_error_of_an_object_is_reported() {
    let (code, out, file) = validate_text(
        &[],
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: typos}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends:
  - {providerRef: {name: mock}, model: m, wieght: 3}
  - {providerRef: {name: mock}, model: m, priorty: 1}
  timeouts: {request: 30s, idle: 10s}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: shapes}
spec:
  type: Mock
  endpoint: "http://mock:1/v1"
  maxConcurrentRequests: lots
  models: {name: m}
"#,
    );
    assert_eq!(code, 1, "{out}");
    assert_lines(
        &out,
        &[
            format!("{file}:AIRoute/typos: spec.backends[0].wieght: unknown field \"wieght\""),
            format!("{file}:AIRoute/typos: spec.backends[1].priorty: unknown field \"priorty\""),
            format!("{file}:AIRoute/typos: spec.timeouts.idle: unknown field \"idle\""),
            format!(
                "{file}:ModelProvider/shapes: spec.maxConcurrentRequests: Invalid value: \"string\": must be of type integer"
            ),
            format!(
                "{file}:ModelProvider/shapes: spec.models: Invalid value: \"object\": must be of type array"
            ),
        ],
    );
    assert_eq!(out.lines().count(), 5, "one line per error:\n{out}");
}

#[test]
fn unknown_enum_values_are_reported_as_kubectl_does() {
    let (code, out, file) = validate_text(
        &[],
        r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: lower}
spec: {type: openai, endpoint: "https://api.openai.com/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec: {upstreamErrors: {detail: Verbose}}
"#,
    );
    assert_eq!(code, 1, "{out}");
    assert_lines(
        &out,
        &[
            format!(
                "{file}:ModelProvider/lower: spec.type: Unsupported value: \"openai\": supported values: \"OpenAI\", \"OpenAICompatible\", \"AzureOpenAI\", \"Anthropic\", \"Bedrock\", \"Gemini\", \"Mock\""
            ),
            format!(
                "{file}:AIGateway/gw: spec.upstreamErrors.detail: Unsupported value: \"Verbose\": supported values: \"Sanitize\", \"PassThrough\""
            ),
        ],
    );
}

#[test]
fn an_endpoint_without_a_host_is_refused_with_one_message() {
    let (code, out, file) = validate_text(
        &[],
        r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: nohost}
spec: {type: Mock, endpoint: "http://"}
"#,
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim_end(),
        format!(
            "{file}:ModelProvider/nohost: spec.endpoint: {}",
            tollgate_api::provider::ENDPOINT_MESSAGE
        )
    );
}

/// A routes file on its own: its gateway, provider and Secret live elsewhere.
const ROUTE_ALONE: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: alone}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends: [{providerRef: {name: mock}, model: m}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: openai}
spec:
  type: OpenAI
  credentials: {secretRef: {name: openai-key, key: apiKey}}
"#;

#[test]
fn references_error_is_the_default() {
    for flags in [&[][..], &["--references=error"][..]] {
        let (code, out, file_text) = validate_text(flags, ROUTE_ALONE);
        assert_eq!(code, 1, "{flags:?}: {out}");
        assert_lines(
            &out,
            &[
                format!(
                    "{file_text}:AIRoute/alone: spec.gatewayRef.name: AIGateway \"gw\" not found in namespace default"
                ),
                format!(
                    "{file_text}:ModelProvider/openai: spec.credentials.secretRef: Secret \"openai-key\" not found in namespace default"
                ),
            ],
        );
    }
}

#[test]
fn references_warn_prints_them_and_passes() {
    let (code, out, _) = validate_text(&["--references=warn"], ROUTE_ALONE);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // The route is still checked without its gateway, so its provider is missed too.
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|l| l.starts_with("warning: ")), "{out}");
    for missing in [
        "AIGateway \"gw\" not found",
        "ModelProvider \"mock\" not found",
        "Secret \"openai-key\" not found",
    ] {
        assert!(out.contains(missing), "{missing} in {out}");
    }
}

#[test]
fn references_off_hides_them_but_not_other_errors() {
    let (code, out, _) = validate_text(&["--references=off"], ROUTE_ALONE);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "", "nothing to say");

    let broken = ROUTE_ALONE.replace("models: [chat]", "models: [chat, chat]");
    let (code, out, file) = validate_text(&["--references=off"], &broken);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim_end(),
        format!("{file}:AIRoute/alone: spec.models: model aliases must be unique")
    );
}

#[test]
fn references_off_still_checks_a_route_against_providers_in_the_file() {
    let text = format!(
        "{ROUTE_ALONE}---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: uncatalogued}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [other]\n  backends: [{{providerRef: {{name: openai}}, model: gpt-4o}}]\n"
    )
    .replace(
        "  credentials: {secretRef: {name: openai-key, key: apiKey}}\n",
        "  credentials: {secretRef: {name: openai-key, key: apiKey}}\n  models: [{name: gpt-4o-mini}]\n",
    );
    // The Secret is elsewhere too, so the provider is only known by its spec:
    // its catalog still applies.
    let (code, out, file) = validate_text(&["--references=off"], &text);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim_end(),
        format!(
            "{file}:AIRoute/uncatalogued: spec.backends[0].model: model \"gpt-4o\" is not in the catalog of ModelProvider \"openai\""
        )
    );
}

#[test]
fn references_rejects_unknown_modes() {
    let output = Command::new(BIN)
        .args(["validate", "--references=maybe", "x.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
