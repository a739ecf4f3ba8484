//! Status conditions for every Tollgate resource, derived from one compile.
//! Pure: resources, the compile output and the clock in; the conditions each
//! object should carry out. The IO layer patches only what changed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tollgate_api::ResourceStatus;
use tollgate_api::conditions::{self, reason};
use tollgate_config::resources::object_ref;
use tollgate_config::{Compiled, Diagnostic, ObjectRef, Resources};

/// Longest condition message written; the API allows 32 KiB, people read less.
const MAX_MESSAGE: usize = 1024;

/// The status one object should have.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredStatus {
    pub object: ObjectRef,
    pub status: ResourceStatus,
    /// AIGateways only: what their workload reports.
    pub fleet: Option<Fleet>,
}

/// A gateway's pods as its Deployment and Service report them, and what
/// the config channel knows about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    pub replicas: i32,
    pub ready_replicas: i32,
    pub endpoint: String,
    pub config: crate::distribution::Tally,
}

impl DesiredStatus {
    /// The status subresource body to apply.
    pub fn to_json(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "observedGeneration": self.status.observed_generation,
            "conditions": self.status.conditions,
        });
        if let Some(fleet) = &self.fleet {
            status["replicas"] = fleet.replicas.into();
            status["readyReplicas"] = fleet.ready_replicas.into();
            status["endpoint"] = fleet.endpoint.clone().into();
            if let Some(hash) = &fleet.config.hash {
                status["configHash"] = tollgate_config::snapshot::short_hash(hash).into();
            }
            status["connectedGateways"] = fleet.config.connected.into();
            status["updatedGateways"] = fleet.config.updated.into();
        }
        status
    }
}

/// The conditions each object carries now, by object. The caller reads them
/// from the freshest view it has (the live cache), not from the copy the
/// compile saw: our own writes land after that copy was taken.
pub type CurrentConditions = std::collections::HashMap<ObjectRef, Vec<Condition>>;

/// Conditions for every AIGateway, ModelProvider and AIRoute in `resources`;
/// `fleets` holds what each gateway's workload reports, `current` the
/// conditions each object has now (transition times are kept from them).
pub fn desired_statuses(
    resources: &Resources,
    compiled: &Compiled,
    fleets: &BTreeMap<ObjectRef, Fleet>,
    current: &CurrentConditions,
    now: &Time,
) -> Vec<DesiredStatus> {
    let mut errors: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
    for diagnostic in compiled.diagnostics.iter().filter(|d| d.is_error()) {
        if let Some(object) = &diagnostic.object {
            errors.entry(object).or_default().push(diagnostic);
        }
    }
    let programmed_routes: std::collections::HashSet<&str> = compiled
        .snapshots
        .values()
        .flat_map(|s| s.config.routes.iter().map(|r| &*r.name))
        .collect();

    let mut out = Vec::new();
    let mut push = |object: ObjectRef, generation: Option<i64>, programmed: Programmed| {
        let problems = errors.get(&object).map(Vec::as_slice).unwrap_or_default();
        let existing = current.get(&object).map(Vec::as_slice);
        let conditions = conditions_for(problems, programmed, generation, existing, now);
        let fleet =
            (object.kind == "AIGateway").then(|| fleets.get(&object).cloned().unwrap_or_default());
        let status = ResourceStatus {
            observed_generation: generation,
            conditions,
        };
        out.push(DesiredStatus {
            object,
            status,
            fleet,
        });
    };
    for gateway in &resources.gateways {
        let object = object_ref(gateway);
        let programmed = match compiled.snapshots.get(&object) {
            Some(snapshot) => {
                Programmed::Yes(format!("configuration {} compiled", snapshot.short_hash()))
            }
            None => Programmed::No,
        };
        push(object, gateway.metadata.generation, programmed);
    }
    for provider in &resources.providers {
        let object = object_ref(provider);
        let programmed = if errors.contains_key(&object) {
            Programmed::No
        } else {
            Programmed::Yes("provider is usable by routes".into())
        };
        push(object, provider.metadata.generation, programmed);
    }
    for route in &resources.routes {
        let object = object_ref(route);
        let name = format!("{}/{}", object.namespace, object.name);
        let programmed = if programmed_routes.contains(&name.as_str()) {
            Programmed::Yes(format!(
                "serving on AIGateway {}",
                route.spec.gateway_ref.name
            ))
        } else {
            Programmed::No
        };
        push(object, route.metadata.generation, programmed);
    }
    out.sort_by(|a, b| a.object.cmp(&b.object));
    out
}

enum Programmed {
    Yes(String),
    No,
}

/// Reasons that mean "a reference does not resolve" rather than "invalid".
fn is_reference_problem(reason_: &str) -> bool {
    matches!(
        reason_,
        reason::PROVIDER_NOT_FOUND | reason::GATEWAY_NOT_FOUND | reason::SECRET_NOT_FOUND
    )
}

fn conditions_for(
    problems: &[&Diagnostic],
    programmed: Programmed,
    generation: Option<i64>,
    current: Option<&[Condition]>,
    now: &Time,
) -> Vec<Condition> {
    let (refs, invalid): (Vec<&Diagnostic>, Vec<&Diagnostic>) = problems
        .iter()
        .partition(|d| is_reference_problem(&d.reason));
    let accepted = match invalid.first() {
        None => (
            true,
            reason::ACCEPTED.to_string(),
            "resource is valid".to_string(),
        ),
        Some(first) => (false, first.reason.clone(), summarize(&invalid)),
    };
    let resolved = match refs.first() {
        None => (
            true,
            reason::RESOLVED_REFS.to_string(),
            "all references resolve".to_string(),
        ),
        Some(first) => (false, first.reason.clone(), summarize(&refs)),
    };
    let programmed = match programmed {
        Programmed::Yes(message) => (true, reason::PROGRAMMED.to_string(), message),
        Programmed::No => (
            false,
            reason::PENDING.to_string(),
            "not part of the served configuration; see the other conditions".to_string(),
        ),
    };
    [
        (conditions::ACCEPTED, accepted),
        (conditions::RESOLVED_REFS, resolved),
        (conditions::PROGRAMMED, programmed),
    ]
    .into_iter()
    .map(|(type_, (ok, reason_, message))| {
        let status = if ok { "True" } else { "False" }.to_string();
        // Keep the transition time while the status itself is unchanged.
        let last_transition_time = current
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status,
            reason: reason_,
            message,
            observed_generation: generation,
            last_transition_time,
        }
    })
    .collect()
}

/// "field: message; field: message", bounded.
fn summarize(diagnostics: &[&Diagnostic]) -> String {
    let mut text = diagnostics
        .iter()
        .map(|d| {
            if d.field.is_empty() {
                d.message.clone()
            } else {
                format!("{}: {}", d.field, d.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A Warning Event to publish: a condition that newly fails, or fails for a
/// new reason or message. Steady failures are not repeated on every compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub reason: String,
    pub message: String,
}

pub fn warnings(current: Option<&[Condition]>, desired: &[Condition]) -> Vec<Warning> {
    desired
        .iter()
        .filter(|c| c.status == "False" && c.type_ != conditions::PROGRAMMED)
        .filter(|c| {
            let before = current.and_then(|cs| cs.iter().find(|p| p.type_ == c.type_));
            before.is_none_or(|p| {
                p.status != c.status || p.reason != c.reason || p.message != c.message
            })
        })
        .map(|c| Warning {
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

/// True when `desired` differs from what the object carries: a patch is needed.
pub fn needs_update(current: Option<&serde_json::Value>, desired: &DesiredStatus) -> bool {
    current != Some(&desired.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::compile;
    use tollgate_config::load::{Loaded, add_documents};

    const MANIFESTS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw, generation: 3}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock, generation: 1}
spec: {type: Mock, endpoint: "http://127.0.0.1:1/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: openai, generation: 1}
spec:
  type: OpenAI
  credentials: {secretRef: {name: missing, key: apiKey}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: good, generation: 7, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends: [{providerRef: {name: mock}, model: m}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: dangling, generation: 2}
spec:
  gatewayRef: {name: gw}
  models: [other]
  backends: [{providerRef: {name: nowhere}, model: m}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: copycat, generation: 1, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends: [{providerRef: {name: mock}, model: m}]
"#;

    /// The conditions in `resources` themselves (the tests' copy is current).
    fn conditions_in(resources: &Resources) -> CurrentConditions {
        let gateways = resources.gateways.iter().map(|o| {
            let conditions = o.status.as_ref().map(|s| s.conditions.clone());
            (object_ref(o), conditions.unwrap_or_default())
        });
        let providers = resources.providers.iter().map(|o| {
            let conditions = o.status.as_ref().map(|s| s.conditions.clone());
            (object_ref(o), conditions.unwrap_or_default())
        });
        let routes = resources.routes.iter().map(|o| {
            let conditions = o.status.as_ref().map(|s| s.conditions.clone());
            (object_ref(o), conditions.unwrap_or_default())
        });
        gateways.chain(providers).chain(routes).collect()
    }

    fn now() -> Time {
        Time("2026-11-24T00:00:00Z".parse().unwrap())
    }

    fn statuses() -> BTreeMap<String, ResourceStatus> {
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "t.yaml", MANIFESTS, &|_| None);
        let compiled = compile(&loaded.resources);
        desired_statuses(
            &loaded.resources,
            &compiled,
            &BTreeMap::new(),
            &conditions_in(&loaded.resources),
            &now(),
        )
        .into_iter()
        .map(|d| (format!("{}/{}", d.object.kind, d.object.name), d.status))
        .collect()
    }

    fn condition<'a>(status: &'a ResourceStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn every_resource_gets_three_conditions_with_its_generation() {
        let all = statuses();
        assert_eq!(all.len(), 6);
        for (name, status) in &all {
            assert_eq!(status.conditions.len(), 3, "{name}");
            assert!(
                status
                    .conditions
                    .iter()
                    .all(|c| c.observed_generation == status.observed_generation)
            );
        }
        assert_eq!(all["AIRoute/good"].observed_generation, Some(7));
    }

    #[test]
    fn a_good_route_is_accepted_resolved_and_programmed() {
        let good = &statuses()["AIRoute/good"];
        for type_ in [
            conditions::ACCEPTED,
            conditions::RESOLVED_REFS,
            conditions::PROGRAMMED,
        ] {
            assert_eq!(condition(good, type_).status, "True", "{type_}");
        }
    }

    #[test]
    fn a_dangling_reference_is_resolved_refs_false_but_accepted() {
        let all = statuses();
        let dangling = &all["AIRoute/dangling"];
        assert_eq!(condition(dangling, conditions::ACCEPTED).status, "True");
        let refs = condition(dangling, conditions::RESOLVED_REFS);
        assert_eq!(
            (refs.status.as_str(), refs.reason.as_str()),
            ("False", reason::PROVIDER_NOT_FOUND)
        );
        assert!(
            refs.message.contains("spec.backends[0].providerRef.name"),
            "{}",
            refs.message
        );
        assert_eq!(condition(dangling, conditions::PROGRAMMED).status, "False");
        let secretless = &all["ModelProvider/openai"];
        assert_eq!(
            condition(secretless, conditions::RESOLVED_REFS).reason,
            reason::SECRET_NOT_FOUND
        );
    }

    #[test]
    fn a_duplicate_alias_is_not_accepted() {
        let copycat = &statuses()["AIRoute/copycat"];
        let accepted = condition(copycat, conditions::ACCEPTED);
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", reason::DUPLICATE_ALIAS)
        );
        assert_eq!(condition(copycat, conditions::RESOLVED_REFS).status, "True");
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let earlier = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let previous = ResourceStatus {
            observed_generation: Some(6),
            conditions: vec![
                Condition {
                    type_: conditions::ACCEPTED.into(),
                    status: "True".into(),
                    reason: "Accepted".into(),
                    message: String::new(),
                    observed_generation: Some(6),
                    last_transition_time: earlier.clone(),
                },
                Condition {
                    type_: conditions::PROGRAMMED.into(),
                    status: "False".into(),
                    reason: "Pending".into(),
                    message: String::new(),
                    observed_generation: Some(6),
                    last_transition_time: earlier.clone(),
                },
            ],
        };
        let next = conditions_for(
            &[],
            Programmed::Yes("ok".into()),
            Some(7),
            Some(&previous.conditions),
            &now(),
        );
        let find = |t: &str| next.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(
            find(conditions::ACCEPTED).last_transition_time,
            earlier,
            "unchanged status keeps its time"
        );
        assert_eq!(
            find(conditions::PROGRAMMED).last_transition_time,
            now(),
            "a flip gets a new time"
        );
        let object = ObjectRef::new("AIRoute", "default", "r");
        let status = ResourceStatus {
            observed_generation: Some(7),
            conditions: next,
        };
        let desired = DesiredStatus {
            object,
            status,
            fleet: None,
        };
        let previous_json = serde_json::to_value(&previous).unwrap();
        assert!(needs_update(Some(&previous_json), &desired));
        assert!(!needs_update(Some(&desired.to_json()), &desired));
    }

    #[test]
    fn warnings_fire_on_new_failures_only() {
        let all = statuses();
        let dangling = &all["AIRoute/dangling"].conditions;
        let fresh = warnings(None, dangling);
        assert_eq!(
            fresh.len(),
            1,
            "only ResolvedRefs fails (Programmed=False is a consequence): {fresh:?}"
        );
        assert_eq!(fresh[0].reason, reason::PROVIDER_NOT_FOUND);
        assert!(
            warnings(Some(dangling), dangling).is_empty(),
            "a steady failure is not repeated"
        );
        assert!(warnings(None, &all["AIRoute/good"].conditions).is_empty());
    }

    #[test]
    fn long_messages_are_bounded_on_a_char_boundary() {
        let object = ObjectRef::new("AIRoute", "default", "r");
        let d = Diagnostic::error(&object, "spec", reason::INVALID, "é".repeat(2000));
        let text = summarize(&[&d]);
        assert!(text.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }
}
