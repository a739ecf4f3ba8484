//! The real gateway binary in front of the real mock, over loopback.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;

#[tokio::test]
async fn routes_chat_and_rewrites_the_model() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "mock-chat"),
    );
    let gateway = start_gateway(&path);
    let response = post_chat(gateway.url("data"), &chat_body("chat", "hello", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-route"], "default/chat");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "mock-chat");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn editing_the_config_mid_stream_reroutes_new_requests_and_the_stream_completes() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "model-before"),
    );
    let gateway = start_gateway(&path);
    let (data, admin) = (
        gateway.url("data").to_string(),
        gateway.url("admin").to_string(),
    );
    let hash_before = config_hash(&admin).await;

    // A stream of 20 tokens, 50 ms apart: about a second on the wire.
    let stream = client()
        .post(format!("{data}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat_body(
            "chat",
            "tell me a story [mock tokens=20 token_delay_ms=50]",
            true,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut chunks = stream.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("model-before"));

    // Edit the file while the stream is running.
    write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "model-after"),
    );
    wait_for_new_hash(&admin, &hash_before).await;
    let after: Value = post_chat(&data, &chat_body("chat", "hello", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["model"], "model-after",
        "new requests use the new routing"
    );

    // The old stream finishes on the snapshot it started with.
    let mut rest = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), chunks.next())
        .await
        .unwrap()
    {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "stream completed: {rest}"
    );
    let deltas = rest.matches("\"content\":\"").count();
    assert!(deltas >= 20, "all tokens arrived ({deltas})");
    assert!(
        !rest.contains("model-after"),
        "the running stream kept its snapshot"
    );
}

#[tokio::test]
async fn a_broken_edit_is_rejected_and_the_last_good_config_keeps_serving() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let good = config(mock.url("data"), "mock-chat");
    let path = write(dir.path(), "gw.yaml", &good);
    let gateway = start_gateway(&path);
    let (data, admin) = (
        gateway.url("data").to_string(),
        gateway.url("admin").to_string(),
    );
    let hash = config_hash(&admin).await;

    write(
        dir.path(),
        "gw.yaml",
        &good.replace("model: mock-chat", "model: mock-chat, weight: 500"),
    );
    // Wait for the rejection to be counted, then check nothing changed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = get_text(&format!("{admin}/metrics")).await;
        if metrics.contains("tollgate_config_reloads_total{result=\"rejected\"} 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rejection not recorded:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(config_hash(&admin).await, hash);
    let response = post_chat(&data, &chat_body("chat", "still there?", false)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_then_exits_cleanly() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "mock-chat"),
    );
    let mut gateway = start_gateway(&path);
    let data = gateway.url("data").to_string();
    let stream = client()
        .post(format!("{data}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat_body(
            "chat",
            "slow [mock tokens=10 token_delay_ms=50]",
            true,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reader = tokio::spawn(async move { stream.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = tokio::task::spawn_blocking(move || gateway.terminate())
        .await
        .unwrap();
    let text = reader.await.unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "stream drained: {text}"
    );
    assert!(status.success(), "exit status {status}");
    let refused = client().get(format!("{data}/healthz")).send().await;
    assert!(refused.is_err(), "listener closed after shutdown");
}

#[tokio::test]
async fn errors_are_openai_shaped() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "mock-chat"),
    );
    let gateway = start_gateway(&path);
    let url = format!("{}/v1/chat/completions", gateway.url("data"));
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client().post(&url).json(&chat_body("chat", "hi", false)),
            401,
            "invalid_api_key",
        ),
        (
            client()
                .post(&url)
                .bearer_auth("wrong")
                .json(&chat_body("chat", "hi", false)),
            401,
            "invalid_api_key",
        ),
        (
            client().post(&url).bearer_auth(KEY).body("{not json"),
            400,
            "invalid_json",
        ),
        (
            client()
                .post(&url)
                .bearer_auth(KEY)
                .json(&chat_body("nope", "hi", false)),
            404,
            "model_not_found",
        ),
        (
            client()
                .post(&url)
                .bearer_auth(KEY)
                .body(vec![b' '; 5 * 1024 * 1024]),
            413,
            "request_too_large",
        ),
        (
            client().post(&url).bearer_auth(KEY).json(&chat_body(
                "chat",
                "[mock status=503]",
                false,
            )),
            503,
            "upstream_unavailable",
        ),
        (
            client().post(&url).bearer_auth(KEY).json(&chat_body(
                "chat",
                "[mock status=500]",
                false,
            )),
            502,
            "upstream_error",
        ),
        (
            client().get(&url).bearer_auth(KEY),
            405,
            "method_not_allowed",
        ),
        (
            client().post(format!("{}/v2/nothing", gateway.url("data"))),
            404,
            "unknown_url",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "expected {status} {code}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(body["error"]["type"].is_string());
    }
}

#[tokio::test]
async fn route_timeouts_bound_the_answer_and_stream_silences() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let text = config(mock.url("data"), "mock-chat").replace(
        "  backends:",
        "  timeouts: {request: 300ms, streamIdle: 200ms}\n  backends:",
    );
    let path = write(dir.path(), "gw.yaml", &text);
    let gateway = start_gateway(&path);
    let data = gateway.url("data").to_string();

    let started = std::time::Instant::now();
    let response = post_chat(&data, &chat_body("chat", "slow [mock ttft_ms=3000]", false)).await;
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );

    // Tokens 1 s apart break the 200 ms idle limit after the first chunk.
    let stream = post_chat(
        &data,
        &chat_body("chat", "[mock tokens=5 token_delay_ms=1000]", true),
    )
    .await;
    assert_eq!(stream.status(), 200);
    let started = std::time::Instant::now();
    let (text, broke) = read_stream(stream).await;
    assert!(broke, "an idle stream is cut off, not completed: {text}");
    assert!(!text.contains("[DONE]"));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn provider_concurrency_cap_answers_429_with_retry_after() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let text = config(mock.url("data"), "mock-chat").replace(
        "spec: {type: Mock,",
        "spec: {type: Mock, maxConcurrentRequests: 1,",
    );
    let path = write(dir.path(), "gw.yaml", &text);
    let gateway = start_gateway(&path);
    let data = gateway.url("data").to_string();

    let slow = {
        let data = data.clone();
        tokio::spawn(async move {
            post_chat(&data, &chat_body("chat", "[mock ttft_ms=800]", false))
                .await
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rejected = post_chat(&data, &chat_body("chat", "hi", false)).await;
    assert_eq!(rejected.status(), 429);
    assert_eq!(rejected.headers()["retry-after"], "1");
    let body: Value = rejected.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_concurrency_limit");
    assert_eq!(slow.await.unwrap(), 200, "the admitted request completes");
    // The slot is released: the next request is admitted.
    let after = post_chat(&data, &chat_body("chat", "hi", false)).await;
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn a_provider_timeout_falls_back_while_the_route_budget_lasts() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let mock_url = mock.url("data");
    let text = format!(
        r#"{}---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: hasty}}
spec: {{type: Mock, endpoint: "{mock_url}/v1", timeouts: {{request: 200ms}}}}
"#,
        config(mock_url, "mock-chat").replace(
            "  backends: [{providerRef: {name: mock}, model: mock-chat}]",
            "  backends:\n  - {providerRef: {name: hasty}, model: mock-chat}\n  - {providerRef: {name: mock}, model: mock-chat, priority: 1}",
        )
    );
    let path = write(dir.path(), "gw.yaml", &text);
    let gateway = start_gateway(&path);
    let response = post_chat(
        gateway.url("data"),
        &chat_body("chat", "[mock ttft_ms=600]", false),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-provider"], "mock");
    let metrics = get_text(&format!("{}/metrics", gateway.url("admin"))).await;
    assert!(
        metrics.contains(r#"tollgate_upstream_errors_total{provider="hasty",reason="timeout"} 1"#),
        "{metrics}"
    );
}

/// A provider that answers a stream with two chunks and then ends the body
/// cleanly, without `data: [DONE]`.
async fn start_truncating_provider() -> std::net::SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: hyper::Request<hyper::body::Incoming>| async {
                    let chunk =
                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"half\"}}]}\n\n";
                    let body =
                        http_body_util::Full::new(bytes::Bytes::from(format!("{chunk}{chunk}")));
                    let mut response = hyper::Response::new(body);
                    response
                        .headers_mut()
                        .insert("content-type", "text/event-stream".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stream_that_ends_without_done_is_broken_to_the_client() {
    let provider = start_truncating_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(&format!("http://{provider}"), "any"),
    );
    let gateway = start_gateway(&path);
    let response = post_chat(gateway.url("data"), &chat_body("chat", "hi", true)).await;
    assert_eq!(response.status(), 200);
    let (text, broke) = read_stream(response).await;
    assert_eq!(
        text.matches("half").count(),
        2,
        "what arrived was forwarded: {text}"
    );
    assert!(broke, "the client must not see a clean end: {text}");
}

/// The client connection preface of HTTP/2 and an empty SETTINGS frame.
const H2C_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn admin_metrics(admin: &str) -> String {
    get_text(&format!("{admin}/metrics")).await
}

/// Reads until the server closes (EOF or reset); `false` if still open at `deadline`.
async fn closed_by_server(
    stream: &mut tokio::net::TcpStream,
    deadline: tokio::time::Instant,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn silent_connections_are_capped_and_closed_and_the_admin_port_stays_up() {
    use tokio::io::AsyncWriteExt;
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "mock-chat"),
    );
    let gateway = Process::from_command(gateway_command(&path).args([
        "--max-connections",
        "50",
        "--header-read-timeout",
        "1s",
    ]));
    let (data, admin) = (
        gateway.url("data").to_string(),
        gateway.url("admin").to_string(),
    );
    let addr = data.trim_start_matches("http://").to_string();
    // 200 connections: most send nothing, some one byte, some an h2c preface.
    let mut held = Vec::new();
    for i in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        match i % 10 {
            1 => stream.write_all(b"G").await.unwrap(),
            2 => stream.write_all(H2C_PREFACE).await.unwrap(),
            _ => {}
        }
        held.push(stream);
    }
    let started = std::time::Instant::now();
    let health = client()
        .get(format!("{admin}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "admin answers at once"
    );
    let over_cap =
        r#"tollgate_connections_rejected_total{listener="data",reason="max_connections"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let text = loop {
        let text = admin_metrics(&admin).await;
        if metric(&text, over_cap) >= 150.0 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(metric(&text, over_cap) >= 150.0, "{text}");
    assert!(
        metric(&text, r#"tollgate_connections_open{listener="data"}"#) <= 50.0,
        "{text}"
    );

    // Every connection is closed by the server: at once over the cap, after
    // the header deadline within it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    for (index, stream) in held.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream, deadline).await,
            "connection {index} still open"
        );
    }
    let answer = post_chat(&data, &chat_body("chat", "hello", false)).await;
    assert_eq!(answer.status(), 200);
    let text = admin_metrics(&admin).await;
    assert!(
        metric(
            &text,
            r#"tollgate_connections_rejected_total{listener="data",reason="header_timeout"}"#
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, r#"tollgate_connections_open{listener="data"}"#) <= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_does_not_wait_for_idle_connections() {
    use tokio::io::AsyncWriteExt;
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "mock-chat"),
    );
    let mut gateway =
        Process::from_command(gateway_command(&path).args(["--drain-timeout-secs", "20"]));
    let data = gateway.url("data").to_string();
    // An h2c connection that never answers the GOAWAY ping, a real h2c
    // client and an HTTP/1.1 keep-alive one, all idle.
    let mut raw = tokio::net::TcpStream::connect(data.trim_start_matches("http://"))
        .await
        .unwrap();
    raw.write_all(H2C_PREFACE).await.unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let h1 = client();
    for client in [&h2, &h1] {
        let answer = client.get(format!("{data}/healthz")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || gateway.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop((raw, h2, h1));
}

#[tokio::test]
async fn method_errors_head_probes_and_oversized_heads() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &config(mock.url("data"), "mock-chat"),
    );
    let gateway = start_gateway(&path);
    let (data, admin) = (gateway.url("data"), gateway.url("admin"));
    let client = client();
    for base in [data, admin] {
        for probe in ["/healthz", "/readyz"] {
            let answer = client.head(format!("{base}{probe}")).send().await.unwrap();
            assert_eq!(answer.status(), 200, "HEAD {base}{probe}");
            assert_eq!(answer.text().await.unwrap(), "");
            let answer = client.post(format!("{base}{probe}")).send().await.unwrap();
            assert_eq!(answer.status(), 405);
            assert_eq!(answer.headers()["allow"], "GET, HEAD");
        }
    }
    let answer = client
        .get(format!("{data}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "POST");
    let answer = client
        .delete(format!("{data}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "GET");
    let answer = client
        .post(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "GET");

    let answer = client
        .post(format!("{data}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-padding", "a".repeat(40 * 1024))
        .json(&chat_body("chat", "hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 431);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
}

#[tokio::test]
async fn tollgate_usage_reports_cost_by_principal_from_the_admin_port() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let priced = config(mock.url("data"), "mock-chat").replace(
        r#"spec: {type: Mock, endpoint: ""#,
        r#"spec: {models: [{name: mock-chat, pricing: {inputPerMillion: 1000, outputPerMillion: 2000}}], type: Mock, endpoint: ""#,
    );
    let path = write(dir.path(), "gw.yaml", &priced);
    let gateway = start_gateway(&path);
    let client = client();
    for _ in 0..3 {
        let response = client
            .post(format!("{}/v1/chat/completions", gateway.url("data")))
            .bearer_auth(KEY)
            .json(&chat_body("chat", "hello", false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let cost: f64 = response.headers()["x-tollgate-cost-usd"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(cost > 0.0);
    }
    let admin = gateway.url("admin").to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args([
                "usage",
                "--admin",
                &admin,
                "--group-by",
                "team,user",
                "--window",
                "hour",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["TEAM", "USER", "REQUESTS", "INPUT", "OUTPUT", "COST_USD"]
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&row[..3], ["qa", "tester", "3"], "{text}");
    // A bad grouping is refused with the API's own message.
    let admin = gateway.url("admin").to_string();
    let refused = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["usage", "--admin", &admin, "--group-by", "planet"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("group_by \"planet\""));
}

/// The configuration hash is keyed: gateways sharing a key file agree on it,
/// one with its own key does not, and neither is the plain SHA-256 anyone
/// could recompute from a guessed configuration.
#[tokio::test]
async fn gateways_sharing_a_digest_key_file_agree_on_the_hash() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "gw.yaml", &config(mock.url("data"), "m"));
    let key_file = dir.path().join("digest.key");
    let with_key = |path: &std::path::Path| {
        let mut command = gateway_command(path);
        command.arg("--digest-key-file").arg(&key_file);
        Process::from_command(&mut command)
    };
    let first = with_key(&path);
    let second = with_key(&path);
    let unshared = start_gateway(&path);
    let hash = config_hash(first.url("admin")).await;
    assert_eq!(hash.len(), 64);
    assert_eq!(config_hash(second.url("admin")).await, hash);
    assert_ne!(config_hash(unshared.url("admin")).await, hash);
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 64, "a new key was written");
    // /config shows neither the key nor key digests.
    let body = get_text(&format!("{}/config", first.url("admin"))).await;
    assert!(!body.contains(key.trim()), "{body}");
    assert!(!body.contains("digest"), "{body}");
    // Keys still authenticate: the gateway digests them under the same key.
    let response = post_chat(first.url("data"), &chat_body("chat", "hi", false)).await;
    assert_eq!(response.status(), 200);
}
