//! Accept loop, routing and the plumbing shared by all endpoints.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::api_error::{ApiError, Flavor};
use crate::auth::{percent_decode, query_param};
use crate::body::MockBody;
use crate::config::{Behavior, MockConfig};
use crate::text::{Rng, StableHasher, mix64};
use crate::{anthropic, auth, bedrock, gemini, openai, responses, sigv4};

/// Largest request body accepted.
const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Shared, read-only server state plus one atomic counter for request ids.
#[derive(Debug)]
pub(crate) struct State {
    pub config: Arc<MockConfig>,
    models_body: Bytes,
    requests: AtomicU64,
    /// Per-process randomness for ids and unseeded error draws.
    process_key: u64,
    /// Sessions of 2025-11-25 MCP clients.
    pub mcp_sessions: crate::mcp::Sessions,
    /// Sessions of legacy HTTP+SSE (2024-11-05) MCP clients.
    pub mcp_sse_sessions: crate::mcp::SseSessions,
    /// `fail_times`: failures injected so far, by body hash.
    failures: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
}

/// Bodies whose `fail_times` failures are remembered; beyond it the memory
/// starts over (a test sends far fewer).
const MAX_REMEMBERED_FAILURES: usize = 10_000;

/// `created` timestamp of listed models; fixed so listings are reproducible.
pub(crate) const MODEL_CREATED: u64 = 1_700_000_000;

#[derive(Serialize)]
pub(crate) struct ModelObject<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

impl<'a> ModelObject<'a> {
    pub(crate) fn new(id: &'a str) -> Self {
        Self {
            id,
            object: "model",
            created: MODEL_CREATED,
            owned_by: "tollgate-mock",
        }
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

impl State {
    pub(crate) fn new(config: Arc<MockConfig>) -> Self {
        let list = ModelList {
            object: "list",
            data: config.models.iter().map(|m| ModelObject::new(m)).collect(),
        };
        let models_body = Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            config,
            models_body,
            requests: AtomicU64::new(0),
            process_key: RandomState::new().hash_one(nanos),
            mcp_sessions: crate::mcp::Sessions::default(),
            mcp_sse_sessions: crate::mcp::SseSessions::default(),
            failures: Default::default(),
        }
    }

    /// A fresh generator for things that should differ per request (ids).
    pub(crate) fn rng(&self) -> Rng {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        Rng::new(mix64(n ^ self.process_key))
    }

    /// Defaults from the config, overridden by `x-mock-*` headers.
    pub(crate) fn behavior(&self, headers: &HeaderMap) -> Result<Behavior, ApiError> {
        let mut behavior = Behavior::from_config(&self.config);
        behavior.apply_headers(headers)?;
        Ok(behavior)
    }

    /// Seed of generated content: same model and input give the same output.
    pub(crate) fn content_seed(&self, model: &str, parts: &[&[u8]]) -> u64 {
        let mut hasher = StableHasher::new(self.config.seed.unwrap_or(0)).write(model.as_bytes());
        for part in parts {
            hasher = hasher.write(part);
        }
        hasher.finish()
    }

    /// Decides whether this request fails: a forced `status` wins, otherwise
    /// `error_rate` is drawn (from the body hash when `--seed` is set).
    fn injected_status(&self, behavior: &Behavior, body: &[u8]) -> Option<StatusCode> {
        let status = match behavior.status {
            Some(status) if status < 300 => return None,
            Some(status) => status,
            None if behavior.error_rate <= 0.0 => return None,
            None => {
                let draw = match self.config.seed {
                    Some(seed) => Rng::new(StableHasher::new(seed).write(body).finish()).next_f64(),
                    None => self.rng().next_f64(),
                };
                if draw >= behavior.error_rate {
                    return None;
                }
                behavior.error_status
            }
        };
        if let Some(times) = behavior.fail_times {
            let key = StableHasher::new(0).write(body).finish();
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if failures.len() >= MAX_REMEMBERED_FAILURES {
                failures.clear();
            }
            let failed = failures.entry(key).or_default();
            if *failed >= times {
                return None;
            }
            *failed += 1;
        }
        StatusCode::from_u16(status).ok()
    }

    /// Waits out the header delay, then fails the request if an error is due.
    pub(crate) async fn gate(&self, behavior: &Behavior, body: &[u8]) -> Result<(), ApiError> {
        pause(behavior.header_delay).await;
        if let Some(window) = self.config.context_window {
            let tokens = body.len() as u64 / 4;
            if tokens > window {
                return Err(ApiError::context_length(window, tokens));
            }
        }
        match self.injected_status(behavior, body) {
            Some(status) => Err(ApiError::injected(status)),
            None => Ok(()),
        }
    }
}

pub(crate) async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// Total latency of a non-streamed answer: as if the tokens were generated.
pub(crate) fn generation_time(behavior: &Behavior, tokens: u64) -> Duration {
    let gaps = u32::try_from(tokens.saturating_sub(1)).unwrap_or(u32::MAX);
    behavior.ttft + behavior.token_delay.saturating_mul(gaps)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Appends `value` as JSON. Writing plain data into a `Vec` cannot fail.
pub(crate) fn push_json<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(buf, value);
}

/// Serialises a JSON answer. `disconnect_after` (any value) cuts the body in
/// half to simulate a provider dying mid-response.
pub(crate) fn json_response<T: Serialize>(
    value: &T,
    disconnect_after: Option<u32>,
) -> Response<MockBody> {
    let mut buf = Vec::with_capacity(512);
    push_json(&mut buf, value);
    let body = match disconnect_after {
        Some(_) => MockBody::truncated(Bytes::from(buf)),
        None => MockBody::full(buf),
    };
    with_content_type(body, "application/json")
}

pub(crate) fn sse_response(body: MockBody) -> Response<MockBody> {
    let mut response = with_content_type(body, "text/event-stream; charset=utf-8");
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn with_content_type(body: MockBody, content_type: &'static str) -> Response<MockBody> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

enum Route<'a> {
    Health,
    Models,
    Model(&'a str),
    ChatCompletions,
    Embeddings,
    Moderations,
    Responses,
    Messages,
    CountTokens,
    /// Azure: `deployment` is `None` on the v1 GA paths (model in the body).
    AzureChat(Option<&'a str>),
    AzureEmbeddings(Option<&'a str>),
    Gemini(&'a str, gemini::Method),
    /// Bedrock model id as sent (percent-encoded), and whether streamed.
    Converse(&'a str, bool),
}

impl Route<'_> {
    fn method(&self) -> Method {
        match self {
            Self::Health | Self::Models | Self::Model(_) => Method::GET,
            _ => Method::POST,
        }
    }

    fn flavor(&self) -> Flavor {
        match self {
            Self::Messages | Self::CountTokens => Flavor::Anthropic,
            Self::AzureChat(_) | Self::AzureEmbeddings(_) => Flavor::Azure,
            Self::Gemini(..) => Flavor::Gemini,
            Self::Converse(..) => Flavor::Bedrock,
            _ => Flavor::OpenAi,
        }
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    Some(match path {
        "/healthz" => Route::Health,
        "/v1/models" => Route::Models,
        "/v1/chat/completions" => Route::ChatCompletions,
        "/v1/embeddings" => Route::Embeddings,
        "/v1/moderations" => Route::Moderations,
        "/v1/responses" => Route::Responses,
        "/v1/messages" => Route::Messages,
        "/v1/messages/count_tokens" => Route::CountTokens,
        "/openai/v1/chat/completions" => Route::AzureChat(None),
        "/openai/v1/embeddings" => Route::AzureEmbeddings(None),
        _ => {
            if let Some(rest) = path.strip_prefix("/openai/deployments/") {
                let (deployment, op) = rest.split_once('/')?;
                if deployment.is_empty() {
                    return None;
                }
                return match op {
                    "chat/completions" => Some(Route::AzureChat(Some(deployment))),
                    "embeddings" => Some(Route::AzureEmbeddings(Some(deployment))),
                    _ => None,
                };
            }
            if let Some(rest) = path.strip_prefix("/model/") {
                let (model, op) = rest.rsplit_once('/')?;
                if model.is_empty() {
                    return None;
                }
                return match op {
                    "converse" => Some(Route::Converse(model, false)),
                    "converse-stream" => Some(Route::Converse(model, true)),
                    _ => None,
                };
            }
            let gemini = path
                .strip_prefix("/v1beta/models/")
                .or_else(|| path.strip_prefix("/v1/models/"))
                .and_then(|rest| rest.rsplit_once(':'))
                .and_then(|(model, method)| Some((model, gemini::Method::parse(method)?)));
            if let Some((model, method)) = gemini {
                if model.is_empty() {
                    return None;
                }
                return Some(Route::Gemini(model, method));
            }
            match path.strip_prefix("/v1/models/") {
                Some(id) if !id.is_empty() => Route::Model(id),
                _ => return None,
            }
        }
    })
}

/// Azure requires `api-version` on the deployment paths.
fn require_api_version(query: Option<&str>) -> Result<(), ApiError> {
    match query.and_then(|q| query_param(q, "api-version")) {
        Some(version) if !version.is_empty() => Ok(()),
        _ => {
            let mut err = ApiError::invalid(
                "Missing required query parameter: api-version. The api-version query parameter (?api-version=) is required for all requests.",
                None,
            );
            err.code = Some("MissingApiVersionParameter");
            Err(err)
        }
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if path == "/mcp" {
        return match read_body(body).await {
            Ok(bytes) => crate::mcp::handle(&state, &parts.method, &parts.headers, bytes).await,
            Err(err) => err.into_response(Flavor::OpenAi),
        };
    }
    if path == "/sse" || path == "/messages" {
        let session = parts
            .uri
            .query()
            .and_then(|q| query_param(q, "session_id"))
            .map(std::borrow::Cow::into_owned);
        return match read_body(body).await {
            Ok(bytes) => {
                crate::mcp::handle_legacy_sse(
                    &state,
                    path,
                    &parts.method,
                    &parts.headers,
                    session,
                    bytes,
                )
                .await
            }
            Err(err) => err.into_response(Flavor::OpenAi),
        };
    }
    let Some(route) = route(path) else {
        return ApiError::not_found(&parts.method, path).into_response(Flavor::OpenAi);
    };
    let flavor = route.flavor();
    if parts.method != route.method() {
        let allow = if route.method() == Method::GET {
            "GET"
        } else {
            "POST"
        };
        return ApiError::method_not_allowed(allow).into_response(flavor);
    }
    dispatch(route, &parts, body, &state)
        .await
        .unwrap_or_else(|err| err.into_response(flavor))
}

async fn dispatch(
    route: Route<'_>,
    parts: &http::request::Parts,
    body: Incoming,
    state: &State,
) -> Result<Response<MockBody>, ApiError> {
    let headers = &parts.headers;
    let query = parts.uri.query();
    let keys = &state.config.auth;
    match route {
        Route::Health => Ok(with_content_type(
            MockBody::full(Bytes::from_static(b"ok")),
            "text/plain; charset=utf-8",
        )),
        Route::Models => {
            auth::openai(keys.openai_key.as_deref(), headers)?;
            Ok(with_content_type(
                MockBody::full(state.models_body.clone()),
                "application/json",
            ))
        }
        Route::Model(id) => {
            auth::openai(keys.openai_key.as_deref(), headers)?;
            openai::model(state, id)
        }
        Route::ChatCompletions => {
            auth::openai(keys.openai_key.as_deref(), headers)?;
            openai::chat_completions(state, headers, None, read_body(body).await?).await
        }
        Route::Embeddings => {
            auth::openai(keys.openai_key.as_deref(), headers)?;
            openai::embeddings(state, headers, None, read_body(body).await?).await
        }
        Route::Moderations => {
            auth::openai(keys.openai_key.as_deref(), headers)?;
            openai::moderations(read_body(body).await?)
        }
        Route::Responses => {
            auth::openai(keys.openai_key.as_deref(), headers)?;
            responses::responses(state, headers, read_body(body).await?).await
        }
        Route::Messages => {
            auth::anthropic(keys.anthropic_key.as_deref(), headers)?;
            anthropic::messages(state, headers, read_body(body).await?).await
        }
        Route::CountTokens => {
            auth::anthropic(keys.anthropic_key.as_deref(), headers)?;
            anthropic::count_tokens(state, headers, read_body(body).await?).await
        }
        Route::AzureChat(deployment) | Route::AzureEmbeddings(deployment) => {
            if deployment.is_some() {
                require_api_version(query)?;
            }
            auth::azure(keys.azure_key.as_deref(), headers)?;
            let deployment = deployment.map(percent_decode);
            let bytes = read_body(body).await?;
            if matches!(route, Route::AzureChat(_)) {
                openai::chat_completions(state, headers, deployment.as_deref(), bytes).await
            } else {
                openai::embeddings(state, headers, deployment.as_deref(), bytes).await
            }
        }
        Route::Gemini(model, method) => {
            auth::gemini(keys.gemini_key.as_deref(), headers, query)?;
            let model = percent_decode(model);
            gemini::handle(
                state,
                headers,
                query,
                &model,
                method,
                read_body(body).await?,
            )
            .await
        }
        Route::Converse(model, stream) => {
            let bytes = read_body(body).await?;
            if let Some(creds) = &keys.bedrock {
                sigv4::verify(
                    creds,
                    &keys.bedrock_region,
                    &parts.method,
                    &parts.uri,
                    headers,
                    &bytes,
                    SystemTime::now(),
                )?;
            }
            let model = percent_decode(model);
            bedrock::converse(state, headers, &model, stream, bytes).await
        }
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
        )),
        Err(err) => Err(ApiError::invalid(
            format!("Failed to read request body: {err}"),
            None,
        )),
    }
}

/// Serves the mock on `listener` until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish (bounded by the config's
/// drain timeout).
pub async fn serve(
    listener: TcpListener,
    config: Arc<MockConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain_timeout = config.drain_timeout;
    let state = Arc::new(State::new(config));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // Streams are many small writes; Nagle would batch them.
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(%err, "set_nodelay failed");
                }
                let state = Arc::clone(&state);
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(handle(req, state).await) }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(%err, "connection closed with error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    // Legacy SSE streams end with their session, so connections can drain.
    state.mcp_sse_sessions.close_all();
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain_timeout,
            "drain timed out; abandoning remaining connections"
        );
    }
    Ok(())
}
