//! Behaviour shared by every wire format: the same prompt with tools calls
//! a tool everywhere, `--error-rate` answers in each provider's shape, and
//! latency overrides apply to the new endpoints.

mod common;

use std::time::{Duration, Instant};

use common::{Server, weather_schema};
use http::StatusCode;
use serde_json::{Value, json};
use tollgate_mock::MockConfig;

const PROMPT: &str = "What is the weather in Oslo?";

/// One request: format name, path, body, extra headers.
type FormatRequest = (
    &'static str,
    String,
    Value,
    Vec<(&'static str, &'static str)>,
);

/// One request per format, each offering the same tool.
fn requests(extra: &str) -> Vec<FormatRequest> {
    let text = format!("{PROMPT}{extra}");
    let schema = weather_schema();
    vec![
        (
            "openai",
            "/v1/chat/completions".into(),
            json!({"model": "mock-chat", "messages": [{"role": "user", "content": text}], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]}),
            vec![],
        ),
        (
            "responses",
            "/v1/responses".into(),
            json!({"model": "mock-chat", "input": text, "tools": [{"type": "function", "name": "get_weather", "parameters": schema}]}),
            vec![],
        ),
        (
            "azure",
            "/openai/deployments/gpt/chat/completions?api-version=2024-10-21".into(),
            json!({"messages": [{"role": "user", "content": text}], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]}),
            vec![],
        ),
        (
            "anthropic",
            "/v1/messages".into(),
            json!({"model": "mock-claude", "max_tokens": 256, "messages": [{"role": "user", "content": text}], "tools": [{"name": "get_weather", "input_schema": schema}]}),
            vec![("anthropic-version", "2023-06-01")],
        ),
        (
            "gemini",
            "/v1beta/models/mock-gemini:generateContent".into(),
            json!({"contents": [{"role": "user", "parts": [{"text": text}]}], "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": schema}]}]}),
            vec![],
        ),
        (
            "bedrock",
            "/model/mock-bedrock/converse".into(),
            json!({"messages": [{"role": "user", "content": [{"text": text}]}], "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": schema}}}]}}),
            vec![],
        ),
    ]
}

/// The called tool's name and arguments, in whichever shape the format uses.
fn called_tool(format: &str, v: &Value) -> (String, Value) {
    let (name, args) = match format {
        "openai" | "azure" => {
            let f = &v["choices"][0]["message"]["tool_calls"][0]["function"];
            (
                f["name"].clone(),
                serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap(),
            )
        }
        "responses" => {
            let item = &v["output"][0];
            (
                item["name"].clone(),
                serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap(),
            )
        }
        "anthropic" => (
            v["content"][0]["name"].clone(),
            v["content"][0]["input"].clone(),
        ),
        "gemini" => {
            let call = &v["candidates"][0]["content"]["parts"][0]["functionCall"];
            (call["name"].clone(), call["args"].clone())
        }
        "bedrock" => {
            let tool_use = &v["output"]["message"]["content"][0]["toolUse"];
            (tool_use["name"].clone(), tool_use["input"].clone())
        }
        _ => unreachable!(),
    };
    (name.as_str().unwrap_or_default().to_owned(), args)
}

#[tokio::test]
async fn same_prompt_calls_the_tool_in_every_format() {
    let server = Server::default().await;
    for (format, path, body, headers) in requests("") {
        let r = server.post(&path, &body, &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{format}: {}", r.text());
        let (name, args) = called_tool(format, &r.json());
        assert_eq!(name, "get_weather", "{format}");
        assert!(args["city"].is_string(), "{format}: {args}");
        assert_eq!(args["days"], 42, "{format}");
    }
    server.stop().await;
}

#[tokio::test]
async fn error_rate_answers_in_each_providers_shape() {
    let server = Server::start(MockConfig {
        error_rate: 1.0,
        error_status: 429,
        ..MockConfig::default()
    })
    .await;
    for (format, path, body, headers) in requests("") {
        let r = server.post(&path, &body, &headers).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{format}");
        let v = r.json();
        match format {
            "openai" | "responses" => assert_eq!(v["error"]["code"], "rate_limit_exceeded"),
            "azure" => assert!(v["error"]["code"].is_string()),
            "anthropic" => assert_eq!(v["error"]["type"], "rate_limit_error"),
            "gemini" => assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED"),
            "bedrock" => {
                assert_eq!(r.header("x-amzn-errortype"), "ThrottlingException");
                assert!(v["message"].is_string());
            }
            _ => unreachable!(),
        }
    }
    server.stop().await;

    // Overload: Anthropic's 529 and Bedrock's ServiceUnavailable.
    let server = Server::default().await;
    for (format, path, body, headers) in requests(" [mock status=529]") {
        let r = server.post(&path, &body, &headers).await;
        assert_eq!(r.status.as_u16(), 529, "{format}");
        if format == "anthropic" {
            assert_eq!(r.json()["error"]["type"], "overloaded_error");
        }
        if format == "bedrock" {
            assert_eq!(r.header("x-amzn-errortype"), "ServiceUnavailableException");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn latency_overrides_apply_to_new_streams() {
    let server = Server::default().await;
    let streams = [
        (
            "/v1/responses",
            json!({"model": "m", "input": "hi", "stream": true}),
        ),
        (
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        ),
        (
            "/model/m/converse-stream",
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
        ),
    ];
    for (path, body) in streams {
        let start = Instant::now();
        let r = server
            .post(
                path,
                &body,
                &[
                    ("x-mock-ttft-ms", "60"),
                    ("x-mock-tokens", "3"),
                    ("x-mock-token-delay-ms", "20"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{path}: {:?}",
            start.elapsed()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn chat_parallel_tool_calls() {
    let server = Server::default().await;
    let body = json!({"model": "mock-chat", "stream": true, "messages": [{"role": "user", "content": PROMPT}], "tools": [
        {"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ]});
    let r = server
        .post(
            "/v1/chat/completions",
            &body,
            &[("x-mock-parallel-tools", "2")],
        )
        .await;
    let frames = r.sse("\n\n");
    let mut args = [String::new(), String::new()];
    let mut names = Vec::new();
    for (_, data) in frames.iter().take(frames.len() - 1) {
        for call in data["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if let Some(name) = call["function"]["name"].as_str() {
                names.push(name.to_owned());
            }
            args[index].push_str(call["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(names, ["get_weather", "get_time"]);
    for a in &args {
        serde_json::from_str::<Value>(a).unwrap();
    }
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let v = server
        .post(
            "/v1/chat/completions",
            &plain,
            &[("x-mock-parallel-tools", "2")],
        )
        .await
        .json();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn in_band_stream_errors() {
    let server = Server::default().await;
    let headers = [
        ("x-mock-stream-error-after", "2"),
        ("x-mock-error-status", "503"),
    ];

    let r = server
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "hi", "stream": true}),
            &headers,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = r.sse("\n\n");
    assert_eq!(events.len(), 3);
    let (name, data) = &events[2];
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(data["type"], "error");
    assert_eq!(data["sequence_number"], 2);

    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let r = server
        .post(
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            &body,
            &headers,
        )
        .await;
    let events = r.sse("\r\n\r\n");
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].1["error"]["status"], "UNAVAILABLE");
    assert_eq!(events[2].1["error"]["code"], 503);
    let r = server
        .post("/v1beta/models/m:streamGenerateContent", &body, &headers)
        .await;
    let array = r.json();
    assert_eq!(array.as_array().unwrap().len(), 3);
    assert_eq!(array[2]["error"]["code"], 503);
    server.stop().await;
}
