//! Orchestration: start each target in turn in front of one shared mock,
//! warm up, run the measured phases, sample CPU/RSS around them, stop it.

use crate::client::{RequestTemplate, chat_body};
use crate::error::{BenchError, Result};
use crate::load::{self, ClosedLoopConfig, Measure, OpenLoopConfig, PhaseOutcome};
use crate::mcp::{self, Expect};
use crate::procfs;
use crate::report::{
    BenchReport, CpuPerRequest, DIRECT, MemoryReport, Meta, NGINX, PhaseResult, TOLLGATE,
    TOLLGATE_BUDGET_MEMORY, TOLLGATE_BUDGET_REDIS, TOLLGATE_TRANSLATED, TOLLGATE_UNBUDGETED,
    TOLLGATE_UNBUDGETED_REDIS, TargetReport,
};
use crate::report::{
    McpReport, McpTarget, TOLLGATE_FAILOVER_500, TOLLGATE_FAILOVER_EJECTED,
    TOLLGATE_FAILOVER_REFUSED, TOLLGATE_FIRST_TIME, TOLLGATE_GUARDED, TOLLGATE_UNGUARDED,
};
use crate::targets::{self, MockSource, Process};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

const CHAT_PATH: &str = "/v1/chat/completions";
/// Pause between phases so closed connections and TIME_WAIT churn settle.
const SETTLE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub phase: Duration,
    pub warmup: Duration,
    pub rates: Vec<f64>,
    pub connections: usize,
    pub concurrency: usize,
    pub stream_requests: u64,
    pub timeout: Duration,
    pub loadgen_threads: usize,
    pub tollgate_bin: PathBuf,
    pub nginx_bin: PathBuf,
    pub redis_bin: PathBuf,
    pub mock: MockSource,
    /// Extra time for an open-loop backlog to drain before unsent requests
    /// are written off as errors.
    pub grace: Duration,
    /// Wall-clock cap on the streaming phase.
    pub stream_cap: Duration,
    /// Run the chat-completion targets (mock-direct, nginx, tollgate, budgets).
    pub http: bool,
    /// Run the MCP section (tools/call overhead, aggregated tools/list).
    pub mcp: bool,
}

/// What the runner needs to know about a started target.
struct Target<'a> {
    name: &'static str,
    addr: SocketAddr,
    model: &'static str,
    /// PIDs whose CPU/RSS count as the target's (re-evaluated per sample
    /// because nginx workers are child processes).
    pids: &'a dyn Fn() -> Vec<u32>,
    mock_pid: u32,
    /// Client key to send, for targets on a keyed gateway.
    key: Option<&'static str>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn run(plan: &Plan, workdir: &Path) -> Result<BenchReport> {
    let loadavg_start = loadavg();
    // The load generator's own runtime, sized explicitly so it leaves the
    // rest of the (2-core) machine to the processes under test.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.loadgen_threads.max(1))
        .thread_name("loadgen")
        .enable_all()
        .build()?;

    // Binaries as read from disk, not as the build just wrote them (see
    // drop_from_page_cache): it shows in the RSS figures.
    targets::drop_from_page_cache(&plan.tollgate_bin);
    if let MockSource::Binary(bin) = &plan.mock {
        targets::drop_from_page_cache(bin);
    }
    // One mock for all targets: every target talks to the same backend
    // process, and the mock never restarts between targets.
    let (mut mock, mock_addr) = targets::start_mock(&plan.mock, workdir)?;
    let mock_pid = mock.pid();
    eprintln!("mock listening on {mock_addr} (pid {mock_pid})");

    let reports = if plan.http {
        run_http(&rt, plan, workdir, mock_addr, mock_pid)
    } else {
        Vec::new()
    };
    let mcp = plan
        .mcp
        .then(|| run_mcp(&rt, plan, workdir, mock_addr, mock_pid));

    if let Some(why) = mock.exited() {
        return Err(BenchError::NotReady {
            what: "mock".into(),
            reason: format!(
                "died during the run: {why}; stderr:\n{}",
                mock.stderr_tail()
            ),
        });
    }
    let _ = stop(&mut mock);
    rt.shutdown_timeout(Duration::from_secs(1));

    let mut meta = meta(plan);
    meta.loadavg_start = loadavg_start;
    meta.loadavg_end = loadavg();
    let mut report = BenchReport::new(meta, reports);
    report.mcp = mcp;
    Ok(report)
}

/// The chat-completion targets: mock-direct, nginx, tollgate (passthrough
/// and translated), and the budget pairs, all on the one shared mock.
fn run_http(
    rt: &Runtime,
    plan: &Plan,
    workdir: &Path,
    mock_addr: SocketAddr,
    mock_pid: u32,
) -> Vec<TargetReport> {
    let mut reports = Vec::new();

    let direct_pids = move || vec![mock_pid];
    reports.push(run_target(
        rt,
        plan,
        &Target {
            name: DIRECT,
            addr: mock_addr,
            model: "mock-chat",
            pids: &direct_pids,
            mock_pid,
            key: None,
        },
    ));

    match targets::start_nginx(&plan.nginx_bin, mock_addr, workdir) {
        Ok((mut p, addr)) => {
            let master = p.pid();
            let pids = move || procfs::with_children(master);
            let mut r = run_target(
                rt,
                plan,
                &Target {
                    name: NGINX,
                    addr,
                    model: "mock-chat",
                    pids: &pids,
                    mock_pid,
                    key: None,
                },
            );
            r.notes.push(format!(
                "worker_processes {}, upstream keepalive {}",
                targets::NGINX_WORKER_PROCESSES,
                targets::NGINX_UPSTREAM_KEEPALIVE
            ));
            r.shutdown = Some(stop(&mut p));
            reports.push(r);
        }
        Err(e) => reports.push(TargetReport::skipped(NGINX, e.to_string())),
    }

    // Passthrough and translated run against ONE tollgate process (one
    // config with both routes), with their phases interleaved. That is the
    // fairest side-by-side: same binary, same process (allocator, thread
    // placement, warmed caches), same client, same mock, same machine load
    // at each phase; the only difference is the route, i.e. the OpenAI →
    // Anthropic translation of request, response and stream. A second
    // process would add process-to-process variance and double the
    // memory footprint on a 2-core machine; running one path fully before
    // the other would let machine-load drift masquerade as overhead.
    // The price: RSS and CPU are per process, so the memory rows are the
    // same process for both, and CPU/request is sampled around each
    // target's own phases (only one target is loaded at a time).
    match targets::start_tollgate(&plan.tollgate_bin, mock_addr, workdir) {
        Ok((mut p, addr)) => {
            let pid = p.pid();
            let pids = move || vec![pid];
            let passthrough = Target {
                name: TOLLGATE,
                addr,
                model: targets::PASSTHROUGH_ALIAS,
                pids: &pids,
                mock_pid,
                key: None,
            };
            let translated = Target {
                name: TOLLGATE_TRANSLATED,
                addr,
                model: targets::TRANSLATED_ALIAS,
                pids: &pids,
                mock_pid,
                key: None,
            };
            let mut rs = run_targets(rt, plan, &[passthrough, translated]);
            let shutdown = stop(&mut p);
            for r in &mut rs {
                r.shutdown = Some(shutdown.clone());
            }
            rs[0].notes.push(format!(
                "route `{}`: OpenAI client -> OpenAI-format provider (passthrough); same process as {TOLLGATE_TRANSLATED}, phases interleaved",
                targets::PASSTHROUGH_ALIAS
            ));
            rs[1].notes.push(format!(
                "route `{}`: OpenAI client -> Anthropic provider (POST /v1/messages on the same mock, x-api-key checked); same process as {TOLLGATE}, so its RSS rows are that process's",
                targets::TRANSLATED_ALIAS
            ));
            reports.extend(rs);
        }
        Err(e) => {
            let why = e.to_string();
            reports.push(TargetReport::skipped(TOLLGATE, why.clone()));
            reports.push(TargetReport::skipped(TOLLGATE_TRANSLATED, why));
        }
    }

    // Budgets: admission + settle, per store, against the same requests
    // with no budget on the same process.
    reports.extend(budget_pair(rt, plan, workdir, mock_addr, mock_pid, None));
    match targets::start_redis(&plan.redis_bin, workdir) {
        Ok((mut redis, redis_addr)) => {
            reports.extend(budget_pair(
                rt,
                plan,
                workdir,
                mock_addr,
                mock_pid,
                Some((&redis, redis_addr)),
            ));
            let _ = stop(&mut redis);
        }
        Err(e) => {
            for name in [TOLLGATE_UNBUDGETED_REDIS, TOLLGATE_BUDGET_REDIS] {
                reports.push(TargetReport::skipped(name, format!("redis-server: {e}")));
            }
        }
    }
    reports.extend(failover_set(rt, plan, workdir, mock_addr, mock_pid));
    reports.extend(guard_pair(rt, plan, workdir, mock_addr, mock_pid));
    reports
}

/// One tollgate process, two routes to the same backend interleaved: no
/// guard policy, and a typical one (see [`targets::guard_gateway_config`]).
fn guard_pair(
    rt: &Runtime,
    plan: &Plan,
    workdir: &Path,
    mock_addr: SocketAddr,
    mock_pid: u32,
) -> Vec<TargetReport> {
    let note = format!(
        "guard pair: one process, phases interleaved; {TOLLGATE_GUARDED} runs the same requests as {TOLLGATE_UNGUARDED} through a typical guard policy (canonical parse and re-encode, input and output scans, stream hold-back); only the gateway's CPU counts"
    );
    one_process_set(
        rt,
        plan,
        workdir,
        mock_pid,
        ("tollgate-guard", &targets::guard_gateway_config(mock_addr)),
        &[
            (TOLLGATE_UNGUARDED, targets::UNGUARDED_ALIAS),
            (TOLLGATE_GUARDED, targets::GUARDED_ALIAS),
        ],
        &note,
    )
}

/// One tollgate process (`process`: its name and configuration) serving
/// `routes` (target name, model alias), whose phases run interleaved; each
/// report gets `note`. Only the gateway's CPU counts.
fn one_process_set(
    rt: &Runtime,
    plan: &Plan,
    workdir: &Path,
    mock_pid: u32,
    process: (&str, &str),
    routes: &[(&'static str, &'static str)],
    note: &str,
) -> Vec<TargetReport> {
    let (name, config) = process;
    let (mut p, addr) =
        match targets::start_tollgate_with(&plan.tollgate_bin, name, config, workdir) {
            Ok(started) => started,
            Err(e) => {
                let why = e.to_string();
                return routes
                    .iter()
                    .map(|(target, _)| TargetReport::skipped(target, why.clone()))
                    .collect();
            }
        };
    let gateway = p.pid();
    let pids = move || vec![gateway];
    let targets: Vec<Target> = routes
        .iter()
        .map(|&(name, model)| Target {
            name,
            addr,
            model,
            pids: &pids,
            mock_pid,
            key: None,
        })
        .collect();
    let mut rs = run_targets(rt, plan, &targets);
    let shutdown = stop(&mut p);
    for r in &mut rs {
        r.shutdown = Some(shutdown.clone());
        r.notes.push(note.to_string());
    }
    rs
}

/// One tollgate process, four routes interleaved: one whose backend
/// answers first time, and three whose primary fails so that the shared
/// mock answers as the fallback (see [`targets::failover_gateway_config`]).
/// The failing mock's CPU is not counted: only the gateway's.
fn failover_set(
    rt: &Runtime,
    plan: &Plan,
    workdir: &Path,
    mock_addr: SocketAddr,
    mock_pid: u32,
) -> Vec<TargetReport> {
    let names = [
        TOLLGATE_FIRST_TIME,
        TOLLGATE_FAILOVER_REFUSED,
        TOLLGATE_FAILOVER_500,
        TOLLGATE_FAILOVER_EJECTED,
    ];
    let skipped = |why: String| {
        names
            .iter()
            .map(|name| TargetReport::skipped(name, why.clone()))
            .collect()
    };
    let failing = targets::start_mock_with(
        &plan.mock,
        workdir,
        "mock-500",
        &["--error-rate", "1", "--error-status", "500"],
    );
    let (mut failing, failing_addr) = match failing {
        Ok(started) => started,
        Err(e) => return skipped(format!("the failing mock: {e}")),
    };
    // Nobody listens on a port just released: connections are refused.
    let dead = match targets::free_port() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(e) => return skipped(e.to_string()),
    };
    let note = format!(
        "failover set: one process, phases interleaved; {TOLLGATE_FIRST_TIME} = a route whose backend answers, the others fail over to that backend after a primary on {dead} (refused) or a mock answering 500; only the gateway's CPU counts"
    );
    let rs = one_process_set(
        rt,
        plan,
        workdir,
        mock_pid,
        (
            "tollgate-failover",
            &targets::failover_gateway_config(mock_addr, failing_addr, dead),
        ),
        &[
            (TOLLGATE_FIRST_TIME, targets::FIRST_TIME_ALIAS),
            (TOLLGATE_FAILOVER_REFUSED, targets::FAILOVER_REFUSED_ALIAS),
            (TOLLGATE_FAILOVER_500, targets::FAILOVER_500_ALIAS),
            (TOLLGATE_FAILOVER_EJECTED, targets::FAILOVER_EJECTED_ALIAS),
        ],
        &note,
    );
    let _ = stop(&mut failing);
    rs
}

/// One tollgate process with budgets (in memory, or in `redis`), two
/// targets interleaved: a key no budget counts, and a key every budget does.
fn budget_pair(
    rt: &Runtime,
    plan: &Plan,
    workdir: &Path,
    mock_addr: SocketAddr,
    mock_pid: u32,
    redis: Option<(&Process, SocketAddr)>,
) -> Vec<TargetReport> {
    let (base, variant, process) = match redis {
        None => (
            TOLLGATE_UNBUDGETED,
            TOLLGATE_BUDGET_MEMORY,
            "tollgate-budget-memory",
        ),
        Some(_) => (
            TOLLGATE_UNBUDGETED_REDIS,
            TOLLGATE_BUDGET_REDIS,
            "tollgate-budget-redis",
        ),
    };
    let config = targets::budget_gateway_config(mock_addr, redis.map(|(_, a)| a));
    let (mut p, addr) =
        match targets::start_tollgate_with(&plan.tollgate_bin, process, &config, workdir) {
            Ok(started) => started,
            Err(e) => {
                let why = e.to_string();
                return vec![
                    TargetReport::skipped(base, why.clone()),
                    TargetReport::skipped(variant, why),
                ];
            }
        };
    let gateway = p.pid();
    let redis_pid = redis.map(|(r, _)| r.pid());
    // Redis's CPU counts: it is part of what a budget check costs.
    let pids = move || std::iter::once(gateway).chain(redis_pid).collect();
    let target = |name, key| Target {
        name,
        addr,
        model: targets::PASSTHROUGH_ALIAS,
        pids: &pids,
        mock_pid,
        key: Some(key),
    };
    let mut rs = run_targets(
        rt,
        plan,
        &[
            target(base, targets::KEY_UNBUDGETED),
            target(variant, targets::KEY_BUDGETED),
        ],
    );
    let shutdown = stop(&mut p);
    let store = if redis.is_some() {
        "Redis (its CPU counted with the gateway's)"
    } else {
        "memory"
    };
    for r in &mut rs {
        r.shutdown = Some(shutdown.clone());
        r.notes.push(format!(
            "keyed gateway with a TokenBudget (2 limits, 5 caps) in {store}; {base} = a key no budget counts, {variant} = a key it does; one process, phases interleaved"
        ));
    }
    rs
}

/// The MCP section: the same `tools/call` sent to the shared mock's `/mcp`
/// directly, through one open gateway's `/mcp/tools` and through its `/mcp`
/// (as `tools__add`); and `tools/list` merged by that gateway's `/mcp` over
/// its [`mcp::BACKENDS`] MCPServers (all on the one mock), next to one
/// `tools/list` sent to the mock directly. Every target is probed (answers
/// parsed in full) and warmed up; one that fails either is skipped, loudly.
/// Then the closed-loop phases run one target after the other, direct and
/// gateway interleaved, with CPU sampled around each.
fn run_mcp(
    rt: &Runtime,
    plan: &Plan,
    workdir: &Path,
    mock_addr: SocketAddr,
    mock_pid: u32,
) -> McpReport {
    eprintln!("== MCP section");
    let config = mcp::gateway_config(mock_addr);
    let gateway =
        targets::start_tollgate_with(&plan.tollgate_bin, "tollgate-mcp", &config, workdir);
    let (gateway_addr, gateway_pid, mut gateway_proc, gateway_error) = match gateway {
        Ok((p, addr)) => (Some(addr), Some(p.pid()), Some(p), None),
        Err(e) => {
            eprintln!("MCP: gateway did not start, its targets are SKIPPED: {e}");
            (
                None,
                None,
                None,
                Some(format!("gateway did not start: {e}")),
            )
        }
    };
    let direct_pids = move || vec![mock_pid];
    let gateway_pids = move || gateway_pid.into_iter().collect::<Vec<_>>();
    let aggregated = mcp::aggregated_tool();
    let sum = Expect::Sum(3.0);
    // (name, on the gateway?, path, template maker, expected answer, description)
    let specs: [(&'static str, bool, String, Expect, String); 5] = [
        (
            mcp::CALL_DIRECT,
            false,
            mcp::PATH.to_string(),
            sum,
            format!("tools/call {} -> mock {}", mcp::TOOL, mcp::PATH),
        ),
        (
            mcp::CALL_PASSTHROUGH,
            true,
            format!("{}/{}", mcp::PATH, mcp::SERVER),
            sum,
            format!(
                "tools/call {} -> gw {}/{} (pass-through)",
                mcp::TOOL,
                mcp::PATH,
                mcp::SERVER
            ),
        ),
        (
            mcp::CALL_AGGREGATED,
            true,
            mcp::PATH.to_string(),
            sum,
            format!("tools/call {aggregated} -> gw {} (aggregated)", mcp::PATH),
        ),
        (
            mcp::LIST_DIRECT,
            false,
            mcp::PATH.to_string(),
            Expect::Tools(mcp::MOCK_TOOLS),
            format!(
                "tools/list -> mock {} ({} tools)",
                mcp::PATH,
                mcp::MOCK_TOOLS
            ),
        ),
        (
            mcp::LIST_AGGREGATED,
            true,
            mcp::PATH.to_string(),
            Expect::Tools(mcp::MOCK_TOOLS * mcp::BACKENDS),
            format!(
                "tools/list -> gw {} ({} backends, {} tools)",
                mcp::PATH,
                mcp::BACKENDS,
                mcp::MOCK_TOOLS * mcp::BACKENDS
            ),
        ),
    ];

    /// A target still in the run has its load target and template.
    struct State<'a> {
        run: Option<(Target<'a>, Arc<RequestTemplate>)>,
        report: McpTarget,
    }
    let mut states: Vec<State> = specs
        .into_iter()
        .map(|(name, on_gateway, path, expect, request)| {
            let mut report = McpTarget::new(name, request);
            let addr = if on_gateway {
                gateway_addr
            } else {
                Some(mock_addr)
            };
            let Some(addr) = addr else {
                report.skipped = gateway_error.clone();
                return State { run: None, report };
            };
            let tmpl = match expect {
                Expect::Sum(_) if name == mcp::CALL_AGGREGATED => {
                    mcp::call_template(addr, &path, &aggregated)
                }
                Expect::Sum(_) => mcp::call_template(addr, &path, mcp::TOOL),
                Expect::Tools(_) => mcp::list_template(addr, &path),
            };
            let pids: &dyn Fn() -> Vec<u32> = if on_gateway {
                &gateway_pids
            } else {
                &direct_pids
            };
            let target = Target {
                name,
                addr,
                model: "",
                pids,
                mock_pid,
                key: None,
            };
            eprintln!("   {name}: probe ({})", report.request);
            if let Err(e) = rt.block_on(mcp::probe(&tmpl, expect, plan.timeout)) {
                eprintln!("MCP: {name} SKIPPED: {e}");
                report.skipped = Some(e);
                return State { run: None, report };
            }
            State {
                run: Some((target, Arc::new(tmpl))),
                report,
            }
        })
        .collect();

    let warm_cfg = warmup_config(plan, plan.concurrency);
    for s in &mut states {
        let Some((t, tmpl)) = &s.run else { continue };
        eprintln!("   {}: warm-up", t.name);
        let warm = measured(rt, t, None, load::closed_loop(tmpl.clone(), &warm_cfg));
        if !warm.usable() {
            let why = format!(
                "warm-up: {} errors of {} requests (first: {}); measured phase skipped",
                warm.outcome.errors,
                warm.outcome.planned,
                warm.outcome.first_error.as_deref().unwrap_or("-")
            );
            eprintln!("MCP: {} SKIPPED: {why}", t.name);
            s.report.skipped = Some(why);
            s.run = None;
        }
        s.report.warmup = Some(warm);
    }

    let cfg = closed_loop_config(plan);
    for s in &mut states {
        let Some((t, tmpl)) = &s.run else { continue };
        eprintln!("   {}: closed loop x{}", t.name, plan.concurrency);
        s.report.closed_loop = Some(measured(rt, t, None, load::closed_loop(tmpl.clone(), &cfg)));
    }

    let mut shutdown = None;
    if let Some(p) = &mut gateway_proc {
        if let Some(why) = p.exited() {
            eprintln!(
                "MCP: the gateway died during the run: {why}\n{}",
                p.stderr_tail()
            );
        }
        shutdown = Some(stop(p));
    }
    let setup = format!(
        "one open tollgate gateway (no API keys; requests carry no credential) with {} MCPServers ({}, {} … {}), each at its own path, all pointing at the one shared mock's {}; {} revision, stateless (no initialize)",
        mcp::BACKENDS,
        mcp::server_name(0),
        mcp::server_name(1),
        mcp::server_name(mcp::BACKENDS - 1),
        mcp::PATH,
        mcp::VERSION
    );
    McpReport::new(
        setup,
        plan.concurrency,
        plan.phase.as_secs_f64(),
        states.into_iter().map(|s| s.report).collect(),
        shutdown,
    )
}

/// The warm-up: a closed loop of `concurrency` workers for the plan's
/// warm-up time.
fn warmup_config(plan: &Plan, concurrency: usize) -> ClosedLoopConfig {
    ClosedLoopConfig {
        concurrency,
        duration: plan.warmup,
        max_requests: (plan.warmup.as_secs_f64() * 50_000.0) as u64 + 100,
        timeout: plan.timeout,
        measure: Measure::FullResponse,
    }
}

/// The measured closed loop: the plan's concurrency for one phase.
fn closed_loop_config(plan: &Plan) -> ClosedLoopConfig {
    ClosedLoopConfig {
        concurrency: plan.concurrency,
        duration: plan.phase,
        max_requests: (plan.phase.as_secs_f64() * 200_000.0) as u64,
        timeout: plan.timeout,
        measure: Measure::FullResponse,
    }
}

fn stop(p: &mut Process) -> String {
    p.stop(Duration::from_secs(5))
}

#[derive(Clone, Copy)]
struct CpuSample {
    target: Option<Duration>,
    backend: Option<Duration>,
    loadgen: Option<Duration>,
}

fn sample(t: &Target) -> CpuSample {
    CpuSample {
        target: procfs::cpu_time(&(t.pids)()).ok(),
        backend: procfs::cpu_time(&[t.mock_pid]).ok(),
        loadgen: procfs::cpu_time(&[std::process::id()]).ok(),
    }
}

fn per_request(before: CpuSample, after: CpuSample, requests: u64) -> CpuPerRequest {
    let f = |b: Option<Duration>, a: Option<Duration>| procfs::cpu_us_per_request(b?, a?, requests);
    CpuPerRequest {
        target_us: f(before.target, after.target),
        backend_us: f(before.backend, after.backend),
        loadgen_us: f(before.loadgen, after.loadgen),
    }
}

/// Runs one load phase with CPU sampled immediately around it.
fn measured(
    rt: &Runtime,
    t: &Target,
    rate: Option<f64>,
    phase: impl Future<Output = PhaseOutcome>,
) -> PhaseResult {
    let before = sample(t);
    let outcome = rt.block_on(phase);
    let after = sample(t);
    let cpu_per_request = per_request(before, after, outcome.sent);
    std::thread::sleep(SETTLE);
    PhaseResult {
        rate,
        outcome,
        cpu_per_request,
    }
}

fn memory(t: &Target) -> procfs::MemStatus {
    procfs::read_mem_sum(&(t.pids)()).unwrap_or_default()
}

fn template(t: &Target, stream: bool) -> RequestTemplate {
    let template = RequestTemplate::new(t.addr, CHAT_PATH, chat_body(t.model, stream));
    match t.key {
        Some(key) => template.with_bearer(key),
        None => template,
    }
}

fn run_target(rt: &Runtime, plan: &Plan, t: &Target) -> TargetReport {
    run_targets(rt, plan, std::slice::from_ref(t))
        .pop()
        .expect("one report per target")
}

/// Runs the phases of several targets interleaved: each phase (warm-up, every
/// open-loop rate, closed loop, streaming) runs for every target in turn
/// before the next phase starts. Targets that share a process are compared
/// under the same machine conditions this way, instead of one target's whole
/// run and then the other's while the machine's load drifts in between.
fn run_targets(rt: &Runtime, plan: &Plan, ts: &[Target]) -> Vec<TargetReport> {
    struct State {
        report: TargetReport,
        mem: MemoryReport,
        plain: Arc<RequestTemplate>,
        stream: Arc<RequestTemplate>,
        ok: bool,
    }
    let mut states: Vec<State> = ts
        .iter()
        .map(|t| {
            eprintln!("== {} at {} (model {})", t.name, t.addr, t.model);
            let mut report = TargetReport::skipped(t.name, String::new());
            report.skipped = None;
            State {
                report,
                mem: MemoryReport {
                    after_start: memory(t),
                    ..Default::default()
                },
                plain: Arc::new(template(t, false)),
                stream: Arc::new(template(t, true)),
                ok: true,
            }
        })
        .collect();

    // Warm-up with the open-loop connection count, so the target's own
    // upstream pool is filled before anything is measured.
    let warm_cfg = warmup_config(plan, plan.connections);
    for (t, s) in ts.iter().zip(&mut states) {
        eprintln!("   {}: warm-up", t.name);
        let warm = measured(rt, t, None, load::closed_loop(s.plain.clone(), &warm_cfg));
        s.ok = warm.outcome.ok > 0;
        if !s.ok {
            s.report.notes.push(format!(
                "warm-up had no successful request (first error: {}); measured phases skipped",
                warm.outcome.first_error.as_deref().unwrap_or("-")
            ));
        }
        s.report.warmup = Some(warm);
    }
    for (t, s) in ts.iter().zip(&mut states) {
        s.mem.after_warmup = memory(t);
    }

    for &rate in &plan.rates {
        let cfg = OpenLoopConfig {
            rate,
            duration: plan.phase,
            connections: plan.connections,
            timeout: plan.timeout,
            grace: plan.grace,
        };
        for (t, s) in ts.iter().zip(&mut states).filter(|(_, s)| s.ok) {
            eprintln!("   {}: open loop {rate} req/s", t.name);
            s.report.open_loop.push(measured(
                rt,
                t,
                Some(rate),
                load::open_loop(s.plain.clone(), &cfg),
            ));
        }
    }

    let cfg = closed_loop_config(plan);
    for (t, s) in ts.iter().zip(&mut states).filter(|(_, s)| s.ok) {
        eprintln!("   {}: closed loop x{}", t.name, plan.concurrency);
        s.report.closed_loop = Some(measured(
            rt,
            t,
            None,
            load::closed_loop(s.plain.clone(), &cfg),
        ));
    }

    let cfg = ClosedLoopConfig {
        concurrency: 1,
        duration: plan.stream_cap,
        max_requests: plan.stream_requests,
        timeout: plan.timeout,
        measure: Measure::FirstByte,
    };
    for (t, s) in ts.iter().zip(&mut states).filter(|(_, s)| s.ok) {
        eprintln!(
            "   {}: streaming first byte x{}",
            t.name, plan.stream_requests
        );
        s.report.streaming_ttfb = Some(measured(
            rt,
            t,
            None,
            load::closed_loop(s.stream.clone(), &cfg),
        ));
    }

    ts.iter()
        .zip(states)
        .map(|(t, mut s)| {
            s.mem.after_load = if s.ok { memory(t) } else { s.mem.after_warmup };
            s.report.memory = Some(s.mem);
            s.report
        })
        .collect()
}

fn meta(plan: &Plan) -> Meta {
    let nginx_version = std::process::Command::new(&plan.nginx_bin)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown version".into());
    Meta {
        quick: plan.quick,
        phase_duration_s: plan.phase.as_secs_f64(),
        warmup_s: plan.warmup.as_secs_f64(),
        open_loop_rates: plan.rates.clone(),
        open_loop_connections: plan.connections,
        closed_loop_concurrency: plan.concurrency,
        stream_requests: plan.stream_requests,
        request_timeout_ms: plan.timeout.as_millis() as u64,
        loadgen_threads: plan.loadgen_threads,
        cpus_online: std::thread::available_parallelism().map_or(0, |n| n.get()),
        clock_ticks_per_sec: procfs::clock_ticks_per_sec(),
        mock: match &plan.mock {
            MockSource::Binary(b) => format!(
                "one shared process: {} mock (ttft/token delay 0)",
                b.display()
            ),
            MockSource::Stub => {
                "one shared process: built-in stub (--stub-mock; NOT the real mock)".into()
            }
        },
        nginx: format!("{} ({nginx_version})", plan.nginx_bin.display()),
        tollgate: plan.tollgate_bin.display().to_string(),
        loadavg_start: String::new(),
        loadavg_end: String::new(),
    }
}
