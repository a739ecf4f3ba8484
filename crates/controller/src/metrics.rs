//! Prometheus metrics for the controller, served on `--metrics-listen`
//! next to the health endpoints.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which control loop a reconcile belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    /// One pass of the status loop: compile, publish, status writes.
    Status,
    /// One `reconcile` call of the workload controller.
    Workload,
    /// One `reconcile` call of the controller of operator-run MCPServers.
    McpWorkload,
}

impl Loop {
    fn label(self) -> &'static str {
        match self {
            Loop::Status => "status",
            Loop::Workload => "workload",
            Loop::McpWorkload => "mcp_workload",
        }
    }
}

/// How a subscription request to the config server ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionResult {
    Accepted,
    Unauthenticated,
    Forbidden,
    UnknownGateway,
    NotReady,
    ReviewFailed,
}

impl SubscriptionResult {
    const ALL: [SubscriptionResult; 6] = [
        SubscriptionResult::Accepted,
        SubscriptionResult::Unauthenticated,
        SubscriptionResult::Forbidden,
        SubscriptionResult::UnknownGateway,
        SubscriptionResult::NotReady,
        SubscriptionResult::ReviewFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            SubscriptionResult::Accepted => "accepted",
            SubscriptionResult::Unauthenticated => "unauthenticated",
            SubscriptionResult::Forbidden => "forbidden",
            SubscriptionResult::UnknownGateway => "unknown_gateway",
            SubscriptionResult::NotReady => "not_ready",
            SubscriptionResult::ReviewFailed => "review_failed",
        }
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub r#loop: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabels {
    pub r#loop: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<LoopLabels, Histogram>,
    pub status_writes: Family<ResultLabels, Counter>,
    pub compile_duration: Histogram,
    pub config_subscribers: Gauge,
    pub config_subscriptions: Family<ResultLabels, Counter>,
    pub snapshots_sent: Counter,
    /// 1 while this replica leads.
    pub leader: Gauge,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s: a small compile at the low end, a large status burst
    // against a slow apiserver at the top.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate_controller");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration = Family::<LoopLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let status_writes = Family::<ResultLabels, Counter>::default();
        let compile_duration = duration_histogram();
        let config_subscribers = Gauge::default();
        let config_subscriptions = Family::<ResultLabels, Counter>::default();
        let snapshots_sent = Counter::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles by loop (status, workload) and result (ok, error)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by loop",
            reconcile_duration.clone(),
        );
        registry.register(
            "status_writes",
            "Status patches by result",
            status_writes.clone(),
        );
        registry.register(
            "compile_duration_seconds",
            "Time to compile all resources into gateway snapshots",
            compile_duration.clone(),
        );
        registry.register(
            "config_subscribers",
            "Open gateway subscriptions to the config server",
            config_subscribers.clone(),
        );
        registry.register(
            "config_subscriptions",
            "Subscription requests to the config server by result",
            config_subscriptions.clone(),
        );
        registry.register(
            "snapshots_sent",
            "Snapshot frames written to subscribers (heartbeats excluded)",
            snapshots_sent.clone(),
        );
        registry.register("leader", "Whether this replica leads", leader.clone());
        // Every known series from the start, at zero, so `rate()` and alerts
        // on error series work before the first error. (`let _`: creating the
        // series is the point; the returned guard is not needed.)
        for which in [Loop::Status, Loop::Workload, Loop::McpWorkload] {
            let _ = reconcile_duration.get_or_create(&LoopLabels {
                r#loop: which.label(),
            });
            for ok in [true, false] {
                let _ = reconciles.get_or_create(&ReconcileLabels {
                    r#loop: which.label(),
                    result: outcome(ok),
                });
            }
        }
        for ok in [true, false] {
            let _ = status_writes.get_or_create(&ResultLabels {
                result: outcome(ok),
            });
        }
        for result in SubscriptionResult::ALL {
            let _ = config_subscriptions.get_or_create(&ResultLabels {
                result: result.label(),
            });
        }
        Self {
            registry,
            reconciles,
            reconcile_duration,
            status_writes,
            compile_duration,
            config_subscribers,
            config_subscriptions,
            snapshots_sent,
            leader,
        }
    }

    /// Counts one reconcile of `which` and records how long it took.
    pub fn reconciled(&self, which: Loop, elapsed: Duration, ok: bool) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                r#loop: which.label(),
                result: outcome(ok),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&LoopLabels {
                r#loop: which.label(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn status_written(&self, ok: bool) {
        self.status_writes
            .get_or_create(&ResultLabels {
                result: outcome(ok),
            })
            .inc();
    }

    pub fn compiled(&self, elapsed: Duration) {
        self.compile_duration.observe(elapsed.as_secs_f64());
    }

    pub fn subscription(&self, result: SubscriptionResult) {
        self.config_subscriptions
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Counts an open subscription until the returned guard is dropped, so
    /// every way a stream can end (deleted gateway, re-authentication, the
    /// gateway hanging up) takes it off the gauge.
    pub fn subscriber(&self) -> SubscriberGuard {
        self.config_subscribers.inc();
        SubscriberGuard(self.config_subscribers.clone())
    }

    /// The OpenMetrics text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`Metrics::subscriber`].
pub struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `prefix` (name and labels).
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn reconciles_are_counted_by_loop_and_result_with_durations() {
        let metrics = Metrics::new();
        metrics.reconciled(Loop::Status, Duration::from_millis(3), true);
        metrics.reconciled(Loop::Status, Duration::from_millis(5), true);
        metrics.reconciled(Loop::Status, Duration::from_millis(2), false);
        metrics.reconciled(Loop::Workload, Duration::from_secs(2), true);
        let text = metrics.encode();

        assert!(
            text.contains("# TYPE tollgate_controller_reconciles counter"),
            "{text}"
        );
        let count = |labels: &str| {
            sample(
                &text,
                &format!("tollgate_controller_reconciles_total{{{labels}}}"),
            )
        };
        assert_eq!(count(r#"loop="status",result="ok""#), Some(2.0), "{text}");
        assert_eq!(
            count(r#"loop="status",result="error""#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(count(r#"loop="workload",result="ok""#), Some(1.0), "{text}");
        assert_eq!(
            count(r#"loop="workload",result="error""#),
            Some(0.0),
            "known series start at zero: {text}"
        );

        assert!(
            text.contains("# TYPE tollgate_controller_reconcile_duration_seconds histogram"),
            "{text}"
        );
        let status = r#"tollgate_controller_reconcile_duration_seconds_count{loop="status"}"#;
        assert_eq!(sample(&text, status), Some(3.0), "{text}");
        let sum = r#"tollgate_controller_reconcile_duration_seconds_sum{loop="status"}"#;
        let sum = sample(&text, sum).unwrap_or_default();
        assert!((sum - 0.010).abs() < 1e-9, "{text}");
        // The 2 s workload reconcile lands above the 1.024 s bucket, within 2.048 s.
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(
                    r#"tollgate_controller_reconcile_duration_seconds_bucket{{le="{le}",loop="workload"}}"#
                ),
            )
        };
        assert_eq!(bucket("1.024"), Some(0.0), "{text}");
        assert_eq!(bucket("2.048"), Some(1.0), "{text}");
        assert_eq!(bucket("+Inf"), Some(1.0), "{text}");
    }

    #[test]
    fn status_writes_and_compiles_are_recorded() {
        let metrics = Metrics::new();
        metrics.status_written(true);
        metrics.status_written(true);
        metrics.status_written(false);
        metrics.compiled(Duration::from_millis(7));
        let text = metrics.encode();
        let writes = |result: &str| {
            sample(
                &text,
                &format!(r#"tollgate_controller_status_writes_total{{result="{result}"}}"#),
            )
        };
        assert_eq!(writes("ok"), Some(2.0), "{text}");
        assert_eq!(writes("error"), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, "tollgate_controller_compile_duration_seconds_count"),
            Some(1.0),
            "{text}"
        );
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(r#"tollgate_controller_compile_duration_seconds_bucket{{le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("0.004"), Some(0.0), "{text}");
        assert_eq!(bucket("0.008"), Some(1.0), "{text}");
    }

    #[test]
    fn subscribers_follow_their_guards_and_results_are_counted() {
        let metrics = Metrics::new();
        let first = metrics.subscriber();
        let second = metrics.subscriber();
        metrics.subscription(SubscriptionResult::Accepted);
        metrics.subscription(SubscriptionResult::Accepted);
        metrics.subscription(SubscriptionResult::Forbidden);
        metrics.subscription(SubscriptionResult::UnknownGateway);
        metrics.snapshots_sent.inc_by(3);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "tollgate_controller_config_subscribers"),
            Some(2.0),
            "{text}"
        );
        let subscriptions = |result: &str| {
            sample(
                &text,
                &format!(r#"tollgate_controller_config_subscriptions_total{{result="{result}"}}"#),
            )
        };
        assert_eq!(subscriptions("accepted"), Some(2.0), "{text}");
        assert_eq!(subscriptions("forbidden"), Some(1.0), "{text}");
        assert_eq!(subscriptions("unknown_gateway"), Some(1.0), "{text}");
        assert_eq!(subscriptions("review_failed"), Some(0.0), "{text}");
        assert_eq!(
            sample(&text, "tollgate_controller_snapshots_sent_total"),
            Some(3.0),
            "{text}"
        );

        drop(first);
        drop(second);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "tollgate_controller_config_subscribers"),
            Some(0.0),
            "{text}"
        );
    }

    #[test]
    fn leader_gauge_is_exposed_and_the_output_is_openmetrics() {
        let metrics = Metrics::new();
        metrics.leader.set(1);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE tollgate_controller_leader gauge"),
            "{text}"
        );
        assert_eq!(sample(&text, "tollgate_controller_leader"), Some(1.0));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
