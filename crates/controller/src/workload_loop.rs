//! Reconciles each AIGateway's workload, and the Deployment and Service of
//! each MCPServer the controller runs (`spec.run`): render, then server-side
//! apply every object with the controller's field manager. Owned objects
//! are watched, so a deleted or edited Deployment is put back. An MCPServer
//! whose `run` is removed has its two objects deleted; deleting an owner
//! removes its objects through their owner references.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tollgate_api::{AIGateway, MCPServer};

use crate::FIELD_MANAGER;
use crate::mcp_workload;
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
    #[error("removing {kind} {name}: {source}")]
    Remove {
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

/// Runs the workload controllers (AIGateways, MCPServers) until their
/// watches end.
pub async fn run(client: Client, settings: RenderSettings, metrics: Arc<Metrics>) {
    let context = Arc::new(Context {
        client: client.clone(),
        settings,
        metrics,
    });
    tokio::join!(
        run_gateways(client.clone(), context.clone()),
        run_mcp_servers(client, context)
    );
}

/// Watches of the objects the controller applies: they carry its label.
fn owned() -> watcher::Config {
    watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"))
}

async fn run_gateways(client: Client, context: Arc<Context>) {
    let gateways = Api::<AIGateway>::all(client.clone());
    let owned = owned();
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

async fn run_mcp_servers(client: Client, context: Arc<Context>) {
    Controller::new(
        Api::<MCPServer>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Deployment>::all(client.clone()), owned())
    .owns(Api::<Service>::all(client), owned())
    .shutdown_on_signal()
    .run(measured_reconcile_server, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::warn!(%error, "MCP server workload reconcile failed");
        }
    })
    .await;
}

async fn measured_reconcile_server(
    server: Arc<MCPServer>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = tokio::time::Instant::now();
    let result = reconcile_server(server, context.clone()).await;
    context
        .metrics
        .reconciled(Loop::McpWorkload, started.elapsed(), result.is_ok());
    result
}

async fn reconcile_server(server: Arc<MCPServer>, context: Arc<Context>) -> Result<Action, Error> {
    if server.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = server.namespace().unwrap_or_default();
    let client = &context.client;
    match mcp_workload::render(&server, &context.settings)? {
        Some(workload) => {
            apply(client, &namespace, &workload.service).await?;
            apply(client, &namespace, &workload.deployment).await?;
        }
        None => {
            // An external server: nothing runs, so what ran before goes.
            let name = mcp_workload::run_object_name(&server.name_any());
            let owner = server.metadata.uid.clone().unwrap_or_default();
            remove_owned::<Deployment>(client, &namespace, &name, &owner).await?;
            remove_owned::<Service>(client, &namespace, &name, &owner).await?;
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Deletes object `name` if `owner` (a uid) owns it. Found by listing
/// (the controller may list and watch, not get), deleted on the condition
/// that it is still the object found.
async fn remove_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let error = |source| Error::Remove {
        kind: K::kind(&()).into_owned(),
        name: name.to_string(),
        source,
    };
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let found = api
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .map_err(error)?;
    for object in found.items {
        let owned = object
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner);
        if !owned {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: object.meta().uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(kind = %K::kind(&()), %namespace, %name, "removed: its MCPServer no longer runs a server")
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(source) => return Err(error(source)),
        }
    }
    Ok(())
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

fn error_policy<K>(_object: Arc<K>, error: &Error, _context: Arc<Context>) -> Action {
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
