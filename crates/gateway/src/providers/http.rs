//! HTTP to providers: pooled keep-alive connections (HTTP/1.1 and HTTP/2 by
//! ALPN), TLS by rustls, connect and request deadlines, the registry of
//! per-provider concurrency limiters.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::fair::FairLimiter;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not reach the provider: {0}")]
    Connect(String),
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("invalid provider URL {0}")]
    BadUrl(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no TLS root certificates available: {0}")]
    Tls(std::io::Error),
}

/// Builds upstream HTTP clients. Each worker thread keeps its own pools (see
/// [`Upstream::client`]), so a request never wakes another thread; pools are
/// keyed by connect timeout and outlive snapshots, so a reload keeps the warm
/// connections.
#[derive(Clone)]
pub struct Clients {
    tls: Arc<rustls::ClientConfig>,
}

impl Clients {
    pub fn new() -> Result<Self, ClientError> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(std::io::Error::other(e)))?
        .with_root_certificates(root_store())
        .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(config),
        })
    }

    fn build(&self, connect_timeout: Duration) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https)
    }
}

/// Per-provider concurrency limiters that outlive snapshots, so a reload
/// does not hand out a fresh cap while old requests still hold slots.
#[derive(Default)]
pub struct PermitRegistry {
    by_provider: std::sync::Mutex<HashMap<String, Arc<FairLimiter>>>,
}

impl PermitRegistry {
    /// The limiter for `provider` with `limit` slots and `max_share`; a
    /// changed limit or share starts a new one (requests holding slots of the
    /// old one finish undisturbed). `None` when the provider has no cap.
    pub fn get(
        &self,
        provider: &str,
        limit: Option<u32>,
        max_share: f64,
    ) -> Option<Arc<FairLimiter>> {
        let limit = limit?;
        let wanted = FairLimiter::new(limit, max_share);
        let mut map = self.by_provider.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(provider) {
            Some(current)
                if current.limit() == wanted.limit()
                    && current.share_cap() == wanted.share_cap() =>
            {
                Some(current.clone())
            }
            _ => {
                let limiter = Arc::new(wanted);
                map.insert(provider.to_string(), limiter.clone());
                Some(limiter)
            }
        }
    }
}

thread_local! {
    /// This thread's connection pools, by connect timeout in milliseconds.
    static POOLS: RefCell<HashMap<u64, HttpClient>> = RefCell::new(HashMap::new());
}

/// Native roots honour corporate CAs; the bundled set covers minimal images.
pub(crate) fn root_store() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

impl Clients {
    /// This thread's pooled client for `connect_timeout_ms`.
    pub fn pooled(&self, connect_timeout_ms: u64) -> HttpClient {
        POOLS.with(|pools| {
            pools
                .borrow_mut()
                .entry(connect_timeout_ms)
                .or_insert_with(|| self.build(Duration::from_millis(connect_timeout_ms)))
                .clone()
        })
    }
}

/// Sends `request` and waits for the response head until `deadline`.
pub async fn send(
    client: HttpClient,
    request: Request<Full<Bytes>>,
    deadline: Instant,
) -> Result<Response<Incoming>, UpstreamError> {
    match tokio::time::timeout_at(deadline, client.request(request)).await {
        Err(_) => Err(UpstreamError::Timeout),
        Ok(Err(e)) => Err(UpstreamError::Connect(error_chain(&e))),
        Ok(Ok(response)) => Ok(response),
    }
}

/// "error: cause: root cause", since hyper's top-level messages are terse.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
