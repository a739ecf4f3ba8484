//! The LLM request pipeline, top to bottom:
//! authenticate -> read and check the body -> route -> select a backend ->
//! call the provider (falling back on failure) -> relay -> settle usage.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tollgate_config::snapshot::{Pricing, Route};

use crate::error::ApiError;
use crate::metrics::{RequestLabels, TokenLabels, UpstreamErrorLabels, UsageLabels};
use crate::payload::Payload;
use crate::routing::attempt_order;
use crate::runtime::{Gateway, Runtime};
use crate::sse::{SseRelay, Usage, usage_of_body};
use crate::upstream::{Endpoint, UpstreamError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = BoxBody<Bytes, BoxError>;

/// Largest upstream error body read back, to quote it to the client.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest successful upstream body accepted (a big embeddings batch is tens of MB).
const MAX_RESPONSE_BODY: usize = 256 * 1024 * 1024;
/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace after `data: [DONE]` for the provider to end the body.
const AFTER_DONE_GRACE: Duration = Duration::from_secs(1);
/// Oversized request bodies up to this size are read and discarded before
/// the 413; beyond it the connection is simply closed.
const MAX_DRAIN: u64 = 64 * 1024 * 1024;

/// Entry point for the client-facing port.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    let method = request.method().clone();
    match (method, path) {
        (Method::POST, "/v1/chat/completions") => {
            llm(gateway, request, Endpoint::ChatCompletions).await
        }
        (Method::POST, "/v1/embeddings") => llm(gateway, request, Endpoint::Embeddings).await,
        (Method::GET, "/v1/models") => models(&gateway, request.headers(), None),
        (Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = p["/v1/models/".len()..].to_string();
            models(&gateway, request.headers(), Some(&id))
        }
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (Method::GET, "/readyz") => readiness(&gateway),
        (
            method,
            path @ ("/v1/chat/completions"
            | "/v1/embeddings"
            | "/v1/models"
            | "/healthz"
            | "/readyz"),
        ) => ApiError::method_not_allowed(&method, path)
            .into_response::<Full<Bytes>>()
            .map(box_body),
        (_, path) => ApiError::not_found(path)
            .into_response::<Full<Bytes>>()
            .map(box_body),
    }
}

pub fn box_body<B>(body: B) -> ResponseBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

pub fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(box_body(Full::new(Bytes::from_static(body.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn readiness(gateway: &Gateway) -> Response<ResponseBody> {
    if gateway.is_ready() {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(box_body(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: ApiError) -> Response<ResponseBody> {
    error.into_response::<Full<Bytes>>().map(box_body)
}

/// `GET /v1/models` and `GET /v1/models/{id}`: the aliases this caller may use.
fn models(gateway: &Gateway, headers: &HeaderMap, id: Option<&str>) -> Response<ResponseBody> {
    let Some(runtime) = gateway.runtime() else {
        return error_response(ApiError::not_ready());
    };
    if let Err(error) = runtime.keys.authenticate(headers) {
        return error_response(error);
    }
    let entry = |alias: &str| serde_json::json!({"id": alias, "object": "model", "created": 0, "owned_by": "tollgate"});
    let aliases = runtime.routes.visible_aliases(headers);
    let body = match id {
        None => {
            serde_json::json!({"object": "list", "data": aliases.iter().map(|a| entry(a)).collect::<Vec<_>>()})
        }
        Some(id) if aliases.contains(&id) => entry(id),
        Some(id) => return error_response(ApiError::model_not_found(id)),
    };
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Gateway>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// One client request's accounting, filled in as stages are reached and
/// settled exactly once (on the response, at stream end, or on disconnect).
struct Exchange {
    gateway: Arc<Gateway>,
    endpoint: Endpoint,
    started: Instant,
    route: String,
    provider: String,
    model: String,
    pricing: Option<Pricing>,
    settled: bool,
    _in_flight: InFlight,
}

impl Exchange {
    fn new(gateway: Arc<Gateway>, endpoint: Endpoint) -> Self {
        gateway.metrics.in_flight.inc();
        Self {
            _in_flight: InFlight(gateway.clone()),
            gateway,
            endpoint,
            started: Instant::now(),
            route: String::new(),
            provider: String::new(),
            model: String::new(),
            pricing: None,
            settled: false,
        }
    }

    fn usage_labels(&self) -> UsageLabels {
        UsageLabels {
            route: self.route.clone(),
            provider: self.provider.clone(),
            model: self.model.clone(),
        }
    }

    fn settle(&mut self, status: u16, usage: Option<Usage>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let metrics = &self.gateway.metrics;
        let labels = RequestLabels {
            endpoint: self.endpoint.label(),
            route: self.route.clone(),
            provider: self.provider.clone(),
            model: self.model.clone(),
            status,
        };
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .request_duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        let Some(usage) = usage else { return };
        let cached = usage.cached_tokens();
        for (direction, count) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
            ("cached_input", cached),
        ] {
            if count > 0 {
                let labels = TokenLabels {
                    route: self.route.clone(),
                    provider: self.provider.clone(),
                    model: self.model.clone(),
                    direction,
                };
                metrics.tokens.get_or_create(&labels).inc_by(count);
            }
        }
        if let Some(pricing) = self.pricing {
            let cost = pricing.cost(usage.prompt_tokens, cached, usage.completion_tokens);
            metrics
                .cost_usd
                .get_or_create(&self.usage_labels())
                .inc_by(cost);
        }
    }

    fn fail(&mut self, error: ApiError) -> Response<ResponseBody> {
        self.settle(error.status.as_u16(), None);
        error_response(error)
    }

    fn upstream_error(&self, reason: &'static str) {
        let labels = UpstreamErrorLabels {
            provider: self.provider.clone(),
            reason,
        };
        self.gateway
            .metrics
            .upstream_errors
            .get_or_create(&labels)
            .inc();
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Reached only when the client went away before we answered.
        self.settle(499, None);
    }
}

async fn llm(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    endpoint: Endpoint,
) -> Response<ResponseBody> {
    let mut exchange = Exchange::new(gateway.clone(), endpoint);
    // One snapshot for the whole request, streams included.
    let Some(runtime) = gateway.runtime() else {
        return exchange.fail(ApiError::not_ready());
    };
    match proxy(&runtime, request, endpoint, &mut exchange).await {
        Ok(Delivery::Complete(response, status, usage)) => {
            exchange.settle(status, usage);
            response
        }
        Ok(Delivery::Stream(head, relay)) => {
            let body = RelayBody {
                exchange: Some(exchange),
                ..*relay
            };
            head.map(|()| box_body(body))
        }
        Err(error) => exchange.fail(error),
    }
}

enum Delivery {
    /// A full response, its status for metrics and the usage it reported.
    Complete(Response<ResponseBody>, u16, Option<Usage>),
    /// A stream: the response head and the relay body (settles itself).
    Stream(Response<()>, Box<RelayBody>),
}

async fn proxy(
    runtime: &Runtime,
    request: Request<Incoming>,
    endpoint: Endpoint,
    exchange: &mut Exchange,
) -> Result<Delivery, ApiError> {
    let (parts, body) = request.into_parts();
    runtime.keys.authenticate(&parts.headers)?;
    let limits = &runtime.snapshot.config.limits;
    let bytes = read_limited(body, &parts.headers, limits.max_request_body_bytes).await?;
    let payload = Payload::parse(&bytes, endpoint)?;
    let route = runtime
        .routes
        .find(&payload.model, &parts.headers)
        .ok_or_else(|| ApiError::model_not_found(&payload.model))?;
    exchange.route.clone_from(&route.name);
    // Streams always ask upstream for usage (see `Payload::to_upstream`); the
    // relay removes the extra chunk when the client did not ask for it.
    let (stream, client_wants_usage) = (payload.stream, payload.client_wants_usage);

    // One budget for the whole request, across fallbacks; each attempt is
    // further bounded by its provider's own timeout.
    let budget_ms = route
        .request_timeout_ms
        .unwrap_or(limits.request_timeout_ms);
    let overall = Instant::now() + Duration::from_millis(budget_ms);
    let order = attempt_order(route, &mut rand::rng());
    let mut last_error =
        ApiError::unavailable(format!("route {} has no available backend", route.name));
    for (attempt, &index) in order.iter().enumerate() {
        let is_last = attempt + 1 == order.len();
        let backend = &route.backends[index];
        let upstream = &runtime.upstreams[backend.provider];
        let provider = &upstream.config.name;
        exchange.provider.clone_from(provider);
        exchange.model.clone_from(&backend.model);
        exchange.pricing = upstream.config.models.get(&backend.model).copied();

        let Some(permit) = upstream.try_acquire() else {
            exchange.upstream_error("concurrency_limit");
            last_error =
                ApiError::overloaded(format!("provider {provider} is at its concurrency limit"));
            continue;
        };
        let body = payload.to_upstream(&backend.model)?;
        let started = Instant::now();
        let provider_limit = started + Duration::from_millis(upstream.config.request_timeout_ms);
        let deadline = overall.min(provider_limit);
        let timeout_error = || {
            let (limit, which) = if provider_limit < overall {
                (
                    upstream.config.request_timeout_ms,
                    "the provider's request timeout",
                )
            } else {
                (budget_ms, "the route's request timeout")
            };
            ApiError::timeout(format!(
                "provider {provider} did not answer within {limit} ms ({which})"
            ))
        };
        let response = match upstream.send(endpoint, body, deadline).await {
            Ok(response) => response,
            Err(UpstreamError::Timeout) => {
                exchange.upstream_error("timeout");
                last_error = timeout_error();
                if Instant::now() < overall && !is_last {
                    continue;
                }
                return Err(last_error);
            }
            Err(error) => {
                exchange.upstream_error("connect");
                tracing::warn!(%provider, %error, "upstream attempt failed");
                last_error = ApiError::bad_gateway(format!("provider {provider}: {error}"));
                continue;
            }
        };
        let status = response.status();
        if status.is_success() {
            let head = response_head(status, route, provider, stream);
            if stream {
                let relay = RelayBody {
                    upstream: response.into_body(),
                    relay: SseRelay::new(!client_wants_usage),
                    // Until the first chunk: the request deadline.
                    timer: Box::pin(tokio::time::sleep_until(deadline)),
                    idle: route.stream_idle_timeout_ms.map(Duration::from_millis),
                    stream_deadline: provider_limit,
                    exchange: None,
                    first_chunk_seen: false,
                    state: RelayState::Streaming,
                    _permit: permit,
                };
                return Ok(Delivery::Stream(head, Box::new(relay)));
            }
            let limited = Limited::new(response.into_body(), MAX_RESPONSE_BODY);
            let body = match tokio::time::timeout_at(deadline, limited.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(error)) => {
                    exchange.upstream_error("broken_body");
                    return Err(ApiError::bad_gateway(format!(
                        "provider {provider} broke off the response: {error}"
                    )));
                }
                Err(_) => {
                    exchange.upstream_error("timeout");
                    return Err(timeout_error());
                }
            };
            let usage = usage_of_body(&body);
            let (head, ()) = head.into_parts();
            return Ok(Delivery::Complete(
                Response::from_parts(head, box_body(Full::new(body))),
                status.as_u16(),
                usage,
            ));
        }
        exchange.upstream_error(status_reason(status));
        if is_retryable(status) && !is_last {
            tracing::debug!(provider = %upstream.config.name, %status, "falling back to the next backend");
            continue;
        }
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let body = read_error_body(response.into_body(), deadline).await;
        let response = upstream_failure(status, &body, provider, retry_after);
        let status = response.status().as_u16();
        return Ok(Delivery::Complete(response, status, None));
    }
    Err(last_error)
}

fn response_head(status: StatusCode, route: &Route, provider: &str, stream: bool) -> Response<()> {
    let mut head = Response::new(());
    *head.status_mut() = status;
    let headers = head.headers_mut();
    if stream {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&route.name) {
        headers.insert("x-tollgate-route", value);
    }
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert("x-tollgate-provider", value);
    }
    head
}

/// Statuses after which another backend may succeed. 401/403 count: they
/// mean this provider rejected the gateway's key, not the client's request.
fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 429 | 500 | 502 | 503 | 504)
}

fn status_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limited",
        401 | 403 => "unauthorized",
        s if s >= 500 => "server_error",
        _ => "client_error",
    }
}

async fn read_error_body(body: Incoming, deadline: Instant) -> Bytes {
    let limited = Limited::new(body, MAX_ERROR_BODY);
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    }
}

/// What the client sees when the last backend answered with an error.
fn upstream_failure(
    status: StatusCode,
    body: &Bytes,
    provider: &str,
    retry_after: Option<HeaderValue>,
) -> Response<ResponseBody> {
    let upstream_message = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let detail = upstream_message
        .clone()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match status.as_u16() {
        // The provider rejected *our* key: the client's request is fine.
        401 | 403 => error_response(ApiError::bad_gateway(format!(
            "provider {provider} rejected the gateway's credentials (status {status})"
        ))),
        503 => error_response(ApiError::unavailable(format!(
            "provider {provider} is unavailable{detail}"
        ))),
        504 => error_response(ApiError::timeout(format!(
            "provider {provider} timed out{detail}"
        ))),
        s if s >= 500 => error_response(ApiError::bad_gateway(format!(
            "provider {provider} failed with status {status}{detail}"
        ))),
        // 4xx (incl. 429) in the OpenAI shape passes through unchanged.
        _ if upstream_message.is_some() => {
            let mut response = json_response(status, body.clone());
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = retry_after.unwrap_or_else(|| HeaderValue::from_static("1"));
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after);
            }
            response
        }
        _ => error_response(ApiError {
            status,
            kind: "invalid_request_error",
            code: "upstream_rejected",
            message: format!("provider {provider} rejected the request with status {status}"),
            param: None,
        }),
    }
}

/// Reads the request body up to `limit`. An oversized body is read on and
/// discarded (up to [`MAX_DRAIN`]) before answering 413, so the client gets the
/// error instead of a broken pipe mid-upload.
async fn read_limited(
    mut body: Incoming,
    headers: &HeaderMap,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Trust a declared length for the first allocation only up to 64 KiB:
    // a client can declare much and send nothing.
    let initial = declared.filter(|n| *n <= limit).unwrap_or(0).min(64 * 1024);
    let mut buffer = bytes::BytesMut::with_capacity(initial as usize);
    let mut seen: u64 = 0;
    let mut too_large = declared.is_some_and(|n| n > limit);
    if too_large && declared.is_some_and(|n| n > MAX_DRAIN) {
        return Err(ApiError::too_large(limit));
    }
    let read_deadline = Instant::now() + BODY_READ_TIMEOUT;
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deadline = if too_large {
            drain_deadline
        } else {
            read_deadline
        };
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(frame) => frame,
            Err(_) if too_large => return Err(ApiError::too_large(limit)),
            Err(_) => return Err(ApiError::body_timeout(BODY_READ_TIMEOUT)),
        };
        match frame {
            None => break,
            Some(Err(error)) => {
                return Err(if too_large {
                    ApiError::too_large(limit)
                } else {
                    ApiError::invalid_request(
                        "body_read_failed",
                        format!("Could not read the request body: {error}"),
                    )
                });
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                seen += data.len() as u64;
                if seen > limit {
                    too_large = true;
                    buffer.clear();
                    if seen > MAX_DRAIN {
                        break;
                    }
                } else {
                    buffer.extend_from_slice(&data);
                }
            }
        }
    }
    if too_large {
        Err(ApiError::too_large(limit))
    } else {
        Ok(buffer.freeze())
    }
}

/// Streams upstream SSE to the client event by event, with deadlines, and
/// settles the exchange when the stream ends however it ends.
struct RelayBody {
    upstream: Incoming,
    relay: SseRelay,
    /// The next deadline: first chunk, then idle gap, capped by `stream_deadline`.
    timer: Pin<Box<Sleep>>,
    idle: Option<Duration>,
    /// The provider's request timeout bounds the whole stream.
    stream_deadline: Instant,
    exchange: Option<Exchange>,
    first_chunk_seen: bool,
    state: RelayState,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
enum RelayState {
    Streaming,
    /// The stream has failed; the error is returned after one yield so hyper
    /// flushes what was already forwarded (it drops unflushed data on error).
    Failing(StreamError),
    /// Upstream ended; the body ends on the next poll.
    Ended,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("provider stream failed: {0}")]
    Upstream(String),
    #[error("provider stream ended before [DONE]")]
    Truncated,
    #[error("provider stream timed out")]
    Timeout,
    #[error(transparent)]
    TooLarge(#[from] crate::sse::EventTooLarge),
}

type FramePoll = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl RelayBody {
    fn settle(&mut self, status: u16) {
        let usage = self.relay.usage();
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.settle(status, usage);
        }
    }

    /// Ends the body with an error, so the client sees a broken stream and
    /// never mistakes a cut-off answer for a complete one.
    fn abort(
        &mut self,
        cx: &mut Context<'_>,
        status: u16,
        reason: &'static str,
        error: StreamError,
    ) -> FramePoll {
        if let Some(exchange) = &self.exchange {
            exchange.upstream_error(reason);
        }
        self.settle(status);
        self.state = RelayState::Failing(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn forward(&mut self, bytes: Bytes) -> FramePoll {
        if !self.first_chunk_seen {
            self.first_chunk_seen = true;
            if let Some(exchange) = &self.exchange {
                let elapsed = exchange.started.elapsed().as_secs_f64();
                exchange
                    .gateway
                    .metrics
                    .time_to_first_token
                    .get_or_create(&exchange.usage_labels())
                    .observe(elapsed);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    /// After data: the idle deadline restarts (or the whole-stream one
    /// applies); after `[DONE]` only a short grace remains.
    fn rearm_timer(&mut self) {
        let now = Instant::now();
        let mut next = self.stream_deadline;
        if let Some(idle) = self.idle {
            next = next.min(now + idle);
        }
        if self.relay.finished() {
            next = next.min(now + AFTER_DONE_GRACE);
        }
        self.timer.as_mut().reset(next);
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> FramePoll {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, RelayState::Streaming) {
                RelayState::Streaming => {}
                RelayState::Failing(error) => {
                    this.state = RelayState::Ended;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
                RelayState::Ended => {
                    this.state = RelayState::Ended;
                    return Poll::Ready(None);
                }
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let pushed = this.relay.push(data);
                    this.rearm_timer();
                    match pushed {
                        Ok(Some(out)) => return this.forward(out),
                        Ok(None) => {}
                        Err(error) => return this.abort(cx, 502, "oversized_event", error.into()),
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return this.abort(
                        cx,
                        502,
                        "broken_stream",
                        StreamError::Upstream(error.to_string()),
                    );
                }
                Poll::Ready(None) => {
                    if let Some(rest) = this.relay.finish() {
                        // Forward the tail now; the verdict comes on the next poll.
                        let polled = this.forward(rest);
                        if this.relay.finished() {
                            this.settle(200);
                            this.state = RelayState::Ended;
                        }
                        return polled;
                    }
                    if this.relay.finished() {
                        this.settle(200);
                        this.state = RelayState::Ended;
                        return Poll::Ready(None);
                    }
                    return this.abort(cx, 502, "truncated_stream", StreamError::Truncated);
                }
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        if this.relay.finished() {
                            // Complete answer; the provider just never closed.
                            this.settle(200);
                            this.state = RelayState::Ended;
                            return Poll::Ready(None);
                        }
                        return this.abort(cx, 504, "stream_timeout", StreamError::Timeout);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_map_to_gateway_statuses() {
        let openai_error = Bytes::from_static(br#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#);
        assert_eq!(
            upstream_failure(StatusCode::BAD_REQUEST, &openai_error, "p", None).status(),
            400
        );
        assert_eq!(
            upstream_failure(StatusCode::UNAUTHORIZED, &openai_error, "p", None).status(),
            502
        );
        assert_eq!(
            upstream_failure(StatusCode::INTERNAL_SERVER_ERROR, &Bytes::new(), "p", None).status(),
            502
        );
        assert_eq!(
            upstream_failure(StatusCode::SERVICE_UNAVAILABLE, &Bytes::new(), "p", None).status(),
            503
        );
        assert_eq!(
            upstream_failure(StatusCode::GATEWAY_TIMEOUT, &Bytes::new(), "p", None).status(),
            504
        );
        let html = upstream_failure(
            StatusCode::NOT_FOUND,
            &Bytes::from_static(b"<html>"),
            "p",
            None,
        );
        assert_eq!(html.status(), 404);
        assert_eq!(html.headers()[header::CONTENT_TYPE], "application/json");
    }
}
