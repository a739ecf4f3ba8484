//! Shared black-box harness: a mock on 127.0.0.1:0 and a plain HTTP client.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_mock::{MockConfig, serve};

/// Upper bound for any single exchange, so a bug cannot hang the suite.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    pub base: String,
    pub addr: std::net::SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(config: MockConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::new(config), async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn default() -> Self {
        Self::start(MockConfig::default()).await
    }

    /// Sends a request with exactly these headers (plus what hyper adds).
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Reply {
        let res = tokio::time::timeout(EXCHANGE_TIMEOUT, self.client.request(req))
            .await
            .expect("response timed out")
            .expect("request failed");
        Reply::read(res).await
    }

    /// Like [`Server::request`] over h2c: no Host header, only `:authority`.
    pub async fn request_h2(&self, req: Request<Full<Bytes>>) -> Reply {
        let res = tokio::time::timeout(EXCHANGE_TIMEOUT, self.h2.request(req))
            .await
            .expect("response timed out")
            .expect("request failed");
        Reply::read(res).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.request(req.body(Full::new(body.into())).unwrap())
            .await
    }

    pub async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::POST, path, body.to_string(), headers)
            .await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(EXCHANGE_TIMEOUT, task)
                .await
                .expect("server did not stop")
                .unwrap()
                .unwrap();
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Body chunks as received (frame boundaries of the stream).
    pub chunks: Vec<Bytes>,
}

impl Reply {
    pub async fn read(res: http::Response<hyper::body::Incoming>) -> Self {
        let (parts, mut body) = res.into_parts();
        let mut chunks = Vec::new();
        let mut all = Vec::new();
        loop {
            let frame = tokio::time::timeout(EXCHANGE_TIMEOUT, body.frame())
                .await
                .expect("body timed out");
            match frame {
                None => break,
                Some(frame) => {
                    if let Ok(data) = frame.expect("body failed").into_data() {
                        all.extend_from_slice(&data);
                        chunks.push(data);
                    }
                }
            }
        }
        Self {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(all),
            chunks,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// SSE events as (event name, parsed data), checking the framing with
    /// the given separator (`\n\n` or Gemini's `\r\n\r\n`).
    pub fn sse(&self, separator: &str) -> Vec<(Option<String>, Value)> {
        let text = self.text();
        assert!(
            text.ends_with(separator),
            "stream must end with {separator:?}: {text:?}"
        );
        text[..text.len() - separator.len()]
            .split(separator)
            .map(|frame| {
                let mut event = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        assert!(data.is_none(), "one data line per frame: {frame:?}");
                        // OpenAI's terminator is the only non-JSON payload.
                        data = Some(if d == "[DONE]" {
                            Value::String(d.to_owned())
                        } else {
                            serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"))
                        });
                    } else {
                        panic!("unexpected line {line:?}");
                    }
                }
                (event, data.expect("frame without data"))
            })
            .collect()
    }
}

/// Tools in OpenAI chat/Responses shape share one schema with every format.
pub fn weather_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"]
    })
}
