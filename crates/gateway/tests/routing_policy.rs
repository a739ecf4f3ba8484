//! A route's resilience policy against real mock providers: retries with
//! backoff on the same backend (and a 429's reset honoured), per-attempt and
//! first-token timeouts, least-in-flight balancing, and context-window
//! fallback.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, KEY, json_body, metric_sum, spawn_mock};
use serde_json::json;
use tokio::net::TcpListener;

const GATEWAY: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys: [{secretRef: {name: keys, key: k}, principal: {user: tester}}]
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k: "{key}"}
"#;

/// A ModelProvider of type Mock at `endpoint`, with extra `spec` lines.
fn provider(name: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: {name}}}\nspec:\n  type: Mock\n  endpoint: \"{endpoint}/v1\"\n  circuitBreaker: {{consecutiveFailures: 1000}}\n{extra}"
    )
}

/// An AIRoute for model `model` with `spec` lines after gatewayRef.
fn route(name: &str, model: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [{model}]\n{spec}"
    )
}

/// Another mock on its own port, with `flags`; its base URL and its stop.
async fn extra_mock(flags: &[&str]) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, spawn_mock(listener, flags))
}

async fn chat(h: &Harness, model: &str, text: &str, stream: bool) -> reqwest::Response {
    h.client
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(KEY)
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": text}]}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
}

fn provider_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-tollgate-provider")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn errors(h: &Harness, provider: &str, reason: &str) -> f64 {
    metric_sum(
        &h.metrics(),
        &format!("tollgate_upstream_errors_total{{provider=\"{provider}\",reason=\"{reason}\"}}"),
    )
}

#[tokio::test]
async fn retries_get_past_transient_faults_and_honour_a_429_reset() {
    let manifests = format!(
        "{GATEWAY}{}{}{}{}{}",
        provider("only", "{mock}", ""),
        provider("other", "{mock}", ""),
        route(
            "retrying",
            "retrying",
            "  retries: {attempts: 2, backoff: 20ms, maxBackoff: 200ms}\n  backends:\n  - {providerRef: {name: only}, model: mock-chat}\n"
        ),
        route(
            "plain",
            "plain",
            "  backends:\n  - {providerRef: {name: only}, model: mock-chat}\n"
        ),
        route(
            "pair",
            "pair",
            "  retries: {attempts: 2, backoff: 20ms}\n  backends:\n  - {providerRef: {name: only}, model: mock-chat}\n  - {providerRef: {name: other}, model: mock-chat, priority: 1}\n"
        ),
    );
    let h = Harness::start(&manifests, &[]).await;

    // Two 503s, then an answer: two retries get there.
    let response = chat(&h, "retrying", "a [mock status=503 fail_times=2]", false).await;
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(errors(&h, "only", "server_error"), 2.0);

    // Three 500s are one more than the policy allows: the provider's error.
    let (status, _) =
        json_body(chat(&h, "retrying", "b [mock status=500 fail_times=3]", false).await).await;
    assert_eq!(status, 502);
    assert_eq!(errors(&h, "only", "server_error"), 5.0);

    // Refused connections... are covered by fallback tests; a broken
    // stream before its first byte is retried like any transient fault.
    let response = chat(&h, "retrying", "c [mock status=502 fail_times=1]", true).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("data: [DONE]"));

    // Without retries the first fault is the answer.
    let (status, _) =
        json_body(chat(&h, "plain", "d [mock status=503 fail_times=1]", false).await).await;
    assert_eq!(status, 503);

    // A 429 with `Retry-After: 1` on the last backend: waited for, then
    // answered (the mock's reset is one second).
    let started = Instant::now();
    let (status, body) =
        json_body(chat(&h, "retrying", "e [mock status=429 fail_times=1]", false).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // With another backend left, a 429 with a reset falls back at once
    // instead of waiting (the first backend is then skipped until its reset).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let started = Instant::now();
    let response = chat(&h, "pair", "f [mock status=429 fail_times=1]", false).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(provider_of(&response), "other");
}

#[tokio::test]
async fn attempt_and_first_token_timeouts_move_on_before_the_request_deadline() {
    let (slow_headers, _stop1) = extra_mock(&["--header-delay-ms", "3000"]).await;
    let (slow_first_token, _stop2) = extra_mock(&["--ttft-ms", "3000"]).await;
    let manifests = format!(
        "{GATEWAY}{}{}{}{}{}",
        provider("hangs", &slow_headers, ""),
        provider("stalls", &slow_first_token, ""),
        provider("healthy", "{mock}", ""),
        route(
            "attempt",
            "attempt",
            "  timeouts: {request: 10s, attempt: 300ms}\n  backends:\n  - {providerRef: {name: hangs}, model: mock-chat}\n  - {providerRef: {name: healthy}, model: mock-chat, priority: 1}\n"
        ),
        route(
            "ttft",
            "ttft",
            "  timeouts: {request: 10s, firstToken: 300ms}\n  backends:\n  - {providerRef: {name: stalls}, model: mock-chat}\n  - {providerRef: {name: healthy}, model: mock-chat, priority: 1}\n"
        ),
    );
    let h = Harness::start(&manifests, &[]).await;

    let started = Instant::now();
    let response = chat(&h, "attempt", "hello", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(provider_of(&response), "healthy");
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(errors(&h, "hangs", "timeout"), 1.0);

    // The stalled stream sent its headers; its first token never came in
    // time, and nothing had reached the client, so the fallback answers.
    let started = Instant::now();
    let response = chat(&h, "ttft", "hello", true).await;
    assert_eq!(response.status(), 200);
    assert_eq!(provider_of(&response), "healthy");
    assert!(response.text().await.unwrap().contains("data: [DONE]"));
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(errors(&h, "stalls", "stream_timeout"), 1.0);

    // A plain request is not bound by the first-token timeout: the stalled
    // provider's full answer (3 s) is waited for.
    let response = chat(&h, "ttft", "plain", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(provider_of(&response), "stalls");
}

/// Share of the requests answered by the fast provider with `clients`
/// concurrent clients sending 10 each, and the mean latency, on route
/// `model`.
async fn share_and_median(h: &Harness, model: &str, clients: usize) -> (f64, Duration) {
    const REQUESTS: usize = 10;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let http = h.client.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        let model = model.to_string();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..REQUESTS {
                let started = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({"model": model,
                        "messages": [{"role": "user", "content": format!("{client} {i}")}]}))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                seen.push((provider_of(&response) == "fast", started.elapsed()));
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let fast = all.iter().filter(|(fast, _)| *fast).count() as f64 / all.len() as f64;
    let total: Duration = all.iter().map(|(_, d)| *d).sum();
    (fast, total / all.len() as u32)
}

#[tokio::test]
async fn least_in_flight_steers_load_away_from_a_slow_backend() {
    let (slow, _stop) = extra_mock(&["--header-delay-ms", "300"]).await;
    let backends = "  backends:\n  - {providerRef: {name: fast}, model: mock-chat}\n  - {providerRef: {name: slow}, model: mock-chat}\n";
    let manifests = format!(
        "{GATEWAY}{}{}{}{}",
        provider("fast", "{mock}", ""),
        provider("slow", &slow, ""),
        route("balanced", "balanced", backends),
        route(
            "weighted",
            "weighted",
            &format!("  balancing: Weighted\n{backends}")
        ),
    );
    let h = Harness::start(&manifests, &[]).await;

    let (weighted_share, weighted_mean) = share_and_median(&h, "weighted", 6).await;
    let (balanced_share, balanced_mean) = share_and_median(&h, "balanced", 6).await;
    eprintln!(
        "fast backend share / mean latency, 6 clients x 10 requests, the other backend 300 ms slower: \
         Weighted {:.0}% / {} ms, LeastInFlight {:.0}% / {} ms",
        weighted_share * 100.0,
        weighted_mean.as_millis(),
        balanced_share * 100.0,
        balanced_mean.as_millis()
    );
    assert!(
        (0.25..=0.75).contains(&weighted_share),
        "weighted splits about evenly: {weighted_share}"
    );
    assert!(
        balanced_share >= 0.75,
        "least in flight sends most to the fast backend: {balanced_share}"
    );
    assert!(balanced_mean < weighted_mean);
}

#[tokio::test]
async fn a_request_too_long_for_the_model_goes_to_the_larger_one() {
    // `small` refuses long requests itself (a provider's context error);
    // `cataloged` has the same window in its catalog, so the gateway knows
    // before sending.
    let (small, _stop) = extra_mock(&["--context-window", "300"]).await;
    let manifests = format!(
        "{GATEWAY}{}{}{}{}{}{}",
        provider("small", &small, ""),
        provider(
            "cataloged",
            &small,
            "  models: [{name: mock-chat, contextWindow: 300}]\n"
        ),
        provider(
            "large",
            "{mock}",
            "  models: [{name: mock-claude, contextWindow: 5000}]\n"
        ),
        route(
            "by-error",
            "by-error",
            "  backends:\n  - {providerRef: {name: small}, model: mock-chat}\n  contextFallback:\n  - {providerRef: {name: large}, model: mock-claude}\n"
        ),
        route(
            "by-catalog",
            "by-catalog",
            "  backends:\n  - {providerRef: {name: cataloged}, model: mock-chat}\n  contextFallback:\n  - {providerRef: {name: large}, model: mock-claude}\n"
        ),
        route(
            "no-fallback",
            "no-fallback",
            "  backends:\n  - {providerRef: {name: small}, model: mock-chat}\n"
        ),
    );
    let h = Harness::start(&manifests, &[]).await;
    let long = "lorem ipsum dolor ".repeat(150);

    for model in ["by-error", "by-catalog"] {
        let response = chat(&h, model, "short", false).await;
        assert_eq!(response.status(), 200);
        assert_ne!(provider_of(&response), "large", "{model}: short stays");

        let response = chat(&h, model, &long, false).await;
        assert_eq!(response.status(), 200, "{model}");
        assert_eq!(provider_of(&response), "large", "{model}: long goes");
    }
    // The catalog's window spared `cataloged` the request; `small` refused it.
    assert_eq!(errors(&h, "cataloged", "context_window"), 1.0);
    assert_eq!(errors(&h, "small", "client_error"), 1.0);

    // Without contextFallback the provider's own error reaches the client.
    let (status, body) = json_body(chat(&h, "no-fallback", &long, false).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");

    // Too long even for the larger model: a clear 400, nothing sent.
    let huge = "lorem ipsum dolor ".repeat(2_000);
    let (status, body) = json_body(chat(&h, "by-catalog", &huge, false).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5000-token"),
        "{body}"
    );
}

#[tokio::test]
async fn a_disabled_breaker_never_ejects_its_provider() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let manifests = format!(
        "{GATEWAY}{}{}{}{}",
        // `provider` sets a high threshold; these two override it.
        provider("off", &dead, "").replace(
            "circuitBreaker: {consecutiveFailures: 1000}",
            "circuitBreaker: {enabled: false}"
        ),
        provider("on", &dead, "").replace(
            "circuitBreaker: {consecutiveFailures: 1000}",
            "circuitBreaker: {consecutiveFailures: 2}"
        ),
        provider("healthy", "{mock}", ""),
        route(
            "pair",
            "pair",
            "  backends:\n  - {providerRef: {name: off}, model: mock-chat}\n  - {providerRef: {name: on}, model: mock-chat, priority: 1}\n  - {providerRef: {name: healthy}, model: mock-chat, priority: 2}\n"
        ),
    );
    let h = Harness::start(&manifests, &[]).await;
    for i in 0..6 {
        let response = chat(&h, "pair", &format!("{i}"), false).await;
        assert_eq!(response.status(), 200);
        assert_eq!(provider_of(&response), "healthy");
    }
    // Every request tried `off`; `on` was ejected after two failures.
    assert_eq!(errors(&h, "off", "connect"), 6.0);
    assert_eq!(errors(&h, "on", "connect"), 2.0);
    assert_eq!(errors(&h, "on", "circuit_open"), 4.0);
}

#[tokio::test]
async fn a_team_gets_its_own_route_under_a_shared_alias() {
    let manifests = format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec:
  apiKeys:
  - {{secretRef: {{name: keys, key: k}}, principal: {{user: tester, team: research}}}}
  - {{secretRef: {{name: keys, key: other}}, principal: {{user: sam, team: sales}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{k: "{{key}}", other: "tg-sales-key"}}
{}{}{}"#,
        provider("only", "{mock}", ""),
        route(
            "shared",
            "chat",
            "  backends:\n  - {providerRef: {name: only}, model: mock-chat}\n"
        ),
        route(
            "research",
            "chat",
            "  principals: [{team: research}]\n  backends:\n  - {providerRef: {name: only}, model: mock-claude}\n"
        ),
    );
    let h = Harness::start(&manifests, &[]).await;
    let served_by = |key: &'static str| {
        let h = &h;
        async move {
            let response = h
                .client
                .post(format!("{}/v1/chat/completions", h.url))
                .bearer_auth(key)
                .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-tollgate-route"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(served_by(KEY).await, "default/research");
    assert_eq!(served_by("tg-sales-key").await, "default/shared");
}
