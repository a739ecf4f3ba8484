//! Running the gateway: bind, worker threads, admin port, signals, drain,
//! shared by both configuration sources:
//!
//! * files ([`FileSource`]): compile manifests, hot-reload them on change; a
//!   broken edit is logged and rejected, the last good snapshot keeps serving;
//! * the controller ([`ControllerOptions`]): listen at once, unready until
//!   the first pushed snapshot is installed (see [`crate::subscriber`]).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tollgate_config::compile::{DEFAULT_ADMIN_PORT, DEFAULT_LISTENER_PORT};
use tollgate_config::{Diagnostic, DigestKey, ObjectRef, Snapshot, compile, load_paths};

use crate::metrics::ReloadLabels;
use crate::providers::http::{ClientError, Clients};
use crate::runtime::RuntimeError;
use crate::runtime::{Gateway, Runtime};
use crate::server;
use crate::subscriber::{self, ControllerOptions, DefaultedPorts, SubscribeError};

#[derive(Debug, Clone)]
pub struct Options {
    /// Where configuration comes from.
    pub source: Source,
    /// Overrides of the ports in the AIGateway spec (port 0 picks a free one).
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// Address to bind the spec's ports on when not overridden.
    pub bind: IpAddr,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Data-plane worker threads (one per core is right for most hosts).
    pub workers: usize,
    /// On SIGTERM, how long to keep accepting (while `/readyz` fails) so load
    /// balancers stop sending before the listeners close.
    pub shutdown_delay: Duration,
    /// Caps and deadlines for the data port's connections (the admin port
    /// has its own small cap, [`server::ConnectionLimits::admin`]).
    pub connections: server::ConnectionLimits,
}

#[derive(Debug, Clone)]
pub enum Source {
    Files(FileSource),
    Controller(ControllerOptions),
}

#[derive(Debug, Clone)]
pub struct FileSource {
    pub paths: Vec<PathBuf>,
    /// `name` or `namespace/name`; required when the files define several gateways.
    pub gateway: Option<String>,
    /// Quiet period after a file event before reloading (editors write in bursts).
    pub reload_debounce: Duration,
    /// Keys the snapshot hash and API-key digests.
    pub digest_key: DigestKey,
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
    Config(#[from] RuntimeError),
    #[error("the data and admin addresses are both {0}")]
    SameAddress(SocketAddr),
    #[error("cannot watch configuration files: {0}")]
    Watch(#[from] notify::Error),
    #[error("cannot start the async runtime: {0}")]
    AsyncRuntime(std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Controller(#[from] SubscribeError),
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
    digest_key: &DigestKey,
) -> Result<(Snapshot, Vec<Diagnostic>), StandaloneError> {
    let loaded = load_paths(paths)?;
    let mut diagnostics = loaded.diagnostics.clone();
    let compiled = compile(&loaded.resources, digest_key);
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
/// admin port, the configuration feed (file watcher or controller
/// subscription) and signal handling.
pub fn run(options: Options) -> Result<(), StandaloneError> {
    raise_fd_limit();
    let control = single_thread_runtime()?;
    let initial = match &options.source {
        Source::Files(files) => {
            let (snapshot, warnings) =
                compile_files(&files.paths, files.gateway.as_deref(), &files.digest_key)?;
            for warning in &warnings {
                tracing::warn!("{warning}");
            }
            Some(snapshot)
        }
        Source::Controller(controller) => {
            subscriber::validate(controller)?;
            None
        }
    };
    let gateway = Arc::new(Gateway::new(Clients::new()?));
    // Controller mode listens before it has a spec, so on the spec's defaults.
    let (data_port, admin_port) = initial
        .as_ref()
        .map_or((DEFAULT_LISTENER_PORT, DEFAULT_ADMIN_PORT), |s| {
            (s.config.listener_port, s.config.admin_port)
        });
    let data_addr = options
        .listen
        .unwrap_or(SocketAddr::new(options.bind, data_port));
    let admin_addr = options
        .admin_listen
        .unwrap_or(SocketAddr::new(options.bind, admin_port));
    if data_addr == admin_addr && data_addr.port() != 0 {
        return Err(StandaloneError::SameAddress(data_addr));
    }
    let workers = options.workers.max(1);
    let data_listeners = bind_data(data_addr, workers)?;
    let admin_listener = std::net::TcpListener::bind(admin_addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| StandaloneError::Bind {
            addr: admin_addr,
            source,
        })?;
    let data_addr = data_listeners[0].local_addr().unwrap_or(data_addr);
    let admin_addr = admin_listener.local_addr().unwrap_or(admin_addr);
    let defaulted = DefaultedPorts {
        data: options.listen.is_none().then_some(data_addr.port()),
        admin: options.admin_listen.is_none().then_some(admin_addr.port()),
    };
    match initial {
        Some(snapshot) => {
            tracing::info!(
                hash = snapshot.short_hash(),
                routes = snapshot.config.routes.len(),
                workers,
                "configuration loaded"
            );
            // On the control runtime: the audit log's tasks live there.
            let _runtime = control.enter();
            gateway.install(Runtime::build(snapshot, &gateway)?);
            release_freed_memory();
        }
        None => tracing::info!(
            workers,
            "not ready until the controller sends a configuration"
        ),
    }

    // Workers stop first; the admin port stays up until they have drained.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_admin_tx, stop_admin_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    // One gate for all workers: the caps are per port.
    let data_gate =
        server::ConnectionGate::new("data", options.connections.clone(), &gateway.metrics);
    let admin_limits = server::ConnectionLimits {
        header_read_timeout: options.connections.header_read_timeout,
        idle_timeout: options.connections.idle_timeout,
        ..server::ConnectionLimits::admin()
    };
    let admin_gate = server::ConnectionGate::new("admin", admin_limits, &gateway.metrics);
    for (index, listener) in data_listeners.into_iter().enumerate() {
        let (gateway, stop_rx, drain) = (gateway.clone(), stop_rx.clone(), options.drain_timeout);
        let gate = data_gate.clone();
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
                    server::serve_with(listener, gateway, crate::llm::handle, stop_rx, drain, gate)
                        .await;
                    Ok(())
                })
            })
            .map_err(StandaloneError::Thread)?;
        threads.push(thread);
    }

    // Catch SIGTERM before anyone can learn the address: a signal sent as
    // soon as the port answers must drain, not kill the process.
    let signals = {
        let _runtime = control.enter();
        ShutdownSignal::install()
    };
    // The one line scripts and tests wait for.
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "listening data=http://{data_addr} admin=http://{admin_addr}"
    );
    let _ = stdout.flush();

    // Everything below runs on the main thread's runtime, which also serves
    // the admin port, so /readyz and /metrics answer through the drain.
    let result = control.block_on(async {
        let admin = TcpListener::from_std(admin_listener)
            .map_err(|source| StandaloneError::Bind { addr: admin_addr, source });
        let admin_server = admin.map(|admin| {
            tokio::spawn(server::serve_with(
                admin,
                gateway.clone(),
                server::admin,
                stop_admin_rx,
                options.drain_timeout,
                admin_gate,
            ))
        });
        let (stop_feed_tx, stop_feed_rx) = watch::channel(false);
        let feed = admin_server
            .as_ref()
            .ok()
            .map(|_| start_feed(&options.source, &gateway, defaulted, stop_feed_rx));
        if let Some(Ok(_)) = &feed {
            signals.recv().await;
            tracing::info!(delay = ?options.shutdown_delay, "shutting down: not ready, then draining");
            // No new configuration while draining.
            let _ = stop_feed_tx.send(true);
            gateway.start_draining();
            tokio::time::sleep(options.shutdown_delay).await;
        }
        // Workers stop (always, even if start-up failed above) and drain;
        // the admin port closes last.
        let _ = stop_tx.send(true);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::error!("worker failed: {error}"),
                    Err(_) => tracing::error!("worker panicked"),
                }
            }
        })
        .await;
        let _ = stop_admin_tx.send(true);
        let admin_server = admin_server?;
        let _ = admin_server.await;
        if let Some(feed) = feed.transpose()? {
            feed.finish().await;
        }
        // Every request has settled: flush the audit spool to the sinks
        // (what cannot be delivered in time stays spooled for next start).
        gateway.audit.shutdown(options.drain_timeout).await;
        Ok(())
    });
    tracing::info!("stopped");
    result
}

/// What keeps the configuration current while the gateway runs.
enum Feed {
    /// Dropping the watcher stops it.
    Files(notify::RecommendedWatcher),
    Controller(tokio::task::JoinHandle<()>),
}

impl Feed {
    async fn finish(self) {
        match self {
            Self::Files(watcher) => drop(watcher),
            // Already told to stop; this waits for its connection to close.
            Self::Controller(task) => {
                let _ = task.await;
            }
        }
    }
}

fn start_feed(
    source: &Source,
    gateway: &Arc<Gateway>,
    ports: DefaultedPorts,
    stop: watch::Receiver<bool>,
) -> Result<Feed, StandaloneError> {
    match source {
        Source::Files(files) => watch_files(files, gateway.clone()).map(Feed::Files),
        Source::Controller(controller) => Ok(Feed::Controller(tokio::spawn(subscriber::run(
            controller.clone(),
            gateway.clone(),
            ports,
            stop,
        )))),
    }
}

/// Raises the soft open-files limit to the hard one: each connection is a
/// descriptor, and common soft defaults (1024) are far below the connection cap.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
        return;
    }
    let soft = limit.rlim_cur;
    if soft < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(soft, hard = limit.rlim_max, error = %std::io::Error::last_os_error(), "cannot raise the open-files limit");
            return;
        }
    }
    tracing::info!(
        was = soft,
        now = limit.rlim_cur,
        hard = limit.rlim_max,
        "open-files limit"
    );
}

fn single_thread_runtime() -> Result<tokio::runtime::Runtime, StandaloneError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StandaloneError::AsyncRuntime)
}

/// `count` listening sockets on the data address with `SO_REUSEPORT`, one
/// per worker. The first bind is a plain one, so a port already owned by
/// another process is an error instead of a silent share of its traffic.
fn bind_data(
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, StandaloneError> {
    let bind_error = |addr: SocketAddr| move |source| StandaloneError::Bind { addr, source };
    let probe = std::net::TcpListener::bind(addr).map_err(bind_error(addr))?;
    let addr = probe.local_addr().map_err(bind_error(addr))?;
    drop(probe);
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(bind_error(addr))?;
        socket.set_reuse_address(true).map_err(bind_error(addr))?;
        socket.set_reuse_port(true).map_err(bind_error(addr))?;
        socket.set_nonblocking(true).map_err(bind_error(addr))?;
        socket.bind(&addr.into()).map_err(bind_error(addr))?;
        socket.listen(1024).map_err(bind_error(addr))?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

/// Resolves on SIGTERM or SIGINT (shared with `tollgate controller`).
pub async fn shutdown_signal() {
    ShutdownSignal::install().recv().await;
}

/// SIGTERM and SIGINT handlers, installed before they are awaited so no
/// signal in between takes the default action (exit).
pub struct ShutdownSignal {
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignal {
    /// Installs the handlers; needs a Tokio runtime context.
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
            .ok();
        Self { handlers }
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn recv(self) {
        match self.handlers {
            Some((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Watches the configured files (their directories, so editors that save by
/// rename are seen) and reloads after a quiet period.
fn watch_files(
    options: &FileSource,
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
/// watched through its directory, which may hold unrelated, busy files),
/// Kubernetes' `..data` symlink swaps beside them (ConfigMap and Secret
/// mounts), and under configured directories any manifest or directory.
/// Extra reloads are cheap: an unchanged hash is a no-op.
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
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let beside_a_file = self.files.iter().any(|f| f.parent() == path.parent());
        if self.files.iter().any(|f| f == path) || (beside_a_file && name.starts_with("..")) {
            return true;
        }
        let in_a_dir = self.dirs.iter().any(|d| path.starts_with(d));
        let extension = path.extension().and_then(|e| e.to_str());
        in_a_dir
            && !name.starts_with('.')
            && (extension.is_none() || matches!(extension, Some("yaml" | "yml" | "json")))
    }
}

/// Hands the pages freed by a configuration load back to the system. A load
/// is a burst on this thread (YAML, JSON values, CRD schemas and their CEL
/// programs, the resources, the compiled snapshot) that is garbage once the
/// runtime is installed; glibc keeps freed pages below the top of its heap
/// resident until asked, so without this the gateway would idle with its
/// load's high-water mark. Once per load, never per request (musl has no
/// such call, nor the need: it unmaps freed memory itself).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn reload(options: &FileSource, gateway: &Gateway) {
    let current = gateway.runtime();
    let result = compile_files(
        &options.paths,
        options.gateway.as_deref(),
        &options.digest_key,
    );
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
            match Runtime::build(snapshot, gateway) {
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
    release_freed_memory();
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
        assert!(
            relevant.matches(&dir.path().join("..data")),
            "ConfigMap symlink swap"
        );
        assert!(
            relevant.matches(&sub.join("team-a")),
            "a directory moved in or out"
        );
        assert!(!relevant.matches(&sub.join("notes.txt")));
    }
}
