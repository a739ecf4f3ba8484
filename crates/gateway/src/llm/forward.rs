//! Stage `provider`: try the route's backends in the selected order until one
//! answers: build each attempt's request (passthrough or translated), send it
//! within the deadlines, fall back on connection errors, 429 and 5xx, and turn
//! the answer into what the relay delivers.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;
use tollgate_config::snapshot::Route;
use tollgate_llm::LlmError;

use super::ingress::Inbound;
use super::relay::{Observer, Output, ResponsesObserver, StreamSetup, Transcoder, Translator};
use super::{Answer, Failure, tokens};
use crate::context::RequestContext;
use crate::dialect::Endpoint;
use crate::error::ApiError;
use crate::http::{ResponseBody, full, json};
use crate::providers::fair::Refusal;
use crate::providers::http::{UpstreamError, send};
use crate::providers::{Plan, Upstream, Wire};
use crate::runtime::Runtime;
use crate::sse::SseRelay;

/// Largest upstream error body read back, to quote it to the client.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest successful upstream body accepted (a big embeddings batch is tens of MB).
const MAX_RESPONSE_BODY: usize = 256 * 1024 * 1024;

pub async fn forward(
    context: &mut RequestContext,
    runtime: &Runtime,
    route: &Route,
    inbound: &Inbound<'_>,
    order: &[usize],
    client_headers: &HeaderMap,
) -> Result<Answer, Failure> {
    let endpoint = context.endpoint;
    let stream = inbound.payload.stream;
    // One budget for the whole request, across fallbacks; each attempt is
    // further bounded by its provider's own timeout.
    let budget_ms = route
        .request_timeout_ms
        .unwrap_or(runtime.snapshot.config.limits.request_timeout_ms);
    let overall = Instant::now() + Duration::from_millis(budget_ms);
    let mut last_error: Failure =
        ApiError::unavailable(format!("route {} has no available backend", route.name)).into();
    for (attempt, &index) in order.iter().enumerate() {
        let is_last = attempt + 1 == order.len();
        let backend = &route.backends[index];
        let upstream = &runtime.upstreams[backend.provider];
        let provider = upstream.config.name.as_str();
        let model = if backend.pass_model {
            inbound.payload.model.as_str()
        } else {
            backend.model.as_str()
        };
        context.attempt(provider, model, upstream.config.models.get(model).copied());

        let plan = match upstream.plan(endpoint) {
            Ok(plan) => plan,
            Err(error) => {
                context.attempt_failed("unsupported");
                last_error = error.into();
                continue;
            }
        };
        if plan == Plan::Local {
            return tokens::count_locally(inbound);
        }
        // Only the last backend queues: with another one left, falling back
        // at once beats waiting for a slot here.
        let acquired = upstream
            .acquire(
                &context.principal,
                is_last,
                overall,
                &context.gateway.metrics,
            )
            .await;
        let permit = match acquired {
            Ok(permit) => permit,
            Err(refusal) => {
                context.attempt_failed("concurrency_limit");
                let why = match refusal {
                    Refusal::Full => "is at its concurrency limit",
                    Refusal::MaxShare => "is at its concurrency limit for this caller's share",
                    Refusal::QueueTimeout => {
                        "is at its concurrency limit and no slot freed up in time"
                    }
                };
                last_error = ApiError::overloaded(format!("provider {provider} {why}")).into();
                continue;
            }
        };
        let body = match plan {
            Plan::Translate => {
                Bytes::from(upstream.translate_request(&inbound.canonical()?.request, model)?)
            }
            _ => inbound.payload.to_upstream(model)?,
        };
        let request = upstream.request(endpoint, plan, model, stream, body, client_headers)?;
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
        let response = match send(upstream.client(), request, deadline).await {
            Ok(response) => response,
            Err(UpstreamError::Timeout) => {
                context.attempt_failed("timeout");
                last_error = timeout_error().into();
                if Instant::now() < overall && !is_last {
                    continue;
                }
                return Err(last_error);
            }
            Err(error) => {
                context.attempt_failed("connect");
                tracing::warn!(%provider, %error, "upstream attempt failed");
                last_error = ApiError::bad_gateway(format!("provider {provider}: {error}")).into();
                continue;
            }
        };
        let status = response.status();
        if status.is_success() {
            let head = response_head(route, provider, stream);
            if stream {
                let transcoder =
                    transcoder(upstream, plan, endpoint, inbound, model, response.headers())?;
                let setup = StreamSetup {
                    transcoder,
                    first_chunk_deadline: deadline,
                    idle: route.stream_idle_timeout_ms.map(Duration::from_millis),
                    stream_deadline: provider_limit,
                    permit,
                };
                return Ok(Answer::Stream(head, response.into_body(), Box::new(setup)));
            }
            let limited = Limited::new(response.into_body(), MAX_RESPONSE_BODY);
            let body = match tokio::time::timeout_at(deadline, limited.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(error)) => {
                    context.attempt_failed("broken_body");
                    return Err(ApiError::bad_gateway(format!(
                        "provider {provider} broke off the response: {error}"
                    ))
                    .into());
                }
                Err(_) => {
                    context.attempt_failed("timeout");
                    return Err(timeout_error().into());
                }
            };
            let body = match plan {
                Plan::Translate => {
                    let answer = upstream.translate_response(&body, model)?;
                    context.usage = answer.usage;
                    Bytes::from(endpoint.render(&answer, inbound.canonical()?))
                }
                _ => {
                    context.usage = upstream.passthrough_usage(endpoint, &body);
                    body
                }
            };
            let body = Output::emit(context, body, false);
            let (head, ()) = head.into_parts();
            return Ok(Answer::Full(
                Response::from_parts(head, full(body)),
                status.as_u16(),
            ));
        }
        context.attempt_failed(status_reason(status));
        if is_retryable(status) && !is_last {
            tracing::debug!(%provider, %status, "falling back to the next backend");
            continue;
        }
        let headers = response.headers().clone();
        let body = read_error_body(response.into_body(), deadline).await;
        let response = upstream_failure(endpoint, plan, upstream, status, &headers, &body);
        let status = response.status().as_u16();
        return Ok(Answer::Full(response, status));
    }
    Err(last_error)
}

/// How this attempt's stream reaches the client.
fn transcoder(
    upstream: &Upstream,
    plan: Plan,
    endpoint: Endpoint,
    inbound: &Inbound<'_>,
    model: &str,
    headers: &HeaderMap,
) -> Result<Transcoder, LlmError> {
    Ok(match (plan, endpoint) {
        (Plan::Passthrough, Endpoint::ChatCompletions) => {
            Transcoder::OpenAiChat(SseRelay::new(!inbound.payload.client_wants_usage))
        }
        (Plan::Passthrough, Endpoint::Responses) => {
            Transcoder::Observe(Observer::new(Box::<ResponsesObserver>::default()))
        }
        (Plan::Passthrough, _) => {
            Transcoder::Observe(Observer::new(upstream.stream_decoder(model, headers)))
        }
        _ => Transcoder::Translate(Box::new(Translator::new(
            upstream.stream_decoder(model, headers),
            endpoint.stream_encoder(inbound.canonical()?),
        ))),
    })
}

fn response_head(route: &Route, provider: &str, stream: bool) -> Response<()> {
    let mut head = Response::new(());
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
/// 529 is Anthropic's "overloaded".
fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        401 | 403 | 429 | 500 | 502 | 503 | 504 | 529
    )
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

/// True when `body` is an error object in the client's own format, which a
/// passthrough may then forward as is.
fn in_client_shape(endpoint: Endpoint, body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let has_message = value
        .pointer("/error/message")
        .is_some_and(Value::is_string);
    if endpoint.is_anthropic() {
        has_message && value.get("type").and_then(Value::as_str) == Some("error")
    } else {
        has_message
    }
}

/// What the client sees when the last backend answered with an error.
fn upstream_failure(
    endpoint: Endpoint,
    plan: Plan,
    upstream: &Upstream,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<ResponseBody> {
    let provider = &upstream.config.name;
    let readable = serde_json::from_slice::<Value>(body).is_ok();
    let parsed = upstream.translate_error(status.as_u16(), headers, body);
    let detail = if readable {
        format!(": {}", parsed.message)
    } else {
        String::new()
    };
    match status.as_u16() {
        // The provider rejected *our* key: the client's request is fine.
        401 | 403 => endpoint.error(&ApiError::bad_gateway(format!(
            "provider {provider} rejected the gateway's credentials (status {status})"
        ))),
        503 | 529 => endpoint.error(&ApiError::unavailable(format!(
            "provider {provider} is unavailable{detail}"
        ))),
        504 => endpoint.error(&ApiError::timeout(format!(
            "provider {provider} timed out{detail}"
        ))),
        s if s >= 500 => endpoint.error(&ApiError::bad_gateway(format!(
            "provider {provider} failed with status {status}{detail}"
        ))),
        // 4xx (incl. 429) already in the client's shape passes through unchanged.
        _ if plan == Plan::Passthrough && in_client_shape(endpoint, body) => {
            let mut response = json(status, body.clone());
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = headers
                    .get(header::RETRY_AFTER)
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static("1"));
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after);
            }
            response
        }
        _ if readable && upstream.wire != (Wire::OpenAi { responses: false })
            || plan == Plan::Translate =>
        {
            endpoint.llm_error(&parsed)
        }
        _ => endpoint.error(&ApiError {
            status,
            kind: "invalid_request_error",
            code: "upstream_rejected",
            message: format!("provider {provider} rejected the request with status {status}"),
            param: None,
        }),
    }
}
