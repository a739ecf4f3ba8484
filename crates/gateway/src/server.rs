//! HTTP serving: accept loop, HTTP/1.1 keep-alive and h2c, connection
//! limits and deadlines, graceful drain.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::http::{self as responses, BoxError, ResponseBody, box_body};
use crate::metrics::{ListenerLabels, Metrics, RejectLabels};
use crate::runtime::Gateway;

/// Request heads (URI and headers) larger than this are answered 431 in the
/// OpenAI error shape. hyper's own limits (100 headers, ~400 KiB of buffer)
/// sit above it and answer with an empty body.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// After a connection is told to close (idle, or draining) with nothing in
/// flight, how long it gets to say goodbye (HTTP/2 GOAWAY) before it is dropped:
/// a peer that never answers the GOAWAY ping must not hold it open.
const CLOSE_GRACE: Duration = Duration::from_millis(250);
/// How often a closing connection checks whether its last request has finished.
const CLOSE_POLL: Duration = Duration::from_millis(50);

/// Limits on the connections of one port.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections on the port (all workers together); over it a new
    /// connection is accepted and closed at once, so the backlog never fills.
    pub max_connections: usize,
    /// Open connections from one peer address; 0 for no limit.
    pub max_connections_per_ip: usize,
    /// A new connection must complete its first request head (HTTP/1) or open
    /// its first stream (h2c) within this, or it is closed.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The admin port: a small cap of its own, so probes and scrapes still
    /// get in when the data port is saturated.
    pub fn admin() -> Self {
        Self {
            max_connections: 256,
            ..Self::default()
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The connection caps of one port, shared by its workers' listeners so a
/// cap is per port, not per worker. Touched once per connection, never per request.
pub struct ConnectionGate {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    gauge: Gauge,
    over_cap: Counter,
    over_ip_cap: Counter,
    accept_errors: Counter,
    header_timeouts: Counter,
}

impl ConnectionGate {
    /// `listener` labels the metrics (`data` or `admin`).
    pub fn new(listener: &'static str, limits: ConnectionLimits, metrics: &Metrics) -> Arc<Self> {
        let rejected = |reason| {
            metrics
                .connections_rejected
                .get_or_create(&RejectLabels { listener, reason })
                .clone()
        };
        Arc::new(Self {
            gauge: metrics
                .connections_open
                .get_or_create(&ListenerLabels { listener })
                .clone(),
            over_cap: rejected("max_connections"),
            over_ip_cap: rejected("max_connections_per_ip"),
            accept_errors: rejected("accept_error"),
            header_timeouts: rejected("header_timeout"),
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// A slot for a connection from `ip`, or `None` (counted) when over a cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.over_cap.inc();
            return None;
        }
        let per_ip = self.limits.max_connections_per_ip;
        if per_ip > 0 {
            let mut counts = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = counts.entry(ip).or_insert(0);
            if *count >= per_ip {
                drop(counts);
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.over_ip_cap.inc();
                return None;
            }
            *count += 1;
        }
        self.gauge.inc();
        Some(Permit {
            gate: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; dropping it frees the slot.
struct Permit {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let gate = &self.gate;
        if gate.limits.max_connections_per_ip > 0 {
            let mut counts = gate.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&self.ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
        gate.open.fetch_sub(1, Ordering::AcqRel);
        gate.gauge.dec();
    }
}

/// What one connection is doing, for its idle and first-request deadlines:
/// requests started and finished, so the watchdog needs no clock per request.
#[derive(Default)]
struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    fn counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Acquire),
            self.finished.load(Ordering::Acquire),
        )
    }
}

/// Held by a request from its head to the end of its response body (streams
/// included), so a connection with a request in flight is never idle.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// The response body with the request's [`InFlight`] mark: no extra box.
pub struct TrackedBody {
    body: ResponseBody,
    _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `handler` on `listener` with the default [`ConnectionLimits`]
/// until `shutdown` flips to true, then drains (see [`serve_with`]).
pub async fn serve<H, F>(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    handler: H,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    H: Fn(Arc<Gateway>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let gate = ConnectionGate::new("data", ConnectionLimits::default(), &gateway.metrics);
    serve_with(listener, gateway, handler, shutdown, drain, gate).await;
}

/// Serves `handler` on `listener` within `gate`'s limits until `shutdown`
/// flips to true, then stops accepting: idle connections close at once
/// (HTTP/2 with a GOAWAY), busy ones after their in-flight requests (streams
/// included), all within `drain`.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    gate: Arc<ConnectionGate>,
) where
    H: Fn(Arc<Gateway>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let limits = gate.limits().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout.min(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        gate.accept_errors.inc();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over a cap: accepted and dropped at once, so the backlog keeps moving.
                let Some(permit) = gate.admit(peer.ip()) else { continue };
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let activity = Arc::new(Activity::default());
                let in_requests = activity.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let in_flight = InFlight::enter(&in_requests);
                    let gateway = gateway.clone();
                    async move {
                        let response = match head_too_large(&request) {
                            Some(response) => response,
                            None => handler(gateway, request).await,
                        };
                        Ok::<_, Infallible>(response.map(|body| TrackedBody { body, _in_flight: in_flight }))
                    }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                // The watchdog runs beside the connection in a task of its own,
                // so a connection's every wake costs one atomic load, not a
                // poll of its timers.
                let signal = Arc::new(Signal::default());
                let watchdog = Watchdog::new(activity, &limits, shutdown.clone(), signal.clone());
                let watchdog = tokio::spawn(watchdog.run(gate.header_timeouts.clone()));
                connections.spawn(async move {
                    let _permit = permit;
                    let _watchdog = AbortOnDrop(watchdog);
                    let mut connection = pin!(connection);
                    let mut closing = false;
                    let result = std::future::poll_fn(|cx| {
                        signal.waker.register(cx.waker());
                        match signal.state.load(Ordering::Acquire) {
                            DROP => return Poll::Ready(Ok(())),
                            CLOSE if !closing => {
                                closing = true;
                                connection.as_mut().graceful_shutdown();
                            }
                            _ => {}
                        }
                        connection.as_mut().poll(cx)
                    })
                    .await;
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!(?drain, "drain timeout: closing remaining connections");
        connections.abort_all();
    }
}

/// The watchdog's word to its connection: set once, read on every wake.
#[derive(Default)]
struct Signal {
    /// 0 while the connection runs, then [`CLOSE`], then [`DROP`].
    state: AtomicU8,
    waker: AtomicWaker,
}

/// Close gracefully (HTTP/1: at once when idle; HTTP/2: GOAWAY).
const CLOSE: u8 = 1;
/// Closed long enough with nothing in flight: drop the connection.
const DROP: u8 = 2;

impl Signal {
    fn raise(&self, state: u8) {
        self.state.fetch_max(state, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// Aborts the task when dropped: the watchdog ends with its connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Per-connection deadlines: the first request head, idleness between
/// requests, and on drain or close, how long an idle connection may linger.
struct Watchdog {
    activity: Arc<Activity>,
    idle_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    signal: Arc<Signal>,
    deadline: Instant,
    /// Request counts when the deadline was set: unchanged at the deadline
    /// (and nothing in flight) means the connection idled the whole period.
    seen: (u64, u64),
}

impl Watchdog {
    fn new(
        activity: Arc<Activity>,
        limits: &ConnectionLimits,
        shutdown: watch::Receiver<bool>,
        signal: Arc<Signal>,
    ) -> Self {
        Self {
            activity,
            idle_timeout: limits.idle_timeout,
            shutdown,
            signal,
            deadline: Instant::now() + limits.header_read_timeout,
            seen: (0, 0),
        }
    }

    /// Watches until the connection is told to close, then until it may be
    /// dropped; `header_timeouts` counts connections that never sent a request.
    async fn run(mut self, header_timeouts: Counter) {
        let counts = loop {
            tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => {}
                () = stopped(&mut self.shutdown) => break None,
            }
            let counts = self.activity.counts();
            if counts.0 == counts.1 && counts == self.seen {
                break Some(counts);
            }
            self.seen = counts;
            self.deadline = Instant::now() + self.idle_timeout;
        };
        if counts.is_some_and(|(started, _)| started == 0) {
            header_timeouts.inc();
        }
        self.signal.raise(CLOSE);
        // Closing: drop the connection once it has had nothing in flight
        // for CLOSE_GRACE (an HTTP/2 peer that never answers GOAWAY).
        let mut idle_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(CLOSE_POLL).await;
            let now = Instant::now();
            let (started, finished) = self.activity.counts();
            match (started == finished, idle_since) {
                (false, _) => idle_since = None,
                (true, None) => idle_since = Some(now),
                (true, Some(since)) if now >= since + CLOSE_GRACE => break,
                (true, Some(_)) => {}
            }
        }
        self.signal.raise(DROP);
    }
}

/// A 431 in the OpenAI shape for a head over [`MAX_HEADER_BYTES`]; `None`
/// (the usual case) after one pass over the headers, without allocating.
fn head_too_large(request: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    let size = request.headers().iter().fold(uri, |size, (name, value)| {
        size + name.as_str().len() + value.len() + 4
    });
    (size > MAX_HEADER_BYTES).then(|| {
        ApiError::headers_too_large(MAX_HEADER_BYTES)
            .into_response::<Bytes>()
            .map(responses::full)
    })
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: treat it as a stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The admin port: metrics, health, and the running snapshot's identity.
pub async fn admin(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    admin_response(&gateway, &request)
}

fn admin_response(gateway: &Gateway, request: &Request<Incoming>) -> Response<ResponseBody> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = {
                gateway.audit.publish(&gateway.metrics);
                Response::new(box_body(Full::new(Bytes::from(gateway.metrics.encode()))))
            };
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        // HEAD too, for probes; hyper sends the head without the body.
        (&Method::GET | &Method::HEAD, "/healthz") => responses::text(StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/readyz") => responses::readiness(gateway),
        (&Method::GET, "/config") => {
            // Identity and shape only: never credentials or key digests.
            let body = match gateway.runtime() {
                Some(runtime) => {
                    let config = &runtime.snapshot.config;
                    serde_json::json!({
                        "hash": runtime.snapshot.hash,
                        "gateway": format!("{}/{}", config.gateway.namespace, config.gateway.name),
                        "routes": config.routes.iter().map(|r| serde_json::json!({
                            "name": r.name, "models": r.aliases.iter().chain(&r.globs).collect::<Vec<_>>(),
                            "backends": r.backends.iter().map(|b| format!("{}/{}", config.providers[b.provider].name, b.model)).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "providers": config.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
                    })
                }
                None => serde_json::json!({"hash": null}),
            };
            let mut response = Response::new(box_body(Full::new(Bytes::from(body.to_string()))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        (&Method::GET, "/v1/usage") => usage_report(gateway, request.uri().query().unwrap_or("")),
        (method, path @ ("/healthz" | "/readyz")) => method_not_allowed(method, path, "GET, HEAD"),
        (method, path @ ("/metrics" | "/config" | "/v1/usage")) => {
            method_not_allowed(method, path, "GET")
        }
        (_, path) => ApiError::not_found(path)
            .into_response::<Full<Bytes>>()
            .map(box_body),
    }
}

/// `GET /v1/usage?group_by=team,app&window=day`: this process's cost and
/// tokens by principal (and route, provider, model), costliest first.
fn usage_report(gateway: &Gateway, query: &str) -> Response<ResponseBody> {
    use crate::usage::{Dimension, window_hours};
    let mut group_by = "team".to_string();
    let mut window = "day".to_string();
    for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
        match name {
            "group_by" => group_by = value.to_string(),
            "window" => window = value.to_string(),
            _ => {}
        }
    }
    let bad = |message: String| {
        ApiError::invalid_request("invalid_query", message)
            .into_response::<Full<Bytes>>()
            .map(box_body)
    };
    let Some(dimensions) = group_by
        .split(',')
        .map(|d| Dimension::parse(d.trim()))
        .collect::<Option<Vec<_>>>()
    else {
        return bad(format!(
            "group_by {group_by:?}: use user, team, app, key, route, provider or model, comma separated"
        ));
    };
    let Some(hours) = window_hours(&window) else {
        return bad(format!("window {window:?}: use hour, day, week or month"));
    };
    let (groups, total, dropped) =
        gateway
            .usage
            .report(&dimensions, hours, crate::state::window::now_ms());
    let body = serde_json::json!({
        "window": window,
        "groupBy": group_by.split(',').map(str::trim).collect::<Vec<_>>(),
        "groups": groups,
        "total": total,
        "unrecorded": dropped,
    });
    let mut response = Response::new(box_body(Full::new(Bytes::from(body.to_string()))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 405 in the OpenAI shape with the `Allow` header (RFC 9110 requires it).
pub fn method_not_allowed(
    method: &Method,
    path: &str,
    allow: &'static str,
) -> Response<ResponseBody> {
    with_allow(
        ApiError::method_not_allowed(method, path)
            .into_response::<Bytes>()
            .map(responses::full),
        allow,
    )
}

/// Adds `Allow: allow` to a 405.
pub fn with_allow(
    mut response: Response<ResponseBody>,
    allow: &'static str,
) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
