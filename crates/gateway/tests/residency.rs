//! Data residency: a request never reaches a provider outside the regions
//! its gateway, route or caller allows, fallback included. With every
//! allowed provider failing, the client gets a clear 503, not an answer
//! from another region.

mod common;

use common::{Harness, json_body};
use serde_json::json;

const MANIFESTS: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys:
  - secretRef: {name: keys, key: k}
    principal: {user: anyone}
  - secretRef: {name: keys, key: eu}
    principal: {user: eu-only, labels: {allowed-regions: "eu-west-1|eu-central-1"}}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {k: "{key}", eu: "tg-eu-caller"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: eu-down}
spec: {type: Mock, endpoint: "http://127.0.0.1:1/v1", dataRegion: eu-west-1}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: us-up}
spec: {type: Mock, endpoint: "{mock}/v1", dataRegion: us-east-1}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: nowhere}
spec: {type: Mock, endpoint: "{mock}/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: open}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends:
  - {providerRef: {name: eu-down}, model: mock-chat, priority: 0}
  - {providerRef: {name: us-up}, model: mock-chat, priority: 1}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: eu}
spec:
  gatewayRef: {name: gw}
  models: [chat-eu]
  allowedRegions: ["eu-*"]
  backends:
  - {providerRef: {name: eu-down}, model: mock-chat, priority: 0}
  - {providerRef: {name: us-up}, model: mock-chat, priority: 1}
  - {providerRef: {name: nowhere}, model: mock-chat, priority: 2}
"#;

async fn chat(h: &Harness, key: &str, model: &str) -> (u16, serde_json::Value) {
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "where are you?"}]}))
        .send()
        .await
        .unwrap();
    json_body(response).await
}

#[tokio::test]
async fn no_request_leaves_its_allowed_regions() {
    let h = Harness::start(MANIFESTS, &[]).await;

    // Unrestricted: the EU provider is down, the US one answers.
    let (status, body) = chat(&h, common::KEY, "chat").await;
    assert_eq!(status, 200, "{body}");

    // The route allows EU only: its one EU provider is down, and neither
    // the US provider nor the one without a region may answer instead. The
    // client gets a 503 that says so, with the EU provider's failure.
    for _ in 0..3 {
        let (status, body) = chat(&h, common::KEY, "chat-eu").await;
        assert_eq!(status, 503, "not a US answer: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("no other region may answer (route: eu-*)"),
            "{message}"
        );
        assert!(message.contains("eu-down"), "{message}");
    }

    // A caller restricted to the EU gets no US answer on the open route
    // either.
    let (status, body) = chat(&h, "tg-eu-caller", "chat").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("caller: eu-west-1"), "{message}");

    // No allowed provider at all: 503 naming the restrictions.
    h.reload(&MANIFESTS.replace(
        "spec: {type: Mock, endpoint: \"http://127.0.0.1:1/v1\", dataRegion: eu-west-1}",
        "spec: {type: Mock, endpoint: \"http://127.0.0.1:1/v1\", dataRegion: ap-south-1}",
    ));
    let (status, body) = chat(&h, common::KEY, "chat-eu").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("route: eu-*"), "{message}");
    let (status, body) = chat(&h, "tg-eu-caller", "chat").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("caller: eu-west-1, eu-central-1"),
        "{body}"
    );
    let (status, _) = chat(&h, common::KEY, "chat").await;
    assert_eq!(status, 200, "unrestricted requests still fall back");
}
