//! Stage behaviour of the pipeline, in process: every client API against
//! OpenAI- and Anthropic-format providers, errors in each client's shape,
//! settling into metrics.

mod common;

use common::{ALL_FORMATS, Harness, MOCK_AUTH, json_body, metric_has, sse_events};
use serde_json::{Value, json};

#[tokio::test]
async fn openai_chat_passes_through_and_settles() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let (status, value) = json_body(
        h.post("/v1/chat/completions")
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["model"], "mock-chat");
    let metrics = h.metrics();
    assert!(
        metric_has(
            &metrics,
            &[
                "tollgate_requests_total",
                "endpoint=\"chat_completions\"",
                "status=\"200\""
            ]
        ),
        "{metrics}"
    );
    assert!(
        metric_has(&metrics, &["tollgate_tokens_total", "direction=\"output\""]),
        "{metrics}"
    );
}

#[tokio::test]
async fn anthropic_client_reaches_an_openai_provider() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let request = json!({
        "model": "chat",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello"}]
    });
    let (status, value) = json_body(
        h.post("/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(&request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["type"], "message");
    assert_eq!(value["role"], "assistant");
    assert_eq!(value["content"][0]["type"], "text");
    assert!(value["content"][0]["text"].as_str().unwrap().len() > 1);
    assert!(["end_turn", "max_tokens"].contains(&value["stop_reason"].as_str().unwrap()));
    assert!(value["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let events = sse_events(
        h.post("/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(&streamed)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"content_block_delta"), "{names:?}");
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert!(delta.1["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let metrics = h.metrics();
    assert!(
        metric_has(
            &metrics,
            &[
                "tollgate_requests_total",
                "endpoint=\"messages\"",
                "status=\"200\""
            ]
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn openai_client_reaches_an_anthropic_provider_streamed() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let (status, value) = json_body(
        h.post("/v1/chat/completions")
            .json(&json!({"model": "claude", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}], "max_tokens": 50}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["choices"][0]["message"]["role"], "assistant");
    assert!(value["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let events = sse_events(
        h.post("/v1/chat/completions")
            .json(&json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(events.last().unwrap().1, Value::String("[DONE]".into()));
    let text: String = events
        .iter()
        .filter_map(|(_, v)| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert!(!text.is_empty());
    let usage = events
        .iter()
        .find_map(|(_, v)| v.get("usage").filter(|u| u.is_object()));
    assert!(usage.is_some(), "usage chunk asked for: {events:?}");
}

#[tokio::test]
async fn anthropic_client_to_anthropic_provider_passes_through() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let (status, value) = json_body(
        h.post("/v1/messages")
            .header("x-api-key", common::KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["model"], "mock-claude");
    let metrics = h.metrics();
    assert!(
        metric_has(
            &metrics,
            &[
                "tollgate_tokens_total",
                "route=\"default/claude\"",
                "direction=\"input\""
            ]
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn errors_take_the_client_shape() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let no_key = h
        .client
        .post(format!("{}/v1/messages", h.url))
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let (status, value) = json_body(no_key).await;
    assert_eq!(status, 401);
    assert_eq!(value["type"], "error");
    assert_eq!(value["error"]["type"], "authentication_error");

    let (status, value) = json_body(
        h.post("/v1/messages")
            .json(&json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(value["error"]["type"], "not_found_error");

    // Anthropic requires max_tokens: translation refuses without it.
    let (status, value) = json_body(
        h.post("/v1/messages")
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{value}");
    assert_eq!(value["error"]["type"], "invalid_request_error");

    let (status, value) = json_body(
        h.post("/v1/chat/completions")
            .json(&json!({"model": "chat"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(value["error"]["param"], "messages");
}

#[tokio::test]
async fn count_tokens_is_answered_for_every_backend() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    for model in ["chat", "claude"] {
        let (status, value) = json_body(
            h.post("/v1/messages/count_tokens")
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "How many tokens is this?"}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{model}: {value}");
        assert!(
            value["input_tokens"].as_u64().unwrap() > 0,
            "{model}: {value}"
        );
    }
}

#[tokio::test]
async fn responses_api_reaches_an_anthropic_provider() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let (status, value) = json_body(
        h.post("/v1/responses")
            .json(&json!({"model": "claude", "instructions": "Be brief.", "input": "hello", "max_output_tokens": 40}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["object"], "response");
    let output = value["output"].as_array().unwrap();
    assert!(
        output.iter().any(|item| item["type"] == "message"),
        "{value}"
    );
    assert!(value["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let events = sse_events(
        h.post("/v1/responses")
            .json(&json!({"model": "claude", "input": "hello", "stream": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
    assert!(names.contains(&"response.output_text.delta"), "{names:?}");
    assert!(
        matches!(
            names.last(),
            Some(&"response.completed") | Some(&"response.incomplete")
        ),
        "{names:?}"
    );
}

#[tokio::test]
async fn routes_serve_only_the_endpoints_their_models_do() {
    // A route may declare an endpoint its provider cannot serve (pass-through
    // routes serve all four): the provider's own refusal is the last word.
    let manifests = format!(
        "{ALL_FORMATS}---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: claude-any}}
spec:
  gatewayRef: {{name: gw}}
  models: [\"claude-*\"]
  backends: [{{providerRef: {{name: anthropic}}}}]
"
    );
    let h = Harness::start(&manifests, MOCK_AUTH).await;
    let refused = |status: u16, value: &Value, path: &str| {
        assert_eq!(status, 400, "{value}");
        let message = value["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("not served on {path}")),
            "{value}"
        );
    };
    // A chat alias on embeddings, in OpenAI's shape.
    let (status, value) = json_body(
        h.post("/v1/embeddings")
            .json(&json!({"model": "chat", "input": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    refused(status, &value, "/v1/embeddings");
    assert_eq!(value["error"]["code"], "unsupported_endpoint");
    assert_eq!(value["error"]["param"], "model");
    // An embedding alias on chat completions and on messages (Anthropic's shape).
    let (status, value) = json_body(
        h.post("/v1/chat/completions")
            .json(&json!({"model": "embed", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    refused(status, &value, "/v1/chat/completions");
    let (status, value) = json_body(
        h.post("/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "embed", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(value["type"], "error", "{value}");
    assert_eq!(value["error"]["type"], "invalid_request_error", "{value}");
    refused(status, &value, "/v1/messages");
    // The pass-through route reaches the provider, which has no embeddings.
    let (status, value) = json_body(
        h.post("/v1/embeddings")
            .json(&json!({"model": "claude-x", "input": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{value}");
    assert_eq!(value["error"]["code"], "unsupported_endpoint");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("serves no embeddings")
    );
    // And the right pairs still work.
    let (status, _) = json_body(
        h.post("/v1/embeddings")
            .json(&json!({"model": "embed", "input": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn glob_routes_can_send_the_requested_model_through() {
    let manifests = format!(
        "{ALL_FORMATS}---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: family}}
spec:
  gatewayRef: {{name: gw}}
  models: [\"gpt-4o*\"]
  backends: [{{providerRef: {{name: openai}}}}]
"
    );
    let h = Harness::start(&manifests, MOCK_AUTH).await;
    for requested in ["gpt-4o-mini", "gpt-4o-2024-08-06"] {
        let (status, value) = json_body(
            h.post("/v1/chat/completions")
                .json(&json!({"model": requested, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{value}");
        assert_eq!(
            value["model"], requested,
            "the provider saw the client's model name"
        );
    }
    let metrics = h.metrics();
    assert!(
        metric_has(
            &metrics,
            &["tollgate_requests_total", "model=\"gpt-4o-mini\""]
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn models_answer_in_the_callers_shape() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let openai: Value = h
        .client
        .get(format!("{}/v1/models", h.url))
        .bearer_auth(common::KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openai["object"], "list");
    assert!(
        openai["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "claude")
    );
    let anthropic: Value = h
        .client
        .get(format!("{}/v1/models", h.url))
        .header("x-api-key", common::KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["has_more"], false);
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert!(
        anthropic["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "chat")
    );
}

/// The SSRF guard at connect time: `127.1` is no IP literal to the config
/// check, but the resolver turns it into 127.0.0.1, which is refused unless
/// the provider allows loopback.
#[tokio::test]
async fn a_host_name_resolving_to_loopback_is_refused_unless_allowed() {
    const MANIFESTS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: guarded}
spec: {type: OpenAICompatible, endpoint: "http://127.1:{mock_port}/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: allowed}
spec: {type: OpenAICompatible, endpoint: "http://127.1:{mock_port}/v1", network: {allowLoopback: true}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: guarded}
spec:
  gatewayRef: {name: gw}
  models: [guarded]
  backends: [{providerRef: {name: guarded}, model: mock-chat}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: allowed}
spec:
  gatewayRef: {name: gw}
  models: [allowed]
  backends: [{providerRef: {name: allowed}, model: mock-chat}]
"#;
    let h = Harness::start(MANIFESTS, &[]).await;
    let ask = |model: &'static str| {
        h.post("/v1/chat/completions")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let (status, value) = json_body(ask("guarded").await.unwrap()).await;
    assert_eq!(status, 502, "{value}");
    let message = value["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("SSRF guard"), "{value}");
    let (status, value) = json_body(ask("allowed").await.unwrap()).await;
    assert_eq!(status, 200, "{value}");
}
