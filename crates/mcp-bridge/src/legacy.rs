//! A session whose upstream is a server of the legacy HTTP+SSE transport
//! (MCP 2024-11-05): one GET on the server's SSE URL is the session; its
//! first event, `endpoint`, names the URI each message of the client is
//! POSTed to, and every message of the server comes back as a `message`
//! event on the stream. The stream ending ends the session.
//!
//! Pure parts first ([`SseParser`], [`resolve_endpoint`]), then the
//! connection ([`run`]), which feeds each `message` event into the same
//! routing the stdio reader uses ([`Session::dispatch`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use url::Url;

use crate::message::{self, Kind, Message, SERVER_ERROR};
use crate::session::{MAX_LINE, Session};

/// Largest SSE event accepted, as for a line from a stdio server.
pub(crate) const MAX_EVENT: usize = MAX_LINE;
/// How long the server may take to answer the GET and send `endpoint`.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one POST of a message may take.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a POST's answer is read (so the connection can be reused).
const POST_ANSWER_LIMIT: usize = 64 * 1024;

/// Where a legacy session connects: the SSE URL, and headers sent with the
/// GET and every POST (a credential, say).
#[derive(Clone, PartialEq, Eq)]
pub struct LegacyUpstream {
    pub url: Url,
    pub headers: HeaderMap,
}

impl std::fmt::Debug for LegacyUpstream {
    // Header values may be credentials: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyUpstream")
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl LegacyUpstream {
    /// An upstream from an `http` or `https` URL and its headers.
    pub fn new(url: &str, headers: HeaderMap) -> Result<LegacyUpstream, UpstreamError> {
        let url = parse_sse_url(url).map_err(UpstreamError::Url)?;
        Ok(LegacyUpstream { url, headers })
    }

    /// An upstream with at most one header, its credential (name, value):
    /// how the gateway and the controller's probe reach an MCPServer.
    pub fn with_credential(
        url: &str,
        credential: Option<(&str, &str)>,
    ) -> Result<LegacyUpstream, UpstreamError> {
        let mut headers = HeaderMap::new();
        if let Some((name, value)) = credential {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| UpstreamError::Header(name.to_string()))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| UpstreamError::Header(name.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        LegacyUpstream::new(url, headers)
    }
}

/// Parses the SSE URL of a legacy server: absolute, `http` or `https`.
pub fn parse_sse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{text:?} is not an http(s) URL"));
    }
    Ok(url)
}

/// Parses a `Name: value` header as given on the command line.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Why a legacy session failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Url(String),
    #[error("the value or name of header {0} is not usable")]
    Header(String),
    #[error("no TLS roots for https: {0}")]
    Tls(String),
    #[error("the SSE URL is not a request URI: {0}")]
    Request(String),
    #[error("cannot reach the server: {0}")]
    Connect(String),
    #[error("the SSE GET answered {0}")]
    Status(StatusCode),
    #[error("the SSE GET answered with {0:?}, not text/event-stream")]
    NotSse(String),
    #[error("no endpoint event within {0:?}")]
    NoEndpoint(Duration),
    #[error("the server sent a bad endpoint: {0}")]
    Endpoint(#[from] EndpointError),
    #[error("the SSE stream ended")]
    Ended,
    #[error("the SSE stream failed: {0}")]
    Stream(String),
    #[error("the server answered a message's POST with {0}")]
    PostStatus(StatusCode),
    #[error("a message's POST failed: {0}")]
    Post(String),
    #[error("a message's POST took longer than {0:?}")]
    PostTimeout(Duration),
}

/// Why an `endpoint` event is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("it is empty")]
    Empty,
    #[error("{0:?} is not a URI reference")]
    Invalid(String),
    #[error("{0} is another origin than the SSE URL's: messages go to the server only")]
    Origin(String),
}

/// The URI messages are POSTed to: the `endpoint` event's data resolved
/// against the SSE URL, refused when it names another origin (scheme,
/// host and port), so a server cannot send our messages (and their
/// headers) elsewhere. The fragment is dropped.
pub fn resolve_endpoint(base: &Url, data: &str) -> Result<Url, EndpointError> {
    let data = data.trim();
    if data.is_empty() {
        return Err(EndpointError::Empty);
    }
    let mut url = base
        .join(data)
        .map_err(|_| EndpointError::Invalid(data.chars().take(200).collect()))?;
    if url.origin() != base.origin() {
        return Err(EndpointError::Origin(url.origin().ascii_serialization()));
    }
    url.set_fragment(None);
    Ok(url)
}

/// One item of an SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseItem {
    /// An event: its type (`message` when the stream names none) and data.
    Event { name: String, data: Vec<u8> },
    /// An event (or one line of it) larger than the bound: skipped.
    TooLarge,
}

/// Incremental parser of `text/event-stream` (the WHATWG rules): lines end
/// with CRLF, LF or CR; `data:` lines of one event are joined with LF;
/// comments, `id` and `retry` are ignored; an event is dispatched at a
/// blank line, and only when it has data. Holds at most `max` bytes of a
/// line and of an event's data.
pub(crate) struct SseParser {
    max: usize,
    line: Vec<u8>,
    line_too_long: bool,
    /// The last chunk ended with CR: a LF opening the next one belongs to it.
    after_cr: bool,
    /// Whether the stream's first bytes (and a BOM) have been seen.
    started: bool,
    name: String,
    data: Vec<u8>,
    has_data: bool,
    too_large: bool,
}

impl SseParser {
    pub(crate) fn new(max: usize) -> SseParser {
        SseParser {
            max,
            line: Vec::new(),
            line_too_long: false,
            after_cr: false,
            started: false,
            name: String::new(),
            data: Vec::new(),
            has_data: false,
            too_large: false,
        }
    }

    /// Reads one chunk of the stream; complete events go to `out`.
    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) {
        if !self.started && !chunk.is_empty() {
            // A BOM may open the stream; it may come split over chunks,
            // which a server never does in practice: only a whole one is
            // stripped.
            self.started = true;
            chunk = chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk);
        }
        while !chunk.is_empty() {
            if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
                chunk = &chunk[1..];
                continue;
            }
            match chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(at) => {
                    self.extend_line(&chunk[..at]);
                    self.after_cr = chunk[at] == b'\r';
                    chunk = &chunk[at + 1..];
                    self.end_line(out);
                }
                None => {
                    self.extend_line(chunk);
                    break;
                }
            }
        }
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if self.line_too_long {
            return;
        }
        if self.line.len() + bytes.len() > self.max {
            self.line_too_long = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.line_too_long) {
            self.too_large = true;
            return;
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"event" => self.name = String::from_utf8_lossy(value).into_owned(),
            b"data" if !self.too_large => {
                let separator = usize::from(self.has_data);
                if self.data.len() + separator + value.len() > self.max {
                    self.too_large = true;
                    self.data = Vec::new();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let name = std::mem::take(&mut self.name);
        let data = std::mem::take(&mut self.data);
        let has_data = std::mem::take(&mut self.has_data);
        if std::mem::take(&mut self.too_large) {
            out.push(SseItem::TooLarge);
        } else if has_data {
            let name = if name.is_empty() {
                "message".to_string()
            } else {
                name
            };
            out.push(SseItem::Event { name, data });
        }
    }
}

type Https = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;
type Plain = Client<HttpConnector, Full<Bytes>>;

/// The HTTP client of legacy sessions: plain for `http`, rustls with the
/// system's roots for `https` (none: https fails, http still works).
pub(crate) struct HttpClient {
    plain: Plain,
    tls: OnceLock<Result<Https, String>>,
}

impl HttpClient {
    pub(crate) fn new() -> HttpClient {
        HttpClient {
            plain: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            tls: OnceLock::new(),
        }
    }

    fn tls(&self) -> Result<&Https, UpstreamError> {
        self.tls
            .get_or_init(|| {
                let builder = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_native_roots()
                    .map_err(|e| e.to_string())?;
                let connector = builder.https_or_http().enable_http1().build();
                Ok(Client::builder(TokioExecutor::new()).build(connector))
            })
            .as_ref()
            .map_err(|e| UpstreamError::Tls(e.clone()))
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let sent = if request.uri().scheme_str() == Some("https") {
            self.tls()?.request(request).await
        } else {
            self.plain.request(request).await
        };
        sent.map_err(|e| UpstreamError::Connect(error_chain(&e)))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn request(
    method: Method,
    url: &Url,
    headers: &HeaderMap,
    accept: &'static str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, UpstreamError> {
    let uri: Uri = url
        .as_str()
        .parse()
        .map_err(|e: http::uri::InvalidUri| UpstreamError::Request(e.to_string()))?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let out = request.headers_mut();
    for (name, value) in headers {
        out.append(name, value.clone());
    }
    out.insert(header::ACCEPT, HeaderValue::from_static(accept));
    Ok(request)
}

/// Runs a legacy session to its end: connects, routes the server's
/// messages and POSTs the client's (`outbox`, one JSON-RPC message a
/// line) until the stream ends, a POST fails or the session is stopped.
/// Then the requests still waiting, sent or queued, get a JSON-RPC error.
pub(crate) async fn run(
    session: &Arc<Session>,
    upstream: &LegacyUpstream,
    client: &HttpClient,
    outbox: &mut mpsc::Receiver<Vec<u8>>,
) {
    let mut unsent = None;
    let outcome = tokio::select! {
        outcome = connect_and_serve(session, upstream, client, outbox, &mut unsent) => outcome,
        () = session.killed() => Ok(()),
    };
    // Closed first, so an answer below reads as the session's failure.
    session.stop();
    let why = match outcome {
        Ok(()) => {
            tracing::info!(session = %session.id, "legacy MCP session stopped");
            "The MCP session was stopped.".to_string()
        }
        Err(error) => {
            tracing::warn!(session = %session.id, url = %upstream.url, %error, "legacy MCP session ended");
            format!("The legacy SSE MCP server's session ended: {error}.")
        }
    };
    // Messages that never reached the server: their requests fail too.
    if let Some(line) = unsent {
        answer_with_error(session, &line, &why).await;
    }
    while let Ok(line) = outbox.try_recv() {
        answer_with_error(session, &line, &why).await;
    }
    session.fail_pending(&why);
}

async fn connect_and_serve(
    session: &Arc<Session>,
    upstream: &LegacyUpstream,
    client: &HttpClient,
    outbox: &mut mpsc::Receiver<Vec<u8>>,
    unsent: &mut Option<Vec<u8>>,
) -> Result<(), UpstreamError> {
    let get = request(
        Method::GET,
        &upstream.url,
        &upstream.headers,
        "text/event-stream",
        Bytes::new(),
    )?;
    let deadline = tokio::time::Instant::now() + ENDPOINT_TIMEOUT;
    let response = tokio::time::timeout_at(deadline, client.send(get))
        .await
        .map_err(|_| UpstreamError::NoEndpoint(ENDPOINT_TIMEOUT))??;
    if !response.status().is_success() {
        return Err(UpstreamError::Status(response.status()));
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/event-stream")
    {
        return Err(UpstreamError::NotSse(content_type.to_string()));
    }
    let mut body = response.into_body();
    let mut parser = SseParser::new(MAX_EVENT);
    let mut items = Vec::new();
    // The endpoint first; messages that come with or before it are routed.
    let mut endpoint = None;
    while endpoint.is_none() {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| UpstreamError::NoEndpoint(ENDPOINT_TIMEOUT))?;
        read_frame(frame, &mut parser, &mut items)?;
        for item in items.drain(..) {
            match item {
                SseItem::Event { name, data } if name == "endpoint" && endpoint.is_none() => {
                    let text = String::from_utf8_lossy(&data);
                    endpoint = Some(resolve_endpoint(&upstream.url, &text)?);
                }
                item => route_item(session, item).await,
            }
        }
    }
    let Some(endpoint) = endpoint else {
        return Err(UpstreamError::Ended);
    };
    tracing::info!(session = %session.id, sse = %upstream.url, %endpoint, "legacy MCP session connected");
    let reader = async {
        loop {
            read_frame(body.frame().await, &mut parser, &mut items)?;
            for item in items.drain(..) {
                route_item(session, item).await;
            }
        }
    };
    let writer = async {
        while let Some(line) = outbox.recv().await {
            if let Err(error) = post(client, upstream, &endpoint, &line).await {
                *unsent = Some(line);
                return Err(error);
            }
        }
        Ok(())
    };
    tokio::select! {
        outcome = reader => outcome,
        outcome = writer => outcome,
    }
}

/// Feeds one frame of the GET's body to the parser.
fn read_frame(
    frame: Option<Result<http_body::Frame<Bytes>, hyper::Error>>,
    parser: &mut SseParser,
    items: &mut Vec<SseItem>,
) -> Result<(), UpstreamError> {
    match frame {
        None => Err(UpstreamError::Ended),
        Some(Err(error)) => Err(UpstreamError::Stream(error_chain(&error))),
        Some(Ok(frame)) => {
            if let Some(data) = frame.data_ref() {
                parser.push(data, items);
            }
            Ok(())
        }
    }
}

async fn route_item(session: &Arc<Session>, item: SseItem) {
    match item {
        SseItem::Event { name, data } if name == "message" => session.dispatch(&data).await,
        SseItem::Event { name, .. } => {
            tracing::debug!(session = %session.id, event = %name, "an SSE event that is not a message; ignored");
        }
        SseItem::TooLarge => {
            tracing::warn!(session = %session.id, limit = MAX_EVENT, "the MCP server sent an event larger than the bridge reads; skipped");
        }
    }
}

async fn post(
    client: &HttpClient,
    upstream: &LegacyUpstream,
    endpoint: &Url,
    line: &[u8],
) -> Result<(), UpstreamError> {
    let body = Bytes::copy_from_slice(line.trim_ascii_end());
    let mut request = request(
        Method::POST,
        endpoint,
        &upstream.headers,
        "application/json, text/event-stream",
        body,
    )?;
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let exchange = async {
        let response = client.send(request).await?;
        let status = response.status();
        // Read (bounded) what it says, so the connection can carry the next.
        let _ = http_body_util::Limited::new(response.into_body(), POST_ANSWER_LIMIT)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(UpstreamError::PostStatus(status))
        }
    };
    match tokio::time::timeout(POST_TIMEOUT, exchange).await {
        Ok(outcome) => outcome.map_err(|error| match error {
            UpstreamError::Connect(text) => UpstreamError::Post(text),
            other => other,
        }),
        Err(_) => Err(UpstreamError::PostTimeout(POST_TIMEOUT)),
    }
}

/// A request that could not reach the server gets its answer: an error.
async fn answer_with_error(session: &Arc<Session>, line: &[u8], why: &str) {
    let Ok(message) = Message::parse(line) else {
        return;
    };
    if message.kind == Kind::Request {
        let answer = message::error(message.id(), SERVER_ERROR, why);
        session.dispatch(&answer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]], max: usize) -> Vec<SseItem> {
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out);
        }
        out
    }

    fn event(name: &str, data: &str) -> SseItem {
        SseItem::Event {
            name: name.into(),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn events_with_any_line_ending() {
        let stream: &[u8] = b"event: endpoint\r\ndata: /messages?s=1\r\n\r\n\
            : a comment\n\
            data: {\"a\":1}\n\n\
            event: message\rdata:x\r\r";
        let want = vec![
            event("endpoint", "/messages?s=1"),
            event("message", "{\"a\":1}"),
            event("message", "x"),
        ];
        assert_eq!(parse_all(&[stream], 1024), want);
        // Byte by byte, CR and LF split over chunks: the same events.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&bytes, 1024), want);
    }

    #[test]
    fn multi_line_data_and_fields() {
        let out = parse_all(
            &[b"\xEF\xBB\xBFid: 7\nretry: 10\ndata: line one\ndata:line two\ndata\nunknown: x\n\n"],
            1024,
        );
        assert_eq!(out, [event("message", "line one\nline two\n")]);
        // No data: nothing dispatched; the event type does not leak on.
        let out = parse_all(&[b"event: endpoint\n\ndata: y\n\n"], 1024);
        assert_eq!(out, [event("message", "y")]);
        // An unfinished event at the end is not dispatched.
        assert!(parse_all(&[b"data: half"], 1024).is_empty());
    }

    #[test]
    fn events_are_bounded() {
        let long = vec![b'x'; 40];
        let mut chunk = b"data: ".to_vec();
        chunk.extend_from_slice(&long);
        chunk.extend_from_slice(b"\n\ndata: ok\n\n");
        assert_eq!(
            parse_all(&[&chunk], 32),
            [SseItem::TooLarge, event("message", "ok")]
        );
        // Many short lines that add up past the bound.
        let many = b"data: 0123456789\n".repeat(4);
        let mut stream = many.clone();
        stream.extend_from_slice(b"\ndata: ok\n\n");
        assert_eq!(
            parse_all(&[&stream], 32),
            [SseItem::TooLarge, event("message", "ok")]
        );
    }

    #[test]
    fn endpoints_resolve_on_the_same_origin_only() {
        let base = Url::parse("http://127.0.0.1:8000/sse?x=1").unwrap();
        let resolve = |data: &str| resolve_endpoint(&base, data).map(|u| u.to_string());
        assert_eq!(
            resolve("/messages/?session_id=abc").unwrap(),
            "http://127.0.0.1:8000/messages/?session_id=abc"
        );
        assert_eq!(
            resolve("messages?s=1#frag").unwrap(),
            "http://127.0.0.1:8000/messages?s=1"
        );
        assert_eq!(
            resolve(" http://127.0.0.1:8000/m ").unwrap(),
            "http://127.0.0.1:8000/m"
        );
        let nested = Url::parse("https://mcp.example/v1/sse").unwrap();
        assert_eq!(
            resolve_endpoint(&nested, "../msg?s=2").unwrap().as_str(),
            "https://mcp.example/msg?s=2"
        );
        assert_eq!(
            resolve_endpoint(&nested, "https://MCP.example:443/v1/m")
                .unwrap()
                .as_str(),
            "https://mcp.example/v1/m"
        );
        for elsewhere in [
            "http://127.0.0.1:8001/messages",
            "https://127.0.0.1:8000/messages",
            "//evil.example/messages",
            "http://evil.example/messages",
        ] {
            assert!(
                matches!(resolve(elsewhere), Err(EndpointError::Origin(_))),
                "{elsewhere}"
            );
        }
        assert_eq!(resolve("  "), Err(EndpointError::Empty));
        assert!(matches!(
            resolve("http://[::1"),
            Err(EndpointError::Invalid(_))
        ));
    }

    #[test]
    fn command_line_headers_and_urls() {
        let (name, value) = parse_header("Authorization: Bearer abc ").unwrap();
        assert_eq!(name, header::AUTHORIZATION);
        assert_eq!(value, "Bearer abc");
        assert!(value.is_sensitive());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("X-Bad: a\u{1}b").is_err());
        assert!(parse_sse_url("http://127.0.0.1:1/sse").is_ok());
        assert!(parse_sse_url("ftp://host/sse").is_err());
        assert!(parse_sse_url("/sse").is_err());
        let upstream = LegacyUpstream::new(
            "http://127.0.0.1:1/sse",
            HeaderMap::from_iter([parse_header("X-Key: secret").unwrap()]),
        )
        .unwrap();
        let shown = format!("{upstream:?}");
        assert!(
            shown.contains("x-key") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
