//! Agent-behaviour alerts in a cluster: a gateway pod (a process here)
//! that sees an agent burst reports it, and the controller records exactly
//! one Warning Event on the MCPServer, against a real kube-apiserver.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::{Value, json};
use tokio::task::block_in_place;

fn manifests(mock_url: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: edge, namespace: default}}
spec:
  apiKeys:
  - secretRef: {{name: edge-keys, key: client}}
    principal: {{user: agent-7, team: search}}
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-keys, namespace: default}}
stringData: {{client: {KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: watched, namespace: default}}
spec:
  gatewayRef: {{name: edge}}
  url: "{mock_url}/mcp"
  anomalies: {{interval: 1s, warmupIntervals: 2, newTools: false}}
"#
    )
}

async fn call(client: &reqwest::Client, gateway: &Process, id: u64) -> u16 {
    client
        .post(format!("{}/mcp/watched", gateway.url("data")))
        .bearer_auth(KEY)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .json(
            &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": "t"},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}}}),
        )
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn agent_events(env: &Env) -> Vec<Value> {
    let text = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=watched,reason=AgentBurst",
        "-o",
        "json",
    ]);
    serde_json::from_str::<Value>(&text).unwrap_or_default()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bursting_agent_gets_one_event_on_the_mcp_server() {
    let env = tokio::task::spawn_blocking(|| setup(manifests))
        .await
        .unwrap();
    let _controller = env.start_controller();
    let gateway = block_in_place(|| {
        fetch_ca(&env);
        let token_file = token(
            &env,
            "tollgate-edge",
            Some("tollgate.dev/controller"),
            "token",
        );
        env.start_gateway("edge-0", &token_file)
    });
    let client = blocking_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&client, &gateway, 0).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the gateway never served /mcp/watched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ordinary use for three intervals, then a burst.
    let started = Instant::now();
    let mut id = 1;
    while started.elapsed() < Duration::from_millis(3_300) {
        assert_eq!(call(&client, &gateway, id).await, 200);
        id += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for _ in 0..60 {
        assert_eq!(
            call(&client, &gateway, id).await,
            200,
            "action Alert holds nobody back"
        );
        id += 1;
    }
    let events = block_in_place(|| {
        wait_for("an AgentBurst event", Duration::from_secs(30), || {
            let events = agent_events(&env);
            (!events.is_empty()).then_some(events)
        })
    });
    assert_eq!(events[0]["type"], "Warning", "{events:?}");
    let note = events[0]["note"]
        .as_str()
        .or(events[0]["message"].as_str())
        .unwrap_or_default();
    assert!(note.contains("agent agent-7"), "{note}");
    // Still one a few reports later: one incident, one Event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(block_in_place(|| agent_events(&env)).len(), 1);
}
