//! Translation between MCP eras: a 2026-07-28 client in front of a backend
//! that speaks only 2025-11-25, and a 2025-11-25 client in front of one
//! that speaks only 2026-07-28 (`tollgate mock --mcp-era`). Without the
//! gateway both pairs fail (the spec's compatibility matrix).

mod common;

use common::{Harness, json_body, spawn_mock};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const MODERN: &str = "2026-07-28";

async fn one_era_mock(era: &str) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let stop = spawn_mock(listener, &["--mcp-era", era]);
    (url, stop)
}

fn manifests(old: &str, new: &str) -> String {
    manifests_translating(old, new, true)
}

fn manifests_translating(old: &str, new: &str, translate: bool) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec: {{}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: old}}
spec:
  gatewayRef: {{name: gw}}
  url: "{old}"
  translateRevisions: {translate}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: new}}
spec:
  gatewayRef: {{name: gw}}
  url: "{new}"
  translateRevisions: {translate}
"#
    )
}

/// A 2026-07-28 request: version, capabilities and client in `_meta`, the
/// method and name mirrored in headers.
async fn modern(
    h: &Harness,
    path: &str,
    id: u64,
    method: &str,
    mut params: Value,
) -> reqwest::Response {
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    params["_meta"]["io.modelcontextprotocol/clientInfo"] =
        json!({"name": "modern-agent", "version": "1"});
    let mut request = h
        .client
        .post(format!("{}{path}", h.url))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    request
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
}

async fn legacy(h: &Harness, session: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = h
        .client
        .post(format!("{}/mcp/new", h.url))
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_modern_client_uses_a_legacy_only_backend() {
    let (old, _stop_old) = one_era_mock("legacy").await;
    let (new, _stop_new) = one_era_mock("modern").await;
    let h = Harness::start(&manifests(&old, &new), &[]).await;

    // Directly, the legacy backend refuses a modern request.
    let direct = h
        .client
        .post(&old)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 400);

    // Through the gateway: discovery answers from the backend's initialize.
    let (status, discovered) =
        json_body(modern(&h, "/mcp/old", 1, "server/discover", json!({})).await).await;
    assert_eq!(status, 200, "{discovered}");
    let result = &discovered["result"];
    assert_eq!(result["resultType"], "complete");
    assert!(
        result["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN)),
        "{result}"
    );
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "tollgate-mock"
    );

    // Lists carry the modern fields, calls work.
    let (status, listed) =
        json_body(modern(&h, "/mcp/old", 2, "tools/list", json!({})).await).await;
    assert_eq!(status, 200, "{listed}");
    let result = &listed["result"];
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["ttlMs"], 0);
    assert_eq!(result["cacheScope"], "private");
    let names: Vec<&str> = result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");
    let (status, called) = json_body(
        modern(
            &h,
            "/mcp/old",
            3,
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["id"], 3);
    assert_eq!(called["result"]["resultType"], "complete");
    assert_eq!(called["result"]["content"][0]["text"], "5", "{called}");

    // A streamed answer: progress passes, the result is translated.
    let response = modern(
        &h,
        "/mcp/old",
        4,
        "tools/call",
        json!({"name": "slow", "arguments": {"steps": 3}, "_meta": {"progressToken": "p-1"}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let events = common::sse_events(response).await;
    let messages: Vec<&Value> = events.iter().map(|(_, m)| m).collect();
    let progress = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 3, "{messages:?}");
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 4);
    assert_eq!(last["result"]["resultType"], "complete", "{last}");
}

#[tokio::test]
async fn a_legacy_client_uses_a_modern_only_backend() {
    let (old, _stop_old) = one_era_mock("legacy").await;
    let (new, _stop_new) = one_era_mock("modern").await;
    let h = Harness::start(&manifests(&old, &new), &[]).await;

    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {"roots": {}},
        "clientInfo": {"name": "legacy-agent", "version": "1"}}});
    // Directly, the modern backend refuses the handshake.
    let direct = h
        .client
        .post(&new)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 400);

    for round in 0..2 {
        // The first round learns the backend's era; the second knows it.
        let response = legacy(&h, None, initialize.clone()).await;
        let session = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string())
            .expect("a session id");
        let (status, body) = json_body(response).await;
        assert_eq!(status, 200, "round {round}: {body}");
        let result = &body["result"];
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert_eq!(result["serverInfo"]["name"], "tollgate-mock");
        assert!(result["capabilities"]["tools"].is_object(), "{result}");

        let note = legacy(
            &h,
            Some(&session),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        assert_eq!(note.status(), 202);
        let (status, listed) = json_body(
            legacy(
                &h,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        assert!(listed["result"].get("resultType").is_none(), "{listed}");
        assert!(listed["result"].get("ttlMs").is_none(), "{listed}");
        assert!(
            listed["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "echo")
        );
        let (status, called) = json_body(
            legacy(
                &h,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hello"}}}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{called}");
        assert_eq!(called["result"]["content"][0]["text"], "hello", "{called}");
        let (status, pong) = json_body(
            legacy(
                &h,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
            )
            .await,
        )
        .await;
        assert_eq!((status, &pong["result"]), (200, &json!({})));
        let stream = h
            .client
            .get(format!("{}/mcp/new", h.url))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 405);
        let end = h
            .client
            .delete(format!("{}/mcp/new", h.url))
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(end.status(), 200);
    }
}

/// POSTs `body` to `/mcp`, in `session` when given.
async fn aggregated(h: &Harness, session: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = h
        .client
        .post(format!("{}/mcp", h.url))
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn one_aggregated_session_spans_both_eras() {
    let (old, _stop_old) = one_era_mock("legacy").await;
    let (new, _stop_new) = one_era_mock("modern").await;
    let h = Harness::start(&manifests(&old, &new), &[]).await;
    let response = aggregated(
        &h,
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "legacy-agent", "version": "1"}}}),
    )
    .await;
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string())
        .expect("a session");
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200, "{body}");
    let list = |id: u64, method: &str| json!({"jsonrpc": "2.0", "id": id, "method": method});
    let (status, listed) =
        json_body(aggregated(&h, Some(&session), list(1, "tools/list")).await).await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed["result"].get("_meta").is_none(),
        "no server left out: {listed}"
    );
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"old__echo") && names.contains(&"new__echo"),
        "{names:?}"
    );
    for (id, name) in [(2, "old__add"), (3, "new__add")] {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": {"a": 40, "b": 2}}});
        let (status, called) = json_body(aggregated(&h, Some(&session), call).await).await;
        assert_eq!(status, 200, "{called}");
        assert_eq!(
            called["result"]["content"][0]["text"], "42",
            "{name}: {called}"
        );
        assert!(called["result"].get("resultType").is_none(), "{called}");
    }
    let (status, prompts) =
        json_body(aggregated(&h, Some(&session), list(4, "prompts/list")).await).await;
    assert_eq!(status, 200, "{prompts}");
    let names: Vec<&str> = prompts["result"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["new__greeting", "old__greeting"],
        "one from each era"
    );
}

#[tokio::test]
async fn without_translation_pass_through_is_faithful() {
    let (old, _stop_old) = one_era_mock("legacy").await;
    let (new, _stop_new) = one_era_mock("modern").await;
    let h = Harness::start(&manifests_translating(&old, &new, false), &[]).await;
    // The legacy backend's refusal of a modern request, as it gave it.
    let (status, body) = json_body(modern(&h, "/mcp/old", 1, "tools/list", json!({})).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    // The modern backend's refusal of the handshake, as it gave it.
    let response = legacy(
        &h,
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "legacy-agent", "version": "1"}}}),
    )
    .await;
    assert!(response.headers().get("mcp-session-id").is_none());
    let (status, body) = json_body(response).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2026-07-28 only"),
        "{body}"
    );
}
