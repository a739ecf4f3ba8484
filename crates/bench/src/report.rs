//! Result model (serialised to JSON as-is) and the human-readable report.

use crate::load::PhaseOutcome;
use crate::procfs::MemStatus;
use crate::stats::{
    self, AddedLatency, CPU_NOISE_FLOOR_US, LATENCY_NOISE_FLOOR_US, Verdict, added_latency,
};
use serde::Serialize;
use std::fmt::Write as _;

pub const DIRECT: &str = "mock-direct";
pub const NGINX: &str = "nginx";
pub const TOLLGATE: &str = "tollgate";
/// The same tollgate process on the route that translates an OpenAI Chat
/// Completions client to an Anthropic Messages provider.
pub const TOLLGATE_TRANSLATED: &str = "tollgate-translated";

/// Budget pairs: one keyed tollgate process per counter store, a key no
/// budget counts and a key every budget counts, phases interleaved.
pub const TOLLGATE_UNBUDGETED: &str = "tollgate-unbudgeted";
pub const TOLLGATE_BUDGET_MEMORY: &str = "tollgate-budget-memory";
pub const TOLLGATE_UNBUDGETED_REDIS: &str = "tollgate-unbudgeted-r";
pub const TOLLGATE_BUDGET_REDIS: &str = "tollgate-budget-redis";

/// The failover set: one process, a route that succeeds first time and
/// three that fail over from a broken primary.
pub const TOLLGATE_FIRST_TIME: &str = "tollgate-first-time";
pub const TOLLGATE_FAILOVER_REFUSED: &str = "tollgate-fo-refused";
pub const TOLLGATE_FAILOVER_500: &str = "tollgate-fo-500";
pub const TOLLGATE_FAILOVER_EJECTED: &str = "tollgate-fo-ejected";

/// The guard pair: one process, the same backend without and with a
/// typical guard policy.
pub const TOLLGATE_UNGUARDED: &str = "tollgate-unguarded";
pub const TOLLGATE_GUARDED: &str = "tollgate-guarded";

/// Label of the translation comparison, in the text and the JSON.
pub const TRANSLATION_LABEL: &str =
    "translation overhead (OpenAI client → Anthropic provider) vs passthrough";

/// Thresholds of the summary block.
pub const MAX_ADDED_P50_RATIO: f64 = 2.0;
pub const MAX_CPU_RATIO: f64 = 2.0;
pub const MAX_STREAM_OVERHEAD_MS: f64 = 0.5;
pub const MAX_IDLE_RSS_MB: f64 = 30.0;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuPerRequest {
    /// Target process(es): utime+stime delta / requests sent.
    pub target_us: Option<f64>,
    /// The mock behind the proxy (same as target for mock-direct).
    pub backend_us: Option<f64>,
    /// This load generator, for judging whether it was a bottleneck.
    pub loadgen_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// Open loop: the scheduled rate.
    pub rate: Option<f64>,
    #[serde(flatten)]
    pub outcome: PhaseOutcome,
    pub cpu_per_request: CpuPerRequest,
}

impl PhaseResult {
    /// Enough successful requests for its numbers to mean something: at
    /// least one success and at most 1% errors.
    pub fn usable(&self) -> bool {
        let o = &self.outcome;
        o.ok > 0 && o.errors * 100 <= o.planned.max(1)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MemoryReport {
    /// Right after start (before any request).
    pub after_start: MemStatus,
    /// Idle, right after warm-up.
    pub after_warmup: MemStatus,
    /// After all load phases; `vm_hwm_kib` is the peak.
    pub after_load: MemStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub name: String,
    /// `None` if the target ran; otherwise why it was skipped.
    pub skipped: Option<String>,
    pub notes: Vec<String>,
    pub warmup: Option<PhaseResult>,
    pub open_loop: Vec<PhaseResult>,
    pub closed_loop: Option<PhaseResult>,
    pub streaming_ttfb: Option<PhaseResult>,
    pub memory: Option<MemoryReport>,
    pub shutdown: Option<String>,
}

impl TargetReport {
    pub fn skipped(name: &str, why: String) -> Self {
        TargetReport {
            name: name.into(),
            skipped: Some(why),
            notes: Vec::new(),
            warmup: None,
            open_loop: Vec::new(),
            closed_loop: None,
            streaming_ttfb: None,
            memory: None,
            shutdown: None,
        }
    }

    fn open_at(&self, rate: f64) -> Option<&PhaseResult> {
        self.open_loop.iter().find(|p| p.rate == Some(rate))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AddedAtRate {
    pub rate: f64,
    pub added: AddedLatency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub rate: f64,
    pub added_p50: Option<f64>,
    pub added_p99: Option<f64>,
    pub cpu_per_request: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub target: String,
    /// Target minus mock-direct, per open-loop rate.
    pub added_latency: Vec<AddedAtRate>,
    /// Streaming first-byte p50/p99 minus mock-direct's, µs.
    pub stream_ttfb_overhead_p50_us: Option<f64>,
    pub stream_ttfb_overhead_p99_us: Option<f64>,
}

/// Translated vs passthrough at one open-loop rate.
#[derive(Debug, Clone, Serialize)]
pub struct TranslationAtRate {
    pub rate: f64,
    /// Translated minus mock-direct (p50/p99), µs.
    pub added_vs_direct: Option<AddedLatency>,
    /// Passthrough minus mock-direct, µs (for reading the two side by side).
    pub passthrough_added_vs_direct: Option<AddedLatency>,
    /// Translated minus passthrough (p50/p99), µs: the cost of translating.
    pub added_vs_passthrough: Option<AddedLatency>,
    pub cpu_us_passthrough: Option<f64>,
    pub cpu_us_translated: Option<f64>,
    /// CPU/request translated ÷ passthrough (passthrough clamped to the CPU
    /// noise floor).
    pub cpu_ratio: Option<f64>,
}

/// Streaming time to first byte of one target, µs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TtfbSummary {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// OpenAI client → Anthropic provider (translated request, response and
/// stream) against the OpenAI passthrough, both on one tollgate process and
/// one mock, driven by the same OpenAI client.
#[derive(Debug, Clone, Serialize)]
pub struct TranslationOverhead {
    pub label: String,
    pub passthrough: String,
    pub translated: String,
    pub open_loop: Vec<TranslationAtRate>,
    /// Closed-loop throughput (req/s) and CPU/request of both, and the ratio.
    pub closed_loop_rps_passthrough: Option<f64>,
    pub closed_loop_rps_translated: Option<f64>,
    pub closed_loop_cpu_us_passthrough: Option<f64>,
    pub closed_loop_cpu_us_translated: Option<f64>,
    pub closed_loop_cpu_ratio: Option<f64>,
    /// Streaming time to first body byte of each.
    pub stream_ttfb_passthrough: Option<TtfbSummary>,
    pub stream_ttfb_translated: Option<TtfbSummary>,
    /// Translated minus passthrough first byte (p50/p99), µs.
    pub stream_ttfb_added_vs_passthrough: Option<AddedLatency>,
    /// Translated minus mock-direct first byte (p50/p99), µs.
    pub stream_ttfb_added_vs_direct: Option<AddedLatency>,
}

/// A feature's cost: the same requests on one process with and without it.
#[derive(Debug, Clone, Serialize)]
pub struct PairOverhead {
    pub label: String,
    pub base: String,
    pub variant: String,
    pub open_loop: Vec<PairAtRate>,
    pub closed_loop_cpu_us_base: Option<f64>,
    pub closed_loop_cpu_us_variant: Option<f64>,
    /// Variant minus base, streaming first byte (p50/p99), µs.
    pub stream_ttfb_added: Option<AddedLatency>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairAtRate {
    pub rate: f64,
    /// Variant minus base latency (p50/p99), µs.
    pub added: Option<AddedLatency>,
    pub cpu_us_base: Option<f64>,
    pub cpu_us_variant: Option<f64>,
}

/// One MCP target: a request, where it goes, and its phases.
#[derive(Debug, Clone, Serialize)]
pub struct McpTarget {
    pub name: String,
    /// What is sent where, e.g. `tools/call add -> mock /mcp`.
    pub request: String,
    /// `None` if it ran; otherwise why not (probe, warm-up, gateway).
    pub skipped: Option<String>,
    pub warmup: Option<PhaseResult>,
    pub closed_loop: Option<PhaseResult>,
}

impl McpTarget {
    pub fn new(name: &str, request: String) -> Self {
        McpTarget {
            name: name.into(),
            request,
            skipped: None,
            warmup: None,
            closed_loop: None,
        }
    }

    fn figures(&self) -> Option<McpFigures> {
        let p = usable(self.closed_loop.as_ref())?;
        let c = p.cpu_per_request;
        Some(McpFigures {
            target: self.name.clone(),
            rps: p.outcome.achieved_rps,
            p50_us: p.outcome.latency.p50_us,
            p99_us: p.outcome.latency.p99_us,
            cpu_us: c.target_us,
            mock_cpu_us: c.backend_us,
            loadgen_cpu_us: c.loadgen_us,
        })
    }
}

/// One MCP target's closed-loop figures.
#[derive(Debug, Clone, Serialize)]
pub struct McpFigures {
    pub target: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU µs per request of the process the client talks to: the gateway,
    /// or for a direct target the mock.
    pub cpu_us: Option<f64>,
    /// The mock's CPU µs per request (for an aggregated list, all the
    /// backend lists one request fans out to).
    pub mock_cpu_us: Option<f64>,
    pub loadgen_cpu_us: Option<f64>,
}

/// The same MCP request directly and through the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct McpComparison {
    pub label: String,
    pub direct: Option<McpFigures>,
    pub via: Vec<McpVia>,
}

#[derive(Debug, Clone, Serialize)]
pub struct McpVia {
    pub figures: McpFigures,
    /// This target minus direct (p50/p99), µs.
    pub added: Option<AddedLatency>,
}

/// The MCP section: tools/call overhead and the aggregated tools/list.
#[derive(Debug, Clone, Serialize)]
pub struct McpReport {
    pub label: String,
    /// The gateway and backends behind the gateway targets.
    pub setup: String,
    pub closed_loop_concurrency: usize,
    pub phase_duration_s: f64,
    pub targets: Vec<McpTarget>,
    /// `tools/call add`: direct, via `/mcp/tools`, via `/mcp`.
    pub tools_call: McpComparison,
    /// `tools/list`: one backend directly, `/mcp` merged over all.
    pub tools_list: McpComparison,
    /// How the gateway process ended.
    pub gateway_shutdown: Option<String>,
}

pub const MCP_LABEL: &str = "MCP: tools/call overhead and aggregated tools/list";

impl McpReport {
    pub fn new(
        setup: String,
        closed_loop_concurrency: usize,
        phase_duration_s: f64,
        targets: Vec<McpTarget>,
        gateway_shutdown: Option<String>,
    ) -> Self {
        use crate::mcp::{
            CALL_AGGREGATED, CALL_DIRECT, CALL_PASSTHROUGH, LIST_AGGREGATED, LIST_DIRECT,
        };
        let figures = |n: &str| targets.iter().find(|t| t.name == n)?.figures();
        let comparison = |label: &str, direct: &str, via: &[&str]| {
            let d = figures(direct);
            McpComparison {
                label: label.into(),
                via: via
                    .iter()
                    .filter_map(|n| figures(n))
                    .map(|f| McpVia {
                        added: d.as_ref().map(|d| AddedLatency {
                            p50_us: f.p50_us - d.p50_us,
                            p99_us: f.p99_us - d.p99_us,
                        }),
                        figures: f,
                    })
                    .collect(),
                direct: d,
            }
        };
        McpReport {
            label: MCP_LABEL.into(),
            tools_call: comparison(
                "tools/call add: direct vs pass-through /mcp/{path} vs aggregated /mcp",
                CALL_DIRECT,
                &[CALL_PASSTHROUGH, CALL_AGGREGATED],
            ),
            tools_list: comparison(
                "tools/list: one backend directly vs /mcp merged over every backend",
                LIST_DIRECT,
                &[LIST_AGGREGATED],
            ),
            setup,
            closed_loop_concurrency,
            phase_duration_s,
            targets,
            gateway_shutdown,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub quick: bool,
    pub phase_duration_s: f64,
    pub warmup_s: f64,
    pub open_loop_rates: Vec<f64>,
    pub open_loop_connections: usize,
    pub closed_loop_concurrency: usize,
    pub stream_requests: u64,
    pub request_timeout_ms: u64,
    pub loadgen_threads: usize,
    pub cpus_online: usize,
    pub clock_ticks_per_sec: u64,
    pub mock: String,
    pub nginx: String,
    pub tollgate: String,
    /// /proc/loadavg before and after: other work on the machine skews tails.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

/// Open-loop generator lateness (p99) above which a row's tail percentiles
/// are flagged: 1 ms is normal timer granularity, far more means the
/// generator itself was starved of CPU and the tail includes that stall.
pub const LAG_WARN_US: f64 = 5_000.0;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub meta: Meta,
    pub targets: Vec<TargetReport>,
    pub comparisons: Vec<Comparison>,
    /// tollgate ÷ nginx, per open-loop rate.
    pub tollgate_vs_nginx: Vec<Ratios>,
    /// Translated (OpenAI client → Anthropic provider) vs passthrough;
    /// `None` unless both tollgate targets ran.
    pub translation_overhead: Option<TranslationOverhead>,
    /// TokenBudget admission + settle, in memory and in Redis.
    pub budget_overhead: Vec<PairOverhead>,
    /// A failover against a request that succeeds first time.
    pub failover_overhead: Vec<PairOverhead>,
    /// A typical guard policy against none.
    pub guard_overhead: Vec<PairOverhead>,
    pub summary: Vec<Check>,
    /// The MCP section; `None` when not run (`--sections http`).
    pub mcp: Option<McpReport>,
}

impl BenchReport {
    pub fn new(meta: Meta, targets: Vec<TargetReport>) -> Self {
        let find = |n: &str| targets.iter().find(|t| t.name == n && t.skipped.is_none());
        let direct = find(DIRECT);
        let mut comparisons = Vec::new();
        for name in [NGINX, TOLLGATE, TOLLGATE_TRANSLATED] {
            if let (Some(d), Some(t)) = (direct, find(name)) {
                comparisons.push(compare(d, t, &meta.open_loop_rates));
            }
        }
        let tollgate_vs_nginx = match (find(NGINX), find(TOLLGATE)) {
            (Some(n), Some(t)) => meta
                .open_loop_rates
                .iter()
                .map(|&rate| ratios(rate, &comparisons, n, t))
                .collect(),
            _ => Vec::new(),
        };
        let translation_overhead = match (find(TOLLGATE), find(TOLLGATE_TRANSLATED)) {
            (Some(p), Some(t)) => Some(translation(direct, p, t, &meta.open_loop_rates)),
            _ => None,
        };
        let budget_overhead = [
            (
                "TokenBudget admission + settle, counters in memory",
                TOLLGATE_UNBUDGETED,
                TOLLGATE_BUDGET_MEMORY,
            ),
            (
                "TokenBudget admission + settle, counters in Redis",
                TOLLGATE_UNBUDGETED_REDIS,
                TOLLGATE_BUDGET_REDIS,
            ),
        ]
        .into_iter()
        .filter_map(|(label, base, variant)| {
            Some(pair(
                label,
                find(base)?,
                find(variant)?,
                &meta.open_loop_rates,
            ))
        })
        .collect();
        let failover_overhead = [
            (
                "failover, primary refusing connections (its breaker off: every request tries it)",
                TOLLGATE_FAILOVER_REFUSED,
            ),
            (
                "failover, primary answering 500 (its breaker off: every request tries it)",
                TOLLGATE_FAILOVER_500,
            ),
            (
                "failover, primary refusing connections with its breaker on (the default: ejected, skipped)",
                TOLLGATE_FAILOVER_EJECTED,
            ),
        ]
        .into_iter()
        .filter_map(|(label, variant)| {
            Some(pair(
                label,
                find(TOLLGATE_FIRST_TIME)?,
                find(variant)?,
                &meta.open_loop_rates,
            ))
        })
        .collect();
        let guard_overhead = match (find(TOLLGATE_UNGUARDED), find(TOLLGATE_GUARDED)) {
            (Some(base), Some(variant)) => vec![pair(
                "guard policy (input: every recognizer redacting, a deny list, injection flagged; output: cards, SSNs, secrets redacted, the deny list blocking) vs none",
                base,
                variant,
                &meta.open_loop_rates,
            )],
            _ => Vec::new(),
        };
        let summary = summary_checks(&meta, &targets, &comparisons);
        BenchReport {
            meta,
            targets,
            comparisons,
            tollgate_vs_nginx,
            translation_overhead,
            budget_overhead,
            failover_overhead,
            guard_overhead,
            summary,
            mcp: None,
        }
    }
}

fn compare(direct: &TargetReport, t: &TargetReport, rates: &[f64]) -> Comparison {
    let added: Vec<AddedAtRate> = rates
        .iter()
        .filter_map(|&rate| {
            let (d, x) = (direct.open_at(rate)?, t.open_at(rate)?);
            (d.usable() && x.usable()).then(|| AddedAtRate {
                rate,
                added: added_latency(&x.outcome.latency, &d.outcome.latency),
            })
        })
        .collect();
    let stream = match (&direct.streaming_ttfb, &t.streaming_ttfb) {
        (Some(d), Some(x)) if d.usable() && x.usable() => {
            Some(added_latency(&x.outcome.latency, &d.outcome.latency))
        }
        _ => None,
    };
    Comparison {
        target: t.name.clone(),
        added_latency: added,
        stream_ttfb_overhead_p50_us: stream.map(|s| s.p50_us),
        stream_ttfb_overhead_p99_us: stream.map(|s| s.p99_us),
    }
}

fn usable(p: Option<&PhaseResult>) -> Option<&PhaseResult> {
    p.filter(|p| p.usable())
}

fn translation(
    direct: Option<&TargetReport>,
    pass: &TargetReport,
    tr: &TargetReport,
    rates: &[f64],
) -> TranslationOverhead {
    let added = |x: Option<&PhaseResult>, base: Option<&PhaseResult>| {
        Some(added_latency(
            &usable(x)?.outcome.latency,
            &usable(base)?.outcome.latency,
        ))
    };
    let cpu = |p: Option<&PhaseResult>| usable(p)?.cpu_per_request.target_us;
    let cpu_ratio = |t: Option<f64>, p: Option<f64>| stats::ratio(t?, p?, CPU_NOISE_FLOOR_US);
    let open_loop = rates
        .iter()
        .map(|&rate| {
            let d = direct.and_then(|d| d.open_at(rate));
            let (p, t) = (pass.open_at(rate), tr.open_at(rate));
            let (cp, ct) = (cpu(p), cpu(t));
            TranslationAtRate {
                rate,
                added_vs_direct: added(t, d),
                passthrough_added_vs_direct: added(p, d),
                added_vs_passthrough: added(t, p),
                cpu_us_passthrough: cp,
                cpu_us_translated: ct,
                cpu_ratio: cpu_ratio(ct, cp),
            }
        })
        .collect();
    let rps = |p: Option<&PhaseResult>| usable(p).map(|p| p.outcome.achieved_rps);
    let (cp, ct) = (cpu(pass.closed_loop.as_ref()), cpu(tr.closed_loop.as_ref()));
    let ttfb = |p: Option<&PhaseResult>| {
        usable(p).map(|p| TtfbSummary {
            p50_us: p.outcome.latency.p50_us,
            p99_us: p.outcome.latency.p99_us,
        })
    };
    let (sp, st) = (pass.streaming_ttfb.as_ref(), tr.streaming_ttfb.as_ref());
    TranslationOverhead {
        label: TRANSLATION_LABEL.into(),
        passthrough: pass.name.clone(),
        translated: tr.name.clone(),
        open_loop,
        closed_loop_rps_passthrough: rps(pass.closed_loop.as_ref()),
        closed_loop_rps_translated: rps(tr.closed_loop.as_ref()),
        closed_loop_cpu_us_passthrough: cp,
        closed_loop_cpu_us_translated: ct,
        closed_loop_cpu_ratio: cpu_ratio(ct, cp),
        stream_ttfb_passthrough: ttfb(sp),
        stream_ttfb_translated: ttfb(st),
        stream_ttfb_added_vs_passthrough: added(st, sp),
        stream_ttfb_added_vs_direct: added(st, direct.and_then(|d| d.streaming_ttfb.as_ref())),
    }
}

fn pair(label: &str, base: &TargetReport, variant: &TargetReport, rates: &[f64]) -> PairOverhead {
    let added = |x: Option<&PhaseResult>, b: Option<&PhaseResult>| {
        Some(added_latency(
            &usable(x)?.outcome.latency,
            &usable(b)?.outcome.latency,
        ))
    };
    let cpu = |p: Option<&PhaseResult>| usable(p)?.cpu_per_request.target_us;
    PairOverhead {
        label: label.into(),
        base: base.name.clone(),
        variant: variant.name.clone(),
        open_loop: rates
            .iter()
            .map(|&rate| PairAtRate {
                rate,
                added: added(variant.open_at(rate), base.open_at(rate)),
                cpu_us_base: cpu(base.open_at(rate)),
                cpu_us_variant: cpu(variant.open_at(rate)),
            })
            .collect(),
        closed_loop_cpu_us_base: cpu(base.closed_loop.as_ref()),
        closed_loop_cpu_us_variant: cpu(variant.closed_loop.as_ref()),
        stream_ttfb_added: added(
            variant.streaming_ttfb.as_ref(),
            base.streaming_ttfb.as_ref(),
        ),
    }
}

fn added_for<'a>(
    comparisons: &'a [Comparison],
    target: &str,
    rate: f64,
) -> Option<&'a AddedLatency> {
    comparisons
        .iter()
        .find(|c| c.target == target)?
        .added_latency
        .iter()
        .find(|a| a.rate == rate)
        .map(|a| &a.added)
}

fn cpu_at(t: &TargetReport, rate: f64) -> Option<f64> {
    t.open_at(rate)
        .filter(|p| p.usable())?
        .cpu_per_request
        .target_us
}

fn ratios(
    rate: f64,
    comparisons: &[Comparison],
    nginx: &TargetReport,
    tg: &TargetReport,
) -> Ratios {
    let n = added_for(comparisons, NGINX, rate);
    let t = added_for(comparisons, TOLLGATE, rate);
    let lat = |f: fn(&AddedLatency) -> f64| stats::ratio(f(t?), f(n?), LATENCY_NOISE_FLOOR_US);
    Ratios {
        rate,
        added_p50: lat(|a| a.p50_us),
        added_p99: lat(|a| a.p99_us),
        cpu_per_request: cpu_at(tg, rate)
            .zip(cpu_at(nginx, rate))
            .and_then(|(t, n)| stats::ratio(t, n, CPU_NOISE_FLOOR_US)),
    }
}

fn summary_checks(meta: &Meta, targets: &[TargetReport], comparisons: &[Comparison]) -> Vec<Check> {
    let find = |n: &str| targets.iter().find(|t| t.name == n);
    let check = |name: String, verdict: Verdict| Check { name, verdict };
    let mut out = Vec::new();
    let tg = find(TOLLGATE);
    let tg_ran = tg.filter(|t| t.skipped.is_none());
    let skip_reason = match tg {
        Some(t) => t.skipped.clone().unwrap_or_default(),
        None => "not run".into(),
    };
    let nginx_ran = find(NGINX).filter(|t| t.skipped.is_none());
    // Headline rate: the highest open-loop rate (most load, least noise).
    let rate = meta
        .open_loop_rates
        .iter()
        .copied()
        .fold(f64::NAN, f64::max);

    let latency_name =
        |r: f64| format!("added p50 latency <= {MAX_ADDED_P50_RATIO}x nginx @ {r} req/s");
    let cpu_name = format!("CPU/request <= {MAX_CPU_RATIO}x nginx @ {rate} req/s");
    let stream_name = format!("streaming first-byte overhead (p50) < {MAX_STREAM_OVERHEAD_MS} ms");
    let rss_name = format!("idle RSS (after warm-up) < {MAX_IDLE_RSS_MB} MB");

    let Some(tg) = tg_ran else {
        let names = meta.open_loop_rates.iter().map(|&r| latency_name(r));
        for name in names.chain([cpu_name, stream_name, rss_name]) {
            out.push(check(
                name,
                Verdict::Skipped(format!("tollgate skipped: {skip_reason}")),
            ));
        }
        return out;
    };

    // A target that mostly failed must not "pass" on an empty histogram.
    let tg_phase_failure = |p: Option<&PhaseResult>| -> Option<Verdict> {
        match p {
            None => Some(Verdict::Fail("phase did not run".into())),
            Some(p) if !p.usable() => Some(Verdict::Fail(format!(
                "{} errors of {} requests (first: {})",
                p.outcome.errors,
                p.outcome.planned,
                p.outcome.first_error.as_deref().unwrap_or("-")
            ))),
            _ => None,
        }
    };

    for r in &meta.open_loop_rates {
        let name = latency_name(*r);
        let v = tg_phase_failure(tg.open_at(*r)).unwrap_or_else(|| {
            match (
                added_for(comparisons, TOLLGATE, *r),
                added_for(comparisons, NGINX, *r),
            ) {
                (Some(t), Some(n)) => stats::check_ratio(
                    t.p50_us,
                    n.p50_us,
                    MAX_ADDED_P50_RATIO,
                    LATENCY_NOISE_FLOOR_US,
                    "us",
                ),
                _ => Verdict::Skipped("no nginx or mock-direct baseline".into()),
            }
        });
        out.push(check(name, v));
    }

    let name = cpu_name;
    let v = tg_phase_failure(tg.open_at(rate)).unwrap_or_else(|| {
        match (cpu_at(tg, rate), nginx_ran.and_then(|n| cpu_at(n, rate))) {
            (Some(t), Some(n)) => stats::check_ratio(t, n, MAX_CPU_RATIO, CPU_NOISE_FLOOR_US, "us"),
            _ => Verdict::Skipped("no nginx baseline".into()),
        }
    });
    out.push(check(name, v));

    let name = stream_name;
    let v = tg_phase_failure(tg.streaming_ttfb.as_ref()).unwrap_or_else(|| {
        match comparisons
            .iter()
            .find(|c| c.target == TOLLGATE)
            .and_then(|c| c.stream_ttfb_overhead_p50_us)
        {
            Some(us) => stats::check_below(us / 1e3, MAX_STREAM_OVERHEAD_MS, "ms"),
            None => Verdict::Skipped("no mock-direct streaming baseline".into()),
        }
    });
    out.push(check(name, v));

    let name = rss_name;
    let v = match tg.memory {
        Some(m) => stats::check_below(
            m.after_warmup.vm_rss_kib as f64 / 1024.0,
            MAX_IDLE_RSS_MB,
            "MB",
        ),
        None => Verdict::Skipped("no memory sample".into()),
    };
    out.push(check(name, v));
    out
}

// ---------------------------------------------------------------- printing

fn us(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.1}ms", v / 1e3)
    } else {
        format!("{v:.0}us")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn mb(kib: u64) -> String {
    format!("{:.1}MB", kib as f64 / 1024.0)
}

fn errors(o: &PhaseOutcome) -> String {
    if o.errors == 0 {
        "0".into()
    } else {
        let kinds: Vec<String> = o
            .error_kinds
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!("{} ({})", o.errors, kinds.join(","))
    }
}

fn row(out: &mut String, cells: &[String], widths: &[usize]) {
    for (c, w) in cells.iter().zip(widths) {
        let _ = write!(out, "{c:<w$} ");
    }
    let _ = writeln!(out);
}

impl BenchReport {
    pub fn render(&self) -> String {
        let m = &self.meta;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "tollgate-bench{} — all traffic on 127.0.0.1",
            if m.quick { " (quick)" } else { "" }
        );
        let _ = writeln!(
            o,
            "cpus={} loadgen_threads={} phase={}s warmup={}s timeout={}ms; mock: {}; nginx: {} (worker_processes 1, upstream keepalive 64, proxy_buffering off); tollgate: {}",
            m.cpus_online,
            m.loadgen_threads,
            m.phase_duration_s,
            m.warmup_s,
            m.request_timeout_ms,
            m.mock,
            m.nginx,
            m.tollgate
        );
        let _ = writeln!(
            o,
            "loadavg at start: {}; at end: {}",
            m.loadavg_start, m.loadavg_end
        );
        for t in &self.targets {
            if let Some(why) = &t.skipped {
                let _ = writeln!(o, "NOTE: target {} SKIPPED: {}", t.name, why);
            }
            for n in &t.notes {
                let _ = writeln!(o, "NOTE: {}: {}", t.name, n);
            }
        }
        // Only the MCP section ran (`--sections mcp`): no empty tables.
        if !self.targets.is_empty() {
            self.render_http(&mut o);
        }

        if let Some(m) = &self.mcp {
            render_mcp(&mut o, m);
        }

        if self.targets.is_empty() {
            // Only the MCP section ran; the checks below judge the chat targets.
            return o;
        }
        let _ = writeln!(o, "\n== Summary: tollgate targets ==");
        for c in &self.summary {
            let _ = writeln!(
                o,
                "[{}] {}: {}",
                c.verdict.label(),
                c.name,
                c.verdict.detail()
            );
        }
        o
    }
}

impl BenchReport {
    /// The chat-completion sections, from the open-loop tables to the
    /// budget pairs.
    fn render_http(&self, o: &mut String) {
        let m = &self.meta;
        let ran: Vec<&TargetReport> = self
            .targets
            .iter()
            .filter(|t| t.skipped.is_none())
            .collect();

        for &rate in &m.open_loop_rates {
            let _ = writeln!(
                o,
                "\n== Open loop {rate} req/s, {}s, {} keep-alive conns (latency from intended send time) ==",
                m.phase_duration_s, m.open_loop_connections
            );
            let w = [12, 9, 8, 8, 8, 8, 8, 9, 9, 10, 9, 12];
            row(
                o,
                &[
                    "target", "achieved", "ok", "p50", "p90", "p99", "p99.9", "max", "cpu/req",
                    "mock cpu", "lag p99", "errors",
                ]
                .map(String::from),
                &w,
            );
            for t in &ran {
                if let Some(p) = t.open_at(rate) {
                    let l = &p.outcome.latency;
                    row(
                        o,
                        &[
                            t.name.clone(),
                            format!("{:.0}/s", p.outcome.achieved_rps),
                            p.outcome.ok.to_string(),
                            us(l.p50_us),
                            us(l.p90_us),
                            us(l.p99_us),
                            us(l.p999_us),
                            us(l.max_us),
                            opt(p.cpu_per_request.target_us, |v| format!("{v:.1}us")),
                            opt(p.cpu_per_request.backend_us, |v| format!("{v:.1}us")),
                            opt(p.outcome.send_lag.map(|s| s.p99_us), us),
                            errors(&p.outcome),
                        ],
                        &w,
                    );
                }
            }
            for t in &ran {
                let lag = t
                    .open_at(rate)
                    .and_then(|p| p.outcome.send_lag)
                    .map(|l| l.p99_us);
                if let Some(lag) = lag.filter(|&l| l > LAG_WARN_US) {
                    let _ = writeln!(
                        o,
                        "WARNING: {}: generator ran {} behind schedule at p99; tail percentiles include load-generator/machine stalls (rerun on an idle machine)",
                        t.name,
                        us(lag)
                    );
                }
            }
        }

        let _ = writeln!(
            o,
            "\n== Added latency vs mock-direct (difference of percentiles, same rate) =="
        );
        let w = [12, 10, 11, 11];
        row(
            o,
            &["target", "rate", "added p50", "added p99"].map(String::from),
            &w,
        );
        for c in &self.comparisons {
            for a in &c.added_latency {
                row(
                    o,
                    &[
                        c.target.clone(),
                        format!("{}/s", a.rate),
                        us(a.added.p50_us),
                        us(a.added.p99_us),
                    ],
                    &w,
                );
            }
        }

        let _ = writeln!(
            o,
            "\n== Closed loop, {} workers, {}s (max throughput) ==",
            m.closed_loop_concurrency, m.phase_duration_s
        );
        let w = [12, 10, 8, 8, 9, 9, 10, 12];
        row(
            o,
            &[
                "target", "req/s", "p50", "p99", "max", "cpu/req", "gen cpu", "errors",
            ]
            .map(String::from),
            &w,
        );
        for t in &ran {
            if let Some(p) = &t.closed_loop {
                let l = &p.outcome.latency;
                row(
                    o,
                    &[
                        t.name.clone(),
                        format!("{:.0}", p.outcome.achieved_rps),
                        us(l.p50_us),
                        us(l.p99_us),
                        us(l.max_us),
                        opt(p.cpu_per_request.target_us, |v| format!("{v:.1}us")),
                        opt(p.cpu_per_request.loadgen_us, |v| format!("{v:.1}us")),
                        errors(&p.outcome),
                    ],
                    &w,
                );
            }
        }

        let _ = writeln!(
            o,
            "\n== Streaming time to first body byte ({} sequential stream:true requests, mock TTFT 0) ==",
            m.stream_requests
        );
        let w = [12, 7, 8, 8, 8, 14, 14, 12];
        row(
            o,
            &[
                "target",
                "ok",
                "p50",
                "p99",
                "max",
                "overhead p50",
                "overhead p99",
                "errors",
            ]
            .map(String::from),
            &w,
        );
        for t in &ran {
            if let Some(p) = &t.streaming_ttfb {
                let l = &p.outcome.latency;
                let c = self.comparisons.iter().find(|c| c.target == t.name);
                row(
                    o,
                    &[
                        t.name.clone(),
                        p.outcome.ok.to_string(),
                        us(l.p50_us),
                        us(l.p99_us),
                        us(l.max_us),
                        opt(c.and_then(|c| c.stream_ttfb_overhead_p50_us), us),
                        opt(c.and_then(|c| c.stream_ttfb_overhead_p99_us), us),
                        errors(&p.outcome),
                    ],
                    &w,
                );
            }
        }

        let _ = writeln!(o, "\n== Memory (nginx: master + worker summed) ==");
        let w = [12, 13, 14, 13, 13];
        row(
            o,
            &[
                "target",
                "RSS @start",
                "RSS @warm",
                "RSS @end",
                "peak (HWM)",
            ]
            .map(String::from),
            &w,
        );
        for t in &ran {
            if let Some(mem) = &t.memory {
                row(
                    o,
                    &[
                        t.name.clone(),
                        mb(mem.after_start.vm_rss_kib),
                        mb(mem.after_warmup.vm_rss_kib),
                        mb(mem.after_load.vm_rss_kib),
                        mb(mem.after_load.vm_hwm_kib),
                    ],
                    &w,
                );
            }
        }

        if !self.tollgate_vs_nginx.is_empty() {
            let _ = writeln!(
                o,
                "\n== Ratio tollgate / nginx (baseline clamped to >= {LATENCY_NOISE_FLOOR_US}us latency, >= {CPU_NOISE_FLOOR_US}us CPU) =="
            );
            let w = [10, 11, 11, 9];
            row(
                o,
                &["rate", "added p50", "added p99", "cpu/req"].map(String::from),
                &w,
            );
            for r in &self.tollgate_vs_nginx {
                let x = |v: Option<f64>| opt(v, |v| format!("{v:.2}x"));
                row(
                    o,
                    &[
                        format!("{}/s", r.rate),
                        x(r.added_p50),
                        x(r.added_p99),
                        x(r.cpu_per_request),
                    ],
                    &w,
                );
            }
        }

        if let Some(t) = &self.translation_overhead {
            render_translation(o, t);
        }
        for p in self
            .budget_overhead
            .iter()
            .chain(&self.failover_overhead)
            .chain(&self.guard_overhead)
        {
            render_pair(o, p);
        }
    }
}

fn render_mcp(o: &mut String, m: &McpReport) {
    let _ = writeln!(
        o,
        "\n== {}, closed loop x{}, {}s per target ==",
        m.label, m.closed_loop_concurrency, m.phase_duration_s
    );
    let _ = writeln!(
        o,
        "(the same JSON-RPC request sent straight to the mock's /mcp and through the gateway, phases interleaved; {}. \
         added = gateway minus direct, difference of percentiles; gw cpu = the gateway's CPU per request; \
         an aggregated tools/list costs the mock {} backend lists)",
        m.setup,
        crate::mcp::BACKENDS
    );
    for t in &m.targets {
        if let Some(why) = &t.skipped {
            let _ = writeln!(o, "NOTE: MCP target {} SKIPPED: {}", t.name, why);
        }
    }
    let w = [21, 46, 7, 8, 8, 18, 9, 10, 9, 10];
    row(
        o,
        &[
            "target",
            "request",
            "req/s",
            "p50",
            "p99",
            "added p50 / p99",
            "gw cpu",
            "mock cpu",
            "gen cpu",
            "errors",
        ]
        .map(String::from),
        &w,
    );
    let cpu = |v: Option<f64>| opt(v, |v| format!("{v:.1}us"));
    for c in [&m.tools_call, &m.tools_list] {
        let direct = c.direct.as_ref().map(|d| (d, None));
        let via = c.via.iter().map(|v| (&v.figures, Some(v)));
        for (f, v) in direct.into_iter().chain(via) {
            let t = m.targets.iter().find(|t| t.name == f.target);
            let added = v.and_then(|v| v.added).map_or_else(
                || "-".into(),
                |a| format!("{} / {}", signed_us(a.p50_us), signed_us(a.p99_us)),
            );
            let errs = t
                .and_then(|t| t.closed_loop.as_ref())
                .map_or_else(|| "-".into(), |p| errors(&p.outcome));
            row(
                o,
                &[
                    f.target.clone(),
                    t.map_or_else(String::new, |t| t.request.clone()),
                    format!("{:.0}", f.rps),
                    us(f.p50_us),
                    us(f.p99_us),
                    added,
                    if v.is_some() {
                        cpu(f.cpu_us)
                    } else {
                        "-".into()
                    },
                    cpu(f.mock_cpu_us),
                    cpu(f.loadgen_cpu_us),
                    errs,
                ],
                &w,
            );
        }
    }
    // A target that ran but whose closed loop is not usable has no row above.
    for t in &m.targets {
        if t.skipped.is_none()
            && let Some(p) = t.closed_loop.as_ref().filter(|p| !p.usable())
        {
            let _ = writeln!(
                o,
                "NOTE: MCP target {}: closed loop unusable: {}",
                t.name,
                errors(&p.outcome)
            );
        }
    }
}

fn render_pair(o: &mut String, p: &PairOverhead) {
    let _ = writeln!(
        o,
        "\n== {} ==\n({} vs {}: one process, same requests, phases interleaved)",
        capitalise(&p.label),
        p.variant,
        p.base
    );
    let w = [9, 24, 26];
    row(
        o,
        &["rate", "added p50 / p99", "cpu/req with / without"].map(String::from),
        &w,
    );
    let added = |a: Option<AddedLatency>| {
        opt_s(a.map(|a| format!("{} / {}", signed_us(a.p50_us), signed_us(a.p99_us))))
    };
    let cpu = |with: Option<f64>, without: Option<f64>| match (with, without) {
        (Some(a), Some(b)) => format!("{a:.1} / {b:.1}us ({})", signed_us(a - b)),
        _ => "-".into(),
    };
    for r in &p.open_loop {
        row(
            o,
            &[
                format!("{}/s", r.rate),
                added(r.added),
                cpu(r.cpu_us_variant, r.cpu_us_base),
            ],
            &w,
        );
    }
    let _ = writeln!(
        o,
        "closed loop cpu/req {}; streaming first byte added {}",
        cpu(p.closed_loop_cpu_us_variant, p.closed_loop_cpu_us_base),
        added(p.stream_ttfb_added)
    );
}

fn render_translation(o: &mut String, t: &TranslationOverhead) {
    let _ = writeln!(
        o,
        "\n== {} ==\n({} = route `translated`, {} = route `chat`: one tollgate process, one mock, same OpenAI client and body, phases interleaved)",
        capitalise(&t.label),
        t.translated,
        t.passthrough
    );
    let w = [9, 22, 22, 22, 17];
    row(
        o,
        &[
            "rate",
            "translated vs direct",
            "passthru vs direct",
            "translated vs passthru",
            "cpu/req tr/pt",
        ]
        .map(String::from),
        &w,
    );
    let pair = |a: Option<AddedLatency>| {
        opt_s(a.map(|a| format!("{} / {}", signed_us(a.p50_us), signed_us(a.p99_us))))
    };
    let x = |v: Option<f64>| opt(v, |v| format!("{v:.2}x"));
    let cpu = |a: Option<f64>, b: Option<f64>, r: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{a:.1}/{b:.1}us {}", x(r)),
        _ => "-".into(),
    };
    for r in &t.open_loop {
        row(
            o,
            &[
                format!("{}/s", r.rate),
                pair(r.added_vs_direct),
                pair(r.passthrough_added_vs_direct),
                pair(r.added_vs_passthrough),
                cpu(r.cpu_us_translated, r.cpu_us_passthrough, r.cpu_ratio),
            ],
            &w,
        );
    }
    let _ = writeln!(o, "(added latency columns: +p50 / +p99)");
    let _ = writeln!(
        o,
        "closed loop: {} req/s translated vs {} req/s passthrough; cpu/req {}",
        opt(t.closed_loop_rps_translated, |v| format!("{v:.0}")),
        opt(t.closed_loop_rps_passthrough, |v| format!("{v:.0}")),
        cpu(
            t.closed_loop_cpu_us_translated,
            t.closed_loop_cpu_us_passthrough,
            t.closed_loop_cpu_ratio
        )
    );
    let ttfb = |v: Option<TtfbSummary>| {
        opt_s(v.map(|v| format!("p50 {} p99 {}", us(v.p50_us), us(v.p99_us))))
    };
    let _ = writeln!(
        o,
        "streaming first byte: translated {}, passthrough {}; translated vs passthrough {}, translated vs direct {}",
        ttfb(t.stream_ttfb_translated),
        ttfb(t.stream_ttfb_passthrough),
        pair(t.stream_ttfb_added_vs_passthrough),
        pair(t.stream_ttfb_added_vs_direct)
    );
}

fn signed_us(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", us(v))
    } else {
        us(v)
    }
}

fn opt_s(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencySummary;
    use std::collections::BTreeMap;

    const RATES: [f64; 2] = [500.0, 2000.0];

    fn meta() -> Meta {
        Meta {
            quick: true,
            phase_duration_s: 1.0,
            warmup_s: 0.1,
            open_loop_rates: RATES.to_vec(),
            open_loop_connections: 64,
            closed_loop_concurrency: 32,
            stream_requests: 10,
            request_timeout_ms: 5000,
            loadgen_threads: 1,
            cpus_online: 2,
            clock_ticks_per_sec: 100,
            mock: "test".into(),
            nginx: "test".into(),
            tollgate: "test".into(),
            loadavg_start: "0.00".into(),
            loadavg_end: "0.00".into(),
        }
    }

    fn phase(rate: Option<f64>, p50: f64, p99: f64, cpu: f64, ok: u64, errors: u64) -> PhaseResult {
        let mut error_kinds = BTreeMap::new();
        if errors > 0 {
            error_kinds.insert("status_502".to_string(), errors);
        }
        PhaseResult {
            rate,
            outcome: PhaseOutcome {
                planned: ok + errors,
                sent: ok + errors,
                ok,
                errors,
                error_kinds,
                first_error: (errors > 0).then(|| "HTTP status 502".into()),
                elapsed_s: 1.0,
                achieved_rps: ok as f64,
                latency: LatencySummary {
                    count: ok,
                    p50_us: p50,
                    p99_us: p99,
                    ..Default::default()
                },
                send_lag: None,
            },
            cpu_per_request: CpuPerRequest {
                target_us: Some(cpu),
                backend_us: Some(10.0),
                loadgen_us: Some(5.0),
            },
        }
    }

    /// A target whose every phase has the given p50 (p99 = 3x), CPU, stream
    /// first-byte p50 and idle RSS.
    fn target(name: &str, p50: f64, cpu: f64, ttfb: f64, rss_mb: u64, errors: u64) -> TargetReport {
        let ok = if errors > 0 { 0 } else { 1000 };
        let mut t = TargetReport::skipped(name, String::new());
        t.skipped = None;
        t.open_loop = RATES
            .iter()
            .map(|&r| phase(Some(r), p50, 3.0 * p50, cpu, ok, errors))
            .collect();
        t.closed_loop = Some(phase(None, p50, 3.0 * p50, cpu, ok, errors));
        t.streaming_ttfb = Some(phase(None, ttfb, 2.0 * ttfb, cpu, ok, errors));
        let m = MemStatus {
            vm_rss_kib: rss_mb * 1024,
            vm_hwm_kib: rss_mb * 1024,
        };
        t.memory = Some(MemoryReport {
            after_start: m,
            after_warmup: m,
            after_load: m,
        });
        t
    }

    fn labels(r: &BenchReport) -> Vec<&'static str> {
        r.summary.iter().map(|c| c.verdict.label()).collect()
    }

    #[test]
    fn all_pass_and_ratios() {
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                target(NGINX, 130.0, 20.0, 90.0, 12, 0),
                target(TOLLGATE, 150.0, 35.0, 240.0, 20, 0),
            ],
        );
        assert_eq!(labels(&r), ["PASS"; 5]);
        let tg = r.comparisons.iter().find(|c| c.target == TOLLGATE).unwrap();
        assert_eq!(tg.added_latency[0].added.p50_us, 50.0);
        assert_eq!(tg.added_latency[0].added.p99_us, 150.0);
        assert_eq!(tg.stream_ttfb_overhead_p50_us, Some(200.0));
        let ratio = &r.tollgate_vs_nginx[1];
        assert_eq!(ratio.rate, 2000.0);
        assert!((ratio.added_p50.unwrap() - 50.0 / 30.0).abs() < 1e-9);
        assert!((ratio.added_p99.unwrap() - 150.0 / 90.0).abs() < 1e-9);
        assert!((ratio.cpu_per_request.unwrap() - 1.75).abs() < 1e-9);
        let text = r.render();
        for needle in [
            "Open loop 500",
            "Closed loop",
            "Streaming",
            "Memory",
            "Ratio tollgate / nginx",
            "[PASS]",
        ] {
            assert!(text.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn all_fail() {
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                target(NGINX, 130.0, 20.0, 90.0, 12, 0),
                target(TOLLGATE, 200.0, 45.0, 600.0, 40, 0),
            ],
        );
        assert_eq!(labels(&r), ["FAIL"; 5]);
    }

    #[test]
    fn erroring_tollgate_fails_instead_of_passing_on_empty_data() {
        // p50 of 0 on an all-error run would otherwise look like a win.
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                target(NGINX, 130.0, 20.0, 90.0, 12, 0),
                target(TOLLGATE, 0.0, 1.0, 0.0, 10, 50),
            ],
        );
        assert_eq!(labels(&r), ["FAIL", "FAIL", "FAIL", "FAIL", "PASS"]);
        assert!(r.summary[0].verdict.detail().contains("502"));
        let tg = r.comparisons.iter().find(|c| c.target == TOLLGATE).unwrap();
        assert!(tg.added_latency.is_empty());
    }

    #[test]
    fn skipped_tollgate_or_nginx() {
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                target(NGINX, 130.0, 20.0, 90.0, 12, 0),
                TargetReport::skipped(TOLLGATE, "binary not found".into()),
            ],
        );
        assert_eq!(labels(&r), ["SKIP"; 5]);
        assert!(r.summary[0].verdict.detail().contains("binary not found"));
        assert!(r.tollgate_vs_nginx.is_empty());
        assert!(r.render().contains("SKIPPED: binary not found"));

        // Without nginx the ratio checks can't be judged; absolute ones can.
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                TargetReport::skipped(NGINX, "no nginx".into()),
                target(TOLLGATE, 150.0, 35.0, 240.0, 20, 0),
            ],
        );
        assert_eq!(labels(&r), ["SKIP", "SKIP", "SKIP", "PASS", "PASS"]);
    }

    #[test]
    fn translation_overhead_vs_passthrough_and_direct() {
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                target(NGINX, 130.0, 20.0, 90.0, 12, 0),
                target(TOLLGATE, 150.0, 35.0, 240.0, 20, 0),
                target(TOLLGATE_TRANSLATED, 190.0, 70.0, 300.0, 20, 0),
            ],
        );
        // The translated target does not change the existing verdicts.
        assert_eq!(labels(&r), ["PASS"; 5]);
        let tr = r
            .comparisons
            .iter()
            .find(|c| c.target == TOLLGATE_TRANSLATED)
            .unwrap();
        assert_eq!(tr.added_latency[0].added.p50_us, 90.0);
        let t = r.translation_overhead.as_ref().unwrap();
        assert_eq!(t.label, TRANSLATION_LABEL);
        assert_eq!(t.open_loop.len(), 2);
        let a = &t.open_loop[1];
        assert_eq!(a.rate, 2000.0);
        assert_eq!(a.added_vs_direct.unwrap().p50_us, 90.0);
        assert_eq!(a.added_vs_direct.unwrap().p99_us, 270.0);
        assert_eq!(a.passthrough_added_vs_direct.unwrap().p50_us, 50.0);
        assert_eq!(a.added_vs_passthrough.unwrap().p50_us, 40.0);
        assert_eq!(a.added_vs_passthrough.unwrap().p99_us, 120.0);
        assert!((a.cpu_ratio.unwrap() - 2.0).abs() < 1e-9);
        assert!((t.closed_loop_cpu_ratio.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(t.closed_loop_rps_translated, Some(1000.0));
        assert_eq!(t.stream_ttfb_passthrough.unwrap().p50_us, 240.0);
        assert_eq!(t.stream_ttfb_translated.unwrap().p50_us, 300.0);
        assert_eq!(t.stream_ttfb_added_vs_passthrough.unwrap().p50_us, 60.0);
        assert_eq!(t.stream_ttfb_added_vs_direct.unwrap().p50_us, 260.0);

        let text = r.render();
        for needle in [
            "Translation overhead (OpenAI client → Anthropic provider) vs passthrough",
            "+40us / +120us",
            "35.0us 2.00x",
            "streaming first byte: translated p50 300us",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        let v = serde_json::to_value(&r).unwrap();
        let j = &v["translation_overhead"];
        assert_eq!(j["label"], TRANSLATION_LABEL);
        assert_eq!(j["open_loop"][0]["added_vs_passthrough"]["p50_us"], 40.0);
        assert_eq!(j["stream_ttfb_translated"]["p99_us"], 600.0);
    }

    #[test]
    fn translation_overhead_absent_or_partial() {
        // Without the translated target there is no section.
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                target(TOLLGATE, 150.0, 35.0, 240.0, 20, 0),
            ],
        );
        assert!(r.translation_overhead.is_none());
        assert!(!r.render().contains("Translation overhead"));
        // A failing translated route yields no numbers, not zeros.
        let r = BenchReport::new(
            meta(),
            vec![
                target(DIRECT, 100.0, 10.0, 40.0, 4, 0),
                target(TOLLGATE, 150.0, 35.0, 240.0, 20, 0),
                target(TOLLGATE_TRANSLATED, 0.0, 1.0, 0.0, 20, 50),
            ],
        );
        let t = r.translation_overhead.as_ref().unwrap();
        assert!(t.open_loop.iter().all(|a| a.added_vs_passthrough.is_none()
            && a.cpu_ratio.is_none()
            && a.passthrough_added_vs_direct.is_some()));
        assert!(t.stream_ttfb_translated.is_none());
        assert!(r.render().contains("Translation overhead"));
    }

    #[test]
    fn mcp_section_compares_with_direct() {
        use crate::mcp::{
            CALL_AGGREGATED, CALL_DIRECT, CALL_PASSTHROUGH, LIST_AGGREGATED, LIST_DIRECT,
        };
        let ran = |name: &str, p50: f64, cpu: f64| {
            let mut t = McpTarget::new(name, format!("{name} request"));
            t.closed_loop = Some(phase(None, p50, 3.0 * p50, cpu, 1000, 0));
            t
        };
        let mut skipped = McpTarget::new(LIST_AGGREGATED, "list".into());
        skipped.skipped = Some("probe 1 to /mcp: expected 40 tools, got 36".into());
        let m = McpReport::new(
            "setup".into(),
            32,
            5.0,
            vec![
                ran(CALL_DIRECT, 100.0, 20.0),
                ran(CALL_PASSTHROUGH, 160.0, 45.0),
                ran(CALL_AGGREGATED, 250.0, 60.0),
                ran(LIST_DIRECT, 120.0, 30.0),
                skipped,
            ],
            Some("stopped".into()),
        );
        let c = &m.tools_call;
        assert_eq!(c.direct.as_ref().unwrap().p50_us, 100.0);
        assert_eq!(c.via.len(), 2);
        assert_eq!(c.via[0].figures.target, CALL_PASSTHROUGH);
        assert_eq!(c.via[0].added.unwrap().p50_us, 60.0);
        assert_eq!(c.via[1].added.unwrap().p99_us, 450.0);
        assert_eq!(c.via[1].figures.cpu_us, Some(60.0));
        assert!(m.tools_list.via.is_empty());
        let mut r = BenchReport::new(meta(), Vec::new());
        r.mcp = Some(m);
        let text = r.render();
        for needle in [
            MCP_LABEL,
            "closed loop x32",
            "+60us / +180us",
            "+150us / +450us",
            "60.0us",
            "NOTE: MCP target mcp-list-aggregated SKIPPED: probe 1",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        // Only MCP ran: no empty chat tables or chat verdicts.
        assert!(!text.contains("== Open loop"), "{text}");
        assert!(!text.contains("Summary"), "{text}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["mcp"]["tools_call"]["via"][1]["added"]["p50_us"], 150.0);
        assert!(v["mcp"]["targets"][4]["skipped"].is_string());
    }

    #[test]
    fn json_shape() {
        let r = BenchReport::new(meta(), vec![TargetReport::skipped(TOLLGATE, "x".into())]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["summary"][0]["verdict"], "SKIPPED");
        assert!(v["targets"][0]["skipped"].is_string());
        assert!(v["meta"]["open_loop_rates"].is_array());
    }
}
