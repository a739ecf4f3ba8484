//! In-process harness: the mock provider and a gateway serving one compiled
//! configuration, both in this test process on loopback ports, so stage
//! behaviour is tested without spawning binaries (the black-box tests in
//! `crates/cli/tests` cover the real binary).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_gateway::providers::http::Clients;
use tollgate_gateway::runtime::{Gateway, Runtime};
use tollgate_gateway::{llm, server, standalone};

pub const KEY: &str = "tg-harness-key";

#[derive(Parser)]
struct MockCli {
    #[command(flatten)]
    args: tollgate_mock::MockArgs,
}

pub struct Harness {
    pub gateway: Arc<Gateway>,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the mock.
    pub mock: String,
    pub client: reqwest::Client,
    stop: watch::Sender<bool>,
    dir: tempfile::TempDir,
}

fn install(gateway: &Arc<Gateway>, dir: &std::path::Path, mock: &str, manifests: &str) {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        manifests
            .replace("{mock}", mock)
            .replace("{mock_port}", &mock[mock.rfind(':').map_or(0, |i| i + 1)..])
            .replace("{key}", KEY),
    )
    .unwrap();
    let (snapshot, _warnings) =
        standalone::compile_files(&[path], None, &tollgate_config::DigestKey::generate())
            .expect("harness config compiles");
    gateway.install(Runtime::build(snapshot, gateway).expect("runtime builds"));
}

/// Serves a mock (started with `mock_flags`) on `listener` until the
/// returned sender says stop: for tests that need a second backend.
pub fn spawn_mock(listener: TcpListener, mock_flags: &[&str]) -> watch::Sender<bool> {
    let mut argv = vec!["mock", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(mock_flags);
    let config = Arc::new(MockCli::parse_from(argv).args.config());
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(tollgate_mock::serve(listener, config, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    stop
}

impl Harness {
    /// Starts the mock with `mock_flags`, then a gateway on `manifests`,
    /// where `{mock}` stands for the mock's base URL, `{mock_port}` for its
    /// port and `{key}` for [`KEY`].
    pub async fn start(manifests: &str, mock_flags: &[&str]) -> Harness {
        let mock_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = format!("http://{}", mock_listener.local_addr().unwrap());
        let stop = spawn_mock(mock_listener, mock_flags);
        let stop_rx = stop.subscribe();

        let dir = tempfile::tempdir().unwrap();
        let gateway = Arc::new(Gateway::new(Clients::new().unwrap()));
        install(&gateway, dir.path(), &mock, manifests);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(
            listener,
            gateway.clone(),
            llm::handle,
            stop_rx,
            Duration::from_secs(1),
        ));
        Harness {
            gateway,
            url,
            mock,
            client: reqwest::Client::new(),
            stop,
            dir,
        }
    }

    /// Compiles `manifests` (placeholders as for [`Harness::start`]) and
    /// installs them, as a hot reload does.
    pub fn reload(&self, manifests: &str) {
        install(&self.gateway, self.dir.path(), &self.mock, manifests);
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .timeout(Duration::from_secs(20))
    }

    /// The gateway's metrics text.
    pub fn metrics(&self) -> String {
        self.gateway.metrics.encode()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The status and the body as JSON; panics when the body is not JSON.
pub async fn json_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, value)
}

/// The status and the body as JSON, or as a JSON string when it is not JSON.
pub async fn json_or_text_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The body's bytes, and whether it ended with a transport error.
pub async fn read_bytes(response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(_) => return (body, true),
        }
    }
    (body, false)
}

/// The body as text, and whether it ended with a transport error.
pub async fn read_all(response: reqwest::Response) -> (String, bool) {
    let (body, broke) = read_bytes(response).await;
    (String::from_utf8_lossy(&body).into_owned(), broke)
}

/// `(event name, data)` of every SSE event of a 200 response whose body
/// ends cleanly; `data` must be JSON, or `[DONE]` (kept as a string).
pub async fn sse_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let status = response.status();
    let (body, broke) = read_bytes(response).await;
    let text = String::from_utf8(body).expect("the SSE body is UTF-8");
    assert_eq!(status, 200, "{text}");
    assert!(!broke, "transport error after {text}");
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        let value = if data == "[DONE]" {
            Value::String(data)
        } else {
            serde_json::from_str(&data).unwrap_or_else(|_| panic!("bad event data {data}"))
        };
        events.push((name, value));
    }
    events
}

/// Whether some sample line of `metrics` contains every one of `parts` and
/// is not 0.
pub fn metric_has(metrics: &str, parts: &[&str]) -> bool {
    metrics
        .lines()
        .any(|line| parts.iter().all(|p| line.contains(p)) && !line.ends_with(" 0"))
}

/// The sum of every sample line of `metrics` that contains `needle`.
pub fn metric_sum(metrics: &str, needle: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.contains(needle) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One gateway with a route per provider format, all on the mock:
/// `chat` (OpenAI), `claude` (Anthropic), `gemini` (Gemini), `bedrock`
/// (Bedrock), `azure` (Azure OpenAI), `embed` (OpenAI embeddings), and
/// `bedrock-wrong-secret` (signed with the wrong secret). Start the mock with
/// [`MOCK_AUTH`] so every provider's authentication is checked.
pub const ALL_FORMATS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec:
  apiKeys:
  - secretRef: {name: keys, key: k}
    principal: {user: tester, team: qa}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData:
  k: "{key}"
  provider: "mock-provider-key"
  gemini: "mock-gemini-key"
  azure: "mock-azure-key"
  accessKeyId: AKIDHARNESS
  secretAccessKey: harness-secret
  wrongSecret: not-the-secret
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: openai}
spec: {type: Mock, endpoint: "{mock}/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: anthropic}
spec:
  type: Anthropic
  endpoint: "{mock}/v1"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: keys, key: provider}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: gemini}
spec:
  type: Gemini
  endpoint: "{mock}/v1beta"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: keys, key: gemini}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: bedrock}
spec:
  type: Bedrock
  endpoint: "{mock}"
  network: {allowLoopback: true}
  bedrock: {region: us-east-1}
  credentials: {aws: {secretName: keys}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: bedrock-wrong-secret}
spec:
  type: Bedrock
  endpoint: "{mock}"
  network: {allowLoopback: true}
  bedrock: {region: us-east-1}
  credentials: {aws: {secretName: keys, secretAccessKeyKey: wrongSecret}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: azure}
spec:
  type: AzureOpenAI
  endpoint: "{mock}"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: keys, key: azure}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: gemini}
spec:
  gatewayRef: {name: gw}
  models: [gemini]
  backends: [{providerRef: {name: gemini}, model: mock-gemini}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: bedrock}
spec:
  gatewayRef: {name: gw}
  models: [bedrock]
  backends: [{providerRef: {name: bedrock}, model: mock-bedrock}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: bedrock-unsigned}
spec:
  gatewayRef: {name: gw}
  models: [bedrock-wrong-secret]
  backends: [{providerRef: {name: bedrock-wrong-secret}, model: mock-bedrock}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: azure}
spec:
  gatewayRef: {name: gw}
  models: [azure]
  backends: [{providerRef: {name: azure}, model: my-deployment}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: chat}
spec:
  gatewayRef: {name: gw}
  models: [chat]
  backends: [{providerRef: {name: openai}, model: mock-chat}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: claude}
spec:
  gatewayRef: {name: gw}
  models: [claude]
  backends: [{providerRef: {name: anthropic}, model: mock-claude}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: embed}
spec:
  gatewayRef: {name: gw}
  models: [embed]
  backends: [{providerRef: {name: openai}, model: mock-embed}]
"#;

/// Mock flags matching the provider credentials in [`ALL_FORMATS`].
pub const MOCK_AUTH: &[&str] = &[
    "--anthropic-key",
    "mock-provider-key",
    "--gemini-key",
    "mock-gemini-key",
    "--azure-key",
    "mock-azure-key",
    "--bedrock-access-key-id",
    "AKIDHARNESS",
    "--bedrock-secret-access-key",
    "harness-secret",
];
