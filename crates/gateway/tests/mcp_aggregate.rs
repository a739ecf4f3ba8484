//! `/mcp` in process: several MCPServers merged into one MCP server. Named
//! without collisions, routed to the right backend, the same policy as
//! pass-through, a server that cannot list reported (never a silently
//! shorter list), sessions bound to the caller and the route.

mod common;

use common::{Harness, json_body};
use serde_json::{Value, json};

/// `docs` and `notes` are the same mock (so every name collides), `down`
/// cannot be reached. `notes` grants write tools to ops only.
fn config(down_fails_lists: bool) -> String {
    let on_failure = if down_fails_lists { "Fail" } else { "Omit" };
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec:
  apiKeys:
  - secretRef: {{name: keys, key: support}}
    principal: {{user: sam, team: support}}
  - secretRef: {{name: keys, key: ops}}
    principal: {{user: olga, team: ops}}
  mcp: {{allowedOrigins: ["https://agents.example.com"]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{support: key-support, ops: key-ops}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: docs}}
spec:
  gatewayRef: {{name: gw}}
  url: "{{mock}}/mcp"
  tools: {{deny: [slow]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: notes}}
spec:
  gatewayRef: {{name: gw}}
  url: "{{mock}}/mcp"
  aggregation: {{prefix: nb}}
  access:
  - subject: {{team: support}}
    scope: Read
  - subject: {{team: ops}}
    scope: Write
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: down}}
spec:
  gatewayRef: {{name: gw}}
  url: "http://127.0.0.1:1/mcp"
  timeout: 2s
  aggregation: {{onListFailure: {on_failure}}}
"#
    )
}

async fn post(
    h: &Harness,
    path: &str,
    key: &str,
    session: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = h
        .client
        .post(format!("{}{path}", h.url))
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(key)
        .json(&body);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.send().await.unwrap()
}

async fn initialize(h: &Harness, key: &str) -> (String, Value) {
    let response = post(
        h,
        "/mcp",
        key,
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
            "clientInfo": {"name": "test", "version": "1"}}}),
    )
    .await;
    let session = response
        .headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200, "{body}");
    (session, body)
}

async fn rpc(h: &Harness, key: &str, session: &str, id: u64, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let (status, value) = json_body(post(h, "/mcp", key, Some(session), body).await).await;
    assert_eq!(status, 200, "{method}: {value}");
    value
}

fn names(message: &Value, field: &str) -> Vec<String> {
    message["result"][field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field}: {message}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn servers_merge_into_one_with_their_own_policy() {
    let h = Harness::start(&config(false), &[]).await;
    let (session, init) = initialize(&h, "key-support").await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init["result"]["serverInfo"]["name"], "tollgate");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    let accepted = post(
        &h,
        "/mcp",
        "key-support",
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(accepted.status(), 202);

    // Prefixed names in path order; docs hides `slow`, notes hides the
    // write tool from a read-only caller; `down` is named, not forgotten.
    let listed = rpc(&h, "key-support", &session, 1, "tools/list", json!({})).await;
    assert_eq!(
        names(&listed, "tools"),
        [
            "docs__echo",
            "docs__add",
            "docs__write_note",
            "nb__echo",
            "nb__add",
            "nb__slow"
        ]
    );
    assert_eq!(
        listed["result"]["_meta"]["dev.tollgate/unavailable"][0]["server"], "down",
        "{listed}"
    );
    assert!(common::metric_has(
        &h.metrics(),
        &[
            "tollgate_mcp_aggregate_failures_total{",
            "server=\"default/down\"",
            "method=\"initialize\"} 1"
        ]
    ));

    // Calls reach the backend by their own name.
    let sum = rpc(
        &h,
        "key-support",
        &session,
        2,
        "tools/call",
        json!({"name": "nb__add", "arguments": {"a": 2, "b": 5}}),
    )
    .await;
    assert_eq!(sum["result"]["structuredContent"]["sum"], 7.0, "{sum}");
    // A write tool under a read-only grant, a hidden tool, an unknown one:
    // all as if they did not exist.
    for (id, name) in [(3, "nb__write_note"), (4, "docs__slow"), (5, "nope__echo")] {
        let refused = rpc(
            &h,
            "key-support",
            &session,
            id,
            "tools/call",
            json!({"name": name, "arguments": {"note": "x"}}),
        )
        .await;
        assert_eq!(refused["error"]["code"], -32602, "{name}: {refused}");
    }
    // The write grant of ops reaches it (another session, another caller).
    let (ops_session, _) = initialize(&h, "key-ops").await;
    let noted = rpc(
        &h,
        "key-ops",
        &ops_session,
        6,
        "tools/call",
        json!({"name": "nb__write_note", "arguments": {"note": "hi"}}),
    )
    .await;
    assert_eq!(
        noted["result"]["content"][0]["text"], "noted: hi",
        "{noted}"
    );

    // Progress arrives on the call's stream, with the answer.
    let response = post(
        &h,
        "/mcp",
        "key-support",
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "nb__slow", "arguments": {"steps": 2}, "_meta": {"progressToken": "p1"}}}),
    )
    .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("notifications/progress"), "{text}");
    assert!(text.contains("\"id\":7"), "{text}");

    // Prompts are named like tools; resources keep their URIs.
    let prompts = rpc(&h, "key-support", &session, 8, "prompts/list", json!({})).await;
    assert_eq!(
        names(&prompts, "prompts"),
        ["docs__greeting", "nb__greeting"]
    );
    let greeting = rpc(
        &h,
        "key-support",
        &session,
        9,
        "prompts/get",
        json!({"name": "nb__greeting", "arguments": {"name": "Ada"}}),
    )
    .await;
    assert!(greeting["result"]["messages"].is_array(), "{greeting}");
    let resources = rpc(&h, "key-support", &session, 10, "resources/list", json!({})).await;
    assert_eq!(
        resources["result"]["resources"][0]["uri"], "mock://notes/readme",
        "{resources}"
    );
    let read = rpc(
        &h,
        "key-support",
        &session,
        11,
        "resources/read",
        json!({"uri": "mock://notes/readme"}),
    )
    .await;
    assert!(read["result"]["contents"].is_array(), "{read}");
    let ping = rpc(&h, "key-support", &session, 12, "ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));

    // The session is the caller's, and /mcp's only.
    let foreign = post(
        &h,
        "/mcp",
        "key-ops",
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 13, "method": "tools/list"}),
    )
    .await;
    assert_eq!(foreign.status(), 404);
    let other_route = post(
        &h,
        "/mcp/docs",
        "key-support",
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 14, "method": "tools/list"}),
    )
    .await;
    assert_eq!(other_route.status(), 404);
    // Browsers: a listed origin passes; a rebinding page whose Host
    // matches its own origin does not.
    for (origin, host, status) in [
        ("https://agents.example.com", "gateway.test", 200),
        ("http://evil.example.com", "evil.example.com", 403),
    ] {
        let response = h
            .client
            .post(format!("{}/mcp", h.url))
            .header("accept", "application/json, text/event-stream")
            .header("origin", origin)
            .header("host", host)
            .header("mcp-session-id", &session)
            .bearer_auth("key-support")
            .json(&json!({"jsonrpc": "2.0", "id": 20, "method": "ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{origin}");
    }
    // No session, no handshake: 400.
    let (status, _) = json_body(
        post(
            &h,
            "/mcp",
            "key-support",
            None,
            json!({"jsonrpc": "2.0", "id": 15, "method": "tools/list"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);

    let closed = h
        .client
        .delete(format!("{}/mcp", h.url))
        .bearer_auth("key-support")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    // The backends' sessions are gone with it.
    let after = post(
        &h,
        "/mcp",
        "key-support",
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 16, "method": "tools/call", "params": {"name": "docs__echo", "arguments": {"text": "x"}}}),
    )
    .await;
    assert_eq!(after.status(), 404);
}

#[tokio::test]
async fn a_server_that_must_list_fails_the_whole_list() {
    let h = Harness::start(&config(true), &[]).await;
    let (session, _) = initialize(&h, "key-ops").await;
    let listed = rpc(&h, "key-ops", &session, 1, "tools/list", json!({})).await;
    assert_eq!(listed["error"]["code"], -32603, "{listed}");
    assert!(
        listed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("down"),
        "{listed}"
    );
}

/// 2026-07-28: no handshake; each request carries its revision and the
/// backends get it as it is.
#[tokio::test]
async fn modern_requests_need_no_session() {
    let h = Harness::start(&config(false), &[]).await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}});
    let send = |id: u64, method: &'static str, name: Option<&'static str>, mut params: Value| {
        params["_meta"] = meta.clone();
        let mut request = h
            .client
            .post(format!("{}/mcp", h.url))
            .bearer_auth("key-ops")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        async move { json_body(request.send().await.unwrap()).await }
    };
    // `down` cannot say it speaks 2026-07-28: clients are sent to the
    // handshake, where the gateway holds a session with each backend.
    let (status, refused) = send(1, "server/discover", None, json!({})).await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["error"]["code"], -32601, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("down"),
        "{refused}"
    );
    // Without it, every backend speaks 2026-07-28 and discovery answers.
    h.reload(&config(false).replace(
        "  url: \"http://127.0.0.1:1/mcp\"\n  timeout: 2s\n",
        "  url: \"{mock}/mcp\"\n",
    ));
    let (status, discovered) = send(11, "server/discover", None, json!({})).await;
    assert_eq!(status, 200, "{discovered}");
    assert_eq!(
        discovered["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
    assert_eq!(discovered["result"]["resultType"], "complete");
    let (status, listed) = send(2, "tools/list", None, json!({})).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["result"]["cacheScope"], "private");
    assert!(names(&listed, "tools").contains(&"nb__write_note".to_string()));
    let (status, echoed) = send(
        3,
        "tools/call",
        Some("docs__echo"),
        json!({"name": "docs__echo", "arguments": {"text": "hey"}}),
    )
    .await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["result"]["content"][0]["text"], "hey", "{echoed}");
}
