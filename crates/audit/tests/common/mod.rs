//! A loopback HTTP collector standing in for a SIEM webhook or an OTLP
//! receiver, and helpers shared by the audit sink tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tollgate_audit::{HttpDeliveryConfig, Tamper};

/// One request the collector accepted.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub authorization: String,
    pub body: Bytes,
}

pub struct Collector {
    pub base: String,
    down: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Received>>>,
    pub refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// Listens on 127.0.0.1; answers 503 while down, 200 otherwise.
    pub async fn start(down: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(down));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let (d, a, r) = (down.clone(), accepted.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (d, a, r) = (d.clone(), a.clone(), r.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (d, a, r) = (d.clone(), a.clone(), r.clone());
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string()
                            };
                            let path = request.uri().path().to_string();
                            let (content_type, authorization) =
                                (header("content-type"), header("authorization"));
                            let body = request.into_body().collect().await?.to_bytes();
                            let status = if d.load(Ordering::SeqCst) {
                                r.fetch_add(1, Ordering::SeqCst);
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                a.lock().unwrap().push(Received {
                                    path,
                                    content_type,
                                    authorization,
                                    body,
                                });
                                StatusCode::OK
                            };
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() = status;
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector {
            base,
            down,
            accepted,
            refused,
            task,
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.accepted.lock().unwrap().clone()
    }

    /// Every NDJSON line accepted so far, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .flat_map(|r| {
                String::from_utf8_lossy(&r.body)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Lines deduplicated by seq (at-least-once delivery may resend), in
/// arrival order.
pub fn dedupe_by_seq(lines: &[String]) -> Vec<String> {
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for line in lines {
        let seq = seq_of(line);
        if seen.insert(seq, ()).is_none() {
            out.push(line.clone());
        }
    }
    out
}

pub fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

pub fn check(lines: &[String]) -> (tollgate_audit::Report, Vec<Tamper>) {
    tollgate_audit::verify(lines.iter().enumerate().map(|(i, l)| (i + 1, l)))
}

pub fn fields(value: Value) -> Map<String, Value> {
    let Value::Object(map) = value else {
        panic!("an object")
    };
    map
}

/// An LLM request's audit fields, about 250 bytes sealed.
pub fn llm_record(task: u64, n: u64) -> Map<String, Value> {
    fields(json!({
        "kind": "llm",
        "task": task,
        "n": n,
        "principal": {"user": "ann", "team": "research"},
        "route": "default/chat",
        "decision": {"action": "allowed"},
        "tokens": {"input": 100 + n, "output": 20},
    }))
}

/// Fast retries so outages end quickly in tests.
pub fn quick_http(batch_size: usize) -> HttpDeliveryConfig {
    HttpDeliveryConfig {
        headers: BTreeMap::new(),
        timeout_ms: 2_000,
        batch_size,
        backoff_initial_ms: 20,
        backoff_max_ms: 200,
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes; true if it held.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
