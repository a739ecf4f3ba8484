//! A provider that says 200 and then breaks its promise: a body that is not
//! JSON, a body cut short, a JSON document where a stream was asked for.
//! Nothing has reached the client yet, so the next tier answers instead;
//! alone, the client gets a 502 in its API's shape, never the garbage.

mod common;

use std::net::SocketAddr;

use common::{Harness, json_body, read_all};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A provider on loopback that answers every request with `reply`, then
/// closes the connection.
async fn provider_answering(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

const NOT_JSON: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"choices\":[";
const CUT_SHORT: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\nconnection: close\r\n\r\n{\"id\":\"x\",\"choices\":";

fn config(garbled: SocketAddr, cut: SocketAddr) -> String {
    let provider = |name: &str, addr: SocketAddr| {
        format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: {name}}}\nspec: {{type: Mock, endpoint: \"http://{addr}/v1\"}}\n"
        )
    };
    let route = |name: &str, backends: &str| {
        format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: gw}}\n  models: [{name}]\n  backends: {backends}\n"
        )
    };
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: AIGateway\nmetadata: {{name: gw}}\nspec:\n  apiKeys: [{{secretRef: {{name: keys, key: k}}, principal: {{user: tester}}}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{k: \"{{key}}\"}}\n---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: healthy}}\nspec: {{type: Mock, endpoint: \"{{mock}}/v1\"}}\n{}{}{}{}{}",
        provider("garbled", garbled),
        provider("cut", cut),
        route(
            "garbled",
            "[{providerRef: {name: garbled}, model: mock-chat}, {providerRef: {name: healthy}, model: mock-chat, priority: 1}]"
        ),
        route(
            "cut",
            "[{providerRef: {name: cut}, model: mock-chat}, {providerRef: {name: healthy}, model: mock-chat, priority: 1}]"
        ),
        route(
            "garbled-alone",
            "[{providerRef: {name: garbled}, model: mock-chat}]"
        ),
    )
}

fn chat(model: &str, stream: bool) -> serde_json::Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_broken_answer_falls_back_and_alone_is_a_502() {
    let garbled = provider_answering(NOT_JSON).await;
    let cut = provider_answering(CUT_SHORT).await;
    let h = Harness::start(&config(garbled, cut), &[]).await;

    // Not JSON, then cut short: the healthy tier answers.
    for model in ["garbled", "cut"] {
        let response = h
            .post("/v1/chat/completions")
            .json(&chat(model, false))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["x-tollgate-provider"],
            "healthy",
            "{model}"
        );
        let (status, body) = json_body(response).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{body}"
        );
    }
    // A JSON document where a stream was asked for: not a stream.
    let response = h
        .post("/v1/chat/completions")
        .json(&chat("garbled", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-provider"], "healthy");
    let (text, broke) = read_all(response).await;
    assert!(
        !broke && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );

    // Alone: a 502 in the OpenAI shape that says what went wrong.
    for (stream, says) in [(false, "not JSON"), (true, "other than a stream")] {
        let (status, body) = json_body(
            h.post("/v1/chat/completions")
                .json(&chat("garbled-alone", stream))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 502, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}");
    }
}
