//! Standalone mode: serve from manifest files, hot-reload them on change.
//! A broken edit is logged and rejected; the last good snapshot keeps serving.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tollgate_config::{Diagnostic, ObjectRef, Snapshot, compile, load_paths};

use crate::metrics::ReloadLabels;
use crate::runtime::{Gateway, Runtime};
use crate::server;
use crate::upstream::{ClientError, Clients, UpstreamError};

#[derive(Debug, Clone)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    /// `name` or `namespace/name`; required when the files define several gateways.
    pub gateway: Option<String>,
    /// Overrides of the ports in the AIGateway spec (port 0 picks a free one).
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// Address to bind the spec's ports on when not overridden.
    pub bind: IpAddr,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Quiet period after a file event before reloading (editors write in bursts).
    pub reload_debounce: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    Load(#[from] tollgate_config::LoadError),
    #[error("configuration has errors:\n{}", list(.0))]
    Invalid(Vec<Diagnostic>),
    #[error("no AIGateway is defined in the configuration")]
    NoGateway,
    #[error("several AIGateways are defined ({0}); choose one with --gateway")]
    AmbiguousGateway(String),
    #[error("AIGateway {0:?} is not defined in the configuration")]
    GatewayNotFound(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("cannot watch configuration files: {0}")]
    Watch(#[from] notify::Error),
}

fn list(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads and compiles the files; any error rejects the whole set, so a typo
/// never silently drops a route. Warnings are returned alongside.
pub fn compile_files(
    paths: &[PathBuf],
    gateway: Option<&str>,
) -> Result<(Snapshot, Vec<Diagnostic>), StandaloneError> {
    let loaded = load_paths(paths)?;
    let mut diagnostics = loaded.diagnostics.clone();
    let compiled = compile(&loaded.resources);
    diagnostics.extend(compiled.diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(StandaloneError::Invalid(
            diagnostics
                .into_iter()
                .filter(Diagnostic::is_error)
                .collect(),
        ));
    }
    let snapshot = select_gateway(compiled.snapshots.into_iter().collect(), gateway)?;
    Ok((snapshot, diagnostics))
}

fn select_gateway(
    mut snapshots: Vec<(ObjectRef, Snapshot)>,
    wanted: Option<&str>,
) -> Result<Snapshot, StandaloneError> {
    match wanted {
        Some(wanted) => {
            let (namespace, name) = wanted
                .split_once('/')
                .unwrap_or((tollgate_config::resources::DEFAULT_NAMESPACE, wanted));
            snapshots
                .into_iter()
                .find(|(key, _)| key.namespace == namespace && key.name == name)
                .map(|(_, s)| s)
                .ok_or_else(|| StandaloneError::GatewayNotFound(wanted.to_string()))
        }
        None if snapshots.len() == 1 => Ok(snapshots.remove(0).1),
        None if snapshots.is_empty() => Err(StandaloneError::NoGateway),
        None => Err(StandaloneError::AmbiguousGateway(
            snapshots
                .iter()
                .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Runs the gateway until SIGTERM or SIGINT, then drains.
pub async fn run(options: Options) -> Result<(), StandaloneError> {
    let (snapshot, warnings) = compile_files(&options.paths, options.gateway.as_deref())?;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let gateway = Arc::new(Gateway::new(Clients::new()?));
    let config = &snapshot.config;
    let data_addr = options
        .listen
        .unwrap_or(SocketAddr::new(options.bind, config.listener_port));
    let admin_addr = options
        .admin_listen
        .unwrap_or(SocketAddr::new(options.bind, config.admin_port));
    let data = bind(data_addr).await?;
    let admin = bind(admin_addr).await?;
    let (data_addr, admin_addr) = (local_addr(&data, data_addr), local_addr(&admin, admin_addr));
    tracing::info!(
        hash = snapshot.short_hash(),
        routes = config.routes.len(),
        "configuration loaded"
    );
    gateway.install(Runtime::build(snapshot, &gateway.clients)?);

    // The one line scripts and tests wait for.
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "listening data=http://{data_addr} admin=http://{admin_addr}"
    );
    let _ = stdout.flush();

    let (stop_tx, stop_rx) = watch::channel(false);
    let _watcher = watch_files(&options, gateway.clone())?;
    let data_server = tokio::spawn(server::serve(
        data,
        server::data_handler(gateway.clone()),
        stop_rx.clone(),
        options.drain_timeout,
    ));
    let admin_server = tokio::spawn(server::serve(
        admin,
        server::admin_handler(gateway.clone()),
        stop_rx,
        options.drain_timeout,
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    gateway.start_draining();
    let _ = stop_tx.send(true);
    let _ = data_server.await;
    let _ = admin_server.await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StandaloneError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StandaloneError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Watches the configured files (their directories, so editors that save by
/// rename are seen) and reloads after a quiet period.
fn watch_files(
    options: &Options,
    gateway: Arc<Gateway>,
) -> Result<notify::RecommendedWatcher, StandaloneError> {
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events_tx.send(());
        }
    })?;
    for path in &options.paths {
        if path.is_dir() {
            watcher.watch(path, RecursiveMode::Recursive)?;
        } else {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
    }
    let options = options.clone();
    tokio::spawn(async move {
        while events_rx.recv().await.is_some() {
            // Collapse a burst of events into one reload.
            loop {
                match tokio::time::timeout(options.reload_debounce, events_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            reload(&options, &gateway);
        }
    });
    Ok(watcher)
}

fn reload(options: &Options, gateway: &Gateway) {
    let current = gateway.runtime();
    let result = compile_files(&options.paths, options.gateway.as_deref());
    let outcome = match result {
        Err(error) => {
            tracing::error!("configuration rejected, still serving the previous version: {error}");
            "rejected"
        }
        Ok((snapshot, _))
            if current
                .as_ref()
                .is_some_and(|c| c.snapshot.hash == snapshot.hash) =>
        {
            "unchanged"
        }
        Ok((snapshot, warnings)) => {
            for warning in &warnings {
                tracing::warn!("{warning}");
            }
            if let Some(current) = &current {
                let (old, new) = (&current.snapshot.config, &snapshot.config);
                if old.listener_port != new.listener_port || old.admin_port != new.admin_port {
                    tracing::warn!("port changes take effect on restart");
                }
            }
            let hash = snapshot.short_hash().to_string();
            match Runtime::build(snapshot, &gateway.clients) {
                Ok(runtime) => {
                    gateway.install(runtime);
                    tracing::info!(%hash, "configuration reloaded");
                    "applied"
                }
                Err(error) => {
                    tracing::error!(
                        "configuration rejected, still serving the previous version: {error}"
                    );
                    "rejected"
                }
            }
        }
    };
    gateway
        .metrics
        .reloads
        .get_or_create(&ReloadLabels { result: outcome })
        .inc();
}
