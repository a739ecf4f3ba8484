//! Fair sharing of a provider's concurrency cap, in process: one greedy key
//! keeping a small cap full of slow streams cannot starve another key.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::Harness;
use serde_json::json;

const GREEDY: &str = "tg-greedy-key";
const POLITE: &str = "tg-polite-key";

fn manifests(fairness: &str) -> String {
    format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec:
  apiKeys:
  - secretRef: {{name: keys, key: greedy}}
    principal: {{user: greedy}}
  - secretRef: {{name: keys, key: polite}}
    principal: {{user: polite}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{greedy: "{GREEDY}", polite: "{POLITE}"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: capped}}
spec: {{type: Mock, endpoint: "{{mock}}/v1", maxConcurrentRequests: 4{fairness}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  gatewayRef: {{name: gw}}
  models: [chat]
  backends: [{{providerRef: {{name: capped}}, model: mock-chat}}]
"#
    )
}

async fn chat(h: &Harness, key: &str, content: &str, stream: bool) -> u16 {
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(key)
        .timeout(Duration::from_secs(10))
        .json(&json!({"model": "chat", "stream": stream,
            "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    // Read to the end: a stream holds its slot until then.
    let _ = response.bytes().await;
    status
}

/// Eight greedy workers keep the 4-slot provider full of 200 ms streams for
/// `duration`; meanwhile the polite key sends five requests one after
/// another. Returns the polite statuses and the greedy 429 count.
async fn contend(h: &Arc<Harness>, duration: Duration) -> (Vec<u16>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (h, stop, refused) = (h.clone(), stop.clone(), refused.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = chat(&h, GREEDY, "[mock ttft_ms=200] go", true).await;
                if status == 429 {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    // Let the greedy key fill the provider first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut polite = Vec::new();
    for _ in 0..5 {
        polite.push(chat(h, POLITE, "hi", false).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(duration.saturating_sub(Duration::from_millis(300))).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    (polite, refused.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_key_cannot_starve_another_key() {
    let h = Arc::new(Harness::start(&manifests(""), &[]).await);
    let (polite, greedy_refused) = contend(&h, Duration::from_millis(800)).await;
    assert_eq!(polite, vec![200; 5], "the polite key is served every time");
    assert!(greedy_refused > 0, "the greedy key did hit the cap");
    let metrics = h.metrics();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tollgate_fair_queue_wait_seconds_count{provider=")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    // Every slot came back.
    for _ in 0..4 {
        assert_eq!(chat(&h, GREEDY, "hi", false).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_queue_wait_the_other_key_is_refused() {
    // The control: fail fast, as before fairness, so the test above means something.
    let h = Arc::new(Harness::start(&manifests(", fairness: {maxQueueWait: 0s}"), &[]).await);
    let (polite, _) = contend(&h, Duration::from_millis(800)).await;
    assert!(polite.contains(&429), "{polite:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_share_keeps_headroom_for_others() {
    let h = Arc::new(Harness::start(&manifests(", fairness: {maxShare: 0.5}"), &[]).await);
    // The polite key holds one slow stream, so the greedy key is not alone.
    let slow = {
        let h = h.clone();
        tokio::spawn(async move { chat(&h, POLITE, "[mock ttft_ms=600] slow", true).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let greedy: Vec<_> = (0..3)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { chat(&h, GREEDY, "[mock ttft_ms=300] go", true).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in greedy {
        statuses.push(task.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 429], "two of four slots at most");
    assert_eq!(slow.await.unwrap(), 200);
    let metrics = h.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_fair_share_rejections_total")
                && l.contains("reason=\"max_share\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}
