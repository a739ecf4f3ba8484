//! A real Kubernetes API for tests and benchmarks: etcd + kube-apiserver
//! started on loopback by `tests/k8s/envtest.sh` (binaries built from their
//! Go modules and cached), stopped when the [`Cluster`] is dropped.

pub mod redis;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root, where `tests/k8s` and `crds/` live.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {0}: {1}")]
    Spawn(&'static str, std::io::Error),
    #[error("envtest did not start (see its output above)")]
    NotStarted,
    #[error("envtest wrote no TOLLGATE_K8S_BIN to {0}")]
    NoBinDir(PathBuf),
    #[error("kubectl {args}: {stderr}")]
    Kubectl { args: String, stderr: String },
}

/// A running envtest cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Cluster {
    /// Starts etcd and kube-apiserver and waits until the API is ready. The
    /// cluster also stops by itself if this process dies.
    pub fn start() -> Result<Cluster, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Spawn("mktemp", e))?;
        let status = Command::new("bash")
            .arg(repo().join("tests/k8s/envtest.sh"))
            .arg("start")
            .arg(dir.path())
            .env("TOLLGATE_K8S_WATCH_PID", std::process::id().to_string())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| Error::Spawn("envtest.sh", e))?;
        if !status.success() {
            return Err(Error::NotStarted);
        }
        let env_file = dir.path().join("env");
        let env = std::fs::read_to_string(&env_file).unwrap_or_default();
        let bin = env
            .lines()
            .find_map(|l| l.strip_prefix("TOLLGATE_K8S_BIN="))
            .map(PathBuf::from)
            .ok_or(Error::NoBinDir(env_file))?;
        Ok(Cluster { dir, bin })
    }

    /// Admin kubeconfig (client certificate, system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs kubectl as admin and returns its raw output.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<Output, Error> {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .map_err(|e| Error::Spawn("kubectl", e))
    }

    /// Runs kubectl as admin; stdout on success.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        let output = self.kubectl_output(args)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Kubectl {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// `kubectl apply --server-side -f PATH`.
    pub fn apply(&self, path: &Path) -> Result<String, Error> {
        self.kubectl(&["apply", "--server-side", "-f", &path.to_string_lossy()])
    }

    /// Installs the repository's CRDs and waits until they are Established.
    pub fn install_crds(&self) -> Result<(), Error> {
        self.apply(&repo().join("crds"))?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=30s",
        ])
        .map(drop)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/k8s/envtest.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
