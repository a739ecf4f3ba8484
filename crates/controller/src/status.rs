//! Status conditions for every Tollgate resource, derived from one compile.
//! Pure: resources, the compile output and the clock in; the conditions each
//! object should carry out. The IO layer patches only what changed.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tollgate_api::ResourceStatus;
use tollgate_api::conditions::{self, reason};
use tollgate_config::resources::object_ref;
use tollgate_config::{Compiled, Diagnostic, ObjectRef, Resources};

use crate::distribution::Circuits;

/// Longest condition message written; the API allows 32 KiB, people read less.
const MAX_MESSAGE: usize = 1024;

/// An unchanged status is rewritten (with a new `lastConfirmedTime`) once
/// it is this old, so a status that stops being renewed shows the
/// controller is down.
pub const CONFIRM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// The status one object should have.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredStatus {
    pub object: ObjectRef,
    pub status: ResourceStatus,
    /// AIGateways only: what their workload reports.
    pub fleet: Option<Fleet>,
    /// Kind-specific summary fields for `kubectl get` (`models`, `routes`...).
    pub summary: serde_json::Map<String, serde_json::Value>,
}

/// A gateway's pods as its Deployment and Service report them, and what
/// the config channel knows about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    pub replicas: i32,
    pub ready_replicas: i32,
    pub endpoint: String,
    pub config: crate::distribution::Tally,
    /// Budget counters its pods report, by counter key.
    pub usage: BTreeMap<String, u64>,
    /// Providers (by name) whose breaker some pod reports not closed.
    pub circuits: BTreeMap<String, Circuits>,
}

impl DesiredStatus {
    /// The status subresource body to apply.
    pub fn to_json(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "observedGeneration": self.status.observed_generation,
            "conditions": self.status.conditions,
        });
        if let Some(confirmed) = &self.status.last_confirmed_time {
            status["lastConfirmedTime"] = serde_json::json!(confirmed);
        }
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
        for (key, value) in &self.summary {
            status[key] = value.clone();
        }
        status
    }
}

/// The conditions each object carries now, by object. The caller reads them
/// from the freshest view it has (the live cache), not from the copy the
/// compile saw: our own writes land after that copy was taken.
pub type CurrentConditions = std::collections::HashMap<ObjectRef, Vec<Condition>>;

/// What the compiled snapshots serve: each route and provider, and the
/// gateways whose snapshot contains it.
struct Served<'a> {
    routes: HashMap<&'a str, &'a ObjectRef>,
    /// TokenBudgets by `namespace/name`.
    budgets: HashMap<&'a str, &'a ObjectRef>,
    /// MCPServers by `namespace/name`.
    mcp_servers: HashMap<&'a str, &'a ObjectRef>,
    /// (namespace, provider name) -> gateways.
    providers: HashMap<(&'a str, &'a str), Vec<&'a ObjectRef>>,
}

impl<'a> Served<'a> {
    fn new(compiled: &'a Compiled) -> Self {
        let mut served = Served {
            routes: HashMap::new(),
            budgets: HashMap::new(),
            mcp_servers: HashMap::new(),
            providers: HashMap::new(),
        };
        for (gateway, snapshot) in &compiled.snapshots {
            for route in &snapshot.config.routes {
                served.routes.insert(&route.name, gateway);
            }
            for budget in &snapshot.config.budgets {
                served.budgets.insert(&budget.name, gateway);
            }
            for server in &snapshot.config.mcp_servers {
                served.mcp_servers.insert(&server.name, gateway);
            }
            for provider in &snapshot.config.providers {
                served
                    .providers
                    .entry((gateway.namespace.as_str(), &*provider.name))
                    .or_default()
                    .push(gateway);
            }
        }
        served
    }
}

/// Conditions for every AIGateway, ModelProvider and AIRoute in `resources`;
/// `fleets` holds what each gateway's workload and subscribers report,
/// `servers` what the Deployments of operator-run MCPServers do,
/// `current` the conditions each object has now (transition times are kept
/// from them). `Programmed` is True only where a connected gateway has
/// acknowledged a configuration that contains the object.
pub fn desired_statuses(
    resources: &Resources,
    compiled: &Compiled,
    fleets: &BTreeMap<ObjectRef, Fleet>,
    servers: &ServerWorkloads,
    current: &CurrentConditions,
    probes: &BTreeMap<String, crate::mcp_probe::Probe>,
    now: &Time,
) -> Vec<DesiredStatus> {
    let mut errors: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
    for diagnostic in compiled.diagnostics.iter().filter(|d| d.is_error()) {
        if let Some(object) = &diagnostic.object {
            errors.entry(object).or_default().push(diagnostic);
        }
    }
    let served = Served::new(compiled);
    let serving = |gateway: &ObjectRef| -> Programmed {
        let tally = fleets
            .get(gateway)
            .map(|f| f.config.clone())
            .unwrap_or_default();
        let hash = tally
            .hash
            .as_deref()
            .map(tollgate_config::snapshot::short_hash)
            .unwrap_or_default();
        if tally.connected == 0 {
            Programmed::No(
                reason::NO_GATEWAYS_CONNECTED,
                format!(
                    "no gateway process of AIGateway {} is connected to the controller",
                    gateway.name
                ),
            )
        } else if tally.updated == 0 {
            Programmed::No(
                reason::PROGRAMMING,
                format!(
                    "{} gateway(s) of AIGateway {} connected; none has applied configuration {hash} yet",
                    tally.connected, gateway.name
                ),
            )
        } else {
            Programmed::Yes(format!(
                "served by {} of {} connected gateway(s) of AIGateway {} (configuration {hash})",
                tally.updated, tally.connected, gateway.name
            ))
        }
    };
    // Not served because of the object's own problem: that problem's reason.
    let own_problem = |object: &ObjectRef| {
        errors.get(object).and_then(|e| e.first()).map(|first| {
            Programmed::No(
                reason_of(first),
                "not part of the served configuration; see the failing condition".to_string(),
            )
        })
    };

    // A route, budget or MCP server: served when its gateway's snapshot
    // holds it (by `namespace/name`), else its own problem or the gateway's.
    let attached = |object: &ObjectRef, served: &HashMap<&str, &ObjectRef>, gateway: &str| {
        let name = format!("{}/{}", object.namespace, object.name);
        own_problem(object).unwrap_or_else(|| match served.get(name.as_str()) {
            Some(serving_gateway) => serving(serving_gateway),
            None => Programmed::No(
                reason::GATEWAY_NOT_ACCEPTED,
                format!("AIGateway {gateway} has no served configuration; see its conditions"),
            ),
        })
    };

    let mut out = Vec::new();
    let mut push =
        |object: ObjectRef,
         generation: Option<i64>,
         programmed: Programmed,
         summary: serde_json::Map<String, serde_json::Value>,
         extra: Vec<(&'static str, crate::mcp_probe::ConditionState)>| {
            let problems = errors.get(&object).map(Vec::as_slice).unwrap_or_default();
            let existing = current.get(&object).map(Vec::as_slice);
            let mut conditions = conditions_for(problems, programmed, generation, existing, now);
            conditions.extend(extra.into_iter().map(|(type_, (ok, reason_, message))| {
                condition(
                    type_,
                    ok,
                    reason_.to_string(),
                    message,
                    generation,
                    existing,
                    now,
                )
            }));
            let fleet = (object.kind == "AIGateway")
                .then(|| fleets.get(&object).cloned().unwrap_or_default());
            let status = ResourceStatus {
                observed_generation: generation,
                conditions,
                last_confirmed_time: Some(now.clone()),
            };
            out.push(DesiredStatus {
                object,
                status,
                fleet,
                summary,
            });
        };
    for gateway in &resources.gateways {
        let object = object_ref(gateway);
        let programmed = if compiled.snapshots.contains_key(&object) {
            serving(&object)
        } else {
            own_problem(&object).unwrap_or_else(|| {
                Programmed::No(reason::INVALID, "no configuration compiled".into())
            })
        };
        let summary = gateway_summary(resources, &object, &served);
        push(
            object,
            gateway.metadata.generation,
            programmed,
            summary,
            Vec::new(),
        );
    }
    for provider in &resources.providers {
        let object = object_ref(provider);
        let key = (object.namespace.as_str(), object.name.as_str());
        let programmed = own_problem(&object).unwrap_or_else(|| match served.providers.get(&key) {
            Some(gateways) => {
                let verdicts: Vec<Programmed> = gateways.iter().map(|g| serving(g)).collect();
                let best = verdicts
                    .iter()
                    .position(|p| matches!(p, Programmed::Yes(_)))
                    .unwrap_or(0);
                verdicts
                    .into_iter()
                    .nth(best)
                    .unwrap_or_else(|| Programmed::No(reason::NOT_REFERENCED, String::new()))
            }
            None => Programmed::No(
                reason::NOT_REFERENCED,
                "no served route uses this provider".into(),
            ),
        });
        // Served: its breaker as the replicas of each serving gateway see it.
        let mut summary = serde_json::Map::new();
        let mut extra = Vec::new();
        if let Some(gateways) = served.providers.get(&key) {
            let seen: Vec<(&ObjectRef, i32, Circuits)> = gateways
                .iter()
                .map(|gateway| {
                    let fleet = fleets.get(*gateway);
                    let replicas = fleet.map_or(0, |f| f.config.connected);
                    let circuits = fleet
                        .and_then(|f| f.circuits.get(&object.name).copied())
                        .unwrap_or_default();
                    (*gateway, replicas, circuits)
                })
                .collect();
            let (column, condition) = circuit_status(&seen);
            summary.insert("circuit".into(), column.into());
            extra.push((conditions::CIRCUIT_CLOSED, condition));
        }
        push(
            object,
            provider.metadata.generation,
            programmed,
            summary,
            extra,
        );
    }
    for route in &resources.routes {
        let object = object_ref(route);
        let programmed = attached(&object, &served.routes, &route.spec.gateway_ref.name);
        let mut summary = serde_json::Map::new();
        summary.insert("models".into(), route.spec.models.join(", ").into());
        let backends = route
            .spec
            .backends
            .iter()
            .map(|b| {
                let model = b.model.as_deref().unwrap_or("*");
                format!("{}/{model}", b.provider_ref.name)
            })
            .collect::<Vec<_>>()
            .join(", ");
        summary.insert("backends".into(), backends.into());
        push(
            object,
            route.metadata.generation,
            programmed,
            summary,
            Vec::new(),
        );
    }
    for budget in &resources.budgets {
        let object = object_ref(budget);
        let programmed = attached(&object, &served.budgets, &budget.spec.gateway_ref.name);
        let name = format!("{}/{}", object.namespace, object.name);
        let compiled_budget = served.budgets.get(name.as_str()).and_then(|gateway| {
            let config = &compiled.snapshots.get(*gateway)?.config;
            let usage = fleets.get(*gateway).map(|f| &f.usage);
            Some((config.budgets.iter().find(|b| *b.name == name)?, usage))
        });
        let summary = match compiled_budget {
            Some((budget, Some(usage))) => budget_summary(budget, usage, now_ms(now)),
            Some((budget, None)) => budget_summary(budget, &BTreeMap::new(), now_ms(now)),
            None => serde_json::Map::new(),
        };
        push(
            object,
            budget.metadata.generation,
            programmed,
            summary,
            Vec::new(),
        );
    }
    let mut available = HashMap::new();
    for server in &resources.mcp_servers {
        let object = object_ref(server);
        let programmed = attached(&object, &served.mcp_servers, &server.spec.gateway_ref.name);
        let mut summary = serde_json::Map::new();
        let path = server
            .spec
            .path
            .clone()
            .unwrap_or_else(|| object.name.clone());
        summary.insert("path".into(), format!("/mcp/{path}").into());
        if let Some(url) = tollgate_config::compile::backend_url(server) {
            summary.insert("url".into(), url.into());
        }
        let existing = current.get(&object).map(Vec::as_slice);
        if let Some(condition) = available_condition(server, servers.get(&object), existing, now) {
            available.insert(object.clone(), condition);
        }
        let name = format!("{}/{}", object.namespace, object.name);
        let extra = mcp_probe_status(
            server,
            probes.get(&name),
            existing.unwrap_or_default(),
            &mut summary,
        );
        push(
            object,
            server.metadata.generation,
            programmed,
            summary,
            extra,
        );
    }
    for desired in &mut out {
        if let Some(condition) = available.remove(&desired.object) {
            desired.status.conditions.push(condition);
        }
    }
    out.sort_by(|a, b| a.object.cmp(&b.object));
    out
}

/// MCPServer status from the controller's own probe: the summary fields,
/// and the `Reachable` and `CatalogChanged` conditions. Before a first
/// probe (a restarted controller), what status already shows stands.
fn mcp_probe_status(
    server: &tollgate_api::MCPServer,
    probe: Option<&crate::mcp_probe::Probe>,
    existing: &[Condition],
    summary: &mut serde_json::Map<String, serde_json::Value>,
) -> Vec<(&'static str, crate::mcp_probe::ConditionState)> {
    use crate::mcp_probe::{CATALOG_CHANGED, REACHABLE, catalog_condition, reachable_condition};
    let status = server.status.as_ref();
    let kept = |type_: &str| {
        existing.iter().find(|c| c.type_ == type_).map(|c| {
            (
                c.status == "True",
                // Reasons are from a fixed set; an unknown one reads as a change.
                match c.reason.as_str() {
                    "Reachable" => "Reachable",
                    "Unreachable" => "Unreachable",
                    "Approved" => "Approved",
                    "Unchanged" => "Unchanged",
                    "AwaitingApproval" => "AwaitingApproval",
                    "NotApproved" => "NotApproved",
                    _ => "ToolsChanged",
                },
                c.message.clone(),
            )
        })
    };
    let Some(probe) = probe else {
        if let Some(status) = status {
            for (field, value) in [
                ("reachable", status.reachable.map(serde_json::Value::from)),
                (
                    "protocolVersion",
                    status.protocol_version.clone().map(Into::into),
                ),
                ("tools", status.tools.map(Into::into)),
                ("resources", status.resources.map(Into::into)),
                ("prompts", status.prompts.map(Into::into)),
                ("catalogHash", status.catalog_hash.clone().map(Into::into)),
            ] {
                if let Some(value) = value {
                    summary.insert(field.into(), value);
                }
            }
        }
        return [REACHABLE, CATALOG_CHANGED]
            .into_iter()
            .filter_map(|type_| Some((type_, kept(type_)?)))
            .collect();
    };
    let last_seen = probe.previous_hash.as_deref();
    let mut out = vec![(REACHABLE, reachable_condition(probe))];
    summary.insert("reachable".into(), probe.outcome.is_ok().into());
    let hash = match &probe.outcome {
        Ok(catalog) => {
            summary.insert(
                "protocolVersion".into(),
                catalog.protocol_version.clone().into(),
            );
            summary.insert("tools".into(), catalog.tools.len().into());
            summary.insert("resources".into(), catalog.resources.into());
            summary.insert("prompts".into(), catalog.prompts.into());
            summary.insert("catalogHash".into(), catalog.hash.clone().into());
            Some(catalog.hash.as_str())
        }
        // Unreachable: the catalog last seen stands.
        Err(_) => {
            if let Some(seen) = last_seen {
                summary.insert("catalogHash".into(), seen.into());
            }
            None
        }
    };
    let policy = server.spec.catalog.as_ref();
    let previous = kept(CATALOG_CHANGED);
    match hash {
        Some(hash) => out.push((
            CATALOG_CHANGED,
            catalog_condition(
                hash,
                last_seen,
                policy.and_then(|p| p.approved_hash.as_deref()),
                policy.and_then(|p| p.require_approval) == Some(true),
                previous
                    .as_ref()
                    .map(|(ok, _, message)| (*ok, message.as_str())),
            ),
        )),
        None => out.extend(previous.map(|state| (CATALOG_CHANGED, state))),
    }
    out
}

/// A provider's circuit breaker over the connected replicas of the gateways
/// serving it, each `(gateway, replicas, circuits)`: the `circuit` column
/// (`Closed`, `Open 2/3`, `HalfOpen 1/3`, `Open 1/3, HalfOpen 1/3`) and the
/// `CircuitClosed` condition, False while any replica skips or probes it.
pub fn circuit_status(
    gateways: &[(&ObjectRef, i32, Circuits)],
) -> (String, crate::mcp_probe::ConditionState) {
    // The counts come from two reads of the hub; never more than all.
    let replicas =
        |(_, connected, c): &(&ObjectRef, i32, Circuits)| (*connected).max(c.open + c.half_open);
    let total: i32 = gateways.iter().map(replicas).sum();
    let open: i32 = gateways.iter().map(|g| g.2.open).sum();
    let half_open: i32 = gateways.iter().map(|g| g.2.half_open).sum();
    // "2 of 3 gateway replicas (default/gw), 1 of 2 (default/edge)"
    let spread = |count: fn(&Circuits) -> i32| {
        let mut parts = gateways
            .iter()
            .filter(|g| count(&g.2) > 0)
            .enumerate()
            .map(|(i, g)| {
                let unit = if i == 0 { " gateway replicas" } else { "" };
                format!(
                    "{} of {}{unit} ({}/{})",
                    count(&g.2),
                    replicas(g),
                    g.0.namespace,
                    g.0.name
                )
            });
        let first = parts.next().unwrap_or_default();
        parts.fold(first, |text, part| format!("{text}, {part}"))
    };
    let mut column = Vec::new();
    if open > 0 {
        column.push(format!("Open {open}/{total}"));
    }
    if half_open > 0 {
        column.push(format!("HalfOpen {half_open}/{total}"));
    }
    let condition = if open > 0 {
        let probing = if half_open > 0 {
            format!("; half-open (probing) on {}", spread(|c| c.half_open))
        } else {
            String::new()
        };
        (
            false,
            reason::CIRCUIT_OPEN,
            format!(
                "circuit open on {}{probing}: requests fall back to other backends until a probe succeeds",
                spread(|c| c.open)
            ),
        )
    } else if half_open > 0 {
        (
            false,
            reason::CIRCUIT_HALF_OPEN,
            format!(
                "circuit half-open on {}: a probe request may try the provider; its success closes the circuit",
                spread(|c| c.half_open)
            ),
        )
    } else if total == 0 {
        (
            true,
            reason::CIRCUIT_CLOSED,
            "no gateway replica serving the provider is connected to report its circuit"
                .to_string(),
        )
    } else {
        (
            true,
            reason::CIRCUIT_CLOSED,
            format!("circuit closed on all {total} connected gateway replica(s)"),
        )
    };
    let column = if column.is_empty() {
        "Closed".to_string()
    } else {
        column.join(", ")
    };
    (column, condition)
}

fn now_ms(now: &Time) -> i64 {
    now.0.as_millisecond()
}

/// TokenBudget status beyond conditions: `usage` per limit and cap in the
/// current window, and `used` / `limit` / `remaining` of the first cap for
/// the printer columns. A per-member budget shows its busiest member.
pub fn budget_summary(
    budget: &tollgate_config::snapshot::Budget,
    counters: &BTreeMap<String, u64>,
    now_ms: i64,
) -> serde_json::Map<String, serde_json::Value> {
    use tollgate_config::snapshot::budget::CounterKey;
    let prefix = format!("{}|", budget.name);
    let mut usage = Vec::new();
    let mut columns = None;
    for limit in &budget.limits {
        let span = tollgate_config::window::Span::new(limit.window, limit.rolling);
        for &(metric, cap) in &limit.caps {
            // The busiest member (or the whole group: member "").
            let (member, used) = counters
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, v)| {
                    let key = CounterKey::parse(k)?;
                    (key.span == span && key.metric == metric).then(|| (key.member.to_string(), *v))
                })
                .max_by_key(|(_, v)| *v)
                .unwrap_or_default();
            let mut entry = serde_json::json!({
                "window": span.label(),
                "metric": metric.spec_name(),
                "used": metric.amount(used),
                "limit": metric.amount(cap),
            });
            if !limit.rolling {
                let resets = span.expires_ms(span.slot(now_ms));
                if let Ok(at) = k8s_openapi::jiff::Timestamp::from_millisecond(resets) {
                    entry["resetsAt"] = at.to_string().into();
                }
            }
            if !member.is_empty() {
                entry["member"] = member.clone().into();
            }
            usage.push(entry);
            columns.get_or_insert_with(|| {
                let who = if member.is_empty() {
                    String::new()
                } else {
                    format!(" ({member})")
                };
                (
                    format!("{}{who}", metric.with_unit(used)),
                    format!("{}/{}", metric.with_unit(cap), span.label()),
                    metric.with_unit(cap.saturating_sub(used)),
                )
            });
        }
    }
    let mut out = serde_json::Map::new();
    if let Some((used, limit, remaining)) = columns {
        out.insert("used".into(), used.into());
        out.insert("limit".into(), limit.into());
        out.insert("remaining".into(), remaining.into());
    }
    out.insert("usage".into(), usage.into());
    out
}

/// `routes` and `providers` of an AIGateway: served out of those naming it.
fn gateway_summary(
    resources: &Resources,
    gateway: &ObjectRef,
    served: &Served<'_>,
) -> serde_json::Map<String, serde_json::Value> {
    let mine: Vec<_> = resources
        .routes
        .iter()
        .filter(|r| {
            let route = object_ref(*r);
            route.namespace == gateway.namespace && r.spec.gateway_ref.name == gateway.name
        })
        .collect();
    let routes_served = mine
        .iter()
        .filter(|r| {
            let route = object_ref(**r);
            let name = format!("{}/{}", route.namespace, route.name);
            served.routes.get(name.as_str()) == Some(&gateway)
        })
        .count();
    let referenced: std::collections::BTreeSet<&str> = mine
        .iter()
        .flat_map(|r| r.spec.backends.iter().map(|b| b.provider_ref.name.as_str()))
        .collect();
    let usable = referenced
        .iter()
        .filter(|name| {
            served
                .providers
                .get(&(gateway.namespace.as_str(), **name))
                .is_some_and(|gateways| gateways.contains(&gateway))
        })
        .count();
    let mut summary = serde_json::Map::new();
    summary.insert(
        "routes".into(),
        format!("{routes_served}/{}", mine.len()).into(),
    );
    summary.insert(
        "providers".into(),
        format!("{usable}/{}", referenced.len()).into(),
    );
    summary
}

enum Programmed {
    Yes(String),
    No(&'static str, String),
}

/// A diagnostic's reason as a static condition reason.
fn reason_of(diagnostic: &Diagnostic) -> &'static str {
    reason::REFERENCES
        .into_iter()
        .chain([reason::DUPLICATE_ALIAS])
        .find(|r| *r == diagnostic.reason)
        .unwrap_or(reason::INVALID)
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
        .partition(|d| reason::is_reference(&d.reason));
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
        Programmed::No(reason_, message) => (false, reason_.to_string(), message),
    };
    [
        (conditions::ACCEPTED, accepted),
        (conditions::RESOLVED_REFS, resolved),
        (conditions::PROGRAMMED, programmed),
    ]
    .into_iter()
    .map(|(type_, (ok, reason_, message))| {
        condition(type_, ok, reason_, message, generation, current, now)
    })
    .collect()
}

/// One condition; its transition time is kept while its status holds.
fn condition(
    type_: &str,
    ok: bool,
    reason_: String,
    message: String,
    generation: Option<i64>,
    current: Option<&[Condition]>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
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
}

/// What the Deployment of an MCPServer the controller runs reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replicas {
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// Per MCPServer with `spec.run`, its Deployment's replicas; absent while
/// the Deployment does not exist.
pub type ServerWorkloads = BTreeMap<ObjectRef, Replicas>;

/// `Available` of an MCPServer the controller runs (`None` for an external
/// one): True while at least one replica of its Deployment is available.
fn available_condition(
    server: &tollgate_api::MCPServer,
    replicas: Option<&Replicas>,
    current: Option<&[Condition]>,
    now: &Time,
) -> Option<Condition> {
    server.spec.run.as_ref()?;
    let name = tollgate_config::compile::run_object_name(&object_ref(server).name);
    let (ok, reason_, message) = match replicas {
        None => (
            false,
            reason::DEPLOYMENT_PENDING,
            format!("Deployment {name} does not exist yet"),
        ),
        Some(r) if r.desired == 0 => (
            false,
            reason::SCALED_TO_ZERO,
            format!("run.replicas is 0: Deployment {name} runs no pod"),
        ),
        Some(r) if r.available == 0 => (
            false,
            reason::NO_REPLICAS_AVAILABLE,
            format!(
                "0 of {} replica(s) of Deployment {name} available: its pods are starting, failing or not scheduled (kubectl describe deployment {name})",
                r.desired
            ),
        ),
        Some(r) => (
            true,
            reason::AVAILABLE,
            format!(
                "{} of {} replica(s) of Deployment {name} available",
                r.available, r.desired
            ),
        ),
    };
    Some(condition(
        conditions::AVAILABLE,
        ok,
        reason_.to_string(),
        message,
        server.metadata.generation,
        current,
        now,
    ))
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

/// An Event to publish on an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// Events for a status change: a Warning when `Accepted` or `ResolvedRefs`
/// newly fails (or fails for a new reason or message; a steady failure is not
/// repeated), a Normal one when a failed condition recovers, so `kubectl
/// describe` never keeps an old Warning as the latest word. `Programmed`
/// follows from the others and from the gateways, whose coming and going
/// [`connection_note`] reports on the AIGateway, once, instead of on every
/// route. `CircuitClosed` warns when the circuit leaves closed, not on each
/// move between open and half-open.
pub fn notes(current: Option<&[Condition]>, desired: &[Condition], gateway: bool) -> Vec<Note> {
    let before = |type_: &str| current.and_then(|cs| cs.iter().find(|p| p.type_ == type_));
    let mut out = Vec::new();
    for condition in desired {
        let previous = before(&condition.type_);
        // Both follow from others and from pods coming and going: no
        // Warning for them (a new Deployment is unavailable for a while).
        let programmed =
            condition.type_ == conditions::PROGRAMMED || condition.type_ == conditions::AVAILABLE;
        // The circuit moves between open and half-open, and its counts
        // with every replica: warn once when it leaves closed.
        let circuit = condition.type_ == conditions::CIRCUIT_CLOSED;
        if condition.status == "False" && !programmed {
            let changed = previous.is_none_or(|p| {
                p.status != condition.status
                    || (!circuit
                        && (p.reason != condition.reason || p.message != condition.message))
            });
            if changed {
                out.push(Note {
                    warning: true,
                    reason: condition.reason.clone(),
                    message: condition.message.clone(),
                });
            }
        } else if condition.status == "True"
            && (!programmed || gateway)
            && previous.is_some_and(|p| p.status == "False")
        {
            out.push(Note {
                warning: false,
                reason: condition.reason.clone(),
                message: format!("{} is True again: {}", condition.type_, condition.message),
            });
        }
    }
    out
}

/// An AIGateway's Event when its connected gateway processes change in
/// number: `previous` from the status it carries, `now` from the hub.
pub fn connection_note(previous: Option<i64>, now: i32) -> Option<Note> {
    let previous = previous?;
    let now = i64::from(now);
    if previous == now {
        return None;
    }
    let (warning, reason_) = match now {
        0 => (true, reason::NO_GATEWAYS_CONNECTED),
        n if n > previous => (false, "GatewayConnected"),
        _ => (false, "GatewayDisconnected"),
    };
    Some(Note {
        warning,
        reason: reason_.to_string(),
        message: format!("{now} gateway process(es) connected to the controller (was {previous})"),
    })
}

/// True when `desired` differs from what the object carries, apart from
/// `lastConfirmedTime`, or when that confirmation is [`CONFIRM_INTERVAL`]
/// old: a patch is needed.
pub fn needs_update(current: Option<&serde_json::Value>, desired: &DesiredStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    let mut current = current.clone();
    let mut wanted = desired.to_json();
    let confirmed = current
        .as_object_mut()
        .and_then(|o| o.remove("lastConfirmedTime"));
    let now = wanted
        .as_object_mut()
        .and_then(|o| o.remove("lastConfirmedTime"));
    if current != wanted {
        return true;
    }
    let time = |v: Option<serde_json::Value>| {
        v.as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    match (time(confirmed), time(now)) {
        (Some(confirmed), Some(now)) => {
            now.duration_since(confirmed).unsigned_abs() >= CONFIRM_INTERVAL
        }
        (None, Some(_)) => true,
        _ => false,
    }
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
            let conditions = o.status.as_ref().map(|s| s.base.conditions.clone());
            (object_ref(o), conditions.unwrap_or_default())
        });
        let routes = resources.routes.iter().map(|o| {
            let conditions = o.status.as_ref().map(|s| s.base.conditions.clone());
            (object_ref(o), conditions.unwrap_or_default())
        });
        gateways.chain(providers).chain(routes).collect()
    }

    fn now() -> Time {
        Time("2026-11-24T00:00:00Z".parse().unwrap())
    }

    /// Desired statuses with `gw`'s gateway processes as given.
    fn statuses_with(connected: i32, updated: i32) -> BTreeMap<String, DesiredStatus> {
        statuses_of(MANIFESTS, connected, updated, &ServerWorkloads::new())
    }

    fn statuses_of(
        manifests: &str,
        connected: i32,
        updated: i32,
        servers: &ServerWorkloads,
    ) -> BTreeMap<String, DesiredStatus> {
        statuses_reporting(manifests, connected, updated, servers, BTreeMap::new())
    }

    /// As [`statuses_of`], with `gw`'s pods reporting these circuits.
    fn statuses_reporting(
        manifests: &str,
        connected: i32,
        updated: i32,
        servers: &ServerWorkloads,
        circuits: BTreeMap<String, Circuits>,
    ) -> BTreeMap<String, DesiredStatus> {
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "t.yaml", manifests, &|_| None);
        let compiled = compile(
            &loaded.resources,
            &tollgate_config::DigestKey::from_bytes([9; 32]),
        );
        let gateway = ObjectRef::new("AIGateway", "default", "gw");
        let hash = compiled.snapshots.get(&gateway).map(|s| s.hash.clone());
        let fleet = Fleet {
            config: crate::distribution::Tally {
                hash,
                connected,
                updated,
            },
            circuits,
            ..Fleet::default()
        };
        desired_statuses(
            &loaded.resources,
            &compiled,
            &BTreeMap::from([(gateway, fleet)]),
            servers,
            &conditions_in(&loaded.resources),
            &BTreeMap::new(),
            &now(),
        )
        .into_iter()
        .map(|d| (format!("{}/{}", d.object.kind, d.object.name), d))
        .collect()
    }

    #[test]
    fn a_server_the_controller_runs_is_available_while_a_replica_is() {
        let manifests = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw, generation: 1}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: ext, generation: 1}
spec:
  gatewayRef: {name: gw}
  url: http://tools.example.com/mcp/
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: notes, generation: 4}
spec:
  gatewayRef: {name: gw}
  run: {image: "notes:1", transport: Stdio, command: [notes-mcp]}
"#;
        let server = ObjectRef::new("MCPServer", "default", "notes");
        let of = |replicas: Option<Replicas>| {
            let servers: ServerWorkloads =
                replicas.map(|r| (server.clone(), r)).into_iter().collect();
            statuses_of(manifests, 1, 1, &servers)
        };
        let available = |statuses: &BTreeMap<String, DesiredStatus>, name: &str| {
            statuses[&format!("MCPServer/{name}")]
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == conditions::AVAILABLE)
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        };
        let pending = of(None);
        assert_eq!(
            available(&pending, "ext"),
            None,
            "nothing runs an external server"
        );
        assert_eq!(
            available(&pending, "notes").unwrap().1,
            reason::DEPLOYMENT_PENDING
        );
        let desired = &pending["MCPServer/notes"];
        assert_eq!(
            desired.summary["url"],
            "http://mcp-notes.default.svc:8080/mcp"
        );
        assert_eq!(
            pending["MCPServer/ext"].summary["url"],
            "http://tools.example.com/mcp"
        );
        assert!(
            desired
                .status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
        let (status, reason_, message) = available(
            &of(Some(Replicas {
                desired: 1,
                available: 0,
            })),
            "notes",
        )
        .unwrap();
        assert_eq!(
            (status.as_str(), reason_.as_str()),
            ("False", reason::NO_REPLICAS_AVAILABLE)
        );
        assert!(
            message.contains("0 of 1 replica(s) of Deployment mcp-notes"),
            "{message}"
        );
        let up = of(Some(Replicas {
            desired: 1,
            available: 1,
        }));
        assert_eq!(
            available(&up, "notes").unwrap().0,
            "True",
            "{:?}",
            up["MCPServer/notes"]
        );
        assert_eq!(
            available(
                &of(Some(Replicas {
                    desired: 0,
                    available: 0
                })),
                "notes"
            )
            .unwrap()
            .1,
            reason::SCALED_TO_ZERO
        );
        // Unavailable pods are no Warning: a new Deployment is unavailable for a while.
        let conditions = &of(Some(Replicas {
            desired: 1,
            available: 0,
        }))["MCPServer/notes"]
            .status
            .conditions;
        assert!(
            notes(None, conditions, false)
                .iter()
                .all(|n| n.reason != reason::NO_REPLICAS_AVAILABLE)
        );
    }

    /// Statuses with one gateway connected and up to date.
    fn statuses() -> BTreeMap<String, ResourceStatus> {
        statuses_with(1, 1)
            .into_iter()
            .map(|(name, d)| (name, d.status))
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
            // A served provider also shows its circuit.
            let expected = if name == "ModelProvider/mock" { 4 } else { 3 };
            assert_eq!(status.conditions.len(), expected, "{name}");
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
            last_confirmed_time: None,
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
            last_confirmed_time: Some(now()),
        };
        let desired = DesiredStatus {
            object,
            status,
            fleet: None,
            summary: serde_json::Map::new(),
        };
        let previous_json = serde_json::to_value(&previous).unwrap();
        assert!(needs_update(Some(&previous_json), &desired));
        assert!(!needs_update(Some(&desired.to_json()), &desired));
    }

    #[test]
    fn warnings_fire_on_new_failures_only() {
        let all = statuses();
        let dangling = &all["AIRoute/dangling"].conditions;
        let fresh = notes(None, dangling, false);
        assert_eq!(
            fresh.len(),
            1,
            "only ResolvedRefs fails (Programmed=False is a consequence): {fresh:?}"
        );
        assert!(fresh[0].warning);
        assert_eq!(fresh[0].reason, reason::PROVIDER_NOT_FOUND);
        assert!(
            notes(Some(dangling), dangling, false).is_empty(),
            "a steady failure is not repeated"
        );
        assert!(notes(None, &all["AIRoute/good"].conditions, false).is_empty());
    }

    #[test]
    fn a_recovery_is_a_normal_event() {
        let all = statuses();
        let failed = &all["AIRoute/dangling"].conditions;
        let recovered = &all["AIRoute/good"].conditions;
        let fresh = notes(Some(failed), recovered, false);
        assert_eq!(fresh.len(), 1, "ResolvedRefs recovered: {fresh:?}");
        assert!(!fresh[0].warning);
        assert_eq!(fresh[0].reason, reason::RESOLVED_REFS);
        assert!(fresh[0].message.starts_with("ResolvedRefs is True again"));
        // Programmed coming back is news on the gateway only.
        let off = &statuses_with(0, 0)["AIGateway/gw"].status.conditions;
        let on = &all["AIGateway/gw"].conditions;
        let gateway = notes(Some(off), on, true);
        assert_eq!(gateway.len(), 1, "{gateway:?}");
        assert_eq!(gateway[0].reason, reason::PROGRAMMED);
        let off = &statuses_with(0, 0)["AIRoute/good"].status.conditions;
        assert!(notes(Some(off), recovered, false).is_empty());
    }

    #[test]
    fn gateways_coming_and_going_are_events() {
        assert_eq!(
            connection_note(None, 2),
            None,
            "first status: nothing to compare"
        );
        assert_eq!(connection_note(Some(2), 2), None);
        let up = connection_note(Some(0), 1).unwrap();
        assert_eq!(
            (up.warning, up.reason.as_str()),
            (false, "GatewayConnected")
        );
        assert!(
            up.message.contains("1 gateway process(es) connected"),
            "{}",
            up.message
        );
        let down = connection_note(Some(3), 2).unwrap();
        assert_eq!(
            (down.warning, down.reason.as_str()),
            (false, "GatewayDisconnected")
        );
        let gone = connection_note(Some(1), 0).unwrap();
        assert_eq!(
            (gone.warning, gone.reason.as_str()),
            (true, reason::NO_GATEWAYS_CONNECTED)
        );
    }

    #[test]
    fn programmed_means_a_gateway_serves_it() {
        let programmed = |all: &BTreeMap<String, DesiredStatus>, name: &str| {
            let c = condition(&all[name].status, conditions::PROGRAMMED).clone();
            (c.status, c.reason)
        };
        let none = statuses_with(0, 0);
        for name in ["AIGateway/gw", "AIRoute/good", "ModelProvider/mock"] {
            assert_eq!(
                programmed(&none, name),
                ("False".into(), reason::NO_GATEWAYS_CONNECTED.into()),
                "{name}"
            );
        }
        let waiting = statuses_with(2, 0);
        assert_eq!(
            programmed(&waiting, "AIRoute/good"),
            ("False".into(), reason::PROGRAMMING.into())
        );
        let serving = statuses_with(2, 1);
        for name in ["AIGateway/gw", "AIRoute/good", "ModelProvider/mock"] {
            assert_eq!(
                programmed(&serving, name),
                ("True".into(), reason::PROGRAMMED.into()),
                "{name}"
            );
        }
        let message = &condition(&serving["AIRoute/good"].status, conditions::PROGRAMMED).message;
        assert!(message.contains("served by 1 of 2 connected"), "{message}");
        // A route's own problem is named, never a generic "Pending".
        assert_eq!(
            programmed(&serving, "AIRoute/dangling"),
            ("False".into(), reason::PROVIDER_NOT_FOUND.into())
        );
        assert_eq!(
            programmed(&serving, "AIRoute/copycat"),
            ("False".into(), reason::DUPLICATE_ALIAS.into())
        );
        assert_eq!(
            programmed(&serving, "ModelProvider/openai"),
            ("False".into(), reason::SECRET_NOT_FOUND.into())
        );
    }

    fn circuits(open: i32, half_open: i32) -> Circuits {
        Circuits { open, half_open }
    }

    #[test]
    fn circuit_status_counts_replicas_open_and_probing() {
        let gw = ObjectRef::new("AIGateway", "default", "gw");
        let edge = ObjectRef::new("AIGateway", "default", "edge");
        let status = |gateways: &[(&ObjectRef, i32, Circuits)]| {
            let (column, (ok, reason_, message)) = circuit_status(gateways);
            (column, ok, reason_, message)
        };
        assert_eq!(
            status(&[(&gw, 3, circuits(0, 0))]),
            (
                "Closed".to_string(),
                true,
                reason::CIRCUIT_CLOSED,
                "circuit closed on all 3 connected gateway replica(s)".to_string()
            )
        );
        assert_eq!(
            status(&[(&gw, 3, circuits(2, 0))]),
            (
                "Open 2/3".to_string(),
                false,
                reason::CIRCUIT_OPEN,
                "circuit open on 2 of 3 gateway replicas (default/gw): requests fall back to other backends until a probe succeeds".to_string()
            )
        );
        assert_eq!(
            status(&[(&gw, 3, circuits(0, 1))]),
            (
                "HalfOpen 1/3".to_string(),
                false,
                reason::CIRCUIT_HALF_OPEN,
                "circuit half-open on 1 of 3 gateway replicas (default/gw): a probe request may try the provider; its success closes the circuit".to_string()
            )
        );
        // Open anywhere outranks probing elsewhere; each gateway counted apart.
        let (column, ok, reason_, message) =
            status(&[(&edge, 2, circuits(0, 1)), (&gw, 3, circuits(1, 1))]);
        assert_eq!(column, "Open 1/5, HalfOpen 2/5");
        assert!(!ok);
        assert_eq!(reason_, reason::CIRCUIT_OPEN);
        assert_eq!(
            message,
            "circuit open on 1 of 3 gateway replicas (default/gw); half-open (probing) on 1 of 2 gateway replicas (default/edge), 1 of 3 (default/gw): requests fall back to other backends until a probe succeeds"
        );
        // No replica connected: nothing skips the provider.
        let (column, ok, reason_, _) = status(&[(&gw, 0, circuits(0, 0))]);
        assert_eq!(
            (column.as_str(), ok, reason_),
            ("Closed", true, reason::CIRCUIT_CLOSED)
        );
        // Counts read apart from the connections never exceed them.
        assert_eq!(status(&[(&gw, 1, circuits(2, 0))]).0, "Open 2/2");
    }

    #[test]
    fn a_served_provider_shows_its_circuit_as_the_replicas_report_it() {
        let of = |connected, reported: &[(&str, Circuits)]| {
            let reported = reported
                .iter()
                .map(|(name, c)| (name.to_string(), *c))
                .collect();
            statuses_reporting(
                MANIFESTS,
                connected,
                connected,
                &ServerWorkloads::new(),
                reported,
            )
        };
        let circuit = |all: &BTreeMap<String, DesiredStatus>| {
            let mock = &all["ModelProvider/mock"];
            let condition = condition(&mock.status, conditions::CIRCUIT_CLOSED).clone();
            (mock.to_json()["circuit"].clone(), condition)
        };
        let (column, closed) = circuit(&of(3, &[]));
        assert_eq!(column, "Closed");
        assert_eq!(
            (closed.status.as_str(), closed.reason.as_str()),
            ("True", "CircuitClosed")
        );
        assert_eq!(closed.observed_generation, Some(1));

        let open = of(3, &[("mock", circuits(2, 0)), ("openai", circuits(3, 0))]);
        let (column, condition) = circuit(&open);
        assert_eq!(column, "Open 2/3");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "CircuitOpen")
        );
        assert!(
            condition
                .message
                .starts_with("circuit open on 2 of 3 gateway replicas (default/gw)")
        );
        let unserved = &open["ModelProvider/openai"];
        assert!(
            unserved
                .status
                .conditions
                .iter()
                .all(|c| c.type_ != conditions::CIRCUIT_CLOSED)
                && unserved.to_json().get("circuit").is_none(),
            "a provider no gateway serves has no circuit to show"
        );

        let (column, condition) = circuit(&of(3, &[("mock", circuits(0, 1))]));
        assert_eq!(column, "HalfOpen 1/3");
        assert_eq!(condition.reason, "CircuitHalfOpen");

        // Events: a Warning when it leaves closed, none while it moves
        // between open and half-open, a Normal one when closed again.
        let closed_all = of(3, &[])["ModelProvider/mock"].status.conditions.clone();
        let open_all = open["ModelProvider/mock"].status.conditions.clone();
        let probing = of(3, &[("mock", circuits(0, 1))])["ModelProvider/mock"]
            .status
            .conditions
            .clone();
        let opened = notes(Some(&closed_all), &open_all, false);
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert!(opened[0].warning);
        assert_eq!(opened[0].reason, "CircuitOpen");
        assert!(notes(Some(&open_all), &probing, false).is_empty());
        let reclosed = notes(Some(&probing), &closed_all, false);
        assert_eq!(reclosed.len(), 1, "{reclosed:?}");
        assert!(!reclosed[0].warning);
        assert!(
            reclosed[0]
                .message
                .starts_with("CircuitClosed is True again")
        );
    }

    #[test]
    fn summaries_for_kubectl_get() {
        let all = statuses_with(1, 1);
        let gateway = all["AIGateway/gw"].to_json();
        assert_eq!(
            gateway["routes"], "1/3",
            "good is served; dangling and copycat are not"
        );
        assert_eq!(
            gateway["providers"], "1/2",
            "mock is usable; nowhere does not exist"
        );
        assert_eq!(gateway["connectedGateways"], 1);
        let good = all["AIRoute/good"].to_json();
        assert_eq!(good["models"], "chat");
        assert_eq!(good["backends"], "mock/m");
        assert_eq!(good["lastConfirmedTime"], "2026-11-24T00:00:00Z");
    }

    #[test]
    fn an_unchanged_status_is_rewritten_only_to_renew_its_confirmation() {
        let desired = statuses_with(1, 1).remove("AIRoute/good").unwrap();
        let mut carried = desired.to_json();
        assert!(!needs_update(Some(&carried), &desired));
        carried["lastConfirmedTime"] = "2026-11-23T23:58:00Z".into();
        assert!(
            !needs_update(Some(&carried), &desired),
            "two minutes old: still confirmed"
        );
        carried["lastConfirmedTime"] = "2026-11-23T23:54:59Z".into();
        assert!(
            needs_update(Some(&carried), &desired),
            "over five minutes old"
        );
        carried["lastConfirmedTime"] = "2026-11-24T00:00:00Z".into();
        carried["models"] = "chat, other".into();
        assert!(needs_update(Some(&carried), &desired), "a real change");
        assert!(needs_update(None, &desired));
    }

    #[test]
    fn long_messages_are_bounded_on_a_char_boundary() {
        let object = ObjectRef::new("AIRoute", "default", "r");
        let d = Diagnostic::error(&object, "spec", reason::INVALID, "é".repeat(2000));
        let text = summarize(&[&d]);
        assert!(text.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }

    #[test]
    fn budget_status_shows_usage_per_cap_and_the_busiest_member() {
        use tollgate_api::budget::{BudgetWindow, Member};
        use tollgate_config::snapshot::budget::{Budget, Limit, Metric, OnExceed, Subject};
        let budget = Budget {
            name: "ns/team".into(),
            subject: Subject {
                per_member: Some(Member::User),
                ..Subject::default()
            },
            limits: vec![Limit {
                window: BudgetWindow::Day,
                rolling: false,
                caps: vec![
                    (Metric::TotalTokens, 1000),
                    (Metric::CostMicroUsd, 2_500_000),
                ],
            }],
            on_exceed: OnExceed::Reject,
            default_max_output_tokens: 4096,
            cut_streams: true,
            soft_thresholds: vec![],
            fail_closed: false,
            alerts: None,
            rate_limit: None,
            throttle_cleared_at_ms: None,
        };
        let counters: BTreeMap<String, u64> = [
            ("ns/team|alice|Day-fixed|totalTokens", 300),
            ("ns/team|bob|Day-fixed|totalTokens", 700),
            ("ns/team|bob|Day-fixed|costUsd", 1_250_000),
            ("ns/other|carol|Day-fixed|totalTokens", 999),
            ("ns/team|bob|Month-fixed|totalTokens", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // 2026-12-07T00:30:00Z
        let summary = budget_summary(&budget, &counters, 1_796_603_400_000);
        assert_eq!(summary["used"], "700 totalTokens (bob)");
        assert_eq!(summary["limit"], "1000 totalTokens/Day");
        assert_eq!(summary["remaining"], "300 totalTokens");
        let usage = summary["usage"].as_array().unwrap();
        assert_eq!(usage.len(), 2);
        assert_eq!(usage[0]["member"], "bob");
        assert_eq!(usage[0]["resetsAt"], "2026-12-08T00:00:00Z");
        assert_eq!(usage[1]["used"], "$1.25");
        assert_eq!(usage[1]["limit"], "$2.5");

        // Nothing reported yet: zero used, the whole limit remains.
        let empty = budget_summary(&budget, &BTreeMap::new(), 1_796_603_400_000);
        assert_eq!(empty["used"], "0 totalTokens");
        assert_eq!(empty["remaining"], "1000 totalTokens");
    }
}
