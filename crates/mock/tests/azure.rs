//! Azure OpenAI deployment and v1 paths, api-version and api-key checks.

mod common;

use common::{Server, weather_schema};
use http::StatusCode;
use serde_json::json;
use tollgate_mock::{AuthConfig, MockConfig};

const CHAT: &str = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";

fn chat(content: &str) -> serde_json::Value {
    json!({"messages": [{"role": "user", "content": content}]})
}

async fn keyed() -> Server {
    Server::start(MockConfig {
        auth: AuthConfig {
            azure_key: Some("azure-secret".into()),
            ..AuthConfig::default()
        },
        ..MockConfig::default()
    })
    .await
}

#[tokio::test]
async fn deployment_chat_uses_deployment_as_model() {
    let server = Server::default().await;
    let r = server.post(CHAT, &chat("hello"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt4o-prod");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 16);

    // Streamed, with tools: same tool decision as the OpenAI path.
    let mut req = chat("weather?");
    req["stream"] = json!(true);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}}]);
    let r = server.post(CHAT, &req, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(text.contains("\"model\":\"gpt4o-prod\""));
    assert!(text.contains("\"finish_reason\":\"tool_calls\""));
    assert!(text.contains("get_weather"));
    server.stop().await;
}

#[tokio::test]
async fn embeddings_and_v1_paths() {
    let server = Server::default().await;
    let r = server
        .post(
            "/openai/deployments/embed-small/embeddings?api-version=2024-10-21",
            &json!({"input": ["a", "b"], "dimensions": 8}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["model"], "embed-small");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);

    // GA v1 path: model in the body, api-version optional.
    let mut body = chat("hi");
    body["model"] = json!("mock-chat");
    let r = server.post("/openai/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["model"], "mock-chat");
    server.stop().await;
}

#[tokio::test]
async fn api_version_is_required_on_deployment_paths() {
    let server = Server::default().await;
    let r = server
        .post("/openai/deployments/d/chat/completions", &chat("hi"), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v = r.json();
    assert_eq!(v["error"]["code"], "MissingApiVersionParameter");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api-version")
    );
    let r = server
        .post(
            "/openai/deployments/d/embeddings?foo=1",
            &json!({"input": "x"}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn api_key_or_entra_token_is_checked() {
    let server = keyed().await;
    let missing = server.post(CHAT, &chat("hi"), &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let v = missing.json();
    assert_eq!(v["error"]["code"], "401");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Access denied")
    );
    let wrong = server.post(CHAT, &chat("hi"), &[("api-key", "nope")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = server
        .post(CHAT, &chat("hi"), &[("api-key", "azure-secret")])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let entra = server
        .post(
            CHAT,
            &chat("hi"),
            &[("authorization", "Bearer azure-secret")],
        )
        .await;
    assert_eq!(entra.status, StatusCode::OK);
    let mut body = chat("hi");
    body["model"] = json!("m");
    let v1 = server.post("/openai/v1/chat/completions", &body, &[]).await;
    assert_eq!(v1.status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn injected_errors_use_azure_shape() {
    let server = Server::default().await;
    let r = server.post(CHAT, &chat("hi [mock status=429]"), &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), "1");
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let r = server
        .post(CHAT, &chat("hi"), &[("x-mock-status", "503")])
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "503");
    server.stop().await;
}
