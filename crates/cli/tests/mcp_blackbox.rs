//! The MCP pass-through with the real binaries: two gateway processes
//! sharing a digest key file in front of one `tollgate mock` MCP server.
//! A 2025-11-25 session opened on one continues on the other; its id is
//! refused for another principal and on another server's path; the
//! backend gets the MCPServer's credential, never the client's key.

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_testenv::redis::RedisServer;

const OTHER_KEY: &str = "tg-other-key";
const BACKEND_KEY: &str = "backend-secret";

fn mcp_config(mock: &str) -> String {
    mcp_config_with(mock, "")
}

/// With `redis`, the AIGateway keeps its buckets there.
fn mcp_config_with(mock: &str, redis: &str) -> String {
    let redis = if redis.is_empty() {
        String::new()
    } else {
        format!("  redis: {{url: \"{redis}\"}}\n")
    };
    format!(
        "{}---
apiVersion: v1
kind: Secret
metadata: {{name: more-keys}}
stringData: {{other: {OTHER_KEY}, backend: {BACKEND_KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: tools}}
spec:
  gatewayRef: {{name: test}}
  url: {mock}/mcp
  credentials: {{secretRef: {{name: more-keys, key: backend}}}}
  tools: {{deny: [write_note]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: twin}}
spec:
  gatewayRef: {{name: test}}
  url: {mock}/mcp
  credentials: {{secretRef: {{name: more-keys, key: backend}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: limited}}
spec:
  gatewayRef: {{name: test}}
  url: {mock}/mcp
  credentials: {{secretRef: {{name: more-keys, key: backend}}}}
  rateLimits: [{{requestsPerSecond: 1, burst: 3}}]
",
        config(mock, "m").replacen(
            "    principal: {user: tester, team: qa}\n",
            &format!("    principal: {{user: tester, team: qa}}\n  - secretRef: {{name: more-keys, key: other}}\n    principal: {{user: other}}\n{redis}"),
            1
        )
    )
}

async fn rpc(
    url: &str,
    key: &str,
    session: Option<&str>,
    message: Value,
) -> (u16, Option<String>, Value) {
    let mut request = client()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&message);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    (
        status,
        session,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_sealed_session_follows_its_caller_across_replicas_and_no_one_else() {
    let mock = Process::start(&["mock", "--listen", "127.0.0.1:0", "--mcp-key", BACKEND_KEY]);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "gw.yaml", &mcp_config(mock.url("data")));
    let key_file = dir.path().join("digest.key");
    let start = || {
        let mut command = gateway_command(&path);
        command.arg("--digest-key-file").arg(&key_file);
        Process::from_command(&mut command)
    };
    let (first, second) = (start(), start());
    let url = |gateway: &Process, server: &str| format!("{}/mcp/{server}", gateway.url("data"));

    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "blackbox", "version": "1"}}});
    let (status, session, body) = rpc(&url(&first, "tools"), KEY, None, initialize).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "tollgate-mock");
    let session = session.expect("a session id");
    assert!(session.starts_with("tg1."), "sealed: {session}");
    assert!(
        !session.contains("mock-"),
        "the backend's id is not exposed"
    );

    // The other replica continues it.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, body) = rpc(&url(&second, "tools"), KEY, Some(&session), list.clone()).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["echo", "add", "slow"],
        "write_note is denied: {body}"
    );

    // Another principal, or another server's path: as if unknown.
    let (status, _, _) = rpc(
        &url(&second, "tools"),
        OTHER_KEY,
        Some(&session),
        list.clone(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = rpc(&url(&first, "twin"), KEY, Some(&session), list.clone()).await;
    assert_eq!(status, 404);

    // A denied tool cannot be called.
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "write_note", "arguments": {"note": "x"}}});
    let (status, _, body) = rpc(&url(&first, "tools"), KEY, Some(&session), call).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert_eq!(body["id"], 3);

    // DELETE ends it at the backend; then it is gone everywhere.
    let deleted = client()
        .delete(url(&second, "tools"))
        .bearer_auth(KEY)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, _, _) = rpc(&url(&first, "tools"), KEY, Some(&session), list).await;
    assert_eq!(status, 404, "the backend forgot the session");

    // Without the MCPServer's credential the mock answers 401: the
    // gateway sent its own, not the client's key.
    let direct = client()
        .post(format!("{}/mcp", mock.url("data")))
        .bearer_auth(KEY)
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
}

/// A per-caller limit of 3 at once, then 1 a second, holds across two
/// gateways sharing Redis: the caller gets its burst once, not per replica;
/// another caller has its own bucket.
#[tokio::test]
async fn mcp_rate_limits_hold_across_replicas_sharing_redis() {
    let redis = RedisServer::start();
    let mock = Process::start(&["mock", "--listen", "127.0.0.1:0", "--mcp-key", BACKEND_KEY]);
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &mcp_config_with(mock.url("data"), &redis.url()),
    );
    let (first, second) = (start_gateway(&path), start_gateway(&path));
    let modern = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}})
    };
    let send = |gateway: &Process, key: &'static str, id: u64| {
        let request = client()
            .post(format!("{}/mcp/limited", gateway.url("data")))
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .json(&modern(id))
            .send();
        async move {
            let response = request.await.unwrap();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, retry, body)
        }
    };
    let started = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for id in 0..8 {
        let gateway = if id % 2 == 0 { &first } else { &second };
        outcomes.push(send(gateway, KEY, id).await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = outcomes.iter().filter(|(s, _, _)| *s == 200).count();
    let most = 3 + elapsed.ceil() as usize;
    assert!(
        (3..=most).contains(&admitted),
        "admitted {admitted} of 8 across two gateways in {elapsed:.2} s (at most {most}): {outcomes:?}"
    );
    let (status, retry, body) = outcomes.iter().find(|(s, _, _)| *s == 429).unwrap();
    assert_eq!(*status, 429);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], -32000, "{body}");
    assert!(body["id"].is_number(), "the request's id: {body}");
    // Another caller's bucket is its own.
    let (status, _, body) = send(&second, OTHER_KEY, 99).await;
    assert_eq!(status, 200, "{body}");
}

/// Arguments leave redacted, and every call and list leaves one audit
/// record (tracing target `tollgate::audit`) with the caller, the tool, the
/// decision and the arguments' shape, never their values.
#[tokio::test]
async fn calls_leave_redacted_and_audited() {
    let mock = Process::start(&["mock", "--listen", "127.0.0.1:0", "--mcp-key", BACKEND_KEY]);
    let dir = tempfile::tempdir().unwrap();
    let config = mcp_config(mock.url("data")).replace(
        "  tools: {deny: [write_note]}\n",
        "  tools: {deny: [write_note]}\n  redact: {paths: [auth.token], pii: true}\n",
    );
    let path = write(dir.path(), "gw.yaml", &config);
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let mut command = common::gateway_command(&path);
    command.stderr(log).env("RUST_LOG", "info");
    let gateway = Process::from_command(&mut command);
    let url = format!("{}/mcp/tools", gateway.url("data"));
    let call = |id: u64, name: &str, arguments: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": name, "arguments": arguments,
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}}})
    };
    let modern = |name: &str| {
        let mut request = client()
            .post(&url)
            .bearer_auth(KEY)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call");
        request = request.header("mcp-name", name);
        request
    };
    let echoed: Value = modern("echo")
        .json(&call(
            1,
            "echo",
            json!({"text": "mail ada@example.com card 4111-1111-1111-1111", "auth": {"token": "hunter2"}}),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The mock echoes what reached it.
    assert_eq!(
        echoed["result"]["content"][0]["text"], "mail [REDACTED:EMAIL] card [REDACTED:CARD]",
        "{echoed}"
    );
    let refused: Value = modern("write_note")
        .json(&call(2, "write_note", json!({"note": "x"})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused["error"]["code"], -32602);
    drop(gateway);
    let text = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    let records: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tollgate::audit"))
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    assert!(
        records[0].contains("tool=\"echo\"")
            && records[0].contains("decision=\"allowed\"")
            && records[0].contains("caller=\"user=tester team=qa app=-\"")
            && records[0].contains("[REDACTED:FIELD]")
            && records[0].contains("redacted=\"auth.token,text:EMAIL,text:CARD\""),
        "{}",
        records[0]
    );
    assert!(
        records[1].contains("tool=\"write_note\"") && records[1].contains("decision=\"refused\""),
        "{}",
        records[1]
    );
    for secret in ["ada@example.com", "4111", "hunter2"] {
        assert!(!text.contains(secret), "{secret} in the gateway's log");
    }
}
