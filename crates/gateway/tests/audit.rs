//! Audit records end to end: every LLM request through a real gateway (to
//! a real mock provider) becomes one chained record, delivered to a webhook
//! collector that is down for a while under load and to a rotating file;
//! nothing is lost, the chains verify, and an edited or removed record is
//! found.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Harness, json_body, metric_sum};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate_audit::{Tamper, verify};

/// A loopback NDJSON collector (a SIEM's HTTP event collector): 503 while
/// down, else every line kept.
struct Collector {
    url: String,
    down: Arc<AtomicBool>,
    lines: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicU64>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/collector", listener.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let (d, l, r) = (down.clone(), lines.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (d, l, r) = (d.clone(), l.clone(), r.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (d, l, r) = (d.clone(), l.clone(), r.clone());
                        async move {
                            let authorized = request
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v == "Splunk test-token");
                            let body = request.into_body().collect().await?.to_bytes();
                            let status = if d.load(Ordering::SeqCst) || !authorized {
                                r.fetch_add(1, Ordering::SeqCst);
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                let text = String::from_utf8_lossy(&body).into_owned();
                                l.lock().unwrap().extend(text.lines().map(str::to_string));
                                StatusCode::OK
                            };
                            let mut response = Response::new(Full::new(bytes::Bytes::new()));
                            *response.status_mut() = status;
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector {
            url,
            down,
            lines,
            refused,
        }
    }

    fn records(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn manifests(spool: &str, file: &str, collector: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec:
  apiKeys: [{{secretRef: {{name: keys, key: k}}, principal: {{user: tester, team: qa}}}}]
  guardPolicies:
  - name: strict
    input: {{pii: {{action: Redact, actions: {{SECRET: Block}}}}}}
  audit:
    content: Redacted
    spool: {{path: "{spool}", maxBytes: 8388608}}
    sinks:
    - {{type: File, path: "{file}", maxBytes: 20000, maxFiles: 1000}}
    - type: Webhook
      name: siem
      url: "{collector}"
      timeout: 2s
      headers: [{{name: Authorization, secretRef: {{name: keys, key: siem}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{k: "{{key}}", siem: "Splunk test-token"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: mock}}
spec: {{type: Mock, endpoint: "{{mock}}/v1"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  gatewayRef: {{name: gw}}
  models: [chat]
  guardPolicy: strict
  backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
"#
    )
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_one_chained_record_and_a_sink_outage_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let file = dir.path().join("audit.log");
    let collector = Collector::start().await;
    let h = Harness::start(
        &manifests(
            spool.to_str().unwrap(),
            file.to_str().unwrap(),
            &collector.url,
        ),
        &[],
    )
    .await;

    // Load while the collector refuses everything: 4 clients × 30 requests,
    // each client alternating an allowed request with a PII one (redacted)
    // and every tenth a blocked one (a secret).
    collector.down.store(true, Ordering::SeqCst);
    let mut clients = Vec::new();
    for client in 0..4 {
        let url = h.url.clone();
        let http = h.client.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..30 {
                let text = match i % 10 {
                    9 => format!("key sk-proj-{client}AbCdEfGhIjKlMnOpQrStUv{i}"),
                    n if n % 2 == 1 => format!("mail c{client}r{i}@example.com"),
                    _ => format!("hello {client} {i}"),
                };
                let response = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(common::KEY)
                    .json(
                        &json!({"model": "chat", "messages": [{"role": "user", "content": text}]}),
                    )
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .unwrap();
                statuses.push(response.status().as_u16());
                let _ = response.bytes().await;
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    assert_eq!(statuses.len(), 120);
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 12);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 108);
    // The collector stays down a while longer; then it is back.
    until("refused deliveries", Duration::from_secs(10), || {
        collector.refused.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(collector.lines.lock().unwrap().is_empty());
    collector.down.store(false, Ordering::SeqCst);
    until(
        "every record at the collector",
        Duration::from_secs(30),
        || collector.lines.lock().unwrap().len() >= 120,
    )
    .await;

    // Exactly one record per request, in one unbroken chain.
    let lines = collector.lines.lock().unwrap().clone();
    let (report, tampers) = verify(lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())));
    assert!(tampers.is_empty(), "{tampers:?}");
    assert_eq!(report.records, 120);
    let records = collector.records();
    let decisions = |d: &str| records.iter().filter(|r| r["decision"] == d).count();
    assert_eq!(decisions("blocked"), 12);
    assert_eq!(decisions("redacted"), 48);
    assert_eq!(decisions("allowed"), 60);
    let redacted = records
        .iter()
        .find(|r| r["decision"] == "redacted")
        .unwrap();
    assert_eq!(redacted["kind"], "llm.request");
    assert_eq!(redacted["principal"]["user"], "tester");
    assert_eq!(redacted["principal"]["team"], "qa");
    assert_eq!(redacted["route"], "default/chat");
    assert_eq!(redacted["provider"], "mock");
    assert_eq!(redacted["status"], 200);
    assert!(redacted["tokens"]["input"].as_u64().unwrap() > 0);
    assert_eq!(redacted["guard"]["decisions"][0]["rule"], "EMAIL");
    assert_eq!(redacted["requestSha256"].as_str().unwrap().len(), 64);
    // Content is kept redacted: no address and no key in any record.
    let all = lines.join("\n");
    assert!(
        !all.contains("@example.com") && !all.contains("sk-proj-"),
        "content leaked"
    );

    // The rotating file got the same chain, across its files.
    let file_lines = || {
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("audit.log")
            })
            .collect();
        // Oldest first: `audit.log.N` (highest N) ... `audit.log.1`, `audit.log`.
        let rotation = |p: &std::path::PathBuf| -> u32 {
            p.extension()
                .and_then(|e| e.to_str())
                .and_then(|e| e.parse().ok())
                .unwrap_or(0)
        };
        files.sort_by_key(|p| std::cmp::Reverse(rotation(p)));
        (
            files.len(),
            files
                .iter()
                .flat_map(|p| {
                    std::fs::read_to_string(p)
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<String>>(),
        )
    };
    until("the file sink", Duration::from_secs(10), || {
        file_lines().1.len() >= 120
    })
    .await;
    let (files, file_lines) = file_lines();
    assert!(files > 1, "the file rotated");
    let (report, tampers) = verify(
        file_lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i + 1, l.as_str())),
    );
    assert!(tampers.is_empty(), "{tampers:?}");
    assert_eq!(report.records, 120);

    // An edited record and a removed one are found.
    let mut edited = lines.clone();
    edited[5] = edited[5].replace("\"status\":200", "\"status\":201");
    edited.remove(40);
    let (_, tampers) = verify(edited.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())));
    assert!(
        tampers.iter().any(|t| matches!(t, Tamper::Edited { .. })),
        "{tampers:?}"
    );
    assert!(
        tampers.iter().any(|t| matches!(t, Tamper::Missing { .. })),
        "{tampers:?}"
    );

    // The metrics say the same.
    h.gateway.audit.publish(&h.gateway.metrics);
    let metrics = h.metrics();
    assert_eq!(metric_sum(&metrics, "tollgate_audit_records_total"), 120.0);
    assert_eq!(
        metric_sum(&metrics, "tollgate_audit_records_lost_total"),
        0.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_audit_sink_lost_records_total{sink=\"siem\"}"
        ),
        0.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "tollgate_audit_sink_delivered_records_total{sink=\"siem\"}"
        ),
        120.0
    );
    let (status, _) = json_body(
        h.post("/v1/chat/completions")
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "one more"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}
