//! MCP requests for the black-box tests: a POST with its session, and its
//! answer as JSON or SSE events.

use serde_json::{Value, json};

use super::client;

/// An `initialize` request (revision 2025-11-25).
pub fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "bridge-test", "version": "1"}}})
}

pub struct Answer {
    pub status: u16,
    pub session: Option<String>,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The JSON-RPC messages of an SSE body, in order.
    pub fn events(&self) -> Vec<Value> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }
}

pub async fn post(url: &str, key: Option<&str>, session: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = client()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let session = header("mcp-session-id");
    let content_type = header("content-type").unwrap_or_default();
    let text = response.text().await.unwrap();
    Answer {
        status,
        session,
        content_type,
        text,
    }
}

pub async fn rpc(url: &str, key: Option<&str>, session: Option<&str>, message: Value) -> Answer {
    post(url, key, session, serde_json::to_vec(&message).unwrap()).await
}

/// A gateway config (the common one) with one MCPServer `name` at
/// `{bridge}/mcp`.
pub fn gateway_config(name: &str, bridge: &str) -> String {
    format!(
        "{}---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: {name}}}
spec:
  gatewayRef: {{name: test}}
  url: {bridge}/mcp
",
        super::config("http://127.0.0.1:1", "m")
    )
}

/// Uses a fresh session of the mock's MCP server (`tollgate mock`, over
/// any transport, behind a bridge): `notifications/initialized`, a list,
/// a call, then a call with progress and another at once.
pub async fn use_a_session(url: &str, key: Option<&str>, s: Option<&str>) {
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(rpc(url, key, s, initialized).await.status, 202);

    // Lists and calls come back to the POST that asked, with its id.
    let list = rpc(
        url,
        key,
        s,
        json!({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list"}),
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.content_type.starts_with("application/json"));
    let body = list.json();
    assert_eq!(body["id"], "list-1", "the client's id, not the bridge's");
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "add", "write_note", "slow"]);
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 2, "b": 40}}});
    let body = rpc(url, key, s, call).await.json();
    assert_eq!(body["id"], 3);
    assert_eq!(body["result"]["structuredContent"]["sum"], 42.0, "{body}");

    // Two calls at once: each answer reaches its own POST, and progress
    // reaches the POST that asked for it, as an SSE stream ending with the
    // answer.
    let slow = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 3}, "_meta": {"progressToken": "p-4"}}});
    let echo = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hi\nthere"}}});
    let (slow, echo) = tokio::join!(rpc(url, key, s, slow), rpc(url, key, s, echo));
    assert_eq!(slow.status, 200, "{}", slow.text);
    assert!(
        slow.content_type.starts_with("text/event-stream"),
        "{}",
        slow.content_type
    );
    let events = slow.events();
    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["method"] == "notifications/progress")
        .map(|e| {
            assert_eq!(e["params"]["progressToken"], "p-4");
            e["params"]["progress"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(progress, [1, 2, 3], "{}", slow.text);
    let last = events.last().unwrap();
    assert_eq!(last["id"], 4);
    assert_eq!(last["result"]["content"][0]["text"], "done after 3 steps");
    let echo = echo.json();
    assert_eq!(echo["id"], 5);
    assert_eq!(echo["result"]["content"][0]["text"], "hi\nthere");
}
