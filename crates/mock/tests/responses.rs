//! OpenAI Responses API and OpenAI bearer auth, black-box.

mod common;

use common::{Server, weather_schema};
use http::StatusCode;
use serde_json::{Value, json};
use tollgate_mock::{AuthConfig, MockConfig};

fn tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "w", "parameters": weather_schema()}])
}

#[tokio::test]
async fn plain_response_has_output_and_usage() {
    let server = Server::default().await;
    let r = server
        .post(
            "/v1/responses",
            &json!({"model": "mock-chat", "input": "hello there", "instructions": "be brief"}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "mock-chat");
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["content"][0]["type"], "output_text");
    let text = item["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 16);
    let usage = &v["usage"];
    assert_eq!(usage["output_tokens"], 16);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["input_tokens"].as_u64().unwrap() + 16
    );
    // Deterministic text for the same input.
    let again = server
        .post(
            "/v1/responses",
            &json!({"model": "mock-chat", "input": "hello there", "instructions": "be brief"}),
            &[],
        )
        .await
        .json();
    assert_eq!(again["output"][0]["content"][0]["text"], text);

    let capped = server
        .post(
            "/v1/responses",
            &json!({"model": "mock-chat", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}], "max_output_tokens": 3}),
            &[],
        )
        .await
        .json();
    assert_eq!(capped["status"], "incomplete");
    assert_eq!(capped["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(capped["usage"]["output_tokens"], 3);
    server.stop().await;
}

#[tokio::test]
async fn stream_event_sequence() {
    let server = Server::default().await;
    let r = server
        .post(
            "/v1/responses",
            &json!({"model": "mock-chat", "input": "stream please", "stream": true}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let events = r.sse("\n\n");
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert_eq!(deltas, 16);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", 16));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_deref().unwrap());
        assert_eq!(data["sequence_number"], i);
    }
    let joined: String = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("response.output_text.delta"))
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    let done = &events[events.len() - 4].1;
    assert_eq!(done["text"], joined.as_str());
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["usage"]["output_tokens"], 16);
    assert_eq!(
        completed["output"][0]["content"][0]["text"],
        joined.as_str()
    );
    // One SSE event per body frame.
    assert_eq!(r.chunks.len(), events.len());
    server.stop().await;
}

#[tokio::test]
async fn function_calls_plain_and_streamed() {
    let server = Server::default().await;
    let req = json!({"model": "mock-chat", "input": "weather in Paris?", "tools": tools()});
    let v = server.post("/v1/responses", &req, &[]).await.json();
    let call = &v["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
    assert_eq!(args["days"], 42);

    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let events = server
        .post("/v1/responses", &streamed, &[])
        .await
        .sse("\n\n");
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(names[2], "response.output_item.added");
    assert_eq!(events[2].1["item"]["type"], "function_call");
    let args_streamed: String = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    let done = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("response.function_call_arguments.done"))
        .unwrap();
    assert_eq!(done.1["arguments"], args_streamed.as_str());
    assert_eq!(serde_json::from_str::<Value>(&args_streamed).unwrap(), args);
    assert_eq!(names.last().unwrap(), &"response.completed");

    // Answering the tool result produces text; tool_choice none too.
    let answered = json!({"model": "mock-chat", "tools": tools(), "input": [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    ]});
    let v = server.post("/v1/responses", &answered, &[]).await.json();
    assert_eq!(v["output"][0]["type"], "message");
    let mut none = req.clone();
    none["tool_choice"] = json!("none");
    assert_eq!(
        server.post("/v1/responses", &none, &[]).await.json()["output"][0]["type"],
        "message"
    );
    // Parallel calls on request.
    let mut two = req.clone();
    two["tools"] = json!([tools()[0], {"type": "function", "name": "get_time", "parameters": {"type": "object"}}]);
    let v = server
        .post("/v1/responses", &two, &[("x-mock-parallel-tools", "2")])
        .await
        .json();
    assert_eq!(v["output"].as_array().unwrap().len(), 2);
    assert_eq!(v["output"][1]["name"], "get_time");
    server.stop().await;
}

#[tokio::test]
async fn openai_key_is_checked_on_every_openai_route() {
    let server = Server::start(MockConfig {
        auth: AuthConfig {
            openai_key: Some("sk-test".into()),
            ..AuthConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let body = json!({"model": "mock-chat", "input": "hi"});
    let missing = server.post("/v1/responses", &body, &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");
    let wrong = server
        .post(
            "/v1/responses",
            &body,
            &[("authorization", "Bearer sk-nope")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    assert!(!wrong.text().contains("sk-nope"));
    let ok = server
        .post(
            "/v1/responses",
            &body,
            &[("authorization", "Bearer sk-test")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let chat = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        server.post("/v1/chat/completions", &chat, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .post(
                "/v1/chat/completions",
                &chat,
                &[("authorization", "Bearer sk-test")]
            )
            .await
            .status,
        StatusCode::OK
    );
    let models = server.send(http::Method::GET, "/v1/models", "", &[]).await;
    assert_eq!(models.status, StatusCode::UNAUTHORIZED);
    // Health stays open.
    assert_eq!(
        server
            .send(http::Method::GET, "/healthz", "", &[])
            .await
            .status,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn responses_error_injection_and_validation() {
    let server = Server::default().await;
    let r = server
        .post(
            "/v1/responses",
            &json!({"model": "mock-chat", "input": "hi [mock status=429]"}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let r = server
        .post(
            "/v1/responses",
            &json!({"model": "mock-chat", "input": "hi"}),
            &[("x-mock-status", "500")],
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let r = server
        .post("/v1/responses", &json!({"input": "hi"}), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = server
        .post("/v1/responses", &json!({"model": "m", "input": []}), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}
