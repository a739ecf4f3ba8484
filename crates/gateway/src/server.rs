//! HTTP serving: accept loop, HTTP/1.1 keep-alive and h2c, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::http::{self as responses, ResponseBody, box_body};
use crate::runtime::Gateway;

/// Serves `handler` on `listener` until `shutdown` flips to true, then stops
/// accepting and waits up to `drain` for in-flight requests (streams included).
pub async fn serve<H, F>(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    H: Fn(Arc<Gateway>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let service = service_fn(move |request| {
                    let response = handler(gateway.clone(), request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain timeout: closing remaining connections");
    }
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
            let mut response =
                Response::new(box_body(Full::new(Bytes::from(gateway.metrics.encode()))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (&Method::GET, "/healthz") => responses::text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => responses::readiness(gateway),
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
        (_, path) => ApiError::not_found(path)
            .into_response::<Full<Bytes>>()
            .map(box_body),
    }
}
