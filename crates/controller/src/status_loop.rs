//! Watches AIGateway, ModelProvider, AIRoute, TokenBudget, MCPServer, Secret
//! and ConfigMap; after each burst of
//! changes compiles the whole set once, publishes each gateway's snapshot to
//! its subscribed pods, and server-side-applies the status of every object
//! whose conditions changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::mcp_probe::Probe;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tollgate_api::{AIGateway, AIRoute, MCPServer, ModelProvider, TokenBudget};
use tollgate_config::compile::DEFAULT_LISTENER_PORT;
use tollgate_config::{Compiled, DigestKey, ObjectRef, Resources, compile};

use crate::FIELD_MANAGER;
use crate::distribution::{Circuits, Hub, Tally};
use crate::metrics::{Loop, Metrics};
use crate::status::{
    CONFIRM_INTERVAL, CurrentConditions, DesiredStatus, Fleet, Replicas, ServerWorkloads,
    connection_note, desired_statuses, needs_update, notes,
};
use crate::workload;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("status patch for {object} failed: {source}")]
    Patch { object: String, source: kube::Error },
    #[error("status for {0} cannot be encoded: {1}")]
    Encode(String, serde_json::Error),
}

/// Status patches in flight at once (the apiserver's default client QPS
/// budget is generous on loopback; 16 keeps a 1,000-route change short).
const STATUS_WRITERS: usize = 16;

/// Quiet period that batches a burst of watch events into one compile; short,
/// because it is part of every change's propagation time.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// How long status writing waits after a change or an acknowledgement.
const STATUS_DELAY: Duration = Duration::from_millis(100);

/// Longest a steady stream of events can postpone a compile.
const MAX_BATCH_DELAY: Duration = Duration::from_millis(200);

struct Stores {
    gateways: Store<AIGateway>,
    providers: Store<ModelProvider>,
    routes: Store<AIRoute>,
    budgets: Store<TokenBudget>,
    mcp_servers: Store<MCPServer>,
    secrets: Store<Secret>,
    /// ConfigMaps, for prompt context routes read from them.
    config_maps: Store<ConfigMap>,
    /// The Deployments the controller applies (gateways', operator-run MCP
    /// servers'), for replica counts in AIGateway and MCPServer status.
    deployments: Store<Deployment>,
}

impl Stores {
    /// A consistent-enough view: each store is a full, current list.
    fn resources(&self) -> Resources {
        fn clone<K: Clone>(items: Vec<Arc<K>>) -> Vec<K> {
            items.into_iter().map(|o| (*o).clone()).collect()
        }
        let gateways = clone(self.gateways.state());
        let providers = clone(self.providers.state());
        // Only Secrets compile reads (referenced, or labelled API keys): a
        // cluster holds many (Helm releases, tokens) that it never reads.
        let mcp_servers = clone(self.mcp_servers.state());
        let referenced =
            tollgate_config::resources::referenced_secrets(&gateways, &providers, &mcp_servers);
        let secrets = self
            .secrets
            .state()
            .into_iter()
            .filter(|s| tollgate_config::resources::is_compile_input(s, &referenced))
            .map(|s| (*s).clone())
            .collect();
        let routes = clone(self.routes.state());
        // Likewise only the ConfigMaps routes read context from.
        let wanted = tollgate_config::resources::referenced_config_maps(&routes);
        let config_maps = self
            .config_maps
            .state()
            .into_iter()
            .filter(|c| {
                wanted.contains(&(
                    tollgate_config::resources::namespace_of(c.as_ref()),
                    c.name_any(),
                ))
            })
            .map(|c| (*c).clone())
            .collect();
        Resources {
            gateways,
            providers,
            routes,
            budgets: clone(self.budgets.state()),
            mcp_servers,
            secrets,
            config_maps,
            origins: Default::default(),
        }
    }
}

/// Runs until the watch streams end (they retry with backoff forever).
/// Snapshots go to `hub`; its subscription changes wake the status writer
/// (not the compiler: acknowledgements change status, not configuration).
/// `digest_key` keys every snapshot's hash and client-key digests.
/// `mcp_probe_interval`: how often each MCPServer is listed for status.
pub async fn run(
    client: Client,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    digest_key: DigestKey,
    mcp_probe_interval: Duration,
) {
    let changed = Arc::new(Notify::new());
    let stores = Stores {
        gateways: watch::<AIGateway>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
            true,
        ),
        providers: watch::<ModelProvider>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
            true,
        ),
        routes: watch::<AIRoute>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
            true,
        ),
        budgets: watch::<TokenBudget>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
            true,
        ),
        mcp_servers: watch::<MCPServer>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
            true,
        ),
        secrets: watch::<Secret>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
            false,
        ),
        config_maps: watch::<ConfigMap>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
            false,
        ),
        deployments: watch::<Deployment>(
            client.clone(),
            changed.clone(),
            watcher::Config::default()
                .labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}")),
            false,
        ),
    };
    for ready in [
        stores.gateways.wait_until_ready().await,
        stores.providers.wait_until_ready().await,
        stores.routes.wait_until_ready().await,
        stores.budgets.wait_until_ready().await,
        stores.mcp_servers.wait_until_ready().await,
        stores.secrets.wait_until_ready().await,
        stores.config_maps.wait_until_ready().await,
        stores.deployments.wait_until_ready().await,
    ] {
        if ready.is_err() {
            tracing::error!("a watch ended before its first list");
            return;
        }
    }
    tracing::info!("caches synced");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // Status writes run in their own task: a slow burst of writes (1,000
    // routes changing at once) must not hold back the next publish.
    let (passes_tx, passes_rx) = tokio::sync::watch::channel(None::<Arc<Pass>>);
    let live = LiveStatuses {
        gateways: stores.gateways.clone(),
        providers: stores.providers.clone(),
        routes: stores.routes.clone(),
        budgets: stores.budgets.clone(),
        mcp_servers: stores.mcp_servers.clone(),
        probes: Probes::default(),
    };
    let prober = probe_mcp_servers(
        recorder.clone(),
        passes_rx.clone(),
        live.probes.clone(),
        mcp_probe_interval,
    );
    let writer = write_statuses(
        client,
        recorder,
        passes_rx,
        live,
        stores.deployments.clone(),
        hub.clone(),
        metrics.clone(),
    );
    let compiler = async move {
        loop {
            // Collapse a burst of events into one compile.
            let batch_deadline = tokio::time::Instant::now() + MAX_BATCH_DELAY;
            while tokio::time::Instant::now() < batch_deadline
                && tokio::time::timeout(DEBOUNCE, changed.notified())
                    .await
                    .is_ok()
            {}
            let pass_started = tokio::time::Instant::now();
            let resources = stores.resources();
            let compile_started = tokio::time::Instant::now();
            let compiled = compile(&resources, &digest_key);
            metrics.compiled(compile_started.elapsed());
            let gateway_refs: Vec<ObjectRef> = resources
                .gateways
                .iter()
                .map(tollgate_config::resources::object_ref)
                .collect();
            for (gateway, error) in hub.publish(&gateway_refs, &compiled.snapshots) {
                tracing::error!(%gateway, %error, "cannot encode the snapshot");
            }
            tracing::debug!(
                read = ?(compile_started - pass_started),
                compile = ?compile_started.elapsed(),
                "compiled and published"
            );
            passes_tx.send_replace(Some(Arc::new(Pass {
                resources,
                compiled,
            })));
            changed.notified().await;
        }
    };
    tokio::join!(compiler, writer, prober);
}

/// The last probe of each MCPServer (by `namespace/name`), and a wake-up
/// for the status writer when a round ends.
#[derive(Clone, Default)]
struct Probes {
    latest: Arc<std::sync::Mutex<BTreeMap<String, Probe>>>,
    probed: Arc<Notify>,
}

impl Probes {
    fn snapshot(&self) -> BTreeMap<String, Probe> {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Probes every served MCPServer each `interval` (a few at a time) and
/// publishes a Warning Event when one's tool catalog changed since the
/// last probe (or since the hash its status shows).
async fn probe_mcp_servers(
    recorder: Recorder,
    mut passes: tokio::sync::watch::Receiver<Option<Arc<Pass>>>,
    probes: Probes,
    interval: Duration,
) {
    const CONCURRENT_PROBES: usize = 8;
    loop {
        let pass = passes.borrow_and_update().clone();
        let Some(pass) = pass else {
            if passes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let servers = served_mcp_servers(&pass);
        let results: Vec<(String, Probe)> = futures_util::stream::iter(servers.values().copied())
            .map(|server| async move {
                (
                    server.name.to_string(),
                    crate::mcp_probe::probe(server).await,
                )
            })
            .buffer_unordered(CONCURRENT_PROBES)
            .collect()
            .await;
        let previous = probes.snapshot();
        let mut results = results;
        for (name, probe) in &mut results {
            let (namespace, short) = name.split_once('/').unwrap_or(("default", name));
            let object = ObjectRef::new("MCPServer", namespace, short);
            let before = previous.get(name.as_str());
            // The hash seen before: the last probe's (the last one that
            // listed), else what status showed when this controller began.
            probe.previous_hash = match before {
                Some(before) => match &before.outcome {
                    Ok(catalog) => Some(catalog.hash.clone()),
                    Err(_) => before.previous_hash.clone(),
                },
                None => pass
                    .resources
                    .mcp_servers
                    .iter()
                    .find(|s| {
                        s.namespace().as_deref().unwrap_or("default") == namespace
                            && s.name_any() == short
                    })
                    .and_then(|s| s.status.as_ref()?.catalog_hash.clone()),
            };
            let Ok(after) = &probe.outcome else { continue };
            let note = match (before.map(|b| &b.outcome), &probe.previous_hash) {
                (Some(Ok(before)), _) if before.hash != after.hash => {
                    Some(crate::mcp_probe::change_note(name, before, after))
                }
                (_, Some(seen)) if *seen != after.hash => Some(format!(
                    "the tool catalog of MCP server {name} changed ({seen} -> {})",
                    after.hash
                )),
                _ => None,
            };
            let (Some(note), Some(reference)) = (note, object_reference(&pass.resources, &object))
            else {
                continue;
            };
            tracing::warn!(server = %name, "{note}");
            let event = Event {
                type_: EventType::Warning,
                reason: "ToolCatalogChanged".into(),
                note: Some(note),
                action: "Probe".into(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::warn!(%object, %error, "could not publish a catalog event");
            }
        }
        *probes
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = results.into_iter().collect();
        probes.probed.notify_one();
        // The next round: after the interval, or at once when a pass
        // serves a new or changed MCPServer.
        let probed: Vec<tollgate_config::snapshot::McpServer> =
            servers.values().map(|s| (*s).clone()).collect();
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            match tokio::time::timeout_at(deadline, passes.changed()).await {
                Err(_) => break,
                Ok(Err(_)) => return,
                Ok(Ok(())) => {
                    let pass = passes.borrow().clone();
                    let now_served: Vec<_> = pass
                        .as_deref()
                        .map(|p| served_mcp_servers(p).into_values().cloned().collect())
                        .unwrap_or_default();
                    if now_served != probed {
                        break;
                    }
                }
            }
        }
    }
}

/// Every MCPServer some gateway serves, once each, by `namespace/name`.
fn served_mcp_servers(pass: &Pass) -> BTreeMap<&str, &tollgate_config::snapshot::McpServer> {
    let mut servers = BTreeMap::new();
    for snapshot in pass.compiled.snapshots.values() {
        for server in &snapshot.config.mcp_servers {
            servers.insert(&*server.name, server);
        }
    }
    servers
}

/// One compile's inputs and outputs, handed from the compiler to the writer.
struct Pass {
    resources: Resources,
    compiled: Compiled,
}

/// Writes the status the newest pass implies, for every object whose status
/// differs; passes that arrive while it writes collapse into the newest one.
async fn write_statuses(
    client: Client,
    recorder: Recorder,
    mut passes: tokio::sync::watch::Receiver<Option<Arc<Pass>>>,
    live: LiveStatuses,
    deployments: Store<Deployment>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
) {
    let acknowledged = hub.changed();
    let mut ledger = crate::alerts::AlertLedger::default();
    loop {
        tokio::select! {
            changed = passes.changed() => if changed.is_err() { return },
            () = acknowledged.notified() => {}
            () = live.probes.probed.notified() => {}
            // Renew `lastConfirmedTime` even when nothing changes.
            () = tokio::time::sleep(CONFIRM_INTERVAL / 2) => {}
        }
        // Let the pods take the new snapshot first (status is for people
        // and is not on the propagation path), and fold the acknowledgements
        // that follow a publish into one pass.
        tokio::time::sleep(STATUS_DELAY).await;
        let Some(pass) = passes.borrow_and_update().clone() else {
            continue;
        };
        let started = tokio::time::Instant::now();
        let (resources, compiled) = (&pass.resources, &pass.compiled);
        let now = Time(jiff::Timestamp::now());
        let fleets = fleets(
            resources,
            &deployments,
            &hub.tallies(),
            &hub.usage(),
            &hub.circuits(),
        );
        let servers = server_workloads(resources, &deployments);
        let current = live.read();
        let stale: Vec<DesiredStatus> = desired_statuses(
            resources,
            compiled,
            &fleets,
            &servers,
            &current.conditions,
            &live.probes.snapshot(),
            &now,
        )
        .into_iter()
        .filter(|desired| needs_update(current.json.get(&desired.object), desired))
        .collect();
        // Independent objects: write several at once. A failure is retried
        // on the next change or resync and never blocks the rest.
        let failed = AtomicBool::new(false);
        futures_util::stream::iter(stale)
            .for_each_concurrent(STATUS_WRITERS, |desired| {
                let (client, recorder, current) = (&client, &recorder, &current);
                let (metrics, failed) = (&metrics, &failed);
                async move {
                    let existing = current.conditions.get(&desired.object);
                    let connected = current
                        .json
                        .get(&desired.object)
                        .and_then(|status| status["connectedGateways"].as_i64());
                    publish_notes(recorder, resources, existing, connected, &desired).await;
                    let result = apply_status(client, &desired).await;
                    metrics.status_written(result.is_ok());
                    if let Err(error) = result {
                        failed.store(true, Ordering::Relaxed);
                        tracing::warn!("{error}");
                    }
                }
            })
            .await;
        deliver_alerts(&recorder, &hub, &mut ledger, resources, compiled).await;
        metrics.reconciled(
            Loop::Status,
            started.elapsed(),
            !failed.load(Ordering::Relaxed),
        );
    }
}

/// Alerts the gateways reported: a Warning Event on the TokenBudget and the
/// webhook, once per incident for all replicas.
async fn deliver_alerts(
    recorder: &Recorder,
    hub: &Hub,
    ledger: &mut crate::alerts::AlertLedger,
    resources: &Resources,
    compiled: &tollgate_config::Compiled,
) {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    for (gateway, alert) in hub.take_alerts() {
        if !alert.mcp_server.is_empty() {
            deliver_agent_alert(
                recorder, ledger, resources, compiled, &gateway, &alert, now_ms,
            )
            .await;
            continue;
        }
        let Some((namespace, name)) = alert.budget.split_once('/') else {
            continue;
        };
        // Only a budget of the reporting gateway: a pod cannot raise alerts
        // on another gateway's budgets.
        let Some(budget) = compiled
            .snapshots
            .get(&gateway)
            .and_then(|s| s.config.budgets.iter().find(|b| *b.name == alert.budget))
        else {
            continue;
        };
        let policy = budget.alerts.as_deref();
        let cooldown = policy.map_or(tollgate_config::compile::DEFAULT_ALERT_COOLDOWN_MS, |p| {
            p.cooldown_ms
        });
        if !ledger.admit(&alert, cooldown, now_ms) {
            continue;
        }
        if let Some(webhook) = policy.and_then(|p| p.webhook.as_ref()) {
            let gateway_name = format!("{}/{}", gateway.namespace, gateway.name);
            crate::alerts::deliver(webhook, alert.webhook_body(&gateway_name, webhook.slack));
        }
        let object = ObjectRef::new("TokenBudget", namespace, name);
        let Some(reference) = object_reference(resources, &object) else {
            continue;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: if alert.kind == "spike" {
                "UsageSpike".into()
            } else {
                "SoftThresholdReached".into()
            },
            note: Some(alert.message.clone()),
            action: "Alert".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(%object, %error, "could not publish an alert event");
        }
    }
}

/// An agent-behaviour alert on an MCPServer of the reporting gateway: a
/// Warning Event on it and its webhook, once per incident.
async fn deliver_agent_alert(
    recorder: &Recorder,
    ledger: &mut crate::alerts::AlertLedger,
    resources: &Resources,
    compiled: &tollgate_config::Compiled,
    gateway: &ObjectRef,
    alert: &tollgate_config::push::BudgetAlert,
    now_ms: i64,
) {
    let Some(policy) = compiled.snapshots.get(gateway).and_then(|s| {
        s.config
            .mcp_servers
            .iter()
            .find(|m| *m.name == alert.mcp_server)?
            .anomalies
            .as_ref()
    }) else {
        return;
    };
    if !ledger.admit(alert, policy.cooldown_ms, now_ms) {
        return;
    }
    if let Some(webhook) = &policy.webhook {
        let gateway_name = format!("{}/{}", gateway.namespace, gateway.name);
        crate::alerts::deliver(webhook, alert.webhook_body(&gateway_name, webhook.slack));
    }
    let Some((namespace, name)) = alert.mcp_server.split_once('/') else {
        return;
    };
    let object = ObjectRef::new("MCPServer", namespace, name);
    let Some(reference) = object_reference(resources, &object) else {
        return;
    };
    let reason = match alert.kind.as_str() {
        "agentBurst" => "AgentBurst",
        "agentNewTool" => "AgentNewTool",
        "agentWriteShift" => "AgentWriteShift",
        _ => "AgentAnomaly",
    };
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(alert.message.clone()),
        action: "Alert".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::warn!(%object, %error, "could not publish an agent alert event");
    }
}

/// Events on the object itself for what its status change means (see
/// [`notes`]), so `kubectl describe` and event pipelines show why a resource
/// is or is no longer served; `connected` is the AIGateway's
/// `connectedGateways` before the change.
async fn publish_notes(
    recorder: &Recorder,
    resources: &Resources,
    current: Option<&Vec<Condition>>,
    connected: Option<i64>,
    desired: &DesiredStatus,
) {
    let gateway = desired.fleet.as_ref();
    let mut fresh = notes(
        current.map(Vec::as_slice),
        &desired.status.conditions,
        gateway.is_some(),
    );
    fresh.extend(gateway.and_then(|fleet| connection_note(connected, fleet.config.connected)));
    if fresh.is_empty() {
        return;
    }
    let Some(reference) = object_reference(resources, &desired.object) else {
        return;
    };
    for note in fresh {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason,
            note: Some(note.message),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(object = %desired.object, %error, "could not publish an event");
        }
    }
}

fn object_reference(resources: &Resources, object: &ObjectRef) -> Option<ObjectReference> {
    fn find<K: Resource<DynamicType = ()> + kube::ResourceExt>(
        items: &[K],
        object: &ObjectRef,
    ) -> Option<ObjectReference> {
        items
            .iter()
            .find(|o| {
                o.namespace().as_deref().unwrap_or("default") == object.namespace
                    && o.name_any() == object.name
            })
            .map(|o| o.object_ref(&()))
    }
    match object.kind.as_str() {
        "AIGateway" => find(&resources.gateways, object),
        "ModelProvider" => find(&resources.providers, object),
        "AIRoute" => find(&resources.routes, object),
        "TokenBudget" => find(&resources.budgets, object),
        "MCPServer" => find(&resources.mcp_servers, object),
        _ => None,
    }
}

/// Each gateway's pods as its Deployment reports them, and its endpoint.
fn fleets(
    resources: &Resources,
    deployments: &Store<Deployment>,
    tallies: &BTreeMap<ObjectRef, Tally>,
    usage: &BTreeMap<ObjectRef, BTreeMap<String, u64>>,
    circuits: &BTreeMap<ObjectRef, BTreeMap<String, Circuits>>,
) -> BTreeMap<ObjectRef, Fleet> {
    let deployments = deployments.state();
    resources
        .gateways
        .iter()
        .map(|gateway| {
            let object = tollgate_config::resources::object_ref(gateway);
            let name = workload::workload_name(&object.name);
            let status = deployments
                .iter()
                .find(|d| {
                    d.metadata.name.as_deref() == Some(&name)
                        && d.metadata.namespace.as_deref() == Some(&object.namespace)
                })
                .and_then(|d| d.status.clone())
                .unwrap_or_default();
            let port = gateway
                .spec
                .listener
                .as_ref()
                .map_or(DEFAULT_LISTENER_PORT, |l| l.port as u16);
            let fleet = Fleet {
                replicas: status.replicas.unwrap_or(0),
                ready_replicas: status.ready_replicas.unwrap_or(0),
                endpoint: workload::endpoint(&object.name, &object.namespace, port),
                config: tallies.get(&object).cloned().unwrap_or_default(),
                usage: usage.get(&object).cloned().unwrap_or_default(),
                circuits: circuits.get(&object).cloned().unwrap_or_default(),
            };
            (object, fleet)
        })
        .collect()
}

/// The Deployments of the MCPServers the controller runs, by MCPServer.
fn server_workloads(resources: &Resources, deployments: &Store<Deployment>) -> ServerWorkloads {
    let deployments = deployments.state();
    resources
        .mcp_servers
        .iter()
        .filter(|server| server.spec.run.is_some())
        .filter_map(|server| {
            let object = tollgate_config::resources::object_ref(server);
            let name = tollgate_config::compile::run_object_name(&object.name);
            let deployment = deployments.iter().find(|d| {
                d.metadata.name.as_deref() == Some(&name)
                    && d.metadata.namespace.as_deref() == Some(&object.namespace)
            })?;
            let replicas = Replicas {
                desired: deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1),
                available: deployment
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0),
            };
            Some((object, replicas))
        })
        .collect()
}

/// Starts a reflector for `K` across all namespaces; every event that can
/// change the compile output pokes `changed`.
fn watch<K>(
    client: Client,
    changed: Arc<Notify>,
    config: watcher::Config,
    ignore_status_echo: bool,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    // Managed fields are never read here and are a large share of each
    // object; dropping them keeps the cache small and every compile's copy cheap.
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client), config).modify(|object| object.managed_fields_mut().clear()),
    )
    .default_backoff();
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        let mut generations = Generations::default();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    if !ignore_status_echo || generations.changed(object.meta()) {
                        changed.notify_one();
                    }
                }
                Ok(watcher::Event::Delete(object)) => {
                    generations.forget(object.meta());
                    changed.notify_one();
                }
                Ok(watcher::Event::Init) => {}
                Ok(watcher::Event::InitDone) => changed.notify_one(),
                Err(error) => tracing::warn!(kind = %K::kind(&()), %error, "watch error; retrying"),
            }
        }
    });
    reader
}

/// The last generation seen per object. Our own status writes come back as
/// watch events with an unchanged generation; they cannot change the
/// compile output, so they must not cost a compile (with 1,000 routes that
/// echo would double the work of every change). Only for our own kinds:
/// Deployments' status changes matter (replica counts).
#[derive(Default)]
struct Generations(std::collections::HashMap<String, i64>);

impl Generations {
    fn changed(&mut self, meta: &kube::api::ObjectMeta) -> bool {
        let (Some(uid), Some(generation)) = (&meta.uid, meta.generation) else {
            return true;
        };
        self.0.insert(uid.clone(), generation) != Some(generation)
    }

    fn forget(&mut self, meta: &kube::api::ObjectMeta) {
        if let Some(uid) = &meta.uid {
            self.0.remove(uid);
        }
    }
}

/// The statuses objects carry now, read from the live caches (not from the
/// compile's copy, which predates our own latest writes): as JSON to compare
/// with the desired status, and their conditions to keep transition times.
/// Built once per pass so each lookup is O(1) with 1,000s of routes.
struct LiveStatuses {
    gateways: Store<AIGateway>,
    providers: Store<ModelProvider>,
    routes: Store<AIRoute>,
    budgets: Store<TokenBudget>,
    mcp_servers: Store<MCPServer>,
    /// What the controller's own probes of MCPServers found.
    probes: Probes,
}

struct Statuses {
    json: HashMap<ObjectRef, serde_json::Value>,
    conditions: CurrentConditions,
}

impl LiveStatuses {
    fn read(&self) -> Statuses {
        fn add<K, S>(out: &mut Statuses, items: Vec<Arc<K>>, status: impl Fn(&K) -> Option<&S>)
        where
            K: Resource<DynamicType = ()> + ResourceExt,
            S: serde::Serialize + HasConditions,
        {
            for item in items {
                let object = tollgate_config::resources::object_ref(item.as_ref());
                let status = status(&item);
                if let Ok(value) = serde_json::to_value(status) {
                    out.json.insert(object.clone(), value);
                }
                let conditions = status.map(|s| s.conditions().to_vec()).unwrap_or_default();
                out.conditions.insert(object, conditions);
            }
        }
        let mut out = Statuses {
            json: HashMap::new(),
            conditions: CurrentConditions::new(),
        };
        add(&mut out, self.gateways.state(), |o| o.status.as_ref());
        add(&mut out, self.providers.state(), |o| o.status.as_ref());
        add(&mut out, self.routes.state(), |o| o.status.as_ref());
        add(&mut out, self.budgets.state(), |o| o.status.as_ref());
        add(&mut out, self.mcp_servers.state(), |o| o.status.as_ref());
        out
    }
}

trait HasConditions {
    fn conditions(&self) -> &[Condition];
}

impl HasConditions for tollgate_api::AIGatewayStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl HasConditions for tollgate_api::AIRouteStatus {
    fn conditions(&self) -> &[Condition] {
        &self.base.conditions
    }
}

impl HasConditions for tollgate_api::TokenBudgetStatus {
    fn conditions(&self) -> &[Condition] {
        &self.base.conditions
    }
}

impl HasConditions for tollgate_api::ModelProviderStatus {
    fn conditions(&self) -> &[Condition] {
        &self.base.conditions
    }
}

impl HasConditions for tollgate_api::MCPServerStatus {
    fn conditions(&self) -> &[Condition] {
        &self.base.conditions
    }
}

async fn apply_status(client: &Client, desired: &DesiredStatus) -> Result<(), Error> {
    let object = &desired.object;
    let patch = serde_json::json!({
        "apiVersion": tollgate_api::API_VERSION,
        "kind": object.kind,
        "status": desired.to_json(),
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = &object.name;
    let result = match object.kind.as_str() {
        "AIGateway" => Api::<AIGateway>::namespaced(client.clone(), &object.namespace)
            .patch_status(name, &params, &Patch::Apply(&patch))
            .await
            .map(drop),
        "ModelProvider" => Api::<ModelProvider>::namespaced(client.clone(), &object.namespace)
            .patch_status(name, &params, &Patch::Apply(&patch))
            .await
            .map(drop),
        "AIRoute" => Api::<AIRoute>::namespaced(client.clone(), &object.namespace)
            .patch_status(name, &params, &Patch::Apply(&patch))
            .await
            .map(drop),
        "TokenBudget" => Api::<TokenBudget>::namespaced(client.clone(), &object.namespace)
            .patch_status(name, &params, &Patch::Apply(&patch))
            .await
            .map(drop),
        "MCPServer" => Api::<MCPServer>::namespaced(client.clone(), &object.namespace)
            .patch_status(name, &params, &Patch::Apply(&patch))
            .await
            .map(drop),
        _ => Ok(()),
    };
    result.map_err(|source| Error::Patch {
        object: object.to_string(),
        source,
    })
}
