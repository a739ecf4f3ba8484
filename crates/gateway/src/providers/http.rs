//! HTTP to providers: pooled keep-alive connections (HTTP/1.1 and HTTP/2 by
//! ALPN), TLS by rustls, connect and request deadlines, the registry of
//! per-provider concurrency limiters.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::time::Instant;
use tollgate_config::egress::EgressPolicy;

use super::fair::FairLimiter;

pub type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The system resolver with the SSRF guard: addresses the provider's
/// [`EgressPolicy`] refuses are dropped, and a name left with none fails
/// (so a name that resolves to 169.254.169.254, now or after a DNS change,
/// is never connected to). IP-literal endpoints are checked at compile time.
#[derive(Clone)]
pub struct GuardedResolver {
    system: GaiResolver,
    policy: EgressPolicy,
}

/// A name that resolved only to addresses the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} resolves only to {what}, refused by the SSRF guard (set {field} on the ModelProvider to allow it)"
)]
pub struct Refused {
    name: String,
    what: &'static str,
    field: &'static str,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.system.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        let host = name.as_str().to_string();
        let lookup = self.system.call(name);
        Box::pin(async move { Ok(admit(&host, lookup.await?, policy)?.into_iter()) })
    }
}

/// The addresses of `host` that `policy` allows; `Err` when it resolved
/// only to refused ones.
fn admit(
    host: &str,
    resolved: impl Iterator<Item = SocketAddr>,
    policy: EgressPolicy,
) -> Result<Vec<SocketAddr>, Refused> {
    let mut refused = None;
    let allowed: Vec<SocketAddr> = resolved
        .filter(|address| match policy.check(address.ip()) {
            Ok(()) => true,
            Err(class) => {
                refused = Some(class);
                false
            }
        })
        .collect();
    match refused {
        Some(class) if allowed.is_empty() => {
            let (what, field) = class.describe();
            Err(Refused {
                name: host.to_string(),
                what,
                field,
            })
        }
        _ => Ok(allowed),
    }
}

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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(std::io::Error::other(e)))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LazyWebPki {
                provider,
                verifier: OnceLock::new(),
            }))
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(config),
        })
    }

    fn build(&self, connect_timeout: Duration, policy: EgressPolicy) -> HttpClient {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            system: GaiResolver::new(),
            policy,
        });
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
    in_flight: std::sync::Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU32>>>,
}

impl PermitRegistry {
    /// The count of `provider`'s requests in flight on this replica, kept
    /// across reloads like the limiters (requests started before a reload
    /// still count, and still subtract themselves when done).
    pub fn in_flight(&self, provider: &str) -> Arc<std::sync::atomic::AtomicU32> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(provider.to_string()).or_default().clone()
    }

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
    /// This thread's connection pools, by connect timeout in milliseconds
    /// and egress policy.
    static POOLS: RefCell<HashMap<(u64, EgressPolicy), HttpClient>> = RefCell::new(HashMap::new());
}

/// rustls's WebPKI verifier on [`root_store`], built at the first TLS
/// handshake: reading and parsing the system's CA bundle costs memory and
/// start-up time that a gateway whose providers are all plain HTTP (a mock,
/// a local model server, a sidecar) would pay for nothing. Every check is
/// the WebPKI verifier's own.
#[derive(Debug)]
struct LazyWebPki {
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, VerifierBuilderError>>,
}

impl LazyWebPki {
    fn verifier(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        let built = self.verifier.get_or_init(|| {
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store()),
                self.provider.clone(),
            )
            .build()
        });
        match built {
            Ok(verifier) => Ok(verifier),
            Err(error) => Err(rustls::Error::General(format!(
                "no TLS root certificates: {error}"
            ))),
        }
    }
}

impl ServerCertVerifier for LazyWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // The WebPKI verifier's schemes are its provider's: no roots needed.
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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
    /// This thread's pooled client for `connect_timeout_ms` and `policy`.
    pub fn pooled(&self, connect_timeout_ms: u64, policy: EgressPolicy) -> HttpClient {
        POOLS.with(|pools| {
            pools
                .borrow_mut()
                .entry((connect_timeout_ms, policy))
                .or_insert_with(|| self.build(Duration::from_millis(connect_timeout_ms), policy))
                .clone()
        })
    }
}

/// Sends `request` and waits for the response head until `deadline`.
/// `url` parsed, with its host as written checked against `policy`: the
/// resolver applies the policy to names, so an address literal
/// (`169.254.169.254`) is checked here.
pub fn reachable_uri(url: &str, policy: EgressPolicy) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    policy
        .check_host(uri.host().unwrap_or_default())
        .map_err(|class| format!("{} may not be reached", class.describe().0))?;
    Ok(uri)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_guard_drops_refused_addresses_and_fails_when_none_are_left() {
        let strict = EgressPolicy::default();
        let mixed = addrs(&["169.254.169.254:80", "10.0.0.7:80"]);
        assert_eq!(
            admit("rebind.example", mixed.into_iter(), strict).unwrap(),
            addrs(&["10.0.0.7:80"])
        );
        let error = admit(
            "meta.example",
            addrs(&["169.254.169.254:80"]).into_iter(),
            strict,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("meta.example resolves only to a link-local or cloud metadata address")
                && error.contains("network.allowLinkLocal"),
            "{error}"
        );
        assert!(admit("lo.example", addrs(&["[::1]:80"]).into_iter(), strict).is_err());
        let open = EgressPolicy {
            allow_loopback: true,
            ..strict
        };
        assert_eq!(
            admit("lo.example", addrs(&["127.0.0.1:80"]).into_iter(), open).unwrap(),
            addrs(&["127.0.0.1:80"])
        );
    }
}
