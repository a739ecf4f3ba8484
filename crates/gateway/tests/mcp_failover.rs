//! An MCPServer with `failoverUrls`: a message without a session passes
//! over an endpoint that refuses connections, whatever the message; a
//! session stays on the endpoint that opened it, and ends (404) when that
//! endpoint is gone, so the client starts again on one that answers.

mod common;

use common::{Harness, json_body, spawn_mock};
use serde_json::{Value, json};
use tokio::net::TcpListener;

fn manifests(first: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec: {{}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: notes}}
spec:
  gatewayRef: {{name: gw}}
  url: "{first}/mcp"
  failoverUrls: ["{{mock}}/mcp"]
  timeout: 5s
"#
    )
}

async fn post(
    h: &Harness,
    path: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Value, Option<String>) {
    let mut request = h
        .client
        .post(format!("{}{path}", h.url))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&body);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await.unwrap();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = json_body(response).await;
    (status, body, session)
}

async fn initialize(h: &Harness, path: &str) -> String {
    let (status, body, session) = post(
        h,
        path,
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "failover-test", "version": "1"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    session.expect("a session id")
}

fn write_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "write_note", "arguments": {"name": "n", "text": "t"}}})
}

/// Binds `addr` again once the previous listener there is gone.
async fn rebind(addr: std::net::SocketAddr) -> TcpListener {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr} again");
}

#[tokio::test]
async fn sessions_stay_on_their_endpoint_and_new_ones_fail_over() {
    // The first endpoint is a mock of its own that the test stops and
    // starts again; the failover endpoint is the harness's mock.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_addr = listener.local_addr().unwrap();
    let first = format!("http://{first_addr}");
    let stop_first = spawn_mock(listener, &[]);
    let h = Harness::start(&manifests(&first), &[]).await;

    for path in ["/mcp/notes", "/mcp"] {
        // Both endpoints up: the session is opened on the first.
        let on_first = initialize(&h, path).await;
        let name = if path == "/mcp" {
            "notes__write_note"
        } else {
            "write_note"
        };
        let mut call = write_call(1);
        call["params"]["name"] = json!(name);
        let (status, body, _) = post(&h, path, Some(&on_first), call.clone()).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["result"]["content"].is_array(), "{path}: {body}");
    }

    // The first endpoint goes away.
    stop_first.send(true).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A new session fails over to the second endpoint (every time: a
    // write that never left may go elsewhere).
    let on_second = initialize(&h, "/mcp/notes").await;
    for id in 2..4 {
        let (status, body, _) = post(&h, "/mcp/notes", Some(&on_second), write_call(id)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["result"]["content"].is_array(), "{body}");
    }
    let aggregated = initialize(&h, "/mcp").await;
    let mut call = write_call(4);
    call["params"]["name"] = json!("notes__write_note");
    let (status, body, _) = post(&h, "/mcp", Some(&aggregated), call).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["content"].is_array(), "{body}");

    // A 2026-07-28 message has no session: it passes over the first
    // endpoint too.
    let response = h
        .client
        .post(format!("{}/mcp/notes", h.url))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "write_note")
        .json(
            &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "write_note", "arguments": {"name": "m", "text": "u"},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["content"].is_array(), "{body}");

    // The first endpoint comes back (it knows none of the old sessions).
    // The session on the second endpoint stays there: sent to the first,
    // it would be unknown (404).
    let stop_again = spawn_mock(rebind(first_addr).await, &[]);
    for id in 6..8 {
        let (status, body, _) = post(&h, "/mcp/notes", Some(&on_second), write_call(id)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, _) = post(&h, "/mcp", Some(&aggregated), {
        let mut call = write_call(8);
        call["params"]["name"] = json!("notes__write_note");
        call
    })
    .await;
    assert_eq!(status, 200, "{body}");

    // Sessions opened now go to the first endpoint again; when it is gone,
    // a message of such a session ends it: 404, as the spec has a client
    // start over.
    let on_first = initialize(&h, "/mcp/notes").await;
    let (status, _, _) = post(&h, "/mcp/notes", Some(&on_first), write_call(9)).await;
    assert_eq!(status, 200);
    stop_again.send(true).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body, _) = post(&h, "/mcp/notes", Some(&on_first), write_call(10)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["id"], 10, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Session not found"),
        "{body}"
    );
    let again = initialize(&h, "/mcp/notes").await;
    let (status, body, _) = post(&h, "/mcp/notes", Some(&again), write_call(11)).await;
    assert_eq!(status, 200, "{body}");
}
