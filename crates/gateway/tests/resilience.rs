//! A failing primary provider under concurrent load: every way the mock can
//! fail (500s, 429 with `Retry-After`, refused connections, a hang before
//! headers, a stream that stalls before its first byte) and requests still
//! succeed through the fallback, with no client-visible failure. The
//! primary's circuit breaker opens (its requests then skip it at once),
//! probes once it may, and closes when the primary is healthy again, all of
//! it visible in `/metrics`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Harness, json_body, metric_sum, spawn_mock};
use serde_json::json;
use tokio::net::TcpListener;

/// Concurrent clients, and requests each.
const CLIENTS: usize = 6;
const REQUESTS: usize = 8;

fn manifests(primary: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec:
  apiKeys: [{{secretRef: {{name: keys, key: k}}, principal: {{user: tester}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{k: "{{key}}"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: primary}}
spec:
  type: Mock
  endpoint: "{primary}/v1"
  timeouts: {{request: 400ms}}
  circuitBreaker: {{consecutiveFailures: 3, openFor: 1s}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: fallback}}
spec: {{type: Mock, endpoint: "{{mock}}/v1"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  gatewayRef: {{name: gw}}
  models: [chat]
  timeouts: {{request: 10s}}
  backends:
  - {{providerRef: {{name: primary}}, model: mock-chat, priority: 0}}
  - {{providerRef: {{name: fallback}}, model: mock-chat, priority: 1}}
"#
    )
}

/// `CLIENTS` clients sending `REQUESTS` each at once; the statuses that
/// were not 200, with their bodies.
async fn load(h: &Harness, stream: bool) -> Vec<(u16, String)> {
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let client_http = h.client.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..REQUESTS {
                let body = json!({"model": "chat", "stream": stream,
                    "messages": [{"role": "user", "content": format!("client {client} request {i}")}]});
                let response = client_http
                    .post(&url)
                    .bearer_auth(common::KEY)
                    .json(&body)
                    .timeout(Duration::from_secs(15))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let complete = !stream || text.contains("data: [DONE]");
                if status != 200 || !complete {
                    failures.push((status, text));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    failures
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr} again");
}

fn transitions(h: &Harness, state: &str) -> f64 {
    metric_sum(
        &h.metrics(),
        &format!(
            "tollgate_provider_circuit_transitions_total{{provider=\"primary\",event=\"{state}\"}}"
        ),
    )
}

#[tokio::test]
async fn a_failing_primary_costs_clients_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let primary = format!("http://{addr}");
    let h = Harness::start(&manifests(&primary), &[]).await;

    // Each failure mode in turn, the primary a mock of its own on one port
    // (none listening: refused connections).
    let modes: [(&str, &[&str], bool); 5] = [
        ("refused", &[], false),
        (
            "500s",
            &["--error-rate", "1", "--error-status", "500"],
            false,
        ),
        (
            "429 with Retry-After",
            &["--error-rate", "1", "--error-status", "429"],
            false,
        ),
        ("hang before headers", &["--header-delay-ms", "5000"], false),
        ("stall before the first byte", &["--ttft-ms", "5000"], true),
    ];
    for (mode, flags, stream) in modes {
        let stop = (mode != "refused").then(|| {
            let flags = flags.to_vec();
            async move { spawn_mock(rebind(addr).await, &flags) }
        });
        let stop = match stop {
            Some(start) => Some(start.await),
            None => None,
        };
        let opened_before = transitions(&h, "open");
        let failures = load(&h, stream).await;
        assert!(
            failures.is_empty(),
            "{mode}: {} client-visible failures: {:?}",
            failures.len(),
            failures.first()
        );
        let metrics = h.metrics();
        if mode.starts_with("429") {
            // A rate limit is the primary's quota, not its health: skipped
            // until the reset, the breaker untouched.
            assert!(
                metric_sum(
                    &metrics,
                    "tollgate_provider_skipped_total{provider=\"primary\",event=\"quota\"}"
                ) > 0.0,
                "{mode}: quota skips"
            );
        } else {
            assert!(
                transitions(&h, "open") > opened_before,
                "{mode}: the breaker opened"
            );
            assert!(
                metric_sum(
                    &metrics,
                    "tollgate_provider_skipped_total{provider=\"primary\",event=\"circuit_open\"}"
                ) > 0.0,
                "{mode}: requests skipped the primary"
            );
        }
        if let Some(stop) = stop {
            stop.send(true).unwrap();
        }
        // Past the open interval and any quota wait, before the next mode.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }

    // The primary is healthy again: the next request probes it, the probe
    // succeeds, and the breaker closes.
    let _healthy = spawn_mock(rebind(addr).await, &[]);
    let closed_before = transitions(&h, "closed");
    let probes_before = transitions(&h, "half_open");
    let failures = load(&h, false).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(transitions(&h, "half_open") > probes_before, "probed");
    assert!(transitions(&h, "closed") > closed_before, "closed again");
    let metrics = h.metrics();
    assert!(
        metrics.contains("tollgate_provider_circuit_open{provider=\"primary\"} 0"),
        "{metrics}"
    );
    // Served by the primary once more.
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(common::KEY)
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "back?"}]}))
        .send()
        .await
        .unwrap();
    let provider = response.headers()["x-tollgate-provider"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, _) = json_body(response).await;
    assert_eq!((status, provider.as_str()), (200, "primary"));
}
