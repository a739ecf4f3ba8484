//! Harness for black-box tests: the real `tollgate` binary, the real mock,
//! loopback ports chosen by the OS.
#![allow(dead_code)]

pub mod cluster;
pub mod mcp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
pub const KEY: &str = "tg-test-key";

/// A child process killed (SIGTERM) on drop.
pub struct Process {
    pub child: Child,
    /// The `listening ...` line's `key=url` pairs.
    pub urls: Vec<(String, String)>,
}

impl Process {
    pub fn start(args: &[&str]) -> Process {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self::from_command(&mut command)
    }

    /// Spawns `command` (stdout piped) and waits for its listening line.
    pub fn from_command(command: &mut Command) -> Process {
        let mut child = command.spawn().expect("spawn tollgate");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("tollgate did not print its listening line");
            });
        let urls = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Process { child, urls }
    }

    pub fn url(&self, key: &str) -> &str {
        &self
            .urls
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} url"))
            .1
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn start_mock() -> Process {
    Process::start(&["mock", "--listen", "127.0.0.1:0"])
}

/// A gateway config with one route `chat` -> `upstream_model` on the mock.
pub fn config(mock_url: &str, upstream_model: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: test}}
spec:
  apiKeys:
  - secretRef: {{name: keys, key: client}}
    principal: {{user: tester, team: qa}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{client: {KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: mock}}
spec: {{type: Mock, endpoint: "{mock_url}/v1"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  gatewayRef: {{name: test}}
  models: [chat]
  backends: [{{providerRef: {{name: mock}}, model: {upstream_model}}}]
"#
    )
}

/// `tollgate gateway` on `config_path`, on free loopback ports, stdout piped.
pub fn gateway_command(config_path: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["gateway", "--config"])
        .arg(config_path)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--reload-debounce-ms",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

pub fn start_gateway(config_path: &Path) -> Process {
    Process::from_command(&mut gateway_command(config_path))
}

/// Reads a streamed body to its end; `true` when it broke off with an error
/// instead of ending cleanly.
pub async fn read_stream(response: reqwest::Response) -> (String, bool) {
    use futures_util::StreamExt;
    let mut chunks = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `POST {data}/v1/chat/completions` with the test key.
pub async fn post_chat(data: &str, body: &serde_json::Value) -> reqwest::Response {
    client()
        .post(format!("{data}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub fn chat_body(model: &str, prompt: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

/// The body of a GET, as text.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn config_hash(admin: &str) -> String {
    let config: serde_json::Value = client()
        .get(format!("{admin}/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    config["hash"].as_str().unwrap_or_default().to_string()
}

/// Polls the admin `/config` until its hash differs from `old` (bounded).
pub async fn wait_for_new_hash(admin: &str, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hash = config_hash(admin).await;
        if hash != old {
            return hash;
        }
        assert!(Instant::now() < deadline, "configuration was not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rustls server configuration for a test certificate, offering `alpn`.
pub fn tls_server_config(
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    alpn: &[&[u8]],
) -> rustls::ServerConfig {
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
