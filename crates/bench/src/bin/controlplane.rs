//! Control-plane benchmark: how long `config::compile` takes for 1,000
//! AIRoutes, and how long the controller takes to bring 1,000 AIRoutes in a
//! real kube-apiserver (tests/k8s) to truthful status. Everything on loopback,
//! every wait bounded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Number of AIRoutes.
    #[arg(long, default_value_t = 1000)]
    routes: usize,
    /// The tollgate binary (for `tollgate controller`).
    #[arg(long, default_value = "target/release/tollgate")]
    tollgate: PathBuf,
    /// Compile repetitions for the in-process measurement.
    #[arg(long, default_value_t = 20)]
    compiles: usize,
}

fn manifests(routes: usize) -> String {
    let mut text = String::from(
        "apiVersion: tollgate.dev/v1alpha1\nkind: AIGateway\nmetadata: {name: bench, namespace: default}\nspec: {}\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {name: mock, namespace: default}\nspec: {type: Mock, endpoint: \"http://127.0.0.1:1/v1\"}\n",
    );
    for i in 0..routes {
        text.push_str(&format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: route-{i}, namespace: default}}\nspec:\n  gatewayRef: {{name: bench}}\n  models: [model-{i}, \"family-{i}-*\"]\n  backends: [{{providerRef: {{name: mock}}, model: upstream-{i}, weight: 100}}]\n"
        ));
    }
    text
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let args = Args::parse();
    let text = manifests(args.routes);

    // 1. compile alone, in-process.
    let mut loaded = tollgate_config::Loaded::default();
    tollgate_config::load::add_documents(&mut loaded, "bench.yaml", &text, &|_| None);
    assert!(!loaded.has_errors(), "bench manifests are valid");
    let mut times = Vec::with_capacity(args.compiles);
    for _ in 0..args.compiles {
        let started = Instant::now();
        let compiled = tollgate_config::compile(&loaded.resources);
        times.push(started.elapsed());
        assert_eq!(
            compiled
                .snapshots
                .values()
                .next()
                .map(|s| s.config.routes.len()),
            Some(args.routes)
        );
    }
    times.sort();
    println!(
        "compile {} AIRoutes: p50 {:?}, max {:?} ({} runs)",
        args.routes,
        percentile(&times, 0.5),
        percentile(&times, 1.0),
        args.compiles
    );

    // 2. the controller converging status for them in a real apiserver.
    let cluster = match tollgate_testenv::Cluster::start() {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("envtest: {error}");
            std::process::exit(2);
        }
    };
    let file = cluster.dir().join("routes.yaml");
    let applied = cluster
        .install_crds()
        .and_then(|()| {
            std::fs::write(&file, &text).map_err(|e| tollgate_testenv::Error::Spawn("write", e))
        })
        .and_then(|()| cluster.apply(&file));
    if let Err(error) = applied {
        eprintln!("setup: {error}");
        std::process::exit(2);
    }
    let started = Instant::now();
    let _controller = match Command::new(&args.tollgate)
        .args([
            "controller",
            "--metrics-listen",
            "127.0.0.1:0",
            "--config-listen",
            "127.0.0.1:0",
            "--tls-secret-namespace",
            "default",
        ])
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => KillOnDrop(child),
        Err(error) => {
            eprintln!("cannot start {}: {error}", args.tollgate.display());
            std::process::exit(2);
        }
    };
    let deadline = started + Duration::from_secs(120);
    let jsonpath =
        "{range .items[*]}{.status.conditions[?(@.type==\"Programmed\")].status}{\"\\n\"}{end}";
    loop {
        let programmed = cluster
            .kubectl(&["get", "airoutes", "-o", &format!("jsonpath={jsonpath}")])
            .map(|out| out.lines().filter(|l| *l == "True").count())
            .unwrap_or(0);
        if programmed == args.routes {
            println!(
                "controller start -> all {} AIRoutes Programmed=True in the apiserver: {:.2} s (includes cache sync and {} status writes)",
                args.routes,
                started.elapsed().as_secs_f64(),
                args.routes + 2
            );
            break;
        }
        if Instant::now() > deadline {
            println!(
                "timed out after 120 s with {programmed}/{} routes programmed",
                args.routes
            );
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
