//! Gemini generateContent / streamGenerateContent / countTokens /
//! embedContent, key checks and request rules.

mod common;

use common::{Server, weather_schema};
use http::StatusCode;
use serde_json::{Value, json};
use tollgate_mock::{AuthConfig, MockConfig};

const GENERATE: &str = "/v1beta/models/mock-gemini:generateContent";
const STREAM: &str = "/v1beta/models/mock-gemini:streamGenerateContent?alt=sse";

fn user(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

fn tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "w", "parameters": weather_schema()},
        {"name": "get_time", "parameters": {"type": "object"}}
    ]}])
}

#[tokio::test]
async fn generate_content_shape_and_usage() {
    let server = Server::default().await;
    let mut req = user("hello gemini");
    req["systemInstruction"] = json!({"parts": [{"text": "be nice"}]});
    let r = server.post(GENERATE, &req, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let candidate = &v["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(candidate["finishReason"], "STOP");
    let text = candidate["content"]["parts"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 16);
    let usage = &v["usageMetadata"];
    assert_eq!(usage["candidatesTokenCount"], 16);
    let prompt = usage["promptTokenCount"].as_u64().unwrap();
    assert_eq!(usage["totalTokenCount"].as_u64().unwrap(), prompt + 16);
    assert_eq!(v["modelVersion"], "mock-gemini");
    assert!(!v["responseId"].as_str().unwrap().is_empty());

    let count = server
        .post("/v1beta/models/mock-gemini:countTokens", &req, &[])
        .await
        .json();
    assert_eq!(count["totalTokens"].as_u64().unwrap(), prompt);
    let wrapped = server
        .post(
            "/v1beta/models/mock-gemini:countTokens",
            &json!({"generateContentRequest": req}),
            &[],
        )
        .await
        .json();
    assert_eq!(wrapped["totalTokens"].as_u64().unwrap(), prompt);

    let mut capped = user("hello gemini");
    capped["generationConfig"] = json!({"maxOutputTokens": 4});
    let v = server.post(GENERATE, &capped, &[]).await.json();
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 4);

    let mut cached = user("hello gemini");
    cached["cachedContent"] = json!("cachedContents/abc");
    let v = server.post(GENERATE, &cached, &[]).await.json();
    assert!(
        v["usageMetadata"]["cachedContentTokenCount"]
            .as_u64()
            .unwrap()
            > 0
    );
    server.stop().await;
}

#[tokio::test]
async fn stop_sequences_end_with_stop() {
    let server = Server::default().await;
    let full = server.post(GENERATE, &user("say things"), &[]).await.json();
    let text = full["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let word = text.split(' ').nth(2).unwrap().to_owned();
    let mut req = user("say things");
    req["generationConfig"] = json!({"stopSequences": [word]});
    let v = server.post(GENERATE, &req, &[]).await.json();
    let cut = v["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.starts_with(cut) && !cut.contains(&word));
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    server.stop().await;
}

#[tokio::test]
async fn sse_stream_splits_into_responses() {
    let server = Server::default().await;
    let r = server.post(STREAM, &user("stream it"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let events = r.sse("\r\n\r\n");
    assert_eq!(events.len(), 16);
    assert_eq!(r.chunks.len(), 16);
    let mut text = String::new();
    for (i, (event, chunk)) in events.iter().enumerate() {
        assert!(event.is_none());
        let candidate = &chunk["candidates"][0];
        text.push_str(candidate["content"]["parts"][0]["text"].as_str().unwrap());
        assert_eq!(chunk["modelVersion"], "mock-gemini");
        if i + 1 < events.len() {
            assert!(candidate.get("finishReason").is_none());
        } else {
            assert_eq!(candidate["finishReason"], "STOP");
            assert_eq!(chunk["usageMetadata"]["candidatesTokenCount"], 16);
        }
    }
    let plain = server.post(GENERATE, &user("stream it"), &[]).await.json();
    assert_eq!(
        plain["candidates"][0]["content"]["parts"][0]["text"],
        text.as_str()
    );

    // Without alt=sse: one JSON array, streamed element by element.
    let r = server
        .post(
            "/v1beta/models/mock-gemini:streamGenerateContent",
            &user("stream it"),
            &[],
        )
        .await;
    assert!(r.header("content-type").starts_with("application/json"));
    let array = r.json();
    assert_eq!(array.as_array().unwrap().len(), 16);
    assert_eq!(r.chunks.len(), 16);
    assert_eq!(array[15]["candidates"][0]["finishReason"], "STOP");
    server.stop().await;
}

#[tokio::test]
async fn function_calls_and_responses() {
    let server = Server::default().await;
    let mut req = user("weather in Rome?");
    req["tools"] = tools();
    let v = server.post(GENERATE, &req, &[]).await.json();
    let part = &v["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_weather");
    assert!(part["functionCall"]["args"]["city"].is_string());
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    let two = server
        .post(GENERATE, &req, &[("x-mock-parallel-tools", "2")])
        .await
        .json();
    assert_eq!(
        two["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let mut streamed = req.clone();
    streamed["toolConfig"] =
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}});
    let events = server.post(STREAM, &streamed, &[]).await.sse("\r\n\r\n");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].1["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );

    let mut none = req.clone();
    none["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let v = server.post(GENERATE, &none, &[]).await.json();
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());

    // A function response answering the call yields text.
    let mut answered = req.clone();
    answered["contents"] = json!([
        {"role": "user", "parts": [{"text": "weather in Rome?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 20}}}]}
    ]);
    let r = server.post(GENERATE, &answered, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["candidates"][0]["content"]["parts"][0]["text"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn thinking_parts_and_signature() {
    let server = Server::default().await;
    let mut req = user("think");
    req["generationConfig"] =
        json!({"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}});
    let v = server.post(GENERATE, &req, &[]).await.json();
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts[0]["thought"], true);
    assert!(parts[1].get("thought").is_none());
    assert!(!parts[1]["thoughtSignature"].as_str().unwrap().is_empty());
    let thoughts = v["usageMetadata"]["thoughtsTokenCount"].as_u64().unwrap();
    assert_eq!(
        thoughts,
        parts[0]["text"].as_str().unwrap().split(' ').count() as u64
    );
    let usage = &v["usageMetadata"];
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap() + 16 + thoughts
    );
    req["generationConfig"]["thinkingConfig"] = json!({"thinkingBudget": 0});
    let v = server.post(GENERATE, &req, &[]).await.json();
    assert!(v["usageMetadata"].get("thoughtsTokenCount").is_none());
    server.stop().await;
}

#[tokio::test]
async fn request_rules_are_enforced() {
    let server = Server::default().await;
    let cases = [
        json!({"contents": []}),
        json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}),
        json!({"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "user", "parts": [{"text": "b"}]}]}),
        json!({"contents": [{"role": "user", "parts": []}]}),
        json!({"contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "b"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
        ]}),
        json!({"contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"name": "g", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
        ]}),
    ];
    for case in cases {
        let r = server.post(GENERATE, &case, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{case}");
        let v = r.json();
        assert_eq!(v["error"]["code"], 400);
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    }
    server.stop().await;
}

#[tokio::test]
async fn api_key_header_or_query() {
    let server = Server::start(MockConfig {
        auth: AuthConfig {
            gemini_key: Some("AIza-test".into()),
            ..AuthConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let missing = server.post(GENERATE, &user("hi"), &[]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert_eq!(missing.json()["error"]["status"], "PERMISSION_DENIED");
    let wrong = server
        .post(GENERATE, &user("hi"), &[("x-goog-api-key", "bad")])
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    let v = wrong.json();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");
    let ok = server
        .post(GENERATE, &user("hi"), &[("x-goog-api-key", "AIza-test")])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let query = server
        .post(&format!("{STREAM}&key=AIza-test"), &user("hi"), &[])
        .await;
    assert_eq!(query.status, StatusCode::OK);
    let bad_query = server
        .post(&format!("{GENERATE}?key=nope"), &user("hi"), &[])
        .await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn errors_embeddings_and_any_model() {
    let server = Server::default().await;
    let r = server
        .post(GENERATE, &user("hi [mock status=429]"), &[])
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let v = r.json();
    assert_eq!(v["error"]["code"], 429);
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let r = server
        .post(STREAM, &user("hi"), &[("x-mock-status", "503")])
        .await;
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");

    let r = server
        .post(
            "/v1beta/models/gemini-2.5-pro:generateContent",
            &user("hi"),
            &[],
        )
        .await;
    assert_eq!(r.json()["modelVersion"], "gemini-2.5-pro");

    let e = server
        .post(
            "/v1beta/models/text-embedding-004:embedContent",
            &json!({"content": {"parts": [{"text": "embed me"}]}, "outputDimensionality": 16}),
            &[],
        )
        .await
        .json();
    assert_eq!(e["embedding"]["values"].as_array().unwrap().len(), 16);
    let unknown = server
        .post("/v1beta/models/m:frobnicate", &user("hi"), &[])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    server.stop().await;
}
