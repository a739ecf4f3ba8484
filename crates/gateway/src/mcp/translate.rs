//! The IO of translation between MCP eras (the rules are in
//! [`super::revisions`]): which era each backend speaks, as learnt on this
//! replica; the gateway's own legacy sessions with legacy backends on
//! behalf of modern callers; and sending a translated message and turning
//! its answer back into the client's era.
//!
//! A backend's era is learnt the way the spec has dual-era clients learn
//! it over HTTP: a modern request answered 400 without a modern error, or
//! an `initialize` answered 4xx, makes the gateway ask `server/discover`;
//! the answer settles it, and is remembered for [`ERA_FOR`]. Backends
//! that speak both eras are never translated for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::StreamBody;
use serde_json::{Value, json};
use tollgate_config::snapshot::{McpServer, Principal};

use super::backend::{self, BackendError, Outgoing, Sent, Target, base_headers};
use super::jsonrpc::{self, META_VERSION, MODERN, Message};
use super::revisions::{self, ClientMeta, Era, LEGACY, LegacyClientSession};
use super::{Refusal, SESSION_HEADER, events, filter, read_bounded, rpc_error};
use crate::http::{ResponseBody, box_body, full};
use crate::runtime::Gateway;

/// How long a learnt era is trusted before it is learnt again.
const ERA_FOR: Duration = Duration::from_secs(600);
/// How long a pooled legacy session is used after its last use.
const POOLED_FOR: Duration = Duration::from_secs(600);
/// Most pooled legacy sessions on a replica.
const MAX_POOLED: usize = 4096;

/// How a client's message reaches its backend.
#[derive(Debug, Clone, Copy)]
pub(super) enum Speech<'a> {
    /// As the client speaks, in its backend session, if any.
    Direct(backend::BackendSession<'a>),
    /// A modern client to a legacy backend, through the gateway's pooled
    /// session for the caller.
    ModernToLegacy(&'a ClientMeta),
    /// A legacy client to a modern backend.
    LegacyToModern(&'a LegacyClientSession),
}

/// Each backend's era, as learnt on this replica.
#[derive(Debug, Default)]
pub struct Eras {
    known: Mutex<HashMap<Arc<str>, (Era, Instant)>>,
}

impl Eras {
    pub(super) fn of(&self, server: &McpServer) -> Option<Era> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .get(&server.name)
            .filter(|(_, at)| at.elapsed() < ERA_FOR)
            .map(|(era, _)| *era)
    }

    fn learn(&self, server: &McpServer, era: Era) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let before = known.insert(server.name.clone(), (era, Instant::now()));
        if before.map(|(e, _)| e) != Some(era) && era != Era::Both {
            tracing::info!(server = %server.name, ?era, "MCP backend speaks one era only; the gateway translates for clients of the other");
        }
    }
}

/// A legacy session the gateway holds with a legacy backend for modern
/// callers with one principal and one client description.
#[derive(Debug, Clone)]
struct Pooled {
    endpoint: usize,
    /// The backend's session id, if it keeps sessions.
    id: Option<String>,
    version: String,
    /// The backend's `initialize` result.
    initialized: Arc<Value>,
    used: Instant,
}

/// The gateway's pooled legacy sessions, by server, caller and client.
#[derive(Debug, Default)]
pub struct LegacySessions {
    pool: Mutex<HashMap<String, Pooled>>,
}

impl LegacySessions {
    fn key(server: &McpServer, principal: Option<&Principal>, client: &ClientMeta) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}",
            server.name,
            super::session::caller_id(principal),
            serde_json::to_string(client).unwrap_or_default()
        )
    }

    fn get(&self, key: &str) -> Option<Pooled> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let pooled = pool.get_mut(key)?;
        if pooled.used.elapsed() > POOLED_FOR {
            pool.remove(key);
            return None;
        }
        pooled.used = Instant::now();
        Some(pooled.clone())
    }

    fn put(&self, key: String, pooled: Pooled) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() >= MAX_POOLED && !pool.contains_key(&key) {
            pool.retain(|_, p| p.used.elapsed() <= POOLED_FOR);
            if pool.len() >= MAX_POOLED
                && let Some(oldest) = pool
                    .iter()
                    .min_by_key(|(_, p)| p.used)
                    .map(|(k, _)| k.clone())
            {
                pool.remove(&oldest);
            }
        }
        pool.insert(key, pooled);
    }

    fn forget(&self, key: &str) {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// Learns `server`'s era from its `server/discover` (asked with the
/// client's info) after a refusal that may have been about the era;
/// `None` when the backend could not be reached, which proves nothing.
/// Also the discovery itself, when there was one.
async fn learn_era(
    gateway: &Gateway,
    server: &McpServer,
    client: &ClientMeta,
) -> Option<(Era, Option<Value>)> {
    let discovered = match discover(gateway, server, client).await {
        Ok(result) => Some(result),
        Err(BackendError::NotSent(_) | BackendError::CircuitOpen(_) | BackendError::Timeout) => {
            return None;
        }
        Err(_) => None,
    };
    let era = Era::of_discovery(discovered.as_ref());
    gateway.mcp_eras.learn(server, era);
    Some((era, discovered))
}

/// After a modern request was refused with a 400 that may mean the backend
/// is legacy-only: whether it is.
pub(super) async fn confirm_legacy_only(
    gateway: &Gateway,
    server: &McpServer,
    client: &ClientMeta,
) -> bool {
    matches!(
        learn_era(gateway, server, client).await,
        Some((Era::Legacy, _))
    )
}

/// After `initialize` was refused: the backend's discovery, when it shows
/// the backend is modern-only.
pub(super) async fn confirm_modern_only(
    gateway: &Gateway,
    server: &McpServer,
    client: &ClientMeta,
) -> Option<Value> {
    match learn_era(gateway, server, client).await {
        Some((Era::Modern, discovered)) => discovered,
        _ => None,
    }
}

/// The backend's `server/discover` result, asked with the client's info.
async fn discover(
    gateway: &Gateway,
    server: &McpServer,
    client: &ClientMeta,
) -> Result<Value, BackendError> {
    let body = revisions::to_modern(
        &json!({"jsonrpc": "2.0", "id": "tollgate-discover", "method": "server/discover"}),
        client,
    );
    let headers = modern_headers("server/discover", None);
    exchange(gateway, server, &headers, None, Target::Any, &body, true)
        .await
        .map(|exchanged| exchanged.result)
}

/// How [`exchange`] reports a JSON-RPC error answer.
const ANSWERED_WITH_ERROR: &str = "it answered with an error";

/// A backend's answer to a request the gateway made itself.
struct Exchanged {
    result: Value,
    headers: HeaderMap,
    endpoint: usize,
}

/// Sends one request the gateway makes itself and returns its result.
async fn exchange(
    gateway: &Gateway,
    server: &McpServer,
    headers: &HeaderMap,
    session: Option<&str>,
    target: Target,
    body: &Value,
    retryable: bool,
) -> Result<Exchanged, BackendError> {
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let deadline = backend::deadline(server);
    let outgoing = Outgoing {
        method: Method::POST,
        headers,
        session,
        body: Bytes::from(body.to_string()),
    };
    let sent = backend::send(gateway, server, target, &outgoing, deadline, retryable).await?;
    let endpoint = sent.endpoint;
    let status = sent.response.status();
    let sse = is_sse(sent.response.headers());
    let (parts, body) = sent.response.into_parts();
    let bytes = read_bounded(box_body(body), deadline)
        .await
        .map_err(|why| BackendError::Broken(format!("its answer was {why}")))?;
    if !status.is_success() {
        return Err(BackendError::Unusable(format!(
            "it answered HTTP {}",
            status.as_u16()
        )));
    }
    let answer = filter::response_in(&bytes, sse, &id)
        .ok_or_else(|| BackendError::Unusable("its answer was not a JSON-RPC response".into()))?;
    if let Some(error) = answer.get("error") {
        let text = error.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(BackendError::Unusable(format!(
            "{ANSWERED_WITH_ERROR}: {text}"
        )));
    }
    Ok(Exchanged {
        result: answer.get("result").cloned().unwrap_or(Value::Null),
        headers: parts.headers,
        endpoint,
    })
}

/// The headers of a modern request.
fn modern_headers(method: &str, name: Option<&str>) -> HeaderMap {
    let mut headers = base_headers();
    headers.insert("mcp-protocol-version", HeaderValue::from_static(MODERN));
    if let Ok(value) = HeaderValue::from_str(method) {
        headers.insert("mcp-method", value);
    }
    if let Some(name) = name {
        headers.insert("mcp-name", super::aggregate::header_value(name));
    }
    headers
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
}

/// The pooled legacy session for this caller and client, opened (and
/// `notifications/initialized` sent) when there is none yet.
async fn legacy_session(
    gateway: &Gateway,
    server: &McpServer,
    key: &str,
    client: &ClientMeta,
) -> Result<Pooled, BackendError> {
    if let Some(pooled) = gateway.mcp_legacy_sessions.get(key) {
        return Ok(pooled);
    }
    let body = json!({"jsonrpc": "2.0", "id": "tollgate-initialize", "method": "initialize",
        "params": client.legacy_initialize()});
    let exchanged = exchange(
        gateway,
        server,
        &base_headers(),
        None,
        Target::Any,
        &body,
        true,
    )
    .await?;
    let id = exchanged
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let initialized = exchanged.result;
    let version = initialized
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(LEGACY)
        .to_string();
    let pooled = Pooled {
        endpoint: exchanged.endpoint,
        id,
        version,
        initialized: Arc::new(initialized),
        used: Instant::now(),
    };
    let mut headers = base_headers();
    if let Ok(version) = HeaderValue::from_str(&pooled.version) {
        headers.insert("mcp-protocol-version", version);
    }
    let initialized_note = Outgoing {
        method: Method::POST,
        headers: &headers,
        session: pooled.id.as_deref(),
        body: Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
    };
    let target = pooled_target(&pooled);
    backend::send(
        gateway,
        server,
        target,
        &initialized_note,
        backend::deadline(server),
        false,
    )
    .await?;
    tracing::debug!(server = %server.name, "opened a legacy MCP session for modern callers");
    gateway
        .mcp_legacy_sessions
        .put(key.to_string(), pooled.clone());
    Ok(pooled)
}

fn pooled_target(pooled: &Pooled) -> Target {
    match pooled.id {
        Some(_) => Target::Endpoint(pooled.endpoint),
        None => Target::Any,
    }
}

/// Sends `body` (a message in the client's era) the way `speech` says and
/// returns the backend's raw answer, with what [`answer`] needs to turn it
/// into the client's era. `method` and `headers` are the client's, for
/// `Direct` (translated messages are POSTs with headers of their own).
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    gateway: &Gateway,
    server: &McpServer,
    principal: Option<&Principal>,
    speech: Speech<'_>,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
    deadline: tokio::time::Instant,
    retryable: bool,
) -> Result<(Sent, Option<Arc<Value>>), BackendError> {
    match speech {
        Speech::Direct(session) => {
            let outgoing = Outgoing {
                method,
                headers,
                session: session.id,
                body,
            };
            backend::send(
                gateway,
                server,
                session.target,
                &outgoing,
                deadline,
                retryable,
            )
            .await
            .map(|sent| (sent, None))
        }
        Speech::ModernToLegacy(client) => {
            let message: Value = serde_json::from_slice(&body)
                .map_err(|_| BackendError::Unusable("unreadable message".into()))?;
            let legacy = Bytes::from(revisions::to_legacy(&message).to_string());
            let key = LegacySessions::key(server, principal, client);
            // A pooled session the backend has since forgotten (404) is
            // opened again, once; the message was not acted on.
            for attempt in 0..2 {
                let pooled = legacy_session(gateway, server, &key, client).await?;
                let mut legacy_headers = base_headers();
                if let Ok(version) = HeaderValue::from_str(&pooled.version) {
                    legacy_headers.insert("mcp-protocol-version", version);
                }
                let outgoing = Outgoing {
                    method: Method::POST,
                    headers: &legacy_headers,
                    session: pooled.id.as_deref(),
                    body: legacy.clone(),
                };
                let target = pooled_target(&pooled);
                let sent =
                    backend::send(gateway, server, target, &outgoing, deadline, retryable).await;
                let forgotten = match &sent {
                    Ok(sent) => sent.response.status() == StatusCode::NOT_FOUND,
                    Err(error) => matches!(error, BackendError::NotSent(_)),
                };
                if forgotten && attempt == 0 {
                    gateway.mcp_legacy_sessions.forget(&key);
                    continue;
                }
                return sent.map(|sent| (sent, Some(pooled.initialized.clone())));
            }
            Err(BackendError::Unusable(
                "the backend keeps forgetting its session".into(),
            ))
        }
        Speech::LegacyToModern(session) => {
            let message: Value = serde_json::from_slice(&body)
                .map_err(|_| BackendError::Unusable("unreadable message".into()))?;
            let method = message.get("method").and_then(Value::as_str).unwrap_or("");
            let parsed = Message::parse(&body).ok();
            let name = parsed.as_ref().and_then(Message::mirrored_name);
            let modern = revisions::to_modern(&message, &session.client);
            let outgoing = Outgoing {
                method: Method::POST,
                headers: &modern_headers(method, name),
                session: None,
                body: Bytes::from(modern.to_string()),
            };
            backend::send(gateway, server, Target::Any, &outgoing, deadline, retryable)
                .await
                .map(|sent| (sent, None))
        }
    }
}

/// The backend's answer to a translated request, in the client's era:
/// JSON read whole (it is one message), SSE rewritten event by event.
pub(super) async fn answer(
    speech: Speech<'_>,
    method: &str,
    params: &Value,
    sent: Sent,
    initialized: Option<Arc<Value>>,
    deadline: tokio::time::Instant,
) -> Response<ResponseBody> {
    let convert: Convert = match speech {
        Speech::Direct(_) => Box::new(Some),
        Speech::ModernToLegacy(_) => {
            let method = method.to_string();
            let keep_logs = revisions::wants_logs(params);
            let info = initialized.and_then(|i| i.get("serverInfo").cloned());
            Box::new(move |message| {
                revisions::modernize(message, &method, info.as_ref(), keep_logs)
            })
        }
        Speech::LegacyToModern(_) => Box::new(|message| Some(revisions::legacyize(message))),
    };
    let modern_client = matches!(speech, Speech::ModernToLegacy(_));
    converted(sent, deadline, convert, modern_client).await
}

/// A modern backend's answer as a legacy client gets it (for `/mcp`, whose
/// sessions may hold modern-only backends).
pub(super) async fn legacy_answer(
    sent: Sent,
    deadline: tokio::time::Instant,
) -> Response<ResponseBody> {
    converted(
        sent,
        deadline,
        Box::new(|message| Some(revisions::legacyize(message))),
        false,
    )
    .await
}

type Convert = Box<dyn Fn(Value) -> Option<Value> + Send + Sync>;

/// `sent`'s answer, each message `convert`ed. For a `modern_client`, a
/// JSON `-32601` comes with 404, as a modern server answers an unknown
/// method.
async fn converted(
    sent: Sent,
    deadline: tokio::time::Instant,
    convert: Convert,
    modern_client: bool,
) -> Response<ResponseBody> {
    let (parts, body) = sent.response.into_parts();
    let mut status = parts.status;
    let mut out = if is_sse(&parts.headers) {
        let frames = events::rewrite(body, move |event| match events::data_of(event) {
            Some(message) => convert(message).map(|m| events::with_data(event, &m)),
            None => Some(event.to_string()),
        });
        let mut out = Response::new(box_body(StreamBody::new(frames)));
        out.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        out
    } else {
        let bytes = read_bounded(box_body(body), deadline)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(&convert);
        let unknown_method = message
            .as_ref()
            .and_then(|m| m.pointer("/error/code"))
            .and_then(Value::as_i64)
            == Some(revisions::METHOD_NOT_FOUND);
        if modern_client && unknown_method && status == StatusCode::OK {
            status = StatusCode::NOT_FOUND;
        }
        let converted = message.map_or(bytes, |message| Bytes::from(message.to_string()));
        Response::new(full(converted))
    };
    *out.status_mut() = status;
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(value) = parts.headers.get(&name) {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

/// The gateway's own description, for requests it makes for itself
/// (prompt context): no capabilities, so a backend asks it nothing.
fn own_client() -> ClientMeta {
    ClientMeta {
        c: json!({}),
        i: json!({"name": "tollgate-gateway", "version": env!("CARGO_PKG_VERSION")}),
    }
}

/// Reads resource `uri` of `server` for the gateway itself and returns
/// the `resources/read` result. A backend that speaks the session era (or
/// both) is read in the gateway's pooled session, opened once and reused; a
/// modern-only one (it refuses `initialize`) with a sessionless request.
/// The MCPServer's credential, failover and circuit breaker apply as for
/// any client.
pub(crate) async fn read_resource(
    gateway: &Gateway,
    server: &McpServer,
    uri: &str,
) -> Result<Value, String> {
    const READ_ID: &str = "tollgate-context";
    let client = own_client();
    let body = json!({"jsonrpc": "2.0", "id": READ_ID, "method": "resources/read",
        "params": {"uri": uri}});
    let modern = || {
        let message = revisions::to_modern(&body, &client);
        let headers = modern_headers("resources/read", Some(uri));
        async move {
            exchange(gateway, server, &headers, None, Target::Any, &message, true)
                .await
                .map(|exchanged| exchanged.result)
        }
    };
    if gateway.mcp_eras.of(server) == Some(Era::Modern) {
        return modern().await.map_err(|e| e.to_string());
    }
    let key = LegacySessions::key(server, None, &client);
    // A pooled session the backend has since forgotten is opened again, once.
    let mut last = String::new();
    for _ in 0..2 {
        let pooled = match legacy_session(gateway, server, &key, &client).await {
            Ok(pooled) => pooled,
            Err(
                error @ (BackendError::NotSent(_)
                | BackendError::CircuitOpen(_)
                | BackendError::Timeout),
            ) => {
                return Err(error.to_string());
            }
            // `initialize` refused: a modern-only backend?
            Err(error) => {
                if confirm_modern_only(gateway, server, &client)
                    .await
                    .is_some()
                {
                    return modern().await.map_err(|e| e.to_string());
                }
                return Err(error.to_string());
            }
        };
        let mut headers = base_headers();
        if let Ok(version) = HeaderValue::from_str(&pooled.version) {
            headers.insert("mcp-protocol-version", version);
        }
        let target = pooled_target(&pooled);
        match exchange(
            gateway,
            server,
            &headers,
            pooled.id.as_deref(),
            target,
            &body,
            true,
        )
        .await
        {
            Ok(exchanged) => return Ok(exchanged.result),
            // The backend's own answer (an unknown resource): final.
            Err(BackendError::Unusable(text)) if text.starts_with(ANSWERED_WITH_ERROR) => {
                return Err(text);
            }
            Err(error @ (BackendError::CircuitOpen(_) | BackendError::Timeout)) => {
                return Err(error.to_string());
            }
            Err(error) => {
                gateway.mcp_legacy_sessions.forget(&key);
                last = error.to_string();
            }
        }
    }
    Err(last)
}

/// A modern client's `server/discover` for a legacy backend: answered from
/// the pooled session's `initialize` result.
pub(super) async fn discover_for_modern(
    gateway: &Gateway,
    server: &McpServer,
    principal: Option<&Principal>,
    client: &ClientMeta,
    id: Option<&Value>,
) -> Result<Response<ResponseBody>, BackendError> {
    let key = LegacySessions::key(server, principal, client);
    let pooled = legacy_session(gateway, server, &key, client).await?;
    let body = json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null),
        "result": revisions::discovery_from_initialize(&pooled.initialized)});
    Ok(crate::http::json(StatusCode::OK, body.to_string()))
}

/// A legacy client's `initialize` for a modern backend: answered from its
/// `server/discover`, with the client's description sealed into the
/// session id. `None` when the backend turns out not to be modern.
pub(super) async fn initialize_for_legacy(
    gateway: &Gateway,
    server: &McpServer,
    message: &Message,
    discovered: Option<Value>,
    seal: impl FnOnce(&str) -> Option<HeaderValue>,
) -> Result<Option<Response<ResponseBody>>, BackendError> {
    let client = ClientMeta::of_initialize(&message.params);
    let discovered = match discovered {
        Some(discovered) => discovered,
        None => discover(gateway, server, &client).await?,
    };
    if !revisions::is_modern_discovery(&discovered) {
        return Ok(None);
    }
    let version = revisions::legacy_version(
        message
            .params
            .get("protocolVersion")
            .and_then(Value::as_str),
    );
    let session = LegacyClientSession {
        v: version.to_string(),
        client,
    };
    let Some(sealed) = seal(&session.seal_text()) else {
        return Err(BackendError::Unusable("cannot seal the session".into()));
    };
    let body = json!({"jsonrpc": "2.0", "id": message.id.clone().unwrap_or(Value::Null),
        "result": revisions::initialize_from_discovery(version, &discovered)});
    let mut response = crate::http::json(StatusCode::OK, body.to_string());
    response.headers_mut().insert(SESSION_HEADER, sealed);
    response.headers_mut().insert(
        "mcp-protocol-version",
        HeaderValue::from_str(version).unwrap_or(HeaderValue::from_static(LEGACY)),
    );
    Ok(Some(response))
}

/// What a legacy client's session with a modern backend answers without
/// the backend: the handshake's leftovers, `ping`, log levels (modern
/// servers take them per request; the gateway's session cannot change),
/// and what modern servers do not have. `None`: the message goes on.
pub(super) fn answer_locally(
    http: &Method,
    message: Option<&Message>,
) -> Option<Response<ResponseBody>> {
    let empty = |status: StatusCode| {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = status;
        response
    };
    match (http, message) {
        (&Method::DELETE, _) => Some(empty(StatusCode::OK)),
        (&Method::GET, _) => {
            let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            Some(response)
        }
        (_, Some(message)) if message.id.is_none() => Some(empty(StatusCode::ACCEPTED)),
        (_, Some(message)) => match message.method.as_deref() {
            None => Some(empty(StatusCode::ACCEPTED)),
            Some("ping" | "logging/setLevel") => {
                let body = json!({"jsonrpc": "2.0", "id": message.id, "result": {}});
                Some(crate::http::json(StatusCode::OK, body.to_string()))
            }
            Some(method @ ("resources/subscribe" | "resources/unsubscribe")) => Some(rpc_error(
                StatusCode::OK,
                message.id.as_ref(),
                -32601,
                &format!(
                    "Method not found: {method} (the MCP server speaks 2026-07-28 only, which has no resource subscriptions in sessions)"
                ),
            )),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a message is a modern one: it names its revision in `_meta`,
/// or (its `_meta` being faulty) a sessionless request's
/// `MCP-Protocol-Version` header names 2026-07-28 or later.
pub(super) fn is_modern(message: &Message, headers: &HeaderMap) -> bool {
    message
        .params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .is_some()
        || (!headers.contains_key(SESSION_HEADER)
            && headers
                .get("mcp-protocol-version")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v >= MODERN))
}

/// A fault as a modern server reports it.
fn refuse(fault: revisions::Fault, id: Option<&Value>) -> Response<ResponseBody> {
    let mut error = json!({"code": fault.code, "message": fault.message});
    if let Some(data) = fault.data {
        error["data"] = data;
    }
    let body = json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": error});
    crate::http::json(
        StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    )
}

/// A refusal as the client gets it when translation itself failed.
pub(super) fn failed(server: &McpServer, id: Option<&Value>, error: &BackendError) -> Refusal {
    tracing::warn!(server = %server.name, %error, "MCP revision translation failed");
    Box::new(rpc_error(
        StatusCode::BAD_GATEWAY,
        id,
        jsonrpc::INTERNAL_ERROR,
        &format!(
            "MCP server {} speaks another protocol revision and the gateway could not translate: {error}",
            server.path
        ),
    ))
}

/// What the gateway answers itself for a translated handshake: a modern
/// client's `server/discover` to a legacy backend, a legacy client's
/// `initialize` to a backend known to be modern-only. `None`: the message
/// goes on.
pub(super) async fn answer_handshake(
    gateway: &Gateway,
    server: &McpServer,
    principal: Option<&Principal>,
    speech: Speech<'_>,
    message: &Message,
    seal: impl FnOnce(&str) -> Option<HeaderValue>,
) -> Result<Option<Response<ResponseBody>>, Refusal> {
    let id = message.id.as_ref();
    if let Speech::ModernToLegacy(_) = speech
        && message.is_request()
        && let Some(fault) =
            revisions::modern_fault(message.method.as_deref().unwrap_or(""), &message.params)
    {
        // The gateway stands in for a modern server: it refuses what one would.
        return Ok(Some(refuse(fault, id)));
    }
    match (speech, message.method.as_deref()) {
        (Speech::ModernToLegacy(client), Some("server/discover")) => {
            discover_for_modern(gateway, server, principal, client, id)
                .await
                .map(Some)
                .map_err(|error| failed(server, id, &error))
        }
        (Speech::Direct(_), Some("initialize"))
            if server.translate_revisions && gateway.mcp_eras.of(server) == Some(Era::Modern) =>
        {
            initialize_for_legacy(gateway, server, message, None, seal)
                .await
                .map_err(|error| failed(server, id, &error))
        }
        _ => Ok(None),
    }
}

/// Whether a backend's answer to a message sent as is may be a refusal of
/// the message's era: a modern request answered 400, or `initialize`
/// answered 4xx, by a backend whose era the gateway does not know yet.
pub(super) fn may_be_era_refusal(
    gateway: &Gateway,
    server: &McpServer,
    message: &Message,
    headers: &HeaderMap,
    sent: &Sent,
) -> bool {
    let status = sent.response.status();
    if !server.translate_revisions
        || !status.is_client_error()
        || gateway.mcp_eras.of(server).is_some()
    {
        return false;
    }
    (status == StatusCode::BAD_REQUEST && message.is_request() && is_modern(message, headers))
        || message.method.as_deref() == Some("initialize")
}

/// A message the backend refused, maybe for its era.
pub(super) struct Refused<'a> {
    pub message: &'a Message,
    /// As sent.
    pub body: Bytes,
    pub sent: Sent,
    pub deadline: tokio::time::Instant,
    pub retryable: bool,
}

/// After [`may_be_era_refusal`]: when the backend speaks only the other
/// era, the message again, translated (it was not acted on: the backend
/// refused it); otherwise the refusal as it came.
pub(super) async fn after_refusal(
    gateway: &Gateway,
    server: &McpServer,
    principal: Option<&Principal>,
    refused: Refused<'_>,
    seal: impl FnOnce(&str) -> Option<HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let Refused {
        message,
        body,
        sent,
        deadline,
        retryable,
    } = refused;
    let id = message.id.as_ref();
    let status = sent.response.status();
    let (parts, incoming) = sent.response.into_parts();
    let bytes = read_bounded(box_body(incoming), deadline)
        .await
        .unwrap_or_default();
    let method = message.method.as_deref().unwrap_or("");
    if method == "initialize" {
        let client = ClientMeta::of_initialize(&message.params);
        if let Some(discovered) = confirm_modern_only(gateway, server, &client).await
            && let Some(answer) =
                initialize_for_legacy(gateway, server, message, Some(discovered), seal)
                    .await
                    .map_err(|error| failed(server, id, &error))?
        {
            return Ok(answer);
        }
    } else if revisions::may_be_legacy_refusal(status.as_u16(), &bytes) {
        let client = ClientMeta::of_modern(&message.params);
        if confirm_legacy_only(gateway, server, &client).await {
            let speech = Speech::ModernToLegacy(&client);
            if let Some(answer) =
                answer_handshake(gateway, server, principal, speech, message, |_| None).await?
            {
                return Ok(answer);
            }
            let (sent, initialized) = send(
                gateway,
                server,
                principal,
                speech,
                Method::POST,
                &HeaderMap::new(),
                body,
                deadline,
                retryable,
            )
            .await
            .map_err(|error| failed(server, id, &error))?;
            return Ok(answer(speech, method, &message.params, sent, initialized, deadline).await);
        }
    }
    let mut out = Response::new(full(bytes));
    *out.status_mut() = status;
    if let Some(value) = parts.headers.get(header::CONTENT_TYPE) {
        out.headers_mut()
            .insert(header::CONTENT_TYPE, value.clone());
    }
    Ok(out)
}
