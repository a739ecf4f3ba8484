//! TokenBudgets against a real kube-apiserver: two gateway processes sharing
//! one Redis count one budget, the controller writes its usage to the
//! TokenBudget's status and printer columns, and an edit of the budget
//! reaches both gateways like any other configuration change.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use serde_json::Value;
use tokio::task::block_in_place;
use tollgate_testenv::redis::RedisServer;

fn manifests(mock_url: &str, redis_url: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: edge, namespace: default}}
spec:
  redis: {{url: "{redis_url}"}}
  apiKeys:
  - secretRef: {{name: edge-keys, key: client}}
    principal: {{user: tester, team: search}}
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-keys, namespace: default}}
stringData: {{client: {KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: mock, namespace: default}}
spec: {{type: Mock, endpoint: "{mock_url}/v1"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat, namespace: default}}
spec:
  gatewayRef: {{name: edge}}
  models: [chat]
  backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: TokenBudget
metadata: {{name: search, namespace: default}}
spec:
  gatewayRef: {{name: edge}}
  subject: {{team: search}}
  limits: [{{window: Month, requests: 5}}]
  softThresholds: [60]
"#
    )
}

async fn status_of(client: &reqwest::Client, gateway: &Process) -> u16 {
    client
        .post(format!("{}/v1/chat/completions", gateway.url("data")))
        .bearer_auth(KEY)
        .json(&chat_body("chat", "hi", false))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn budget(env: &Env) -> Value {
    serde_json::from_str(&env.kubectl(&["get", "tokenbudget", "search", "-o", "json"]))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_status_and_edits_follow_two_gateways_sharing_redis() {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let env = tokio::task::spawn_blocking(move || setup(|mock| manifests(mock, &redis_url)))
        .await
        .unwrap();
    let _controller = env.start_controller();
    let gateways: Vec<Process> = block_in_place(|| {
        fetch_ca(&env);
        let token_file = token(
            &env,
            "tollgate-edge",
            Some("tollgate.dev/controller"),
            "token",
        );
        (0..2)
            .map(|i| env.start_gateway(&format!("edge-{i}"), &token_file))
            .collect()
    });
    let client = blocking_client();
    // Both serve; every request so far counts on the one shared budget.
    let mut served = 0;
    for gateway in &gateways {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while status_of(&client, gateway).await != 200 {
            assert!(std::time::Instant::now() < deadline, "gateway never served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served += 1;
    }
    // 5 per month across both gateways: the rest of the five, then 429 on each.
    let mut next = 0;
    while served < 5 {
        assert_eq!(status_of(&client, &gateways[next % 2]).await, 200);
        served += 1;
        next += 1;
    }
    for gateway in &gateways {
        assert_eq!(
            status_of(&client, gateway).await,
            429,
            "the shared budget is spent"
        );
    }

    // The controller writes the gateways' usage to status and the columns.
    let status = block_in_place(|| {
        wait_for("TokenBudget status used 5", Duration::from_secs(30), || {
            let status = budget(&env)["status"].clone();
            (status["used"] == "5 requests").then_some(status)
        })
    });
    assert_eq!(status["limit"], "5 requests/Month", "{status}");
    assert_eq!(status["remaining"], "0 requests", "{status}");
    assert_eq!(status["usage"][0]["metric"], "requests", "{status}");
    assert!(
        status["usage"][0]["resetsAt"]
            .as_str()
            .is_some_and(|t| t.ends_with("T00:00:00Z"))
    );
    assert_eq!(programmed(&env, "tokenbudget/search").0, "True", "{status}");
    let columns = block_in_place(|| env.kubectl(&["get", "tokenbudgets"]));
    let header: Vec<&str> = columns.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "GATEWAY",
            "USED",
            "LIMIT",
            "REMAINING",
            "ACTION",
            "ACCEPTED",
            "AGE"
        ],
        "{columns}"
    );
    let row = columns.lines().nth(1).unwrap();
    for cell in [
        "search",
        "edge",
        "5 requests",
        "5 requests/Month",
        "0 requests",
        "Reject",
        "True",
    ] {
        assert!(row.contains(cell), "{cell:?} in {columns}");
    }

    // 60% (the third request) was crossed on one of the gateways: one
    // Warning Event on the budget, recorded by the controller.
    let events = block_in_place(|| {
        wait_for("the soft-threshold Event", Duration::from_secs(30), || {
            let events: Value = serde_json::from_str(&env.kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=TokenBudget,involvedObject.name=search,reason=SoftThresholdReached",
                "-o",
                "json",
            ]))
            .unwrap_or_default();
            let items = events["items"].as_array().cloned().unwrap_or_default();
            (!items.is_empty()).then_some(items)
        })
    });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    let note = events[0]["note"]
        .as_str()
        .or(events[0]["message"].as_str())
        .unwrap_or_default();
    assert!(note.contains("60% of the limit requests"), "{note}");

    // An edit reaches both gateways: two more requests fit, on either.
    block_in_place(|| {
        env.kubectl(&[
            "patch",
            "tokenbudget",
            "search",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"limits":[{"window":"Month","requests":7}]}}"#,
        ])
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for gateway in &gateways {
        while status_of(&client, gateway).await != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "the edit never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for gateway in &gateways {
        assert_eq!(status_of(&client, gateway).await, 429, "7 of 7 used");
    }
    block_in_place(|| {
        wait_for("status after the edit", Duration::from_secs(30), || {
            let status = budget(&env)["status"].clone();
            (status["used"] == "7 requests" && status["limit"] == "7 requests/Month").then_some(())
        })
    });
    drop(gateways);
}
