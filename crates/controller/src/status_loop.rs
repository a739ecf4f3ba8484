//! Watches AIGateway, ModelProvider, AIRoute and Secret; after each burst of
//! changes compiles the whole set once, publishes each gateway's snapshot to
//! its subscribed pods, and server-side-applies the status of every object
//! whose conditions changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tollgate_api::{AIGateway, AIRoute, ModelProvider};
use tollgate_config::compile::DEFAULT_LISTENER_PORT;
use tollgate_config::{ObjectRef, Resources, compile};

use crate::FIELD_MANAGER;
use crate::distribution::{Hub, Tally};
use crate::metrics::{Loop, Metrics};
use crate::status::{DesiredStatus, Fleet, desired_statuses, needs_update, warnings};
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

/// Longest a steady stream of events can postpone a compile.
const MAX_BATCH_DELAY: Duration = Duration::from_millis(200);

struct Stores {
    gateways: Store<AIGateway>,
    providers: Store<ModelProvider>,
    routes: Store<AIRoute>,
    secrets: Store<Secret>,
    /// The gateways' Deployments, for replica counts in AIGateway status.
    deployments: Store<Deployment>,
}

impl Stores {
    /// A consistent-enough view: each store is a full, current list.
    fn resources(&self) -> Resources {
        fn clone<K: Clone>(items: Vec<Arc<K>>) -> Vec<K> {
            items.into_iter().map(|o| (*o).clone()).collect()
        }
        Resources {
            gateways: clone(self.gateways.state()),
            providers: clone(self.providers.state()),
            routes: clone(self.routes.state()),
            secrets: clone(self.secrets.state()),
            origins: Default::default(),
        }
    }
}

/// Runs until the watch streams end (they retry with backoff forever).
/// Snapshots go to `hub`, whose subscription changes also wake this loop.
pub async fn run(client: Client, hub: Arc<Hub>, metrics: Arc<Metrics>) {
    let changed = hub.changed();
    let stores = Stores {
        gateways: watch::<AIGateway>(client.clone(), changed.clone(), watcher::Config::default()),
        providers: watch::<ModelProvider>(
            client.clone(),
            changed.clone(),
            watcher::Config::default(),
        ),
        routes: watch::<AIRoute>(client.clone(), changed.clone(), watcher::Config::default()),
        secrets: watch::<Secret>(client.clone(), changed.clone(), watcher::Config::default()),
        deployments: watch::<Deployment>(
            client.clone(),
            changed.clone(),
            watcher::Config::default()
                .labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}")),
        ),
    };
    for ready in [
        stores.gateways.wait_until_ready().await,
        stores.providers.wait_until_ready().await,
        stores.routes.wait_until_ready().await,
        stores.secrets.wait_until_ready().await,
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
    loop {
        // Collapse a burst of events into one compile.
        let batch_deadline = tokio::time::Instant::now() + MAX_BATCH_DELAY;
        while tokio::time::Instant::now() < batch_deadline
            && tokio::time::timeout(DEBOUNCE, changed.notified())
                .await
                .is_ok()
        {}
        // The pass starts after the debounce: waiting for quiet is not work.
        let started = tokio::time::Instant::now();
        let resources = stores.resources();
        let compile_started = tokio::time::Instant::now();
        let compiled = compile(&resources);
        metrics.compiled(compile_started.elapsed());
        // Pods first: status writes can wait, serving the change cannot.
        let gateway_refs: Vec<ObjectRef> = resources
            .gateways
            .iter()
            .map(tollgate_config::resources::object_ref)
            .collect();
        for (gateway, error) in hub.publish(&gateway_refs, &compiled.snapshots) {
            tracing::error!(%gateway, %error, "cannot encode the snapshot");
        }
        let now = Time(jiff::Timestamp::now());
        let fleets = fleets(&resources, &stores.deployments, &hub.tallies());
        let stale: Vec<DesiredStatus> = desired_statuses(&resources, &compiled, &fleets, &now)
            .into_iter()
            .filter(|desired| {
                needs_update(
                    current_status(&resources, &desired.object).as_ref(),
                    desired,
                )
            })
            .collect();
        // Independent objects: write several at once. A failure is retried
        // on the next change or resync and never blocks the rest.
        let failed = AtomicBool::new(false);
        futures_util::stream::iter(stale)
            .for_each_concurrent(STATUS_WRITERS, |desired| {
                let (client, recorder, resources) = (&client, &recorder, &resources);
                let (metrics, failed) = (&metrics, &failed);
                async move {
                    publish_warnings(recorder, resources, &desired).await;
                    let result = apply_status(client, &desired).await;
                    metrics.status_written(result.is_ok());
                    if let Err(error) = result {
                        failed.store(true, Ordering::Relaxed);
                        tracing::warn!("{error}");
                    }
                }
            })
            .await;
        metrics.reconciled(
            Loop::Status,
            started.elapsed(),
            !failed.load(Ordering::Relaxed),
        );
        changed.notified().await;
    }
}

/// Warning Events for conditions that newly fail, on the object itself, so
/// `kubectl describe` and event pipelines show why a resource is not served.
async fn publish_warnings(recorder: &Recorder, resources: &Resources, desired: &DesiredStatus) {
    let current = current_status(resources, &desired.object);
    let current: Option<Vec<Condition>> = current
        .as_ref()
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok());
    let fresh = warnings(current.as_deref(), &desired.status.conditions);
    if fresh.is_empty() {
        return;
    }
    let Some(reference) = object_reference(resources, &desired.object) else {
        return;
    };
    for warning in fresh {
        let event = Event {
            type_: EventType::Warning,
            reason: warning.reason,
            note: Some(warning.message),
            action: "Compile".into(),
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
        _ => None,
    }
}

/// Each gateway's pods as its Deployment reports them, and its endpoint.
fn fleets(
    resources: &Resources,
    deployments: &Store<Deployment>,
    tallies: &BTreeMap<ObjectRef, Tally>,
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
            };
            (object, fleet)
        })
        .collect()
}

/// Starts a reflector for `K` across all namespaces; every event pokes `changed`.
fn watch<K>(client: Client, changed: Arc<Notify>, config: watcher::Config) -> Store<K>
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
    let stream = reflector::reflector(writer, watcher(Api::<K>::all(client), config))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::warn!(kind = %K::kind(&()), %error, "watch error; retrying"),
            }
        }
    });
    reader
}

/// The object's status as JSON, to compare with the desired one.
fn current_status(resources: &Resources, object: &ObjectRef) -> Option<serde_json::Value> {
    fn find<'a, K: Resource<DynamicType = ()> + kube::ResourceExt>(
        items: &'a [K],
        object: &ObjectRef,
    ) -> Option<&'a K> {
        items.iter().find(|o| {
            o.namespace().as_deref().unwrap_or("default") == object.namespace
                && o.name_any() == object.name
        })
    }
    let status = match object.kind.as_str() {
        "AIGateway" => serde_json::to_value(&find(&resources.gateways, object)?.status),
        "ModelProvider" => serde_json::to_value(&find(&resources.providers, object)?.status),
        "AIRoute" => serde_json::to_value(&find(&resources.routes, object)?.status),
        _ => return None,
    };
    status.ok()
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
        _ => Ok(()),
    };
    result.map_err(|source| Error::Patch {
        object: object.to_string(),
        source,
    })
}
