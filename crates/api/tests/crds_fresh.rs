//! `crds/` is generated; this fails when someone changed the types without
//! regenerating, so the committed YAML always matches what the code serves.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let mut expected_files = Vec::new();
    for crd in tollgate_api::crds() {
        let name = tollgate_api::crd_file_name(&crd);
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        let generated = tollgate_api::crd_yaml(&crd).unwrap();
        assert!(
            committed == generated,
            "crds/{name} is stale or missing: run `make crds` and commit the result"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds files no CRD generates: remove them"
    );
}

#[test]
fn crds_carry_cel_rules_printer_columns_and_short_names() {
    for crd in tollgate_api::crds() {
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} has a status subresource",
            crd.spec.names.kind
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3)
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        );
        let yaml = serde_yaml::to_string(&crd).unwrap();
        assert!(
            yaml.contains("x-kubernetes-validations"),
            "{} has CEL rules",
            crd.spec.names.kind
        );
    }
}
