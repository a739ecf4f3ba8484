//! Control-plane benchmark, against a real kube-apiserver + etcd (tests/k8s),
//! the real controller, `tollgate mock` and three gateway processes
//! subscribed to the controller as pods would be. Everything on loopback,
//! every wait bounded.
//!
//! 1. `config::compile` alone for 1,000 AIRoutes (in process).
//! 2. Propagation: an AIRoute changed through the API (server-side apply, as
//!    `kubectl apply --server-side` sends it) until all gateways answer with
//!    the new routing, over `--changes` changes, with 1 route and again with
//!    1,001. Baseline, side by side: when the same change reaches a plain
//!    Kubernetes watch in this process, the floor for any controller.
//! 3. Bulk: 1,000 AIRoutes created through the API until every gateway runs
//!    a snapshot containing them all; then until all are `Programmed=True`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tollgate_api::AIRoute;

#[derive(Parser)]
struct Args {
    /// Number of AIRoutes for the bulk phase and compile measurement.
    #[arg(long, default_value_t = 1000)]
    routes: usize,
    /// Route changes timed per propagation phase.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Gateway processes subscribed to the controller.
    #[arg(long, default_value_t = 3)]
    gateways: usize,
    /// The tollgate binary.
    #[arg(long, default_value = "target/release/tollgate")]
    tollgate: PathBuf,
    /// Compile repetitions for the in-process measurement.
    #[arg(long, default_value_t = 20)]
    compiles: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/controlplane.json")]
    output: PathBuf,
}

const NAMESPACE: &str = "default";
const PROPAGATION_TARGET: Duration = Duration::from_millis(100);
const BULK_TARGET: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

type Result<T, E = BenchError> = std::result::Result<T, E>;

fn setup_error(what: &str) -> impl Fn(String) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

fn route(name: &str, models: &[String], model: &str) -> Value {
    json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "AIRoute",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "gatewayRef": {"name": "bench"},
            "models": models,
            "backends": [{"providerRef": {"name": "mock"}, "model": model, "weight": 100}],
        },
    })
}

fn bulk_route(i: usize) -> Value {
    route(
        &format!("route-{i}"),
        &[format!("model-{i}"), format!("family-{i}-*")],
        &format!("upstream-{i}"),
    )
}

fn base_manifests(mock_url: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: AIGateway\nmetadata: {{name: bench, namespace: {NAMESPACE}}}\nspec: {{}}\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: mock, namespace: {NAMESPACE}}}\nspec: {{type: Mock, endpoint: \"{mock_url}/v1\", maxConcurrentRequests: 4096}}\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: probe, namespace: {NAMESPACE}}}\nspec:\n  gatewayRef: {{name: bench}}\n  models: [probe]\n  backends: [{{providerRef: {{name: mock}}, model: m-0}}]\n"
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` and returns it with the URLs of its `listening …` line.
fn spawn_listening(command: &mut Command) -> Result<(KillOnDrop, HashMap<String, String>)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| BenchError::Setup(format!("spawn: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("no stdout".into()))?;
    let child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| BenchError::Timeout("listening line".into()))?;
    let urls = line
        .strip_prefix("listening ")
        .unwrap_or_default()
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok((child, urls))
}

/// Children log at warn; `TOLLGATE_BENCH_LOG` overrides (e.g. `info` to see
/// each configuration applied).
fn log_level() -> String {
    std::env::var("TOLLGATE_BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Setup(format!("free port: {e}")))
}

async fn poll<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(what.into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Gateway {
    _process: KillOnDrop,
    data: String,
    admin: String,
}

async fn served_model(client: &reqwest::Client, data: &str) -> Option<String> {
    let response = client
        .post(format!("{data}/v1/chat/completions"))
        .json(&json!({"model": "probe", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["model"].as_str().map(str::to_string)
}

async fn route_count(client: &reqwest::Client, admin: &str) -> usize {
    let config: Value = match client.get(format!("{admin}/config")).send().await {
        Ok(response) => response.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    config["routes"].as_array().map_or(0, Vec::len)
}

/// Watch events for the probe route: backend model -> when it arrived.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_probe(api: Api<AIRoute>) -> Seen {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let config = watcher::Config::default().fields("metadata.name=probe");
        let stream = watcher::watcher(api, config).applied_objects();
        futures_util::pin_mut!(stream);
        while let Ok(Some(route)) = stream.try_next().await {
            let model = route
                .spec
                .backends
                .first()
                .and_then(|b| b.model.clone())
                .unwrap_or_default();
            if let Ok(mut seen) = record.lock() {
                seen.entry(model).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

struct Propagation {
    served: Vec<Duration>,
    watched: Vec<Duration>,
}

/// `changes` edits of the probe route, each timed until every gateway serves it.
async fn propagation(
    api: &Api<AIRoute>,
    seen: &Seen,
    gateways: &[Gateway],
    client: &reqwest::Client,
    label: &str,
    changes: usize,
) -> Result<Propagation> {
    let mut served = Vec::with_capacity(changes);
    let mut watched = Vec::with_capacity(changes);
    let params = PatchParams::apply("tollgate-bench").force();
    for change in 0..changes {
        let model = format!("{label}-{change}");
        let started = Instant::now();
        api.patch(
            "probe",
            &params,
            &Patch::Apply(route("probe", &["probe".into()], &model)),
        )
        .await?;
        let waits = gateways.iter().map(|gateway| {
            let model = model.clone();
            async move {
                poll(
                    &format!("{} to serve {model}", gateway.data),
                    Duration::from_secs(10),
                    || async {
                        (served_model(client, &gateway.data).await.as_deref()
                            == Some(model.as_str()))
                        .then(Instant::now)
                    },
                )
                .await
            }
        });
        let arrivals = futures_util::future::try_join_all(waits).await?;
        let last = arrivals.into_iter().max().unwrap_or(started);
        served.push(last - started);
        let watch_seen = poll("the watch event", Duration::from_secs(10), || async {
            seen.lock().ok()?.get(&model).copied()
        })
        .await?;
        watched.push(watch_seen.saturating_duration_since(started));
        // Distinct changes, not one burst.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.sort();
    watched.sort();
    Ok(Propagation { served, watched })
}

fn report_propagation(label: &str, routes: usize, p: &Propagation, gateways: usize) -> Value {
    let (p50, p99, max) = (
        percentile(&p.served, 0.5),
        percentile(&p.served, 0.99),
        percentile(&p.served, 1.0),
    );
    let (w50, w99) = (percentile(&p.watched, 0.5), percentile(&p.watched, 0.99));
    let verdict = if p99 < PROPAGATION_TARGET {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "propagation ({label}, {routes} routes, {} changes): apply -> served on all {gateways} gateways p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms [{verdict}: p99 < {} ms]",
        p.served.len(),
        ms(p50),
        ms(p99),
        ms(max),
        PROPAGATION_TARGET.as_millis()
    );
    println!(
        "  baseline: apply -> plain watch event p50 {:.1} ms, p99 {:.1} ms; ratio served/watch p50 {:.2}x",
        ms(w50),
        ms(w99),
        ms(p50) / ms(w50).max(0.001)
    );
    json!({
        "routes": routes, "changes": p.served.len(), "gateways": gateways,
        "served_ms": {"p50": ms(p50), "p99": ms(p99), "max": ms(max)},
        "watch_baseline_ms": {"p50": ms(w50), "p99": ms(w99)},
        "target_p99_ms": ms(PROPAGATION_TARGET), "pass": p99 < PROPAGATION_TARGET,
    })
}

fn compile_phase(args: &Args) -> Value {
    let mut text = base_manifests("http://127.0.0.1:1");
    for i in 0..args.routes {
        text.push_str("---\n");
        text.push_str(&bulk_route(i).to_string());
        text.push('\n');
    }
    let mut loaded = tollgate_config::Loaded::default();
    tollgate_config::load::add_documents(&mut loaded, "bench.yaml", &text, &|_| None);
    assert!(!loaded.has_errors(), "bench manifests are valid");
    let mut times = Vec::with_capacity(args.compiles);
    for _ in 0..args.compiles {
        let started = Instant::now();
        let compiled =
            tollgate_config::compile(&loaded.resources, &tollgate_config::DigestKey::generate());
        times.push(started.elapsed());
        assert_eq!(
            compiled
                .snapshots
                .values()
                .next()
                .map(|s| s.config.routes.len()),
            Some(args.routes + 1)
        );
    }
    times.sort();
    let (p50, max) = (percentile(&times, 0.5), percentile(&times, 1.0));
    println!(
        "compile {} AIRoutes: p50 {:.1} ms, max {:.1} ms ({} runs)",
        args.routes + 1,
        ms(p50),
        ms(max),
        args.compiles
    );
    json!({"routes": args.routes + 1, "p50_ms": ms(p50), "max_ms": ms(max)})
}

async fn run(args: Args) -> Result<Value> {
    let compile = compile_phase(&args);

    let cluster =
        tollgate_testenv::Cluster::start().map_err(|e| setup_error("envtest")(e.to_string()))?;
    cluster
        .install_crds()
        .map_err(|e| setup_error("CRDs")(e.to_string()))?;
    let (_mock, mock_urls) =
        spawn_listening(Command::new(&args.tollgate).args(["mock", "--listen", "127.0.0.1:0"]))?;
    let mock_url = mock_urls
        .get("data")
        .cloned()
        .ok_or_else(|| BenchError::Setup("mock url".into()))?;
    let base = cluster.dir().join("base.yaml");
    std::fs::write(&base, base_manifests(&mock_url))
        .map_err(|e| setup_error("write")(e.to_string()))?;
    cluster
        .apply(&base)
        .map_err(|e| setup_error("apply")(e.to_string()))?;

    let port = free_port()?;
    let controller_url = format!("https://127.0.0.1:{port}");
    let _controller = KillOnDrop(
        Command::new(&args.tollgate)
            .args(["controller", "--metrics-listen", "127.0.0.1:0"])
            .args(["--config-listen", &format!("127.0.0.1:{port}")])
            .args(["--controller-url", &controller_url])
            .args(["--tls-secret-namespace", NAMESPACE])
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("TOLLGATE_LOG", log_level())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| setup_error("controller")(e.to_string()))?,
    );
    let ca = poll("the controller CA", Duration::from_secs(30), || async {
        cluster
            .kubectl(&[
                "get",
                "configmap",
                "tollgate-bench-controller-ca",
                "-o",
                r"jsonpath={.data.ca\.crt}",
            ])
            .ok()
            .filter(|ca| ca.contains("BEGIN CERTIFICATE"))
    })
    .await?;
    let token = poll("a gateway token", Duration::from_secs(30), || async {
        cluster
            .kubectl(&[
                "create",
                "token",
                "tollgate-bench",
                "--audience",
                "tollgate.dev/controller",
                "--duration",
                "2h",
            ])
            .ok()
    })
    .await?;
    let (ca_file, token_file) = (cluster.dir().join("ca.crt"), cluster.dir().join("token"));
    std::fs::write(&ca_file, ca).map_err(|e| setup_error("write")(e.to_string()))?;
    std::fs::write(&token_file, token.trim()).map_err(|e| setup_error("write")(e.to_string()))?;
    let gateways = (0..args.gateways)
        .map(|i| start_gateway(&args.tollgate, &controller_url, &ca_file, &token_file, i))
        .collect::<Result<Vec<_>>>()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| setup_error("client")(e.to_string()))?;
    for gateway in &gateways {
        poll(
            "gateways to serve the first snapshot",
            Duration::from_secs(30),
            || async {
                (served_model(&client, &gateway.data).await.as_deref() == Some("m-0")).then_some(())
            },
        )
        .await?;
    }

    let kube = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(cluster.kubeconfig())
                .map_err(|e| setup_error("kubeconfig")(e.to_string()))?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| setup_error("kubeconfig")(e.to_string()))?,
    )?;
    let routes: Api<AIRoute> = Api::namespaced(kube, NAMESPACE);
    let seen = watch_probe(routes.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let small = propagation(&routes, &seen, &gateways, &client, "small", args.changes).await?;
    let small = report_propagation("small config", 1, &small, args.gateways);

    // Bulk: create the routes through the API, 16 at a time.
    let started = Instant::now();
    let params = PatchParams::apply("tollgate-bench").force();
    futures_util::stream::iter(0..args.routes)
        .map(|i| {
            let (routes, params) = (&routes, &params);
            async move {
                routes
                    .patch(&format!("route-{i}"), params, &Patch::Apply(bulk_route(i)))
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let written = started.elapsed();
    for gateway in &gateways {
        poll(
            "gateways to run every route",
            Duration::from_secs(60),
            || async {
                (route_count(&client, &gateway.admin).await == args.routes + 1).then_some(())
            },
        )
        .await?;
    }
    let served = started.elapsed();
    let verdict = if served < BULK_TARGET { "PASS" } else { "FAIL" };
    println!(
        "bulk: {} AIRoutes created through the API in {:.2} s; compiled and pushed: running on all {} gateways {:.2} s after the first create, {:.0} ms after the last [{verdict}: < {} s]",
        args.routes,
        written.as_secs_f64(),
        args.gateways,
        served.as_secs_f64(),
        ms(served.saturating_sub(written)),
        BULK_TARGET.as_secs()
    );
    let jsonpath =
        "{range .items[*]}{.status.conditions[?(@.type==\"Programmed\")].status}{\"\\n\"}{end}";
    poll(
        "every route Programmed=True",
        Duration::from_secs(120),
        || async {
            let programmed = cluster
                .kubectl(&["get", "airoutes", "-o", &format!("jsonpath={jsonpath}")])
                .map(|out| out.lines().filter(|l| *l == "True").count())
                .unwrap_or(0);
            (programmed == args.routes + 1).then_some(())
        },
    )
    .await?;
    let programmed = started.elapsed();
    println!(
        "  status: all {} AIRoutes Programmed=True {:.2} s after the first create",
        args.routes + 1,
        programmed.as_secs_f64()
    );

    let large = propagation(&routes, &seen, &gateways, &client, "large", args.changes).await?;
    let large = report_propagation("large config", args.routes + 1, &large, args.gateways);

    Ok(json!({
        "compile": compile,
        "propagation_small": small,
        "propagation_large": large,
        "bulk": {
            "routes": args.routes, "gateways": args.gateways,
            "api_writes_s": written.as_secs_f64(),
            "served_on_all_gateways_s": served.as_secs_f64(),
            "served_after_last_write_ms": ms(served.saturating_sub(written)),
            "all_programmed_s": programmed.as_secs_f64(),
            "target_s": BULK_TARGET.as_secs_f64(), "pass": served < BULK_TARGET,
        },
    }))
}

fn start_gateway(
    tollgate: &Path,
    controller_url: &str,
    ca_file: &Path,
    token_file: &Path,
    index: usize,
) -> Result<Gateway> {
    let (process, urls) = spawn_listening(
        Command::new(tollgate)
            .args(["gateway", "--controller", controller_url])
            .args(["--gateway", &format!("{NAMESPACE}/bench")])
            .args(["--pod-name", &format!("bench-{index}")])
            .arg("--controller-token-file")
            .arg(token_file)
            .arg("--controller-ca-file")
            .arg(ca_file)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--workers", "1"])
            .env("TOLLGATE_LOG", log_level()),
    )?;
    let url = |key: &str| {
        urls.get(key)
            .cloned()
            .ok_or_else(|| BenchError::Setup(format!("gateway {key} url")))
    };
    Ok(Gateway {
        data: url("data")?,
        admin: url("admin")?,
        _process: process,
    })
}

fn main() {
    let args = Args::parse();
    let output = args.output.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("runtime: {error}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(results) => {
            if let Some(dir) = output.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match serde_json::to_vec_pretty(&results) {
                Ok(bytes) if std::fs::write(&output, &bytes).is_ok() => {
                    println!("results: {}", output.display());
                }
                _ => eprintln!("could not write {}", output.display()),
            }
            let pass = results["propagation_small"]["pass"] == true
                && results["propagation_large"]["pass"] == true
                && results["bulk"]["pass"] == true;
            std::process::exit(if pass { 0 } else { 1 });
        }
        Err(error) => {
            eprintln!("control-plane bench failed: {error}");
            std::process::exit(2);
        }
    }
}
