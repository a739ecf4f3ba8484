//! Black-box tests: start `serve` on 127.0.0.1:0 and talk HTTP to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_mock::{MockConfig, serve};

/// Upper bound for any single exchange, so a bug cannot hang the suite.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: MockConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::new(config), async move {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            shutdown: Some(tx),
            task,
        }
    }

    async fn default() -> Self {
        Self::start(MockConfig::default()).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> http::Response<Incoming> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        // Anthropic requires the version header; tests that omit it say so with "".
        if path.starts_with("/v1/messages")
            && !headers.iter().any(|(n, _)| *n == "anthropic-version")
        {
            req = req.header("anthropic-version", "2023-06-01");
        }
        for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.client.request(req))
            .await
            .expect("response timed out")
            .expect("request failed")
    }

    /// POSTs JSON and reads the whole answer.
    async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let res = self
            .send(Method::POST, path, body.to_string(), headers)
            .await;
        Reply::read(res).await
    }

    async fn get(&self, path: &str) -> Reply {
        Reply::read(self.send(Method::GET, path, Bytes::new(), &[]).await).await
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    async fn read(res: http::Response<Incoming>) -> Self {
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(EXCHANGE_TIMEOUT, body.collect())
            .await
            .expect("body timed out")
            .expect("body failed")
            .to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// OpenAI SSE: the payload of each `data:` frame.
    fn data_frames(&self) -> Vec<String> {
        sse_frames(self.text())
            .into_iter()
            .map(|(event, data)| {
                assert_eq!(event, None, "OpenAI streams have no event lines");
                data
            })
            .collect()
    }
}

/// Splits an SSE body into (event, data) frames, checking the framing.
fn sse_frames(text: &str) -> Vec<(Option<String>, String)> {
    assert!(
        text.ends_with("\n\n"),
        "stream must end with a blank line: {text:?}"
    );
    text.trim_end_matches('\n')
        .split("\n\n")
        .map(|frame| {
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (event, data.expect("frame without data"))
        })
        .collect()
}

fn chat(content: &str) -> Value {
    json!({"model": "mock-chat", "messages": [{"role": "user", "content": content}]})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"}
            },
            "required": ["city"]
        }}}
    ])
}

#[tokio::test]
async fn chat_non_stream_has_openai_shape() {
    let server = Server::default().await;
    let reply = server
        .post("/v1/chat/completions", &chat("Hello there"), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    let v = reply.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "mock-chat");
    assert!(v["system_fingerprint"].is_string());
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["refusal"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 16);
    // "Hello there" = 11 chars -> 3 tokens, + 3 for the message.
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["usage"]["total_tokens"], 22);
    server.stop().await;
}

#[tokio::test]
async fn chat_stream_chunk_sequence() {
    let server = Server::default().await;
    let req = with(
        chat("stream please"),
        json!({"stream": true, "max_tokens": 3}),
    );
    let reply = server.post("/v1/chat/completions", &req, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let frames = reply.data_frames();
    // role, 3 tokens, finish, [DONE]
    assert_eq!(frames.len(), 6, "{frames:#?}");
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..5]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "mock-chat");
        assert!(chunk["system_fingerprint"].is_string());
        assert!(
            chunk.get("usage").is_none(),
            "no usage without include_usage"
        );
        assert_eq!(chunk["choices"][0]["index"], 0);
        assert_eq!(chunk["choices"][0]["logprobs"], Value::Null);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text.split(' ').count(), 3);
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");

    // The exact bytes of the first frame, as OpenAI sends them.
    let first = format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":\"mock-chat\",\"system_fingerprint\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
        chunks[0]["created"], chunks[0]["system_fingerprint"]
    );
    assert!(reply.text().starts_with(&first), "{}", reply.text());

    // Same text as the non-streamed answer.
    let plain = server
        .post(
            "/v1/chat/completions",
            &with(chat("stream please"), json!({"max_tokens": 3})),
            &[],
        )
        .await
        .json();
    assert_eq!(plain["choices"][0]["message"]["content"], text);
    server.stop().await;
}

#[tokio::test]
async fn chat_stream_include_usage() {
    let server = Server::default().await;
    let req = with(
        chat("count me"),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let frames = server
        .post("/v1/chat/completions", &req, &[])
        .await
        .data_frames();
    // role, 16 tokens, finish, usage, [DONE]
    assert_eq!(frames.len(), 20);
    assert_eq!(frames[19], "[DONE]");
    let chunks: Vec<Value> = frames[..19]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    for chunk in &chunks[..18] {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(chunks[17]["choices"][0]["finish_reason"], "stop");
    let usage_chunk = &chunks[18];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 16);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 5);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 21);
    server.stop().await;
}

#[tokio::test]
async fn chat_is_deterministic() {
    let server = Server::default().await;
    let content = |v: Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let a1 = content(
        server
            .post("/v1/chat/completions", &chat("alpha"), &[])
            .await
            .json(),
    );
    let a2 = content(
        server
            .post("/v1/chat/completions", &chat("alpha"), &[])
            .await
            .json(),
    );
    let b = content(
        server
            .post("/v1/chat/completions", &chat("beta"), &[])
            .await
            .json(),
    );
    let other_model = content(
        server
            .post(
                "/v1/chat/completions",
                &with(chat("alpha"), json!({"model": "other"})),
                &[],
            )
            .await
            .json(),
    );
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    assert_ne!(a1, other_model);
    server.stop().await;
}

#[tokio::test]
async fn max_tokens_caps_with_length() {
    let server = Server::default().await;
    for field in ["max_tokens", "max_completion_tokens"] {
        let v = server
            .post(
                "/v1/chat/completions",
                &with(chat("short"), json!({ field: 4 })),
                &[],
            )
            .await
            .json();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 4);
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content.split(' ').count(), 4);
    }
    // A cap at or above the output length is not a truncation.
    let v = server
        .post(
            "/v1/chat/completions",
            &with(chat("short"), json!({"max_tokens": 16})),
            &[],
        )
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    server.stop().await;
}

#[tokio::test]
async fn tool_calls_non_stream_and_stream() {
    let server = Server::default().await;
    let req = with(
        chat("weather in Paris?"),
        json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    );
    let v = server.post("/v1/chat/completions", &req, &[]).await.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
    assert_eq!(args["days"], 42);
    assert_eq!(args["metric"], true);

    // Streamed: opening delta with id/name, then argument fragments.
    let frames = server
        .post(
            "/v1/chat/completions",
            &with(req.clone(), json!({"stream": true})),
            &[],
        )
        .await
        .data_frames();
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let opening = &chunks[0]["choices"][0]["delta"];
    assert_eq!(opening["role"], "assistant");
    assert_eq!(opening["tool_calls"][0]["index"], 0);
    assert!(
        opening["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("call_")
    );
    assert_eq!(opening["tool_calls"][0]["type"], "function");
    assert_eq!(opening["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(opening["tool_calls"][0]["function"]["arguments"], "");
    let fragments = &chunks[1..chunks.len() - 1];
    assert!(fragments.len() > 1);
    let streamed: String = fragments
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap(), args);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Default choice is the first tool; "none" and a tool answer give text.
    let v = server
        .post(
            "/v1/chat/completions",
            &with(chat("x"), json!({"tools": weather_tools()})),
            &[],
        )
        .await
        .json();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    let v = server
        .post(
            "/v1/chat/completions",
            &with(
                chat("x"),
                json!({"tools": weather_tools(), "tool_choice": "none"}),
            ),
            &[],
        )
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let after_tool = json!({
        "model": "mock-chat",
        "tools": weather_tools(),
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]
    });
    let v = server
        .post("/v1/chat/completions", &after_tool, &[])
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["content"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let server = Server::default().await;
    let float = server
        .post(
            "/v1/embeddings",
            &json!({"model": "mock-embed", "input": ["first text", "second text"], "encoding_format": "float", "dimensions": 64}),
            &[],
        )
        .await
        .json();
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], "mock-embed");
    assert_eq!(float["data"].as_array().unwrap().len(), 2);
    assert_eq!(float["usage"]["prompt_tokens"], 6);
    assert_eq!(float["usage"]["total_tokens"], 6);
    let vectors: Vec<Vec<f32>> = float["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    for v in &vectors {
        assert_eq!(v.len(), 64);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    assert_ne!(vectors[0], vectors[1]);

    // base64 is the default of the official SDK: little-endian f32 bytes.
    let b64 = server
        .post(
            "/v1/embeddings",
            &json!({"model": "mock-embed", "input": "first text", "encoding_format": "base64", "dimensions": 64}),
            &[],
        )
        .await
        .json();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 64 * 4);
    let decoded: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, vectors[0]);

    // Default dimension and token-array input.
    let tokens = server
        .post(
            "/v1/embeddings",
            &json!({"model": "mock-embed", "input": [[1, 2, 3], [4]]}),
            &[],
        )
        .await
        .json();
    assert_eq!(
        tokens["data"][0]["embedding"].as_array().unwrap().len(),
        256
    );
    assert_eq!(tokens["usage"]["prompt_tokens"], 4);

    let bad = server
        .post(
            "/v1/embeddings",
            &json!({"model": "mock-embed", "input": "x", "encoding_format": "hex"}),
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["param"], "encoding_format");
    server.stop().await;
}

#[tokio::test]
async fn models_health_and_routing() {
    let server = Server::default().await;
    let models = server.get("/v1/models").await;
    assert_eq!(models.status, StatusCode::OK);
    let v = models.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "mock-chat",
            "mock-embed",
            "mock-claude",
            "mock-gemini",
            "mock-bedrock"
        ]
    );
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "tollgate-mock");
    assert!(v["data"][0]["created"].is_u64());

    assert_eq!(
        server.get("/v1/models/mock-embed").await.json()["id"],
        "mock-embed"
    );
    let missing = server.get("/v1/models/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");

    let health = server.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), "ok");

    let unknown = server.get("/v1/unknown").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["type"], "invalid_request_error");

    let wrong = Reply::read(
        server
            .send(Method::GET, "/v1/chat/completions", Bytes::new(), &[])
            .await,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers["allow"], "POST");
    assert!(wrong.json()["error"]["message"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_rejected() {
    let server = Server::default().await;
    let bad = Reply::read(
        server
            .send(Method::POST, "/v1/chat/completions", "{not json", &[])
            .await,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let v = bad.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], Value::Null);
    assert_eq!(v["error"]["code"], Value::Null);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("parse the JSON")
    );

    let no_model = server
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "x"}]}),
            &[],
        )
        .await;
    assert_eq!(no_model.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_model.json()["error"]["param"], "model");
    let no_messages = server
        .post("/v1/chat/completions", &json!({"model": "m"}), &[])
        .await;
    assert_eq!(no_messages.json()["error"]["param"], "messages");
    let n2 = server
        .post(
            "/v1/chat/completions",
            &with(chat("x"), json!({"n": 2})),
            &[],
        )
        .await;
    assert_eq!(n2.status, StatusCode::BAD_REQUEST);
    assert_eq!(n2.json()["error"]["param"], "n");
    let bad_override = server
        .post(
            "/v1/chat/completions",
            &chat("x"),
            &[("x-mock-ttft-ms", "soon")],
        )
        .await;
    assert_eq!(bad_override.status, StatusCode::BAD_REQUEST);

    let anthropic = server
        .post(
            "/v1/messages",
            &json!({"model": "mock-claude", "messages": [{"role": "user", "content": "x"}]}),
            &[],
        )
        .await;
    assert_eq!(anthropic.status, StatusCode::BAD_REQUEST);
    let v = anthropic.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
    server.stop().await;
}

fn claude(content: &str) -> Value {
    json!({"model": "mock-claude", "max_tokens": 1024, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn anthropic_non_stream() {
    let server = Server::default().await;
    let req = with(claude("Hi Claude"), json!({"system": "be brief"}));
    let reply = server.post("/v1/messages", &req, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let v = reply.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "mock-claude");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(
        v["content"][0]["text"].as_str().unwrap().split(' ').count(),
        16
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    // ceil((8 + 9) / 4) + 3
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 8, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 16})
    );
    assert_eq!(
        server.post("/v1/messages", &req, &[]).await.json()["content"],
        v["content"]
    );

    let capped = server
        .post(
            "/v1/messages",
            &with(claude("Hi"), json!({"max_tokens": 2})),
            &[],
        )
        .await
        .json();
    assert_eq!(capped["stop_reason"], "max_tokens");
    assert_eq!(capped["usage"]["output_tokens"], 2);
    server.stop().await;
}

#[tokio::test]
async fn anthropic_stream_event_order() {
    let server = Server::default().await;
    let req = with(claude("stream it [mock tokens=3]"), json!({"stream": true}));
    let reply = server.post("/v1/messages", &req, &[]).await;
    assert_eq!(
        reply.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let frames = sse_frames(reply.text());
    let names: Vec<&str> = frames.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = frames
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (name, d) in names.iter().zip(&data) {
        assert_eq!(d["type"], *name);
    }
    let start = &data[0]["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = data[3..6]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(data[6]["index"], 0);
    assert_eq!(
        data[7]["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(data[7]["usage"], json!({"output_tokens": 3}));

    let plain = server
        .post("/v1/messages", &claude("stream it [mock tokens=3]"), &[])
        .await
        .json();
    assert_eq!(plain["content"][0]["text"], text);
    server.stop().await;
}

#[tokio::test]
async fn anthropic_tool_use() {
    let server = Server::default().await;
    let tools = json!([{"name": "lookup", "description": "d", "input_schema": {
        "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "number"}}, "required": ["query"]
    }}]);
    let req = with(claude("find it"), json!({"tools": tools}));
    let v = server.post("/v1/messages", &req, &[]).await.json();
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "lookup");
    assert!(block["input"]["query"].is_string());
    assert_eq!(block["input"]["limit"], 42);

    let reply = server
        .post(
            "/v1/messages",
            &with(req.clone(), json!({"stream": true})),
            &[],
        )
        .await;
    let frames = sse_frames(reply.text());
    let data: Vec<Value> = frames
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data[1]["content_block"]["type"], "tool_use");
    assert_eq!(data[1]["content_block"]["name"], "lookup");
    assert_eq!(data[1]["content_block"]["input"], json!({}));
    let partial: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        block["input"]
    );
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    // After a tool_result the model answers with text.
    let after = json!({"model": "mock-claude", "max_tokens": 100, "tools": tools, "messages": [
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"}]}
    ]});
    let v = server.post("/v1/messages", &after, &[]).await.json();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["type"], "text");
    server.stop().await;
}

#[tokio::test]
async fn error_injection_via_header_and_directive() {
    let server = Server::default().await;
    let limited = server
        .post(
            "/v1/chat/completions",
            &chat("hi"),
            &[("x-mock-status", "429")],
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "1");
    let v = limited.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"].as_object().unwrap().contains_key("param"));
    assert!(v["error"].as_object().unwrap().contains_key("type"));

    let directive = server
        .post(
            "/v1/chat/completions",
            &chat("please fail [mock status=503]"),
            &[],
        )
        .await;
    assert_eq!(directive.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(directive.json()["error"]["type"], "server_error");

    // The directive beats the header.
    let both = server
        .post(
            "/v1/chat/completions",
            &chat("[mock status=200]"),
            &[("x-mock-status", "500")],
        )
        .await;
    assert_eq!(both.status, StatusCode::OK);

    let anthropic = server
        .post("/v1/messages", &claude("[mock status=529]"), &[])
        .await;
    assert_eq!(anthropic.status.as_u16(), 529);
    let v = anthropic.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    let anthropic = server
        .post("/v1/messages", &claude("x"), &[("x-mock-status", "429")])
        .await;
    assert_eq!(anthropic.headers["retry-after"], "1");
    assert_eq!(anthropic.json()["error"]["type"], "rate_limit_error");

    // Only the last user message carries directives.
    let earlier = json!({"model": "m", "messages": [
        {"role": "user", "content": "[mock status=500]"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "fine now"}
    ]});
    assert_eq!(
        server
            .post("/v1/chat/completions", &earlier, &[])
            .await
            .status,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn error_rate_is_deterministic_with_seed() {
    let server = Server::start(MockConfig {
        error_rate: 0.5,
        error_status: 503,
        seed: Some(42),
        ..MockConfig::default()
    })
    .await;
    let mut failures = 0;
    for i in 0..20 {
        let req = chat(&format!("request number {i}"));
        let first = server.post("/v1/chat/completions", &req, &[]).await.status;
        let again = server.post("/v1/chat/completions", &req, &[]).await.status;
        assert_eq!(first, again, "same body, same draw");
        assert!(first == StatusCode::OK || first == StatusCode::SERVICE_UNAVAILABLE);
        failures += usize::from(first == StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        (1..20).contains(&failures),
        "{failures} of 20 failed at rate 0.5"
    );
    server.stop().await;

    let always = Server::start(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let reply = always
        .post("/v1/embeddings", &json!({"model": "e", "input": "x"}), &[])
        .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["error"]["type"], "server_error");
    always.stop().await;
}

#[tokio::test]
async fn ttft_and_header_delay_are_honoured() {
    let server = Server::default().await;
    let req = with(
        chat("slow [mock ttft_ms=200 tokens=2]"),
        json!({"stream": true}),
    );
    let started = Instant::now();
    let res = server
        .send(
            Method::POST,
            "/v1/chat/completions",
            req.to_string(),
            &[("x-mock-header-delay-ms", "100")],
        )
        .await;
    let headers_at = started.elapsed();
    let mut body = res.into_body();
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first_at = started.elapsed();
    assert!(first.into_data().unwrap().starts_with(b"data: "));
    assert!(
        headers_at >= Duration::from_millis(100),
        "headers after {headers_at:?}"
    );
    assert!(
        first_at >= Duration::from_millis(300),
        "first chunk after {first_at:?}"
    );
    assert!(
        first_at < Duration::from_secs(3),
        "first chunk after {first_at:?}"
    );

    // Token delay spaces chunks; non-streamed answers wait for all tokens.
    let started = Instant::now();
    let reply = server
        .post(
            "/v1/chat/completions",
            &chat("x [mock tokens=4 token_delay_ms=50]"),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    server.stop().await;
}

#[tokio::test]
async fn disconnect_after_truncates_stream() {
    let server = Server::default().await;
    let req = with(
        chat("cut me [mock disconnect_after=3]"),
        json!({"stream": true}),
    );
    let res = server
        .send(Method::POST, "/v1/chat/completions", req.to_string(), &[])
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut received = Vec::new();
    let mut failed = false;
    for _ in 0..100 {
        match tokio::time::timeout(EXCHANGE_TIMEOUT, body.frame())
            .await
            .unwrap()
        {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
            Some(Err(_)) => {
                failed = true;
                break;
            }
            None => break,
        }
    }
    assert!(failed, "the stream must end with an error, not cleanly");
    let text = String::from_utf8(received).unwrap();
    assert_eq!(text.matches("data: ").count(), 3, "{text}");
    assert!(!text.contains("[DONE]"));

    // Non-streamed answers are cut too.
    let res = server
        .send(
            Method::POST,
            "/v1/chat/completions",
            chat("x").to_string(),
            &[("x-mock-disconnect-after", "0")],
        )
        .await;
    assert!(
        tokio::time::timeout(EXCHANGE_TIMEOUT, res.into_body().collect())
            .await
            .unwrap()
            .is_err()
    );

    // The server keeps serving.
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let server = Server::default().await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::post(format!("{}/v1/chat/completions", server.base))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            with(chat("h2"), json!({"stream": true})).to_string(),
        )))
        .unwrap();
    let res = tokio::time::timeout(EXCHANGE_TIMEOUT, client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let reply = Reply::read(res).await;
    assert_eq!(reply.data_frames().last().unwrap(), "[DONE]");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_streams() {
    let server = Server::default().await;
    let req = with(
        chat("drain [mock tokens=5 token_delay_ms=40]"),
        json!({"stream": true}),
    );
    let res = server
        .send(Method::POST, "/v1/chat/completions", req.to_string(), &[])
        .await;
    let Server { shutdown, task, .. } = server;
    shutdown.unwrap().send(()).unwrap();
    let reply = Reply::read(res).await;
    assert_eq!(reply.data_frames().last().unwrap(), "[DONE]");
    tokio::time::timeout(EXCHANGE_TIMEOUT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
