//! `tollgate mcp-bridge --sse-url` with real processes: the mock's legacy
//! HTTP+SSE server (MCP 2024-11-05, `GET /sse` + `POST /messages`, behind a
//! credential) behind the bridge, straight and behind a standalone gateway.
//! One SSE connection per session; answers routed to the POST that asked,
//! progress streamed; the server's stream ending fails what is in flight
//! and ends the session; a refused credential and an endpoint on another
//! origin fail `initialize` with a JSON-RPC error.

mod common;

use std::time::Duration;

use common::mcp::*;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LEGACY_KEY: &str = "legacy-secret";

fn start_bridge(sse_url: &str, extra: &[&str]) -> Process {
    let mut args = vec![
        "mcp-bridge",
        "--listen",
        "127.0.0.1:0",
        "--sse-url",
        sse_url,
    ];
    args.extend_from_slice(extra);
    Process::start(&args)
}

#[tokio::test]
async fn a_legacy_sse_server_is_served_through_the_bridge_and_the_gateway() {
    let mock = Process::start(&["mock", "--listen", "127.0.0.1:0", "--mcp-key", LEGACY_KEY]);
    let sse_url = format!("{}/sse", mock.url("data"));
    let credential = format!("Authorization: Bearer {LEGACY_KEY}");
    let bridge = start_bridge(&sse_url, &["--header", &credential]);
    let direct = format!("{}/mcp", bridge.url("data"));
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &gateway_config("legacy", bridge.url("data")),
    );
    let gateway = start_gateway(&path);
    let url = format!("{}/mcp/legacy", gateway.url("data"));

    // initialize opens the SSE connection and comes back with a session.
    let answer = rpc(&url, Some(KEY), None, initialize(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["id"], 1);
    assert_eq!(body["result"]["serverInfo"]["name"], "tollgate-mock");
    let session = answer.session.expect("a session");
    let s = Some(session.as_str());
    use_a_session(&url, Some(KEY), s).await;

    // A second session straight at the bridge, asking for 2024-11-05.
    let mut old = initialize(6);
    old["params"]["protocolVersion"] = json!("2024-11-05");
    let other = rpc(&direct, None, None, old).await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert_eq!(other.json()["result"]["protocolVersion"], "2024-11-05");
    let other_session = other.session.unwrap();
    assert_ne!(Some(other_session.as_str()), s);

    // The server goes away mid-call: the call gets a JSON-RPC error, and
    // the sessions are over (404: initialize again).
    let long = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 20}, "_meta": {"progressToken": "p-7"}}});
    let pending = {
        let direct = direct.clone();
        let other_session = other_session.clone();
        tokio::spawn(async move { rpc(&direct, None, Some(&other_session), long).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let hung_up = client()
        .delete(&sse_url)
        .bearer_auth(LEGACY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(hung_up.status(), 200);
    let failed = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the call ends when the stream does")
        .unwrap();
    let message = failed
        .events()
        .last()
        .cloned()
        .unwrap_or_else(|| failed.json());
    assert_eq!(message["id"], 7, "{}", failed.text);
    assert_eq!(message["error"]["code"], -32000, "{}", failed.text);
    let ping = json!({"jsonrpc": "2.0", "id": 8, "method": "ping"});
    let after = rpc(&direct, None, Some(&other_session), ping.clone()).await;
    assert_eq!(after.status, 404, "{}", after.text);
    let after = rpc(&url, Some(KEY), s, ping).await;
    assert_eq!(after.status, 404, "{}", after.text);
    // A new session works again.
    let again = rpc(&url, Some(KEY), None, initialize(9)).await;
    assert_eq!(again.status, 200, "{}", again.text);

    let mut bridge = bridge;
    let status = bridge.terminate();
    assert!(status.success(), "{status:?}");
}

/// `initialize` through `bridge` gets a JSON-RPC error saying `why`, and
/// no session.
async fn initialize_fails(bridge: &Process, why: &str) {
    let url = format!("{}/mcp", bridge.url("data"));
    let answer = rpc(&url, None, None, initialize(1)).await;
    assert!(answer.session.is_none(), "no session: {}", answer.text);
    assert_eq!(answer.status, 502, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["id"], 1, "{}", answer.text);
    assert_eq!(body["error"]["code"], -32000, "{}", answer.text);
    let text = body["error"]["message"].as_str().unwrap();
    assert!(text.contains(why), "{text}");
}

#[tokio::test]
async fn a_refused_credential_fails_initialize() {
    let mock = Process::start(&["mock", "--listen", "127.0.0.1:0", "--mcp-key", LEGACY_KEY]);
    let bridge = start_bridge(
        &format!("{}/sse", mock.url("data")),
        &["--header", "Authorization: Bearer wrong"],
    );
    initialize_fails(&bridge, "401").await;
}

/// A server whose endpoint names another origin: the bridge must not send
/// anything there.
#[tokio::test]
async fn an_endpoint_on_another_origin_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0; 4096];
        let _ = socket.read(&mut request).await.unwrap();
        socket
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
                  event: endpoint\r\ndata: http://127.0.0.1:9/messages?s=1\r\n\r\n",
            )
            .await
            .unwrap();
        // Held open until the bridge gives up on it.
        let _ = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut request)).await;
    });
    let bridge = start_bridge(&format!("http://{addr}/sse"), &[]);
    initialize_fails(&bridge, "another origin").await;
    server.abort();
}

/// `transport: SSE`: the gateway bridges the legacy server in process, at
/// `/mcp/{path}` and inside the aggregate `/mcp`, with the server's
/// credential.
#[tokio::test]
async fn the_gateway_bridges_a_legacy_server_in_process() {
    let mock = Process::start(&["mock", "--listen", "127.0.0.1:0", "--mcp-key", LEGACY_KEY]);
    let config = format!(
        "{}---
apiVersion: v1
kind: Secret
metadata: {{name: legacy-key}}
stringData: {{token: {LEGACY_KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: legacy}}
spec:
  gatewayRef: {{name: test}}
  url: {}/sse
  transport: SSE
  credentials: {{secretRef: {{name: legacy-key, key: token}}}}
",
        config("http://127.0.0.1:1", "m"),
        mock.url("data")
    );
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&write(dir.path(), "gw.yaml", &config));
    let url = format!("{}/mcp/legacy", gateway.url("data"));
    let answer = rpc(&url, Some(KEY), None, initialize(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.json()["result"]["serverInfo"]["name"],
        "tollgate-mock"
    );
    let session = answer.session.expect("a session");
    use_a_session(&url, Some(KEY), Some(&session)).await;

    // The aggregate endpoint lists and calls it too.
    let all = format!("{}/mcp", gateway.url("data"));
    let answer = rpc(&all, Some(KEY), None, initialize(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let session = answer.session.expect("a session");
    let s = Some(session.as_str());
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(rpc(&all, Some(KEY), s, initialized).await.status, 202);
    let list = rpc(
        &all,
        Some(KEY),
        s,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let body = list.json();
    let names: Vec<String> = body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", list.text))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let add = names
        .iter()
        .find(|n| n.ends_with("add"))
        .unwrap_or_else(|| panic!("{names:?}"));
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": add, "arguments": {"a": 1, "b": 2}}});
    let body = rpc(&all, Some(KEY), s, call).await.json();
    assert_eq!(body["result"]["structuredContent"]["sum"], 3.0, "{body}");
}
