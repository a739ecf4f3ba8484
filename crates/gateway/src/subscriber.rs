//! Controller mode's IO edge: subscribe to the Tollgate controller (HTTP/2
//! over TLS, protocol in [`tollgate_config::push`]), install each snapshot it
//! pushes and acknowledge the version this pod runs.
//!
//! While disconnected the gateway keeps serving its last snapshot; it is
//! never uninstalled. The retry schedule ([`Backoff`]) is pure.

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tollgate_config::Snapshot;
use tollgate_config::push::{
    self, FrameError, GatewayMessage, LineBuffer, LineTooLong, ProviderCircuit, Received,
    STREAM_IDLE_TIMEOUT,
};
use tollgate_config::snapshot::{SnapshotError, short_hash as short};

use crate::metrics::ReloadLabels;
use crate::providers::http::error_chain;
use crate::runtime::{Gateway, Runtime};

/// First retry delay; doubles per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// After a stream the controller ended on purpose (re-authentication): come
/// back almost at once, without hammering a controller that closes in a loop.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// Bounds TCP connect, TLS and HTTP/2 handshakes and the response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find a dead peer even when heartbeats are not due yet.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A snapshot is one line; a bigger one is a runaway peer.
const MAX_LINE: usize = 256 * 1024 * 1024;
/// Error answers are small JSON objects.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Least time between two reports brought forward by breaker changes.
const MIN_REPORT_GAP: Duration = Duration::from_secs(1);

/// Where the controller is: an `https://host[:port]` URL without a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerUrl {
    /// Host without IPv6 brackets, for DNS and the TLS server name.
    host: String,
    port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidUrl {
    #[error("not a URL: {0}")]
    Syntax(String),
    #[error("the controller URL must use https")]
    NotHttps,
    #[error("the controller URL has no host")]
    NoHost,
    #[error("the controller URL must not have a path or query (the subscribe path is fixed)")]
    HasPath,
}

impl FromStr for ControllerUrl {
    type Err = InvalidUrl;

    fn from_str(text: &str) -> Result<Self, InvalidUrl> {
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| InvalidUrl::Syntax(e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(InvalidUrl::NotHttps);
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(InvalidUrl::NoHost)?;
        let path_and_query = uri.path_and_query().map_or("", |p| p.as_str());
        if !matches!(path_and_query, "" | "/") {
            return Err(InvalidUrl::HasPath);
        }
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(443),
        })
    }
}

impl ControllerUrl {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ControllerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

/// `namespace/name` of an AIGateway; a bare name is in `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayId {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected `name` or `namespace/name`, got {0:?}")]
pub struct InvalidGatewayId(String);

impl FromStr for GatewayId {
    type Err = InvalidGatewayId;

    fn from_str(text: &str) -> Result<Self, InvalidGatewayId> {
        let (namespace, name) = text
            .split_once('/')
            .unwrap_or((tollgate_config::resources::DEFAULT_NAMESPACE, text));
        let valid = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains(char::is_whitespace);
        if valid(namespace) && valid(name) {
            Ok(Self {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        } else {
            Err(InvalidGatewayId(text.to_string()))
        }
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub url: ControllerUrl,
    pub gateway: GatewayId,
    /// The projected ServiceAccount token; re-read on every connect because
    /// the kubelet rotates it.
    pub token_file: PathBuf,
    /// CAs to trust for the controller (re-read on every connect); the
    /// system roots when absent.
    pub ca_file: Option<PathBuf>,
    pub pod_name: String,
}

/// Ports bound from the spec defaults because no flag chose them; a snapshot
/// asking for other ports gets a warning (they apply only on restart).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultedPorts {
    pub data: Option<u16>,
    pub admin: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("cannot read the token file {}: {source}", path.display())]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {} is empty", .0.display())]
    EmptyToken(PathBuf),
    #[error("the token is not a valid header value")]
    TokenHeader,
    #[error("the pod name {0:?} is not a valid header value")]
    PodName(String),
    #[error("cannot read the controller CA file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no usable certificate in the controller CA file {}", .0.display())]
    NoCertificates(PathBuf),
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {host} failed: {source}")]
    Handshake {
        host: String,
        source: std::io::Error,
    },
    #[error("the controller did not negotiate HTTP/2 (ALPN h2)")]
    NoHttp2,
    #[error("no answer from the controller within {0:?}")]
    ConnectTimeout(Duration),
    #[error("cannot build the subscribe request: {0}")]
    Request(#[from] http::Error),
    #[error("HTTP/2: {0}")]
    Http(String),
    #[error("the controller refused the subscription with {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("no message from the controller for {0:?}")]
    Idle(Duration),
    #[error("the controller sent a {0}")]
    LineTooLong(#[from] LineTooLong),
}

impl From<hyper::Error> for SubscribeError {
    fn from(error: hyper::Error) -> Self {
        // hyper's own message is terse ("connection error"); keep the causes.
        Self::Http(error_chain(&error))
    }
}

/// Checks what cannot get better by retrying, before the gateway starts.
pub fn validate(options: &ControllerOptions) -> Result<(), SubscribeError> {
    HeaderValue::from_str(&options.pod_name)
        .map(drop)
        .map_err(|_| SubscribeError::PodName(options.pod_name.clone()))
}

/// What one finished session tells the retry schedule.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionReport {
    /// At least one complete message arrived on a 200 stream.
    pub received_any: bool,
    /// A snapshot arrived (applied or not): the controller is reachable and
    /// accepts us, so earlier failures are forgotten.
    pub received_snapshot: bool,
    /// The controller ended the stream itself, without an error.
    pub ended_cleanly: bool,
}

/// Exponential backoff with full jitter (AWS's "full jitter": a uniform draw
/// below the ceiling), so a fleet restarted together does not reconnect in
/// lockstep.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next attempt; `unit` is a uniform draw in [0, 1).
    pub fn next_delay(&mut self, report: SessionReport, unit: f64) -> Duration {
        if report.received_snapshot {
            self.failures = 0;
        }
        if report.ended_cleanly && report.received_any {
            return RECONNECT_DELAY;
        }
        let ceiling = self.ceiling();
        // Capped so the exponent never overflows; the ceiling is long at its maximum by then.
        self.failures = (self.failures + 1).min(16);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The upper bound of the next failure's delay.
    pub fn ceiling(&self) -> Duration {
        BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(BACKOFF_MAX)
    }
}

/// Subscribes until `stop` flips to true, reconnecting with [`Backoff`].
pub async fn run(
    options: ControllerOptions,
    gateway: Arc<Gateway>,
    ports: DefaultedPorts,
    mut stop: watch::Receiver<bool>,
) {
    let subscriber = Subscriber {
        system_roots: options
            .ca_file
            .is_none()
            .then(crate::providers::http::root_store),
        options,
        gateway,
        ports,
    };
    tracing::info!(
        controller = %subscriber.options.url,
        gateway = %subscriber.options.gateway,
        pod = %subscriber.options.pod_name,
        "subscribing to the controller"
    );
    let mut backoff = Backoff::default();
    loop {
        let mut report = SessionReport::default();
        let result = tokio::select! {
            result = subscriber.session(&mut report) => result,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let delay = backoff.next_delay(report, rand::random::<f64>());
        match result {
            Ok(()) => {
                tracing::info!(retry_in = ?delay, "the controller ended the stream; reconnecting")
            }
            Err(error) => {
                tracing::warn!(retry_in = ?delay, "controller subscription failed: {error}")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

struct Subscriber {
    options: ControllerOptions,
    gateway: Arc<Gateway>,
    ports: DefaultedPorts,
    /// Loaded once; `None` when a CA file replaces them.
    system_roots: Option<rustls::RootCertStore>,
}

impl Subscriber {
    /// One connection: connect, subscribe, apply snapshots until the stream
    /// ends. `Ok` means the controller ended it cleanly.
    async fn session(&self, report: &mut SessionReport) -> Result<(), SubscribeError> {
        let token = read_token(&self.options.token_file)?;
        let (acks, ack_body) = mpsc::unbounded_channel();
        let (response, _driver) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.subscribe(&token, AckBody(ack_body)))
                .await
                .map_err(|_| SubscribeError::ConnectTimeout(CONNECT_TIMEOUT))??;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Limited::new(response.into_body(), MAX_ERROR_BODY).collect(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
            return Err(refusal(status, &body));
        }
        let _connected = Connected::new(&self.gateway);
        // The controller records alerts and calls webhooks, once for all replicas.
        self.gateway.alerts.set_controller_delivers(true);
        tracing::info!(controller = %self.options.url, "connected to the controller");
        let mut body = response.into_body();
        let mut lines = LineBuffer::default();
        let mut usage_due = tokio::time::interval(push::USAGE_INTERVAL);
        usage_due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What this session last reported of the circuits: the controller
        // forgets a replica's report when its stream ends.
        let mut circuits_sent = Vec::new();
        let mut last_report = tokio::time::Instant::now();
        // The idle deadline moves only when the controller sends something,
        // not when a usage report interrupts the wait.
        let mut idle_deadline = tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT;
        loop {
            let next = tokio::select! {
                frame = tokio::time::timeout_at(idle_deadline, body.frame()) => frame,
                _ = usage_due.tick() => {
                    last_report = tokio::time::Instant::now();
                    if let Some(report) = self.usage_report(&mut circuits_sent).await {
                        let _ = acks.send(Bytes::from(push::gateway_frame(&report)));
                    }
                    continue;
                }
                () = self.gateway.provider_health.changed().notified() => {
                    // A breaker changed: report it now rather than at the next
                    // tick, but no more than once per MIN_REPORT_GAP however
                    // often breakers flap.
                    usage_due.reset_at(last_report + MIN_REPORT_GAP);
                    continue;
                }
            };
            let frame = match next {
                Err(_) => return Err(SubscribeError::Idle(STREAM_IDLE_TIMEOUT)),
                Ok(None) => {
                    report.ended_cleanly = true;
                    return Ok(());
                }
                Ok(Some(frame)) => frame?,
            };
            idle_deadline = tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT;
            // Trailers carry nothing for us.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for line in lines.push(&data, MAX_LINE)? {
                report.received_any = true;
                if let Some(ack) = self.handle_line(&line, report) {
                    // Only fails once the connection is gone; the next one re-acks.
                    let _ = acks.send(Bytes::from(push::gateway_frame(&ack)));
                }
            }
        }
    }

    /// The usage of the running snapshot's budgets, the alerts raised since
    /// the last report (budgets' and MCP agents') and the providers whose
    /// breaker is not closed, if there is any of them or the circuits
    /// changed since `circuits_sent` (which is updated).
    async fn usage_report(
        &self,
        circuits_sent: &mut Vec<ProviderCircuit>,
    ) -> Option<GatewayMessage> {
        let runtime = self.gateway.runtime()?;
        let config = &runtime.snapshot.config;
        let budgets: Vec<&str> = config.budgets.iter().map(|b| &*b.name).collect();
        let alerts = self.gateway.alerts.drain();
        let mut circuits = self
            .gateway
            .provider_health
            .circuits(&config.providers, std::time::Instant::now());
        circuits.truncate(push::MAX_REPORTED_CIRCUITS);
        // While one is not closed, every report repeats it; once all are
        // closed, one report says so and then nothing more.
        let circuits_due = !circuits.is_empty() || circuits != *circuits_sent;
        circuits_sent.clone_from(&circuits);
        if budgets.is_empty() {
            return (!alerts.is_empty() || circuits_due).then_some(GatewayMessage::Usage {
                shared: false,
                counters: Vec::new(),
                alerts,
                circuits,
            });
        }
        let (shared, counters) = runtime
            .budget_store
            .usage(&budgets, push::MAX_REPORTED_COUNTERS)
            .await;
        Some(GatewayMessage::Usage {
            shared,
            counters,
            alerts,
            circuits,
        })
    }

    /// TCP, TLS (ALPN h2), HTTP/2 handshake and the subscribe request, up to
    /// the response head. The returned guard keeps the connection driven.
    async fn subscribe(
        &self,
        token: &str,
        body: AckBody,
    ) -> Result<(http::Response<Incoming>, AbortOnDrop), SubscribeError> {
        let url = &self.options.url;
        let tls = tokio_rustls::TlsConnector::from(self.tls_config()?);
        let server_name = ServerName::try_from(url.host.clone())
            .map_err(|_| SubscribeError::ServerName(url.host.clone()))?;
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|source| SubscribeError::Connect {
                addr: url.authority(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream =
            tls.connect(server_name, tcp)
                .await
                .map_err(|source| SubscribeError::Handshake {
                    host: url.host.clone(),
                    source,
                })?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(SubscribeError::NoHttp2);
        }
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEP_ALIVE)
                .keep_alive_timeout(KEEP_ALIVE)
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(stream))
                .await?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("controller connection ended: {}", error_chain(&error));
            }
        }));
        let gateway = &self.options.gateway;
        let uri = format!(
            "{url}{}",
            push::subscribe_path(&gateway.namespace, &gateway.name)
        );
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| SubscribeError::TokenHeader)?;
        authorization.set_sensitive(true);
        let request = Request::post(uri)
            .header(header::AUTHORIZATION, authorization)
            .header(push::POD_HEADER, &self.options.pod_name)
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)?;
        let response = sender.send_request(request).await?;
        Ok((response, driver))
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, SubscribeError> {
        let roots = match (&self.options.ca_file, &self.system_roots) {
            (Some(path), _) => load_ca(path)?,
            (None, Some(roots)) => roots.clone(),
            (None, None) => crate::providers::http::root_store(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// One line from the controller → the acknowledgement to send, if any.
    fn handle_line(&self, line: &[u8], report: &mut SessionReport) -> Option<GatewayMessage> {
        let received = std::time::Instant::now();
        match push::decode_server_line(line) {
            Ok(Received::Heartbeat) => None,
            Ok(Received::Snapshot(snapshot)) => {
                report.received_snapshot = true;
                Some(self.apply(*snapshot, received))
            }
            Err(error) => {
                self.count("rejected");
                let hash = claimed_hash(line, &error);
                tracing::error!(
                    hash = hash.as_deref().map(short),
                    "configuration rejected, still serving the previous version: {error}"
                );
                hash.map(|hash| GatewayMessage::Rejected {
                    hash,
                    error: error.to_string(),
                })
            }
        }
    }

    /// Validates, builds and swaps in one snapshot; never uninstalls the
    /// current one on failure.
    fn apply(&self, snapshot: Snapshot, received: std::time::Instant) -> GatewayMessage {
        let hash = snapshot.hash.clone();
        let reject = |error: String| {
            self.count("rejected");
            tracing::error!(
                hash = short(&hash),
                "configuration rejected, still serving the previous version: {error}"
            );
            GatewayMessage::Rejected {
                hash: hash.clone(),
                error,
            }
        };
        let wanted = &self.options.gateway;
        let got = &snapshot.config.gateway;
        if got.namespace != wanted.namespace || got.name != wanted.name {
            return reject(format!(
                "the snapshot is for gateway {}/{}, this pod serves {wanted}",
                got.namespace, got.name
            ));
        }
        let current = self.gateway.runtime();
        if current.is_some_and(|c| c.snapshot.hash == hash) {
            self.count("unchanged");
            return GatewayMessage::Applied { hash };
        }
        if let Some(warning) = port_warning(&snapshot, self.ports) {
            tracing::warn!("{warning}");
        }
        let routes = snapshot.config.routes.len();
        match Runtime::build(snapshot, &self.gateway) {
            Ok(runtime) => {
                self.gateway.install(runtime);
                self.count("applied");
                // `took`: decode, hash check and build, from the complete line.
                tracing::info!(hash = short(&hash), routes, took = ?received.elapsed(), "configuration applied");
                GatewayMessage::Applied { hash }
            }
            Err(error) => reject(error.to_string()),
        }
    }

    fn count(&self, result: &'static str) {
        self.gateway
            .metrics
            .reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }
}

fn read_token(path: &Path) -> Result<String, SubscribeError> {
    let token = std::fs::read_to_string(path).map_err(|source| SubscribeError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(SubscribeError::EmptyToken(path.to_path_buf()));
    }
    Ok(token.to_string())
}

fn load_ca(path: &Path) -> Result<rustls::RootCertStore, SubscribeError> {
    let pem = std::fs::read(path).map_err(|source| SubscribeError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    // Unparsable blocks are skipped; a bundle with nothing usable is an error.
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(SubscribeError::NoCertificates(path.to_path_buf()));
    }
    Ok(roots)
}

/// The hash a broken snapshot message claims, so the controller learns which
/// version was refused; `None` when the line does not even say.
fn claimed_hash(line: &[u8], error: &FrameError) -> Option<String> {
    if let FrameError::Snapshot(SnapshotError::HashMismatch { claimed, .. }) = error {
        return Some(claimed.clone());
    }
    #[derive(Deserialize)]
    struct Message {
        snapshot: Option<Claimed>,
    }
    #[derive(Deserialize)]
    struct Claimed {
        hash: String,
    }
    serde_json::from_slice::<Message>(line)
        .ok()?
        .snapshot
        .map(|s| s.hash)
}

/// A non-200 answer as an error; the body is `{"error":{"code","message"}}`
/// when the controller wrote it, anything else is quoted (shortened).
fn refusal(status: StatusCode, body: &[u8]) -> SubscribeError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => (error.code, error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            (String::new(), text.chars().take(200).collect())
        }
    };
    SubscribeError::Refused {
        status: status.as_u16(),
        code,
        message,
    }
}

fn port_warning(snapshot: &Snapshot, ports: DefaultedPorts) -> Option<String> {
    let config = &snapshot.config;
    let differs = |bound: Option<u16>, wanted: u16| bound.is_some_and(|b| b != 0 && b != wanted);
    (differs(ports.data, config.listener_port) || differs(ports.admin, config.admin_port)).then(
        || {
            format!(
                "the AIGateway asks for ports {}/{} but this pod listens on the defaults; \
                 pass --listen/--admin-listen (ports apply only at start)",
                config.listener_port, config.admin_port
            )
        },
    )
}

/// The request body: acknowledgements as they are queued; open for the
/// connection's life.
struct AckBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for AckBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|ack| ack.map(|b| Ok(Frame::data(b))))
    }
}

/// The HTTP/2 connection task ends with the session that owns it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `tollgate_controller_connected` is 1 while a 200 stream is open.
struct Connected<'a>(&'a Gateway);

impl<'a> Connected<'a> {
    fn new(gateway: &'a Gateway) -> Self {
        gateway.metrics.controller_connected.set(1);
        Self(gateway)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.metrics.controller_connected.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::push::CircuitState;

    const FAILED: SessionReport = SessionReport {
        received_any: false,
        received_snapshot: false,
        ended_cleanly: false,
    };

    #[test]
    fn backoff_doubles_to_its_cap_within_full_jitter() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<Duration> = (0..10)
            .map(|_| {
                let ceiling = backoff.ceiling();
                assert_eq!(
                    backoff.next_delay(FAILED, 0.999_999),
                    ceiling.mul_f64(0.999_999)
                );
                ceiling
            })
            .collect();
        let ms: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [
                200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000, 10_000
            ]
        );
        // A zero draw waits not at all; the cap still holds after many failures.
        for _ in 0..100 {
            assert_eq!(backoff.next_delay(FAILED, 0.0), Duration::ZERO);
        }
        assert_eq!(backoff.ceiling(), BACKOFF_MAX);
        assert!(
            backoff.next_delay(FAILED, 7.0) <= BACKOFF_MAX,
            "a bad draw is clamped"
        );
    }

    #[test]
    fn a_delivered_snapshot_resets_the_backoff() {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.next_delay(FAILED, 0.5);
        }
        assert_eq!(backoff.ceiling(), Duration::from_millis(6400));
        let broke_after_a_snapshot = SessionReport {
            received_any: true,
            received_snapshot: true,
            ended_cleanly: false,
        };
        assert!(backoff.next_delay(broke_after_a_snapshot, 1.0) <= BACKOFF_BASE);
        assert_eq!(backoff.ceiling(), Duration::from_millis(400));
    }

    #[test]
    fn a_clean_end_reconnects_quickly_but_an_empty_one_backs_off() {
        let mut backoff = Backoff::default();
        let clean = SessionReport {
            received_any: true,
            received_snapshot: false,
            ended_cleanly: true,
        };
        for _ in 0..3 {
            backoff.next_delay(FAILED, 0.0);
        }
        assert_eq!(backoff.next_delay(clean, 0.9), RECONNECT_DELAY);
        assert_eq!(
            backoff.ceiling(),
            Duration::from_millis(1600),
            "heartbeats alone do not forgive failures"
        );
        let empty = SessionReport {
            ended_cleanly: true,
            ..FAILED
        };
        assert_eq!(
            backoff.next_delay(empty, 1.0),
            Duration::from_millis(1600),
            "a stream closed before any message is a failure"
        );
    }

    #[test]
    fn controller_urls() {
        let url: ControllerUrl = "https://tollgate-controller.tollgate-system.svc:8443"
            .parse()
            .unwrap();
        assert_eq!(url.host, "tollgate-controller.tollgate-system.svc");
        assert_eq!(url.port, 8443);
        let url: ControllerUrl = "https://127.0.0.1/".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 443));
        let url: ControllerUrl = "https://[::1]:9443".parse().unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.to_string(), "https://[::1]:9443");
        assert!(
            ServerName::try_from(url.host.clone()).is_ok(),
            "IPs are server names"
        );
        assert_eq!(
            "http://controller:8443".parse::<ControllerUrl>(),
            Err(InvalidUrl::NotHttps)
        );
        assert_eq!(
            "https://controller/api".parse::<ControllerUrl>(),
            Err(InvalidUrl::HasPath)
        );
        assert!(matches!(
            "https:// bad".parse::<ControllerUrl>(),
            Err(InvalidUrl::Syntax(_))
        ));
        assert_eq!(
            "controller:8443".parse::<ControllerUrl>(),
            Err(InvalidUrl::NotHttps)
        );
    }

    #[test]
    fn gateway_ids() {
        let id: GatewayId = "team-a/gw".parse().unwrap();
        assert_eq!((id.namespace.as_str(), id.name.as_str()), ("team-a", "gw"));
        assert_eq!("gw".parse::<GatewayId>().unwrap().to_string(), "default/gw");
        for bad in ["", "/gw", "team-a/", "a/b/c", "a b"] {
            assert!(bad.parse::<GatewayId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_quote_the_controllers_error() {
        let error = refusal(
            StatusCode::FORBIDDEN,
            br#"{"error":{"code":"forbidden","message":"token is for team-b/gw"}}"#,
        );
        assert_eq!(
            error.to_string(),
            "the controller refused the subscription with 403 forbidden: token is for team-b/gw"
        );
        let error = refusal(StatusCode::BAD_GATEWAY, &[b'x'; 1000]);
        let SubscribeError::Refused {
            status, message, ..
        } = error
        else {
            panic!("a refusal");
        };
        assert_eq!((status, message.len()), (502, 200));
    }

    #[test]
    fn the_claimed_hash_of_a_broken_snapshot_is_reported() {
        let mismatch = FrameError::Snapshot(SnapshotError::HashMismatch {
            claimed: "abc".into(),
            actual: "def".into(),
        });
        assert_eq!(claimed_hash(b"{}", &mismatch).as_deref(), Some("abc"));
        let line = br#"{"type":"snapshot","snapshot":{"hash":"h1","config":{"surprise":1}}}"#;
        let error = push::decode_server_line(line).unwrap_err();
        assert_eq!(claimed_hash(line, &error).as_deref(), Some("h1"));
        let error = push::decode_server_line(b"not json").unwrap_err();
        assert_eq!(claimed_hash(b"not json", &error), None);
    }

    #[test]
    fn tokens_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc.def \n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "abc.def");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_token(&path),
            Err(SubscribeError::EmptyToken(_))
        ));
        assert!(matches!(
            read_token(&dir.path().join("missing")),
            Err(SubscribeError::Token { .. })
        ));
    }

    /// A subscriber of a gateway serving providers `up` and `down`.
    fn subscriber_serving_two_providers(dir: &Path) -> Subscriber {
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: up}
spec: {type: Mock, endpoint: "http://127.0.0.1:9/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: down}
spec: {type: Mock, endpoint: "http://127.0.0.1:9/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: chat}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends: [{providerRef: {name: down}, model: m}, {providerRef: {name: up}, model: m}]
"#,
        )
        .unwrap();
        let (snapshot, _) = crate::standalone::compile_files(
            &[path],
            None,
            &tollgate_config::DigestKey::generate(),
        )
        .unwrap();
        let gateway = Arc::new(Gateway::new(
            crate::providers::http::Clients::new().unwrap(),
        ));
        gateway.install(Runtime::build(snapshot, &gateway).unwrap());
        Subscriber {
            options: ControllerOptions {
                url: "https://127.0.0.1:1".parse().unwrap(),
                gateway: "gw".parse().unwrap(),
                token_file: dir.join("token"),
                ca_file: None,
                pod_name: "pod-1".into(),
            },
            gateway,
            ports: DefaultedPorts::default(),
            system_roots: None,
        }
    }

    fn reported_circuits(report: Option<GatewayMessage>) -> Option<Vec<(String, CircuitState)>> {
        match report? {
            GatewayMessage::Usage { circuits, .. } => Some(
                circuits
                    .into_iter()
                    .map(|c| (c.provider, c.state))
                    .collect(),
            ),
            other => panic!("expected a usage report, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reports_name_providers_while_their_circuit_is_not_closed() {
        use crate::breaker::Policy;
        let dir = tempfile::tempdir().unwrap();
        let subscriber = subscriber_serving_two_providers(dir.path());
        let gateway = subscriber.gateway.clone();
        let runtime = gateway.runtime().unwrap();
        let provider = |name: &str| {
            runtime
                .snapshot
                .config
                .providers
                .iter()
                .find(|p| &*p.name == name)
                .unwrap()
                .clone()
        };
        let (down, up) = (provider("down"), provider("up"));
        let health = &gateway.provider_health;
        let mut sent = Vec::new();
        assert_eq!(
            subscriber.usage_report(&mut sent).await,
            None,
            "no budgets, no alerts, all closed: nothing to say"
        );

        let policy = Policy {
            consecutive: 2,
            open_for: Duration::from_secs(600),
            ..Policy::default()
        };
        let now = std::time::Instant::now();
        health.record(&up, &policy, false, now);
        assert_eq!(
            reported_circuits(subscriber.usage_report(&mut sent).await),
            None,
            "one failure leaves the circuit closed"
        );
        health.record(&down, &policy, false, now);
        health.record(&down, &policy, false, now);
        tokio::time::timeout(Duration::from_secs(1), health.changed().notified())
            .await
            .expect("a transition wakes the session");
        let open = vec![("down".to_string(), CircuitState::Open)];
        assert_eq!(
            reported_circuits(subscriber.usage_report(&mut sent).await),
            Some(open.clone())
        );
        assert_eq!(
            reported_circuits(subscriber.usage_report(&mut sent).await),
            Some(open),
            "repeated while open"
        );

        // The probe succeeds: one report without it, then silence.
        health.record(&down, &policy, true, now);
        assert_eq!(
            reported_circuits(subscriber.usage_report(&mut sent).await),
            Some(Vec::new())
        );
        assert_eq!(subscriber.usage_report(&mut sent).await, None);

        // Open for a moment only: half-open once it has passed.
        let brief = Policy {
            consecutive: 1,
            open_for: Duration::from_millis(1),
            ..Policy::default()
        };
        health.record(&up, &brief, false, std::time::Instant::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let report = subscriber.usage_report(&mut sent).await;
        let frame = String::from_utf8(push::gateway_frame(report.as_ref().unwrap())).unwrap();
        assert!(
            frame.contains(r#""circuits":[{"provider":"up","state":"halfOpen"}]"#),
            "{frame}"
        );

        // A new session starts from nothing: what is open is reported again.
        let mut fresh = Vec::new();
        assert!(subscriber.usage_report(&mut fresh).await.is_some());
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(matches!(
            load_ca(&path),
            Err(SubscribeError::NoCertificates(_))
        ));
    }
}
