//! `tollgate mcp-bridge` with real processes: a stdio MCP server (`tollgate
//! mock --mcp-stdio`) behind the bridge, behind a standalone gateway whose
//! MCPServer points at the bridge. One server process per session, started
//! by `initialize` and stopped by DELETE, by the idle timeout and by the
//! bridge's shutdown; answers routed to the POST that asked, progress
//! streamed; bad input answered with JSON-RPC errors.

mod common;

use std::time::{Duration, Instant};

use common::mcp::*;
use common::*;
use serde_json::json;

/// Pids of the stdio servers the bridge runs (its children running
/// `mock --mcp-stdio`), from /proc.
fn servers_of(bridge: &Process) -> Vec<u32> {
    let parent = bridge.child.id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold anything but the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stdio = String::from_utf8_lossy(&cmdline).contains("--mcp-stdio");
        // A zombie not yet reaped has an empty command line.
        if ppid == Some(parent) && stdio {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until the bridge runs `count` servers.
fn wait_for_servers(bridge: &Process, count: usize, what: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let servers = servers_of(bridge);
        if servers.len() == count {
            return servers;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} servers, not {count}",
            servers.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_bridge(extra: &[&str]) -> Process {
    let mut args = vec!["mcp-bridge", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.extend(["--", BIN, "mock", "--mcp-stdio"]);
    Process::start(&args)
}

#[tokio::test]
async fn a_stdio_server_is_served_through_the_bridge_and_the_gateway() {
    let bridge = start_bridge(&["--max-sessions", "2", "--max-body-bytes", "65536"]);
    let direct = format!("{}/mcp", bridge.url("data"));
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gw.yaml",
        &gateway_config("notes", bridge.url("data")),
    );
    let gateway = start_gateway(&path);
    let url = format!("{}/mcp/notes", gateway.url("data"));
    assert!(servers_of(&bridge).is_empty(), "no session, no process");

    // initialize starts a server process; the gateway seals its session id.
    let answer = rpc(&url, Some(KEY), None, initialize(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["id"], 1);
    assert_eq!(body["result"]["serverInfo"]["name"], "tollgate-mock");
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
    let session = answer.session.expect("a session");
    assert!(session.starts_with("tg1."), "{session}");
    let first = wait_for_servers(&bridge, 1, "initialize starts one server");
    let s = Some(session.as_str());

    use_a_session(&url, Some(KEY), s).await;

    // Bad input, straight at the bridge: JSON-RPC errors, no harm done.
    let cases: [(&[u8], Option<&str>, u16, i64); 5] = [
        (b"{not json", None, 400, -32700),
        (
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            None,
            400,
            -32600,
        ),
        (
            br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            None,
            400,
            -32600,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            None,
            400,
            -32600,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            Some("no-such-session"),
            404,
            -32600,
        ),
    ];
    for (body, session, status, code) in cases {
        let answer = post(&direct, None, session, body.to_vec()).await;
        assert_eq!(
            answer.status,
            status,
            "{}: {}",
            String::from_utf8_lossy(body),
            answer.text
        );
        assert_eq!(answer.json()["error"]["code"], code, "{}", answer.text);
    }
    let huge =
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(70_000)}});
    let answer = rpc(&direct, None, None, huge).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    let wrong = client().put(&direct).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    let elsewhere = client()
        .post(format!("{}/other", bridge.url("data")))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);

    // A second session straight at the bridge is a second process; the
    // third is over --max-sessions: 503 and a JSON-RPC error.
    let other = rpc(&direct, None, None, initialize(7)).await;
    assert_eq!(other.status, 200, "{}", other.text);
    let other_session = other.session.unwrap();
    wait_for_servers(&bridge, 2, "a second session, a second server");
    let full = rpc(&direct, None, None, initialize(8)).await;
    assert_eq!(full.status, 503, "{}", full.text);
    assert_eq!(full.json()["error"]["code"], -32000);
    assert_eq!(full.json()["id"], 8);
    // Its GET stream opens once; a second is refused.
    let open_stream = || {
        client()
            .get(&direct)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &other_session)
            .send()
    };
    let stream = open_stream().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert_eq!(open_stream().await.unwrap().status(), 409);
    drop(stream);

    // DELETE through the gateway stops that session's process, and only it.
    let deleted = client()
        .delete(&url)
        .bearer_auth(KEY)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let left = wait_for_servers(&bridge, 1, "DELETE stops the session's server");
    assert!(
        !left.contains(&first[0]),
        "the deleted session's process is gone"
    );
    let after = rpc(
        &url,
        Some(KEY),
        s,
        json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}),
    )
    .await;
    assert_eq!(after.status, 404, "{}", after.text);

    // Shutdown stops every server and exits cleanly.
    let mut bridge = bridge;
    let status = bridge.terminate();
    assert!(status.success(), "{status:?}");
    for pid in left {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "server {pid} outlived the bridge"
        );
    }
}

#[tokio::test]
async fn an_idle_session_is_stopped() {
    let bridge = start_bridge(&["--idle-timeout-secs", "1"]);
    let direct = format!("{}/mcp", bridge.url("data"));
    let answer = rpc(&direct, None, None, initialize(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let session = answer.session.unwrap();
    wait_for_servers(&bridge, 1, "initialize starts one server");
    // Nothing in flight for a second: stopped, and the session is gone.
    wait_for_servers(&bridge, 0, "the idle timeout stops the server");
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let after = rpc(&direct, None, Some(&session), ping).await;
    assert_eq!(after.status, 404, "{}", after.text);
}
