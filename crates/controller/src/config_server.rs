//! Serves snapshots to gateway pods over HTTPS (the protocol is in
//! `tollgate_config::push`). Each subscriber proves who it is with its
//! projected ServiceAccount token, which the apiserver checks (TokenReview,
//! our audience only); a pod may only subscribe to the AIGateway whose
//! ServiceAccount it runs as, because snapshots carry provider credentials.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tollgate_config::ObjectRef;
use tollgate_config::push::{
    GatewayMessage, HEARTBEAT_INTERVAL, LineBuffer, POD_HEADER, heartbeat_frame,
    parse_subscribe_path,
};

use crate::distribution::{Hub, SubscribeError, Subscription};
use crate::metrics::{Metrics, SubscriberGuard, SubscriptionResult};
use crate::workload::{TOKEN_AUDIENCE, workload_name};

/// Streams end after this long so gateways present a fresh token (the
/// kubelet rotates them) and a revoked ServiceAccount loses access.
pub const REAUTHENTICATE_AFTER: Duration = Duration::from_secs(600);

/// TokenReviews in flight at once; more subscribers wait for a retry (503)
/// instead of flooding the apiserver (any pod can reach this port).
const MAX_CONCURRENT_REVIEWS: usize = 16;

/// How long a TokenReview may take before the subscriber is told to retry.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Subscriptions a gateway opens per connection (it needs one).
const MAX_STREAMS_PER_CONNECTION: u32 = 4;

/// Longest acknowledgement line accepted from a gateway.
const MAX_ACK_LINE: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

/// What the apiserver said about a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reviewed {
    pub authenticated: bool,
    pub username: String,
    /// The pod a bound token was issued for, when it says.
    pub pod: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("token review failed: {0}")]
pub struct ReviewError(String);

/// Checks tokens; the apiserver in production, a stand-in in unit tests.
pub trait TokenReviewer: Send + Sync + 'static {
    fn review(
        &self,
        token: String,
    ) -> Pin<Box<dyn Future<Output = Result<Reviewed, ReviewError>> + Send + '_>>;
}

/// TokenReview against the apiserver, for our audience only.
pub struct ApiReviewer {
    client: Client,
}

impl ApiReviewer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl TokenReviewer for ApiReviewer {
    fn review(
        &self,
        token: String,
    ) -> Pin<Box<dyn Future<Output = Result<Reviewed, ReviewError>> + Send + '_>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token),
                    audiences: Some(vec![TOKEN_AUDIENCE.into()]),
                },
                ..TokenReview::default()
            };
            let reviewed = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| ReviewError(e.to_string()))?;
            let status = reviewed.status.unwrap_or_default();
            let user = status.user.unwrap_or_default();
            let audience_ok = status
                .audiences
                .as_ref()
                .is_none_or(|a| a.iter().any(|a| a == TOKEN_AUDIENCE));
            let pod = user
                .extra
                .as_ref()
                .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
                .and_then(|v| v.first().cloned());
            Ok(Reviewed {
                authenticated: status.authenticated.unwrap_or(false) && audience_ok,
                username: user.username.unwrap_or_default(),
                pod,
                error: status.error,
            })
        })
    }
}

/// Why a subscriber was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the token was not accepted: {0}")]
    Unauthenticated(String),
    #[error("{user} may not receive the configuration of AIGateway {gateway}")]
    Forbidden { user: String, gateway: String },
}

/// The only identity allowed to receive `gateway`'s snapshots: the
/// ServiceAccount the controller created for its pods.
pub fn authorize(reviewed: &Reviewed, gateway: &ObjectRef) -> Result<(), Denied> {
    if !reviewed.authenticated {
        return Err(Denied::Unauthenticated(
            reviewed
                .error
                .clone()
                .unwrap_or_else(|| format!("not valid for audience {TOKEN_AUDIENCE}")),
        ));
    }
    let expected = format!(
        "system:serviceaccount:{}:{}",
        gateway.namespace,
        workload_name(&gateway.name)
    );
    if reviewed.username == expected {
        Ok(())
    } else {
        Err(Denied::Forbidden {
            user: reviewed.username.clone(),
            gateway: format!("{}/{}", gateway.namespace, gateway.name),
        })
    }
}

/// Accepts TLS connections until `shutdown` resolves; `tls` may be swapped
/// (certificate renewal) while it runs.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    hub: Arc<Hub>,
    reviewer: Arc<dyn TokenReviewer>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared {
        hub,
        reviewer,
        metrics,
        reviews: tokio::sync::Semaphore::new(MAX_CONCURRENT_REVIEWS),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "config server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        // The current certificate: a renewal applies to new connections.
        let (acceptor, shared) = (TlsAcceptor::from(tls.load_full()), shared.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(request, &shared).await) }
            });
            // HTTP/2 only: the protocol needs it, and HTTP/1 would bring
            // slow-header connections that no timer bounds.
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http2_only();
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .keep_alive_timeout(Duration::from_secs(20));
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "config connection ended");
            }
        });
    }
}

/// What every request handler shares.
struct Shared {
    hub: Arc<Hub>,
    reviewer: Arc<dyn TokenReviewer>,
    metrics: Arc<Metrics>,
    /// Bounds concurrent TokenReviews.
    reviews: tokio::sync::Semaphore,
}

async fn handle(request: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let Shared {
        hub,
        reviewer,
        metrics,
        reviews,
    } = shared;
    let Some((namespace, name)) = parse_subscribe_path(request.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    };
    if request.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "subscribe with POST",
        );
    }
    let gateway = ObjectRef {
        kind: "AIGateway".into(),
        namespace: namespace.into(),
        name: name.into(),
    };
    let Some(token) = bearer_token(&request) else {
        metrics.subscription(SubscriptionResult::Unauthenticated);
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "an Authorization: Bearer ServiceAccount token is required",
        );
    };
    let Ok(_permit) = reviews.try_acquire() else {
        metrics.subscription(SubscriptionResult::ReviewFailed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many subscriptions are being authenticated; retry",
        );
    };
    let review = tokio::time::timeout(REVIEW_TIMEOUT, reviewer.review(token)).await;
    let review = review.unwrap_or_else(|_| Err(ReviewError("timed out".into())));
    let reviewed = match review {
        Ok(reviewed) => reviewed,
        Err(review_error) => {
            tracing::warn!(%gateway, error = %review_error, "cannot review a subscriber's token");
            metrics.subscription(SubscriptionResult::ReviewFailed);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "review_failed",
                "the token could not be checked; retry",
            );
        }
    };
    if let Err(denied) = authorize(&reviewed, &gateway) {
        tracing::warn!(%gateway, reason = %denied, "subscription refused");
        let (status, code, result) = match denied {
            Denied::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                SubscriptionResult::Unauthenticated,
            ),
            Denied::Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                SubscriptionResult::Forbidden,
            ),
        };
        metrics.subscription(result);
        return error(status, code, &denied.to_string());
    }
    let pod = reviewed
        .pod
        .clone()
        .or_else(|| {
            request
                .headers()
                .get(POD_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| crate::distribution::UNKNOWN_POD.into());
    let subscription = match hub.subscribe(&gateway, &pod) {
        Ok(subscription) => Arc::new(subscription),
        Err(refused @ SubscribeError::NotReady) => {
            metrics.subscription(SubscriptionResult::NotReady);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                &refused.to_string(),
            );
        }
        Err(refused @ SubscribeError::UnknownGateway(_)) => {
            metrics.subscription(SubscriptionResult::UnknownGateway);
            return error(
                StatusCode::NOT_FOUND,
                "unknown_gateway",
                &refused.to_string(),
            );
        }
    };
    tracing::info!(%gateway, %pod, "gateway subscribed");
    metrics.subscription(SubscriptionResult::Accepted);
    tokio::spawn(read_acknowledgements(
        request.into_body(),
        subscription.clone(),
    ));
    let body =
        StreamBody::new(snapshot_stream(subscription, metrics.clone()).map(|b| Ok(Frame::data(b))));
    let mut response = Response::new(BodyExt::boxed(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn bearer_token(request: &Request<Incoming>) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    looks_like_jwt(token).then(|| token.to_string())
}

/// ServiceAccount tokens are JWTs (three base64url parts); anything else is
/// refused without costing the apiserver a TokenReview.
fn looks_like_jwt(token: &str) -> bool {
    let base64url = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    token.len() <= 16 * 1024 && token.split('.').count() == 3 && token.split('.').all(base64url)
}

/// The current snapshot at once, then every newer one, with heartbeats in
/// between; ends when the gateway is deleted or re-authentication is due.
fn snapshot_stream(
    subscription: Arc<Subscription>,
    metrics: Arc<Metrics>,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    struct State {
        subscription: Arc<Subscription>,
        updates: tokio::sync::watch::Receiver<Option<crate::distribution::Published>>,
        first: bool,
        deadline: Instant,
        metrics: Arc<Metrics>,
        /// Dropped with the stream, however it ends.
        _open: SubscriberGuard,
    }
    let updates = subscription.updates.clone();
    let state = State {
        subscription,
        updates,
        first: true,
        // Jittered, so a fleet that connected together does not come back
        // for re-authentication (and a full snapshot) all at once.
        deadline: Instant::now() + REAUTHENTICATE_AFTER.mul_f64(0.8 + 0.4 * rand::random::<f64>()),
        _open: metrics.subscriber(),
        metrics,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if std::mem::take(&mut state.first) {
            let current = state.updates.borrow_and_update().clone();
            if let Some(published) = current {
                state.metrics.snapshots_sent.inc();
                return Some((published.frame, state));
            }
        }
        let heartbeat = tokio::time::sleep(HEARTBEAT_INTERVAL);
        tokio::select! {
            changed = state.updates.changed() => {
                if changed.is_err() {
                    tracing::info!(gateway = %state.subscription.gateway(), "gateway deleted; closing its stream");
                    return None;
                }
                let snapshot = state.updates.borrow_and_update().as_ref().map(|p| p.frame.clone());
                let frame = match snapshot {
                    Some(frame) => {
                        state.metrics.snapshots_sent.inc();
                        frame
                    }
                    None => Bytes::from_static(heartbeat_frame()),
                };
                Some((frame, state))
            }
            () = heartbeat => Some((Bytes::from_static(heartbeat_frame()), state)),
            () = tokio::time::sleep_until(state.deadline) => None,
        }
    })
}

/// Reads the gateway's acknowledgements until its request body ends.
async fn read_acknowledgements(mut body: Incoming, subscription: Arc<Subscription>) {
    let mut lines = LineBuffer::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let Ok(complete) = lines.push(data, MAX_ACK_LINE) else {
            tracing::warn!(gateway = %subscription.gateway(), "acknowledgement too long; ignoring the rest");
            return;
        };
        for line in complete {
            match serde_json::from_slice::<GatewayMessage>(&line) {
                Ok(message) => subscription.record(&message),
                Err(error) => {
                    tracing::warn!(gateway = %subscription.gateway(), %error, "unreadable acknowledgement")
                }
            }
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> ObjectRef {
        ObjectRef {
            kind: "AIGateway".into(),
            namespace: "team-a".into(),
            name: "edge".into(),
        }
    }

    #[test]
    fn only_the_gateways_own_service_account_may_subscribe() {
        let own = Reviewed {
            authenticated: true,
            username: "system:serviceaccount:team-a:tollgate-edge".into(),
            ..Reviewed::default()
        };
        assert_eq!(authorize(&own, &gateway()), Ok(()));

        let neighbour = Reviewed {
            username: "system:serviceaccount:team-b:tollgate-edge".into(),
            ..own.clone()
        };
        assert!(matches!(
            authorize(&neighbour, &gateway()),
            Err(Denied::Forbidden { .. })
        ));
        let other_gateway = Reviewed {
            username: "system:serviceaccount:team-a:tollgate-internal".into(),
            ..own.clone()
        };
        assert!(matches!(
            authorize(&other_gateway, &gateway()),
            Err(Denied::Forbidden { .. })
        ));
        let user = Reviewed {
            username: "alice".into(),
            ..own.clone()
        };
        assert!(authorize(&user, &gateway()).is_err());
    }

    /// Snapshots for gateway `default/gw` whose one route sends to `model`.
    fn snapshots(
        model: &str,
    ) -> std::collections::BTreeMap<ObjectRef, tollgate_config::snapshot::Snapshot> {
        let yaml = format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: AIGateway\nmetadata: {{name: gw}}\nspec: {{}}\n---\n\
             apiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: mock}}\n\
             spec: {{type: Mock, endpoint: \"http://127.0.0.1:9/v1\"}}\n---\n\
             apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: chat}}\n\
             spec: {{gatewayRef: {{name: gw}}, models: [chat], backends: [{{providerRef: {{name: mock}}, model: {model}}}]}}\n"
        );
        let mut loaded = tollgate_config::load::Loaded::default();
        tollgate_config::load::add_documents(&mut loaded, "test.yaml", &yaml, &|_| None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        tollgate_config::compile(
            &loaded.resources,
            &tollgate_config::DigestKey::from_bytes([9; 32]),
        )
        .snapshots
    }

    #[tokio::test(start_paused = true)]
    async fn streams_count_snapshots_but_not_heartbeats_and_leave_the_gauge_when_done() {
        let gw = ObjectRef {
            kind: "AIGateway".into(),
            namespace: "default".into(),
            name: "gw".into(),
        };
        let hub = Hub::new(Arc::new(tokio::sync::Notify::new()));
        hub.publish([&gw], &snapshots("a"));
        let metrics = Arc::new(Metrics::new());
        let subscription = Arc::new(hub.subscribe(&gw, "pod").unwrap());
        let stream = snapshot_stream(subscription, metrics.clone());
        futures_util::pin_mut!(stream);
        assert_eq!(metrics.config_subscribers.get(), 1);

        // The current snapshot at once.
        let first = stream.next().await.unwrap();
        assert_ne!(first, Bytes::from_static(heartbeat_frame()));
        assert_eq!(metrics.snapshots_sent.get(), 1);
        // Nothing new: the paused clock runs to the heartbeat, not counted.
        let beat = stream.next().await.unwrap();
        assert_eq!(beat, Bytes::from_static(heartbeat_frame()));
        assert_eq!(metrics.snapshots_sent.get(), 1);
        // A new version is a snapshot.
        hub.publish([&gw], &snapshots("b"));
        let second = stream.next().await.unwrap();
        assert_ne!(second, first);
        assert_ne!(second, Bytes::from_static(heartbeat_frame()));
        assert_eq!(metrics.snapshots_sent.get(), 2);
        // The gateway is deleted: the stream ends and is no longer open.
        hub.publish([], &std::collections::BTreeMap::new());
        assert!(stream.next().await.is_none());
        assert_eq!(metrics.config_subscribers.get(), 0);
    }

    #[test]
    fn an_unauthenticated_token_is_refused_with_the_reason() {
        let rejected = Reviewed {
            authenticated: false,
            username: "system:serviceaccount:team-a:tollgate-edge".into(),
            error: Some("token has expired".into()),
            ..Reviewed::default()
        };
        assert_eq!(
            authorize(&rejected, &gateway()),
            Err(Denied::Unauthenticated("token has expired".into()))
        );
    }
}
