//! Load generation: open-loop fixed rate, closed-loop max throughput, and
//! streaming time-to-first-byte. Every phase is bounded both by a request
//! count and by a wall-clock deadline.

use crate::client::{Client, RequestError, RequestTemplate};
use crate::schedule::{Schedule, latency_origin};
use crate::stats::{LatencySummary, new_histogram, record};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Per-worker tallies, merged once at the end (no shared state on the hot
/// path besides one atomic slot counter).
struct WorkerStats {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

impl WorkerStats {
    fn new() -> Self {
        WorkerStats {
            latency: new_histogram(),
            send_lag: new_histogram(),
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            first_error: None,
            last_done: None,
        }
    }

    fn error(&mut self, e: &RequestError) {
        *self.errors.entry(e.kind()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// Raw outcome of a phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseOutcome {
    /// Requests the phase was allowed to send (its count bound).
    pub planned: u64,
    pub sent: u64,
    pub ok: u64,
    /// Failed requests plus planned requests never sent before the deadline.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    /// Successful requests per second over the phase.
    pub achieved_rps: f64,
    pub latency: LatencySummary,
    /// Open loop only: how late the generator sent relative to the schedule
    /// (generator health; large values mean the numbers are suspect).
    pub send_lag: Option<LatencySummary>,
}

fn merge(planned: u64, start: Instant, workers: Vec<WorkerStats>, with_lag: bool) -> PhaseOutcome {
    let mut latency = new_histogram();
    let mut lag = new_histogram();
    let mut error_kinds = BTreeMap::new();
    let (mut sent, mut ok) = (0, 0);
    let mut first_error = None;
    let mut last_done = start;
    for w in workers {
        // Identical bounds, so add() cannot fail.
        let _ = latency.add(&w.latency);
        let _ = lag.add(&w.send_lag);
        sent += w.sent;
        ok += w.ok;
        for (k, v) in w.errors {
            *error_kinds.entry(k).or_insert(0) += v;
        }
        first_error = first_error.or(w.first_error);
        if let Some(t) = w.last_done {
            last_done = last_done.max(t);
        }
    }
    let unsent = planned.saturating_sub(sent);
    if unsent > 0 {
        error_kinds.insert("unsent_deadline".into(), unsent);
    }
    let errors = error_kinds.values().sum();
    let elapsed = last_done.saturating_duration_since(start).as_secs_f64();
    PhaseOutcome {
        planned,
        sent,
        ok,
        errors,
        error_kinds,
        first_error,
        elapsed_s: elapsed,
        achieved_rps: if elapsed > 0.0 {
            ok as f64 / elapsed
        } else {
            0.0
        },
        latency: LatencySummary::from_histogram(&latency),
        send_lag: with_lag.then(|| LatencySummary::from_histogram(&lag)),
    }
}

#[derive(Debug, Clone)]
pub struct OpenLoopConfig {
    pub rate: f64,
    pub duration: Duration,
    pub connections: usize,
    pub timeout: Duration,
    /// Extra time after the schedule ends for a backlog to drain; requests
    /// still unsent then are counted as errors.
    pub grace: Duration,
}

/// Fixed-rate load: request `i` is due at `start + i/rate` whether or not
/// earlier requests completed. Workers claim slots in order from a shared
/// counter, so a due request goes out on whichever connection frees first.
pub async fn open_loop(tmpl: Arc<RequestTemplate>, cfg: &OpenLoopConfig) -> PhaseOutcome {
    let sched = Schedule::for_duration(cfg.rate, cfg.duration);
    let clients = preconnected(&tmpl, cfg.connections, cfg.timeout).await;
    // Small lead so every worker is parked before slot 0 is due.
    let start = Instant::now() + Duration::from_millis(20);
    let hard_deadline = start + sched.span() + cfg.grace;
    let next = Arc::new(AtomicU64::new(0));

    let mut handles = Vec::with_capacity(clients.len());
    for mut client in clients {
        let tmpl = tmpl.clone();
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut st = WorkerStats::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= sched.total {
                    break;
                }
                let intended = sched.intended(start, i);
                let claimed = Instant::now();
                if claimed > hard_deadline {
                    break;
                }
                if claimed < intended {
                    tokio::time::sleep_until(intended.into()).await;
                }
                let sent = Instant::now();
                st.sent += 1;
                record(&mut st.send_lag, sent.saturating_duration_since(intended));
                let result = client.request(&tmpl).await;
                let done = Instant::now();
                st.last_done = Some(done);
                match result {
                    Ok(()) => {
                        st.ok += 1;
                        record(
                            &mut st.latency,
                            done - latency_origin(intended, claimed, sent),
                        );
                    }
                    Err(e) => st.error(&e),
                }
            }
            st
        }));
    }
    let workers = join_workers(handles).await;
    merge(sched.total, start, workers, true)
}

/// What a closed-loop worker measures per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Send to end of the full response body.
    FullResponse,
    /// Send to the first non-empty body chunk (streaming TTFB).
    FirstByte,
}

#[derive(Debug, Clone)]
pub struct ClosedLoopConfig {
    pub concurrency: usize,
    pub duration: Duration,
    pub max_requests: u64,
    pub timeout: Duration,
    pub measure: Measure,
}

/// `concurrency` workers each send back-to-back until the deadline or until
/// the shared request budget is used up.
pub async fn closed_loop(tmpl: Arc<RequestTemplate>, cfg: &ClosedLoopConfig) -> PhaseOutcome {
    let clients = preconnected(&tmpl, cfg.concurrency, cfg.timeout).await;
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let budget = Arc::new(AtomicU64::new(0));
    let max = cfg.max_requests;
    let measure = cfg.measure;

    let mut handles = Vec::with_capacity(clients.len());
    for mut client in clients {
        let tmpl = tmpl.clone();
        let budget = budget.clone();
        handles.push(tokio::spawn(async move {
            let mut st = WorkerStats::new();
            while Instant::now() < deadline && budget.fetch_add(1, Ordering::Relaxed) < max {
                st.sent += 1;
                let sent = Instant::now();
                let result = match measure {
                    Measure::FullResponse => client.request(&tmpl).await.map(|()| sent.elapsed()),
                    Measure::FirstByte => client.first_byte(&tmpl).await,
                };
                st.last_done = Some(Instant::now());
                match result {
                    Ok(d) => {
                        st.ok += 1;
                        record(&mut st.latency, d);
                    }
                    Err(e) => st.error(&e),
                }
            }
            st
        }));
    }
    let workers = join_workers(handles).await;
    let sent: u64 = workers.iter().map(|w| w.sent).sum();
    // Closed loop has no schedule: "planned" is what was actually attempted.
    merge(sent, start, workers, false)
}

async fn preconnected(tmpl: &RequestTemplate, n: usize, timeout: Duration) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Client::new(tmpl.addr, timeout);
        // A failure here resurfaces (and is counted) on the first request.
        let _ = c.preconnect().await;
        clients.push(c);
    }
    clients
}

async fn join_workers(handles: Vec<tokio::task::JoinHandle<WorkerStats>>) -> Vec<WorkerStats> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        // A panicking worker loses its tallies; its requests show as unsent.
        if let Ok(st) = h.await {
            out.push(st);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::chat_body;
    use crate::stub;

    fn tmpl(addr: std::net::SocketAddr, path: &str, stream: bool) -> Arc<RequestTemplate> {
        Arc::new(RequestTemplate::new(
            addr,
            path,
            chat_body("mock-chat", stream),
        ))
    }

    fn open_cfg(rate: f64, ms: u64, connections: usize) -> OpenLoopConfig {
        OpenLoopConfig {
            rate,
            duration: Duration::from_millis(ms),
            connections,
            timeout: Duration::from_secs(2),
            grace: Duration::from_millis(500),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_hits_schedule_against_stub() {
        let (addr, server) = stub::spawn(Duration::ZERO).await.unwrap();
        let out = open_loop(
            tmpl(addr, "/v1/chat/completions", false),
            &open_cfg(400.0, 500, 8),
        )
        .await;
        server.abort();
        assert_eq!(out.planned, 200);
        assert_eq!(out.ok, 200, "{out:?}");
        assert_eq!(out.errors, 0);
        // Paced by the schedule, not as fast as possible.
        assert!(
            out.elapsed_s >= 0.45 && out.elapsed_s < 1.5,
            "{}",
            out.elapsed_s
        );
        assert!(
            out.achieved_rps > 250.0 && out.achieved_rps < 450.0,
            "{}",
            out.achieved_rps
        );
        assert!(out.send_lag.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_charges_queueing_to_the_target() {
        // One connection, 20 ms per response: capacity 50/s, offered 100/s.
        // Requests queue behind each other; with the intended-time origin the
        // tail grows far past the 20 ms service time. Measuring from the
        // actual send (coordinated omission) would report ~20 ms throughout.
        let (addr, server) = stub::spawn(Duration::from_millis(20)).await.unwrap();
        let cfg = OpenLoopConfig {
            grace: Duration::from_secs(2),
            ..open_cfg(100.0, 500, 1)
        };
        let out = open_loop(tmpl(addr, "/v1/chat/completions", false), &cfg).await;
        server.abort();
        assert_eq!(out.errors, 0, "{out:?}");
        assert!(out.latency.p50_us >= 20_000.0, "{:?}", out.latency);
        assert!(out.latency.max_us > 150_000.0, "{:?}", out.latency);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_is_time_bounded_when_backlogged() {
        // Capacity 20/s, offered 200/s for 0.3 s with 0.2 s grace: most
        // requests can't be sent in time and must be written off, not waited for.
        let (addr, server) = stub::spawn(Duration::from_millis(50)).await.unwrap();
        let t0 = Instant::now();
        let out = open_loop(
            tmpl(addr, "/v1/chat/completions", false),
            &OpenLoopConfig {
                grace: Duration::from_millis(200),
                ..open_cfg(200.0, 300, 1)
            },
        )
        .await;
        server.abort();
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(out.planned, 60);
        assert!(out.sent < 60);
        assert_eq!(
            out.error_kinds.get("unsent_deadline"),
            Some(&(60 - out.sent))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_and_first_byte_against_stub() {
        let (addr, server) = stub::spawn(Duration::ZERO).await.unwrap();
        let cfg = ClosedLoopConfig {
            concurrency: 4,
            duration: Duration::from_millis(300),
            max_requests: 1_000_000,
            timeout: Duration::from_secs(2),
            measure: Measure::FullResponse,
        };
        let out = closed_loop(tmpl(addr, "/v1/chat/completions", false), &cfg).await;
        assert!(out.ok > 50, "{out:?}");
        assert_eq!(out.errors, 0);

        // Count-bounded: stops at max_requests long before the deadline.
        let cfg = ClosedLoopConfig {
            concurrency: 1,
            duration: Duration::from_secs(10),
            max_requests: 25,
            measure: Measure::FirstByte,
            ..cfg
        };
        let out = closed_loop(tmpl(addr, "/v1/chat/completions", true), &cfg).await;
        server.abort();
        assert_eq!(out.ok, 25, "{out:?}");
        assert!(out.elapsed_s < 5.0);
        assert!(out.latency.p50_us > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_counted_not_fatal() {
        let (addr, server) = stub::spawn(Duration::ZERO).await.unwrap();
        let cfg = ClosedLoopConfig {
            concurrency: 2,
            duration: Duration::from_secs(5),
            max_requests: 10,
            timeout: Duration::from_secs(2),
            measure: Measure::FullResponse,
        };
        let out = closed_loop(tmpl(addr, "/nope", false), &cfg).await;
        server.abort();
        assert_eq!(out.ok, 0);
        assert_eq!(out.error_kinds.get("status_404"), Some(&10));

        // Nothing listening: connect errors, bounded by count.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let out = closed_loop(tmpl(dead, "/v1/chat/completions", false), &cfg).await;
        assert_eq!(out.ok, 0);
        assert_eq!(out.error_kinds.get("connect"), Some(&10));
        assert!(out.first_error.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_timeout_fires() {
        let (addr, server) = stub::spawn(Duration::from_secs(3)).await.unwrap();
        let cfg = ClosedLoopConfig {
            concurrency: 1,
            duration: Duration::from_secs(5),
            max_requests: 1,
            timeout: Duration::from_millis(100),
            measure: Measure::FullResponse,
        };
        let t0 = Instant::now();
        let out = closed_loop(tmpl(addr, "/v1/chat/completions", false), &cfg).await;
        server.abort();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(out.error_kinds.get("timeout"), Some(&1));
    }
}
