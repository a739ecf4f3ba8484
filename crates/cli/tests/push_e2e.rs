//! Pushed configuration, end to end: a real kube-apiserver + etcd
//! (tests/k8s), the controller, and three gateway processes run the way the
//! pods would (no kubelet here), each subscribed with a ServiceAccount token
//! and the CA the controller published, serving traffic to `tollgate mock`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::Value;
use tokio::task::block_in_place;

const GATEWAYS: usize = 3;

/// What this test adds to the shared cluster environment.
impl Env {
    fn apply_route(&self, model: &str) {
        self.kubectl(&[
            "patch",
            "airoute",
            "chat",
            "--type",
            "merge",
            "-p",
            &format!(
                r#"{{"spec":{{"backends":[{{"providerRef":{{"name":"mock"}},"model":"{model}"}}]}}}}"#
            ),
        ]);
    }
    /// A counter from the controller's /metrics (0 when absent).
    async fn controller_counter(&self, series: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = match blocking_client().get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
    /// Waits until the AIGateway reports `connected` subscribed gateways and
    /// `updated` of them on the published configuration.
    fn wait_for_counts(&self, connected: u64, updated: u64) {
        wait_for(
            &format!("status {connected} connected / {updated} updated"),
            Duration::from_secs(20),
            || {
                let status = self.gateway_status();
                (status["connectedGateways"] == connected && status["updatedGateways"] == updated)
                    .then_some(())
            },
        )
    }
}

fn manifests(mock_url: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: edge, namespace: default}}
spec:
  apiKeys:
  - secretRef: {{name: edge-keys, key: client}}
    principal: {{user: tester}}
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
  backends: [{{providerRef: {{name: mock}}, model: model-0}}]
"#
    )
}

async fn served_model(client: &reqwest::Client, data: &str) -> Result<String, String> {
    let response = client
        .post(format!("{data}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat_body("chat", "hi", false))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["model"].as_str().unwrap_or_default().to_string())
}

async fn wait_until_all_serve(client: &reqwest::Client, gateways: &[Process], model: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for gateway in gateways {
        loop {
            if served_model(client, gateway.url("data")).await.as_deref() == Ok(model) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gateway {} never served {model}",
                gateway.url("data")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[derive(Default)]
struct LoadCounts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Steady traffic: two sequential clients per gateway until `stop`, bounded
/// by 120 s and 200,000 requests. Failures are logged and counted.
fn start_load(
    gateways: &[Process],
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for gateway in gateways {
        for _ in 0..2 {
            let (data, stop, counts) = (
                gateway.url("data").to_string(),
                stop.clone(),
                counts.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let client = blocking_client();
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(120)
                    && counts.ok.load(Ordering::Relaxed) < 200_000
                {
                    match served_model(&client, &data).await {
                        Ok(_) => counts.ok.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            eprintln!("load request to {data} failed: {error}");
                            counts.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_config_serves_changes_under_load_and_survives_the_controller() {
    let env = tokio::task::spawn_blocking(|| setup(manifests))
        .await
        .unwrap();
    let mut controller = env.start_controller();
    let (token_file, gateways) = block_in_place(|| {
        // Compiled, but nothing serves it until a gateway acknowledges.
        for object in ["airoute/chat", "aigateway/edge", "modelprovider/mock"] {
            wait_for(
                &format!("{object} Programmed=False NoGatewaysConnected"),
                Duration::from_secs(20),
                || {
                    (programmed(&env, object) == ("False".into(), "NoGatewaysConnected".into()))
                        .then_some(())
                },
            );
        }
        fetch_ca(&env);
        let token_file = token(
            &env,
            "tollgate-edge",
            Some("tollgate.dev/controller"),
            "token",
        );
        let gateways: Vec<Process> = (0..GATEWAYS)
            .map(|i| env.start_gateway(&format!("edge-{i}"), &token_file))
            .collect();
        (token_file, gateways)
    });
    let client = blocking_client();

    // Each gateway receives the snapshot, becomes ready and serves the mock.
    wait_until_all_serve(&client, &gateways, "model-0").await;
    for gateway in &gateways {
        let ready = client
            .get(format!("{}/readyz", gateway.url("admin")))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    }
    // The AIGateway says which configuration runs and on how many gateways.
    let hash = config_hash(gateways[0].url("admin")).await;
    let status = block_in_place(|| {
        wait_for(
            "status to count 3 gateways",
            Duration::from_secs(20),
            || {
                let status = env.gateway_status();
                (status["updatedGateways"] == 3 && status["configHash"] == hash[..12])
                    .then_some(status)
            },
        )
    });
    assert_eq!(status["connectedGateways"], 3, "{status}");
    // Acknowledged: now every object the configuration holds is Programmed,
    // and the AIGateway's Events say so.
    block_in_place(|| {
        for object in ["airoute/chat", "aigateway/edge", "modelprovider/mock"] {
            wait_for(
                &format!("{object} Programmed=True"),
                Duration::from_secs(20),
                || (programmed(&env, object) == ("True".into(), "Programmed".into())).then_some(()),
            );
        }
        let events = env.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=AIGateway,involvedObject.name=edge",
            "-o",
            "json",
        ]);
        let events: Value = serde_json::from_str(&events).unwrap_or_default();
        let reasons: Vec<&str> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "Normal")
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert!(
            reasons.contains(&"GatewayConnected") && reasons.contains(&"Programmed"),
            "{events}"
        );
    });
    let columns = block_in_place(|| env.kubectl(&["get", "aigateway", "edge", "-o", "wide"]));
    assert!(
        columns.contains("UP-TO-DATE")
            && columns.contains("CONNECTED")
            && columns.contains(&hash[..12]),
        "{columns}"
    );

    // Identities the controller must refuse: the right ServiceAccount with
    // the apiserver's audience, and another ServiceAccount with ours.
    let refused: Vec<Process> = block_in_place(|| {
        env.kubectl(&["create", "serviceaccount", "intruder"]);
        let wrong_audience = token(&env, "tollgate-edge", None, "wrong-audience");
        let intruder = token(
            &env,
            "intruder",
            Some("tollgate.dev/controller"),
            "intruder",
        );
        [("wrong-audience", &wrong_audience), ("intruder", &intruder)]
            .iter()
            .map(|(pod, file)| env.start_gateway(pod, file))
            .collect()
    });
    // The controller turned both away (not merely unreachable)...
    for (what, series) in [
        (
            "a token for another audience",
            r#"tollgate_controller_config_subscriptions_total{result="unauthenticated"}"#,
        ),
        (
            "another ServiceAccount",
            r#"tollgate_controller_config_subscriptions_total{result="forbidden"}"#,
        ),
    ] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while env.controller_counter(series).await < 1.0 {
            assert!(
                Instant::now() < deadline,
                "the controller never refused {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // ...and they never received a snapshot.
    for gateway in &refused {
        let ready = client
            .get(format!("{}/readyz", gateway.url("admin")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            ready.status(),
            503,
            "a refused gateway never gets a snapshot"
        );
        assert!(served_model(&client, gateway.url("data")).await.is_err());
    }
    assert_eq!(
        block_in_place(|| env.gateway_status())["connectedGateways"],
        3
    );
    drop(refused);

    // Route edits under steady load: every gateway follows, nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = start_load(&gateways, stop.clone(), counts.clone());
    let mut propagation = Vec::new();
    for edit in 1..=10 {
        let model = format!("model-{edit}");
        let started = Instant::now();
        block_in_place(|| env.apply_route(&model));
        wait_until_all_serve(&client, &gateways, &model).await;
        propagation.push(started.elapsed());
    }
    eprintln!("kubectl patch -> served on {GATEWAYS} gateways: {propagation:?}");

    // The controller dies: gateways keep serving their last snapshot.
    let _ = controller.0.kill();
    let _ = controller.0.wait();
    let during_outage = counts.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        counts.ok.load(Ordering::Relaxed) > during_outage + 30,
        "gateways kept serving while the controller was down"
    );
    for gateway in &gateways {
        assert_eq!(
            served_model(&client, gateway.url("data")).await.as_deref(),
            Ok("model-10")
        );
    }

    // A new controller, nothing changed meanwhile: gateways reconnect (with
    // backoff), status counts them again, and they follow edits again.
    let _controller = block_in_place(|| {
        let controller = env.start_controller();
        env.wait_for_counts(3, 3);
        env.apply_route("model-after-restart");
        controller
    });
    wait_until_all_serve(&client, &gateways, "model-after-restart").await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    eprintln!("steady load: {ok} requests succeeded, {failed} failed");
    assert_eq!(
        failed, 0,
        "no request may fail during route changes or the outage"
    );
    assert!(ok > 500, "the load actually ran: {ok}");
    block_in_place(|| env.wait_for_counts(3, 3));

    // A pod goes away and a new one arrives: the counts follow both ways.
    let mut gateways = gateways;
    drop(gateways.pop());
    block_in_place(|| env.wait_for_counts(2, 2));
    let replacement = block_in_place(|| env.start_gateway("edge-replacement", &token_file));
    block_in_place(|| env.wait_for_counts(3, 3));
    assert_eq!(
        served_model(&client, replacement.url("data"))
            .await
            .as_deref(),
        Ok("model-after-restart")
    );
}
