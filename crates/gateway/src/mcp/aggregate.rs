//! `/mcp`: every aggregated MCPServer of the gateway behind one MCP server.
//!
//! The gateway answers `initialize` itself after initialising each backend
//! (in parallel, with the client's own capabilities, so a backend only
//! sends the requests the client can answer); the backends' session ids and
//! versions are sealed into the one session id the client gets, so any
//! replica continues the session and no other caller or route can use it.
//! Lists fan out and merge ([`merge`] names them); calls, gets and reads go
//! to the one backend that owns the name or URI, through the same policy as
//! pass-through (tool access, rate limits, credentials). Backend requests
//! to the client (sampling, elicitation, roots) get ids naming their server
//! and the client's answers go back to that server.
//!
//! 2026-07-28 clients need no session: each request's `_meta` goes to the
//! backends as it is, and `server/discover` is answered here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_api::mcp::PrefixMode;
use tollgate_config::snapshot::{McpServer, Principal};

use super::backend::{self, BackendError, BackendSession, Outgoing, Sent, Target, backend_failed};
use super::events::{self, Frames};
use super::jsonrpc::{self, Message};
use super::merge::{self, ClientCapabilities, Naming, Relayed};
use super::revisions::{self, ClientMeta, LegacyClientSession};
use super::translate::{self, Speech};
use super::{
    Caller, Refusal, SESSION_HEADER, check_catalog, filter, learn_catalog, read_bounded, rpc_error,
    throttle, unclassified_call, watch_agent,
};
use super::{Seen, breaker};
use crate::http::{ResponseBody, box_body, full};
use crate::runtime::{Gateway, Runtime};

/// The aggregated endpoint's path, and what its sessions are bound to.
pub const PATH: &str = "/mcp";
/// Revisions with the initialize handshake that `/mcp` speaks.
const SESSION_REVISIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// Most pages the gateway follows when listing one backend.
const MAX_BACKEND_PAGES: usize = 50;
/// Least time between two lists the gateway runs to route an unknown name.
const RELIST_EVERY: Duration = Duration::from_secs(5);
/// Largest event held while waiting for its end on a relayed stream.
/// The metric label of messages no single backend answers.
pub const AGGREGATE_LABEL: &str = "aggregate";

/// What the client's session id holds once opened.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SessionState {
    /// Backend sessions by server path; a server absent here could not be
    /// reached when the session began.
    #[serde(default)]
    b: BTreeMap<String, Leg>,
    #[serde(default)]
    c: ClientCapabilities,
    /// The client's `clientInfo`, for backends that speak only 2026-07-28
    /// (they take it on every request).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    i: Value,
}

impl SessionState {
    /// The client as a backend that speaks only 2026-07-28 learns it on
    /// each message: its info, and no capability whose requests cannot
    /// cross eras.
    fn client_meta(&self) -> ClientMeta {
        ClientMeta {
            c: json!({}),
            i: self.i.clone(),
        }
    }
}

/// One backend's session: its id (empty when it keeps none), version, and
/// the endpoint that holds it (of a server with failover URLs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Leg {
    #[serde(default)]
    s: String,
    v: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    e: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Leg {
    /// A backend that speaks only 2026-07-28, in a legacy client's session:
    /// messages get the client's `_meta`, answers lose the modern fields.
    fn modern_only(&self) -> bool {
        self.v == jsonrpc::MODERN
    }

    fn session(&self) -> BackendSession<'_> {
        match self.s.as_str() {
            "" => BackendSession {
                target: Target::Any,
                id: None,
            },
            id => BackendSession {
                target: Target::Endpoint(self.e),
                id: Some(id),
            },
        }
    }
}

/// The backend session of an optional leg.
fn session_of(leg: Option<&Leg>) -> BackendSession<'_> {
    leg.map_or(
        BackendSession {
            target: Target::Any,
            id: None,
        },
        Leg::session,
    )
}

/// A backend's answer to a request the gateway made itself.
struct Answer {
    result: Value,
    headers: HeaderMap,
    /// Which of the server's endpoints answered.
    endpoint: usize,
}

/// A kind of list `/mcp` merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl Kind {
    fn of(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Self::Tools,
            "prompts/list" => Self::Prompts,
            "resources/list" => Self::Resources,
            "resources/templates/list" => Self::Templates,
            _ => return None,
        })
    }

    fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::Templates => "resources/templates/list",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::Templates => "resourceTemplates",
        }
    }
}

/// Which server owns each public name and URI, as the last merged lists
/// on this replica said. Outlives reloads; rebuilt by every merge.
#[derive(Debug, Default)]
pub struct Routes {
    /// Public tool name → (server path, backend name).
    tools: Mutex<HashMap<String, (String, String)>>,
    prompts: Mutex<HashMap<String, (String, String)>>,
    /// Resource URI → server path.
    uris: Mutex<HashMap<String, String>>,
    /// (literal start of a URI template, server path).
    templates: Mutex<Vec<(String, String)>>,
    /// When this replica last listed to route an unknown name.
    relisted: Mutex<HashMap<&'static str, Instant>>,
}

impl Routes {
    fn names(&self, kind: Kind) -> &Mutex<HashMap<String, (String, String)>> {
        if kind == Kind::Prompts {
            &self.prompts
        } else {
            &self.tools
        }
    }

    fn name(&self, kind: Kind, public: &str) -> Option<(String, String)> {
        lock(self.names(kind)).get(public).cloned()
    }

    fn uri(&self, uri: &str) -> Option<String> {
        if let Some(path) = lock(&self.uris).get(uri) {
            return Some(path.clone());
        }
        lock(&self.templates)
            .iter()
            .filter(|(start, _)| uri.starts_with(start.as_str()))
            .max_by_key(|(start, _)| start.len())
            .map(|(_, path)| path.clone())
    }

    /// Whether the gateway may list `kind` now to route a name; if so the
    /// time is taken.
    fn may_relist(&self, kind: Kind) -> bool {
        let mut relisted = lock(&self.relisted);
        let now = Instant::now();
        match relisted.get(kind.method()) {
            Some(last) if now.duration_since(*last) < RELIST_EVERY => false,
            _ => {
                relisted.insert(kind.method(), now);
                true
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves one message to `/mcp`, noting in `seen` what it was and which
/// server answered.
pub(super) async fn handle(
    gateway: &Gateway,
    runtime: &Runtime,
    request: Request<Incoming>,
    seen: &mut Seen,
) -> Response<ResponseBody> {
    seen.method = match *request.method() {
        Method::GET => "GET",
        Method::DELETE => "DELETE",
        _ => "unknown",
    };
    match serve(gateway, runtime, request, seen).await {
        Ok(response) => response,
        Err(refusal) => {
            // A backend that failed, or the gateway's own refusal.
            seen.unreachable = matches!(refusal.status().as_u16(), 502..=504);
            seen.reached = false;
            *refusal
        }
    }
}

async fn serve(
    gateway: &Gateway,
    runtime: &Runtime,
    request: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Response<ResponseBody>, Refusal> {
    let (parts, body) = request.into_parts();
    let principal = super::admit(gateway, runtime, &parts.headers, PATH).await?;
    let principal = principal.as_deref();
    seen.set_caller(principal);
    let now = crate::state::window::now_ms();
    let state = super::open_session(runtime, &parts.headers, principal, PATH, now)?
        .map(|sealed| {
            serde_json::from_str::<SessionState>(&sealed).map_err(|_| super::session_not_found())
        })
        .transpose()?;
    let mut ctx = Ctx {
        gateway,
        runtime,
        principal,
        headers: &parts.headers,
        state,
        meta: None,
        now,
    };
    match parts.method {
        Method::GET => ctx.listen().await,
        Method::DELETE => Ok(ctx.close().await),
        Method::POST => {
            let (bytes, message) = super::read_message(runtime, &parts.headers, body).await?;
            message
                .check_mirrored_headers(&parts.headers)
                .map_err(|mismatch| {
                    Box::new(rpc_error(
                        StatusCode::BAD_REQUEST,
                        message.id.as_ref(),
                        jsonrpc::HEADER_MISMATCH,
                        &format!("Header mismatch: {mismatch}"),
                    ))
                })?;
            ctx.meta = message.params.get("_meta").cloned();
            seen.method = super::method_label(&Method::POST, Some(&message));
            if let Some(name) = message
                .name()
                .or_else(|| message.params.get("uri").and_then(Value::as_str))
            {
                seen.tool = name.to_string();
            }
            let (response, routed) = ctx.post(&message, &bytes).await?;
            if let Some(routed) = routed {
                seen.server = routed.server;
                seen.arguments = routed.arguments;
                seen.redacted = routed.redacted;
            }
            Ok(response)
        }
        _ => Err(super::method_not_allowed()),
    }
}

/// One client message to `/mcp` and what it needs to reach the backends.
struct Ctx<'a> {
    gateway: &'a Gateway,
    runtime: &'a Runtime,
    principal: Option<&'a Principal>,
    headers: &'a HeaderMap,
    /// `None`: no session (2026-07-28, or before `initialize`).
    state: Option<SessionState>,
    /// The request's `_meta` (2026-07-28 carries the revision in it).
    meta: Option<Value>,
    now: i64,
}

/// A response and, when one server answered it, that server's name.
type Served = (Response<ResponseBody>, Option<Routed>);

/// The one server a message went to, and the call's arguments as they left
/// (shape only) with what redaction removed.
struct Routed {
    server: Arc<str>,
    arguments: Option<Value>,
    redacted: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn servers(&self) -> impl Iterator<Item = &'a McpServer> + use<'a> {
        self.runtime
            .snapshot
            .config
            .mcp_servers
            .iter()
            .filter(|s| s.aggregation.is_some())
    }

    fn server_at(&self, path: &str) -> Option<&'a McpServer> {
        self.servers().find(|s| s.path == path)
    }

    fn client(&self) -> ClientCapabilities {
        match &self.state {
            Some(state) => state.c,
            None => ClientCapabilities::of(
                self.meta
                    .as_ref()
                    .and_then(|m| m.get(jsonrpc::META_CAPABILITIES)),
            ),
        }
    }

    /// The backend session to use with `server`: `Ok(None)` without a
    /// session (2026-07-28), `Err` when the session has none with it.
    fn leg(&self, server: &McpServer) -> Result<Option<&Leg>, String> {
        match &self.state {
            None => Ok(None),
            Some(state) => state.b.get(&server.path).map(Some).ok_or_else(|| {
                "not part of this session: it could not be reached when the session began (initialize a new session to retry it)".to_string()
            }),
        }
    }

    /// The headers a message to a backend carries.
    fn backend_headers(&self, leg: Option<&Leg>, method: &str, name: Option<&str>) -> HeaderMap {
        let mut headers = backend::base_headers();
        let version = match leg {
            Some(leg) => HeaderValue::from_str(&leg.v).ok(),
            None => self.headers.get("mcp-protocol-version").cloned(),
        };
        if let Some(version) = version {
            headers.insert("mcp-protocol-version", version);
        }
        if (self.state.is_none() && self.meta.is_some()) || leg.is_some_and(Leg::modern_only) {
            // 2026-07-28 mirrors the method and name into headers.
            if let Ok(value) = HeaderValue::from_str(method) {
                headers.insert("mcp-method", value);
            }
            if let Some(name) = name {
                headers.insert("mcp-name", header_value(name));
            }
        }
        for (name, value) in self.headers {
            if name.as_str().starts_with("mcp-param-") {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
    }

    /// POSTs one message to `server` in this session.
    async fn send(
        &self,
        server: &McpServer,
        leg: Option<&Leg>,
        body: &Value,
        name: Option<&str>,
    ) -> Result<Sent, BackendError> {
        let method = body.get("method").and_then(Value::as_str).unwrap_or("");
        let modern_leg = leg.is_some_and(Leg::modern_only);
        let uri = body.pointer("/params/uri").and_then(Value::as_str);
        let mirrored = match method {
            "resources/read" if modern_leg => uri,
            _ => name,
        };
        let headers = self.backend_headers(leg, method, mirrored);
        let session = session_of(leg);
        let body = match (modern_leg, &self.state) {
            (true, Some(state)) => {
                std::borrow::Cow::Owned(revisions::to_modern(body, &state.client_meta()))
            }
            _ => std::borrow::Cow::Borrowed(body),
        };
        let outgoing = Outgoing {
            method: Method::POST,
            headers: &headers,
            session: session.id,
            body: Bytes::from(body.to_string()),
        };
        let read_only = method == "tools/call"
            && name.is_some_and(|tool| {
                let hint = self.gateway.mcp_catalog.hint(server, tool).unwrap_or(false);
                server.tools.access(tool, hint) == tollgate_api::mcp::ToolAccess::Read
            });
        let retryable = body.get("id").is_some() && breaker::retryable(method, read_only);
        backend::send(
            self.gateway,
            server,
            session.target,
            &outgoing,
            backend::deadline(server),
            retryable,
        )
        .await
    }

    /// Sends a request the gateway makes itself and returns the backend's
    /// result, its response headers and the endpoint that answered.
    async fn exchange(
        &self,
        server: &McpServer,
        leg: Option<&Leg>,
        body: Value,
    ) -> Result<Answer, String> {
        let id = body.get("id").cloned().unwrap_or(Value::Null);
        let deadline = backend::deadline(server);
        let Sent { response, endpoint } = self
            .send(server, leg, &body, None)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        if !status.is_success() {
            return Err(format!("it answered HTTP {}", status.as_u16()));
        }
        let sse = is_sse(&parts.headers);
        let bytes = read_bounded(box_body(body), deadline)
            .await
            .map_err(|why| format!("its answer was {why}"))?;
        let answer = filter::response_in(&bytes, sse, &id)
            .ok_or_else(|| "its answer was not a JSON-RPC response".to_string())?;
        if let Some(error) = answer.get("error") {
            let text = error.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(format!("it answered with an error: {text}"));
        }
        Ok(Answer {
            result: answer.get("result").cloned().unwrap_or(Value::Null),
            headers: parts.headers,
            endpoint,
        })
    }

    fn params_with_meta(&self) -> serde_json::Map<String, Value> {
        let mut params = serde_json::Map::new();
        if let Some(meta) = &self.meta {
            params.insert("_meta".into(), meta.clone());
        }
        params
    }

    async fn post(&mut self, message: &Message, raw: &[u8]) -> Result<Served, Refusal> {
        let id = message.id.as_ref();
        let Some(method) = message.method.as_deref() else {
            return self.answer_backend(message, raw).await;
        };
        if method == "initialize" {
            return Ok((self.initialize(message).await?, None));
        }
        if self.state.is_none() && message.meta_version().is_none() {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: no session; send initialize first.",
            )));
        }
        if message.id.is_none() {
            return Ok((self.broadcast(message).await, None));
        }
        if let Some(kind) = Kind::of(method) {
            return Ok((self.list(kind, message).await?, None));
        }
        match method {
            "ping" => Ok((self.result(id, json!({})), None)),
            "server/discover" => Ok((self.discover(message).await?, None)),
            "logging/setLevel" => {
                self.broadcast(message).await;
                Ok((self.result(id, json!({})), None))
            }
            "tools/call" | "prompts/get" => self.call_by_name(message).await,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = message.params.get("uri").and_then(Value::as_str);
                self.call_by_uri(message, uri).await
            }
            "completion/complete" => {
                let reference = message.params.get("ref");
                match reference
                    .and_then(|r| r.get("type"))
                    .and_then(Value::as_str)
                {
                    Some("ref/resource") => {
                        let uri = reference.and_then(|r| r.get("uri")).and_then(Value::as_str);
                        self.call_by_uri(message, uri).await
                    }
                    _ => self.call_by_name(message).await,
                }
            }
            _ => Err(Box::new(rpc_error(
                StatusCode::OK,
                id,
                -32601,
                &format!(
                    "Method not found: {method} is not offered by the aggregated endpoint {PATH}; use /mcp/{{server}}."
                ),
            ))),
        }
    }

    fn result(&self, id: Option<&Value>, mut result: Value) -> Response<ResponseBody> {
        if self.state.is_none()
            && let Some(object) = result.as_object_mut()
        {
            object.insert("resultType".into(), json!("complete"));
        }
        let body =
            json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "result": result});
        crate::http::json(StatusCode::OK, body.to_string())
    }

    /// Sends `body` to every aggregated server outside any session (the
    /// handshake, discovery), in parallel.
    async fn ask_all(&self, body: &Value) -> (Vec<&'a McpServer>, Vec<Result<Answer, String>>) {
        let servers: Vec<&McpServer> = self.servers().collect();
        let answers = join_all(
            servers
                .iter()
                .map(|server| self.exchange(server, None, body.clone())),
        )
        .await;
        (servers, answers)
    }

    /// `initialize`: every backend initialised with the client's
    /// capabilities, their sessions sealed into the client's.
    async fn initialize(&mut self, message: &Message) -> Result<Response<ResponseBody>, Refusal> {
        let params = &message.params;
        let requested = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = SESSION_REVISIONS
            .into_iter()
            .find(|v| *v == requested)
            .unwrap_or(SESSION_REVISIONS[0]);
        let body = json!({
            "jsonrpc": "2.0",
            "id": "tollgate-initialize",
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": params.get("capabilities").cloned().unwrap_or(json!({})),
                "clientInfo": params.get("clientInfo").cloned().unwrap_or(json!({"name": "unknown", "version": "0"})),
            },
        });
        self.state = None;
        let (servers, answers) = self.ask_all(&body).await;
        let mut state = SessionState {
            b: BTreeMap::new(),
            c: ClientCapabilities::of(params.get("capabilities")),
            i: params.get("clientInfo").cloned().unwrap_or(Value::Null),
        };
        let mut capabilities = Vec::new();
        let mut instructions = Vec::new();
        // Backends that refused the handshake may speak 2026-07-28 only:
        // they join the session without one, taking the client's info on
        // every message.
        let client = ClientMeta::of_initialize(params);
        let refused: Vec<&McpServer> = servers
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_err())
            .map(|(server, _)| *server)
            .collect();
        let discovered = join_all(
            refused
                .iter()
                .map(|server| translate::confirm_modern_only(self.gateway, server, &client)),
        )
        .await;
        let mut modern_only: HashMap<&str, Value> = refused
            .iter()
            .zip(discovered)
            .filter_map(|(server, found)| Some((server.path.as_str(), found?)))
            .collect();
        for (server, answer) in servers.iter().zip(answers) {
            let answer = match (answer, modern_only.remove(server.path.as_str())) {
                (Err(_), Some(discovered)) => {
                    let result = revisions::initialize_from_discovery(version, &discovered);
                    Ok(Answer {
                        result: json!({
                            "protocolVersion": jsonrpc::MODERN,
                            "capabilities": result["capabilities"],
                            "instructions": result.get("instructions"),
                        }),
                        headers: HeaderMap::new(),
                        endpoint: 0,
                    })
                }
                (answer, _) => answer,
            };
            match answer {
                Ok(Answer {
                    result,
                    headers,
                    endpoint,
                }) => {
                    let session = headers
                        .get(SESSION_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let leg_version = result
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .unwrap_or(version);
                    state.b.insert(
                        server.path.clone(),
                        Leg {
                            s: session.to_string(),
                            v: leg_version.to_string(),
                            e: endpoint,
                        },
                    );
                    if let Some(text) = result.get("instructions").and_then(Value::as_str) {
                        instructions.push(format!("[{}] {text}", server.path));
                    }
                    capabilities.push(result.get("capabilities").cloned().unwrap_or(json!({})));
                }
                Err(error) => {
                    self.gateway
                        .metrics
                        .count_mcp_list_failure(&server.name, "initialize");
                    tracing::warn!(server = %server.name, %error, "MCP server left out of an aggregated session");
                }
            }
        }
        let mut merged = merge::merge_capabilities(&capabilities.iter().collect::<Vec<_>>());
        if let Some(object) = merged.as_object_mut() {
            // Lists always answer, naming any server that could not list.
            object.entry("tools").or_insert_with(|| json!({}));
        }
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": merged,
            "serverInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
        });
        if !instructions.is_empty() {
            result["instructions"] = json!(instructions.join("\n\n"));
        }
        let sealed = serde_json::to_string(&state)
            .ok()
            .and_then(|state| {
                self.runtime
                    .mcp_sessions
                    .seal(&state, self.principal, PATH, self.now)
                    .ok()
            })
            .and_then(|sealed| HeaderValue::from_str(&sealed).ok())
            .ok_or_else(|| {
                Box::new(rpc_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message.id.as_ref(),
                    jsonrpc::INTERNAL_ERROR,
                    "The gateway could not seal a session for these servers.",
                ))
            })?;
        let mut response = self.result(message.id.as_ref(), result);
        response.headers_mut().insert(SESSION_HEADER, sealed);
        Ok(response)
    }

    /// `server/discover` (2026-07-28): the revisions and the capabilities
    /// of the backends that answer it.
    /// Only when every aggregated server speaks 2026-07-28: otherwise
    /// `-32601`, so the client falls back to `initialize`, where the
    /// gateway holds a session with each backend (a stateless request could
    /// not reach a backend that needs one).
    async fn discover(&self, message: &Message) -> Result<Response<ResponseBody>, Refusal> {
        let body = json!({"jsonrpc": "2.0", "id": "tollgate-discover", "method": "server/discover", "params": self.params_with_meta()});
        let (servers, answers) = self.ask_all(&body).await;
        let mut capabilities = Vec::new();
        for (server, answer) in servers.iter().zip(answers) {
            match answer {
                Ok(Answer { result, .. }) => {
                    capabilities.push(result.get("capabilities").cloned().unwrap_or(json!({})));
                }
                Err(error) => {
                    tracing::debug!(server = %server.name, %error, "aggregated server without server/discover");
                    return Err(Box::new(rpc_error(
                        StatusCode::OK,
                        message.id.as_ref(),
                        -32601,
                        &format!(
                            "Method not found: MCP server {} behind {PATH} does not speak {}; use initialize.",
                            server.path,
                            jsonrpc::MODERN
                        ),
                    )));
                }
            }
        }
        let mut merged = merge::merge_capabilities(&capabilities.iter().collect::<Vec<_>>());
        if let Some(object) = merged.as_object_mut() {
            object.entry("tools").or_insert_with(|| json!({}));
        }
        Ok(self.result(
            message.id.as_ref(),
            json!({
                "supportedVersions": [jsonrpc::MODERN],
                "capabilities": merged,
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")}},
                "ttlMs": 0,
                "cacheScope": "private",
            }),
        ))
    }

    /// A notification from the client goes to every backend in session.
    async fn broadcast(&self, message: &Message) -> Response<ResponseBody> {
        let body = to_backend(message);
        // Backends that speak only 2026-07-28 have no session to notify.
        let servers: Vec<&McpServer> = self
            .servers()
            .filter(|server| {
                self.leg(server)
                    .is_ok_and(|leg| !leg.is_some_and(Leg::modern_only))
            })
            .collect();
        let sent = join_all(servers.iter().map(|server| {
            let leg = self.leg(server).ok().flatten();
            let body = &body;
            async move { (server, self.send(server, leg, body, None).await) }
        }))
        .await;
        for (server, outcome) in sent {
            if let Err(error) = outcome {
                tracing::debug!(server = %server.name, %error, "notification not delivered to an aggregated MCP server");
            }
        }
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::ACCEPTED;
        response
    }

    /// A client's answer to a request a backend sent it: back to that
    /// backend with its own id.
    async fn answer_backend(&self, message: &Message, raw: &[u8]) -> Result<Served, Refusal> {
        let routed = message.id.as_ref().and_then(merge::inbound_id);
        let Some((server, original)) =
            routed.and_then(|(path, original)| Some((self.server_at(path)?, original)))
        else {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: a response to no request the gateway forwarded.",
            )));
        };
        let leg = self.leg(server).map_err(|why| {
            Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                jsonrpc::INVALID_REQUEST,
                &why,
            ))
        })?;
        let mut body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        body["id"] = original;
        let sent = self.send(server, leg, &body, None).await.map_err(|error| {
            Box::new(backend_failed(server, session_of(leg).target, None, &error))
        })?;
        let mut out = Response::new(full(Bytes::new()));
        *out.status_mut() = sent.response.status();
        let routed = Routed {
            server: server.name.clone(),
            arguments: None,
            redacted: Vec::new(),
        };
        Ok((out, Some(routed)))
    }

    /// One backend's list of `kind`, every page of it.
    async fn list_backend(&self, server: &McpServer, kind: Kind) -> Result<Vec<Value>, String> {
        let leg = self.leg(server)?;
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_BACKEND_PAGES {
            let mut params = self.params_with_meta();
            if let Some(cursor) = &cursor {
                params.insert("cursor".into(), json!(cursor));
            }
            let body = json!({"jsonrpc": "2.0", "id": "tollgate-list", "method": kind.method(), "params": params});
            let result = self.exchange(server, leg, body).await?.result;
            let page = result
                .get(kind.field())
                .and_then(Value::as_array)
                .ok_or_else(|| format!("its answer has no {}", kind.field()))?;
            items.extend(page.iter().cloned());
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(items),
            }
        }
        Err(format!("it has more than {MAX_BACKEND_PAGES} pages"))
    }

    /// Every aggregated server's `kind`, merged and named, with the
    /// servers that could not list. Updates this replica's routes.
    async fn merged(
        &self,
        kind: Kind,
        id: Option<&Value>,
    ) -> Result<(Vec<Value>, Vec<(String, String)>), Refusal> {
        let servers: Vec<&McpServer> = self.servers().collect();
        let lists = join_all(servers.iter().map(|s| self.list_backend(s, kind))).await;
        let mut unavailable = Vec::new();
        let mut listed: Vec<(&McpServer, Vec<Value>)> = Vec::new();
        for (server, list) in servers.iter().zip(lists) {
            let list = list.and_then(|items| self.approved(server, kind, items));
            match list {
                Ok(items) => listed.push((server, items)),
                Err(error) => {
                    self.gateway
                        .metrics
                        .count_mcp_list_failure(&server.name, kind.method());
                    tracing::warn!(server = %server.name, list = kind.method(), %error, "MCP server could not list for /mcp");
                    if server.aggregation.as_ref().is_some_and(|a| a.fail_lists) {
                        return Err(Box::new(rpc_error(
                            StatusCode::OK,
                            id,
                            jsonrpc::INTERNAL_ERROR,
                            &format!(
                                "MCP server {} could not list its {}: {error}",
                                server.path,
                                kind.field()
                            ),
                        )));
                    }
                    unavailable.push((server.path.clone(), error));
                }
            }
        }
        let items = match kind {
            Kind::Tools | Kind::Prompts => self.merge_named(kind, listed),
            Kind::Resources | Kind::Templates => self.merge_uris(kind, listed),
        };
        Ok((items, unavailable))
    }

    /// A gated server's tools only while its catalog is the approved one.
    fn approved(
        &self,
        server: &McpServer,
        kind: Kind,
        items: Vec<Value>,
    ) -> Result<Vec<Value>, String> {
        let (Some(gate), Kind::Tools) = (&server.catalog_gate, kind) else {
            return Ok(items);
        };
        let hash = self.gateway.mcp_catalog.learn_all(server, &items);
        if gate.approved.as_deref() == Some(hash.as_str()) {
            Ok(items)
        } else {
            Err(format!("its tool catalog {hash} is not approved"))
        }
    }

    fn merge_named(&self, kind: Kind, listed: Vec<(&McpServer, Vec<Value>)>) -> Vec<Value> {
        let default = tollgate_config::snapshot::mcp::Aggregation {
            prefix: String::new(),
            prefix_mode: PrefixMode::Always,
            fail_lists: false,
        };
        let names: Vec<(&tollgate_config::snapshot::mcp::Aggregation, Vec<&str>)> = listed
            .iter()
            .map(|(server, items)| {
                (
                    server.aggregation.as_ref().unwrap_or(&default),
                    items
                        .iter()
                        .map(|item| item.get("name").and_then(Value::as_str).unwrap_or(""))
                        .collect(),
                )
            })
            .collect();
        let naming = merge::name_entries(&names);
        let mut routes = HashMap::new();
        let mut out = Vec::new();
        for ((server, items), names) in listed.iter().zip(naming) {
            for (item, naming) in items.iter().zip(names) {
                let original = item.get("name").and_then(Value::as_str).unwrap_or("");
                let public = match naming {
                    Naming::Public(public) => public,
                    Naming::Collides { with } => {
                        tracing::warn!(server = %server.name, name = original, with = %listed[with].0.name, "MCP name left out of /mcp: an earlier server has it");
                        continue;
                    }
                    Naming::TooLong => {
                        tracing::warn!(server = %server.name, name = original, "MCP name left out of /mcp: too long once prefixed");
                        continue;
                    }
                };
                routes.insert(public.clone(), (server.path.clone(), original.to_string()));
                if kind == Kind::Tools {
                    let Some((_, read_only)) = filter::tool_of(item) else {
                        continue;
                    };
                    self.gateway.mcp_catalog.learn(server, original, read_only);
                    let caller = Caller {
                        principal: self.principal,
                        server,
                        catalog: &self.gateway.mcp_catalog,
                    };
                    if !caller.may_use(original, read_only) {
                        continue;
                    }
                }
                let mut item = item.clone();
                item["name"] = Value::String(public);
                out.push(item);
            }
        }
        *lock(self.gateway.mcp_routes.names(kind)) = routes;
        out
    }

    fn merge_uris(&self, kind: Kind, listed: Vec<(&McpServer, Vec<Value>)>) -> Vec<Value> {
        let key = if kind == Kind::Resources {
            "uri"
        } else {
            "uriTemplate"
        };
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut out = Vec::new();
        for (server, items) in &listed {
            for item in items {
                let Some(uri) = item.get(key).and_then(Value::as_str) else {
                    continue;
                };
                if let Some(owner) = owners.get(uri) {
                    tracing::warn!(server = %server.name, uri, owner = %owner, "MCP resource left out of /mcp: an earlier server has its URI");
                    continue;
                }
                owners.insert(uri.to_string(), server.path.clone());
                out.push(item.clone());
            }
        }
        let routes = &self.gateway.mcp_routes;
        if kind == Kind::Resources {
            *lock(&routes.uris) = owners;
        } else {
            *lock(&routes.templates) = owners
                .into_iter()
                .map(|(template, path)| {
                    let start = template.split('{').next().unwrap_or("").to_string();
                    (start, path)
                })
                .collect();
        }
        out
    }

    async fn list(&self, kind: Kind, message: &Message) -> Result<Response<ResponseBody>, Refusal> {
        let id = message.id.as_ref();
        let (items, unavailable) = self.merged(kind, id).await?;
        let cursor = message.params.get("cursor").and_then(Value::as_str);
        let (items, next) = merge::page(items, cursor, merge::PAGE_SIZE).map_err(|error| {
            Box::new(rpc_error(
                StatusCode::OK,
                id,
                jsonrpc::INVALID_PARAMS,
                &error.to_string(),
            ))
        })?;
        let mut result = merge::list_result(kind.field(), items, next, &unavailable);
        if self.state.is_none() {
            // 2026-07-28 results say how long they may be cached; lists
            // filtered per caller are private to it.
            result["ttlMs"] = json!(0);
            result["cacheScope"] = json!("private");
        }
        Ok(self.result(id, result))
    }

    /// The server owning public `name` (tools, prompts) and its backend name.
    async fn route_name(&self, kind: Kind, name: &str) -> Option<(&'a McpServer, String)> {
        let known = |ctx: &Self| {
            ctx.gateway
                .mcp_routes
                .name(kind, name)
                .and_then(|(path, original)| Some((ctx.server_at(&path)?, original)))
        };
        if let Some(found) = known(self) {
            return Some(found);
        }
        if let Some((prefix, rest)) = merge::split_prefixed(name)
            && let Some(server) = self.servers().find(|s| {
                s.aggregation
                    .as_ref()
                    .is_some_and(|a| a.prefix == prefix && a.prefix_mode == PrefixMode::Always)
            })
        {
            return Some((server, rest.to_string()));
        }
        // Listed through another replica, or never: list here once.
        if self.gateway.mcp_routes.may_relist(kind) {
            let _ = self.merged(kind, None).await;
            return known(self);
        }
        None
    }

    async fn call_by_name(&self, message: &Message) -> Result<Served, Refusal> {
        let id = message.id.as_ref();
        let method = message.method.as_deref().unwrap_or("");
        let reference = method == "completion/complete";
        let kind = if method == "tools/call" {
            Kind::Tools
        } else {
            Kind::Prompts
        };
        let name = if reference {
            message.params.get("ref").and_then(|r| r.get("name"))
        } else {
            message.params.get("name")
        }
        .and_then(Value::as_str)
        .unwrap_or("");
        let unknown = |what: &str| {
            Box::new(rpc_error(
                StatusCode::OK,
                id,
                jsonrpc::INVALID_PARAMS,
                &format!("Unknown {what}: {name}"),
            ))
        };
        let what = if kind == Kind::Tools {
            "tool"
        } else {
            "prompt"
        };
        let Some((server, original)) = self.route_name(kind, name).await else {
            return Err(unknown(what));
        };
        let mut params = message.params.clone();
        if reference {
            params["ref"]["name"] = json!(original);
        } else {
            params["name"] = json!(original);
        }
        let mut arguments = None;
        let mut redacted = Vec::new();
        if kind == Kind::Tools
            && let Some(args) = params.get_mut("arguments")
        {
            if let Some(policy) = &server.redact {
                redacted = super::redact::redact_arguments(args, policy);
            }
            arguments = Some(super::redact::shape(args));
        }
        let backend_message = Message {
            id: message.id.clone(),
            method: message.method.clone(),
            params,
        };
        if kind == Kind::Tools {
            let leg = self.leg(server).ok().flatten();
            let headers = self.backend_headers(leg, "tools/call", Some(&original));
            let legacy_client = match (leg, &self.state) {
                (Some(leg), Some(state)) if leg.modern_only() => Some(LegacyClientSession {
                    v: revisions::LEGACY.to_string(),
                    client: state.client_meta(),
                }),
                _ => None,
            };
            let speech = match &legacy_client {
                Some(client) => Speech::LegacyToModern(client),
                None => Speech::Direct(session_of(leg)),
            };
            if unclassified_call(
                &backend_message,
                server,
                self.principal,
                &self.gateway.mcp_catalog,
            )
            .is_some()
            {
                let _ = learn_catalog(
                    self.gateway,
                    server,
                    self.principal,
                    &headers,
                    speech,
                    &backend_message,
                )
                .await;
            }
            check_catalog(
                self.gateway,
                server,
                self.principal,
                &headers,
                speech,
                &backend_message,
            )
            .await?;
            let catalog = &self.gateway.mcp_catalog;
            let caller = Caller {
                principal: self.principal,
                server,
                catalog,
            };
            let hint = catalog.hint(server, &original).unwrap_or(false);
            if !caller.may_use(&original, hint) {
                // As if it did not exist: a denied tool is not there for this caller.
                return Err(unknown(what));
            }
        }
        let (response, routed) = self
            .forward(server, &backend_message, Some(&original))
            .await?;
        let routed = routed.map(|r| Routed {
            arguments,
            redacted,
            ..r
        });
        Ok((response, routed))
    }

    async fn call_by_uri(&self, message: &Message, uri: Option<&str>) -> Result<Served, Refusal> {
        let id = message.id.as_ref();
        let uri = uri.unwrap_or("");
        let mut owner = self.gateway.mcp_routes.uri(uri);
        if owner.is_none() && self.gateway.mcp_routes.may_relist(Kind::Resources) {
            let _ = self.merged(Kind::Resources, None).await;
            let _ = self.merged(Kind::Templates, None).await;
            owner = self.gateway.mcp_routes.uri(uri);
        }
        let server = owner.and_then(|path| self.server_at(&path)).or_else(|| {
            // One server: it owns every URI.
            let mut servers = self.servers();
            servers.next().filter(|_| servers.next().is_none())
        });
        let Some(server) = server else {
            return Err(Box::new(rpc_error(
                StatusCode::OK,
                id,
                -32002,
                &format!("Resource not found: {uri}"),
            )));
        };
        let backend_message = Message {
            id: message.id.clone(),
            method: message.method.clone(),
            params: message.params.clone(),
        };
        self.forward(server, &backend_message, Some(uri)).await
    }

    /// A request for one backend: its policy, then its answer streamed back.
    async fn forward(
        &self,
        server: &'a McpServer,
        message: &Message,
        name: Option<&str>,
    ) -> Result<Served, Refusal> {
        let id = message.id.as_ref();
        let leg = self.leg(server).map_err(|why| {
            Box::new(rpc_error(
                StatusCode::OK,
                id,
                jsonrpc::INTERNAL_ERROR,
                &format!("MCP server {} is {why}", server.path),
            ))
        })?;
        if !server.rate_limits.is_empty() {
            throttle(
                self.gateway,
                self.runtime,
                server,
                self.principal,
                message,
                self.now,
            )
            .await?;
        }
        watch_agent(
            self.gateway,
            self.runtime,
            server,
            self.principal,
            message,
            self.now,
        )?;
        let kept = super::cache_key(self.gateway, server, self.principal, message);
        if let Some(answer) = kept.and_then(|key| super::cached_answer(self.gateway, &key, id)) {
            let routed = Routed {
                server: server.name.clone(),
                arguments: None,
                redacted: Vec::new(),
            };
            return Ok((answer, Some(routed)));
        }
        let body = to_backend(message);
        let deadline = backend::deadline(server);
        let sent = self.send(server, leg, &body, name).await.map_err(|error| {
            Box::new(backend_failed(server, session_of(leg).target, id, &error))
        })?;
        let mut out = if leg.is_some_and(Leg::modern_only) {
            // A backend that speaks only 2026-07-28, to a legacy client.
            translate::legacy_answer(sent, deadline).await
        } else {
            let (parts, body) = sent.response.into_parts();
            let mut out = if is_sse(&parts.headers) {
                let mut out = Response::new(relay_stream(body, server.path.clone(), self.client()));
                out.headers_mut()
                    .insert("x-accel-buffering", HeaderValue::from_static("no"));
                out
            } else {
                Response::new(box_body(body))
            };
            *out.status_mut() = parts.status;
            for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
                if let Some(value) = parts.headers.get(&name) {
                    out.headers_mut().insert(name, value.clone());
                }
            }
            out
        };
        if let Some(key) = kept {
            out = super::keep_answer(self.gateway, server, key, out, id, deadline).await;
        }
        let routed = Routed {
            server: server.name.clone(),
            arguments: None,
            redacted: Vec::new(),
        };
        Ok((out, Some(routed)))
    }

    /// GET: the backends' streams of server-initiated messages, merged.
    async fn listen(&self) -> Result<Response<ResponseBody>, Refusal> {
        let Some(state) = &self.state else {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: GET needs a session.",
            )));
        };
        let client = state.c;
        let opened = join_all(self.servers().filter_map(|server| {
            let leg = state.b.get(&server.path)?;
            let session = leg.session();
            session.id?;
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
            if let Ok(version) = HeaderValue::from_str(&leg.v) {
                headers.insert("mcp-protocol-version", version);
            }
            Some(async move {
                let response =
                    backend::session_request(self.gateway, server, Method::GET, &headers, session)
                        .await
                        .map(|sent| sent.response);
                (server, response)
            })
        }))
        .await;
        let mut streams = Vec::new();
        for (server, response) in opened {
            match response {
                Ok(response)
                    if response.status() == StatusCode::OK && is_sse(response.headers()) =>
                {
                    streams.push(relay_frames(
                        response.into_body(),
                        server.path.clone(),
                        client,
                    ));
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(server = %server.name, %error, "no server-initiated stream from an aggregated MCP server")
                }
            }
        }
        if streams.is_empty() {
            let mut response = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                jsonrpc::INVALID_REQUEST,
                "None of the aggregated servers offers a stream of its own messages.",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return Err(Box::new(response));
        }
        let merged = stream::select_all(streams);
        let mut response = Response::new(box_body(StreamBody::new(merged)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }

    /// DELETE: ends every backend session of this session.
    async fn close(&self) -> Response<ResponseBody> {
        if let Some(state) = &self.state {
            join_all(self.servers().filter_map(|server| {
                let leg = state.b.get(&server.path)?;
                let session = leg.session();
                session.id?;
                let mut headers = HeaderMap::new();
                if let Ok(version) = HeaderValue::from_str(&leg.v) {
                    headers.insert("mcp-protocol-version", version);
                }
                Some(async move {
                    backend::session_request(
                        self.gateway,
                        server,
                        Method::DELETE,
                        &headers,
                        session,
                    )
                    .await
                })
            }))
            .await;
        }
        Response::new(full(Bytes::new()))
    }
}

/// A message as a backend gets it: `params` left out when the client sent
/// none (schemas reject a `null` params).
fn to_backend(message: &Message) -> Value {
    let mut body = json!({"jsonrpc": "2.0", "method": message.method});
    if let Some(id) = &message.id {
        body["id"] = id.clone();
    }
    if !message.params.is_null() {
        body["params"] = message.params.clone();
    }
    body
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
}

/// A header value, base64-wrapped as 2026-07-28 asks when not plain ASCII.
pub(super) fn header_value(text: &str) -> HeaderValue {
    use base64::Engine;
    HeaderValue::from_str(text)
        .ok()
        .filter(|_| text.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .unwrap_or_else(|| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            HeaderValue::from_str(&format!("=?base64?{encoded}?="))
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        })
}

fn relay_stream(body: Incoming, path: String, client: ClientCapabilities) -> ResponseBody {
    box_body(StreamBody::new(relay_frames(body, path, client)))
}

/// A backend's SSE stream as the client of `/mcp` gets it, event by event
/// ([`merge::relay_event`]).
fn relay_frames(body: Incoming, path: String, client: ClientCapabilities) -> Frames {
    events::rewrite(body, move |event| {
        match merge::relay_event(event, &path, client) {
            Relayed::Send(out) => Some(out),
            Relayed::Refuse { method } => {
                tracing::warn!(server = %path, method, "dropped a server request the client did not declare it handles");
                None
            }
        }
    })
}
