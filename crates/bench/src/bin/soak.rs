//! `tollgate-soak`: the gateway over time and under failure.
//!
//! * `soak`: steady mixed load (chat, streams, translation both ways,
//!   embeddings, errors, abandoned streams) plus a configuration reload every
//!   few seconds, for `--seconds`; samples the gateway's RSS and open file
//!   descriptors; fails on any unexpected answer, a reload that does not take,
//!   or growth beyond the flatness limits (`tollgate_bench::soak`).
//! * `chaos`: providers that hang, reset connections, answer garbage (bytes
//!   that are not HTTP, or a 200 whose body is not JSON), refuse connections,
//!   fail half their requests, or cut streams; each behind a healthy fallback
//!   tier (failed requests counted) and alone (every failure must reach the
//!   client as a clear error: a 5xx in the API's shape or an error event).
//! * `load`: steady chat load against a running gateway for
//!   `tests/k8s/chaos.sh`; prints the tally as JSON.
//!
//! Loopback only; every loop is bounded by its deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_bench::procfs;
use tollgate_bench::soak::{Flatness, Kind, Mix, Outcome, Sample, Tally, flatness, judge};
use tollgate_bench::targets::{Process, spawn_announcing};

const CLIENT_KEY: &str = "tg-soak-client";
const ANTHROPIC_KEY: &str = "soak-anthropic-key";
/// Bound of one request, end to end: well above every gateway deadline, so a
/// client timeout means the gateway failed to answer in time.
const REQUEST_BOUND: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(name = "tollgate-soak")]
struct Cli {
    /// The tollgate binary (gateway and mock).
    #[arg(long, global = true, default_value = "target/release/tollgate")]
    tollgate: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Soak {
        /// How long the load runs.
        #[arg(long, default_value_t = 1800)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds between configuration reloads.
        #[arg(long, default_value_t = 10)]
        reload_every: u64,
        /// Seconds between RSS/fd samples.
        #[arg(long, default_value_t = 5)]
        sample_every: u64,
    },
    Chaos {
        /// Load per scenario and route (with fallback, then alone).
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    Load {
        /// The gateway's data address, e.g. 127.0.0.1:8080.
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        key: String,
        #[arg(long, default_value = "chat")]
        model: String,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Soak {
            seconds,
            concurrency,
            reload_every,
            sample_every,
        } => {
            soak(
                &cli.tollgate,
                Duration::from_secs(seconds),
                concurrency,
                Duration::from_secs(reload_every.max(1)),
                Duration::from_secs(sample_every.max(1)),
            )
            .await
        }
        Cmd::Chaos {
            seconds,
            concurrency,
        } => chaos(&cli.tollgate, Duration::from_secs(seconds), concurrency).await,
        Cmd::Load {
            target,
            key,
            model,
            seconds,
            concurrency,
        } => {
            let traffic = Arc::new(Traffic::new(target, key, Aliases::only(&model)));
            let tally = run_load(
                traffic,
                Mix::chaos(),
                Duration::from_secs(seconds),
                concurrency,
                Arc::default(),
                judge,
            )
            .await;
            println!(
                "{}",
                serde_json::json!({"ok": tally.total_ok(), "failed": tally.total_failed(), "failures": tally.failure_summary()})
            );
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("tollgate-soak: {error}");
            ExitCode::from(2)
        }
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

// ------------------------------------------------------------------ traffic

/// The route aliases each kind of request uses.
#[derive(Clone)]
struct Aliases {
    chat: String,
    translated: String,
    embed: String,
}

impl Aliases {
    fn only(model: &str) -> Self {
        Aliases {
            chat: model.into(),
            translated: model.into(),
            embed: model.into(),
        }
    }
}

/// Sends one request of a kind and judges the answer.
struct Traffic {
    client: reqwest::Client,
    base: String,
    key: String,
    aliases: Aliases,
}

impl Traffic {
    fn new(target: SocketAddr, key: String, aliases: Aliases) -> Self {
        Traffic {
            client: reqwest::Client::builder()
                .timeout(REQUEST_BOUND)
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
            base: format!("http://{target}"),
            key,
            aliases,
        }
    }

    fn chat(model: &str, stream: bool) -> String {
        serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say something short."}],
            "max_tokens": 16,
            "stream": stream,
        })
        .to_string()
    }

    /// Status and body (the whole body, or the first chunk for an abandoned
    /// stream); `Err` for transport failures and timeouts.
    async fn send(&self, kind: Kind) -> Result<(u16, Vec<u8>), String> {
        let a = &self.aliases;
        let (path, body, key) = match kind {
            Kind::Chat => (
                "/v1/chat/completions",
                Self::chat(&a.chat, false),
                &*self.key,
            ),
            Kind::ChatStream | Kind::AbandonedStream => (
                "/v1/chat/completions",
                Self::chat(&a.chat, true),
                &*self.key,
            ),
            Kind::Translated => (
                "/v1/chat/completions",
                Self::chat(&a.translated, false),
                &*self.key,
            ),
            Kind::TranslatedStream => (
                "/v1/chat/completions",
                Self::chat(&a.translated, true),
                &*self.key,
            ),
            Kind::Embeddings => (
                "/v1/embeddings",
                serde_json::json!({"model": a.embed, "input": "soak"}).to_string(),
                &*self.key,
            ),
            Kind::MessagesStream => ("/v1/messages", Self::chat(&a.chat, true), &*self.key),
            Kind::BadKey => (
                "/v1/chat/completions",
                Self::chat(&a.chat, false),
                "tg-not-a-key",
            ),
            Kind::UnknownModel => (
                "/v1/chat/completions",
                Self::chat("no-such-model", false),
                &*self.key,
            ),
            Kind::BadJson => ("/v1/chat/completions", "{not json".to_string(), &*self.key),
        };
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        request = if kind == Kind::MessagesStream {
            request
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
        } else {
            request.bearer_auth(key)
        };
        let mut response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // A stream that ends in an error after some bytes: what was
                // read (an error event, say) is what the client saw.
                Err(_) if !body.is_empty() => break,
                Err(error) => return Err(describe(error)),
            }
            if kind == Kind::AbandonedStream {
                break; // dropping the response closes the stream mid-way
            }
        }
        Ok((status, body))
    }
}

fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "client timeout".into()
    } else {
        "transport error".into()
    }
}

type Judge = fn(Kind, u16, &[u8]) -> Outcome;

/// `concurrency` clients sending `mix` until `duration` has passed.
async fn run_load(
    traffic: Arc<Traffic>,
    mix: Mix,
    duration: Duration,
    concurrency: usize,
    sent: Arc<AtomicU64>,
    judge: Judge,
) -> Tally {
    let deadline = Instant::now() + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (traffic, mix, sent) = (traffic.clone(), mix.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let kind = mix.pick(sent.fetch_add(1, Ordering::Relaxed));
                let started = Instant::now();
                let outcome = match traffic.send(kind).await {
                    Ok((status, body)) => judge(kind, status, &body),
                    Err(reason) => Outcome::Failed(reason),
                };
                tally.record(kind, outcome, started.elapsed());
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for worker in workers {
        if let Ok(tally) = worker.await {
            total.merge(tally);
        }
    }
    total
}

// ------------------------------------------------------------------ soak

/// An AIGateway `gateway` whose one client key is [`CLIENT_KEY`], and the
/// Secret `keys` holding it plus `extra_data` (`name: value, ...`).
fn gateway_documents(gateway: &str, extra_data: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: {gateway}}}
spec:
  apiKeys:
  - secretRef: {{name: keys, key: client}}
    principal: {{user: {gateway}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{client: {CLIENT_KEY}{extra_data}}}
"#
    )
}

/// One AIRoute document; `rest` is the spec after `models` (backends,
/// timeouts), indented two spaces.
fn route_document(gateway: &str, name: &str, rest: &str) -> String {
    format!(
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: {{name: {gateway}}}\n  models: [{name}]\n{rest}"
    )
}

fn soak_config(mock: SocketAddr, reload: u64) -> String {
    let backend = |provider: &str, model: &str| {
        format!("  backends: [{{providerRef: {{name: {provider}}}, model: {model}}}]\n")
    };
    let mut text = gateway_documents("soak", &format!(", anthropic: {ANTHROPIC_KEY}"));
    text.push_str(&format!(
        r#"---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: mock}}
spec: {{type: Mock, endpoint: "http://{mock}/v1"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: anthropic}}
spec:
  type: Anthropic
  endpoint: "http://{mock}/v1"
  network: {{allowLoopback: true}}
  credentials: {{secretRef: {{name: keys, key: anthropic}}}}
"#
    ));
    for (name, provider, model) in [
        ("chat".to_string(), "mock", "mock-chat"),
        ("translated".to_string(), "anthropic", "mock-claude"),
        ("embed".to_string(), "mock", "mock-embed"),
        (format!("reload-{reload}"), "mock", "mock-chat"),
    ] {
        text.push_str(&route_document("soak", &name, &backend(provider, model)));
    }
    text
}

fn start_mock(
    bin: &Path,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> Result<(Process, SocketAddr), AnyError> {
    let mut command = Command::new(bin);
    command
        .args([
            "mock",
            "--listen",
            "127.0.0.1:0",
            "--anthropic-key",
            ANTHROPIC_KEY,
        ])
        .args(extra);
    let (process, listen) = spawn_announcing(name, command, dir, Duration::from_secs(10))?;
    Ok((process, listen.data))
}

fn start_gateway(
    bin: &Path,
    dir: &Path,
    config: &Path,
) -> Result<(Process, SocketAddr, SocketAddr), AnyError> {
    let mut command = Command::new(bin);
    command
        .arg("gateway")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let (process, listen) = spawn_announcing("gateway", command, dir, Duration::from_secs(10))?;
    let admin = listen
        .admin
        .ok_or("the gateway announced no admin address")?;
    Ok((process, listen.data, admin))
}

/// Writes a file so a watcher never sees it half-written.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, path)
}

fn sample(pid: u32, started: Instant, requests: u64) -> Option<Sample> {
    let memory = procfs::read_mem(pid).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        at_s: started.elapsed().as_secs_f64(),
        rss_kib: memory.vm_rss_kib,
        fds,
        requests,
    })
}

async fn soak(
    bin: &Path,
    duration: Duration,
    concurrency: usize,
    reload_every: Duration,
    sample_every: Duration,
) -> Result<bool, AnyError> {
    let dir = tempfile::tempdir()?;
    // Realistic pacing: a first token after 20 ms, then one every 2 ms.
    let (mut mock, mock_addr) = start_mock(
        bin,
        dir.path(),
        "mock",
        &[
            "--ttft-ms",
            "20",
            "--token-delay-ms",
            "2",
            "--output-tokens",
            "16",
        ],
    )?;
    let config = dir.path().join("tollgate.yaml");
    write_atomically(&config, &soak_config(mock_addr, 0))?;
    let (mut gateway, data, admin) = start_gateway(bin, dir.path(), &config)?;
    let pid = gateway.pid();
    eprintln!(
        "soak: {}s, {concurrency} clients, a reload every {}s, samples every {}s; gateway pid {pid}",
        duration.as_secs(),
        reload_every.as_secs(),
        sample_every.as_secs()
    );

    let aliases = Aliases {
        chat: "chat".into(),
        translated: "translated".into(),
        embed: "embed".into(),
    };
    let traffic = Arc::new(Traffic::new(data, CLIENT_KEY.into(), aliases));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let load = tokio::spawn(run_load(
        traffic.clone(),
        Mix::soak(),
        duration,
        concurrency,
        sent.clone(),
        judge,
    ));

    let mut samples = Vec::new();
    let (mut reloads, mut reload_failures) = (0u64, Vec::new());
    let mut next_sample = Instant::now();
    let mut next_reload = Instant::now() + reload_every;
    let deadline = started + duration;
    while Instant::now() < deadline {
        if Instant::now() >= next_sample {
            samples.extend(sample(pid, started, sent.load(Ordering::Relaxed)));
            next_sample += sample_every;
        }
        if Instant::now() >= next_reload {
            reloads += 1;
            if let Err(why) = reload(&config, mock_addr, reloads, admin, &traffic).await {
                reload_failures.push(format!("reload {reloads}: {why}"));
            }
            next_reload += reload_every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut tally = load.await?;
    // Idle, after the load: what the gateway holds with nothing to do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = sample(pid, started, sent.load(Ordering::Relaxed));
    let stopped = gateway.stop(Duration::from_secs(15));
    mock.stop(Duration::from_secs(5));

    let verdict = flatness(&samples);
    print_soak_report(
        &mut tally,
        &samples,
        idle,
        verdict.as_ref(),
        reloads,
        &reload_failures,
        &stopped,
    );
    Ok(tally.total_failed() == 0 && reload_failures.is_empty() && verdict.is_some_and(|v| v.flat))
}

/// Rewrites the config with a new route alias, then waits (bounded) until
/// the gateway serves it.
async fn reload(
    config: &Path,
    mock: SocketAddr,
    generation: u64,
    admin: SocketAddr,
    traffic: &Traffic,
) -> Result<(), String> {
    let before = config_hash(&traffic.client, admin).await;
    write_atomically(config, &soak_config(mock, generation)).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if config_hash(&traffic.client, admin).await != before {
            let probe = Traffic {
                client: traffic.client.clone(),
                base: traffic.base.clone(),
                key: traffic.key.clone(),
                aliases: Aliases::only(&format!("reload-{generation}")),
            };
            return match probe.send(Kind::Chat).await {
                Ok((200, _)) => Ok(()),
                Ok((status, _)) => Err(format!("new alias answered {status}")),
                Err(why) => Err(why),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("not applied within 10s".into())
}

async fn config_hash(client: &reqwest::Client, admin: SocketAddr) -> Option<String> {
    let body: serde_json::Value = client
        .get(format!("http://{admin}/config"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["hash"].as_str().map(str::to_string)
}

fn print_soak_report(
    tally: &mut Tally,
    samples: &[Sample],
    idle: Option<Sample>,
    verdict: Option<&Flatness>,
    reloads: u64,
    reload_failures: &[String],
    stopped: &str,
) {
    let seconds = samples.last().map_or(0.0, |s| s.at_s).max(1.0);
    println!("## Soak");
    println!();
    println!(
        "{} requests in {:.0} s ({:.0}/s): {} as expected, {} not; latency p50 {} ms, p99 {} ms",
        tally.total_ok() + tally.total_failed(),
        seconds,
        (tally.total_ok() + tally.total_failed()) as f64 / seconds,
        tally.total_ok(),
        tally.total_failed(),
        tally.latency_ms(0.5),
        tally.latency_ms(0.99),
    );
    println!("failures: {}", tally.failure_summary());
    println!(
        "by kind: {}",
        tally
            .ok
            .iter()
            .map(|(k, n)| format!("{k:?} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "reloads: {reloads}, {} failed{}",
        reload_failures.len(),
        if reload_failures.is_empty() {
            String::new()
        } else {
            format!(": {}", reload_failures.join("; "))
        }
    );
    println!();
    println!("| t (s) | RSS (MiB) | open fds | requests |");
    println!("| ---: | ---: | ---: | ---: |");
    let step = (samples.len() / 12).max(1);
    for s in samples.iter().step_by(step).chain(samples.last()) {
        println!(
            "| {:.0} | {:.1} | {} | {} |",
            s.at_s,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.requests
        );
    }
    if let Some(s) = idle {
        println!(
            "| idle after | {:.1} | {} | {} |",
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.requests
        );
    }
    println!();
    match verdict {
        Some(v) => println!(
            "RSS {:.1} -> {:.1} MiB, fds {} -> {} (median of the 2nd tenth vs the last tenth): {}",
            v.rss_start_kib as f64 / 1024.0,
            v.rss_end_kib as f64 / 1024.0,
            v.fds_start,
            v.fds_end,
            if v.flat { "flat" } else { "GROWING" }
        ),
        None => println!("too few samples for a verdict"),
    }
    println!("gateway stop: {stopped}");
}

// ------------------------------------------------------------------ chaos

/// A provider that misbehaves at the socket: reset, or answer `reply`.
async fn misbehaving_server(reply: Option<&'static [u8]>) -> Result<SocketAddr, AnyError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match reply {
                    Some(bytes) => {
                        let _ = socket.write_all(bytes).await;
                        let _ = socket.shutdown().await;
                    }
                    // SO_LINGER 0: close sends RST, not FIN.
                    None => {
                        let _ = socket.set_zero_linger();
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A port nobody listens on.
fn refused_port() -> Result<SocketAddr, AnyError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

struct Scenario {
    name: &'static str,
    what: &'static str,
    addr: SocketAddr,
    /// Failures the fallback cannot prevent (streams cut after their first
    /// bytes reached the client: never retried, by design).
    unrecoverable_streams: bool,
}

impl Scenario {
    fn new(name: &'static str, what: &'static str, addr: SocketAddr) -> Self {
        Scenario {
            name,
            what,
            addr,
            unrecoverable_streams: false,
        }
    }
}

/// What the `garbage` provider answers: bytes that are not HTTP.
const NOT_HTTP: &[u8] = b"\x00\x01\x02 not http at all \xff\xfe\r\n\r\n";
/// What the `garbage-json` provider answers: a 200 whose body is cut JSON.
const NOT_JSON: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
    content-length: 12\r\nconnection: close\r\n\r\n{\"choices\":[";

fn chaos_config(healthy: SocketAddr, scenarios: &[Scenario]) -> String {
    let mut text = gateway_documents("chaos", "");
    text.push_str(&format!(
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: healthy}}\nspec: {{type: Mock, endpoint: \"http://{healthy}/v1\"}}\n"
    ));
    // The provider's timeout is shorter than the route's, so a hang leaves
    // time for the fallback tier.
    const TIMEOUTS: &str = "  timeouts: {request: 4s, streamIdle: 2s}\n";
    for s in scenarios {
        let name = s.name;
        text.push_str(&format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: {name}}}\nspec:\n  type: Mock\n  endpoint: \"http://{}/v1\"\n  timeouts: {{connect: 1s, request: 1s}}\n",
            s.addr
        ));
        text.push_str(&route_document(
            "chaos",
            name,
            &format!(
                "{TIMEOUTS}  backends:\n  - {{providerRef: {{name: {name}}}, model: mock-chat, priority: 0}}\n  - {{providerRef: {{name: healthy}}, model: mock-chat, priority: 1}}\n"
            ),
        ));
        text.push_str(&route_document(
            "chaos",
            &format!("direct-{name}"),
            &format!(
                "{TIMEOUTS}  backends: [{{providerRef: {{name: {name}}}, model: mock-chat}}]\n"
            ),
        ));
    }
    text
}

/// Alone, a failing provider must still give the client a clear answer: a
/// success, a 5xx in the OpenAI error shape, or a stream that ends with an
/// error event. Anything else (a transport error, a client timeout, a 200
/// with a body that is not an answer) counts as failed.
fn judge_clear(kind: Kind, status: u16, body: &[u8]) -> Outcome {
    if judge(kind, status, body) == Outcome::Ok {
        return Outcome::Ok;
    }
    let error_object = serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["error"]["message"].is_string());
    let text = String::from_utf8_lossy(body);
    if status >= 500 && error_object {
        return Outcome::Ok;
    }
    if status == 200 && kind.is_stream() && text.contains("\"error\"") {
        return Outcome::Ok;
    }
    Outcome::Failed(format!("unclear: status {status}"))
}

async fn chaos(bin: &Path, duration: Duration, concurrency: usize) -> Result<bool, AnyError> {
    let dir = tempfile::tempdir()?;
    let fast = [
        "--ttft-ms",
        "5",
        "--token-delay-ms",
        "2",
        "--output-tokens",
        "8",
    ];
    let (mut healthy, healthy_addr) = start_mock(bin, dir.path(), "healthy", &fast)?;
    let mut hang_args = fast.to_vec();
    hang_args.extend(["--header-delay-ms", "600000"]);
    let (mut hang, hang_addr) = start_mock(bin, dir.path(), "hang", &hang_args)?;
    let mut flaky_args = fast.to_vec();
    flaky_args.extend(["--error-rate", "0.5", "--error-status", "503"]);
    let (mut flaky, flaky_addr) = start_mock(bin, dir.path(), "flaky", &flaky_args)?;
    let mut cut_args = fast.to_vec();
    cut_args.extend(["--disconnect-after", "2"]);
    let (mut cut, cut_addr) = start_mock(bin, dir.path(), "cut", &cut_args)?;

    let scenarios = [
        Scenario::new("hang", "accepts, never answers", hang_addr),
        Scenario::new(
            "reset",
            "resets every connection",
            misbehaving_server(None).await?,
        ),
        Scenario::new(
            "garbage",
            "answers bytes that are not HTTP",
            misbehaving_server(Some(NOT_HTTP)).await?,
        ),
        Scenario::new(
            "garbage-json",
            "answers 200 with a body that is not JSON",
            misbehaving_server(Some(NOT_JSON)).await?,
        ),
        Scenario::new("refused", "refuses connections", refused_port()?),
        Scenario::new("flaky", "answers 503 to half the requests", flaky_addr),
        Scenario {
            unrecoverable_streams: true,
            ..Scenario::new("cut", "cuts every stream after 2 chunks", cut_addr)
        },
    ];
    let config = dir.path().join("tollgate.yaml");
    write_atomically(&config, &chaos_config(healthy_addr, &scenarios))?;
    let (mut gateway, data, _) = start_gateway(bin, dir.path(), &config)?;

    println!(
        "## Chaos ({}s per row, {concurrency} clients, 60% chat / 40% streams)",
        duration.as_secs()
    );
    println!();
    println!(
        "| provider | with a healthy fallback tier: failed / sent | p50 / p99 ms | alone: unclear answers / sent | how the failures ended |"
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    let mut pass = true;
    for s in &scenarios {
        let run = |alias: String, judge: Judge| {
            let traffic = Arc::new(Traffic::new(data, CLIENT_KEY.into(), Aliases::only(&alias)));
            run_load(
                traffic,
                Mix::chaos(),
                duration,
                concurrency,
                Arc::default(),
                judge,
            )
        };
        let mut fallback = run(s.name.to_string(), judge).await;
        let alone = run(format!("direct-{}", s.name), judge_clear).await;
        let fallback_sent = fallback.total_ok() + fallback.total_failed();
        let alone_sent = alone.total_ok() + alone.total_failed();
        // Cut streams may only fail as streams ending in an error event.
        let acceptable = if s.unrecoverable_streams {
            fallback.failed.iter().all(|(kind, reasons)| {
                kind.is_stream() && reasons.keys().all(|r| r == "error event in stream")
            })
        } else {
            fallback.total_failed() == 0
        };
        pass &= acceptable && alone.total_failed() == 0;
        println!(
            "| {} ({}) | {} / {} | {} / {} | {} / {} | {} |",
            s.name,
            s.what,
            fallback.total_failed(),
            fallback_sent,
            fallback.latency_ms(0.5),
            fallback.latency_ms(0.99),
            alone.total_failed(),
            alone_sent,
            if fallback.total_failed() + alone.total_failed() == 0 {
                "none".to_string()
            } else {
                format!(
                    "fallback: {}; alone: {}",
                    fallback.failure_summary(),
                    alone.failure_summary()
                )
            }
        );
    }
    let stopped = gateway.stop(Duration::from_secs(15));
    for mock in [&mut healthy, &mut hang, &mut flaky, &mut cut] {
        mock.stop(Duration::from_secs(5));
    }
    println!();
    println!("gateway stop: {stopped}");
    Ok(pass)
}
