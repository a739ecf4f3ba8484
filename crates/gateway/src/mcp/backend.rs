//! Sending a message to an MCPServer: which endpoint (`url`, then its
//! `failoverUrls`), each endpoint's circuit breaker, retries of messages
//! that may be repeated, and the error a client gets when none answers.
//!
//! A message with no backend session may go to any endpoint, first to
//! last: one that cannot be reached (or whose circuit is open) is passed
//! over at once, whatever the message, since it never left. A message of a
//! session goes only to the endpoint that holds the session (sealed into
//! the client's session id, see [`super::session::pin`]); when that
//! endpoint is gone the client is told its session ended, so it starts a
//! new one on an endpoint that answers. The decisions are pure, in
//! [`breaker`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tollgate_api::mcp::ServerTransport;
use tollgate_config::egress::EgressPolicy;
use tollgate_config::snapshot::McpServer;

use super::breaker::{self, Failure, Step};
use super::{FORWARDED, SESSION_HEADER, jsonrpc, rpc_error};
use crate::http::ResponseBody;
use crate::providers::http::error_chain;
use crate::runtime::Gateway;

/// Which endpoints a message may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// Any: the message belongs to no backend session.
    Any,
    /// Only this one, which holds the message's backend session.
    Endpoint(usize),
}

/// The backend session a client's message belongs to, if any: where it
/// lives and the backend's id for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct BackendSession<'a> {
    pub target: Target,
    pub id: Option<&'a str>,
}

impl<'a> BackendSession<'a> {
    /// From what the client's session id sealed ([`super::session::pin`]).
    pub fn of(pinned: Option<&'a str>) -> Self {
        match pinned.map(super::session::unpin) {
            Some((endpoint, id)) => Self {
                target: Target::Endpoint(endpoint),
                id: Some(id),
            },
            None => Self {
                target: Target::Any,
                id: None,
            },
        }
    }
}

/// A message as it leaves for a backend, whichever endpoint takes it.
pub(super) struct Outgoing<'a> {
    pub method: Method,
    pub headers: &'a HeaderMap,
    /// The backend's own session id.
    pub session: Option<&'a str>,
    pub body: Bytes,
}

/// A backend's answer and the endpoint that gave it.
pub(super) struct Sent {
    pub response: Response<Incoming>,
    pub endpoint: usize,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum BackendError {
    #[error("circuit open after repeated failures; next try in {0}s")]
    CircuitOpen(u64),
    #[error("could not connect: {0}")]
    NotSent(String),
    #[error("the exchange broke off: {0}")]
    Broken(String),
    #[error("no answer in time")]
    Timeout,
    #[error("{0}")]
    Unusable(String),
}

impl BackendError {
    /// Whether the message certainly never reached the endpoint.
    fn not_sent(&self) -> bool {
        matches!(self, Self::NotSent(_) | Self::CircuitOpen(_))
    }
}

/// Sends `outgoing` to `server` as `target` allows, moving on to the next
/// endpoint or sending again (after a backoff, within `deadline`) as
/// [`breaker::after`] decides; writes (not `retryable`) are sent again only
/// when they never left. The answer must begin by `deadline`. A 502, 503 or
/// 504 that is the last word comes back as the answer.
pub(super) async fn send(
    gateway: &Gateway,
    server: &McpServer,
    target: Target,
    outgoing: &Outgoing<'_>,
    deadline: tokio::time::Instant,
    retryable: bool,
) -> Result<Sent, BackendError> {
    // The endpoints in order, as the first and how many: no allocation.
    let (first, count) = match target {
        Target::Any => (0, server.endpoints()),
        Target::Endpoint(endpoint) => (endpoint, 1),
    };
    let mut position = 0;
    let mut sends = 0;
    loop {
        let endpoint = first + position % count;
        let request = backend_request(gateway, server, endpoint, outgoing)?;
        let result = send_once(gateway, server, endpoint, request, deadline).await;
        sends += 1;
        let untried = count.saturating_sub(position + 1);
        // `None`: the result is final.
        let failure = match &result {
            Ok(response) if matches!(response.status().as_u16(), 502..=504) => {
                Some(Failure::MayHaveActed)
            }
            Ok(_) => None,
            // The deadline is spent, or the message cannot be built.
            Err(BackendError::Timeout | BackendError::Unusable(_)) => None,
            // Every endpoint is open: waiting would not close one.
            Err(BackendError::CircuitOpen(_)) if untried == 0 => None,
            Err(error) if error.not_sent() => Some(Failure::NotSent),
            Err(_) => Some(Failure::MayHaveActed),
        };
        let step = failure.map_or(Step::GiveUp, |failure| {
            breaker::after(failure, retryable, sends, untried)
        });
        match step {
            Step::NextEndpoint => {
                tracing::debug!(server = %server.name, endpoint, "MCP endpoint unreachable; trying the next");
                position += 1;
            }
            Step::Retry(backoff) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!(server = %server.name, endpoint, sends, "retrying an MCP message the backend did not act on");
                tokio::time::sleep(backoff).await;
                position += 1;
            }
            _ => return result.map(|response| Sent { response, endpoint }),
        }
    }
}

/// A GET (the session's stream) or DELETE (its end) for a backend session,
/// sent once to the endpoint that holds it.
pub(super) async fn session_request(
    gateway: &Gateway,
    server: &McpServer,
    method: Method,
    headers: &HeaderMap,
    session: BackendSession<'_>,
) -> Result<Sent, BackendError> {
    let outgoing = Outgoing {
        method,
        headers,
        session: session.id,
        body: Bytes::new(),
    };
    send(
        gateway,
        server,
        session.target,
        &outgoing,
        deadline(server),
        false,
    )
    .await
}

/// One send to one endpoint, through its circuit breaker. Backends in the
/// cluster or on this host are reachable; cloud metadata is not.
async fn send_once(
    gateway: &Gateway,
    server: &McpServer,
    endpoint: usize,
    request: Request<Full<Bytes>>,
    deadline: tokio::time::Instant,
) -> Result<Response<Incoming>, BackendError> {
    let policy = EgressPolicy {
        allow_loopback: true,
        allow_link_local: false,
    };
    if let breaker::Gate::Refuse(wait) = gateway.mcp_breakers.gate(server, endpoint) {
        return Err(BackendError::CircuitOpen(wait.as_secs().max(1)));
    }
    let client = gateway
        .clients
        .pooled(server.timeout_ms.min(10_000), policy);
    let result = match tokio::time::timeout_at(deadline, client.request(request)).await {
        Err(_) => Err(BackendError::Timeout),
        Ok(Err(error)) if error.is_connect() => Err(BackendError::NotSent(error_chain(&error))),
        Ok(Err(error)) => Err(BackendError::Broken(error_chain(&error))),
        Ok(Ok(response)) => Ok(response),
    };
    let success = result
        .as_ref()
        .is_ok_and(|response| !response.status().is_server_error());
    gateway.mcp_breakers.record(server, endpoint, success);
    result
}

fn backend_request(
    gateway: &Gateway,
    server: &McpServer,
    endpoint: usize,
    outgoing: &Outgoing<'_>,
) -> Result<Request<Full<Bytes>>, BackendError> {
    let url = server
        .endpoint(endpoint)
        .ok_or_else(|| BackendError::Unusable(format!("no endpoint {endpoint}")))?;
    // A legacy HTTP+SSE server: through the embedded bridge, which holds
    // the credential.
    let legacy = server.transport == ServerTransport::Sse;
    let bridged = if legacy {
        Some(
            gateway
                .mcp_legacy
                .url(server, endpoint)
                .map_err(BackendError::Unusable)?,
        )
    } else {
        None
    };
    let url = bridged.as_deref().unwrap_or(url);
    let mut request = Request::builder().method(outgoing.method.clone()).uri(url);
    let out = request
        .headers_mut()
        .ok_or_else(|| BackendError::Unusable(format!("invalid MCP server URL {url}")))?;
    for name in FORWARDED {
        if let Some(value) = outgoing.headers.get(name) {
            out.insert(name, value.clone());
        }
    }
    for (name, value) in outgoing.headers {
        if name.as_str().starts_with("mcp-param-") {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(session) = outgoing.session {
        let value = HeaderValue::from_str(session)
            .map_err(|_| BackendError::Unusable("unusable backend session id".into()))?;
        out.insert(SESSION_HEADER, value);
    }
    if let Some(credential) = server.credential.as_ref().filter(|_| !legacy) {
        let name = HeaderName::from_bytes(credential.header.as_bytes())
            .map_err(|_| BackendError::Unusable("invalid credential header".into()))?;
        let mut value = HeaderValue::from_str(&credential.value.0)
            .map_err(|_| BackendError::Unusable("invalid credential".into()))?;
        value.set_sensitive(true);
        out.insert(name, value);
    }
    request
        .body(Full::new(outgoing.body.clone()))
        .map_err(|error| {
            BackendError::Unusable(format!("cannot build the backend request: {error}"))
        })
}

/// What a client gets when its message could not be delivered: a JSON-RPC
/// error with its id, 504 for a timeout, 503 while the backend's circuit
/// is open, else 502. A session whose endpoint is gone while the server
/// has others ended: 404, so the client starts a new one there.
pub(super) fn backend_failed(
    server: &McpServer,
    target: Target,
    id: Option<&serde_json::Value>,
    error: &BackendError,
) -> Response<ResponseBody> {
    tracing::warn!(server = %server.name, %error, "MCP backend failed");
    if matches!(target, Target::Endpoint(_)) && server.endpoints() > 1 && error.not_sent() {
        return rpc_error(
            StatusCode::NOT_FOUND,
            id,
            jsonrpc::INVALID_REQUEST,
            "Session not found: the server replica holding it is unreachable; initialize a new session.",
        );
    }
    let (status, text) = match error {
        BackendError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("MCP server {} did not answer in time.", server.path),
        ),
        BackendError::CircuitOpen(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("MCP server {} is failing: {error}.", server.path),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            format!("MCP server {} could not be reached.", server.path),
        ),
    };
    rpc_error(status, id, jsonrpc::INTERNAL_ERROR, &text)
}

/// The circuit breaker of every MCP backend endpoint on this replica.
#[derive(Debug, Default)]
pub struct Breakers {
    breakers: Mutex<std::collections::HashMap<(Arc<str>, usize), breaker::Breaker>>,
}

impl Breakers {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(Arc<str>, usize), breaker::Breaker>>
    {
        self.breakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gate(&self, server: &McpServer, endpoint: usize) -> breaker::Gate {
        self.lock()
            .get_mut(&(server.name.clone(), endpoint))
            .map_or(breaker::Gate::Pass, |b| b.gate(std::time::Instant::now()))
    }

    fn record(&self, server: &McpServer, endpoint: usize, success: bool) {
        let key = (server.name.clone(), endpoint);
        let mut breakers = self.lock();
        if success && !breakers.contains_key(&key) {
            return;
        }
        let breaker = breakers.entry(key.clone()).or_default();
        let was_open = breaker.is_open();
        breaker.record(success, std::time::Instant::now());
        match (was_open, breaker.is_open()) {
            (false, true) => {
                tracing::warn!(server = %server.name, endpoint, "MCP backend circuit opened after repeated failures")
            }
            (true, false) => {
                tracing::info!(server = %server.name, endpoint, "MCP backend circuit closed")
            }
            _ => {}
        }
        if success {
            breakers.remove(&key);
        }
    }

    /// Whether the circuit of every endpoint of `server` is open now.
    pub fn is_open(&self, server: &McpServer) -> bool {
        let breakers = self.lock();
        (0..server.endpoints()).all(|endpoint| {
            breakers
                .get(&(server.name.clone(), endpoint))
                .is_some_and(breaker::Breaker::is_open)
        })
    }
}

/// The headers every JSON-RPC POST the gateway makes itself carries.
pub(super) fn base_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// How long a backend has for one message.
pub(super) fn deadline(server: &McpServer) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(server.timeout_ms)
}
