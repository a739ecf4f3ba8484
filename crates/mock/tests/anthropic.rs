//! Anthropic Messages: headers, auth, thinking, stop sequences, parallel
//! tool use, cache usage, count_tokens and in-stream errors.

mod common;

use common::{Server, weather_schema};
use http::StatusCode;
use serde_json::{Value, json};
use tollgate_mock::{AuthConfig, MockConfig};

const V: (&str, &str) = ("anthropic-version", "2023-06-01");

fn claude(content: &str) -> Value {
    json!({"model": "mock-claude", "max_tokens": 1024, "messages": [{"role": "user", "content": content}]})
}

fn tools() -> Value {
    json!([
        {"name": "get_weather", "input_schema": weather_schema()},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
    ])
}

#[tokio::test]
async fn version_header_and_key_are_checked() {
    let server = Server::start(MockConfig {
        auth: AuthConfig {
            anthropic_key: Some("sk-ant".into()),
            ..AuthConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let no_version = server
        .post("/v1/messages", &claude("hi"), &[("x-api-key", "sk-ant")])
        .await;
    assert_eq!(no_version.status, StatusCode::BAD_REQUEST);
    let v = no_version.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );
    for headers in [&[V][..], &[V, ("x-api-key", "wrong")][..]] {
        let r = server.post("/v1/messages", &claude("hi"), headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()["error"]["type"], "authentication_error");
    }
    let ok = server
        .post("/v1/messages", &claude("hi"), &[V, ("x-api-key", "sk-ant")])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let count = server
        .post("/v1/messages/count_tokens", &claude("hi"), &[V])
        .await;
    assert_eq!(count.status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn count_tokens_matches_messages_usage() {
    let server = Server::default().await;
    let mut req = claude("how many tokens is this prompt, roughly?");
    req["system"] = json!("you are terse");
    let usage = server.post("/v1/messages", &req, &[V]).await.json()["usage"].clone();
    let mut count_req = req.clone();
    count_req.as_object_mut().unwrap().remove("max_tokens");
    let r = server
        .post("/v1/messages/count_tokens", &count_req, &[V])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"input_tokens": usage["input_tokens"]}));
    server.stop().await;
}

#[tokio::test]
async fn cache_control_reports_cache_reads() {
    let server = Server::default().await;
    let mut req = claude("question");
    req["system"] = json!([{"type": "text", "text": "a long system prompt to cache", "cache_control": {"type": "ephemeral"}}]);
    let usage = server.post("/v1/messages", &req, &[V]).await.json()["usage"].clone();
    let cached = usage["cache_read_input_tokens"].as_u64().unwrap();
    assert_eq!(cached, 8); // ceil(29 / 4)
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    let count = server
        .post("/v1/messages/count_tokens", &req, &[V])
        .await
        .json();
    assert_eq!(
        count["input_tokens"].as_u64().unwrap(),
        usage["input_tokens"].as_u64().unwrap() + cached
    );
    server.stop().await;
}

#[tokio::test]
async fn stop_sequences_and_max_tokens() {
    let server = Server::default().await;
    let full = server
        .post("/v1/messages", &claude("tell me"), &[V])
        .await
        .json();
    let text = full["content"][0]["text"].as_str().unwrap().to_owned();
    let word = text.split(' ').nth(3).unwrap().to_owned();
    let mut req = claude("tell me");
    req["stop_sequences"] = json!(["zzz-never", word]);
    let v = server.post("/v1/messages", &req, &[V]).await.json();
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], word.as_str());
    let cut = v["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(cut) && !cut.contains(&word),
        "{cut:?} vs {text:?}"
    );

    req["stream"] = json!(true);
    let events = server.post("/v1/messages", &req, &[V]).await.sse("\n\n");
    let delta = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "stop_sequence");
    assert_eq!(delta.1["delta"]["stop_sequence"], word.as_str());

    let mut capped = claude("tell me");
    capped["max_tokens"] = json!(5);
    let v = server.post("/v1/messages", &capped, &[V]).await.json();
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"]["output_tokens"], 5);
    server.stop().await;
}

#[tokio::test]
async fn thinking_blocks_with_signatures() {
    let server = Server::default().await;
    let mut req = claude("think first");
    req["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
    let v = server.post("/v1/messages", &req, &[V]).await.json();
    assert_eq!(v["content"][0]["type"], "thinking");
    let thinking = v["content"][0]["thinking"].as_str().unwrap();
    assert!(!thinking.is_empty());
    assert!(!v["content"][0]["signature"].as_str().unwrap().is_empty());
    assert_eq!(v["content"][1]["type"], "text");
    let thought_words = thinking.split(' ').count() as u64;
    assert_eq!(v["usage"]["output_tokens"], 16 + thought_words);

    req["stream"] = json!(true);
    let events = server.post("/v1/messages", &req, &[V]).await.sse("\n\n");
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_start"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(starts[0]["index"], 0);
    assert_eq!(starts[0]["content_block"]["type"], "thinking");
    assert_eq!(starts[1]["index"], 1);
    assert_eq!(starts[1]["content_block"]["type"], "text");
    let streamed_thinking: String = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "thinking_delta")
        .map(|(_, d)| d["delta"]["thinking"].as_str().unwrap())
        .collect();
    assert_eq!(streamed_thinking, thinking);
    let sig = events
        .iter()
        .find(|(_, d)| d["delta"]["type"] == "signature_delta")
        .unwrap();
    assert_eq!(sig.1["delta"]["signature"], v["content"][0]["signature"]);
    assert_eq!(sig.1["index"], 0);
    server.stop().await;
}

#[tokio::test]
async fn parallel_tool_use_plain_and_streamed() {
    let server = Server::default().await;
    let mut req = claude("weather and time?");
    req["tools"] = tools();
    let one = server.post("/v1/messages", &req, &[V]).await.json();
    assert_eq!(one["content"].as_array().unwrap().len(), 1);
    assert_eq!(one["stop_reason"], "tool_use");

    let two = server
        .post("/v1/messages", &req, &[V, ("x-mock-parallel-tools", "2")])
        .await
        .json();
    let blocks = two["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["name"], "get_weather");
    assert_eq!(blocks[1]["name"], "get_time");
    assert_ne!(blocks[0]["id"], blocks[1]["id"]);
    assert!(blocks[0]["input"]["city"].is_string());

    let mut off = req.clone();
    off["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
    let v = server
        .post("/v1/messages", &off, &[V, ("x-mock-parallel-tools", "2")])
        .await
        .json();
    assert_eq!(v["content"].as_array().unwrap().len(), 1);

    req["stream"] = json!(true);
    let events = server
        .post("/v1/messages", &req, &[V, ("x-mock-parallel-tools", "2")])
        .await
        .sse("\n\n");
    for (index, block) in blocks.iter().enumerate() {
        let json: String = events
            .iter()
            .filter(|(_, d)| d["delta"]["type"] == "input_json_delta" && d["index"] == index)
            .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            block["input"]
        );
    }
    let stops = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_stop"))
        .count();
    assert_eq!(stops, 2);
    server.stop().await;
}

#[tokio::test]
async fn overloaded_errors_before_and_during_the_stream() {
    let server = Server::default().await;
    let r = server
        .post("/v1/messages", &claude("hi [mock status=529]"), &[V])
        .await;
    assert_eq!(r.status.as_u16(), 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    let mut req = claude("hi");
    req["stream"] = json!(true);
    let r = server
        .post(
            "/v1/messages",
            &req,
            &[V, ("x-mock-stream-error-after", "4")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = r.sse("\n\n");
    assert_eq!(events.len(), 5);
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(data["error"]["type"], "overloaded_error");
    server.stop().await;
}
