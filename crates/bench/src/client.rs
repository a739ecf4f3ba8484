//! Raw hyper HTTP/1.1 keep-alive connections, one per load worker.
//!
//! We manage connections ourselves (instead of a pooled client) so each
//! worker owns exactly one socket: no pool lock or checkout on the hot path,
//! and the open-loop schedule decides precisely when each request is sent.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Collected, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A request that can be rebuilt cheaply: the body is a shared `Bytes`, so
/// each send is a refcount bump, not a copy or a re-serialisation.
#[derive(Clone, Debug)]
pub struct RequestTemplate {
    pub addr: SocketAddr,
    path: http::Uri,
    host: HeaderValue,
    body: Bytes,
    authorization: Option<HeaderValue>,
    /// Further headers sent with every request (MCP's `Accept`,
    /// `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// What a successful answer's body must look like, beyond a 2xx status.
    pub check: BodyCheck,
}

/// A check on each answer's body, for APIs whose errors can come with a 2xx
/// status (JSON-RPC). Kept cheap: it runs inside the measured loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyCheck {
    /// Status only (the chat completion targets).
    #[default]
    None,
    /// A JSON-RPC success: the body has a `"result"` member and no
    /// `"error"` member. A substring test, not a parse, so a tool output
    /// that merely mentions either word could fool it; the MCP section
    /// parses every warm-up probe answer in full (see `mcp::probe`).
    JsonRpcResult,
}

impl BodyCheck {
    pub(crate) fn verify(self, body: &[u8]) -> Result<(), RequestError> {
        match self {
            BodyCheck::None => Ok(()),
            BodyCheck::JsonRpcResult => {
                if contains(body, br#""error":"#) || contains(body, br#""error" :"#) {
                    Err(RequestError::Rpc(snippet(body)))
                } else if contains(body, br#""result""#) {
                    Ok(())
                } else {
                    Err(RequestError::Rpc(format!(
                        "no JSON-RPC result: {}",
                        snippet(body)
                    )))
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The start of a body, for an error message.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.replace(['\n', '\r'], " ")
}

impl RequestTemplate {
    pub fn new(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Self {
        let host = HeaderValue::from_str(&addr.to_string()).expect("socket addr is a valid header");
        RequestTemplate {
            addr,
            // Paths are compile-time constants of the harness.
            path: path.parse().expect("valid request path"),
            host,
            body: body.into(),
            authorization: None,
            headers: Vec::new(),
            check: BodyCheck::None,
        }
    }

    /// Sends `name: value` with every request (replacing a default header of
    /// the same name, e.g. `Accept`).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        let value = HeaderValue::from_str(value).expect("harness header values are valid");
        self.headers.push((HeaderName::from_static(name), value));
        self
    }

    /// Checks every answer's body (see [`BodyCheck`]).
    pub fn with_check(mut self, check: BodyCheck) -> Self {
        self.check = check;
        self
    }

    /// The request path.
    pub fn path(&self) -> &str {
        self.path.path()
    }

    /// Sends `Authorization: Bearer <key>` with every request.
    pub fn with_bearer(mut self, key: &str) -> Self {
        self.authorization = HeaderValue::from_str(&format!("Bearer {key}")).ok();
        self
    }

    pub fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(value) = &self.authorization {
            h.insert(header::AUTHORIZATION, value.clone());
        }
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        req
    }
}

/// The chat completion body used everywhere: short system + user message,
/// `max_tokens: 16`. Only `model` (and `stream`) differ between targets.
pub fn chat_body(model: &str, stream: bool) -> Bytes {
    let body = serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one short sentence."},
            {"role": "user", "content": "What is the main benefit of HTTP keep-alive for an API gateway?"}
        ],
        "max_tokens": 16,
        "stream": stream,
    });
    Bytes::from(serde_json::to_vec(&body).expect("static JSON serialises"))
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("timed out")]
    Timeout,
    #[error("HTTP: {0}")]
    Http(String),
    /// A 2xx answer whose body failed the template's [`BodyCheck`].
    #[error("JSON-RPC: {0}")]
    Rpc(String),
}

impl RequestError {
    /// Stable key for counting errors by kind in the report.
    pub fn kind(&self) -> String {
        match self {
            RequestError::Connect(_) => "connect".into(),
            RequestError::Status(s) => format!("status_{s}"),
            RequestError::Timeout => "timeout".into(),
            RequestError::Http(_) => "http".into(),
            RequestError::Rpc(_) => "rpc_error".into(),
        }
    }
}

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn, RequestError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| RequestError::Connect(e.to_string()))?;
    // Small request/response exchanges: Nagle would add delayed-ACK stalls.
    stream
        .set_nodelay(true)
        .map_err(|e| RequestError::Connect(e.to_string()))?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| RequestError::Connect(e.to_string()))?;
    let driver = tokio::spawn(async move {
        // Errors surface through the sender; nothing to do here.
        let _ = conn.await;
    });
    Ok(Conn { sender, driver })
}

/// One worker's keep-alive connection, re-established after any failure.
pub struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
    pub timeout: Duration,
}

impl Client {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Client {
            addr,
            conn: None,
            timeout,
        }
    }

    /// Opens the connection ahead of time so the first measured request
    /// doesn't pay for the TCP handshake.
    pub async fn preconnect(&mut self) -> Result<(), RequestError> {
        if self.conn.is_none() {
            self.conn = Some(
                tokio::time::timeout(self.timeout, connect(self.addr))
                    .await
                    .map_err(|_| RequestError::Timeout)??,
            );
        }
        Ok(())
    }

    async fn ready_conn(&mut self) -> Result<&mut Conn, RequestError> {
        // A server may close an idle keep-alive socket; that's not a request
        // failure, just reconnect.
        if self.conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(connect(self.addr).await?);
        }
        let conn = self.conn.as_mut().expect("just set");
        conn.sender
            .ready()
            .await
            .map_err(|e| RequestError::Http(e.to_string()))?;
        Ok(conn)
    }

    /// Sends one request and reads the whole answer (no timeout).
    async fn exchange(
        &mut self,
        tmpl: &RequestTemplate,
    ) -> Result<(http::response::Parts, Collected<Bytes>), RequestError> {
        let conn = self.ready_conn().await?;
        let resp = conn
            .sender
            .send_request(tmpl.build())
            .await
            .map_err(|e| RequestError::Http(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        // Always drain the body so the connection can be reused.
        let body = body
            .collect()
            .await
            .map_err(|e| RequestError::Http(e.to_string()))?;
        Ok((parts, body))
    }

    /// Sends one request and reads the whole response body.
    pub async fn request(&mut self, tmpl: &RequestTemplate) -> Result<(), RequestError> {
        let result = tokio::time::timeout(self.timeout, async {
            let (parts, body) = self.exchange(tmpl).await?;
            if !parts.status.is_success() {
                return Err(RequestError::Status(parts.status.as_u16()));
            }
            if tmpl.check != BodyCheck::None {
                tmpl.check.verify(&body.to_bytes())?;
            }
            Ok(())
        })
        .await
        .unwrap_or(Err(RequestError::Timeout));
        self.after(&result);
        result
    }

    /// Sends one request and returns the status, `Content-Type` and whole
    /// body, whatever the status (for probes that inspect the answer).
    pub async fn fetch(
        &mut self,
        tmpl: &RequestTemplate,
    ) -> Result<(u16, String, Bytes), RequestError> {
        let result = tokio::time::timeout(self.timeout, async {
            let (parts, body) = self.exchange(tmpl).await?;
            let ctype = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Ok((parts.status.as_u16(), ctype, body.to_bytes()))
        })
        .await
        .unwrap_or(Err(RequestError::Timeout));
        self.after(&result);
        result
    }

    /// Sends a streaming request; returns the time from just before the send
    /// to the first non-empty body chunk, then drains the rest of the stream.
    pub async fn first_byte(&mut self, tmpl: &RequestTemplate) -> Result<Duration, RequestError> {
        let result = tokio::time::timeout(self.timeout, async {
            let conn = self.ready_conn().await?;
            let start = Instant::now();
            let resp = conn
                .sender
                .send_request(tmpl.build())
                .await
                .map_err(|e| RequestError::Http(e.to_string()))?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut ttfb = None;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| RequestError::Http(e.to_string()))?;
                if ttfb.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                    ttfb = Some(start.elapsed());
                }
            }
            if !status.is_success() {
                return Err(RequestError::Status(status.as_u16()));
            }
            ttfb.ok_or_else(|| RequestError::Http("empty streaming body".into()))
        })
        .await
        .unwrap_or(Err(RequestError::Timeout));
        self.after(&result);
        result
    }

    fn after<T>(&mut self, result: &Result<T, RequestError>) {
        // After a timeout or transport error the connection state is unknown
        // (maybe mid-response): drop it. A clean non-2xx keeps it.
        if matches!(
            result,
            Err(RequestError::Timeout | RequestError::Http(_) | RequestError::Connect(_))
        ) {
            self.conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_body_shape() {
        let v: serde_json::Value = serde_json::from_slice(&chat_body("chat", true)).unwrap();
        assert_eq!(v["model"], "chat");
        assert_eq!(v["stream"], true);
        assert_eq!(v["max_tokens"], 16);
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn template_builds_post_with_host() {
        let t = RequestTemplate::new(
            "127.0.0.1:8080".parse().unwrap(),
            "/v1/chat/completions",
            "{}",
        );
        let r = t.build();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri().path(), "/v1/chat/completions");
        assert_eq!(r.headers()[header::HOST], "127.0.0.1:8080");
    }
}
