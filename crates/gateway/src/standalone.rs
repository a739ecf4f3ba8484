//! Standalone mode: serve from manifest files, hot-reload them on change.
//! A broken edit is logged and rejected; the last good snapshot keeps serving.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tollgate_config::{Diagnostic, ObjectRef, Snapshot, compile, load_paths};

use crate::metrics::ReloadLabels;
use crate::pipeline;
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
    /// Data-plane worker threads (one per core is right for most hosts).
    pub workers: usize,
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
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
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
///
/// Thread per core: each worker thread runs its own single-threaded tokio
/// runtime with its own `SO_REUSEPORT` listener (the kernel spreads
/// connections) and its own upstream pools, so a request is served start to
/// end on one thread with no cross-thread wake-ups. The main thread runs the
/// admin port, the file watcher and signal handling.
pub fn run(options: Options) -> Result<(), StandaloneError> {
    let control = single_thread_runtime()?;
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
    let workers = options.workers.max(1);
    let data_listeners = bind_reuseport(data_addr, workers)?;
    let admin_listener = bind_reuseport(admin_addr, 1)?.remove(0);
    let data_addr = data_listeners[0].local_addr().unwrap_or(data_addr);
    let admin_addr = admin_listener.local_addr().unwrap_or(admin_addr);
    tracing::info!(
        hash = snapshot.short_hash(),
        routes = config.routes.len(),
        workers,
        "configuration loaded"
    );
    gateway.install(Runtime::build(snapshot, &gateway.clients)?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for (index, listener) in data_listeners.into_iter().enumerate() {
        let (gateway, stop_rx, drain) = (gateway.clone(), stop_rx.clone(), options.drain_timeout);
        let thread = std::thread::Builder::new()
            .name(format!("tollgate-worker-{index}"))
            .spawn(move || -> Result<(), StandaloneError> {
                single_thread_runtime()?.block_on(async move {
                    let listener = TcpListener::from_std(listener).map_err(|source| {
                        StandaloneError::Bind {
                            addr: data_addr,
                            source,
                        }
                    })?;
                    server::serve(listener, gateway, pipeline::handle, stop_rx, drain).await;
                    Ok(())
                })
            })
            .map_err(StandaloneError::Thread)?;
        threads.push(thread);
    }

    // The one line scripts and tests wait for.
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "listening data=http://{data_addr} admin=http://{admin_addr}"
    );
    let _ = stdout.flush();

    let result = control.block_on(async {
        let _watcher = watch_files(&options, gateway.clone())?;
        let admin =
            TcpListener::from_std(admin_listener).map_err(|source| StandaloneError::Bind {
                addr: admin_addr,
                source,
            })?;
        let admin_server = tokio::spawn(server::serve(
            admin,
            gateway.clone(),
            server::admin,
            stop_rx,
            options.drain_timeout,
        ));
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        gateway.start_draining();
        let _ = stop_tx.send(true);
        let _ = admin_server.await;
        Ok(())
    });
    // Stop the workers even if the control side failed.
    let _ = stop_tx.send(true);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!("worker failed: {error}"),
            Err(_) => tracing::error!("worker panicked"),
        }
    }
    tracing::info!("stopped");
    result
}

fn single_thread_runtime() -> Result<tokio::runtime::Runtime, StandaloneError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StandaloneError::Runtime)
}

/// `count` listening sockets on one address with `SO_REUSEPORT`; with port 0
/// the first one picks the port and the rest join it.
fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, StandaloneError> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let bind_error = |source| StandaloneError::Bind { addr, source };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(bind_error)?;
        socket.set_reuse_address(true).map_err(bind_error)?;
        socket.set_reuse_port(true).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        socket.bind(&addr.into()).map_err(bind_error)?;
        socket.listen(1024).map_err(bind_error)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr().map_err(bind_error)?;
        listeners.push(listener);
    }
    Ok(listeners)
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
    let relevant = RelevantPaths::new(&options.paths);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(|p| relevant.matches(p))
        {
            let _ = events_tx.send(());
        }
    })?;
    // Absolute, so event paths compare equal to `relevant`'s.
    for path in options
        .paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
    {
        let path = &path;
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

/// Which changed paths matter: the configured files themselves (a file is
/// watched through its directory, which may hold unrelated, busy files) and
/// manifests under configured directories.
struct RelevantPaths {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl RelevantPaths {
    fn new(paths: &[PathBuf]) -> Self {
        let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
            paths.iter().map(absolute).partition(|p| p.is_dir());
        Self { files, dirs }
    }

    fn matches(&self, path: &Path) -> bool {
        if self.files.iter().any(|f| f == path) {
            return true;
        }
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        is_manifest && self.dirs.iter().any(|d| path.starts_with(d))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_manifests_trigger_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.yaml");
        std::fs::write(&file, "").unwrap();
        let sub = dir.path().join("conf.d");
        std::fs::create_dir(&sub).unwrap();
        let relevant = RelevantPaths::new(&[file.clone(), sub.clone()]);
        assert!(relevant.matches(&file));
        assert!(
            !relevant.matches(&dir.path().join("gateway.log")),
            "a busy neighbour file"
        );
        assert!(
            !relevant.matches(&dir.path().join("other.yaml")),
            "not configured"
        );
        assert!(relevant.matches(&sub.join("routes.yaml")));
        assert!(relevant.matches(&sub.join("deep/more.yml")));
        assert!(!relevant.matches(&sub.join(".routes.yaml.swp")));
    }
}
