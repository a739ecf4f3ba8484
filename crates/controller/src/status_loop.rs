//! Watches AIGateway, ModelProvider, AIRoute and Secret; after each burst of
//! changes compiles the whole set once and server-side-applies the status of
//! every object whose conditions changed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tollgate_api::{AIGateway, AIRoute, ModelProvider, ResourceStatus};
use tollgate_config::{ObjectRef, Resources, compile};

use crate::FIELD_MANAGER;
use crate::status::{DesiredStatus, desired_statuses, needs_update};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("status patch for {object} failed: {source}")]
    Patch { object: String, source: kube::Error },
    #[error("status for {0} cannot be encoded: {1}")]
    Encode(String, serde_json::Error),
}

/// Quiet period that batches a burst of watch events into one compile.
const DEBOUNCE: Duration = Duration::from_millis(50);

struct Stores {
    gateways: Store<AIGateway>,
    providers: Store<ModelProvider>,
    routes: Store<AIRoute>,
    secrets: Store<Secret>,
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
pub async fn run(client: Client) {
    let changed = Arc::new(Notify::new());
    let stores = Stores {
        gateways: watch::<AIGateway>(client.clone(), changed.clone()),
        providers: watch::<ModelProvider>(client.clone(), changed.clone()),
        routes: watch::<AIRoute>(client.clone(), changed.clone()),
        secrets: watch::<Secret>(client.clone(), changed.clone()),
    };
    for ready in [
        stores.gateways.wait_until_ready().await,
        stores.providers.wait_until_ready().await,
        stores.routes.wait_until_ready().await,
        stores.secrets.wait_until_ready().await,
    ] {
        if ready.is_err() {
            tracing::error!("a watch ended before its first list");
            return;
        }
    }
    tracing::info!("caches synced");
    loop {
        // Collapse a burst of events into one compile.
        while tokio::time::timeout(DEBOUNCE, changed.notified())
            .await
            .is_ok()
        {}
        let resources = stores.resources();
        let compiled = compile(&resources);
        let now = Time(jiff::Timestamp::now());
        for desired in desired_statuses(&resources, &compiled, &now) {
            let current = current_status(&resources, &desired.object);
            // The next change (or resync) retries a failure; one failure never blocks the rest.
            if needs_update(current.as_ref(), &desired.status)
                && let Err(error) = apply_status(&client, &desired).await
            {
                tracing::warn!("{error}");
            }
        }
        changed.notified().await;
    }
}

/// Starts a reflector for `K` across all namespaces; every event pokes `changed`.
fn watch<K>(client: Client, changed: Arc<Notify>) -> Store<K>
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
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client), watcher::Config::default()),
    )
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

fn current_status(resources: &Resources, object: &ObjectRef) -> Option<ResourceStatus> {
    let matches = |namespace: Option<&String>, name: Option<&String>| {
        namespace.map(String::as_str).unwrap_or("default") == object.namespace
            && name.is_some_and(|n| *n == object.name)
    };
    match object.kind.as_str() {
        "AIGateway" => resources
            .gateways
            .iter()
            .find(|o| matches(o.metadata.namespace.as_ref(), o.metadata.name.as_ref()))?
            .status
            .clone(),
        "ModelProvider" => resources
            .providers
            .iter()
            .find(|o| matches(o.metadata.namespace.as_ref(), o.metadata.name.as_ref()))?
            .status
            .clone(),
        "AIRoute" => resources
            .routes
            .iter()
            .find(|o| matches(o.metadata.namespace.as_ref(), o.metadata.name.as_ref()))?
            .status
            .clone(),
        _ => None,
    }
}

async fn apply_status(client: &Client, desired: &DesiredStatus) -> Result<(), Error> {
    let object = &desired.object;
    let patch = serde_json::json!({
        "apiVersion": tollgate_api::API_VERSION,
        "kind": object.kind,
        "status": desired.status,
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
