//! A real kube-apiserver + etcd (tests/k8s) with the controller and gateway
//! processes run the way their pods would (no kubelet here): each gateway
//! subscribes with a ServiceAccount token and the CA the controller published.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BIN, Process, start_mock, write};

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Env {
    pub cluster: tollgate_testenv::Cluster,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub metrics_port: u16,
    pub mock: Process,
}

impl Env {
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.cluster
            .kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn start_controller(&self) -> KillOnDrop {
        KillOnDrop(
            Command::new(BIN)
                .args(["controller", "--metrics-listen"])
                .arg(format!("127.0.0.1:{}", self.metrics_port))
                .args(["--config-listen", &format!("127.0.0.1:{}", self.port)])
                .args(["--controller-url", &self.url()])
                .args(["--tls-secret-namespace", "default"])
                .env("KUBECONFIG", self.cluster.kubeconfig())
                .env("TOLLGATE_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn the controller"),
        )
    }

    /// A gateway process as its pod would run it: token and CA from files.
    pub fn start_gateway(&self, pod: &str, token_file: &std::path::Path) -> Process {
        let mut command = Command::new(BIN);
        command
            .args(["gateway", "--controller", &self.url()])
            .args(["--gateway", "default/edge", "--pod-name", pod])
            .arg("--controller-token-file")
            .arg(token_file)
            .arg("--controller-ca-file")
            .arg(self.dir.path().join("ca.crt"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--workers", "1"])
            .env("TOLLGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Process::from_command(&mut command)
    }

    pub fn gateway_status(&self) -> Value {
        let out = self.kubectl(&["get", "aigateway", "edge", "-o", "json"]);
        serde_json::from_str::<Value>(&out).unwrap_or_default()["status"].clone()
    }
}

/// `Programmed` (status, reason) of `kind/name` in the default namespace.
pub fn programmed(env: &Env, object: &str) -> (String, String) {
    let out = env.kubectl(&["get", object, "-o", "json"]);
    let value: Value = serde_json::from_str(&out).unwrap_or_default();
    value["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Programmed")
        .map(|c| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&c["status"]), text(&c["reason"]))
        })
        .unwrap_or_default()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `probe` every 20 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cluster with the CRDs, a mock, and `manifests(mock_url)` applied.
pub fn setup(manifests: impl Fn(&str) -> String) -> Env {
    let cluster = tollgate_testenv::Cluster::start().expect("envtest");
    cluster.install_crds().expect("CRDs");
    let env = Env {
        cluster,
        dir: tempfile::tempdir().unwrap(),
        port: free_port(),
        metrics_port: free_port(),
        mock: start_mock(),
    };
    let path = write(
        env.dir.path(),
        "edge.yaml",
        &manifests(env.mock.url("data")),
    );
    env.cluster.apply(&path).expect("apply manifests");
    env
}

/// The CA the controller published next to the gateway, written where the
/// pod would have it mounted.
pub fn fetch_ca(env: &Env) {
    let ca = wait_for(
        "the controller CA ConfigMap",
        Duration::from_secs(30),
        || {
            env.cluster
                .kubectl(&[
                    "get",
                    "configmap",
                    "tollgate-edge-controller-ca",
                    "-o",
                    r"jsonpath={.data.ca\.crt}",
                ])
                .ok()
                .filter(|ca| ca.contains("BEGIN CERTIFICATE"))
        },
    );
    std::fs::write(env.dir.path().join("ca.crt"), ca).unwrap();
}

/// A token for `service_account`, as the kubelet would project it.
pub fn token(
    env: &Env,
    service_account: &str,
    audience: Option<&str>,
    file: &str,
) -> std::path::PathBuf {
    let mut args = vec!["create", "token", service_account, "--duration", "2h"];
    if let Some(audience) = audience {
        args.extend(["--audience", audience]);
    }
    let token = wait_for("a ServiceAccount token", Duration::from_secs(30), || {
        env.cluster.kubectl(&args).ok()
    });
    write(env.dir.path(), file, token.trim())
}

pub fn blocking_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(8)
        .build()
        .unwrap()
}
