//! Bedrock Converse and ConverseStream: SigV4 verification, event-stream
//! framing, tool use, reasoning, validation and exceptions.

mod common;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::Message;
use bytes::Bytes;
use common::{Reply, Server, weather_schema};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tollgate_mock::{AuthConfig, AwsCredentials, MockConfig};

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1%3A0";
const KEY_ID: &str = "AKIDMOCKTEST";
const SECRET: &str = "mock/secret+key";

fn converse_path(stream: bool) -> String {
    format!(
        "/model/{MODEL}/{}",
        if stream {
            "converse-stream"
        } else {
            "converse"
        }
    )
}

fn user(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
}

fn tool_config() -> Value {
    json!({"tools": [
        {"toolSpec": {"name": "get_weather", "inputSchema": {"json": weather_schema()}}},
        {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object"}}}}
    ]})
}

async fn signed_server(session_token: Option<&str>) -> Server {
    Server::start(MockConfig {
        auth: AuthConfig {
            bedrock: Some(AwsCredentials {
                access_key_id: KEY_ID.into(),
                secret_access_key: SECRET.into(),
                session_token: session_token.map(str::to_owned),
            }),
            ..AuthConfig::default()
        },
        ..MockConfig::default()
    })
    .await
}

/// How a test signs (and then possibly alters) a request.
struct Signing<'a> {
    secret: &'a str,
    token: Option<&'a str>,
    time: SystemTime,
    signed_path: &'a str,
    signed_body: &'a [u8],
}

/// Signs like the AWS SDK does (default settings), then sends `body` to `path`.
async fn send_signed(server: &Server, path: &str, body: &[u8], how: Signing<'_>) -> Reply {
    let req = signed_request(server, path, body, how);
    server.request(req).await
}

fn signed_request(
    server: &Server,
    path: &str,
    body: &[u8],
    how: Signing<'_>,
) -> Request<Full<Bytes>> {
    let identity: Identity = Credentials::new(
        KEY_ID,
        how.secret,
        how.token.map(str::to_owned),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(how.time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [
        ("content-type", "application/json"),
        ("user-agent", "test-agent/1.0"),
    ];
    let signable = SignableRequest::new(
        "POST",
        format!("{}{}", server.base, how.signed_path),
        headers.iter().copied(),
        SignableBody::Bytes(how.signed_body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", server.base));
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let mut req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req
}

fn ok_signing<'a>(path: &'a str, body: &'a [u8]) -> Signing<'a> {
    Signing {
        secret: SECRET,
        token: None,
        time: SystemTime::now(),
        signed_path: path,
        signed_body: body,
    }
}

/// Decodes the event-stream body into (event type or exception type, payload).
fn frames(reply: &Reply) -> Vec<(String, String, Value)> {
    let mut buf = &reply.body[..];
    let mut out = Vec::new();
    while !buf.is_empty() {
        let message: Message = read_message_from(&mut buf).expect("valid frame");
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default()
        };
        let kind = header(":message-type");
        let name = if kind == "event" {
            header(":event-type")
        } else {
            header(":exception-type")
        };
        assert_eq!(header(":content-type"), "application/json");
        out.push((
            kind,
            name,
            serde_json::from_slice(message.payload()).unwrap(),
        ));
    }
    out
}

#[tokio::test]
async fn converse_plain_shape() {
    let server = Server::default().await;
    let mut req = user("hello bedrock");
    req["system"] = json!([{"text": "be brief"}]);
    let r = server.post(&converse_path(false), &req, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["output"]["message"]["role"], "assistant");
    let text = v["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(text.split(' ').count(), 16);
    assert_eq!(v["stopReason"], "end_turn");
    let usage = &v["usage"];
    assert_eq!(usage["outputTokens"], 16);
    assert_eq!(
        usage["totalTokens"].as_u64().unwrap(),
        usage["inputTokens"].as_u64().unwrap() + 16
    );
    assert!(v["metrics"]["latencyMs"].is_u64());

    let mut capped = user("hello bedrock");
    capped["inferenceConfig"] = json!({"maxTokens": 3});
    let v = server
        .post(&converse_path(false), &capped, &[])
        .await
        .json();
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["usage"]["outputTokens"], 3);

    let plain = server
        .post(&converse_path(false), &user("stop test"), &[])
        .await
        .json();
    let full = plain["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let word = full.split(' ').nth(2).unwrap().to_owned();
    let mut stop = user("stop test");
    stop["inferenceConfig"] = json!({"stopSequences": [word]});
    let v = server.post(&converse_path(false), &stop, &[]).await.json();
    assert_eq!(v["stopReason"], "stop_sequence");
    let cut = v["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(full.starts_with(cut) && !cut.contains(&word));

    let mut cached = user("hello bedrock");
    cached["system"] = json!([{"text": "long system prompt"}, {"cachePoint": {"type": "default"}}]);
    let v = server
        .post(&converse_path(false), &cached, &[])
        .await
        .json();
    assert!(v["usage"]["cacheReadInputTokens"].as_u64().unwrap() > 0);
    server.stop().await;
}

#[tokio::test]
async fn converse_stream_event_frames() {
    let server = Server::default().await;
    let r = server
        .post(&converse_path(true), &user("stream please"), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        "application/vnd.amazon.eventstream"
    );
    let events = frames(&r);
    // One frame per body chunk: the stream is split on frame boundaries.
    assert_eq!(r.chunks.len(), events.len());
    let names: Vec<&str> = events.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names[0], "messageStart");
    assert_eq!(events[0].2["role"], "assistant");
    assert_eq!(
        names.iter().filter(|n| **n == "contentBlockDelta").count(),
        16
    );
    assert_eq!(
        &names[names.len() - 3..],
        ["contentBlockStop", "messageStop", "metadata"]
    );
    let text: String = events
        .iter()
        .filter_map(|(_, _, p)| p["delta"]["text"].as_str())
        .collect();
    let plain = server
        .post(&converse_path(false), &user("stream please"), &[])
        .await
        .json();
    assert_eq!(
        plain["output"]["message"]["content"][0]["text"],
        text.as_str()
    );
    assert_eq!(events[names.len() - 2].2["stopReason"], "end_turn");
    assert_eq!(events.last().unwrap().2["usage"]["outputTokens"], 16);
    server.stop().await;
}

#[tokio::test]
async fn tool_use_and_reasoning() {
    let server = Server::default().await;
    let mut req = user("weather?");
    req["toolConfig"] = tool_config();
    let v = server.post(&converse_path(false), &req, &[]).await.json();
    assert_eq!(v["stopReason"], "tool_use");
    let tool_use = &v["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(tool_use["name"], "get_weather");
    assert!(tool_use["input"]["city"].is_string());

    let r = server
        .post(
            &converse_path(true),
            &req,
            &[("x-mock-parallel-tools", "2")],
        )
        .await;
    let events = frames(&r);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(_, n, _)| n == "contentBlockStart")
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["start"]["toolUse"]["name"], "get_time");
    assert_eq!(starts[1]["contentBlockIndex"], 1);
    let input: String = events
        .iter()
        .filter(|(_, _, p)| p["contentBlockIndex"] == 0)
        .filter_map(|(_, _, p)| p["delta"]["toolUse"]["input"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        tool_use["input"]
    );
    let stop = events.iter().find(|(_, n, _)| n == "messageStop").unwrap();
    assert_eq!(stop.2["stopReason"], "tool_use");

    // Answering with a matching toolResult yields text.
    let id = tool_use["toolUseId"].as_str().unwrap();
    let answered = json!({"toolConfig": tool_config(), "messages": [
        {"role": "user", "content": [{"text": "weather?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": id, "name": "get_weather", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"text": "sunny"}]}}]}
    ]});
    let r = server.post(&converse_path(false), &answered, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["output"]["message"]["content"][0]["text"].is_string());

    let mut thinking = user("think");
    thinking["additionalModelRequestFields"] =
        json!({"thinking": {"type": "enabled", "budget_tokens": 1024}});
    let v = server
        .post(&converse_path(false), &thinking, &[])
        .await
        .json();
    let reasoning = &v["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"];
    assert!(!reasoning["text"].as_str().unwrap().is_empty());
    assert!(!reasoning["signature"].as_str().unwrap().is_empty());
    let events = frames(&server.post(&converse_path(true), &thinking, &[]).await);
    assert!(
        events
            .iter()
            .any(|(_, _, p)| p["delta"]["reasoningContent"]["signature"].is_string())
    );
    let streamed: String = events
        .iter()
        .filter_map(|(_, _, p)| p["delta"]["reasoningContent"]["text"].as_str())
        .collect();
    assert_eq!(streamed, reasoning["text"].as_str().unwrap());
    server.stop().await;
}

#[tokio::test]
async fn conversation_rules_are_validated() {
    let server = Server::default().await;
    let bad = [
        json!({"messages": []}),
        json!({"messages": [{"role": "assistant", "content": [{"text": "a"}]}]}),
        json!({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}]}),
        json!({"toolConfig": tool_config(), "messages": [
            {"role": "user", "content": [{"text": "a"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t2", "content": [{"text": "x"}]}}]}
        ]}),
        json!({"messages": [
            {"role": "user", "content": [{"text": "a"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "x"}]}}]}
        ]}),
    ];
    for case in bad {
        let r = server.post(&converse_path(false), &case, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(r.header("x-amzn-errortype"), "ValidationException");
        assert!(r.json()["message"].is_string());
    }
    server.stop().await;
}

#[tokio::test]
async fn errors_use_bedrock_shape_and_exception_frames() {
    let server = Server::default().await;
    let r = server
        .post(&converse_path(false), &user("hi [mock status=429]"), &[])
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("x-amzn-errortype"), "ThrottlingException");
    assert!(r.json()["message"].is_string());
    let r = server
        .post(
            &converse_path(true),
            &user("hi"),
            &[("x-mock-status", "500")],
        )
        .await;
    assert_eq!(r.header("x-amzn-errortype"), "InternalServerException");

    let r = server
        .post(
            &converse_path(true),
            &user("hi"),
            &[
                ("x-mock-stream-error-after", "3"),
                ("x-mock-error-status", "429"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = frames(&r);
    assert_eq!(events.len(), 4);
    let (kind, name, payload) = events.last().unwrap();
    assert_eq!(kind, "exception");
    assert_eq!(name, "throttlingException");
    assert!(payload["message"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn sigv4_signed_request_passes_and_tampering_fails() {
    let server = signed_server(None).await;
    let path = converse_path(false);
    let body = user("signed hello").to_string();
    let r = send_signed(
        &server,
        &path,
        body.as_bytes(),
        ok_signing(&path, body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let stream_path = converse_path(true);
    let r = send_signed(
        &server,
        &stream_path,
        body.as_bytes(),
        ok_signing(&stream_path, body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let refuse = |r: &Reply, kind: &str| {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        assert_eq!(r.header("x-amzn-errortype"), kind, "{}", r.text());
        assert!(r.json()["message"].is_string());
    };
    // Wrong secret.
    let how = Signing {
        secret: "other",
        ..ok_signing(&path, body.as_bytes())
    };
    let r = send_signed(&server, &path, body.as_bytes(), how).await;
    refuse(&r, "InvalidSignatureException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match")
    );
    // Tampered body.
    let tampered = user("signed hellO").to_string();
    let r = send_signed(
        &server,
        &path,
        tampered.as_bytes(),
        ok_signing(&path, body.as_bytes()),
    )
    .await;
    refuse(&r, "InvalidSignatureException");
    // Changed path (another model id).
    let other = "/model/anthropic.claude-3-sonnet%3A0/converse";
    let r = send_signed(
        &server,
        other,
        body.as_bytes(),
        ok_signing(&path, body.as_bytes()),
    )
    .await;
    refuse(&r, "InvalidSignatureException");
    // Stale date.
    let how = Signing {
        time: SystemTime::now() - Duration::from_secs(600),
        ..ok_signing(&path, body.as_bytes())
    };
    let r = send_signed(&server, &path, body.as_bytes(), how).await;
    refuse(&r, "InvalidSignatureException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired")
    );
    // Unsigned.
    let r = server.post(&path, &user("signed hello"), &[]).await;
    refuse(&r, "MissingAuthenticationTokenException");
    // Unknown access key.
    let r = server
        .post(
            &path,
            &user("x"),
            &[("authorization", "AWS4-HMAC-SHA256 Credential=OTHER/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")],
        )
        .await;
    refuse(&r, "UnrecognizedClientException");
    server.stop().await;
}

#[tokio::test]
async fn sigv4_over_h2c_uses_the_authority() {
    let server = signed_server(None).await;
    let path = converse_path(true);
    let body = user("h2").to_string();
    let req = signed_request(
        &server,
        &path,
        body.as_bytes(),
        ok_signing(&path, body.as_bytes()),
    );
    let r = server.request_h2(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(frames(&r)[0].1, "messageStart");
    let how = Signing {
        secret: "x",
        ..ok_signing(&path, body.as_bytes())
    };
    let r = server
        .request_h2(signed_request(&server, &path, body.as_bytes(), how))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn sigv4_session_token_is_required_when_configured() {
    let server = signed_server(Some("session-token-1")).await;
    let path = converse_path(false);
    let body = user("hi").to_string();
    let how = Signing {
        token: Some("session-token-1"),
        ..ok_signing(&path, body.as_bytes())
    };
    let r = send_signed(&server, &path, body.as_bytes(), how).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send_signed(
        &server,
        &path,
        body.as_bytes(),
        ok_signing(&path, body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-amzn-errortype"), "UnrecognizedClientException");
    let how = Signing {
        token: Some("session-token-2"),
        ..ok_signing(&path, body.as_bytes())
    };
    let r = send_signed(&server, &path, body.as_bytes(), how).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    server.stop().await;
}
