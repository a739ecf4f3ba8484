//! The MCP section's requests, gateway config and answer checks: the same
//! stateless (2026-07-28) `tools/call` of the mock's `add` tool sent to the
//! mock's `/mcp` directly, through a gateway's pass-through `/mcp/{path}`
//! and through its aggregated `/mcp`; and `tools/list` on `/mcp` merged
//! over [`BACKENDS`] MCPServers, against one backend's list directly.
//! The orchestration (phases, CPU samples) is in `runner::run_mcp`.

use crate::client::{BodyCheck, Client, RequestTemplate, snippet};
use bytes::Bytes;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// The stateless revision: no initialize, no session.
pub const VERSION: &str = "2026-07-28";
/// The mock's MCP endpoint, and the gateway's aggregated one.
pub const PATH: &str = "/mcp";
/// The MCPServer the calls go through (`/mcp/tools`, `tools__add` on `/mcp`).
pub const SERVER: &str = "tools";
/// The tool called: the mock's `add` (read-only, no side effects).
pub const TOOL: &str = "add";
/// MCPServers of the bench gateway, all pointing at the one shared mock.
pub const BACKENDS: usize = 10;
/// Tools the mock lists (`echo`, `add`, `write_note`, `slow`).
pub const MOCK_TOOLS: usize = 4;
/// Sequential requests each target's probe sends and parses in full.
pub const PROBE_REQUESTS: usize = 3;

/// Target names, in the JSON and the text report.
pub const CALL_DIRECT: &str = "mcp-call-direct";
pub const CALL_PASSTHROUGH: &str = "mcp-call-passthrough";
pub const CALL_AGGREGATED: &str = "mcp-call-aggregated";
pub const LIST_DIRECT: &str = "mcp-list-direct";
pub const LIST_AGGREGATED: &str = "mcp-list-aggregated";

/// Name of the `i`-th MCPServer (0-based): `tools`, then `tools-2` …
pub fn server_name(i: usize) -> String {
    if i == 0 {
        SERVER.to_string()
    } else {
        format!("{SERVER}-{}", i + 1)
    }
}

/// The tool's name on `/mcp`: prefixed with its server's path (the
/// default `Always` prefix mode).
pub fn aggregated_tool() -> String {
    format!("{SERVER}__{TOOL}")
}

/// An open gateway (no API keys: the MCP requests carry no credential)
/// with [`BACKENDS`] MCPServers, each at its own path (its name), all
/// pointing at the mock's `/mcp`, all aggregated into `/mcp`.
pub fn gateway_config(mock: SocketAddr) -> String {
    let mut c = String::from(
        "apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: bench-mcp, namespace: default}
spec: {listener: {port: 8080}, admin: {port: 9090}}
",
    );
    for i in 0..BACKENDS {
        let _ = write!(
            c,
            "---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: {name}, namespace: default}}
spec: {{gatewayRef: {{name: bench-mcp}}, path: {name}, url: \"http://{mock}{PATH}\"}}
",
            name = server_name(i)
        );
    }
    c
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn template(addr: SocketAddr, path: &str, method: &str, body: Value) -> RequestTemplate {
    let body = Bytes::from(serde_json::to_vec(&body).expect("static JSON serialises"));
    RequestTemplate::new(addr, path, body)
        .with_header("accept", "application/json, text/event-stream")
        .with_header("mcp-protocol-version", VERSION)
        .with_header("mcp-method", method)
        .with_check(BodyCheck::JsonRpcResult)
}

/// `tools/call` of `name` (`add` or its prefixed name) with a = 1, b = 2.
pub fn call_template(addr: SocketAddr, path: &str, name: &str) -> RequestTemplate {
    let body = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": {"a": 1, "b": 2}, "_meta": meta()},
    });
    template(addr, path, "tools/call", body).with_header("mcp-name", name)
}

/// `tools/list`, first page (the mock and `/mcp` return all in one).
pub fn list_template(addr: SocketAddr, path: &str) -> RequestTemplate {
    let body = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {"_meta": meta()},
    });
    template(addr, path, "tools/list", body)
}

/// What a correct answer holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// `add`'s result: this sum (structured content or text).
    Sum(f64),
    /// `tools/list`: exactly this many tools.
    Tools(usize),
}

/// The JSON-RPC message in an answer body: the body itself, or for an SSE
/// answer the last `data:` event holding a response (notifications before
/// it are skipped).
pub fn answer_message(content_type: &str, body: &[u8]) -> Result<Value, String> {
    if content_type.starts_with("text/event-stream") {
        let text = String::from_utf8_lossy(body);
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .rfind(|m| m.get("result").is_some() || m.get("error").is_some())
            .ok_or_else(|| format!("SSE answer without a response: {}", snippet(body)))
    } else {
        serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", snippet(body)))
    }
}

/// Checks one answer in full: HTTP 200, a JSON-RPC `result` (no `error`),
/// and the expected content.
pub fn check_answer(
    status: u16,
    content_type: &str,
    body: &[u8],
    expect: Expect,
) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {}", snippet(body)));
    }
    let m = answer_message(content_type, body)?;
    if let Some(e) = m.get("error") {
        return Err(format!("JSON-RPC error {e}"));
    }
    let Some(result) = m.get("result") else {
        return Err(format!("no JSON-RPC result: {}", snippet(body)));
    };
    match expect {
        Expect::Sum(want) => {
            if result["isError"] == true {
                return Err(format!("tool error: {result}"));
            }
            let structured = result["structuredContent"]["sum"].as_f64();
            let text = result["content"][0]["text"]
                .as_str()
                .and_then(|t| t.trim().parse::<f64>().ok());
            if structured.or(text) != Some(want) {
                return Err(format!("expected sum {want}: {result}"));
            }
        }
        Expect::Tools(want) => {
            let n = result["tools"].as_array().map_or(0, Vec::len);
            if n != want {
                let unavailable = &result["_meta"]["dev.tollgate/unavailable"];
                return Err(format!(
                    "expected {want} tools, got {n} (unavailable: {unavailable})"
                ));
            }
        }
    }
    Ok(())
}

/// Sends [`PROBE_REQUESTS`] requests one after the other and checks each
/// answer in full; the first failure is the error.
pub async fn probe(
    tmpl: &RequestTemplate,
    expect: Expect,
    timeout: Duration,
) -> Result<(), String> {
    let mut client = Client::new(tmpl.addr, timeout);
    for i in 0..PROBE_REQUESTS {
        let (status, ctype, body) = client
            .fetch(tmpl)
            .await
            .map_err(|e| format!("probe {}: {e}", i + 1))?;
        check_answer(status, &ctype, &body, expect)
            .map_err(|e| format!("probe {} to {}: {e}", i + 1, tmpl.path()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stub;

    #[test]
    fn config_has_ten_servers_on_the_mock() {
        let c = gateway_config("127.0.0.1:7777".parse().unwrap());
        assert_eq!(c.matches("kind: MCPServer").count(), BACKENDS);
        assert_eq!(
            c.matches(r#"url: "http://127.0.0.1:7777/mcp""#).count(),
            BACKENDS
        );
        assert!(c.contains("metadata: {name: tools, namespace: default}"));
        assert!(c.contains("path: tools-10,"));
        assert!(!c.contains("apiKeys"));
        assert_eq!(aggregated_tool(), "tools__add");
    }

    #[test]
    fn call_request_shape() {
        let t = call_template("127.0.0.1:1".parse().unwrap(), "/mcp", "tools__add");
        let r = t.build();
        let h = r.headers();
        assert_eq!(h["accept"], "application/json, text/event-stream");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["mcp-protocol-version"], VERSION);
        assert_eq!(h["mcp-method"], "tools/call");
        assert_eq!(h["mcp-name"], "tools__add");
        let list = list_template("127.0.0.1:1".parse().unwrap(), "/mcp/tools").build();
        assert_eq!(list.headers()["mcp-method"], "tools/list");
        assert!(list.headers().get("mcp-name").is_none());
        assert_eq!(list.uri().path(), "/mcp/tools");
    }

    #[test]
    fn answers_checked_in_full() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3"}],"structuredContent":{"sum":3.0},"isError":false}}"#;
        assert_eq!(
            check_answer(200, "application/json", ok, Expect::Sum(3.0)),
            Ok(())
        );
        assert!(check_answer(200, "application/json", ok, Expect::Sum(4.0)).is_err());
        assert!(check_answer(502, "application/json", ok, Expect::Sum(3.0)).is_err());
        let err =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool: x"}}"#;
        let why = check_answer(200, "application/json", err, Expect::Sum(3.0)).unwrap_err();
        assert!(why.contains("-32602"), "{why}");
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{},{}]}}\n\n";
        assert_eq!(
            check_answer(200, "text/event-stream", sse, Expect::Tools(2)),
            Ok(())
        );
        let why = check_answer(200, "text/event-stream", sse, Expect::Tools(40)).unwrap_err();
        assert!(why.contains("got 2"), "{why}");
        // The in-loop check agrees on both.
        assert!(BodyCheck::JsonRpcResult.verify(ok).is_ok());
        assert!(BodyCheck::JsonRpcResult.verify(err).is_err());
        assert!(BodyCheck::JsonRpcResult.verify(b"{}").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probe_against_stub() {
        let (addr, server) = stub::spawn(Duration::ZERO).await.unwrap();
        let t = Duration::from_secs(2);
        probe(&call_template(addr, PATH, TOOL), Expect::Sum(3.0), t)
            .await
            .unwrap();
        probe(&list_template(addr, PATH), Expect::Tools(MOCK_TOOLS), t)
            .await
            .unwrap();
        let why = probe(&call_template(addr, PATH, "nope"), Expect::Sum(3.0), t)
            .await
            .unwrap_err();
        assert!(why.contains("JSON-RPC error"), "{why}");
        let why = probe(&list_template(addr, "/mcp/none"), Expect::Tools(4), t)
            .await
            .unwrap_err();
        assert!(why.contains("HTTP 404"), "{why}");
        server.abort();
    }
}
