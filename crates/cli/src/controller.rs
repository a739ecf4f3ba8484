//! `tollgate controller`: leader election, then the status and workload
//! loops and the configuration server gateways subscribe to; health and
//! metrics on `--metrics-listen`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, watch};
use tollgate_controller::distribution::Hub;
use tollgate_controller::leader::{LeaderConfig, LeaderElection};
use tollgate_controller::metrics::Metrics;
use tollgate_controller::workload::RenderSettings;
use tollgate_controller::{config_server, tls};
use tollgate_gateway::standalone::shutdown_signal;

#[derive(clap::Args)]
pub struct ControllerArgs {
    /// Image for gateway pods whose AIGateway names none.
    #[arg(
        long,
        env = "TOLLGATE_GATEWAY_IMAGE",
        default_value = "ghcr.io/tollgate-dev/tollgate:0.1.0"
    )]
    gateway_image: String,
    /// URL gateway pods use to reach this controller for configuration.
    #[arg(
        long,
        env = "TOLLGATE_CONTROLLER_URL",
        default_value = "https://tollgate-controller.tollgate-system.svc:8443"
    )]
    controller_url: String,
    /// Address for /healthz, /readyz and /metrics: loopback, and off the
    /// gateway's 8080, so a laptop can run both (the chart passes 0.0.0.0).
    #[arg(long, default_value = "127.0.0.1:9091")]
    metrics_listen: SocketAddr,
    /// Seconds between two probes of each MCPServer (reachability, tool
    /// counts, the catalog hash behind `CatalogChanged`).
    #[arg(long, env = "TOLLGATE_MCP_PROBE_INTERVAL_SECS", default_value_t = 30)]
    mcp_probe_interval_secs: u64,
    /// Namespace of the leader-election Lease; without it this replica
    /// assumes it is the only one.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "tollgate-controller")]
    leader_election_id: String,
    /// Address of the configuration server (HTTPS) gateway pods subscribe
    /// to: every interface by default, since the pods connect from other nodes.
    #[arg(long, default_value = "0.0.0.0:8443")]
    config_listen: SocketAddr,
    /// Secret holding the configuration server's CA and certificate; created
    /// (and renewed) by the controller when missing.
    #[arg(long, default_value = "tollgate-controller-tls")]
    tls_secret: String,
    /// Namespace of that Secret: the controller's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tollgate-system")]
    tls_secret_namespace: String,
    /// Extra DNS names or IP addresses for the certificate, beyond the
    /// `--controller-url` host.
    #[arg(long)]
    tls_san: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("lost leadership; exiting so a fresh process rejoins as a follower")]
    LostLeadership,
    #[error(transparent)]
    Tls(#[from] tollgate_controller::tls::TlsError),
    #[error(
        "the TLS Secret now holds a different CA than the one given to gateways; exiting so the next leader distributes it"
    )]
    CaChanged,
    #[error("--controller-url {0:?}: {1}")]
    ControllerUrl(String, String),
}

/// Set once this replica leads and its caches are running.
struct Health {
    leading: AtomicBool,
}

pub async fn run(args: ControllerArgs) -> Result<(), ControllerError> {
    let client = kube::Client::try_default().await?;
    let health = Arc::new(Health {
        leading: AtomicBool::new(false),
    });
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| ControllerError::Listen(args.metrics_listen, e))?;
    // The bound address, since `--metrics-listen` may ask for port 0.
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "health and metrics listening");
    }
    tokio::spawn(serve_health(listener, health.clone(), metrics.clone()));

    let (leading_tx, mut leading_rx) = watch::channel(false);
    let election = match &args.leader_election_namespace {
        Some(namespace) => {
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("tollgate-controller-{}", std::process::id()));
            let election = LeaderElection::new(
                client.clone(),
                LeaderConfig::new(
                    namespace.clone(),
                    args.leader_election_id.clone(),
                    identity.clone(),
                ),
            );
            tracing::info!(%identity, lease = %args.leader_election_id, %namespace, "waiting for leadership");
            tokio::spawn(election.clone().run(leading_tx));
            Some(election)
        }
        None => {
            tracing::info!("no --leader-election-namespace: running as the only replica");
            let _ = leading_tx.send(true);
            None
        }
    };
    tokio::select! {
        leading = leading_rx.wait_for(|leading| *leading) => {
            if leading.is_err() {
                return Ok(());
            }
        }
        () = shutdown_signal() => return Ok(()),
    }
    tracing::info!("leading: starting the status and workload loops and the config server");
    let result = lead(&args, client, &health, metrics, &mut leading_rx).await;
    health.leading.store(false, Ordering::Relaxed);
    if let Some(election) = election {
        // Hand over at once instead of making the successor wait out the lease.
        if let Err(error) = election.release().await {
            tracing::warn!(%error, "could not release the lease");
        }
    }
    result
}

/// The leader's work: certificate, config server, status and workload loops.
async fn lead(
    args: &ControllerArgs,
    client: kube::Client,
    health: &Health,
    metrics: Arc<Metrics>,
    leading_rx: &mut watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    // Gateways refuse a URL with a path or without https; fail here, loudly,
    // rather than render pods that crash.
    args.controller_url
        .parse::<tollgate_gateway::subscriber::ControllerUrl>()
        .map_err(|e| ControllerError::ControllerUrl(args.controller_url.clone(), e.to_string()))?;
    let sans = tls::sans_for(&args.controller_url, &args.tls_san);
    let bundle = tls::ensure(&client, &args.tls_secret_namespace, &args.tls_secret, &sans).await?;
    let listener = tokio::net::TcpListener::bind(args.config_listen)
        .await
        .map_err(|e| ControllerError::Listen(args.config_listen, e))?;
    let hub = Hub::new(Arc::new(Notify::new()));
    let server_tls = Arc::new(ArcSwap::from_pointee(bundle.server_config()?));
    let ca_changed = tokio::spawn(renew_certificate(
        client.clone(),
        args.tls_secret_namespace.clone(),
        args.tls_secret.clone(),
        sans,
        bundle.clone(),
        server_tls.clone(),
    ));
    tokio::spawn(config_server::serve(
        listener,
        server_tls,
        hub.clone(),
        Arc::new(config_server::ApiReviewer::new(client.clone())),
        metrics.clone(),
        std::future::pending(),
    ));
    tracing::info!(address = %args.config_listen, url = %args.controller_url, "config server listening");
    health.leading.store(true, Ordering::Relaxed);
    let settings = RenderSettings {
        image: args.gateway_image.clone(),
        controller_url: args.controller_url.clone(),
        controller_ca: bundle.ca_cert.clone(),
    };
    tokio::select! {
        () = tollgate_controller::status_loop::run(client.clone(), hub, metrics.clone(), bundle.digest_key.clone(), std::time::Duration::from_secs(args.mcp_probe_interval_secs.max(1))) => Ok(()),
        () = tollgate_controller::workload_loop::run(client, settings, metrics) => Ok(()),
        _ = leading_rx.wait_for(|leading| !*leading) => Err(ControllerError::LostLeadership),
        _ = ca_changed => Err(ControllerError::CaChanged),
        () = shutdown_signal() => Ok(()),
    }
}

/// How often the leader re-checks its certificate; renewal starts 30 days
/// before expiry, so a daily look leaves ample room for retries.
const CERTIFICATE_CHECK: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Renews the serving certificate in the Secret when due and serves the new
/// one to new connections. The CA stays, so gateways keep trusting us; if
/// the Secret was replaced by one with another CA (deleted by hand), it
/// returns: the gateways' CA ConfigMaps were rendered with the old CA.
async fn renew_certificate(
    client: kube::Client,
    namespace: String,
    name: String,
    sans: Vec<String>,
    mut current: tls::Bundle,
    server_tls: Arc<ArcSwap<rustls::ServerConfig>>,
) {
    loop {
        tokio::time::sleep(CERTIFICATE_CHECK).await;
        let renewed = match tls::ensure(&client, &namespace, &name, &sans).await {
            Ok(bundle) => bundle,
            Err(error) => {
                tracing::warn!(%error, "cannot check the controller certificate; retrying later");
                continue;
            }
        };
        if renewed.cert == current.cert {
            continue;
        }
        if renewed.ca_cert != current.ca_cert {
            return;
        }
        match renewed.server_config() {
            Ok(config) => {
                server_tls.store(Arc::new(config));
                tracing::info!("serving the renewed controller certificate");
                current = renewed;
            }
            Err(error) => tracing::error!(%error, "the renewed certificate is unusable"),
        }
    }
}

/// /healthz: the process runs. /readyz: this replica leads (followers stay
/// unready, so only the leader receives traffic). /metrics: Prometheus.
async fn serve_health(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let (health, metrics) = (health.clone(), metrics.clone());
                async move {
                    Ok::<_, Infallible>(health_response(&health, &metrics, request.uri().path()))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Content type of the OpenMetrics text format prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn health_response(health: &Health, metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let leading = health.leading.load(Ordering::Relaxed);
    let (status, body, content_type) = match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_string(), None),
        "/readyz" if leading => (StatusCode::OK, "leading\n".to_string(), None),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "follower\n".to_string(),
            None,
        ),
        "/metrics" => {
            // `leading` is the one source of truth; the gauge mirrors it at scrape time.
            metrics.leader.set(i64::from(leading));
            (StatusCode::OK, metrics.encode(), Some(OPENMETRICS))
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string(), None),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
    }
    response
}
