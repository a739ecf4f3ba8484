//! Starting and stopping the processes under test: the mock, nginx in front
//! of it, and the tollgate gateway in front of it.

use crate::error::{BenchError, Result};
use crate::procfs;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// nginx runs with one worker so it uses at most one core, like the
/// measurements assume; the report says so.
pub const NGINX_WORKER_PROCESSES: u32 = 1;
/// Upstream keep-alive pool size for nginx.
pub const NGINX_UPSTREAM_KEEPALIVE: u32 = 64;

/// Route alias of the OpenAI passthrough (OpenAI client → OpenAI-format
/// provider) in the generated gateway config.
pub const PASSTHROUGH_ALIAS: &str = "chat";
/// Route alias of the translated path (OpenAI client → Anthropic-format
/// provider on the same mock) in the same config.
pub const TRANSLATED_ALIAS: &str = "translated";
/// The key the mock demands on `/v1/messages` (`--anthropic-key`), so the
/// translated path carries the same auth headers as against the real API.
pub const BENCH_ANTHROPIC_KEY: &str = "bench-anthropic-key";

/// Client key of the budget pair's baseline (no budget applies to it).
pub const KEY_UNBUDGETED: &str = "tg-bench-unbudgeted";
/// Client key whose requests every budget of the pair's config counts.
pub const KEY_BUDGETED: &str = "tg-bench-budgeted";

/// Route aliases of the failover set: a request that succeeds first time,
/// and failovers from a primary that refuses connections or answers 500
/// (breaker off, so every request pays the failed attempt), and from a
/// refusing primary whose breaker is on (the default: ejected, skipped).
pub const FIRST_TIME_ALIAS: &str = "first-time";
pub const FAILOVER_REFUSED_ALIAS: &str = "failover-refused";
pub const FAILOVER_500_ALIAS: &str = "failover-500";
pub const FAILOVER_EJECTED_ALIAS: &str = "failover-ejected";
/// Route aliases of the guard pair: the same backend without and with a
/// typical guard policy.
pub const UNGUARDED_ALIAS: &str = "unguarded";
pub const GUARDED_ALIAS: &str = "guarded";

/// A child process that is SIGTERMed (then SIGKILLed) when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    stderr_log: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns Some(description) if the process has already exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited early ({status})", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: wait failed: {e}", self.name)),
        }
    }

    /// Last lines of the stderr log, for error messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr_log, 8)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> String {
        if let Some(done) = self.exited() {
            return done;
        }
        // SAFETY: kill(2) with a pid we spawned and still own (not reaped).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("stopped ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!("did not stop within {grace:?} of SIGTERM; killed")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.stop(Duration::from_secs(3));
        }
    }
}

/// Writes `bin` back and drops it from the page cache, so the processes
/// started from it map it as after a deploy or a reboot: read from disk.
/// A binary the linker (or `cp`) has just written sits in the page cache in
/// large folios, and a process mapping its code then gets several MB more
/// of it resident than one whose pages were read in by faults (the gateway:
/// about 5 MB more RssFile on ext4): the idle RSS check would measure how
/// the file was last written, not what the gateway touches. Best effort.
pub fn drop_from_page_cache(bin: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(file) = File::open(bin) else { return };
    // Dirty pages cannot be dropped.
    let _ = file.sync_data();
    // SAFETY: posix_fadvise on a descriptor we own, over the whole file.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Makes the child get SIGTERM if the harness dies (e.g. killed by a CI
/// timeout), so no mock/nginx/gateway outlives the run.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Addresses announced on a `listening data=http://… [admin=http://…]` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLine {
    pub data: SocketAddr,
    pub admin: Option<SocketAddr>,
}

pub fn parse_listen_line(line: &str) -> Result<ListenLine> {
    let err = || BenchError::Parse {
        what: "listening line".into(),
        detail: format!("{line:?}"),
    };
    let mut words = line.split_whitespace();
    if words.next() != Some("listening") {
        return Err(err());
    }
    let (mut data, mut admin) = (None, None);
    for word in words {
        let Some((key, url)) = word.split_once('=') else {
            continue;
        };
        let hostport = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        let addr: SocketAddr = hostport.parse().map_err(|_| err())?;
        match key {
            "data" => data = Some(addr),
            "admin" => admin = Some(addr),
            _ => {}
        }
    }
    Ok(ListenLine {
        data: data.ok_or_else(err)?,
        admin,
    })
}

/// Spawns `cmd`, waits for its `listening …` stdout line, and keeps draining
/// stdout to a log file afterwards (a full pipe would block the child).
pub fn spawn_announcing(
    name: &str,
    mut cmd: Command,
    log_dir: &Path,
    timeout: Duration,
) -> Result<(Process, ListenLine)> {
    let stderr_log = log_dir.join(format!("{name}.stderr.log"));
    let stdout_log = log_dir.join(format!("{name}.stdout.log"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr_log)?);
    die_with_parent(&mut cmd);
    let bin = PathBuf::from(cmd.get_program());
    let mut child = cmd
        .spawn()
        .map_err(|source| BenchError::Spawn { bin, source })?;
    let stdout = child.stdout.take().expect("stdout piped");
    let mut proc = Process {
        name: name.to_string(),
        child,
        stderr_log,
    };

    let (tx, rx) = mpsc::channel();
    let mut out = File::create(&stdout_log)?;
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && line.trim_start().starts_with("listening") {
                sent = true;
                let _ = tx.send(line.clone());
            }
            let _ = writeln!(out, "{line}");
        }
    });

    let deadline = Instant::now() + timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let listen = parse_listen_line(&line)?;
                wait_accepting(
                    listen.data,
                    deadline.saturating_duration_since(Instant::now()),
                )?;
                return Ok((proc, listen));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed without the line; give the exit a moment to land.
                std::thread::sleep(Duration::from_millis(100));
                let why = proc.exited().unwrap_or_else(|| "closed stdout".into());
                return Err(BenchError::NotReady {
                    what: name.into(),
                    reason: format!("{why}; stderr:\n{}", proc.stderr_tail()),
                });
            }
        }
        if let Some(why) = proc.exited() {
            return Err(BenchError::NotReady {
                what: name.into(),
                reason: format!("{why}; stderr:\n{}", proc.stderr_tail()),
            });
        }
        if Instant::now() > deadline {
            proc.stop(Duration::from_secs(2));
            return Err(BenchError::NotReady {
                what: name.into(),
                reason: format!("no `listening` line within {timeout:?}"),
            });
        }
    }
}

/// Polls until `addr` accepts TCP connections.
pub fn wait_accepting(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(BenchError::NotReady {
                    what: addr.to_string(),
                    reason: format!("not accepting connections: {e}"),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A currently free loopback port (for nginx, which can't report one).
/// Racy in theory; fine on a machine where nothing else grabs ports.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How the mock backend is provided.
#[derive(Debug, Clone)]
pub enum MockSource {
    /// `BIN mock --listen 127.0.0.1:0 …` (the real provider stand-in).
    Binary(PathBuf),
    /// This binary's hidden `__stub-mock` subcommand (harness smoke tests).
    Stub,
}

pub fn start_mock(source: &MockSource, log_dir: &Path) -> Result<(Process, SocketAddr)> {
    start_mock_with(source, log_dir, "mock", &[])
}

/// Another mock process named `name`, with `extra` flags (the real mock only).
pub fn start_mock_with(
    source: &MockSource,
    log_dir: &Path,
    name: &str,
    extra: &[&str],
) -> Result<(Process, SocketAddr)> {
    if !extra.is_empty() && matches!(source, MockSource::Stub) {
        return Err(BenchError::NotReady {
            what: name.into(),
            reason: "the stub mock takes no flags".into(),
        });
    }
    let cmd = match source {
        MockSource::Binary(bin) => {
            let mut c = Command::new(bin);
            // Zero delays: we measure proxy overhead, not simulated model time.
            c.args([
                "mock",
                "--listen",
                "127.0.0.1:0",
                "--ttft-ms",
                "0",
                "--token-delay-ms",
                "0",
                "--output-tokens",
                "16",
                // Only checked on /v1/messages (the translated target).
                "--anthropic-key",
                BENCH_ANTHROPIC_KEY,
            ]);
            c.args(extra);
            c
        }
        MockSource::Stub => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["__stub-mock", "--listen", "127.0.0.1:0"]);
            c
        }
    };
    let (p, l) = spawn_announcing(name, cmd, log_dir, Duration::from_secs(10))?;
    Ok((p, l.data))
}

pub fn nginx_config(dir: &Path, listen_port: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# Generated by tollgate-bench.
daemon off;
master_process on;
worker_processes {NGINX_WORKER_PROCESSES};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream mock {{
        server {upstream};
        keepalive {NGINX_UPSTREAM_KEEPALIVE};
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            # Pass SSE chunks through as they arrive.
            proxy_buffering off;
        }}
    }}
}}
"
    )
}

pub fn start_nginx(bin: &Path, mock: SocketAddr, dir: &Path) -> Result<(Process, SocketAddr)> {
    let ndir = dir.join("nginx");
    std::fs::create_dir_all(&ndir)?;
    // Workers may drop to an unprivileged user; let them traverse the dir.
    set_mode(dir, 0o755)?;
    set_mode(&ndir, 0o755)?;
    let port = free_port()?;
    let conf = ndir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(&ndir, port, mock))?;
    let stderr_log = ndir.join("stderr.log");
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(&ndir)
        .arg("-e")
        .arg(ndir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_log)?);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|source| BenchError::Spawn {
        bin: bin.to_path_buf(),
        source,
    })?;
    let mut proc = Process {
        name: "nginx".into(),
        child,
        stderr_log,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    // The master listens before forking; wait for the worker too, or its CPU
    // and RSS would be missed.
    loop {
        if let Some(why) = proc.exited() {
            return Err(BenchError::NotReady {
                what: "nginx".into(),
                reason: format!(
                    "{why}; stderr:\n{}\nerror.log:\n{}",
                    proc.stderr_tail(),
                    tail(&ndir.join("error.log"), 8)
                ),
            });
        }
        let ready = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && procfs::children_of(proc.pid()).len() >= NGINX_WORKER_PROCESSES as usize;
        if ready {
            return Ok((proc, addr));
        }
        if Instant::now() > deadline {
            return Err(BenchError::NotReady {
                what: "nginx".into(),
                reason: format!(
                    "not ready within 10s; error.log:\n{}",
                    tail(&ndir.join("error.log"), 8)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// One gateway, two routes on the same mock: `chat` (OpenAI passthrough)
/// and `translated` (OpenAI client → Anthropic Messages provider, request,
/// response and stream translated by the gateway).
pub fn gateway_config(mock: SocketAddr) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: bench, namespace: default}}
spec: {{listener: {{port: 8080}}, admin: {{port: 9090}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bench-keys, namespace: default}}
stringData: {{anthropic: {BENCH_ANTHROPIC_KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: mock, namespace: default}}
spec: {{type: Mock, endpoint: "http://{mock}/v1"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: mock-anthropic, namespace: default}}
spec:
  type: Anthropic
  endpoint: "http://{mock}/v1"
  network: {{allowLoopback: true}}
  credentials: {{secretRef: {{name: bench-keys, key: anthropic}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat, namespace: default}}
spec:
  gatewayRef: {{name: bench}}
  models: ["{PASSTHROUGH_ALIAS}"]
  backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: translated, namespace: default}}
spec:
  gatewayRef: {{name: bench}}
  models: ["{TRANSLATED_ALIAS}"]
  backends: [{{providerRef: {{name: mock-anthropic}}, model: mock-claude}}]
"#
    )
}

/// The failover set's gateway: `mock` answers; `dead` is a loopback port
/// nobody listens on (connections refused); `failing` is a mock that
/// answers every request 500. Each failover route tries a broken primary,
/// then `mock`.
pub fn failover_gateway_config(mock: SocketAddr, failing: SocketAddr, dead: SocketAddr) -> String {
    let provider = |name: &str, addr: SocketAddr, breaker: &str| {
        format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: {name}, namespace: default}}\nspec: {{type: Mock, endpoint: \"http://{addr}/v1\"{breaker}}}\n"
        )
    };
    let route = |alias: &str, primary: Option<&str>| {
        let fallback = "{providerRef: {name: mock}, model: mock-chat, priority: 1}";
        let backends = match primary {
            Some(primary) => {
                format!("[{{providerRef: {{name: {primary}}}, model: mock-chat}}, {fallback}]")
            }
            None => "[{providerRef: {name: mock}, model: mock-chat}]".to_string(),
        };
        format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {alias}, namespace: default}}\nspec:\n  gatewayRef: {{name: bench}}\n  models: [\"{alias}\"]\n  backends: {backends}\n"
        )
    };
    let off = ", circuitBreaker: {enabled: false}";
    [
        "apiVersion: tollgate.dev/v1alpha1\nkind: AIGateway\nmetadata: {name: bench, namespace: default}\nspec: {listener: {port: 8080}, admin: {port: 9090}}\n".to_string(),
        provider("mock", mock, ""),
        provider("refusing", dead, off),
        provider("failing", failing, off),
        provider("ejected", dead, ""),
        route(FIRST_TIME_ALIAS, None),
        route(FAILOVER_REFUSED_ALIAS, Some("refusing")),
        route(FAILOVER_500_ALIAS, Some("failing")),
        route(FAILOVER_EJECTED_ALIAS, Some("ejected")),
    ]
    .concat()
}

/// The guard pair's gateway: two routes to `mock`, one with a typical
/// policy (every built-in recognizer redacting on input, a custom deny list,
/// prompt injection flagged; output redacting cards, SSNs and secrets and
/// blocking the deny list), one with none.
pub fn guard_gateway_config(mock: SocketAddr) -> String {
    let route = |alias: &str, policy: &str| {
        format!(
            "---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {alias}, namespace: default}}\nspec:\n  gatewayRef: {{name: bench}}\n  models: [\"{alias}\"]\n{policy}  backends: [{{providerRef: {{name: mock}}, model: mock-chat}}]\n"
        )
    };
    [
        "apiVersion: tollgate.dev/v1alpha1\nkind: AIGateway\nmetadata: {name: bench, namespace: default}\nspec:\n  listener: {port: 8080}\n  admin: {port: 9090}\n  guardPolicies:\n  - name: typical\n    input:\n      pii: {action: Redact}\n      custom: [{name: CODENAME, words: [bluebird, kestrel, nightjar], action: Block}]\n      injection: {action: Flag}\n    output:\n      pii: {entities: [CREDIT_CARD, US_SSN, SECRET]}\n      custom: [{name: CODENAME, words: [bluebird, kestrel, nightjar], action: Block}]\n".to_string(),
        format!("---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: mock, namespace: default}}\nspec: {{type: Mock, endpoint: \"http://{mock}/v1\"}}\n"),
        route(UNGUARDED_ALIAS, ""),
        route(GUARDED_ALIAS, "  guardPolicy: typical\n"),
    ]
    .concat()
}

/// [`gateway_config`] with two client keys and budgets that count only
/// [`KEY_BUDGETED`]'s requests (never refusing: the limits are far away),
/// their counters in this process or, with `redis`, in that Redis.
/// Two limits, five caps: what a team budget with a rate cap looks like.
pub fn budget_gateway_config(mock: SocketAddr, redis: Option<SocketAddr>) -> String {
    let redis = redis.map_or(String::new(), |r| {
        format!("\n  redis: {{url: \"redis://{r}\"}}")
    });
    let base = gateway_config(mock).replacen(
        "spec: {listener: {port: 8080}, admin: {port: 9090}}",
        &format!(
            "spec:\n  listener: {{port: 8080}}\n  admin: {{port: 9090}}\n  apiKeys:\n  \
             - {{secretRef: {{name: bench-keys, key: unbudgeted}}, principal: {{user: unbudgeted}}}}\n  \
             - {{secretRef: {{name: bench-keys, key: budgeted}}, principal: {{user: budgeted, team: bench}}}}{redis}"
        ),
        1,
    );
    let base = base.replacen(
        "stringData: {anthropic: ",
        &format!(
            "stringData: {{unbudgeted: {KEY_UNBUDGETED}, budgeted: {KEY_BUDGETED}, anthropic: "
        ),
        1,
    );
    let base = base.replacen(
        "spec: {type: Mock, endpoint: \"http://",
        "spec: {models: [{name: mock-chat, pricing: {inputPerMillion: 2.5, outputPerMillion: 10}}], type: Mock, endpoint: \"http://",
        1,
    );
    format!(
        r#"{base}---
apiVersion: tollgate.dev/v1alpha1
kind: TokenBudget
metadata: {{name: team, namespace: default}}
spec:
  gatewayRef: {{name: bench}}
  subject: {{team: bench}}
  limits:
  - {{window: Day, totalTokens: 1000000000000, costUsd: "1000000", requests: 1000000000000}}
  - {{window: Minute, rolling: true, requests: 1000000000000, outputTokens: 1000000000000}}
"#
    )
}

/// `redis-server` on a free loopback port, nothing persisted.
pub fn start_redis(bin: &Path, dir: &Path) -> Result<(Process, SocketAddr)> {
    let port = free_port()?;
    let stderr_log = dir.join("redis.stderr.log");
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("redis.stdout.log"))?)
        .stderr(File::create(&stderr_log)?);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|source| BenchError::Spawn {
        bin: bin.to_path_buf(),
        source,
    })?;
    let process = Process {
        name: "redis".into(),
        child,
        stderr_log,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_accepting(addr, Duration::from_secs(10))?;
    Ok((process, addr))
}

pub fn start_tollgate(bin: &Path, mock: SocketAddr, dir: &Path) -> Result<(Process, SocketAddr)> {
    start_tollgate_with(bin, "tollgate", &gateway_config(mock), dir)
}

/// A tollgate process named `name` on `config`.
pub fn start_tollgate_with(
    bin: &Path,
    name: &str,
    config: &str,
    dir: &Path,
) -> Result<(Process, SocketAddr)> {
    if !bin.is_file() {
        return Err(BenchError::NotReady {
            what: "tollgate".into(),
            reason: format!("binary {} not found", bin.display()),
        });
    }
    let conf = dir.join(format!("{name}.yaml"));
    std::fs::write(&conf, config)?;
    let mut cmd = Command::new(bin);
    cmd.arg("gateway").arg("--config").arg(&conf).args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    // nginx runs with access_log off; keep per-request logging out of the
    // gateway's numbers too unless the caller asked for it.
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let (p, l) = spawn_announcing(name, cmd, dir, Duration::from_secs(10))?;
    Ok((p, l.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_line_data_and_admin() {
        let l =
            parse_listen_line("listening data=http://127.0.0.1:4000 admin=http://127.0.0.1:4001")
                .unwrap();
        assert_eq!(l.data, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(l.admin, Some("127.0.0.1:4001".parse().unwrap()));
        let m = parse_listen_line("listening data=http://127.0.0.1:5/").unwrap();
        assert_eq!(m.admin, None);
        assert!(parse_listen_line("starting up").is_err());
        assert!(parse_listen_line("listening admin=http://127.0.0.1:1").is_err());
    }

    #[test]
    fn nginx_config_has_required_directives() {
        let c = nginx_config(Path::new("/tmp/x"), 1234, "127.0.0.1:9999".parse().unwrap());
        for needle in [
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",
            "pid /tmp/x/nginx.pid;",
            "error_log /tmp/x/error.log",
            "server 127.0.0.1:9999;",
            "keepalive 64;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_buffering off;",
            "listen 127.0.0.1:1234;",
        ] {
            assert!(c.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn gateway_config_points_at_mock() {
        let c = gateway_config("127.0.0.1:7777".parse().unwrap());
        assert_eq!(
            c.matches(r#"endpoint: "http://127.0.0.1:7777/v1""#).count(),
            2
        );
        assert_eq!(c.matches("\n---\n").count(), 5);
        assert!(c.contains("type: Anthropic"));
        assert!(c.contains(r#"models: ["chat"]"#));
        assert!(c.contains(r#"models: ["translated"]"#));
        assert!(c.contains("credentials: {secretRef: {name: bench-keys, key: anthropic}}"));
        assert!(c.contains(&format!("anthropic: {BENCH_ANTHROPIC_KEY}")));
    }

    #[test]
    fn guard_config_compiles_into_an_unguarded_and_a_guarded_route() {
        let text = guard_gateway_config(SocketAddr::from(([127, 0, 0, 1], 7777)));
        let mut loaded = tollgate_config::load::Loaded::default();
        tollgate_config::load::add_documents(&mut loaded, "guard.yaml", &text, &|_| None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let compiled =
            tollgate_config::compile(&loaded.resources, &tollgate_config::DigestKey::generate());
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let config = &compiled.snapshots.values().next().unwrap().config;
        let guard = |alias: &str| {
            config
                .routes
                .iter()
                .find(|r| r.aliases == [alias])
                .unwrap()
                .guard
        };
        assert_eq!(guard(UNGUARDED_ALIAS), None);
        assert_eq!(guard(GUARDED_ALIAS), Some(0));
    }

    #[test]
    fn failover_config_compiles_into_four_routes_with_broken_primaries() {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let text = failover_gateway_config(at(7777), at(7778), at(7779));
        let mut loaded = tollgate_config::load::Loaded::default();
        tollgate_config::load::add_documents(&mut loaded, "failover.yaml", &text, &|_| None);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let compiled =
            tollgate_config::compile(&loaded.resources, &tollgate_config::DigestKey::generate());
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let config = &compiled.snapshots.values().next().unwrap().config;
        assert_eq!(config.routes.len(), 4);
        let primary = |alias: &str| {
            let route = config.routes.iter().find(|r| r.aliases == [alias]).unwrap();
            let first = &config.providers[route.backends[0].provider];
            (first.base_url.clone(), first.circuit_breaker.disabled)
        };
        assert_eq!(
            primary(FIRST_TIME_ALIAS),
            ("http://127.0.0.1:7777/v1".to_string(), false)
        );
        assert_eq!(
            primary(FAILOVER_REFUSED_ALIAS),
            ("http://127.0.0.1:7779/v1".to_string(), true)
        );
        assert_eq!(
            primary(FAILOVER_500_ALIAS),
            ("http://127.0.0.1:7778/v1".to_string(), true)
        );
        assert_eq!(
            primary(FAILOVER_EJECTED_ALIAS),
            ("http://127.0.0.1:7779/v1".to_string(), false)
        );
    }

    #[test]
    fn budget_config_adds_keys_pricing_budget_and_redis() {
        let mock = "127.0.0.1:7777".parse().unwrap();
        let memory = budget_gateway_config(mock, None);
        for part in [
            "  apiKeys:\n",
            "key: unbudgeted}, principal: {user: unbudgeted}",
            &format!("budgeted: {KEY_BUDGETED}"),
            "models: [{name: mock-chat, pricing:",
            "kind: TokenBudget",
            "subject: {team: bench}",
        ] {
            assert!(memory.contains(part), "{part:?} in {memory}");
        }
        assert!(!memory.contains("redis:"));
        let redis = budget_gateway_config(mock, Some("127.0.0.1:6390".parse().unwrap()));
        assert!(
            redis.contains("  redis: {url: \"redis://127.0.0.1:6390\"}\n"),
            "{redis}"
        );
    }
}
