//! Prompt management end to end (`AIRoute.spec.prompts`): template versions
//! chosen by `model@version` or header, variables from the header and the
//! body (which never reaches the provider), decorators, and context fetched
//! from a local HTTP server (cap, timeout, cache, required or optional).
//!
//! Two upstreams: the real mock, whose `echo=1` answer repeats the last
//! user message (an appended decorator is that message) and whose
//! `usage.prompt_tokens` counts everything it received; and a capturing
//! OpenAI-shaped provider that keeps every body it is sent, to check the
//! exact messages and that `prompt_variables` is gone.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Harness, json_body, metric_sum, sse_events};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A tiny HTTP server on loopback: `answer` maps each request (path, body)
/// to a status, body and delay; every request is counted by path and its
/// body kept.
#[derive(Clone, Default)]
struct Server {
    hits: Arc<Mutex<HashMap<String, usize>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

type Answer = (u16, String, Duration);

/// What a server answers to the `n`th request (from 1) for a path.
type Answerer = fn(&str, usize) -> Answer;

impl Server {
    async fn start(answer: Answerer) -> (Server, SocketAddr) {
        let server = Server::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = server.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                let path = request.uri().path().to_string();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let hit = {
                                    let mut hits = state.hits.lock().unwrap();
                                    let hit = hits.entry(path.clone()).or_default();
                                    *hit += 1;
                                    *hit
                                };
                                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                                    state.bodies.lock().unwrap().push(value);
                                }
                                let (status, text, delay) = answer(&path, hit);
                                tokio::time::sleep(delay).await;
                                Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "text/plain")
                                        .body(Full::new(Bytes::from(text)))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        (server, addr)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn last_body(&self) -> Value {
        self.bodies
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn bodies(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

const POLICY: &str = "POLICY: refunds within 30 days, never over 500 EUR.";

fn context_answer(path: &str, hit: usize) -> Answer {
    match path {
        "/policy.txt" => (200, POLICY.into(), Duration::ZERO),
        "/counter.txt" => (200, format!("edition {hit}"), Duration::ZERO),
        "/flaky.txt" if hit == 1 => (200, "flaky edition 1".into(), Duration::ZERO),
        "/flaky.txt" => (503, "down".into(), Duration::ZERO),
        "/big.txt" => (200, "x".repeat(2_000), Duration::ZERO),
        "/slow.txt" => (200, "late".into(), Duration::from_secs(3)),
        _ => (404, "no such file".into(), Duration::ZERO),
    }
}

fn provider_answer(_: &str, _: usize) -> Answer {
    let body = json!({"id": "chatcmpl-capture", "object": "chat.completion", "created": 0,
        "model": "capture-chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "captured"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
    (200, body.to_string(), Duration::ZERO)
}

const GATEWAY: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys: [{secretRef: {name: keys, key: k}, principal: {user: tester, team: qa}}]
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k: "{key}"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock}
spec: {type: Mock, endpoint: "{mock}/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: capture}
spec: {type: Mock, endpoint: "http://{capture}/v1"}
"#;

/// The support bot's prompts: two versions, a default, two decorators.
const SUPPORT_PROMPTS: &str = r#"
    templates:
    - version: v3
      messages:
      - {role: system, content: "You are {{ product }} support. Answer in {{ language | default('English') }}."}
      variables: {product: Acme}
    - version: v2
      messages:
      - {role: system, content: "Legacy {{ product }} prompt for {{ customer }}."}
      variables: {product: Acme}
    defaultVersion: v3
    decorators:
    - {position: Prepend, role: system, content: "Caller {{ principal.user }} (team {{ principal.team }})."}
    - {position: Append, role: user, content: "Reply briefly."}
"#;

fn route(name: &str, provider: &str, model: &str, prompts: Option<&str>) -> String {
    let prompts = prompts.map_or(String::new(), |p| format!("  prompts:{p}"));
    format!(
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [{name}]\n  backends: [{{providerRef: {{name: {provider}}}, model: {model}}}]\n{prompts}"
    )
}

fn context(sources: &str) -> String {
    format!("\n    context:\n{sources}")
}

struct Setup {
    h: Harness,
    files: Server,
    capture: Server,
    files_addr: SocketAddr,
    capture_addr: SocketAddr,
}

fn manifests(files: SocketAddr, support: &str) -> String {
    let source = |path: &str, extra: &str| {
        format!("    - {{url: \"http://{files}{path}\", allowLoopback: true{extra}}}\n")
    };
    let mut text = GATEWAY.to_string();
    text += &route("support-bot", "capture", "capture-chat", Some(support));
    text += &route("plain", "capture", "capture-chat", None);
    text += &route("mock-plain", "mock", "mock-chat", None);
    text += &route(
        "echo-bot",
        "mock",
        "mock-chat",
        Some(
            "\n    decorators:\n    - {position: Append, role: user, content: \"{{ greeting }} from {{ principal.user }} of {{ principal.team }} [mock echo=1]\"}\n",
        ),
    );
    text += &route(
        "ctx-mock",
        "mock",
        "mock-chat",
        Some(&context(&source("/policy.txt", ""))),
    );
    text += &route(
        "ctx",
        "capture",
        "capture-chat",
        Some(&format!(
            "\n    templates:\n    - version: v1\n      messages: [{{role: system, content: \"You are a refund bot.\"}}]\n    defaultVersion: v1{}",
            context(&source("/policy.txt", ", cacheFor: 60s"))
        )),
    );
    text += &route(
        "ctx-optional",
        "capture",
        "capture-chat",
        Some(&context(&format!(
            "{}{}",
            source("/gone.txt", ", required: false"),
            source("/policy.txt", ", role: user")
        ))),
    );
    text += &route(
        "ctx-required",
        "capture",
        "capture-chat",
        Some(&context(&source("/gone.txt", ""))),
    );
    text += &route(
        "ctx-loopback-refused",
        "capture",
        "capture-chat",
        Some(&format!(
            "\n    context:\n    - {{url: \"http://{files}/policy.txt\"}}\n"
        )),
    );
    text += &route(
        "ctx-big",
        "capture",
        "capture-chat",
        Some(&context(&source("/big.txt", ", maxBytes: 1000"))),
    );
    text += &route(
        "ctx-expiring",
        "capture",
        "capture-chat",
        Some(&context(&format!(
            "{}{}",
            source("/counter.txt", ", cacheFor: 200ms"),
            source("/flaky.txt", ", cacheFor: 200ms")
        ))),
    );
    text += &route(
        "ctx-slow",
        "capture",
        "capture-chat",
        Some(&context(&source("/slow.txt", ", timeout: 300ms"))),
    );
    text
}

async fn setup() -> Setup {
    let (files, files_addr) = Server::start(context_answer).await;
    let (capture, capture_addr) = Server::start(provider_answer).await;
    let text =
        manifests(files_addr, SUPPORT_PROMPTS).replace("{capture}", &capture_addr.to_string());
    let h = Harness::start(&text, &[]).await;
    Setup {
        h,
        files,
        capture,
        files_addr,
        capture_addr,
    }
}

impl Setup {
    fn reload(&self, support: &str) {
        self.h.reload(
            &manifests(self.files_addr, support)
                .replace("{capture}", &self.capture_addr.to_string()),
        );
    }
}

async fn chat(h: &Harness, body: Value) -> (u16, Value) {
    chat_with(h, body, &[]).await
}

async fn chat_with(h: &Harness, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = h.post("/v1/chat/completions").json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    json_body(request.send().await.unwrap()).await
}

async fn messages_api(h: &Harness, body: Value) -> (u16, Value) {
    json_body(
        h.post("/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// (role, text) of every message the capture provider last received.
fn sent(capture: &Server) -> Vec<(String, String)> {
    let body = capture.last_body();
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {body}"))
        .iter()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
                other => other.to_string(),
            };
            (m["role"].as_str().unwrap_or_default().to_string(), text)
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn renders(h: &Harness, version: &str, outcome: &str) -> f64 {
    metric_sum(
        &h.metrics(),
        &format!("route=\"default/support-bot\",version=\"{version}\",outcome=\"{outcome}\""),
    )
}

#[tokio::test]
async fn versions_come_from_the_model_suffix_the_header_or_the_default() {
    let s = setup().await;
    let h = &s.h;
    let caller = "Caller tester (team qa).";
    // No version named: the default (v3), decorators around the client's.
    let (status, body) = chat(
        h,
        json!({"model": "support-bot", "messages": user("Where is my order?")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        sent(&s.capture),
        pairs(&[
            ("system", caller),
            ("system", "You are Acme support. Answer in English."),
            ("user", "Where is my order?"),
            ("user", "Reply briefly."),
        ])
    );
    assert_eq!(s.capture.last_body()["model"], "capture-chat");

    // model@v2, with its required variable in the body.
    let (status, body) = chat(
        h,
        json!({"model": "support-bot@v2", "messages": user("Hi"), "prompt_variables": {"customer": "Initech"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sent(&s.capture)[1].1, "Legacy Acme prompt for Initech.");
    assert_eq!(s.capture.last_body()["model"], "capture-chat");

    // The header, with the variables in a header too (overriding defaults).
    let (status, body) = chat_with(
        h,
        json!({"model": "support-bot", "messages": user("Hi")}),
        &[
            ("x-tollgate-prompt-version", "v2"),
            (
                "x-tollgate-prompt-variables",
                r#"{"customer": "Globex", "product": "Zeta"}"#,
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sent(&s.capture)[1].1, "Legacy Zeta prompt for Globex.");
    assert_eq!(renders(h, "v3", "ok"), 1.0);
    assert_eq!(renders(h, "v2", "ok"), 2.0);

    // A hot reload changes the template for the next request.
    s.reload(&SUPPORT_PROMPTS.replace(
        "You are {{ product }} support.",
        "You are {{ product }} support, v3.1.",
    ));
    let (status, _) = chat(h, json!({"model": "support-bot", "messages": user("Hi")})).await;
    assert_eq!(status, 200);
    assert_eq!(
        sent(&s.capture)[1].1,
        "You are Acme support, v3.1. Answer in English."
    );
}

#[tokio::test]
async fn unknown_versions_and_missing_variables_are_400s_before_any_upstream_call() {
    let s = setup().await;
    let h = &s.h;
    let (status, body) = chat(
        h,
        json!({"model": "support-bot@v9", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "prompt_version_not_found");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"v9\"") && message.contains("v3, v2"),
        "{message}"
    );

    let (status, body) = chat_with(
        h,
        json!({"model": "support-bot", "messages": user("Hi")}),
        &[("x-tollgate-prompt-version", "v1")],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("prompt_version_not_found"))
    );

    let (status, body) = chat(
        h,
        json!({"model": "support-bot@v2", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "prompt_variable_missing");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"customer\""), "{message}");

    // The same in Anthropic's error shape.
    let (status, body) = messages_api(
        h,
        json!({"model": "support-bot@v2", "max_tokens": 20, "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"customer\"")
    );

    // Variables must be scalars; principal is the gateway's.
    let (status, body) = chat(
        h,
        json!({"model": "support-bot", "messages": user("Hi"), "prompt_variables": {"principal": "root"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("prompt_variables_invalid"))
    );

    // A route without prompts has no versions: the name is just unknown.
    let (status, body) = chat(h, json!({"model": "plain@v3", "messages": user("Hi")})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(s.capture.bodies(), 0, "nothing went upstream");
    assert_eq!(renders(h, "", "version_not_found"), 2.0);
    assert_eq!(renders(h, "v2", "variable_missing"), 2.0);
}

#[tokio::test]
async fn prompt_variables_never_reach_the_provider_from_either_api() {
    let s = setup().await;
    let h = &s.h;
    let (status, body) = chat(
        h,
        json!({"model": "support-bot", "messages": user("Hi"), "prompt_variables": {"language": "German"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent_body = s.capture.last_body();
    assert!(sent_body.get("prompt_variables").is_none(), "{sent_body}");
    assert_eq!(
        sent(&s.capture)[1].1,
        "You are Acme support. Answer in German."
    );

    let (status, body) = messages_api(
        h,
        json!({"model": "support-bot@v2", "max_tokens": 20, "system": "Be kind.",
            "messages": user("Hallo"), "prompt_variables": {"customer": "Umbrella", "product": "Zeta"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "captured");
    let sent_body = s.capture.last_body();
    assert!(sent_body.get("prompt_variables").is_none(), "{sent_body}");
    assert_eq!(
        sent(&s.capture),
        pairs(&[
            ("system", "Caller tester (team qa)."),
            ("system", "Legacy Zeta prompt for Umbrella."),
            ("system", "Be kind."),
            ("user", "Hallo"),
            ("user", "Reply briefly."),
        ])
    );

    // A route without prompts is the byte passthrough: nothing is removed.
    let (status, _) = chat(
        h,
        json!({"model": "plain", "messages": user("Hi"), "prompt_variables": {"x": 1}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(s.capture.last_body()["prompt_variables"], json!({"x": 1}));
}

#[tokio::test]
async fn the_real_mock_echoes_a_rendered_decorator_to_both_apis_and_streams() {
    let s = setup().await;
    let h = &s.h;
    let expected = "Hola from tester of qa";
    let (status, body) = chat(
        h,
        json!({"model": "echo-bot", "messages": user("Hi"), "prompt_variables": {"greeting": "Hola"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], expected);

    let (status, body) = messages_api(
        h,
        json!({"model": "echo-bot", "max_tokens": 50, "messages": user("Hi"),
            "prompt_variables": {"greeting": "Hola"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], expected);

    let response = h
        .post("/v1/chat/completions")
        .header("x-tollgate-prompt-variables", r#"{"greeting": "Hola"}"#)
        .json(&json!({"model": "echo-bot", "stream": true, "messages": user("Hi")}))
        .send()
        .await
        .unwrap();
    let text: String = sse_events(response)
        .await
        .iter()
        .filter_map(|(_, e)| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, expected);

    // The Responses API too (its instructions are the client's system
    // message, after the gateway's).
    let (status, body) = json_body(
        h.post("/v1/responses")
            .json(
                &json!({"model": "echo-bot", "instructions": "Be brief.", "input": "Hi",
                "prompt_variables": {"greeting": "Hola"}}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text: String = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, expected, "{body}");

    // Without the variable: 400 naming it.
    let (status, body) = chat(h, json!({"model": "echo-bot", "messages": user("Hi")})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"greeting\"")
    );
}

#[tokio::test]
async fn context_is_fetched_once_cached_and_injected() {
    let s = setup().await;
    let h = &s.h;
    let (status, body) = chat(h, json!({"model": "ctx", "messages": user("Refund?")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        sent(&s.capture),
        pairs(&[
            ("system", "You are a refund bot."),
            ("system", POLICY),
            ("user", "Refund?"),
        ])
    );
    let (status, _) = chat(h, json!({"model": "ctx", "messages": user("Again?")})).await;
    assert_eq!(status, 200);
    assert_eq!(sent(&s.capture)[1].1, POLICY);
    assert_eq!(
        s.files.hits("/policy.txt"),
        1,
        "the second request used the cache"
    );

    // The real mock counts the injected text in its prompt tokens; the
    // cap and cache are per URL, so this route fetches nothing new.
    let (_, plain) = chat(
        h,
        json!({"model": "mock-plain", "messages": user("Refund?")}),
    )
    .await;
    let (status, with_context) =
        chat(h, json!({"model": "ctx-mock", "messages": user("Refund?")})).await;
    assert_eq!(status, 200, "{with_context}");
    let tokens = |b: &Value| b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        tokens(&with_context) > tokens(&plain) + 5,
        "{} vs {}",
        tokens(&with_context),
        tokens(&plain)
    );
    assert_eq!(s.files.hits("/policy.txt"), 1);
    let metrics = h.metrics();
    let source = format!(
        "source=\"http://{}/policy.txt\",outcome=\"ok\"",
        s.files_addr
    );
    assert_eq!(metric_sum(&metrics, &source), 1.0, "{metrics}");
}

#[tokio::test]
async fn context_failures_required_fail_the_request_optional_are_skipped() {
    let s = setup().await;
    let h = &s.h;
    // Optional and gone: served without it (the other source still there).
    let (status, body) = chat(h, json!({"model": "ctx-optional", "messages": user("Hi")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sent(&s.capture), pairs(&[("user", POLICY), ("user", "Hi")]));
    assert_eq!(
        metric_sum(
            &h.metrics(),
            "route=\"default/ctx-optional\",source=\"http://"
        ),
        1.0
    );

    // Required and gone: 502 naming the source, in either API's shape.
    let (status, body) = chat(h, json!({"model": "ctx-required", "messages": user("Hi")})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "prompt_context_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/gone.txt") && message.contains("404"),
        "{message}"
    );
    let (status, body) = messages_api(
        h,
        json!({"model": "ctx-required", "max_tokens": 20, "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "error");
    // A failure is remembered for a few seconds: no new fetch per request
    // (the optional source above is the same URL and cap, so it shares it).
    assert_eq!(s.files.hits("/gone.txt"), 1, "one fetch for three requests");

    // A loopback source without allowLoopback: refused (the gateway's own
    // ports are loopback), and nothing was fetched.
    let hits = s.files.hits("/policy.txt");
    let (status, body) = chat(
        h,
        json!({"model": "ctx-loopback-refused", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(s.files.hits("/policy.txt"), hits);

    // Larger than maxBytes: refused, never cut short.
    let (status, body) = chat(h, json!({"model": "ctx-big", "messages": user("Hi")})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1000 bytes"),
        "{body}"
    );

    // Slower than its timeout: 502 in about the timeout.
    let started = Instant::now();
    let (status, body) = chat(h, json!({"model": "ctx-slow", "messages": user("Hi")})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 ms"),
        "{body}"
    );
    assert_eq!(
        s.capture.bodies(),
        1,
        "only the optional request went upstream"
    );
    let metrics = h.metrics();
    let fetches = |outcome: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("tollgate_prompt_context_fetches_total{"))
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for outcome in ["status", "too_large", "timeout"] {
        assert_eq!(fetches(outcome), 1.0, "{outcome}: {metrics}");
    }
}

#[tokio::test]
async fn context_copies_expire_and_a_failed_refresh_serves_the_last_copy() {
    let s = setup().await;
    let h = &s.h;
    let ask = || chat(h, json!({"model": "ctx-expiring", "messages": user("Hi")}));
    let (status, body) = ask().await;
    assert_eq!(status, 200, "{body}");
    let texts =
        |s: &Setup| -> Vec<String> { sent(&s.capture).into_iter().map(|(_, t)| t).collect() };
    assert_eq!(texts(&s), ["edition 1", "flaky edition 1", "Hi"]);
    let (status, _) = ask().await;
    assert_eq!(status, 200);
    assert_eq!(texts(&s)[..2], ["edition 1", "flaky edition 1"], "cached");
    assert_eq!(
        (s.files.hits("/counter.txt"), s.files.hits("/flaky.txt")),
        (1, 1)
    );

    // Past cacheFor: fetched again; the flaky source now fails, and its last
    // copy serves (counted as stale), even though it is required.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = ask().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(texts(&s), ["edition 2", "flaky edition 1", "Hi"]);
    assert_eq!(
        (s.files.hits("/counter.txt"), s.files.hits("/flaky.txt")),
        (2, 2)
    );
    let metrics = h.metrics();
    assert_eq!(
        metric_sum(
            &metrics,
            &format!(
                "route=\"default/ctx-expiring\",source=\"http://{}/flaky.txt\",outcome=\"stale\"",
                s.files_addr
            )
        ),
        1.0,
        "{metrics}"
    );
}

/// Context from a ConfigMap (read with the configuration, so an edit
/// reaches requests by reload) and from MCP resources read through the
/// gateway's own MCP client: on a backend speaking both eras (a pooled
/// session) and on a modern-only one (sessionless), each read once and
/// cached; an unknown resource fails a required source and is skipped for
/// an optional one.
#[tokio::test]
async fn context_from_a_config_map_and_mcp_resources() {
    let (capture, capture_addr) = Server::start(provider_answer).await;
    let modern_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let modern = format!("http://{}", modern_listener.local_addr().unwrap());
    let _modern = common::spawn_mock(modern_listener, &["--mcp-era", "modern"]);
    let manifests = |edition: &str| {
        let mut text = GATEWAY.replace("{capture}", &capture_addr.to_string());
        text += &format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: policy}}\ndata:\n  refunds: \"Refund policy, edition {edition}.\"\n"
        );
        text += "---\napiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: notes}\nspec: {gatewayRef: {name: gw}, url: \"{mock}/mcp\"}\n";
        text += &format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: modern-notes}}\nspec: {{gatewayRef: {{name: gw}}, url: \"{modern}/mcp\"}}\n"
        );
        let mcp = |server: &str, uri: &str, extra: &str| {
            format!("    - {{mcpResource: {{server: {server}, uri: \"{uri}\"}}{extra}}}\n")
        };
        text += &route(
            "ctx-sources",
            "capture",
            "capture-chat",
            Some(&context(&format!(
                "    - {{configMapKeyRef: {{name: policy, key: refunds}}}}\n{}",
                mcp("notes", "mock://notes/readme", ", role: user")
            ))),
        );
        text += &route(
            "ctx-modern",
            "capture",
            "capture-chat",
            Some(&context(&mcp("modern-notes", "mock://notes/readme", ""))),
        );
        text += &route(
            "ctx-unknown",
            "capture",
            "capture-chat",
            Some(&context(&mcp("notes", "mock://notes/none", ""))),
        );
        text += &route(
            "ctx-unknown-optional",
            "capture",
            "capture-chat",
            Some(&context(&mcp(
                "notes",
                "mock://notes/none",
                ", required: false",
            ))),
        );
        text
    };
    let h = Harness::start(&manifests("1"), &[]).await;
    const NOTES: &str = "The mock MCP server's notes.";

    for question in ["Refund?", "Again?"] {
        let (status, body) = chat(
            &h,
            json!({"model": "ctx-sources", "messages": user(question)}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            sent(&capture),
            pairs(&[
                ("system", "Refund policy, edition 1."),
                ("user", NOTES),
                ("user", question),
            ])
        );
    }
    let (status, body) = chat(&h, json!({"model": "ctx-modern", "messages": user("Hi")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sent(&capture), pairs(&[("system", NOTES), ("user", "Hi")]));
    let metrics = h.metrics();
    for server in ["notes", "modern-notes"] {
        let source = format!("source=\"mcp:default/{server}:mock://notes/readme\",outcome=\"ok\"");
        assert_eq!(metric_sum(&metrics, &source), 1.0, "read once: {metrics}");
    }

    let (status, body) = chat(&h, json!({"model": "ctx-unknown", "messages": user("Hi")})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["error"]["code"], "prompt_context_unavailable",
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("mcp:default/notes:mock://notes/none")
            && message.contains("Resource not found"),
        "{message}"
    );
    let (status, body) = chat(
        &h,
        json!({"model": "ctx-unknown-optional", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sent(&capture), pairs(&[("user", "Hi")]));

    // The ConfigMap changes: the next configuration carries the new text.
    h.reload(&manifests("2"));
    let (status, body) = chat(
        &h,
        json!({"model": "ctx-sources", "messages": user("Now?")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        sent(&capture)[0],
        (
            "system".to_string(),
            "Refund policy, edition 2.".to_string()
        )
    );
}
