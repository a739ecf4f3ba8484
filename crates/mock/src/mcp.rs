//! A small MCP server at `/mcp` (Streamable HTTP), speaking both protocol
//! revisions the gateway does: 2025-11-25 (initialize, `Mcp-Session-Id`,
//! DELETE to end a session) and 2026-07-28 (no handshake; version and
//! capabilities in each request's `_meta`; `server/discover`; `Mcp-Method` /
//! `Mcp-Name` headers checked against the body).
//!
//! Tools: `echo` and `add` (read-only), `write_note` (a write), `slow`
//! (streams `notifications/progress` over SSE when asked for progress).
//! One resource (`mock://notes/readme`) and one prompt (`greeting`). With
//! `--mcp-key`, every request must carry `Authorization: Bearer <key>`.
//! `--mcp-era legacy` or `modern` makes it a server of one era only, as
//! older and newer servers are, so the gateway's translation between eras
//! can be tested.
//!
//! The same server also speaks the legacy HTTP+SSE transport (2024-11-05):
//! GET `/sse` opens a session whose first event, `endpoint`, names
//! `/messages?session_id=ID`; each message POSTed there is answered `202`
//! and its answer comes as a `message` event on the stream. A test hook:
//! DELETE `/sse` ends every legacy stream (a server going away).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::{MockBody, StreamBuilder};
use crate::config::McpEra;
use crate::server::State;

pub(crate) const LEGACY: &str = "2025-11-25";
pub(crate) const MODERN: &str = "2026-07-28";
/// Versions a legacy client may negotiate.
const LEGACY_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Sessions of legacy clients, by id.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<HashSet<String>>,
}

impl Sessions {
    fn open(&self, id: String) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
    }

    fn is_live(&self, id: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }

    fn close(&self, id: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id)
    }
}

/// Legacy HTTP+SSE sessions: where each one's messages go (its stream).
#[derive(Debug, Default)]
pub(crate) struct SseSessions {
    live: Mutex<HashMap<String, tokio::sync::mpsc::Sender<Bytes>>>,
}

impl SseSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::mpsc::Sender<Bytes>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends every stream (shutdown).
    pub(crate) fn close_all(&self) {
        self.map().clear();
    }
}

/// With `--mcp-key`, a request without `Authorization: Bearer <key>` is
/// refused.
fn refuse_credential(state: &State, headers: &HeaderMap) -> Option<Response<MockBody>> {
    let key = state.config.auth.mcp_key.as_ref()?;
    let expected = format!("Bearer {key}");
    let sent = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    (sent != Some(expected.as_str()))
        .then(|| plain(StatusCode::UNAUTHORIZED, "missing or wrong MCP credential"))
}

fn sse_frame(event: &str, data: &[u8]) -> Bytes {
    let mut frame = format!("event: {event}\ndata: ").into_bytes();
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// The legacy HTTP+SSE transport: `/sse` (GET; DELETE ends every stream)
/// and `/messages` (POST).
pub(crate) async fn handle_legacy_sse(
    state: &State,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    session: Option<String>,
    body: Bytes,
) -> Response<MockBody> {
    if let Some(refused) = refuse_credential(state, headers) {
        return refused;
    }
    if path == "/sse" {
        if *method == Method::DELETE {
            state.mcp_sse_sessions.close_all();
            return plain(StatusCode::OK, "");
        }
        if *method != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        let id = format!("{:016x}", state.rng().next_u64());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let endpoint = format!("/messages?session_id={id}");
        // A fresh channel has room for the first event.
        let _ = tx.try_send(sse_frame("endpoint", endpoint.as_bytes()));
        state.mcp_sse_sessions.map().insert(id, tx);
        let mut response = Response::new(MockBody::Channel(rx));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return response;
    }
    if *method != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let stream = session.and_then(|id| {
        let mut sessions = state.mcp_sse_sessions.map();
        sessions.retain(|_, tx| !tx.is_closed());
        sessions.get(&id).cloned()
    });
    let Some(stream) = stream else {
        return plain(StatusCode::NOT_FOUND, "unknown session");
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return plain(StatusCode::BAD_REQUEST, "Parse error");
    };
    let (Some(method), Some(id)) = (
        message.get("method").and_then(Value::as_str),
        message.get("id").cloned(),
    ) else {
        // Notifications and the client's responses need no answer.
        return plain(StatusCode::ACCEPTED, "");
    };
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let replies = if method == "initialize" {
        let mut result = initialize_result(&params);
        if params.get("protocolVersion").and_then(Value::as_str) == Some("2024-11-05") {
            result["protocolVersion"] = json!("2024-11-05");
        }
        vec![json!({"jsonrpc": "2.0", "id": id, "result": result})]
    } else {
        let extra = extra_tools(state.config.mcp_tools_file.as_deref());
        match reply(method, &params, &id, Era::Legacy, &extra) {
            Reply::One(_, message) => vec![message],
            Reply::Paced(messages) => messages,
        }
    };
    // Weak, so a stream ended (DELETE /sse, shutdown) ends at once.
    let stream = stream.downgrade();
    tokio::spawn(async move {
        for (i, message) in replies.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(PACE).await;
            }
            let data = serde_json::to_vec(&message).unwrap_or_default();
            let Some(stream) = stream.upgrade() else {
                return;
            };
            if stream.send(sse_frame("message", &data)).await.is_err() {
                return;
            }
        }
    });
    plain(StatusCode::ACCEPTED, "Accepted")
}

pub(crate) async fn handle(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<MockBody> {
    if let Some(refused) = refuse_credential(state, headers) {
        return refused;
    }
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match *method {
        Method::DELETE => match session {
            Some(id) if state.mcp_sessions.close(&id) => plain(StatusCode::OK, ""),
            Some(_) => plain(StatusCode::NOT_FOUND, "unknown session"),
            None => plain(StatusCode::BAD_REQUEST, "Mcp-Session-Id required"),
        },
        // No server-initiated stream: the mock has nothing to say unprompted.
        Method::GET => plain(StatusCode::METHOD_NOT_ALLOWED, ""),
        Method::POST => post(state, headers, session, &body).await,
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, ""),
    }
}

async fn post(
    state: &State,
    headers: &HeaderMap,
    session: Option<String>,
    body: &[u8],
) -> Response<MockBody> {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32700, "Parse error");
    };
    let id = message.get("id").cloned();
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        // A client's response to a server request: the mock sends none.
        return plain(StatusCode::ACCEPTED, "");
    };
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let modern = params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let Some(id) = id else {
        return plain(StatusCode::ACCEPTED, "");
    };
    // A one-era server does not know the other era's requests for what they are.
    let modern = match state.config.mcp_era {
        McpEra::Legacy => None,
        _ => modern,
    };
    if state.config.mcp_era == McpEra::Modern && modern.is_none() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            "Bad Request: this server speaks MCP 2026-07-28 only (no initialize, no sessions); send io.modelcontextprotocol/protocolVersion in _meta",
        );
    }
    let era = match (modern, method) {
        (Some(version), _) => {
            if let Err((code, message, data)) = check_modern(headers, version, method, &params) {
                let mut error = json!({"code": code, "message": message});
                if let Some(data) = data {
                    error["data"] = data;
                }
                return json(
                    StatusCode::BAD_REQUEST,
                    &json!({"jsonrpc": "2.0", "id": id, "error": error}),
                );
            }
            Era::Modern
        }
        (None, "initialize") => Era::Legacy,
        (None, _) => match &session {
            Some(s) if state.mcp_sessions.is_live(s) => Era::Legacy,
            Some(_) => return plain(StatusCode::NOT_FOUND, "unknown session"),
            None => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    id,
                    -32600,
                    "Mcp-Session-Id required: send initialize first",
                );
            }
        },
    };
    if method == "initialize" {
        let session = format!("mock-{:016x}", state.rng().next_u64());
        state.mcp_sessions.open(session.clone());
        let mut response = json_result(&id, initialize_result(&params));
        if let Ok(value) = HeaderValue::from_str(&session) {
            response.headers_mut().insert("mcp-session-id", value);
        }
        return response;
    }
    let extra = extra_tools(state.config.mcp_tools_file.as_deref());
    let mut reply = reply(method, &params, &id, era, &extra);
    if state.config.mcp_era == McpEra::Modern
        && let Reply::One(_, message) = &mut reply
        && let Some(versions) = message.pointer_mut("/result/supportedVersions")
    {
        *versions = json!([MODERN]);
    }
    match reply {
        Reply::One(status, message) => json(status, &message),
        Reply::Paced(messages) => sse(&messages),
    }
}

/// A request's answer, whatever carries it.
enum Reply {
    /// One response, with the HTTP status it goes with.
    One(StatusCode, Value),
    /// Notifications then the response, [`PACE`] apart (`slow`).
    Paced(Vec<Value>),
}

/// Time between the messages of a [`Reply::Paced`].
const PACE: Duration = Duration::from_millis(20);

/// The `initialize` result for the version the client asks for.
fn initialize_result(params: &Value) -> Value {
    let asked = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(LEGACY);
    let version = if LEGACY_VERSIONS.contains(&asked) {
        asked
    } else {
        LEGACY
    };
    json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
    })
}

/// The answer to request `id` (any method but `initialize`).
/// `extra_tools`: `--mcp-tools-file`'s, listed after the built-in ones.
fn reply(method: &str, params: &Value, id: &Value, era: Era, extra_tools: &[Value]) -> Reply {
    let progress = params
        .get("_meta")
        .and_then(|m| m.get("progressToken"))
        .cloned();
    match answer(method, params, era, extra_tools) {
        Ok(Answer::Result(mut result)) => {
            if era == Era::Modern
                && let Some(object) = result.as_object_mut()
            {
                object.insert("resultType".into(), json!("complete"));
                object.insert("_meta".into(), json!({META_SERVER_INFO: server_info()}));
            }
            Reply::One(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": id, "result": result}),
            )
        }
        Ok(Answer::Slow(steps)) => Reply::Paced(slow(id, steps, progress)),
        Err((code, message)) => {
            let status = if era == Era::Modern && code == -32601 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            Reply::One(status, error_message(id.clone(), code, &message))
        }
    }
}

/// `tollgate mock --mcp-stdio`: the same server over stdin and stdout (the
/// MCP stdio transport: one JSON-RPC message per line), 2025-11-25 only
/// (initialize, no session header). Requests are answered concurrently, so
/// a `slow` call does not hold up a `ping`; each message is written as one
/// whole line. Returns when stdin ends.
pub async fn serve_stdio() -> std::io::Result<()> {
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let out = Arc::new(tokio::sync::Mutex::new(tokio::io::stdout()));
    let write = |out: Arc<tokio::sync::Mutex<tokio::io::Stdout>>, message: Value| async move {
        let mut line = serde_json::to_vec(&message).unwrap_or_default();
        line.push(b'\n');
        let mut out = out.lock().await;
        out.write_all(&line).await?;
        out.flush().await
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).split(b'\n');
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_segment().await? {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let Ok(message) = serde_json::from_slice::<Value>(&line) else {
            write(
                out.clone(),
                error_message(Value::Null, -32700, "Parse error"),
            )
            .await?;
            continue;
        };
        // Notifications and the client's responses need no answer.
        let (Some(method), Some(id)) = (
            message.get("method").and_then(Value::as_str),
            message.get("id").cloned(),
        ) else {
            continue;
        };
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let replies = if method == "initialize" {
            vec![json!({"jsonrpc": "2.0", "id": id, "result": initialize_result(&params)})]
        } else {
            match reply(method, &params, &id, Era::Legacy, &[]) {
                Reply::One(_, message) => vec![message],
                Reply::Paced(messages) => messages,
            }
        };
        let out = out.clone();
        tasks.spawn(async move {
            for (i, message) in replies.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(PACE).await;
                }
                write(out.clone(), message).await?;
            }
            Ok::<(), std::io::Error>(())
        });
        while let Some(done) = tasks.try_join_next() {
            if let Ok(Err(error)) = done {
                return Err(error);
            }
        }
    }
    // Answer what is in flight before going.
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Era {
    Legacy,
    Modern,
}

enum Answer {
    Result(Value),
    /// `slow`: this many progress steps, 20 ms apart, then the result.
    Slow(u64),
}

fn answer(
    method: &str,
    params: &Value,
    era: Era,
    extra_tools: &[Value],
) -> Result<Answer, (i64, String)> {
    let cacheable = |mut value: Value| {
        if era == Era::Modern
            && let Some(object) = value.as_object_mut()
        {
            object.insert("ttlMs".into(), json!(60_000));
            object.insert("cacheScope".into(), json!("public"));
        }
        value
    };
    let result = match method {
        "ping" => json!({}),
        // A method of the modern era only.
        "server/discover" if era == Era::Modern => cacheable(json!({
            "supportedVersions": [MODERN, LEGACY],
            "capabilities": capabilities(),
        })),
        "tools/list" => {
            let mut all = tools();
            if let Some(list) = all.as_array_mut() {
                list.extend(extra_tools.iter().cloned());
            }
            cacheable(json!({"tools": all}))
        }
        "tools/call" => return call_tool(params),
        "resources/list" => cacheable(json!({"resources": [{
            "uri": "mock://notes/readme", "name": "readme", "mimeType": "text/plain",
        }]})),
        "resources/templates/list" => cacheable(json!({"resourceTemplates": []})),
        "resources/read" => {
            let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
            if uri != "mock://notes/readme" {
                let code = if era == Era::Modern { -32602 } else { -32002 };
                return Err((code, format!("Resource not found: {uri}")));
            }
            cacheable(json!({"contents": [{
                "uri": uri, "mimeType": "text/plain", "text": "The mock MCP server's notes.",
            }]}))
        }
        "prompts/list" => cacheable(json!({"prompts": [{
            "name": "greeting", "description": "Greets someone",
            "arguments": [{"name": "name", "required": true}],
        }]})),
        "prompts/get" => {
            let name = params
                .get("arguments")
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .ok_or((-32602, "Missing required argument: name".to_string()))?;
            json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("Say hello to {name}.")}}]})
        }
        other => return Err((-32601, format!("Method not found: {other}"))),
    };
    Ok(Answer::Result(result))
}

fn call_tool(params: &Value) -> Result<Answer, (i64, String)> {
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    let text = |t: String| json!({"content": [{"type": "text", "text": t}], "isError": false});
    Ok(Answer::Result(match name {
        "echo" => text(
            args.get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        "add" => {
            let (Some(a), Some(b)) = (
                args.get("a").and_then(Value::as_f64),
                args.get("b").and_then(Value::as_f64),
            ) else {
                return Ok(Answer::Result(json!({
                    "content": [{"type": "text", "text": "add needs numbers a and b"}],
                    "isError": true,
                })));
            };
            let sum = a + b;
            json!({
                "content": [{"type": "text", "text": format!("{sum}")}],
                "structuredContent": {"sum": sum},
                "isError": false,
            })
        }
        "write_note" => text(format!(
            "noted: {}",
            args.get("note").and_then(Value::as_str).unwrap_or("")
        )),
        "slow" => {
            let steps = args
                .get("steps")
                .and_then(Value::as_u64)
                .unwrap_or(3)
                .min(20);
            return Ok(Answer::Slow(steps));
        }
        other => return Err((-32602, format!("Unknown tool: {other}"))),
    }))
}

/// `--mcp-tools-file`'s tools, as the file is now.
fn extra_tools(file: Option<&std::path::Path>) -> Vec<Value> {
    file.and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
        .unwrap_or_default()
}

fn tools() -> Value {
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required});
    json!([
        {"name": "echo", "description": "Returns the text it is given",
         "inputSchema": object(json!({"text": {"type": "string"}}), &["text"]),
         "annotations": {"readOnlyHint": true}},
        {"name": "add", "description": "Adds two numbers",
         "inputSchema": object(json!({"a": {"type": "number"}, "b": {"type": "number"}}), &["a", "b"]),
         "outputSchema": object(json!({"sum": {"type": "number"}}), &["sum"]),
         "annotations": {"readOnlyHint": true, "idempotentHint": true}},
        {"name": "write_note", "description": "Stores a note (a write)",
         "inputSchema": object(json!({"note": {"type": "string"}}), &["note"]),
         "annotations": {"readOnlyHint": false, "destructiveHint": false}},
        {"name": "slow", "description": "Takes a while, reporting progress",
         "inputSchema": object(json!({"steps": {"type": "integer"}}), &[]),
         "annotations": {"readOnlyHint": true}},
    ])
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}, "resources": {}, "prompts": {}})
}

fn server_info() -> Value {
    json!({"name": "tollgate-mock", "version": env!("CARGO_PKG_VERSION")})
}

/// Why a modern request is refused (always 400): code, message, data.
type Refusal = (i64, String, Option<Value>);

/// 2026-07-28: the version header must match `_meta`, `Mcp-Method` the
/// method, `Mcp-Name` the tool/prompt name or resource URI.
fn check_modern(
    headers: &HeaderMap,
    version: &str,
    method: &str,
    params: &Value,
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mismatch = |what: String| Err((-32020, format!("Header mismatch: {what}"), None));
    if version != MODERN {
        return Err((
            -32022,
            "Unsupported protocol version".into(),
            Some(json!({"supported": [MODERN], "requested": version})),
        ));
    }
    if params
        .get("_meta")
        .and_then(|m| m.get(META_CAPABILITIES))
        .is_none()
    {
        return Err((
            -32602,
            "Missing _meta io.modelcontextprotocol/clientCapabilities".into(),
            None,
        ));
    }
    if header("mcp-protocol-version") != Some(version) {
        return mismatch(format!(
            "MCP-Protocol-Version header {:?} does not match body value {version:?}",
            header("mcp-protocol-version")
        ));
    }
    if header("mcp-method") != Some(method) {
        return mismatch(format!(
            "Mcp-Method header {:?} does not match body value {method:?}",
            header("mcp-method")
        ));
    }
    let name = match method {
        "tools/call" | "prompts/get" => params.get("name").and_then(Value::as_str),
        "resources/read" => params.get("uri").and_then(Value::as_str),
        _ => return Ok(()),
    };
    if name.is_some() && header("mcp-name") != name {
        return mismatch(format!(
            "Mcp-Name header {:?} does not match body value {name:?}",
            header("mcp-name")
        ));
    }
    Ok(())
}

/// `slow`: progress notifications (when the request asked for progress),
/// then the result.
fn slow(id: &Value, steps: u64, progress: Option<Value>) -> Vec<Value> {
    let mut messages = Vec::new();
    if let Some(token) = progress {
        for step in 1..=steps {
            messages.push(json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": token, "progress": step, "total": steps}}));
        }
    }
    messages.push(json!({"jsonrpc": "2.0", "id": id, "result": {
        "content": [{"type": "text", "text": format!("done after {steps} steps")}], "isError": false}}));
    messages
}

/// Messages as one SSE stream, [`PACE`] apart.
fn sse(messages: &[Value]) -> Response<MockBody> {
    let mut stream = StreamBuilder::with_capacity(256 * messages.len(), messages.len());
    for message in messages {
        stream.buf().extend_from_slice(b"event: message\ndata: ");
        crate::server::push_json(stream.buf(), message);
        stream.buf().extend_from_slice(b"\n\n");
        stream.end_frame(PACE);
    }
    crate::server::sse_response(stream.finish(None))
}

fn json_result(id: &Value, result: Value) -> Response<MockBody> {
    json(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response<MockBody> {
    json(status, &error_message(id, code, message))
}

fn error_message(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn json(status: StatusCode, value: &Value) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(
        serde_json::to_vec(value).unwrap_or_default(),
    ));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
