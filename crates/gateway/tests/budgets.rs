//! TokenBudgets in one process: reservation before the call, settlement with
//! the provider's usage, every exceed action, in each client's error shape,
//! and limits that hold under concurrent requests.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Harness, json_body, metric_has};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_testenv::redis::RedisServer;

/// Keys: `alice` and `bob` (team a), `carol` (team b, app bot, tier free),
/// `dave` (team c). Budgets per test are appended to this.
const BASE: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys:
  - {secretRef: {name: keys, key: alice}, principal: {user: alice, team: a}}
  - {secretRef: {name: keys, key: bob}, principal: {user: bob, team: a}}
  - {secretRef: {name: keys, key: carol}, principal: {user: carol, team: b, app: bot, labels: {tier: free}}}
  - {secretRef: {name: keys, key: dave}, principal: {user: dave, team: c}}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {alice: tg-alice, bob: tg-bob, carol: tg-carol, dave: tg-dave, provider: mock-provider-key}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock}
spec:
  type: Mock
  endpoint: "{mock}/v1"
  models:
  - {name: mock-strong, pricing: {inputPerMillion: 10, outputPerMillion: 30}}
  - {name: mock-mini, pricing: {inputPerMillion: 0.5, outputPerMillion: 1.5}}
  - {name: mock-embed, kind: Embedding, pricing: {inputPerMillion: 0.1, outputPerMillion: 0}}
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
metadata: {name: strong}
spec:
  gatewayRef: {name: gw}
  models: [strong]
  backends: [{providerRef: {name: mock}, model: mock-strong}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: mini}
spec:
  gatewayRef: {name: gw}
  models: [mini]
  backends: [{providerRef: {name: mock}, model: mock-mini}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: claude}
spec:
  gatewayRef: {name: gw}
  models: [claude]
  backends: [{providerRef: {name: anthropic}, model: mock-claude}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: embed}
spec:
  gatewayRef: {name: gw}
  models: [embed]
  backends: [{providerRef: {name: mock}, model: mock-embed}]
"#;

const MOCK_FLAGS: &[&str] = &["--anthropic-key", "mock-provider-key"];

async fn harness(budgets: &str) -> Harness {
    Harness::start(&format!("{BASE}{budgets}"), MOCK_FLAGS).await
}

fn budget(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: TokenBudget\nmetadata: {{name: {name}}}\n\
         spec:\n  gatewayRef: {{name: gw}}\n{spec}\n"
    )
}

fn post(h: &Harness, key: &str, path: &str, body: &Value) -> reqwest::RequestBuilder {
    h.client
        .post(format!("{}{path}", h.url))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .timeout(Duration::from_secs(20))
        .json(body)
}

async fn call(h: &Harness, key: &str, path: &str, body: &Value) -> (u16, Value) {
    json_body(post(h, key, path, body).send().await.unwrap()).await
}

fn chat(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "Say something short."}]})
}

/// Each counter's usage now, by key.
fn usage(h: &Harness) -> HashMap<String, u64> {
    let now = tollgate_gateway::state::window::now_ms();
    h.gateway
        .counters
        .usage(now)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[tokio::test]
async fn requests_past_a_limit_get_429_in_the_clients_shape_with_retry_after() {
    let h = harness(&budget(
        "team-b",
        "  subject: {team: b}\n  limits: [{window: Month, requests: 2}]",
    ))
    .await;
    for _ in 0..2 {
        let (status, value) =
            call(&h, "tg-carol", "/v1/chat/completions", &chat("strong", 16)).await;
        assert_eq!(status, 200, "{value}");
    }
    let refused = post(&h, "tg-carol", "/v1/chat/completions", &chat("strong", 16))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&retry_after), "{retry_after}");
    let (status, value) = json_body(refused).await;
    assert_eq!(status, 429, "{value}");
    assert_eq!(value["error"]["type"], "rate_limit_error");
    assert_eq!(value["error"]["code"], "budget_exceeded");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("default/team-b") && message.contains("2 requests"),
        "{message}"
    );

    // Anthropic's shape on /v1/messages.
    let (status, value) = call(&h, "tg-carol", "/v1/messages", &chat("claude", 16)).await;
    assert_eq!(status, 429, "{value}");
    assert_eq!(value["type"], "error");
    assert_eq!(value["error"]["type"], "rate_limit_error");

    // Another team is not counted by team b's budget.
    let (status, _) = call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 16)).await;
    assert_eq!(status, 200);
    assert!(metric_has(
        &h.metrics(),
        &[
            "tollgate_budget_decisions_total",
            "budget=\"default/team-b\"",
            "outcome=\"rejected\""
        ]
    ));
    // count_tokens is free and never refused.
    let (status, _) = call(
        &h,
        "tg-carol",
        "/v1/messages/count_tokens",
        &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn settled_usage_is_the_providers_and_failures_are_released() {
    let h = harness(&budget(
        "alice",
        "  subject: {user: alice}\n  limits: [{window: Month, totalTokens: 100000, costUsd: \"10\", requests: 100}]",
    ))
    .await;
    let response = post(&h, "tg-alice", "/v1/chat/completions", &chat("strong", 200))
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    let (status, value) = json_body(response).await;
    assert_eq!(status, 200, "{value}");
    let total = value["usage"]["total_tokens"].as_u64().unwrap();
    let (input, output) = (
        value["usage"]["prompt_tokens"].as_u64().unwrap(),
        value["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(
        headers["x-tollgate-input-tokens"],
        input.to_string().as_str()
    );
    assert_eq!(
        headers["x-tollgate-output-tokens"],
        output.to_string().as_str()
    );
    let cost: f64 = headers["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = (input as f64 * 10.0 + output as f64 * 30.0) / 1e6;
    assert!((cost - expected).abs() < 1e-6, "{cost} vs {expected}");

    let counters = usage(&h);
    assert_eq!(
        counters["default/alice||Month-fixed|totalTokens"], total,
        "settled, not the 200-token estimate"
    );
    assert_eq!(counters["default/alice||Month-fixed|requests"], 1);
    assert_eq!(
        counters["default/alice||Month-fixed|costUsd"],
        (expected * 1e6).ceil() as u64
    );

    // A request the provider refuses costs nothing.
    let failing = post(
        &h,
        "tg-alice",
        "/v1/chat/completions",
        &json!({"model": "strong", "messages": [{"role": "user", "content": "[mock status=500]"}]}),
    )
    .send()
    .await
    .unwrap();
    assert!(failing.status().is_server_error(), "{}", failing.status());
    let counters = usage(&h);
    assert_eq!(counters["default/alice||Month-fixed|requests"], 1);
    assert_eq!(counters["default/alice||Month-fixed|totalTokens"], total);
}

#[tokio::test]
async fn concurrent_requests_never_pass_a_token_budget() {
    const LIMIT: u64 = 2_000;
    let h = harness(&budget(
        "team-a",
        &format!("  subject: {{team: a}}\n  limits: [{{window: Month, totalTokens: {LIMIT}}}]"),
    ))
    .await;
    // Each request reserves about 40 tokens (prompt estimate + max_tokens 30)
    // and uses about 30: 100 at once must not all fit.
    let send = |key: &'static str| {
        let request = post(&h, key, "/v1/chat/completions", &chat("strong", 30));
        async move {
            let (status, value) = json_body(request.send().await.unwrap()).await;
            (status, value["usage"]["total_tokens"].as_u64().unwrap_or(0))
        }
    };
    let outcomes: Vec<(u16, u64)> = futures_util::stream::iter(0..100)
        .map(|i| send(if i % 2 == 0 { "tg-alice" } else { "tg-bob" }))
        .buffer_unordered(100)
        .collect()
        .await;
    let admitted: u64 = outcomes.iter().map(|(_, t)| t).sum();
    let refused = outcomes.iter().filter(|(s, _)| *s == 429).count();
    assert!(
        outcomes.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{outcomes:?}"
    );
    assert!(
        refused > 0,
        "100 requests of ~40 tokens cannot all fit 2000"
    );
    assert!(admitted <= LIMIT, "admitted {admitted} > {LIMIT}");
    // Settlement gives back what was reserved and not used: keep going one
    // at a time until refused, and the budget ends up nearly full.
    let mut total = admitted;
    for _ in 0..100 {
        let (status, tokens) = send("tg-alice").await;
        if status == 429 {
            break;
        }
        total += tokens;
    }
    assert!(total <= LIMIT, "{total}");
    assert!(
        LIMIT - total < 40,
        "only the last request's reservation is left: {total}"
    );
    assert_eq!(usage(&h)["default/team-a||Month-fixed|totalTokens"], total);
}

#[tokio::test]
async fn a_request_larger_than_the_budget_is_told_to_shrink() {
    let h = harness(&budget(
        "small",
        "  limits: [{window: Day, outputTokens: 100}]",
    ))
    .await;
    let (status, value) = call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 500)).await;
    assert_eq!(status, 400, "{value}");
    assert_eq!(value["error"]["code"], "request_exceeds_budget");
    // Without max_tokens the budget's defaultMaxOutputTokens (4096) is reserved.
    let mut request = chat("strong", 0);
    request.as_object_mut().unwrap().remove("max_tokens");
    let (status, _) = call(&h, "tg-dave", "/v1/chat/completions", &request).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn warn_admits_and_downgrade_serves_the_named_model() {
    let h = harness(&format!(
        "{}{}",
        budget(
            "warn-c",
            "  subject: {team: c}\n  limits: [{window: Month, requests: 1}]\n  onExceed: {action: Warn}"
        ),
        budget(
            "free-tier",
            "  subject: {matchLabels: {tier: free}}\n  limits: [{window: Month, requests: 1}]\n  onExceed: {action: Downgrade, model: mini}"
        ),
    ))
    .await;
    for _ in 0..3 {
        let (status, _) = call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 16)).await;
        assert_eq!(status, 200);
    }
    assert!(metric_has(
        &h.metrics(),
        &[
            "tollgate_budget_decisions_total",
            "budget=\"default/warn-c\"",
            "outcome=\"over\""
        ]
    ));
    assert_eq!(
        usage(&h)["default/warn-c||Month-fixed|requests"],
        3,
        "still counted"
    );

    let first = post(&h, "tg-carol", "/v1/chat/completions", &chat("strong", 16))
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["x-tollgate-route"], "default/strong");
    let second = post(&h, "tg-carol", "/v1/chat/completions", &chat("strong", 16))
        .send()
        .await
        .unwrap();
    assert_eq!(second.headers()["x-tollgate-route"], "default/mini");
    let (status, value) = json_body(second).await;
    assert_eq!(status, 200);
    assert_eq!(value["model"], "mock-mini");
}

#[tokio::test]
async fn per_member_budgets_count_each_member_apart() {
    let h = harness(&budget(
        "per-user",
        "  subject: {team: a, perMember: User}\n  limits: [{window: Month, requests: 1}]",
    ))
    .await;
    for key in ["tg-alice", "tg-bob"] {
        let (status, _) = call(&h, key, "/v1/chat/completions", &chat("strong", 8)).await;
        assert_eq!(status, 200, "{key}'s first request");
    }
    let (status, _) = call(&h, "tg-alice", "/v1/chat/completions", &chat("strong", 8)).await;
    assert_eq!(status, 429);
    let counters = usage(&h);
    assert_eq!(counters["default/per-user|alice|Month-fixed|requests"], 1);
    assert_eq!(counters["default/per-user|bob|Month-fixed|requests"], 1);
}

#[tokio::test]
async fn embeddings_and_streams_are_counted() {
    let h = harness(&budget(
        "dave",
        "  subject: {user: dave}\n  limits: [{window: Month, inputTokens: 1000000, outputTokens: 1000000}]",
    ))
    .await;
    let input: Vec<String> = (0..4)
        .map(|i| format!("document number {i} ").repeat(10))
        .collect();
    let (status, value) = call(
        &h,
        "tg-dave",
        "/v1/embeddings",
        &json!({"model": "embed", "input": input}),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    let embedded = value["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(embedded > 0);
    assert_eq!(usage(&h)["default/dave||Month-fixed|inputTokens"], embedded);

    // A stream settles at the usage in its last chunk.
    let mut request = chat("strong", 64);
    request["stream"] = json!(true);
    let (body, _) = common::read_all(
        post(&h, "tg-dave", "/v1/chat/completions", &request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body.contains("[DONE]"), "{body}");
    // The relay settles in its own task just after the last byte.
    let mut counters = usage(&h);
    for _ in 0..50 {
        if counters["default/dave||Month-fixed|outputTokens"] > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        counters = usage(&h);
    }
    assert_eq!(
        counters["default/dave||Month-fixed|outputTokens"], 16,
        "the mock's 16 tokens"
    );

    // A client that goes away mid-stream: no usage ever arrives, so the
    // whole reservation (max_tokens 64) stays charged.
    let slow = json!({"model": "strong", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "[mock token_delay_ms=200]"}]});
    let response = post(&h, "tg-dave", "/v1/chat/completions", &slow)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let _first = stream.next().await;
    drop(stream);
    let mut charged = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        charged = usage(&h)["default/dave||Month-fixed|outputTokens"];
        if charged > 16 && h.gateway.metrics.in_flight.get() == 0 {
            break;
        }
    }
    assert_eq!(charged, 16 + 64);
}

/// [`BASE`] with the gateway's counters in Redis at `url`.
fn with_redis(url: &str, budgets: &str) -> String {
    let base = BASE.replacen(
        "spec:\n  apiKeys:",
        &format!("spec:\n  redis: {{url: \"{url}\", timeout: 500ms}}\n  apiKeys:"),
        1,
    );
    format!("{base}{budgets}")
}

/// `total_tokens` of the usage chunk of an OpenAI stream, if it ended.
async fn stream_total(response: reqwest::Response) -> Option<u64> {
    let (body, broke) = common::read_all(response).await;
    if broke || !body.contains("[DONE]") {
        return None;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v["usage"]["total_tokens"].as_u64())
}

/// The sum of a counter's slots in Redis.
async fn redis_total(redis: &RedisServer, counter: &str) -> u64 {
    redis
        .hash(&format!("tollgate:{{default/gw}}:{counter}"))
        .iter()
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn two_gateways_sharing_redis_never_pass_a_budget() {
    const LIMIT: u64 = 3_000;
    let redis = RedisServer::start();
    let config = with_redis(
        &redis.url(),
        &budget(
            "team-a",
            &format!("  subject: {{team: a}}\n  limits: [{{window: Month, totalTokens: {LIMIT}}}]"),
        ),
    );
    let gateways = [
        Harness::start(&config, MOCK_FLAGS).await,
        Harness::start(&config, MOCK_FLAGS).await,
    ];
    // 100 clients at once, alternating gateways, plain and streamed.
    let outcomes: Vec<(u16, u64)> = futures_util::stream::iter(0..100)
        .map(|i| {
            let h = &gateways[i % 2];
            let mut request = chat("strong", 30);
            let streamed = i % 4 >= 2;
            if streamed {
                request["stream"] = json!(true);
                request["stream_options"] = json!({"include_usage": true});
            }
            let sent = post(
                h,
                if i % 3 == 0 { "tg-alice" } else { "tg-bob" },
                "/v1/chat/completions",
                &request,
            )
            .send();
            async move {
                let response = sent.await.unwrap();
                let status = response.status().as_u16();
                let tokens = match (status, streamed) {
                    (200, true) => stream_total(response).await.expect("a complete stream"),
                    (200, false) => json_body(response).await.1["usage"]["total_tokens"]
                        .as_u64()
                        .unwrap(),
                    _ => 0,
                };
                (status, tokens)
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    assert!(
        outcomes.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{outcomes:?}"
    );
    let admitted: u64 = outcomes.iter().map(|(_, t)| t).sum();
    let refused = outcomes.iter().filter(|(s, _)| *s == 429).count();
    assert!(
        refused > 0 && admitted <= LIMIT,
        "admitted {admitted}, refused {refused}"
    );

    // Streams whose clients leave after the first chunk keep their whole
    // reservation: the counter never goes past the limit.
    let counter = "default/team-a||Month-fixed|totalTokens";
    let mut left = 0;
    for i in 0..6 {
        let request = json!({"model": "strong", "max_tokens": 30, "stream": true,
            "messages": [{"role": "user", "content": "[mock token_delay_ms=100]"}]});
        let response = post(
            &gateways[i % 2],
            "tg-alice",
            "/v1/chat/completions",
            &request,
        )
        .send()
        .await
        .unwrap();
        if response.status() == 200 {
            let mut stream = response.bytes_stream();
            let _ = stream.next().await;
            left += 1;
        }
    }
    // Settles run in the background: wait for the counter to stop moving.
    let mut total = redis_total(&redis, counter).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = redis_total(&redis, counter).await;
        let idle = gateways
            .iter()
            .all(|h| h.gateway.metrics.in_flight.get() == 0);
        if now == total && idle {
            break;
        }
        total = now;
    }
    eprintln!(
        "two gateways, 100 clients: admitted {admitted} tokens, refused {refused}; \
         {left} streams left mid-way; counted {total} of {LIMIT}"
    );
    assert!(total <= LIMIT, "counted {total} > {LIMIT}");
    assert!(
        total >= admitted,
        "Redis has every admitted request: {total} < {admitted}"
    );
    assert!(
        left == 0 || total > admitted,
        "the streams left mid-way are charged ({left} of them)"
    );
}

#[tokio::test]
async fn redis_outage_applies_each_budgets_failure_mode_and_loses_nothing() {
    let mut redis = RedisServer::start();
    let config = with_redis(
        &redis.url(),
        &format!(
            "{}{}",
            budget(
                "open",
                "  subject: {user: dave}\n  limits: [{window: Month, requests: 100}]"
            ),
            budget(
                "closed",
                "  subject: {user: carol}\n  limits: [{window: Month, requests: 100}]\n  failureMode: Closed"
            ),
        ),
    );
    let h = Harness::start(&config, MOCK_FLAGS).await;
    for key in ["tg-dave", "tg-carol", "tg-dave"] {
        let (status, value) = call(&h, key, "/v1/chat/completions", &chat("strong", 8)).await;
        assert_eq!(status, 200, "{value}");
    }
    let open = "default/open||Month-fixed|requests";
    assert_eq!(redis_total(&redis, open).await, 2);

    redis.kill();
    let (status, value) = call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 8)).await;
    assert_eq!(status, 200, "fails open: {value}");
    let (status, value) = call(&h, "tg-carol", "/v1/messages", &chat("claude", 8)).await;
    assert_eq!(status, 503, "fails closed: {value}");
    assert_eq!(value["type"], "error", "in Anthropic's shape: {value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("default/closed")
    );
    let metrics = h.metrics();
    assert!(
        metric_has(&metrics, &["tollgate_budget_state_errors_total"]),
        "{metrics}"
    );
    assert!(
        metric_has(
            &metrics,
            &["budget=\"default/open\"", "outcome=\"uncounted\""]
        ),
        "{metrics}"
    );

    // Back: what was counted before the outage is still there.
    redis.restart();
    let mut status = 0;
    for _ in 0..50 {
        status = call(&h, "tg-carol", "/v1/chat/completions", &chat("strong", 8))
            .await
            .0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "Redis is back");
    let (status, _) = call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 8)).await;
    assert_eq!(status, 200);
    assert_eq!(
        redis_total(&redis, open).await,
        3,
        "2 before the outage + 1 after"
    );
}

/// A webhook receiver on loopback: every POST body it gets, as JSON.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                // Head, then as much body as content-length says (bounded).
                while data.len() < 1 << 20 {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if data.len() >= head_end + 4 + length {
                        let body = &data[head_end + 4..head_end + 4 + length];
                        if let Ok(value) = serde_json::from_slice(body) {
                            sink.lock().unwrap().push(value);
                        }
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

#[tokio::test]
async fn a_spike_from_one_app_raises_exactly_one_alert_on_its_budget() {
    let (hook, received) = webhook_receiver().await;
    let config = format!(
        "{}{}",
        budget(
            "per-app",
            &format!(
                "  subject: {{perMember: App}}\n  limits: [{{window: Month, totalTokens: 100000000}}]\n  \
                 alerts: {{spikeFactor: 5, interval: 500ms, warmupIntervals: 4, cooldown: 1m, webhook: {{url: \"{hook}\"}}, \
                 throttleOffender: {{requestsPerSecond: 1, burst: 1}}}}"
            ),
        ),
        budget(
            "soft",
            &format!(
                "  subject: {{user: dave}}\n  limits: [{{window: Month, requests: 10}}]\n  softThresholds: [50, 80]\n  \
                 alerts: {{webhook: {{url: \"{hook}\", format: Slack}}}}"
            ),
        ),
    );
    let h = harness(&config).await;
    // Steady: carol (app bot) and alice (no app) at ~8 requests/s each for 3 s.
    let steady_until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut steady = 0;
    while tokio::time::Instant::now() < steady_until {
        for key in ["tg-carol", "tg-alice"] {
            let (status, _) = call(&h, key, "/v1/chat/completions", &chat("strong", 16)).await;
            assert_eq!(status, 200);
            steady += 1;
        }
        tokio::time::sleep(Duration::from_millis(125)).await;
    }
    assert!(steady >= 40, "steady phase too slow: {steady} requests");
    assert!(
        received.lock().unwrap().is_empty(),
        "steady load raised {:?}",
        received.lock().unwrap()
    );
    // Then about 12x from app bot for 2 s (12 requests at once every
    // 125 ms) against a spike factor of 5.
    let spike_start = tokio::time::Instant::now();
    let mut detected = None;
    while spike_start.elapsed() < Duration::from_secs(2) {
        let request = chat("strong", 16);
        let batch: Vec<_> = (0..12)
            .map(|_| call(&h, "tg-carol", "/v1/chat/completions", &request))
            .collect();
        futures_util::future::join_all(batch).await;
        if detected.is_none() && !received.lock().unwrap().is_empty() {
            detected = Some(spike_start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(125)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alerts = received.lock().unwrap().clone();
    let spikes: Vec<&Value> = alerts.iter().filter(|a| a["kind"] == "spike").collect();
    assert_eq!(spikes.len(), 1, "one alert per incident: {alerts:?}");
    assert_eq!(spikes[0]["budget"], "default/per-app");
    assert_eq!(spikes[0]["member"], "bot");
    let delay = detected.expect("the spike was detected");
    eprintln!(
        "spike detected {} ms after it began (interval 500 ms): {}",
        delay.as_millis(),
        spikes[0]["message"]
    );
    assert!(delay < Duration::from_millis(1500), "{delay:?}");
    assert!(metric_has(
        &h.metrics(),
        &[
            "tollgate_budget_alerts_total",
            "budget=\"default/per-app\"",
            "kind=\"spike\""
        ]
    ));

    // The offender is held to 1 request a second; others are not.
    assert!(
        spikes[0]["message"]
            .as_str()
            .unwrap()
            .contains("tollgate.dev/throttle-cleared-at"),
        "{}",
        spikes[0]["message"]
    );
    let mut refused = None;
    for _ in 0..3 {
        let (status, value) =
            call(&h, "tg-carol", "/v1/chat/completions", &chat("strong", 16)).await;
        if status == 429 {
            refused = Some(value);
        }
    }
    let refused = refused.expect("the offender is throttled");
    assert_eq!(refused["error"]["code"], "rate_limited");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("usage spike"),
        "{refused}"
    );
    for _ in 0..3 {
        let (status, _) = call(&h, "tg-alice", "/v1/chat/completions", &chat("strong", 16)).await;
        assert_eq!(status, 200, "only the offender is throttled");
    }
    assert!(metric_has(
        &h.metrics(),
        &[
            "budget=\"default/per-app\"",
            "outcome=\"offender_throttled\""
        ]
    ));
    // An operator clears it: the annotation names a time after the alert.
    let now_s = tollgate_gateway::state::window::now_ms() / 1000 + 1;
    let (year, month, day) =
        tollgate_gateway::state::window::civil_from_days(now_s.div_euclid(86_400));
    let secs = now_s.rem_euclid(86_400);
    let cleared_at = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    h.reload(&format!("{BASE}{}", config.replacen(
        "metadata: {name: per-app}",
        &format!(
            "metadata: {{name: per-app, annotations: {{tollgate.dev/throttle-cleared-at: \"{cleared_at}\"}}}}"
        ),
        1,
    )));
    for _ in 0..4 {
        let (status, value) =
            call(&h, "tg-carol", "/v1/chat/completions", &chat("strong", 16)).await;
        assert_eq!(status, 200, "released: {value}");
    }

    // Soft thresholds: 50% and 80% of dave's 10 requests, each once, in
    // Slack's shape.
    for _ in 0..9 {
        call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 8)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let texts: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|a| a["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].contains("50% of the limit requests"), "{texts:?}");
    assert!(texts[1].contains("80% of the limit requests"), "{texts:?}");
}

#[tokio::test]
async fn rate_limits_throttle_each_member_smoothly_with_retry_after() {
    let h = harness(&budget(
        "throttle",
        "  subject: {team: a, perMember: User}\n  rateLimit: {requestsPerSecond: 2, burst: 3}",
    ))
    .await;
    // A burst of 3, then refused with the time until the next token.
    for _ in 0..3 {
        assert_eq!(
            call(&h, "tg-alice", "/v1/chat/completions", &chat("strong", 8))
                .await
                .0,
            200
        );
    }
    let refused = post(&h, "tg-alice", "/v1/chat/completions", &chat("strong", 8))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, value) = json_body(refused).await;
    assert_eq!(status, 429, "{value}");
    assert_eq!(value["error"]["code"], "rate_limited");
    // Each member has its own bucket.
    assert_eq!(
        call(&h, "tg-bob", "/v1/chat/completions", &chat("strong", 8))
            .await
            .0,
        200
    );
    // 2 per second: after 500 ms, one more.
    tokio::time::sleep(Duration::from_millis(520)).await;
    assert_eq!(
        call(&h, "tg-alice", "/v1/chat/completions", &chat("strong", 8))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&h, "tg-alice", "/v1/chat/completions", &chat("strong", 8))
            .await
            .0,
        429
    );

    // Tokens per minute: estimates are taken, the unused part comes back.
    let h = harness(&budget(
        "tpm",
        "  subject: {user: dave}\n  rateLimit: {tokensPerMinute: 300}",
    ))
    .await;
    // Each request reserves ~10 + 100 tokens and uses ~24: far more than
    // 300 / 110 = 2 requests fit in a row thanks to settlement.
    let mut admitted = 0;
    for _ in 0..8 {
        if call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 100))
            .await
            .0
            == 200
        {
            admitted += 1;
        }
    }
    assert!(
        admitted >= 6,
        "settlement returns unused tokens: {admitted} of 8"
    );
    // A request whose estimate alone passes what is left is told when.
    let (status, value) = call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 290)).await;
    assert_eq!(status, 429, "{value}");
}

/// With Redis, every replica draws from one bucket: a burst spread over two
/// gateways is admitted once, not once per gateway, and token buckets get
/// their unused estimate back through the settle script.
#[tokio::test]
async fn rate_limits_are_shared_by_gateways_through_redis() {
    let redis = RedisServer::start();
    let config = with_redis(
        &redis.url(),
        &format!(
            "{}{}",
            budget(
                "burst",
                "  subject: {team: a}\n  rateLimit: {requestsPerSecond: 1, burst: 6}"
            ),
            budget(
                "tpm",
                "  subject: {user: dave}\n  rateLimit: {tokensPerMinute: 300}"
            ),
        ),
    );
    let gateways = [
        Harness::start(&config, MOCK_FLAGS).await,
        Harness::start(&config, MOCK_FLAGS).await,
    ];
    let started = std::time::Instant::now();
    let statuses: Vec<(u16, Option<String>)> = futures_util::stream::iter(0..20)
        .map(|i| {
            let sent = post(
                &gateways[i % 2],
                "tg-alice",
                "/v1/chat/completions",
                &chat("strong", 8),
            )
            .send();
            async move {
                let response = sent.await.unwrap();
                let retry = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (response.status().as_u16(), retry)
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = statuses.iter().filter(|(s, _)| *s == 200).count();
    // The burst, plus what refilled (1 a second) while the requests ran.
    let most = 6 + elapsed.ceil() as usize;
    assert!(
        (6..=most).contains(&admitted),
        "admitted {admitted} of 20 across two gateways in {elapsed:.2} s; at most {most}"
    );
    for (status, retry) in &statuses {
        assert!(*status == 200 || *status == 429, "{statuses:?}");
        if *status == 429 {
            assert_eq!(retry.as_deref(), Some("1"), "{statuses:?}");
        }
    }
    assert!(
        !redis
            .hash("tollgate:{default/gw}:rate:default/burst||requests")
            .is_empty(),
        "the bucket lives in Redis"
    );

    // Tokens per minute: each request reserves ~110 tokens and uses ~24;
    // settling through Redis gives the rest back, whichever gateway settles.
    let mut admitted = 0;
    for i in 0..8 {
        let (status, _) = call(
            &gateways[i % 2],
            "tg-dave",
            "/v1/chat/completions",
            &chat("strong", 100),
        )
        .await;
        if status == 200 {
            admitted += 1;
        }
        // Settles run in the background.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        admitted >= 6,
        "settlement returns unused tokens: {admitted} of 8"
    );
}

#[tokio::test]
async fn a_stream_past_its_reservation_is_cut_with_an_error_event_unless_finish() {
    let h = harness(&format!(
        "{}{}",
        budget(
            "cut",
            "  subject: {user: dave}\n  limits: [{window: Month, outputTokens: 1000000}]\n  defaultMaxOutputTokens: 4",
        ),
        budget(
            "finish",
            "  subject: {user: alice}\n  limits: [{window: Month, outputTokens: 1000000}]\n  defaultMaxOutputTokens: 4\n  streams: Finish",
        ),
    ))
    .await;
    // No max_tokens: 4 tokens are reserved, the mock writes 16.
    let uncapped = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Tell me a story."}]});
    let (body, _) = common::read_all(
        post(&h, "tg-dave", "/v1/chat/completions", &uncapped("strong"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!body.contains("[DONE]"), "cut before the end: {body}");
    let last = body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .last()
        .unwrap();
    assert!(
        last.contains("budget_exceeded"),
        "ends with the error event: {body}"
    );
    assert!(
        body.matches("\"content\"").count() >= 1,
        "the text before the cut arrived: {body}"
    );
    // Anthropic's client gets Anthropic's error event.
    let (body, _) = common::read_all(
        post(
            &h,
            "tg-dave",
            "/v1/messages",
            &json!({"model": "claude", "stream": true, "max_tokens": 64,
            "messages": [{"role": "user", "content": "Tell me a story."}]}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(
        body.contains("message_stop"),
        "Anthropic requests carry max_tokens: the provider caps them, nothing is cut: {body}"
    );
    // `streams: Finish` lets it complete.
    let (body, _) = common::read_all(
        post(&h, "tg-alice", "/v1/chat/completions", &uncapped("strong"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body.contains("[DONE]"), "{body}");
    assert!(metric_has(
        &h.metrics(),
        &[
            "tollgate_stream_failures_total",
            "reason=\"budget_exceeded\""
        ]
    ));
}

/// Serves `{"keys": [...]}` from a shared cell (swap it to rotate keys),
/// counting fetches.
async fn jwks_server(
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fetches.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = keys.lock().unwrap().to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    (url, fetches)
}

#[tokio::test]
async fn jwt_bearer_tokens_name_the_principal_and_follow_key_rotation() {
    use tollgate_gateway::llm::jwt::testing::Signer;
    let (old, new) = (Signer::es256(), Signer::ed25519());
    let keys = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [old.jwk("k1")]})));
    let (jwks_url, fetches) = jwks_server(keys.clone()).await;
    let config = BASE.replacen(
        "spec:\n  apiKeys:",
        &format!(
            "spec:\n  jwt:\n  - issuer: https://idp.test\n    audiences: [tollgate]\n    jwksUrl: \"{jwks_url}\"\n    \
             claims: {{user: email, team: groups, app: azp}}\n  apiKeys:"
        ),
        1,
    );
    let h = Harness::start(
        &format!(
            "{config}{}",
            budget(
                "idp-team",
                "  subject: {team: search}\n  limits: [{window: Month, requests: 2}]"
            )
        ),
        MOCK_FLAGS,
    )
    .await;
    let now = tollgate_gateway::state::window::now_ms() / 1000;
    let claims = json!({"iss": "https://idp.test", "aud": "tollgate", "email": "eve@example.com",
        "groups": ["search"], "azp": "notebook", "exp": now + 300});
    let token = old.token("k1", &claims);
    let (status, value) = call(&h, &token, "/v1/chat/completions", &chat("strong", 8)).await;
    assert_eq!(status, 200, "{value}");
    // The token's team is counted by the team's budget.
    assert_eq!(usage(&h)["default/idp-team||Month-fixed|requests"], 1);
    // API keys keep working beside tokens.
    assert_eq!(
        call(&h, "tg-dave", "/v1/chat/completions", &chat("strong", 8))
            .await
            .0,
        200
    );

    // Refused: expired, another issuer's audience, a forged signature.
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 3600);
    let (status, value) = call(
        &h,
        &old.token("k1", &expired),
        "/v1/chat/completions",
        &chat("strong", 8),
    )
    .await;
    assert_eq!(status, 401, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{value}"
    );
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("someone-else");
    assert_eq!(
        call(
            &h,
            &old.token("k1", &wrong_aud),
            "/v1/chat/completions",
            &chat("strong", 8)
        )
        .await
        .0,
        401
    );
    let stranger = Signer::es256();
    assert_eq!(
        call(
            &h,
            &stranger.token("k1", &claims),
            "/v1/chat/completions",
            &chat("strong", 8)
        )
        .await
        .0,
        401
    );
    let fetched = fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fetched, 1, "the key set is cached");

    // The issuer rotates to a new key: an unknown kid fetches the set again.
    *keys.lock().unwrap() = json!({"keys": [old.jwk("k1"), new.jwk("k2")]});
    // (Unknown key ids fetch at most every 5 s, so a flood of made-up ids
    // cannot hammer the issuer.)
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let (status, value) = call(
        &h,
        &new.token("k2", &claims),
        "/v1/chat/completions",
        &chat("strong", 8),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The team's budget (2 requests) is spent: the third token request is refused.
    let (status, value) = call(&h, &token, "/v1/chat/completions", &chat("strong", 8)).await;
    assert_eq!(status, 429, "{value}");
}
