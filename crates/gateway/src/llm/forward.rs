//! Stage `provider`: try the route's backends in the selected order until one
//! answers: build each attempt's request (passthrough or translated), send it
//! within the deadlines, fall back on connection errors, 429 and 5xx, and turn
//! the answer into what the relay delivers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;
use tollgate_config::snapshot::{Resilience, Route, UpstreamErrors};
use tollgate_llm::LlmError;

use super::ingress::Inbound;
use super::relay::{
    Observer, Output, Relay, ResponsesObserver, StreamError, StreamSetup, Transcoder, Translator,
};
use super::retry::{self, Fault, Next};
use super::{Answer, Failure, sanitize, tokens};
use crate::context::RequestContext;
use crate::dialect::Endpoint;
use crate::error::ApiError;
use crate::http::{ResponseBody, full, json};
use crate::providers::fair::Refusal;
use crate::providers::http::{UpstreamError, send};
use crate::providers::{InvalidBody, Plan, Upstream};
use crate::runtime::Runtime;
use crate::sse::SseRelay;

/// Largest upstream error body read back, to quote it to the client.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest successful upstream body accepted (a big embeddings batch is tens of MB).
const MAX_RESPONSE_BODY: usize = 256 * 1024 * 1024;

pub async fn forward(
    context: &mut RequestContext,
    runtime: &Arc<Runtime>,
    route: &Route,
    inbound: &Inbound<'_>,
    order: &[usize],
    client_headers: &HeaderMap,
) -> Result<Answer, Failure> {
    let endpoint = context.endpoint;
    let stream = inbound.payload.stream;
    let resilience = &route.resilience;
    // One budget for the whole request, across retries and fallbacks; each
    // attempt is further bounded by its own timeout.
    let budget_ms = route
        .request_timeout_ms
        .unwrap_or(runtime.snapshot.config.limits.request_timeout_ms);
    let overall = Instant::now() + Duration::from_millis(budget_ms);
    let mut last_error: Failure =
        ApiError::unavailable(format!("route {} has no available backend", route.name)).into();
    let mut cursor = Cursor::new(route, order);
    while let Some(index) = cursor.current() {
        let another_backend = cursor.another_backend();
        let backend = &route.backends[index];
        let upstream = &runtime.upstreams[backend.provider];
        let provider = &*upstream.config.name;
        let model: Arc<str> = if backend.pass_model {
            Arc::from(inbound.payload.model.as_str())
        } else {
            backend.model.clone()
        };
        let catalog = upstream.config.models.get(&*model);
        let pricing = catalog.map(|m| m.pricing);
        let window = catalog.and_then(|m| m.context_window);
        context.attempt(&upstream.config.name, model.clone(), pricing);
        let model = &*model;

        let plan = match upstream.plan(endpoint) {
            // A guarded request goes out from its canonical form.
            Ok(Plan::Passthrough) if inbound.guarded => Plan::Translate,
            Ok(plan) => plan,
            Err(error) => {
                context.attempt_failed("unsupported");
                last_error = error.into();
                cursor.move_on();
                continue;
            }
        };
        if plan == Plan::Local {
            let tokenizer = tokens::Tokenizer::for_model(upstream.config.provider_type, model);
            return tokens::count_locally(inbound, tokenizer);
        }
        // Context-window fallback (routes with `contextFallback` only): a
        // request that cannot fit is not sent to be refused.
        if resilience.has_long_context
            && endpoint != Endpoint::Embeddings
            && let Some(window) = window
            && !fits(inbound, upstream, model, window)?
        {
            context.attempt_failed("context_window");
            cursor.too_long = true;
            last_error = ApiError::invalid_request(
                "context_length_exceeded",
                format!(
                    "the request is longer than the {window}-token context window of model {model}"
                ),
            )
            .into();
            cursor.move_on();
            continue;
        }

        // Only the last backend queues: with another one left, falling back
        // at once beats waiting for a slot here.
        let acquired = upstream
            .acquire(
                &context.principal,
                !another_backend,
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
                cursor.move_on();
                continue;
            }
        };
        let body = match plan {
            Plan::Translate if endpoint == Endpoint::CountTokens => {
                Bytes::from(upstream.translate_count_tokens(&inbound.canonical()?.request, model)?)
            }
            Plan::Translate => {
                Bytes::from(upstream.translate_request(&inbound.canonical()?.request, model)?)
            }
            _ => inbound.payload.to_upstream(model)?,
        };
        // Outlier ejection and quota: a provider that keeps failing or has
        // no quota left is passed over at once (half-open: this is the
        // probe), but only while another backend remains. The last one is
        // tried whatever its state (as a proxy in panic mode does): skipping
        // it would only replace the provider's own answer with the
        // gateway's.
        let health = if another_backend {
            context
                .gateway
                .provider_health
                .check(&upstream.config, std::time::Instant::now())
        } else {
            Ok(false)
        };
        match health {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(%provider, "probing a provider whose circuit is open");
                context
                    .gateway
                    .metrics
                    .circuit_changed(&upstream.config.name, crate::breaker::State::HalfOpen);
            }
            Err(skip) => {
                let (reason, error) = skipped(provider, skip);
                context.attempt_failed(reason);
                context
                    .gateway
                    .metrics
                    .count_provider_skip(&upstream.config.name, reason);
                last_error = error.into();
                cursor.move_on();
                continue;
            }
        }
        let request = upstream.request(endpoint, plan, model, stream, body, client_headers)?;
        let started = Instant::now();
        let limits = AttemptLimits::new(resilience, upstream, stream, started, overall, budget_ms);
        let flight = upstream.start_flight();
        let response = match send(upstream.client(), request, limits.first_output).await {
            Ok(response) => response,
            Err(UpstreamError::Timeout) => {
                context.attempt_failed("timeout");
                note_health(context, upstream, false);
                last_error = limits.error(provider, true).into();
                // Nothing is in flight while waiting to retry.
                drop((flight, permit));
                if Instant::now() < overall && cursor.again(Fault::Transient, overall).await {
                    continue;
                }
                return Err(last_error);
            }
            Err(error) => {
                context.attempt_failed("connect");
                note_health(context, upstream, false);
                tracing::warn!(%provider, %error, "upstream attempt failed");
                let policy = &runtime.snapshot.config.upstream_errors;
                last_error = if policy.pass_through {
                    ApiError::bad_gateway(format!("provider {provider}: {error}"))
                } else {
                    ApiError::bad_gateway(format!(
                        "provider {provider} could not be reached ({})",
                        sanitize::connect_failure(&error.to_string())
                    ))
                }
                .into();
                drop((flight, permit));
                if cursor.again(Fault::Transient, overall).await {
                    continue;
                }
                return Err(last_error);
            }
        };
        let status = response.status();
        if status.is_success() {
            note_quota(context, upstream, status, response.headers());
            let mut head = response_head(route, provider, stream);
            if let Some(flags) = context.guard.as_ref().filter(|g| !g.flags.is_empty())
                && let Ok(value) = http::HeaderValue::from_str(&flags.flags.join(","))
            {
                head.headers_mut().insert(super::guard::FLAGS_HEADER, value);
            }
            if stream && !upstream.is_stream_answer(response.headers()) {
                context.attempt_failed("not_a_stream");
                note_health(context, upstream, false);
                last_error = ApiError::bad_gateway(format!(
                    "provider {provider} answered a stream request with something other than a stream"
                ))
                .into();
                if !another_backend {
                    return Err(last_error);
                }
                cursor.move_on();
                continue;
            }
            if stream {
                let output_allowance = context.admission.as_ref().and_then(|a| a.stream_allowance);
                let mut transcoder =
                    transcoder(upstream, plan, endpoint, inbound, model, response.headers())?;
                if let (Transcoder::Translate(translator), Some(guard)) =
                    (&mut transcoder, &context.guard)
                {
                    translator.guard = super::guard::StreamGuard::new(guard, runtime);
                }
                if output_allowance.is_some()
                    && let Transcoder::OpenAiChat(relay) = transcoder
                {
                    transcoder = Transcoder::OpenAiChat(relay.counting_output());
                }
                let mut setup = StreamSetup {
                    transcoder,
                    first_chunk_deadline: limits.first_output,
                    idle: route.stream_idle_timeout_ms.map(Duration::from_millis),
                    stream_deadline: limits.attempt,
                    permit,
                    flight,
                    write_timeout: Duration::from_millis(
                        runtime.snapshot.config.limits.stream_write_timeout_ms,
                    ),
                    output_allowance,
                };
                let mut relay = Relay::new(response.into_body(), &mut setup, endpoint);
                // Nothing is sent until the stream produced something, so a
                // stream that fails first gets a proper status (and another
                // attempt may still answer). Once output reached the client
                // it is never retried.
                match relay.first_output().await {
                    Ok(first) => {
                        note_health(context, upstream, true);
                        return Ok(Answer::Stream(head, Box::new((relay, first, setup))));
                    }
                    Err(StreamError::Provider(error)) => {
                        // It answered, with an error of its own: up and running.
                        note_health(context, upstream, true);
                        context.attempt_failed("provider_error");
                        return Err(error.into());
                    }
                    Err(error) => {
                        context.attempt_failed(error.reason());
                        note_health(context, upstream, false);
                        let timed_out = matches!(error, StreamError::Timeout);
                        last_error = if timed_out {
                            limits.error(provider, true).into()
                        } else {
                            ApiError::bad_gateway(format!(
                                "provider {provider} ended the stream before any output: {error}"
                            ))
                            .into()
                        };
                        if timed_out && Instant::now() >= overall {
                            return Err(last_error);
                        }
                        drop(setup);
                        if cursor.again(Fault::Transient, overall).await {
                            continue;
                        }
                        return Err(last_error);
                    }
                }
            }
            let limited = Limited::new(response.into_body(), MAX_RESPONSE_BODY);
            // Nothing has reached the client yet: a broken, late or
            // unreadable answer is retried or falls back like a failed
            // attempt.
            let collected = tokio::time::timeout_at(limits.attempt, limited.collect()).await;
            drop(flight);
            let failure: Failure = match collected {
                Ok(Ok(collected)) => {
                    match answer_body(
                        context,
                        runtime,
                        upstream,
                        plan,
                        inbound,
                        model,
                        collected.to_bytes(),
                    )
                    .await
                    {
                        Ok(body) => {
                            note_health(context, upstream, true);
                            let body = Output::emit(context, body, false);
                            let (mut head, ()) = head.into_parts();
                            usage_headers(context, &mut head.headers);
                            return Ok(Answer::Full(
                                Response::from_parts(head, full(body)),
                                status.as_u16(),
                            ));
                        }
                        Err(failure) => {
                            context.attempt_failed("invalid_body");
                            note_health(context, upstream, false);
                            failure
                        }
                    }
                }
                Ok(Err(error)) => {
                    context.attempt_failed("broken_body");
                    note_health(context, upstream, false);
                    ApiError::bad_gateway(format!(
                        "provider {provider} broke off the response: {error}"
                    ))
                    .into()
                }
                Err(_) => {
                    context.attempt_failed("timeout");
                    note_health(context, upstream, false);
                    limits.error(provider, false).into()
                }
            };
            if Instant::now() >= overall {
                return Err(failure);
            }
            last_error = failure;
            drop(permit);
            if cursor.again(Fault::Transient, overall).await {
                continue;
            }
            return Err(last_error);
        }
        // The error body is read before deciding: some providers say "your
        // key is wrong" with a 400 (Gemini's API_KEY_INVALID), which is the
        // gateway's fault and worth another backend, like a 401.
        let headers = response.headers().clone();
        let body = read_error_body(response.into_body(), limits.attempt).await;
        drop((flight, permit));
        let status = effective_status(upstream, status, &headers, &body);
        context.attempt_failed(status_reason(status));
        let reset = note_quota(context, upstream, status, &headers);
        // Server errors and a refused key count against the provider; a
        // rate limit is its quota (skipped until the reset), and other
        // client errors are the request's.
        let failed = status.is_server_error() || matches!(status.as_u16(), 401 | 403);
        note_health(context, upstream, !failed);
        let go_on = match status.as_u16() {
            // Asking again will not change the key's answer.
            401 | 403 => {
                cursor.move_on();
                another_backend
            }
            429 => cursor.again(Fault::RateLimited(reset), overall).await,
            s if is_transient(s) => cursor.again(Fault::Transient, overall).await,
            // Too long for this model: the route's larger models may take it.
            _ if resilience.has_long_context && is_context_overflow(status, &body) => {
                cursor.too_long = true;
                cursor.move_on();
                cursor.current().is_some()
            }
            _ => false,
        };
        if go_on {
            tracing::debug!(%provider, %status, "trying again or falling back");
            continue;
        }
        let policy = &runtime.snapshot.config.upstream_errors;
        let response = upstream_failure(endpoint, plan, upstream, policy, status, &headers, &body);
        let status = response.status().as_u16();
        return Ok(Answer::Full(response, status));
    }
    Err(last_error)
}

/// Where a request stands in its attempt order: the backend, how often it
/// was retried, and whether the request proved too long for the route's
/// ordinary models (which makes its `contextFallback` models eligible).
struct Cursor<'a> {
    route: &'a Route,
    order: &'a [usize],
    position: usize,
    retried: u32,
    too_long: bool,
}

impl<'a> Cursor<'a> {
    fn new(route: &'a Route, order: &'a [usize]) -> Self {
        Self {
            route,
            order,
            position: 0,
            retried: 0,
            too_long: false,
        }
    }

    fn eligible(&self, index: usize) -> bool {
        self.too_long || !self.route.backends[index].long_context
    }

    /// The backend to try now, skipping long-context models the request
    /// does not need.
    fn current(&mut self) -> Option<usize> {
        while let Some(&index) = self.order.get(self.position) {
            if self.eligible(index) {
                return Some(index);
            }
            self.position += 1;
        }
        None
    }

    /// True when an eligible backend remains after the current one.
    fn another_backend(&self) -> bool {
        self.order
            .get(self.position + 1..)
            .is_some_and(|rest| rest.iter().any(|&index| self.eligible(index)))
    }

    fn move_on(&mut self) {
        self.position += 1;
        self.retried = 0;
    }

    /// After a failed attempt: waits out the backoff and returns true to
    /// retry the same backend, or moves on and returns whether another
    /// backend remains.
    async fn again(&mut self, fault: Fault, overall: Instant) -> bool {
        let another = self.another_backend();
        let next = retry::after_failure(
            &self.route.resilience,
            self.retried,
            fault,
            another,
            overall.saturating_duration_since(Instant::now()),
            &mut rand::rng(),
        );
        match next {
            Next::Retry(wait) => {
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "retrying the same backend"
                );
                tokio::time::sleep(wait).await;
                self.retried += 1;
                true
            }
            Next::Move => {
                self.move_on();
                another
            }
        }
    }
}

/// One attempt's deadlines: for its first output (headers, and for a
/// stream its first chunk) and for the whole attempt.
struct AttemptLimits {
    first_output: Instant,
    attempt: Instant,
    /// Which limit ends the attempt, for the error: milliseconds and name.
    attempt_limit: (u64, &'static str),
    first_token_ms: Option<u64>,
}

impl AttemptLimits {
    fn new(
        resilience: &Resilience,
        upstream: &Upstream,
        stream: bool,
        started: Instant,
        overall: Instant,
        budget_ms: u64,
    ) -> Self {
        let (attempt_ms, which) = match resilience.attempt_timeout_ms {
            Some(ms) => (ms, "the route's attempt timeout"),
            None => (
                upstream.config.request_timeout_ms,
                "the provider's request timeout",
            ),
        };
        let own = started + Duration::from_millis(attempt_ms);
        let attempt_limit = if own < overall {
            (attempt_ms, which)
        } else {
            (budget_ms, "the route's request timeout")
        };
        let attempt = overall.min(own);
        let first_token_ms = resilience
            .first_token_timeout_ms
            .filter(|&ms| stream && started + Duration::from_millis(ms) < attempt);
        let first_output = first_token_ms.map_or(attempt, |ms| started + Duration::from_millis(ms));
        Self {
            first_output,
            attempt,
            attempt_limit,
            first_token_ms,
        }
    }

    /// The timeout error; `first`: nothing had arrived yet.
    fn error(&self, provider: &str, first: bool) -> ApiError {
        if first && let Some(ms) = self.first_token_ms {
            return ApiError::timeout(format!(
                "provider {provider} sent no output within {ms} ms (the route's first-token timeout)"
            ));
        }
        let (limit, which) = self.attempt_limit;
        ApiError::timeout(format!(
            "provider {provider} did not answer within {limit} ms ({which})"
        ))
    }
}

/// False when the request cannot fit `window` tokens of `model`: its
/// prompt's estimate plus the output it asks for. The byte length bounds
/// the count from above, so only a body near the window is counted.
fn fits(
    inbound: &Inbound<'_>,
    upstream: &Upstream,
    model: &str,
    window: u64,
) -> Result<bool, Failure> {
    let canonical = inbound.canonical()?;
    let output = canonical.request.max_output_tokens().unwrap_or(0);
    if (inbound.body_len() as u64).saturating_add(output) < window {
        return Ok(true);
    }
    let tokenizer = tokens::Tokenizer::for_model(upstream.config.provider_type, model);
    let prompt = tokens::estimate(&canonical.request, tokenizer);
    Ok(prompt.saturating_add(output) <= window)
}

/// True when a provider refused the request as too long for the model
/// (OpenAI's `context_length_exceeded`, Anthropic's "prompt is too long",
/// Gemini's and Bedrock's token-limit messages).
fn is_context_overflow(status: StatusCode, body: &[u8]) -> bool {
    if !matches!(status.as_u16(), 400 | 413) {
        return false;
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context window",
        "prompt is too long",
        "input is too long",
        "too many input tokens",
        "exceeds the maximum number of tokens",
        "input token count",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// A full success answer, in the client's format, with its usage recorded.
async fn answer_body(
    context: &mut RequestContext,
    runtime: &Runtime,
    upstream: &Upstream,
    plan: Plan,
    inbound: &Inbound<'_>,
    model: &str,
    body: Bytes,
) -> Result<Bytes, Failure> {
    // A guarded count_tokens went out translated, but its answer is a
    // count in the client's own format.
    if plan == Plan::Translate && context.endpoint != Endpoint::CountTokens {
        let mut answer = upstream.translate_response(&body, model)?;
        context.usage = answer.usage;
        if let Some(guard) = &mut context.guard {
            super::guard::moderate_answer(guard, runtime, &mut answer).await;
            super::guard::filter_answer(guard, &mut answer);
        }
        return Ok(Bytes::from(
            context.endpoint.render(&answer, inbound.canonical()?),
        ));
    }
    context.usage = upstream
        .passthrough_usage(context.endpoint, &body)
        .map_err(|InvalidBody| {
            ApiError::bad_gateway(format!(
                "provider {} answered with a body that is not JSON",
                upstream.config.name
            ))
        })?;
    Ok(body)
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

/// What a full answer used and cost, for the client's own accounting:
/// `x-tollgate-input-tokens`, `x-tollgate-output-tokens`, and
/// `x-tollgate-cost-usd` when the catalog prices the model.
fn usage_headers(context: &RequestContext, headers: &mut HeaderMap) {
    let Some(usage) = &context.usage else { return };
    headers.insert(
        "x-tollgate-input-tokens",
        HeaderValue::from(usage.prompt_tokens),
    );
    headers.insert(
        "x-tollgate-output-tokens",
        HeaderValue::from(usage.completion_tokens),
    );
    if let Some(pricing) = context.pricing {
        let cost = pricing.cost(
            usage.prompt_tokens,
            usage.cached_tokens(),
            usage.completion_tokens,
        );
        if let Ok(value) = HeaderValue::from_str(&format!("{cost:.6}")) {
            headers.insert("x-tollgate-cost-usd", value);
        }
    }
}

/// Records an attempt's outcome in its provider's circuit breaker, shared by
/// every request on this replica.
fn note_health(context: &RequestContext, upstream: &Upstream, success: bool) {
    let gateway = &context.gateway;
    if let Some(transition) =
        gateway
            .provider_health
            .record_outcome(&upstream.config, success, std::time::Instant::now())
    {
        let provider = &upstream.config.name;
        match transition.to {
            crate::breaker::State::Open => {
                tracing::warn!(%provider, "provider circuit opened: its requests fall back until a probe succeeds")
            }
            state => tracing::info!(%provider, state = state.as_str(), "provider circuit changed"),
        }
        gateway.metrics.circuit_changed(provider, transition.to);
    }
}

/// A 429's reset, or a success saying the allowance is spent: the provider
/// is skipped until then.
fn note_quota(
    context: &RequestContext,
    upstream: &Upstream,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Duration> {
    let reset = crate::providers::health::quota_reset(
        status.as_u16(),
        headers,
        std::time::SystemTime::now(),
    );
    if let Some(wait) = reset {
        tracing::debug!(provider = %upstream.config.name, wait_ms = wait.as_millis() as u64, "provider quota spent");
        context.gateway.provider_health.quota_spent(
            &upstream.config,
            wait,
            std::time::Instant::now(),
        );
    }
    reset
}

/// The reason and the error of an attempt not made (see
/// [`crate::providers::health`]).
fn skipped(provider: &str, skip: crate::providers::health::Skip) -> (&'static str, ApiError) {
    use crate::providers::health::Skip;
    match skip {
        Skip::CircuitOpen(wait) => (
            "circuit_open",
            ApiError {
                retry_after_s: Some(wait.as_secs().max(1)),
                ..ApiError::unavailable(format!(
                    "provider {provider} is failing and is skipped for {}s (circuit open)",
                    wait.as_secs().max(1)
                ))
            },
        ),
        Skip::QuotaSpent(wait) => (
            "quota",
            ApiError {
                retry_after_s: Some(wait.as_secs().max(1)),
                ..ApiError::overloaded(format!(
                    "provider {provider} has no quota left for {}s",
                    wait.as_secs().max(1)
                ))
            },
        ),
    }
}

/// Server errors after which the same backend, or another, may succeed
/// (529 is Anthropic's "overloaded"); 501 and the like will not change.
fn is_transient(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504 | 529)
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

/// The status an error answer stands for: a refused credential is a 401
/// whatever status the provider chose to say it with.
fn effective_status(
    upstream: &Upstream,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
) -> StatusCode {
    if status == StatusCode::BAD_REQUEST {
        let parsed = upstream.translate_error(status.as_u16(), headers, body);
        if parsed.kind == tollgate_llm::ErrorKind::Authentication {
            return StatusCode::UNAUTHORIZED;
        }
    }
    status
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
    policy: &UpstreamErrors,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<ResponseBody> {
    let provider = &upstream.config.name;
    let readable = serde_json::from_slice::<Value>(body).is_ok();
    let mut parsed = upstream.translate_error(status.as_u16(), headers, body);
    if !policy.pass_through {
        if status.is_server_error() || matches!(status.as_u16(), 401 | 403) {
            tracing::warn!(%provider, %status, message = %parsed.message, "provider error (not shown to the client)");
        }
        parsed.message = sanitize::scrub(&parsed.message);
    }
    let detail = if readable && policy.pass_through {
        format!(": {}", parsed.message)
    } else {
        String::new()
    };
    let retry_after = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
        let upstream = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok());
        HeaderValue::from(sanitize::retry_after(upstream, policy.max_retry_after_s))
    });
    let mut response = match status.as_u16() {
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
        // 4xx (incl. 429) already in the client's shape passes through, with
        // account identifiers masked unless the policy passes them.
        _ if plan == Plan::Passthrough && in_client_shape(endpoint, body) => {
            if policy.pass_through {
                json(status, body.clone())
            } else {
                json(status, scrub_error_body(body))
            }
        }
        _ if readable || plan == Plan::Translate => endpoint.llm_error(&parsed),
        _ => endpoint.error(&ApiError {
            status,
            kind: "invalid_request_error",
            code: "upstream_rejected",
            message: format!("provider {provider} rejected the request with status {status}"),
            param: None,
            retry_after_s: None,
        }),
    };
    if let Some(value) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The error body with `error.message` scrubbed and everything else (type,
/// code, param) kept as the provider wrote it.
fn scrub_error_body(body: &Bytes) -> Bytes {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    if let Some(message) = value.pointer_mut("/error/message")
        && let Some(text) = message.as_str()
    {
        *message = Value::String(sanitize::scrub(text));
    }
    serde_json::to_vec(&value).map_or_else(|_| body.clone(), Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::{Clients, PermitRegistry};
    use tollgate_api::ProviderType;
    use tollgate_config::snapshot::Provider;

    fn upstream(provider_type: ProviderType) -> Upstream {
        let config = Provider {
            name: "p".into(),
            provider_type,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            aws: None,
            region: None,
            data_region: None,
            api_version: None,
            azure_auth: None,
            connect_timeout_ms: 1000,
            request_timeout_ms: 1000,
            max_concurrent_requests: None,
            fairness: Default::default(),
            circuit_breaker: Default::default(),
            network: Default::default(),
            models: Default::default(),
        };
        Upstream::new(config, &Clients::new().unwrap(), &PermitRegistry::default()).unwrap()
    }

    fn failure(
        endpoint: Endpoint,
        status: u16,
        body: &'static str,
        pass_through: bool,
    ) -> (u16, Value, Option<String>) {
        let wire = if endpoint.is_anthropic() {
            ProviderType::Anthropic
        } else {
            ProviderType::OpenAI
        };
        let policy = UpstreamErrors {
            pass_through,
            max_retry_after_s: 60,
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("86400"));
        let response = upstream_failure(
            endpoint,
            Plan::Passthrough,
            &upstream(wire),
            &policy,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            &Bytes::from_static(body.as_bytes()),
        );
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = futures_util::FutureExt::now_or_never(response.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap(), retry)
    }

    const OPENAI_400: &str = r#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#;
    const OPENAI_429: &str = r#"{"error":{"message":"Rate limit reached in organization org-SECRET123 on tokens","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
    const OPENAI_500: &str = r#"{"error":{"message":"internal failure at shard eu-3 for org-SECRET123","type":"server_error"}}"#;

    #[test]
    fn statuses_map_and_client_errors_keep_their_shape() {
        let (status, body, _) = failure(Endpoint::ChatCompletions, 400, OPENAI_400, false);
        assert_eq!(status, 400);
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(
            failure(Endpoint::ChatCompletions, 401, OPENAI_400, false).0,
            502
        );
        assert_eq!(failure(Endpoint::ChatCompletions, 500, "", false).0, 502);
        assert_eq!(failure(Endpoint::ChatCompletions, 503, "", false).0, 503);
        assert_eq!(failure(Endpoint::ChatCompletions, 504, "", false).0, 504);
        let (status, body, _) = failure(Endpoint::ChatCompletions, 404, "<html>", false);
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "upstream_rejected");
    }

    #[test]
    fn sanitize_hides_server_detail_and_account_ids_and_caps_retry_after() {
        let (status, body, retry) = failure(Endpoint::ChatCompletions, 429, OPENAI_429, false);
        assert_eq!(status, 429);
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(
            body["error"]["type"], "tokens",
            "the provider's type is kept"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("org-SECRET123"), "{message}");
        assert_eq!(retry.as_deref(), Some("60"));

        let (_, body, _) = failure(Endpoint::ChatCompletions, 500, OPENAI_500, false);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("shard"), "{message}");

        let (_, body, _) = failure(Endpoint::ChatCompletions, 500, OPENAI_500, true);
        assert!(body["error"]["message"].as_str().unwrap().contains("shard"));
        let (_, body, _) = failure(Endpoint::ChatCompletions, 429, OPENAI_429, true);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("org-SECRET123")
        );
    }

    #[test]
    fn anthropic_clients_get_anthropic_errors() {
        let (status, body, _) = failure(
            Endpoint::Messages,
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: field required"}}"#,
            false,
        );
        assert_eq!(status, 400);
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["message"], "max_tokens: field required");
        let (status, body, _) = failure(Endpoint::Messages, 529, "", false);
        assert_eq!(status, 503);
        assert_eq!(body["error"]["type"], "overloaded_error");
    }
}
