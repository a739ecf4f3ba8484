//! Streams that fail: before the first byte the client gets a proper error
//! status; after it, an error event in its own format and a broken body; a
//! client that stops reading is cut off after the write timeout and its
//! provider slot freed.

mod common;

use std::time::Duration;

use common::{Harness, KEY, MOCK_AUTH, metric_sum, read_all};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys: [{secretRef: {name: keys, key: k}, principal: {user: tester}}]
  limits: {streamWriteTimeout: 1s}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k: "{key}", provider: "mock-provider-key"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: openai}
spec: {type: Mock, endpoint: "{mock}/v1", maxConcurrentRequests: 1}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: anthropic}
spec:
  type: Anthropic
  endpoint: "{mock}/v1"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: keys, key: provider}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: chat}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends: [{providerRef: {name: openai}, model: mock-chat}]
  timeouts: {request: 800ms, streamIdle: 800ms}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: claude}
spec:
  gatewayRef: {name: gw}
  models: [claude]
  backends: [{providerRef: {name: anthropic}, model: mock-claude}]
"#;

#[tokio::test]
async fn a_stream_with_no_first_chunk_in_time_is_a_504_not_a_200() {
    let h = Harness::start(CONFIG, MOCK_AUTH).await;
    let response = h
        .post("/v1/chat/completions")
        .json(&json!({"model": "chat", "stream": true,
            "messages": [{"role": "user", "content": "slow [mock ttft_ms=3000]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error", "{body}");
}

#[tokio::test]
async fn a_stream_broken_after_it_started_ends_with_an_error_event() {
    let h = Harness::start(CONFIG, MOCK_AUTH).await;
    // OpenAI client, passthrough.
    let response = h
        .post("/v1/chat/completions")
        .json(&json!({"model": "chat", "stream": true,
            "messages": [{"role": "user", "content": "cut [mock disconnect_after=3]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (text, broke) = read_all(response).await;
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let event: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert!(event["error"]["message"].is_string(), "{text}");
    assert!(broke, "the body is broken too: {text}");
    assert!(!text.contains("[DONE]"));

    // Anthropic client, passthrough: `event: error`.
    let response = h
        .post("/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude", "stream": true, "max_tokens": 100,
            "messages": [{"role": "user", "content": "cut [mock disconnect_after=3]"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (text, _) = read_all(response).await;
    assert!(
        text.contains("event: error\ndata: {\"type\":\"error\""),
        "{text}"
    );

    // OpenAI client, Anthropic provider reporting an error mid-stream: the
    // provider's error reaches the client as an OpenAI error event.
    let response = h
        .post("/v1/chat/completions")
        .json(&json!({"model": "claude", "stream": true,
            "messages": [{"role": "user", "content": "fail [mock stream_error_after=3]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (text, _) = read_all(response).await;
    assert!(text.contains("data: {\"error\":"), "{text}");
    assert!(
        metric_sum(&h.metrics(), "tollgate_stream_failures_total") >= 2.0,
        "{}",
        h.metrics()
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_frees_the_slot() {
    let h = Harness::start(CONFIG, MOCK_AUTH).await;
    // A raw client that asks for a long stream and never reads it.
    let address = h.url.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let body = json!({"model": "chat", "stream": true, "max_tokens": 100000,
        "messages": [{"role": "user", "content": "long [mock tokens=100000]"}]})
    .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 64];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    // The provider's only slot is held by the stalled stream, until the
    // write timeout (1 s) ends it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = h
            .post("/v1/chat/completions")
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        metric_sum(&h.metrics(), "reason=\"client_stalled\""),
        1.0,
        "{}",
        h.metrics()
    );
    drop(stalled);
}
