//! `tollgate mcp-bridge`: serves a stdio MCP server (JSON-RPC lines on its
//! stdin and stdout), or a server of the legacy HTTP+SSE transport (MCP
//! 2024-11-05, `--sse-url`), as an MCP Streamable HTTP endpoint (revision
//! 2025-11-25), so a gateway that speaks Streamable HTTP can put either
//! behind it. The controller runs it in the pod of an MCPServer whose
//! `run.transport` is `Stdio`; the gateway embeds it ([`embed`]) for the
//! MCPServers whose `transport` is `SSE`.
//!
//! A legacy session is one SSE connection to the server (see [`legacy`]):
//! `initialize` opens it, and the stream ending ends the session.
//!
//! One server process per MCP session: an `initialize` POST without a
//! session starts one and its answer carries the new `Mcp-Session-Id`;
//! DELETE, an idle timeout or the bridge's own shutdown stop it (stdin
//! closed, then SIGTERM, then SIGKILL, to its process group). A stdio
//! server serves exactly one client and keeps that client's state (its
//! initialization, subscriptions, in-flight requests), so sessions cannot
//! share one. `--max-sessions` caps the processes; past it `initialize`
//! gets 503 and a JSON-RPC error.
//!
//! A request's answer goes back to the POST that sent it (see
//! [`session`] for the routing): as JSON when the answer comes first and
//! within [`SSE_AFTER`], else as an SSE stream that also carries the
//! request's progress and the server's other messages while no GET stream
//! is open, and ends with the answer. A GET opens the session's stream for
//! the server's own notifications and requests. Bodies are bounded
//! (`--max-body-bytes`, lines from the server 16 MiB), bad input gets a
//! JSON-RPC error, and the server's stderr is the bridge's.

mod legacy;
mod message;
mod session;

pub use legacy::{EndpointError, LegacyUpstream, UpstreamError, parse_header, parse_sse_url};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

use legacy::HttpClient;
use message::{INVALID_REQUEST, Kind, Message, SERVER_ERROR};
use session::{Busy, Listening, Outbound, Registered, SendError, Session};

/// How long a POST waits for its answer before it turns into an SSE stream.
pub const SSE_AFTER: Duration = Duration::from_secs(2);
/// How long `initialize` may take, process start included.
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// SSE comments on quiet streams, so proxies keep them open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Pause after a failed `accept` before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const SESSION_HEADER: &str = "mcp-session-id";

/// Flags of `tollgate mcp-bridge`.
#[derive(clap::Args, Debug, Clone)]
pub struct BridgeArgs {
    /// Address to listen on; port 0 picks a free port (the printed line shows it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The MCP endpoint's path.
    #[arg(long, default_value = "/mcp", value_parser = parse_path)]
    pub path: String,
    /// Most server processes (sessions) at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_sessions: u32,
    /// Seconds a session may sit with nothing in flight and no stream open
    /// before its process is stopped.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub idle_timeout_secs: u64,
    /// Largest request body accepted.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_body_bytes: u64,
    /// Copy this binary to PATH (mode 0755) and exit: what the init
    /// container of an operator-run stdio server does, so the server's own
    /// image can run the bridge.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["command", "sse_url"])]
    pub copy_to: Option<PathBuf>,
    /// Bridge a server of the legacy HTTP+SSE transport (MCP 2024-11-05)
    /// at this SSE URL instead of running a stdio server: one SSE
    /// connection per session.
    #[arg(long, value_name = "URL", value_parser = parse_sse_url, conflicts_with = "command")]
    pub sse_url: Option<url::Url>,
    /// A header sent with the SSE GET and every POST to the legacy server
    /// (`Name: value`; repeatable), e.g. its credential.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header, requires = "sse_url")]
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// The stdio MCP server and its arguments, after `--`.
    #[arg(
        last = true,
        required_unless_present_any = ["copy_to", "sse_url"],
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

impl BridgeArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_sessions: self.max_sessions,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_body_bytes: self.max_body_bytes,
        }
    }

    fn upstream(&self) -> Upstream {
        match &self.sse_url {
            Some(url) => Upstream::Legacy(LegacyUpstream {
                url: url.clone(),
                headers: self.headers.iter().cloned().collect(),
            }),
            None => Upstream::Command(self.command.clone()),
        }
    }
}

/// A bridge's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most sessions (server processes or SSE connections) at once.
    pub max_sessions: u32,
    /// How long a session may sit with nothing in flight and no stream
    /// open before it is stopped.
    pub idle_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sessions: 32,
            idle_timeout: Duration::from_secs(600),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What a session of one bridge path talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A stdio server: this command, one process per session.
    Command(Vec<String>),
    /// A legacy HTTP+SSE server: one SSE connection per session.
    Legacy(LegacyUpstream),
}

fn parse_path(path: &str) -> Result<String, String> {
    if path.starts_with('/')
        && path.parse::<http::uri::PathAndQuery>().is_ok()
        && !path.contains('?')
    {
        Ok(path.to_string())
    } else {
        Err(format!("{path:?} is not a URL path starting with /"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot announce listening address: {0}")]
    Announce(#[source] std::io::Error),
    #[error("cannot copy {from} to {to}: {source}")]
    Copy {
        from: String,
        to: String,
        #[source]
        source: std::io::Error,
    },
}

/// Serves until `shutdown` (SIGTERM or SIGINT in `tollgate mcp-bridge`),
/// printing `listening data=http://ADDR` on stdout first, then stops every
/// server process and drains. With `--copy-to`, copies this binary instead.
pub async fn run(
    args: BridgeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BridgeError> {
    if let Some(to) = &args.copy_to {
        return copy_self(to);
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| BridgeError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(BridgeError::Announce)?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening data=http://{addr}")
            .and_then(|()| stdout.flush())
            .map_err(BridgeError::Announce)?;
    }
    match &args.sse_url {
        Some(url) => {
            tracing::info!(%addr, path = %args.path, sse_url = %url, "MCP bridge listening")
        }
        None => {
            tracing::info!(%addr, path = %args.path, command = ?args.command, "MCP bridge listening")
        }
    }
    serve(listener, args, shutdown).await;
    Ok(())
}

fn copy_self(to: &std::path::Path) -> Result<(), BridgeError> {
    use std::os::unix::fs::PermissionsExt as _;
    let error = |from: &str, source| BridgeError::Copy {
        from: from.to_string(),
        to: to.display().to_string(),
        source,
    };
    let from = std::env::current_exe().map_err(|e| error("this binary", e))?;
    let shown = from.display().to_string();
    std::fs::copy(&from, to).map_err(|e| error(&shown, e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| error(&shown, e))?;
    tracing::info!(from = %shown, to = %to.display(), "copied the bridge");
    Ok(())
}

struct Bridge {
    limits: Limits,
    /// The upstream of each path.
    routes: RwLock<HashMap<String, Arc<Upstream>>>,
    /// For legacy upstreams; made at the first one.
    client: OnceLock<Arc<HttpClient>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// One permit per live session (server process or SSE connection).
    processes: Arc<Semaphore>,
}

impl Bridge {
    fn new(limits: Limits, routes: HashMap<String, Arc<Upstream>>) -> Bridge {
        Bridge {
            limits,
            routes: RwLock::new(routes),
            client: OnceLock::new(),
            sessions: Mutex::new(HashMap::new()),
            processes: Arc::new(Semaphore::new(limits.max_sessions as usize)),
        }
    }

    fn route(&self, path: &str) -> Option<Arc<Upstream>> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes.get(path).cloned()
    }

    /// Replaces the routes; sessions whose path is gone or now leads to
    /// another upstream are stopped.
    fn set_routes(&self, routes: HashMap<String, Arc<Upstream>>) {
        let mut current = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let stale = |key: &str| current.get(key) != routes.get(key);
        let mut sessions = self.sessions();
        sessions.retain(|id, session| {
            let keep = !stale(&session.key);
            if !keep {
                tracing::info!(session = %id, "the session's upstream changed; stopping it");
                session.stop();
            }
            keep
        });
        drop(sessions);
        *current = routes;
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().remove(id)
    }

    /// Stops the sessions idle for the timeout.
    fn reap(&self) {
        let idle = self.limits.idle_timeout;
        let mut sessions = self.sessions();
        sessions.retain(|id, session| {
            let keep = !session.idle_for(idle);
            if !keep {
                tracing::info!(session = %id, "MCP session idle; stopping its server");
                session.stop();
            }
            keep
        });
    }
}

/// Serves `listener` until `shutdown`, then stops every server process
/// (bounded) and lets open responses finish.
pub async fn serve(
    listener: TcpListener,
    args: BridgeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let routes = HashMap::from([(args.path.clone(), Arc::new(args.upstream()))]);
    let bridge = Arc::new(Bridge::new(args.limits(), routes));
    serve_bridge(listener, bridge, shutdown).await;
}

/// A bridge serving legacy HTTP+SSE servers inside another program (the
/// gateway): `/{key}` (see [`EmbeddedBridge::url`]) leads to the upstream
/// of that key. Stops when [`EmbeddedBridge::shutdown`] is called or it is
/// dropped.
pub struct EmbeddedBridge {
    bridge: Arc<Bridge>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Serves a bridge on `listener` (bound already, e.g. to 127.0.0.1:0) for
/// `upstreams` by key. Must be called inside a Tokio runtime.
pub fn embed(
    listener: TcpListener,
    limits: Limits,
    upstreams: HashMap<String, LegacyUpstream>,
) -> Result<EmbeddedBridge, BridgeError> {
    let addr = listener.local_addr().map_err(BridgeError::Announce)?;
    let bridge = Arc::new(Bridge::new(limits, embedded_routes(upstreams)));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_bridge(listener, bridge.clone(), async move {
        // Sent or dropped: either way, stop.
        let _ = stopped.await;
    }));
    tracing::info!(%addr, "embedded MCP bridge for legacy SSE servers listening");
    Ok(EmbeddedBridge {
        bridge,
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}

fn embedded_routes(upstreams: HashMap<String, LegacyUpstream>) -> HashMap<String, Arc<Upstream>> {
    upstreams
        .into_iter()
        .map(|(key, upstream)| (key_path(&key), Arc::new(Upstream::Legacy(upstream))))
        .collect()
}

/// The path of a key: `/` and the key, percent-encoded but for RFC 3986's
/// unreserved characters.
fn key_path(key: &str) -> String {
    let mut path = String::with_capacity(key.len() + 1);
    path.push('/');
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

impl EmbeddedBridge {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Streamable HTTP URL of the upstream of `key`.
    pub fn url(&self, key: &str) -> String {
        format!("http://{}{}", self.addr, key_path(key))
    }

    /// Replaces the upstreams (a configuration reload); sessions whose
    /// upstream is gone or changed are stopped, the others go on.
    pub fn set_upstreams(&self, upstreams: HashMap<String, LegacyUpstream>) {
        self.bridge.set_routes(embedded_routes(upstreams));
    }

    /// Stops every session and the listener, and waits (bounded) for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmbeddedBridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve_bridge(
    listener: TcpListener,
    bridge: Arc<Bridge>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let max = bridge.limits.max_sessions;
    let idle = bridge.limits.idle_timeout;
    let reaper = {
        let bridge = bridge.clone();
        let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                bridge.reap();
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let bridge = bridge.clone();
                let service = service_fn(move |request| {
                    let bridge = bridge.clone();
                    async move { Ok::<_, Infallible>(handle(&bridge, request).await) }
                });
                let connection = graceful.watch(
                    builder.serve_connection(TokioIo::new(stream), service).into_owned(),
                );
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection closed with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    reaper.abort();
    // Stop every server; their streams then end, so connections drain.
    let sessions: Vec<Arc<Session>> = bridge.sessions().drain().map(|(_, s)| s).collect();
    tracing::info!(
        sessions = sessions.len(),
        "shutting down: stopping the MCP server processes"
    );
    for session in &sessions {
        session.stop();
    }
    let all_stopped = bridge.processes.acquire_many(max);
    if tokio::time::timeout(Duration::from_secs(10), all_stopped)
        .await
        .is_err()
    {
        tracing::warn!("MCP server processes still running after 10 s");
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
    }
}

async fn handle(bridge: &Arc<Bridge>, request: Request<Incoming>) -> Response<Body> {
    let key = request.uri().path().to_string();
    let Some(upstream) = bridge.route(&key) else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            INVALID_REQUEST,
            "No MCP endpoint here.",
        );
    };
    if !origin_allowed(request.headers()) {
        return rpc_error(
            StatusCode::FORBIDDEN,
            None,
            INVALID_REQUEST,
            "Origin not allowed.",
        );
    }
    let outcome = match *request.method() {
        Method::POST => post(bridge, &key, &upstream, request).await,
        Method::GET => get(bridge, &key, request.headers()),
        Method::DELETE => delete(bridge, &key, request.headers()),
        _ => {
            let mut response = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                INVALID_REQUEST,
                "MCP endpoints take POST, GET and DELETE.",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
            Ok(response)
        }
    };
    outcome.unwrap_or_else(|refusal| *refusal)
}

type Refusal = Box<Response<Body>>;

fn refuse(status: StatusCode, id: Option<&Value>, code: i64, text: &str) -> Refusal {
    Box::new(rpc_error(status, id, code, text))
}

/// `Origin`, when a browser sends one, must name this host (DNS rebinding).
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    host.is_some() && origin_host == host
}

/// The session the request names: `None` without the header; a 404 when
/// it names none that is running (the spec's "start over").
fn named_session(
    bridge: &Bridge,
    key: &str,
    headers: &HeaderMap,
    id: Option<&Value>,
) -> Result<Option<Arc<Session>>, Refusal> {
    let Some(value) = headers.get(SESSION_HEADER) else {
        return Ok(None);
    };
    let session = value
        .to_str()
        .ok()
        .and_then(|name| bridge.sessions().get(name).cloned())
        .filter(|session| session.key == key && !session.is_closed());
    match session {
        Some(session) => Ok(Some(session)),
        None => Err(refuse(
            StatusCode::NOT_FOUND,
            id,
            INVALID_REQUEST,
            "Session not found: initialize a new session.",
        )),
    }
}

fn required_session(
    bridge: &Bridge,
    key: &str,
    headers: &HeaderMap,
    id: Option<&Value>,
) -> Result<Arc<Session>, Refusal> {
    named_session(bridge, key, headers, id)?.ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            "Mcp-Session-Id required: send initialize first.",
        )
    })
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .any(|t| t.eq_ignore_ascii_case("text/event-stream") || t == "*/*")
}

async fn read_body(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, Refusal> {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            INVALID_REQUEST,
            &format!("The message is larger than {limit} bytes."),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            "The message could not be read.",
        )),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            None,
            INVALID_REQUEST,
            "The message took too long to arrive.",
        )),
    }
}

async fn post(
    bridge: &Arc<Bridge>,
    key: &str,
    upstream: &Upstream,
    request: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, bridge.limits.max_body_bytes).await?;
    let mut message = Message::parse(&bytes)
        .map_err(|(code, text)| refuse(StatusCode::BAD_REQUEST, None, code, text))?;
    let id = message.id().cloned();
    let initialize = message.kind == Kind::Request && message.method() == Some("initialize");
    let session = match named_session(bridge, key, &parts.headers, id.as_ref())? {
        Some(_) if initialize => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                id.as_ref(),
                INVALID_REQUEST,
                "initialize opens a new session: send it without Mcp-Session-Id.",
            ));
        }
        Some(session) => {
            check_version(&session, &parts.headers, id.as_ref())?;
            session
        }
        None if initialize => open_session(bridge, key, upstream, id.as_ref())?,
        None => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                id.as_ref(),
                INVALID_REQUEST,
                "Mcp-Session-Id required: send initialize first.",
            ));
        }
    };
    let busy = session.busy();
    if message.kind != Kind::Request {
        session.translate_cancellation(&mut message);
        deliver(&session, message.to_line(), None).await?;
        return Ok(empty(StatusCode::ACCEPTED));
    }
    let streams = !initialize && accepts_sse(&parts.headers);
    let Some((registered, mut answers)) = session.register(&mut message, streams) else {
        return Err(gone(id.as_ref()));
    };
    deliver(&session, message.to_line(), id.as_ref()).await?;
    if initialize {
        return initialized(bridge, &session, answers, id.as_ref()).await;
    }
    // `None`: no answer within SSE_AFTER (only when the client takes SSE).
    let first = if streams {
        tokio::time::timeout(SSE_AFTER, answers.recv()).await.ok()
    } else {
        Some(answers.recv().await)
    };
    let opening = match first {
        Some(None) => return Err(gone(id.as_ref())),
        Some(Some(out)) if out.response => return Ok(json(StatusCode::OK, out.json)),
        Some(Some(out)) => message::sse_event(&out.json),
        // Still working: stream, so whatever comes meanwhile flows.
        None => Bytes::from_static(message::SSE_KEEPALIVE),
    };
    Ok(sse(SseBody::new(
        Some(opening),
        answers,
        id,
        Guards {
            _request: Some(registered),
            _listening: None,
            _busy: busy,
        },
    )))
}

/// The answer to `initialize`, with the new session's id, or the session
/// stopped again when the server refused or never answered.
async fn initialized(
    bridge: &Bridge,
    session: &Arc<Session>,
    mut answers: mpsc::Receiver<Outbound>,
    id: Option<&Value>,
) -> Result<Response<Body>, Refusal> {
    let answer = tokio::time::timeout(INITIALIZE_TIMEOUT, answers.recv()).await;
    let fail = |status, text: &str| {
        bridge.remove(&session.id);
        session.stop();
        refuse(status, id, SERVER_ERROR, text)
    };
    let out = match answer {
        Ok(Some(out)) => out,
        Ok(None) => {
            return Err(fail(
                StatusCode::BAD_GATEWAY,
                "The MCP server (its process or connection) ended before it answered initialize.",
            ));
        }
        Err(_) => {
            return Err(fail(
                StatusCode::GATEWAY_TIMEOUT,
                "The MCP server did not answer initialize in time.",
            ));
        }
    };
    match Message::parse(&out.json) {
        Ok(answer) if !answer.is_error() => {
            if let Some(version) = answer.negotiated_version() {
                session.set_protocol_version(version);
            }
        }
        // The session failed (its process or connection ended): a 502, so
        // a gateway in front counts the failure and may try elsewhere.
        _ if session.is_closed() => {
            bridge.remove(&session.id);
            return Ok(json(StatusCode::BAD_GATEWAY, out.json));
        }
        // The server refused: pass its error on, and end the session.
        _ => {
            bridge.remove(&session.id);
            session.stop();
            return Ok(json(StatusCode::OK, out.json));
        }
    }
    let mut response = json(StatusCode::OK, out.json);
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    tracing::info!(session = %session.id, "MCP session opened");
    Ok(response)
}

fn open_session(
    bridge: &Arc<Bridge>,
    key: &str,
    upstream: &Upstream,
    id: Option<&Value>,
) -> Result<Arc<Session>, Refusal> {
    let Ok(permit) = bridge.processes.clone().try_acquire_owned() else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            id,
            SERVER_ERROR,
            &format!(
                "The bridge runs its maximum of {} MCP sessions; end one or try again later.",
                bridge.limits.max_sessions
            ),
        ));
    };
    let session_id = format!("{:032x}", rand::random::<u128>());
    let on_exit = {
        let bridge = Arc::downgrade(bridge);
        move |session: &Session| {
            if let Some(bridge) = bridge.upgrade() {
                bridge.remove(&session.id);
            }
        }
    };
    let session = match upstream {
        Upstream::Command(command) => {
            Session::spawn(session_id, key.to_string(), command, permit, on_exit).map_err(
                |error| {
                    tracing::error!(?command, %error, "cannot start the MCP server");
                    refuse(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        id,
                        message::INTERNAL_ERROR,
                        "The MCP server could not be started.",
                    )
                },
            )?
        }
        Upstream::Legacy(legacy) => {
            let client = bridge
                .client
                .get_or_init(|| Arc::new(HttpClient::new()))
                .clone();
            Session::connect(
                session_id,
                key.to_string(),
                legacy.clone(),
                client,
                permit,
                on_exit,
            )
        }
    };
    bridge
        .sessions()
        .insert(session.id.clone(), session.clone());
    Ok(session)
}

/// `MCP-Protocol-Version`, when sent, must be the one the session agreed.
fn check_version(
    session: &Session,
    headers: &HeaderMap,
    id: Option<&Value>,
) -> Result<(), Refusal> {
    let Some(sent) = headers.get("mcp-protocol-version") else {
        return Ok(());
    };
    match session.protocol_version() {
        Some(agreed) if sent.as_bytes() != agreed.as_bytes() => Err(refuse(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            &format!("Unsupported MCP-Protocol-Version: this session uses {agreed}."),
        )),
        _ => Ok(()),
    }
}

async fn deliver(session: &Session, line: Vec<u8>, id: Option<&Value>) -> Result<(), Refusal> {
    match session.send(line).await {
        Ok(()) => Ok(()),
        Err(SendError::Gone) => Err(gone(id)),
        Err(SendError::Stuck) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            id,
            SERVER_ERROR,
            "The MCP server is not taking its messages.",
        )),
    }
}

/// The session's process or connection ended: as for a session the bridge
/// does not know.
fn gone(id: Option<&Value>) -> Refusal {
    refuse(
        StatusCode::NOT_FOUND,
        id,
        SERVER_ERROR,
        "The MCP server of this session has ended: initialize a new session.",
    )
}

fn get(bridge: &Arc<Bridge>, key: &str, headers: &HeaderMap) -> Result<Response<Body>, Refusal> {
    let session = required_session(bridge, key, headers, None)?;
    check_version(&session, headers, None)?;
    if !accepts_sse(headers) {
        return Err(refuse(
            StatusCode::NOT_ACCEPTABLE,
            None,
            INVALID_REQUEST,
            "GET opens an SSE stream: Accept must list text/event-stream.",
        ));
    }
    let busy = session.busy();
    let Some((listening, messages)) = session.listen() else {
        return Err(refuse(
            StatusCode::CONFLICT,
            None,
            INVALID_REQUEST,
            "This session already has a GET stream open.",
        ));
    };
    Ok(sse(SseBody::new(
        None,
        messages,
        None,
        Guards {
            _request: None,
            _listening: Some(listening),
            _busy: busy,
        },
    )))
}

fn delete(bridge: &Arc<Bridge>, key: &str, headers: &HeaderMap) -> Result<Response<Body>, Refusal> {
    let session = required_session(bridge, key, headers, None)?;
    bridge.remove(&session.id);
    session.stop();
    tracing::info!(session = %session.id, "MCP session ended by the client");
    Ok(empty(StatusCode::OK))
}

/// The response body: a whole message, or an SSE stream.
enum Body {
    Full(Option<Bytes>),
    Sse(Box<SseBody>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Sse(stream) => stream.poll_next(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }
}

/// What an open stream keeps alive, dropped with it (after its channel).
struct Guards {
    _request: Option<Registered>,
    _listening: Option<Listening>,
    _busy: Busy,
}

/// An SSE response: a POST's (ends with its answer) or the GET stream.
struct SseBody {
    first: Option<Bytes>,
    messages: mpsc::Receiver<Outbound>,
    /// A POST's request id: the stream ends with its answer, or with an
    /// error naming it when the process ends first. `None`: the GET stream.
    request: Option<Value>,
    done: bool,
    keepalive: tokio::time::Interval,
    _guards: Guards,
}

impl SseBody {
    fn new(
        first: Option<Bytes>,
        messages: mpsc::Receiver<Outbound>,
        request: Option<Value>,
        guards: Guards,
    ) -> SseBody {
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        SseBody {
            first,
            messages,
            request,
            done: false,
            keepalive,
            _guards: guards,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        match self.messages.poll_recv(cx) {
            Poll::Ready(Some(out)) => {
                if out.response && self.request.is_some() {
                    self.done = true;
                }
                Poll::Ready(Some(message::sse_event(&out.json)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.request.take().map(|id| {
                    message::sse_event(&message::error(
                        Some(&id),
                        SERVER_ERROR,
                        "The MCP server ended before it answered.",
                    ))
                }))
            }
            Poll::Pending => match self.keepalive.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Bytes::from_static(message::SSE_KEEPALIVE))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

fn sse(body: SseBody) -> Response<Body> {
    let mut response = Response::new(Body::Sse(Box::new(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::Full(Some(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Full(None));
    *response.status_mut() = status;
    response
}

fn rpc_error(status: StatusCode, id: Option<&Value>, code: i64, text: &str) -> Response<Body> {
    json(status, message::error(id, code, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_are_read_like_http_does() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            accepts_sse(&headers)
        };
        assert!(with("application/json, text/event-stream"));
        assert!(with("text/event-stream;q=0.9"));
        assert!(with("*/*"));
        assert!(!with("application/json"));
        assert!(!accepts_sse(&HeaderMap::new()));
    }

    #[test]
    fn paths_must_be_paths() {
        assert_eq!(parse_path("/mcp").as_deref(), Ok("/mcp"));
        assert!(parse_path("mcp").is_err());
        assert!(parse_path("/a b").is_err());
        assert!(parse_path("/mcp?x=1").is_err());
    }

    #[test]
    fn keys_become_paths() {
        assert_eq!(key_path("notes"), "/notes");
        assert_eq!(key_path("team/a b.c~_-"), "/team%2Fa%20b.c~_-");
        assert_eq!(key_path("é"), "/%C3%A9");
    }

    #[test]
    fn origins_must_name_the_host() {
        let headers = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("bridge:8080"));
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            h
        };
        assert!(origin_allowed(&HeaderMap::new()));
        assert!(origin_allowed(&headers("http://bridge:8080")));
        assert!(!origin_allowed(&headers("https://evil.example")));
    }
}
