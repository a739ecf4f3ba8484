//! The MCP gateway: `/mcp/{path}` passes one MCPServer through (Streamable
//! HTTP, both the 2025-11-25 and 2026-07-28 revisions).
//!
//! Per message: the gateway's own authentication (API keys, JWT; the
//! client's credential never reaches the backend, which gets the
//! MCPServer's), `Origin` validation, one JSON-RPC message per POST,
//! 2026-07-28 mirrored headers checked against the body, the tool filter on
//! `tools/call`, and the backend's session id sealed into the one the client
//! sees ([`session`]), so any replica can continue a session and no other
//! caller can use it. Answers, JSON or SSE, stream back as they come; a
//! client that goes away closes the backend stream, which 2026-07-28 treats
//! as cancellation.

pub mod aggregate;
pub mod backend;
pub mod breaker;
pub mod cache;
mod events;
pub mod filter;
pub mod jsonrpc;
pub mod legacy;
pub mod merge;
pub mod redact;
pub mod revisions;
pub mod session;
mod translate;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tollgate_config::snapshot::{McpServer, Principal};

use crate::error::ApiError;
use crate::http::{ResponseBody, box_body, full};
use crate::llm::{auth, ingress};
use crate::runtime::{Gateway, Runtime};
pub use backend::Breakers;
use backend::{BackendSession, backend_failed};
use jsonrpc::Message;
use translate::Speech;
pub(crate) use translate::read_resource;
pub use translate::{Eras, LegacySessions};

/// Request headers passed on to the backend as they are.
const FORWARDED: [&str; 6] = [
    "accept",
    "content-type",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];
/// Response headers passed back as they are (besides the session id).
const RETURNED: [&str; 3] = ["content-type", "cache-control", "mcp-protocol-version"];

/// 2025-11-25's session header.
const SESSION_HEADER: &str = "mcp-session-id";

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    let Some(runtime) = gateway.runtime() else {
        return rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            jsonrpc::INTERNAL_ERROR,
            "The gateway has no configuration yet.",
        );
    };
    let started = std::time::Instant::now();
    let mut seen = Seen::default();
    let path = request.uri().path();
    let response = if path == aggregate::PATH {
        seen.server = Arc::from(aggregate::AGGREGATE_LABEL);
        seen.reached = true;
        aggregate::handle(&gateway, &runtime, request, &mut seen).await
    } else {
        let Some(name) = path
            .strip_prefix("/mcp/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
        else {
            return rpc_error(
                StatusCode::NOT_FOUND,
                None,
                jsonrpc::INVALID_REQUEST,
                "No MCP endpoint here: use /mcp or /mcp/{server}.",
            );
        };
        let Some(server) = runtime
            .snapshot
            .config
            .mcp_servers
            .iter()
            .find(|s| s.path == name)
        else {
            return rpc_error(
                StatusCode::NOT_FOUND,
                None,
                jsonrpc::INVALID_REQUEST,
                &format!("No MCP server is served at /mcp/{name}."),
            );
        };
        seen.server = server.name.clone();
        match serve(&gateway, &runtime, server, request, &mut seen).await {
            Ok(response) => {
                seen.reached = true;
                response
            }
            Err(response) => *response,
        }
    };
    let outcome = seen.outcome(response.status());
    let elapsed = started.elapsed();
    audit(
        &gateway,
        &runtime,
        &seen,
        outcome,
        response.status(),
        elapsed,
    );
    let labels = crate::metrics::McpLabels {
        server: seen.server,
        method: seen.method,
        tool: if seen.reached {
            seen.tool
        } else {
            String::new()
        },
        outcome,
    };
    gateway.metrics.count_mcp(&labels, elapsed);
    response
}

/// What handling learnt of a message, for metrics and the audit record.
struct Seen {
    /// The MCPServer that answered (`aggregate` when none alone did).
    server: Arc<str>,
    method: &'static str,
    /// The tool (or prompt) of a call.
    tool: String,
    /// Who asked: user, team and app, or `anonymous`.
    caller: String,
    /// The call's arguments as they left: shape only.
    arguments: Option<serde_json::Value>,
    /// What redaction removed from them.
    redacted: Vec<String>,
    /// The message went to the backend (not refused by the gateway).
    reached: bool,
    /// The backend could not be reached or did not answer in time.
    unreachable: bool,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            server: Arc::from(""),
            method: "unknown",
            tool: String::new(),
            caller: String::new(),
            arguments: None,
            redacted: Vec::new(),
            reached: false,
            unreachable: false,
        }
    }
}

impl Seen {
    fn outcome(&self, status: StatusCode) -> &'static str {
        match (self.reached, self.unreachable) {
            (_, true) => "unreachable",
            (false, false) => "refused",
            (true, _) if status.is_success() => "ok",
            (true, _) => "error",
        }
    }

    fn set_caller(&mut self, principal: Option<&Principal>) {
        self.caller = match principal {
            None => "anonymous".into(),
            Some(p) => format!(
                "user={} team={} app={}",
                p.user,
                p.team.as_deref().unwrap_or("-"),
                p.app.as_deref().unwrap_or("-")
            ),
        };
    }

    /// Redacts a `tools/call` body as `server` asks and records the
    /// arguments' shape; the body that leaves is returned.
    fn redact_call(&mut self, server: &McpServer, message: &Message, body: Bytes) -> Bytes {
        if message.method.as_deref() != Some("tools/call") {
            return body;
        }
        let Some(policy) = &server.redact else {
            self.arguments = message.params.get("arguments").map(redact::shape);
            return body;
        };
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return body;
        };
        let Some(arguments) = value.pointer_mut("/params/arguments") else {
            return body;
        };
        self.redacted = redact::redact_arguments(arguments, policy);
        self.arguments = Some(redact::shape(arguments));
        if self.redacted.is_empty() {
            return body;
        }
        serde_json::to_vec(&value).map_or(body, Bytes::from)
    }
}

/// Methods whose every message gets an audit record: lists, calls, gets
/// and reads (the rest are counted in metrics only).
fn audited(method: &str) -> bool {
    method.ends_with("/list")
        || matches!(
            method,
            "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
        )
}

/// One audit record (tracing target `tollgate::audit`): who, which server
/// and tool, the gateway's decision, the outcome, the latency and the
/// arguments' shape with what was redacted; never argument values.
fn audit(
    gateway: &Gateway,
    runtime: &Runtime,
    seen: &Seen,
    outcome: &str,
    status: StatusCode,
    elapsed: Duration,
) {
    if !audited(seen.method) {
        return;
    }
    if runtime.snapshot.config.audit.is_some() {
        let mut record = serde_json::Map::new();
        record.insert("kind".into(), "mcp.call".into());
        record.insert("server".into(), serde_json::json!(&*seen.server));
        record.insert("method".into(), serde_json::json!(seen.method));
        if !seen.tool.is_empty() {
            record.insert("tool".into(), serde_json::json!(seen.tool));
        }
        record.insert("caller".into(), serde_json::json!(seen.caller));
        record.insert(
            "decision".into(),
            serde_json::json!(if seen.reached { "allowed" } else { "refused" }),
        );
        record.insert("outcome".into(), serde_json::json!(outcome));
        record.insert("status".into(), serde_json::json!(status.as_u16()));
        record.insert(
            "latencyUs".into(),
            serde_json::json!(elapsed.as_micros() as u64),
        );
        if let Some(arguments) = &seen.arguments {
            record.insert("argumentsShape".into(), arguments.clone());
        }
        if !seen.redacted.is_empty() {
            record.insert("redacted".into(), serde_json::json!(seen.redacted));
        }
        gateway.audit.record(record);
    }
    let gateway = &runtime.snapshot.config.gateway;
    let arguments = seen
        .arguments
        .as_ref()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        target: "tollgate::audit",
        gateway = %format_args!("{}/{}", gateway.namespace, gateway.name),
        server = &*seen.server,
        method = seen.method,
        tool = seen.tool.as_str(),
        caller = seen.caller.as_str(),
        decision = if seen.reached { "allowed" } else { "refused" },
        outcome,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        arguments = arguments.as_str(),
        redacted = seen.redacted.join(",").as_str(),
        "mcp"
    );
}

/// A method as a metric label: the MCP methods by name, others grouped.
fn method_label(http: &Method, message: Option<&Message>) -> &'static str {
    const KNOWN: [&str; 16] = [
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
        "tasks/get",
    ];
    match (http, message.and_then(|m| m.method.as_deref())) {
        (&Method::GET, _) => "GET",
        (&Method::DELETE, _) => "DELETE",
        (_, Some(method)) if method.starts_with("notifications/") => "notification",
        (_, Some(method)) => KNOWN.into_iter().find(|k| *k == method).unwrap_or("other"),
        (_, None) => "response",
    }
}

type Refusal = Box<Response<ResponseBody>>;

/// What both endpoints check before anything else: a browser's `Origin`,
/// then the caller (401 naming `resource_path`'s metadata).
async fn admit(
    gateway: &Gateway,
    runtime: &Runtime,
    headers: &HeaderMap,
    resource_path: &str,
) -> Result<Option<Arc<Principal>>, Refusal> {
    check_origin(headers, &runtime.snapshot.config.mcp_allowed_origins)?;
    auth::authenticate(runtime, gateway, headers)
        .await
        .map_err(|error| unauthorized(&error, runtime, resource_path, headers))
}

/// The state sealed in the request's session id for `route`, if it has one.
fn open_session(
    runtime: &Runtime,
    headers: &HeaderMap,
    principal: Option<&Principal>,
    route: &str,
    now: i64,
) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(SESSION_HEADER) else {
        return Ok(None);
    };
    let id = value.to_str().unwrap_or("");
    runtime
        .mcp_sessions
        .open(id, principal, route, now)
        .map(Some)
        .map_err(|error| {
            tracing::debug!(route, %error, "MCP session id refused");
            session_not_found()
        })
}

/// Unknown, expired or someone else's session: as the spec says for a
/// session the server does not know, so the client starts over.
fn session_not_found() -> Refusal {
    Box::new(rpc_error(
        StatusCode::NOT_FOUND,
        None,
        jsonrpc::INVALID_REQUEST,
        "Session not found: initialize a new session.",
    ))
}

async fn serve(
    gateway: &Gateway,
    runtime: &Runtime,
    server: &McpServer,
    request: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Response<ResponseBody>, Refusal> {
    let (parts, body) = request.into_parts();
    let principal = admit(
        gateway,
        runtime,
        &parts.headers,
        &format!("/mcp/{}", server.path),
    )
    .await?;
    let principal = principal.as_deref();
    seen.set_caller(principal);
    let now = crate::state::window::now_ms();
    let pinned = open_session(runtime, &parts.headers, principal, &server.name, now)?;
    let translated = pinned
        .as_deref()
        .and_then(revisions::LegacyClientSession::from_sealed);
    let backend_session = match translated {
        Some(_) => BackendSession::of(None),
        None => BackendSession::of(pinned.as_deref()),
    };
    let (body, message) = match parts.method {
        Method::POST => {
            let (bytes, message) = read_message(runtime, &parts.headers, body).await?;
            (bytes, Some(message))
        }
        Method::GET | Method::DELETE => (Bytes::new(), None),
        _ => return Err(method_not_allowed()),
    };
    seen.method = method_label(&parts.method, message.as_ref());
    let modern_client;
    let speech = match (&translated, &message) {
        (Some(session), _) => Speech::LegacyToModern(session),
        (None, Some(m))
            if server.translate_revisions
                && translate::is_modern(m, &parts.headers)
                && gateway.mcp_eras.of(server) == Some(revisions::Era::Legacy) =>
        {
            modern_client = revisions::ClientMeta::of_modern(&m.params);
            Speech::ModernToLegacy(&modern_client)
        }
        _ => Speech::Direct(backend_session),
    };
    if matches!(speech, Speech::LegacyToModern(_))
        && let Some(local) = translate::answer_locally(&parts.method, message.as_ref())
    {
        return Ok(local);
    }
    let seal = |text: &str| {
        runtime
            .mcp_sessions
            .seal(text, principal, &server.name, now)
            .ok()
            .and_then(|sealed| HeaderValue::from_str(&sealed).ok())
    };
    if let Some(message) = &message {
        if seen.method == "tools/call" {
            seen.tool = message.name().unwrap_or("").to_string();
        }
        if let Some(tool) = unclassified_call(message, server, principal, &gateway.mcp_catalog) {
            let _ =
                learn_catalog(gateway, server, principal, &parts.headers, speech, message).await;
            tracing::debug!(server = %server.name, tool, "learned the tool catalog for a call");
        }
        check_message(
            message,
            &parts.headers,
            server,
            principal,
            &gateway.mcp_catalog,
        )?;
        if matches!(message.method.as_deref(), Some("tools/list" | "tools/call")) {
            check_catalog(gateway, server, principal, &parts.headers, speech, message).await?;
        }
        if message.is_request() && !server.rate_limits.is_empty() {
            throttle(gateway, runtime, server, principal, message, now).await?;
        }
        watch_agent(gateway, runtime, server, principal, message, now)?;
        if let Some(answer) =
            translate::answer_handshake(gateway, server, principal, speech, message, seal).await?
        {
            return Ok(answer);
        }
    }
    let id = message.as_ref().and_then(|m| m.id.clone());
    let kept = message
        .as_ref()
        .and_then(|m| cache_key(gateway, server, principal, m));
    if let Some(answer) = kept.and_then(|key| cached_answer(gateway, &key, id.as_ref())) {
        return Ok(answer);
    }
    let body = match &message {
        Some(message) => seen.redact_call(server, message, body),
        None => body,
    };
    let retryable = message.as_ref().is_some_and(|m| {
        m.is_request() && {
            let read_only = m.name().is_some_and(|tool| {
                server.tools.access(
                    tool,
                    gateway.mcp_catalog.hint(server, tool).unwrap_or(false),
                ) == tollgate_api::mcp::ToolAccess::Read
            });
            breaker::retryable(m.method.as_deref().unwrap_or(""), read_only)
        }
    });
    let deadline = backend::deadline(server);
    let (sent, initialized) = translate::send(
        gateway,
        server,
        principal,
        speech,
        parts.method.clone(),
        &parts.headers,
        body.clone(),
        deadline,
        retryable,
    )
    .await
    .map_err(|error| {
        seen.unreachable = true;
        match speech {
            Speech::Direct(session) => {
                Box::new(backend_failed(server, session.target, id.as_ref(), &error))
            }
            _ => translate::failed(server, id.as_ref(), &error),
        }
    })?;
    let mut out = match (speech, &message) {
        (Speech::Direct(_), Some(message))
            if translate::may_be_era_refusal(gateway, server, message, &parts.headers, &sent) =>
        {
            let refused = translate::Refused {
                message,
                body,
                sent,
                deadline,
                retryable,
            };
            translate::after_refusal(gateway, server, principal, refused, seal).await?
        }
        (Speech::Direct(_), _) => relay(sent, runtime, principal, server, now),
        (speech, message) => {
            let method = message
                .as_ref()
                .and_then(|m| m.method.as_deref())
                .unwrap_or("");
            let params = message
                .as_ref()
                .map_or(&serde_json::Value::Null, |m| &m.params);
            translate::answer(speech, method, params, sent, initialized, deadline).await
        }
    };
    let lists_tools = message
        .as_ref()
        .is_some_and(|m| m.method.as_deref() == Some("tools/list"));
    if let Some(key) = kept {
        out = keep_answer(gateway, server, key, out, id.as_ref(), deadline).await;
    }
    if lists_tools && server.filters_lists() && out.status() == StatusCode::OK {
        let caller = Caller {
            principal,
            server,
            catalog: &gateway.mcp_catalog,
        };
        let whole = message
            .as_ref()
            .is_some_and(|m| m.params.get("cursor").is_none());
        out = filtered(out, id.as_ref(), &caller, whole, deadline).await?;
    }
    Ok(out)
}

/// Most of a `tools/list` answer the gateway buffers to filter it.
const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;

/// A `tools/list` answer with the tools the MCPServer hides taken out. The
/// list is read whole (it is one response, bounded); anything the gateway
/// cannot read as a list is refused rather than passed on unfiltered.
async fn filtered(
    response: Response<ResponseBody>,
    id: Option<&serde_json::Value>,
    caller: &Caller<'_>,
    first_page: bool,
    deadline: tokio::time::Instant,
) -> Result<Response<ResponseBody>, Refusal> {
    let server = caller.server;
    let (mut parts, body) = response.into_parts();
    let read = read_bounded(body, deadline).await;
    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if let (Some(gate), Ok(bytes)) = (&server.catalog_gate, &read) {
        check_listed_catalog(caller, gate, bytes, sse, id, first_page)?;
    }
    let outcome = read.and_then(|bytes| {
        let id = id.cloned().unwrap_or(serde_json::Value::Null);
        let keep = |tool: &serde_json::Value| {
            filter::tool_of(tool).is_some_and(|(name, read_only)| {
                caller.catalog.learn(server, name, read_only);
                caller.may_use(name, read_only)
            })
        };
        filter::filter_tools(&bytes, sse, &id, &keep).ok_or("not a JSON-RPC answer")
    });
    match outcome {
        Ok(body) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, full(body)))
        }
        Err(why) => {
            tracing::warn!(server = %server.name, why, "cannot filter the MCP tool list");
            Err(Box::new(rpc_error(
                StatusCode::BAD_GATEWAY,
                id,
                jsonrpc::INTERNAL_ERROR,
                "The MCP server's tool list could not be read.",
            )))
        }
    }
}

/// One POSTed JSON-RPC message, read within the gateway's body limit.
async fn read_message(
    runtime: &Runtime,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(Bytes, Message), Refusal> {
    let limit = runtime.snapshot.config.limits.max_request_body_bytes;
    let bytes = ingress::read_body(body, headers, limit)
        .await
        .map_err(|error| {
            Box::new(rpc_error(
                error.status,
                None,
                jsonrpc::INVALID_REQUEST,
                &error.message,
            ))
        })?;
    let message = Message::parse(&bytes)
        .map_err(|(code, text)| Box::new(rpc_error(StatusCode::BAD_REQUEST, None, code, text)))?;
    Ok((bytes, message))
}

fn method_not_allowed() -> Refusal {
    let mut response = rpc_error(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        jsonrpc::INVALID_REQUEST,
        "MCP endpoints take POST, GET and DELETE.",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
    Box::new(response)
}

/// A gated server's whole tool list (one page, asked without a cursor)
/// is the catalog: it must hash to the approved one. A longer catalog was
/// checked by [`check_catalog`] before the list went out.
fn check_listed_catalog(
    caller: &Caller<'_>,
    gate: &tollgate_config::snapshot::mcp::CatalogGate,
    bytes: &[u8],
    sse: bool,
    id: Option<&serde_json::Value>,
    first_page: bool,
) -> Result<(), Refusal> {
    let key = id.cloned().unwrap_or(serde_json::Value::Null);
    let Some(result) = filter::response_in(bytes, sse, &key).and_then(|m| m.get("result").cloned())
    else {
        return Ok(());
    };
    let complete = first_page
        && result
            .get("nextCursor")
            .is_none_or(serde_json::Value::is_null);
    let Some(tools) = result.get("tools").and_then(serde_json::Value::as_array) else {
        return Ok(());
    };
    if !complete {
        return Ok(());
    }
    let hash = caller.catalog.learn_all(caller.server, tools);
    if gate.approved.as_deref() == Some(hash.as_str()) {
        return Ok(());
    }
    Err(unapproved(caller.server, Some(&hash), id))
}

/// The refusal of a gated server's tools whose catalog is not approved.
fn unapproved(server: &McpServer, hash: Option<&str>, id: Option<&serde_json::Value>) -> Refusal {
    tracing::warn!(server = %server.name, hash = hash.unwrap_or(""), "MCP tools held back: catalog not approved");
    let text = match hash {
        Some(hash) => format!(
            "The tool catalog of MCP server {} ({hash}) is not approved: an operator must review it and set spec.catalog.approvedHash.",
            server.path
        ),
        None => format!(
            "The tool catalog of MCP server {} could not be listed to check its approval.",
            server.path
        ),
    };
    Box::new(rpc_error(
        StatusCode::OK,
        id,
        jsonrpc::INTERNAL_ERROR,
        &text,
    ))
}

/// `Origin`, when a browser sends one, must be this machine or one the
/// AIGateway allows (`spec.mcp.allowedOrigins`): a page on another site
/// must not reach MCP servers through a user's gateway, even when its
/// host name resolves here (DNS rebinding: `Host` then matches the page's
/// origin, so comparing the two proves nothing).
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if origin
        .to_str()
        .is_ok_and(|origin| origin_allowed(origin, allowed))
    {
        return Ok(());
    }
    Err(Box::new(rpc_error(
        StatusCode::FORBIDDEN,
        None,
        jsonrpc::INVALID_REQUEST,
        "Origin not allowed.",
    )))
}

/// Whether a browser origin may use the MCP endpoints: a local one, or one
/// listed (compared as lowercase `scheme://host[:port]`).
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&origin) {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.rsplit_once(':').map_or(rest, |(host, _port)| host),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Takes one from every rate-limit bucket this request counts against, or
/// refuses it with 429 and `Retry-After`. Buckets live where the gateway's
/// budget state does (Redis when configured, so replicas share them); when
/// that store cannot be reached the request goes ahead (logged).
async fn throttle(
    gateway: &Gateway,
    runtime: &Runtime,
    server: &McpServer,
    principal: Option<&Principal>,
    message: &Message,
    now: i64,
) -> Result<(), Refusal> {
    use crate::state::Verdict;
    use crate::state::throttle::Take;
    let tool = (message.method.as_deref() == Some("tools/call"))
        .then(|| message.name())
        .flatten();
    let caller = session::caller_id(principal);
    let takes: Vec<Take> = server
        .rate_limits
        .iter()
        .enumerate()
        .filter(|(_, limit)| limit.counts(tool))
        .map(|(index, limit)| Take {
            key: Arc::from(format!(
                "mcp|{}|{index}|{}",
                server.name,
                if limit.per_caller {
                    caller.as_str()
                } else {
                    "*"
                }
            )),
            bucket: limit.bucket,
            amount: 1.0,
        })
        .collect();
    if takes.is_empty() {
        return Ok(());
    }
    match runtime.budget_store.reserve(&[], &takes, now).await {
        Ok(Verdict::Throttled { retry_after_ms, .. }) => Err(retry_later(
            message.id.as_ref(),
            retry_after_ms,
            |seconds| {
                format!(
                    "Rate limit of MCP server {} reached. Retry in {seconds} s.",
                    server.name
                )
            },
        )),
        Ok(_) => Ok(()),
        Err(error) => {
            if gateway.log_throttle.allow() {
                tracing::warn!(server = %server.name, %error, "MCP rate limits not applied: their state store is unreachable");
            }
            Ok(())
        }
    }
}

/// A `tools/call` of a server with anomaly detection: counted for the
/// caller's behaviour ([`crate::alerts::AlertHub::record_agent_call`]), or
/// refused while an earlier anomaly holds the caller back.
fn watch_agent(
    gateway: &Gateway,
    runtime: &Runtime,
    server: &McpServer,
    principal: Option<&Principal>,
    message: &Message,
    now: i64,
) -> Result<(), Refusal> {
    use crate::alerts::{AgentRef, Held};
    if server.anomalies.is_none() || message.method.as_deref() != Some("tools/call") {
        return Ok(());
    }
    let Some(tool) = message.name() else {
        return Ok(());
    };
    let write = server.tools.access(
        tool,
        gateway.mcp_catalog.hint(server, tool).unwrap_or(false),
    ) == tollgate_api::mcp::ToolAccess::Write;
    let id = session::caller_id(principal);
    let name = principal.map_or("anonymous", |p| p.user.as_str());
    let gateway_name = crate::llm::admit::gateway_name(runtime);
    let cx = crate::alerts::Context {
        metrics: &gateway.metrics,
        clients: &gateway.clients,
        gateway: &gateway_name,
    };
    let agent = AgentRef { id: &id, name };
    match gateway
        .alerts
        .record_agent_call(&cx, server, &agent, (tool, write), now)
    {
        Ok(()) => Ok(()),
        Err(Held::Suspended { .. }) => Err(Box::new(rpc_error(
            StatusCode::FORBIDDEN,
            message.id.as_ref(),
            -32000,
            &format!(
                "Agent {name} is suspended on MCP server {} after an anomaly; an operator clears it with the annotation {} on the MCPServer.",
                server.path,
                tollgate_api::mcp::AGENTS_CLEARED_AT_ANNOTATION
            ),
        ))),
        Err(Held::Throttled { retry_after_ms }) => Err(retry_later(
            message.id.as_ref(),
            retry_after_ms,
            |seconds| {
                format!(
                    "Agent {name} is held to its usual rate on MCP server {} after an anomaly. Retry in {seconds} s.",
                    server.path
                )
            },
        )),
    }
}

/// The cache key of a message whose answer may be kept (`spec.cache`): a
/// `resources/read`, or a `tools/call` of a read tool the policy covers.
fn cache_key(
    gateway: &Gateway,
    server: &McpServer,
    principal: Option<&Principal>,
    message: &Message,
) -> Option<[u8; 32]> {
    let policy = server.cache.as_ref()?;
    let method = message.method.as_deref()?;
    let eligible = match method {
        "resources/read" => true,
        "tools/call" => message.name().is_some_and(|tool| {
            let hint = gateway.mcp_catalog.hint(server, tool).unwrap_or(false);
            policy.covers(tool)
                && server.tools.access(tool, hint) == tollgate_api::mcp::ToolAccess::Read
        }),
        _ => false,
    };
    if !eligible || message.id.is_none() {
        return None;
    }
    let caller = (!policy.shared).then(|| session::caller_id(principal));
    Some(cache::key(
        &server.name,
        caller.as_deref(),
        method,
        &message.params,
    ))
}

/// A kept answer, as the answer to request `id`.
fn cached_answer(
    gateway: &Gateway,
    key: &[u8; 32],
    id: Option<&serde_json::Value>,
) -> Option<Response<ResponseBody>> {
    let result = gateway.mcp_cache.get(key, std::time::Instant::now())?;
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(serde_json::Value::Null), "result": result});
    let mut response = crate::http::json(StatusCode::OK, body.to_string());
    response
        .headers_mut()
        .insert("x-tollgate-cache", HeaderValue::from_static("hit"));
    Some(response)
}

/// Reads the backend's answer whole (it is a read: progress, if any, comes
/// along at the end), keeps its result when it may be kept, and passes the
/// answer on unchanged.
async fn keep_answer(
    gateway: &Gateway,
    server: &McpServer,
    key: [u8; 32],
    response: Response<ResponseBody>,
    id: Option<&serde_json::Value>,
    deadline: tokio::time::Instant,
) -> Response<ResponseBody> {
    let Some(policy) = &server.cache else {
        return response;
    };
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match read_bounded(body, deadline).await {
        Ok(bytes) => bytes,
        Err(why) => {
            tracing::debug!(server = %server.name, why, "MCP answer not kept");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                id,
                jsonrpc::INTERNAL_ERROR,
                &format!("The answer of MCP server {} was {why}.", server.path),
            );
        }
    };
    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    let key_id = id.cloned().unwrap_or(serde_json::Value::Null);
    if let Some(result) =
        filter::response_in(&bytes, sse, &key_id).and_then(|answer| answer.get("result").cloned())
        && !(policy.shared && cache::private(&result))
        && let Some(ttl) = cache::keep_for(&result, Duration::from_millis(policy.ttl_ms))
    {
        gateway
            .mcp_cache
            .put(key, result, ttl, std::time::Instant::now());
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, full(bytes))
}

/// 429 with `Retry-After` and a JSON-RPC error saying when to retry.
fn retry_later(
    id: Option<&serde_json::Value>,
    retry_after_ms: i64,
    text: impl FnOnce(u64) -> String,
) -> Refusal {
    let seconds = u64::try_from(retry_after_ms)
        .unwrap_or(1)
        .div_ceil(1000)
        .max(1);
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(serde_json::Value::Null),
        "error": {"code": -32000, "message": text(seconds), "data": {"retryAfterSeconds": seconds}},
    });
    let mut response = crate::http::json(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    Box::new(response)
}

/// Reads a whole (list) answer, up to [`MAX_LIST_BYTES`], by `deadline`.
/// Frame by frame: `Limited` over a boxed body trips a higher-ranked `From`
/// bound that makes the caller's future not `Send`.
async fn read_bounded(
    mut body: ResponseBody,
    deadline: tokio::time::Instant,
) -> Result<Bytes, &'static str> {
    use http_body_util::BodyExt;
    let mut buffer = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err("timed out"),
            Ok(None) => return Ok(buffer.freeze()),
            Ok(Some(Err(_))) => return Err("unreadable"),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buffer.len() + data.len() > MAX_LIST_BYTES {
                        return Err("larger than the gateway reads");
                    }
                    buffer.extend_from_slice(&data);
                }
            }
        }
    }
}

/// A `tools/call` whose read/write class the gateway cannot tell yet: the
/// server grants by scope, no operator rule classifies the tool, and this
/// replica has not seen it listed (the client may have listed through
/// another replica).
///
/// Only when the class decides: the caller may use the tool as a read but
/// not as a write, or the server watches agents' share of writes. And at most once per [`RELIST_EVERY`] per server, so
/// calls naming tools that do not exist cannot make the gateway hammer the
/// backend with lists.
fn unclassified_call<'m>(
    message: &'m Message,
    server: &McpServer,
    principal: Option<&Principal>,
    catalog: &Catalog,
) -> Option<&'m str> {
    use tollgate_api::mcp::ToolAccess;
    if message.method.as_deref() != Some("tools/call") {
        return None;
    }
    let tool = message.name()?;
    // Anomaly detection tells reads from writes for every call.
    let decides = server.anomalies.is_some()
        || (!server.access.is_empty()
            && server.may_use(principal, tool, ToolAccess::Read)
            && !server.may_use(principal, tool, ToolAccess::Write));
    (decides
        && !server.tools.classifies(tool)
        && catalog.hint(server, tool).is_none()
        && catalog.may_relist(server))
    .then_some(tool)
}

/// Asks the backend for its whole tool list (in the client's session or
/// revision, with the MCPServer's credential), learns each tool's
/// `readOnlyHint` and remembers the catalog's hash. Best effort: `None`
/// when the list cannot be had, which leaves tools unclassified (writes)
/// and a gated catalog unapproved.
async fn learn_catalog(
    gateway: &Gateway,
    server: &McpServer,
    principal: Option<&Principal>,
    headers: &HeaderMap,
    speech: Speech<'_>,
    message: &Message,
) -> Option<String> {
    const LIST_ID: &str = "tollgate-catalog";
    const MAX_PAGES: usize = 50;
    let mut list_headers = headers.clone();
    list_headers.remove("mcp-name");
    if list_headers.contains_key("mcp-method") {
        list_headers.insert("mcp-method", HeaderValue::from_static("tools/list"));
    }
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut params = serde_json::Map::new();
        if let Some(meta) = message.params.get("_meta") {
            params.insert("_meta".into(), meta.clone());
        }
        if let Some(cursor) = &cursor {
            params.insert("cursor".into(), serde_json::Value::String(cursor.clone()));
        }
        let body = serde_json::json!({"jsonrpc": "2.0", "id": LIST_ID, "method": "tools/list", "params": params});
        let deadline = backend::deadline(server);
        let (sent, _) = translate::send(
            gateway,
            server,
            principal,
            speech,
            Method::POST,
            &list_headers,
            Bytes::from(body.to_string()),
            deadline,
            true,
        )
        .await
        .ok()?;
        let response = sent.response;
        let sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        let bytes = read_bounded(box_body(response.into_body()), deadline)
            .await
            .ok()?;
        let answer = filter::response_in(&bytes, sse, &serde_json::json!(LIST_ID))?;
        let result = answer.get("result")?;
        tools.extend(result.get("tools")?.as_array()?.iter().cloned());
        match result.get("nextCursor").and_then(serde_json::Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
            _ => return Some(gateway.mcp_catalog.learn_all(server, &tools)),
        }
    }
    None
}

/// With `spec.catalog.requireApproval`: `Ok` only while the backend's
/// catalog hash (listed again when this replica's view is older than
/// [`CATALOG_FRESH`]) is the approved one.
async fn check_catalog(
    gateway: &Gateway,
    server: &McpServer,
    principal: Option<&Principal>,
    headers: &HeaderMap,
    speech: Speech<'_>,
    message: &Message,
) -> Result<(), Refusal> {
    let Some(gate) = &server.catalog_gate else {
        return Ok(());
    };
    let hash = match gateway.mcp_catalog.fresh_hash(server) {
        Some(hash) => Some(hash),
        None => learn_catalog(gateway, server, principal, headers, speech, message).await,
    };
    if hash.is_some() && hash == gate.approved {
        return Ok(());
    }
    Err(unapproved(server, hash.as_deref(), message.id.as_ref()))
}

/// Who is asking which server, for tool decisions.
struct Caller<'a> {
    principal: Option<&'a Principal>,
    server: &'a McpServer,
    catalog: &'a Catalog,
}

impl Caller<'_> {
    /// Whether this caller may see and call `tool` (a read when the
    /// operator's rules say so, else when the backend's hint does).
    fn may_use(&self, tool: &str, read_only_hint: bool) -> bool {
        let access = self.server.tools.access(tool, read_only_hint);
        self.server.may_use(self.principal, tool, access)
    }
}

/// The `readOnlyHint` each backend gave its tools in the last list the
/// gateway filtered, so a call is classified as its list entry was. A tool
/// never listed counts as a write. Outlives reloads.
#[derive(Debug, Default)]
pub struct Catalog {
    hints: std::sync::Mutex<std::collections::HashMap<(Arc<str>, String), bool>>,
    /// When the gateway last listed each server's tools itself.
    relisted: std::sync::Mutex<std::collections::HashMap<Arc<str>, std::time::Instant>>,
    /// Each server's last whole catalog seen here: its hash, and when.
    hashes: std::sync::Mutex<std::collections::HashMap<Arc<str>, (String, std::time::Instant)>>,
}

/// How long a replica trusts the catalog hash it last saw before a gated
/// server's tools are listed again.
const CATALOG_FRESH: Duration = Duration::from_secs(30);

/// Least time between two lists the gateway asks a server for itself.
const RELIST_EVERY: Duration = Duration::from_secs(5);

/// Most tools remembered (past it, unlisted tools are classified as
/// writes unless the operator's rules say otherwise).
const MAX_CATALOG: usize = 100_000;

impl Catalog {
    fn learn(&self, server: &McpServer, tool: &str, read_only: bool) {
        let mut hints = self
            .hints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (server.name.clone(), tool.to_string());
        if hints.len() < MAX_CATALOG || hints.contains_key(&key) {
            hints.insert(key, read_only);
        }
    }

    /// Learns a whole tool list: each tool's hint, and the catalog hash,
    /// which it returns.
    fn learn_all(&self, server: &McpServer, tools: &[serde_json::Value]) -> String {
        for tool in tools {
            if let Some((name, read_only)) = filter::tool_of(tool) {
                self.learn(server, name, read_only);
            }
        }
        let fingerprints = tollgate_config::mcp_catalog::tool_fingerprints(tools);
        let hash = tollgate_config::mcp_catalog::catalog_hash(&fingerprints);
        self.hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                server.name.clone(),
                (hash.clone(), std::time::Instant::now()),
            );
        hash
    }

    /// The catalog hash this replica saw within [`CATALOG_FRESH`].
    fn fresh_hash(&self, server: &McpServer) -> Option<String> {
        let hashes = self
            .hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hashes
            .get(&server.name)
            .filter(|(_, at)| at.elapsed() < CATALOG_FRESH)
            .map(|(hash, _)| hash.clone())
    }

    /// Whether the gateway may list `server`'s tools now; if so, the time
    /// is taken.
    fn may_relist(&self, server: &McpServer) -> bool {
        let mut relisted = self
            .relisted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        match relisted.get(&server.name) {
            Some(last) if now.duration_since(*last) < RELIST_EVERY => false,
            _ => {
                relisted.insert(server.name.clone(), now);
                true
            }
        }
    }

    /// The hint last listed for `tool`, if this replica has seen one.
    fn hint(&self, server: &McpServer, tool: &str) -> Option<bool> {
        let hints = self
            .hints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hints.get(&(server.name.clone(), tool.to_string())).copied()
    }
}

/// What the gateway checks of a message before it leaves.
fn check_message(
    message: &Message,
    headers: &HeaderMap,
    server: &McpServer,
    principal: Option<&Principal>,
    catalog: &Catalog,
) -> Result<(), Refusal> {
    if let Err(mismatch) = message.check_mirrored_headers(headers) {
        return Err(Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            message.id.as_ref(),
            jsonrpc::HEADER_MISMATCH,
            &format!("Header mismatch: {mismatch}"),
        )));
    }
    let caller = Caller {
        principal,
        server,
        catalog,
    };
    if message.method.as_deref() == Some("tools/call")
        && let Some(tool) = message.name()
        && !caller.may_use(tool, catalog.hint(server, tool).unwrap_or(false))
    {
        // As if it did not exist: a filtered tool is not there for callers.
        return Err(Box::new(rpc_error(
            StatusCode::OK,
            message.id.as_ref(),
            jsonrpc::INVALID_PARAMS,
            &format!("Unknown tool: {tool}"),
        )));
    }
    Ok(())
}

/// The backend's answer to the client: status, the headers that matter, a
/// sealed session id in place of the backend's, and the body as it streams.
fn relay(
    sent: backend::Sent,
    runtime: &Runtime,
    principal: Option<&Principal>,
    server: &McpServer,
    now: i64,
) -> Response<ResponseBody> {
    let (parts, body) = sent.response.into_parts();
    let mut out = Response::new(box_body(body));
    *out.status_mut() = parts.status;
    for name in RETURNED {
        if let Some(value) = parts.headers.get(name) {
            out.headers_mut().insert(name, value.clone());
        }
    }
    if parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
    {
        // Proxies between here and the client must not hold events back.
        out.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    if let Some(backend) = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        let pinned = session::pin(sent.endpoint, backend);
        match runtime
            .mcp_sessions
            .seal(&pinned, principal, &server.name, now)
        {
            Ok(sealed) => {
                if let Ok(value) = HeaderValue::from_str(&sealed) {
                    out.headers_mut().insert(SESSION_HEADER, value);
                }
            }
            Err(error) => {
                tracing::warn!(server = %server.name, %error, "cannot seal the MCP session id")
            }
        }
    }
    out
}

/// Where OAuth clients learn which authorization servers issue tokens for
/// this resource (RFC 9728), as MCP's authorization spec asks: only when
/// the gateway accepts tokens from an issuer.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// `GET /.well-known/oauth-protected-resource[/mcp/{path}]`.
pub fn resource_metadata(gateway: &Gateway, request: &Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    let resource_path = path.strip_prefix(METADATA_PREFIX).unwrap_or("");
    let Some(runtime) = gateway.runtime() else {
        return crate::http::text(StatusCode::SERVICE_UNAVAILABLE, "not ready");
    };
    let config = &runtime.snapshot.config;
    let known = resource_path.is_empty()
        || resource_path == aggregate::PATH
        || resource_path
            .strip_prefix("/mcp/")
            .is_some_and(|name| config.mcp_servers.iter().any(|s| s.path == name));
    if config.jwt.is_empty() || !known || request.method() != Method::GET {
        return crate::http::text(StatusCode::NOT_FOUND, "not found");
    }
    let origin = origin_of(request.headers());
    let body = serde_json::json!({
        "resource": format!("{origin}{}", if resource_path.is_empty() { "/mcp" } else { resource_path }),
        "authorization_servers": config.jwt.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
    });
    crate::http::json(StatusCode::OK, body.to_string())
}

/// `scheme://host` the client used, as far as the request tells
/// (`X-Forwarded-Proto` from a TLS-terminating proxy, else http).
fn origin_of(headers: &HeaderMap) -> String {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// 401 with the challenge MCP clients follow: where the resource metadata
/// is, when the gateway takes tokens from an issuer.
fn unauthorized(
    error: &ApiError,
    runtime: &Runtime,
    resource_path: &str,
    headers: &HeaderMap,
) -> Refusal {
    let mut response = rpc_error(error.status, None, jsonrpc::INVALID_REQUEST, &error.message);
    if error.status == StatusCode::UNAUTHORIZED {
        let challenge = if runtime.snapshot.config.jwt.is_empty() {
            "Bearer".to_string()
        } else {
            format!(
                "Bearer resource_metadata=\"{}{METADATA_PREFIX}{resource_path}\"",
                origin_of(headers),
            )
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
    }
    Box::new(response)
}

fn rpc_error(
    status: StatusCode,
    id: Option<&serde_json::Value>,
    code: i64,
    message: &str,
) -> Response<ResponseBody> {
    let mut response = Response::new(full(jsonrpc::error_body(id, code, message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn only_local_or_listed_origins_pass() {
        let listed = vec!["https://app.example.com".to_string()];
        for local in [
            "http://localhost:6274",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:3000",
            "https://LOCALHOST",
        ] {
            assert!(origin_allowed(local, &[]), "{local}");
        }
        assert!(origin_allowed("https://app.example.com/", &listed));
        for foreign in [
            "http://evil.example.com",
            "http://localhost.evil.example.com",
            "http://127.0.0.1.evil.example.com:80",
            "null",
            "file://localhost",
            "https://app.example.com:8443",
        ] {
            assert!(!origin_allowed(foreign, &listed), "{foreign}");
        }
    }
}
