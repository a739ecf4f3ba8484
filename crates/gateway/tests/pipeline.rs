//! Stage behaviour of the pipeline, in process: every client API against
//! OpenAI- and Anthropic-format providers, errors in each client's shape,
//! settling into metrics.

mod common;

use common::{ALL_FORMATS, Harness, MOCK_AUTH};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, value)
}

async fn sse_events(response: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        let value = if data == "[DONE]" {
            Value::String(data)
        } else {
            serde_json::from_str(&data).unwrap_or_else(|_| panic!("bad event data {data}"))
        };
        events.push((name, value));
    }
    events
}

fn metric_has(metrics: &str, parts: &[&str]) -> bool {
    metrics
        .lines()
        .any(|line| parts.iter().all(|p| line.contains(p)) && !line.ends_with(" 0"))
}

#[tokio::test]
async fn openai_chat_passes_through_and_settles() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let (status, value) = body(
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
    let (status, value) = body(
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
    let (status, value) = body(
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
    let (status, value) = body(
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
    let (status, value) = body(no_key).await;
    assert_eq!(status, 401);
    assert_eq!(value["type"], "error");
    assert_eq!(value["error"]["type"], "authentication_error");

    let (status, value) = body(
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
    let (status, value) = body(
        h.post("/v1/messages")
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{value}");
    assert_eq!(value["error"]["type"], "invalid_request_error");

    let (status, value) = body(
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
        let (status, value) = body(
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
    let (status, value) = body(
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
async fn embeddings_refuse_a_provider_without_them() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let (status, value) = body(
        h.post("/v1/embeddings")
            .json(&json!({"model": "claude", "input": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{value}");
    assert_eq!(value["error"]["code"], "unsupported_endpoint");
    let (status, _) = body(
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
        let (status, value) = body(
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
