//! Reconciles each AIGateway's workload: render, then server-side apply every
//! object with the controller's field manager. Owned objects are watched, so
//! a deleted or edited Deployment is put back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tollgate_api::AIGateway;

use crate::FIELD_MANAGER;
use crate::metrics::{Loop, Metrics};
use crate::workload::{RenderError, RenderSettings, render};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
}

struct Context {
    client: Client,
    settings: RenderSettings,
    metrics: Arc<Metrics>,
}

/// Runs the workload controller until its watches end.
pub async fn run(client: Client, settings: RenderSettings, metrics: Arc<Metrics>) {
    let gateways = Api::<AIGateway>::all(client.clone());
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let context = Arc::new(Context {
        client: client.clone(),
        settings,
        metrics,
    });
    Controller::new(gateways, watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<PodDisruptionBudget>::all(client), owned)
        .shutdown_on_signal()
        .run(measured_reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "workload reconcile failed");
            }
        })
        .await;
}

/// [`reconcile`], counted and timed; an error here is what `error_policy`
/// then handles, so it is counted once, as an error.
async fn measured_reconcile(
    gateway: Arc<AIGateway>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = tokio::time::Instant::now();
    let result = reconcile(gateway, context.clone()).await;
    context
        .metrics
        .reconciled(Loop::Workload, started.elapsed(), result.is_ok());
    result
}

async fn reconcile(gateway: Arc<AIGateway>, context: Arc<Context>) -> Result<Action, Error> {
    if gateway.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the workload.
        return Ok(Action::await_change());
    }
    let workload = render(&gateway, &context.settings)?;
    let namespace = gateway.namespace().unwrap_or_default();
    let client = &context.client;
    apply(client, &namespace, &workload.service_account).await?;
    apply(client, &namespace, &workload.controller_ca).await?;
    apply(client, &namespace, &workload.service).await?;
    apply(client, &namespace, &workload.deployment).await?;
    apply(client, &namespace, &workload.autoscaler).await?;
    apply(client, &namespace, &workload.disruption_budget).await?;
    // Drift is corrected by the owned-object watches; this is a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_gateway: Arc<AIGateway>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Server-side apply with our one field manager; `force` takes over fields
/// a human edited, since the AIGateway is the source of truth.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(object).unwrap_or_default();
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(drop)
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        })
}
