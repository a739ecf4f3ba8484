//! Smart routing tiers end to end: a simple prompt goes to the cheap tier's
//! backend, a hard one to the strong tier's, for every client API; the
//! answer says which tier and why, errors included; the decision is counted.

mod common;

use common::{Harness, json_body, metric_has};
use serde_json::json;

const CONFIG: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys: [{secretRef: {name: keys, key: k}, principal: {user: tester}}]
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k: "{key}"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: small}
spec: {type: Mock, endpoint: "{mock}/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: large}
spec: {type: Mock, endpoint: "{mock}/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: gone}
spec: {type: Mock, endpoint: "http://127.0.0.1:1/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: smart}
spec:
  gatewayRef: {name: gw}
  models: [smart]
  tiers: [{name: cheap}, {name: strong}]
  tierPolicy: {classifier: Heuristic, longPromptTokens: 2000}
  backends:
  - {providerRef: {name: small}, model: mock-chat, tier: cheap}
  - {providerRef: {name: large}, model: mock-chat, tier: strong}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: escalate}
spec:
  gatewayRef: {name: gw}
  models: [escalate]
  tiers: [{name: cheap}, {name: strong}]
  backends:
  - {providerRef: {name: gone}, model: mock-chat, tier: cheap}
  - {providerRef: {name: large}, model: mock-chat, tier: strong}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: dead}
spec:
  gatewayRef: {name: gw}
  models: [dead]
  tiers: [{name: cheap}, {name: strong}]
  backends:
  - {providerRef: {name: gone}, model: mock-chat, tier: cheap}
  - {providerRef: {name: gone}, model: mock-chat, tier: strong}
"#;

const SIMPLE: &str = "What is the capital of Portugal?";
const HARD: &str = "Prove that there are infinitely many primes of the form 4k+3.";

fn chat(model: &str, text: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn simple_prompts_go_cheap_and_hard_ones_strong() {
    let h = Harness::start(CONFIG, &[]).await;
    for (text, provider, tier, reason) in [
        (SIMPLE, "small", "cheap", "simple"),
        (HARD, "large", "strong", "math"),
    ] {
        let response = h
            .post("/v1/chat/completions")
            .json(&chat("smart", text))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&response, "x-tollgate-provider"), provider, "{text}");
        assert_eq!(header(&response, "x-tollgate-route-tier"), tier);
        assert_eq!(header(&response, "x-tollgate-route-reason"), reason);
        let (status, body) = json_body(response).await;
        assert_eq!(status, 200, "{body}");
    }

    // The same for the Responses and Anthropic Messages APIs.
    let response = h
        .post("/v1/responses")
        .json(&json!({"model": "smart", "input": HARD}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-tollgate-route-tier"), "strong");
    assert_eq!(header(&response, "x-tollgate-provider"), "large");
    assert_eq!(response.status(), 200);
    let response = h
        .post("/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "smart", "max_tokens": 64, "messages": [{"role": "user", "content": SIMPLE}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-tollgate-route-tier"), "cheap");
    assert_eq!(header(&response, "x-tollgate-provider"), "small");
    assert_eq!(response.status(), 200);

    // An explicit reasoning parameter decides alone, streams carry the headers.
    let mut body = chat("smart", SIMPLE);
    body["reasoning_effort"] = json!("high");
    body["stream"] = json!(true);
    let response = h
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-tollgate-route-tier"), "strong");
    assert_eq!(
        header(&response, "x-tollgate-route-reason"),
        "reasoning_requested"
    );
    let _ = response.text().await;

    let metrics = h.metrics();
    for (tier, reason, count) in [
        ("cheap", "simple", "2"),
        ("strong", "math", "2"),
        ("strong", "reasoning_requested", "1"),
    ] {
        let line = format!(
            "tollgate_route_tier_decisions_total{{route=\"default/smart\",tier=\"{tier}\",reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_failing_tier_falls_back_and_errors_still_say_the_tier() {
    let h = Harness::start(CONFIG, &[]).await;
    // The cheap backend is unreachable: the strong tier answers, and the
    // headers still say what was decided.
    let response = h
        .post("/v1/chat/completions")
        .json(&chat("escalate", SIMPLE))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-tollgate-provider"), "large");
    assert_eq!(header(&response, "x-tollgate-route-tier"), "cheap");
    assert_eq!(response.status(), 200);

    // Nothing answers: the error carries the decision too.
    let response = h
        .post("/v1/chat/completions")
        .json(&chat("dead", HARD))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-tollgate-route-tier"), "strong");
    assert_eq!(header(&response, "x-tollgate-route-reason"), "math");
    let (status, body) = json_body(response).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        metric_has(
            &h.metrics(),
            &[
                "tollgate_route_tier_decisions_total",
                "default/dead",
                "strong"
            ]
        ),
        "counted"
    );
}
