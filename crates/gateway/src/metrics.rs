//! Prometheus metrics for the data plane, served on the admin port.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one settled request. Empty strings where a stage was not reached
/// (for example `route` on a 401).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub route: Arc<str>,
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabels {
    pub route: Arc<str>,
    pub provider: Arc<str>,
    pub model: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub route: Arc<str>,
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub provider: Arc<str>,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamFailureLabels {
    pub endpoint: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: Arc<str>,
}

/// A provider's circuit breaker entering `state` (`open`, `half_open`,
/// `closed`), or a provider skipped for `reason` (`circuit_open`,
/// `quota`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderEventLabels {
    pub provider: Arc<str>,
    pub event: &'static str,
}

/// `reason`: `max_share` (the caller holds `maxShare` of the slots) or
/// `queue_timeout` (it waited `maxQueueWait` for a slot in vain).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FairShareLabels {
    pub provider: Arc<str>,
    pub reason: &'static str,
}

/// `outcome`: `rejected`, `downgraded`, `over` (admitted past a Warn
/// budget), `unavailable` (state unreachable, failing closed), `uncounted`
/// (state unreachable, failing open).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub budget: Arc<str>,
    pub outcome: &'static str,
}

/// One MCP message: the MCPServer, the method (a fixed set), the tool of a
/// call that reached the backend, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpLabels {
    pub server: Arc<str>,
    pub method: &'static str,
    pub tool: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpAgentLabels {
    pub server: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpListLabels {
    pub server: Arc<str>,
    pub method: &'static str,
}

/// Who spends: team and app (users are in `/v1/usage`, not in labels).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrincipalLabels {
    pub team: String,
    pub app: String,
}

/// `kind`: `spike` or `softThreshold`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub budget: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// Which listener a connection came in on: `data` or `admin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

/// One audit sink.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditSinkLabels {
    pub sink: String,
}

/// One guard decision: a finding of a policy's rule acted on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    pub route: Arc<str>,
    pub policy: Arc<str>,
    /// `input` or `output`.
    pub stage: &'static str,
    /// The recognizer or rule (`EMAIL`, `PROJECT`, `prompt_injection`).
    pub rule: Arc<str>,
    /// `redact`, `mask`, `block` or `flag`.
    pub action: &'static str,
}

/// One smart-routing decision: the route, the tier it chose and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub route: Arc<str>,
    pub tier: Arc<str>,
    pub reason: &'static str,
}

/// One prompt render: the route, the template version (empty for none, and
/// for a version the route does not have), and how it ended (`ok`,
/// `version_not_found`, `version_conflict`, `variable_missing`,
/// `invalid_variables`, `render_failed`, `context_unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromptRenderLabels {
    pub route: Arc<str>,
    pub version: Arc<str>,
    pub outcome: &'static str,
}

/// One fetch of a prompt context source (its URL without query), and how
/// it ended: `ok`, `timeout`, `too_large`, `status`, `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContextFetchLabels {
    pub source: Arc<str>,
    pub outcome: &'static str,
}

/// A request of `route` that went without an optional context `source`
/// (`unavailable`), or was served the last copy of a source whose refresh
/// failed (`stale`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContextUseLabels {
    pub route: Arc<str>,
    pub source: Arc<str>,
    pub outcome: &'static str,
}

/// Why a connection was closed as soon as it was accepted (or not accepted).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram>,
    pub time_to_first_token: Family<UsageLabels, Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost_usd: Family<UsageLabels, Counter<f64, AtomicU64>>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub stream_failures: Family<StreamFailureLabels, Counter>,
    pub fair_share_rejections: Family<FairShareLabels, Counter>,
    pub fair_queue_wait: Family<ProviderLabels, Histogram>,
    /// 1 while a provider's breaker is open or half-open on this replica.
    pub provider_circuit_open: Family<ProviderLabels, Gauge>,
    pub provider_circuit_transitions: Family<ProviderEventLabels, Counter>,
    pub provider_skips: Family<ProviderEventLabels, Counter>,
    pub budget_decisions: Family<BudgetLabels, Counter>,
    pub budget_state_errors: Counter,
    pub budget_alerts: Family<AlertLabels, Counter>,
    pub mcp_requests: Family<McpLabels, Counter>,
    pub mcp_duration: Family<McpLabels, Histogram>,
    pub mcp_list_failures: Family<McpListLabels, Counter>,
    pub mcp_agent_alerts: Family<McpAgentLabels, Counter>,
    pub principal_cost_usd: Family<PrincipalLabels, Counter<f64, AtomicU64>>,
    pub in_flight: Gauge,
    pub reloads: Family<ReloadLabels, Counter>,
    /// Controller mode: 1 while a subscription stream is open.
    pub controller_connected: Gauge,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_rejected: Family<RejectLabels, Counter>,
    pub route_tier_decisions: Family<TierLabels, Counter>,
    pub guard_decisions: Family<GuardLabels, Counter>,
    pub audit_records: Counter,
    pub audit_records_lost: Counter,
    pub audit_spool_bytes: Gauge,
    pub audit_sink_delivered: Family<AuditSinkLabels, Counter>,
    pub audit_sink_lost: Family<AuditSinkLabels, Counter>,
    pub audit_sink_backlog: Family<AuditSinkLabels, Gauge>,
    /// Last totals read from the audit log, so counters advance by deltas.
    pub audit_seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    pub prompt_renders: Family<PromptRenderLabels, Counter>,
    pub prompt_context_fetches: Family<ContextFetchLabels, Counter>,
    pub prompt_context_degraded: Family<ContextUseLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~65 s: gateway overhead at the low end, long generations at the top.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let time_to_first_token = Family::<UsageLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        let cost_usd = Family::<UsageLabels, Counter<f64, AtomicU64>>::default();
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let stream_failures = Family::<StreamFailureLabels, Counter>::default();
        let fair_share_rejections = Family::<FairShareLabels, Counter>::default();
        let provider_circuit_open = Family::<ProviderLabels, Gauge>::default();
        let provider_circuit_transitions = Family::<ProviderEventLabels, Counter>::default();
        let provider_skips = Family::<ProviderEventLabels, Counter>::default();
        registry.register(
            "provider_circuit_open",
            "1 while the provider's circuit breaker is open or half-open on this replica",
            provider_circuit_open.clone(),
        );
        registry.register(
            "provider_circuit_transitions",
            "Provider circuit breaker state changes, by the state entered",
            provider_circuit_transitions.clone(),
        );
        registry.register(
            "provider_skipped",
            "Attempts not made because the provider's circuit is open or its quota is spent",
            provider_skips.clone(),
        );
        let fair_queue_wait = Family::<ProviderLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let budget_decisions = Family::<BudgetLabels, Counter>::default();
        let budget_state_errors = Counter::default();
        let budget_alerts = Family::<AlertLabels, Counter>::default();
        let mcp_requests = Family::<McpLabels, Counter>::default();
        let mcp_duration = Family::<McpLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let mcp_list_failures = Family::<McpListLabels, Counter>::default();
        let mcp_agent_alerts = Family::<McpAgentLabels, Counter>::default();
        let principal_cost_usd = Family::<PrincipalLabels, Counter<f64, AtomicU64>>::default();
        let in_flight = Gauge::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let controller_connected = Gauge::default();
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections_rejected = Family::<RejectLabels, Counter>::default();
        let route_tier_decisions = Family::<TierLabels, Counter>::default();
        registry.register(
            "route_tier_decisions",
            "Smart-routing decisions by route, chosen tier and reason",
            route_tier_decisions.clone(),
        );
        let guard_decisions = Family::<GuardLabels, Counter>::default();
        registry.register(
            "guard_decisions",
            "Guard policy findings acted on, by route, policy, stage, rule and action",
            guard_decisions.clone(),
        );
        let audit_records = Counter::default();
        registry.register(
            "audit_records",
            "Audit records sealed into this replica's chain",
            audit_records.clone(),
        );
        let audit_records_lost = Counter::default();
        registry.register(
            "audit_records_lost",
            "Audit records lost before the spool: no audit log running (being reconfigured or unable to start) or its queue full",
            audit_records_lost.clone(),
        );
        let audit_spool_bytes = Gauge::default();
        registry.register(
            "audit_spool_bytes",
            "Bytes in the audit spool (bounded by spec.audit.spool.maxBytes)",
            audit_spool_bytes.clone(),
        );
        let audit_sink_delivered = Family::<AuditSinkLabels, Counter>::default();
        registry.register(
            "audit_sink_delivered_records",
            "Audit records a sink acknowledged",
            audit_sink_delivered.clone(),
        );
        let audit_sink_lost = Family::<AuditSinkLabels, Counter>::default();
        registry.register(
            "audit_sink_lost_records",
            "Audit records a sink never got: dropped from the full spool while it was down",
            audit_sink_lost.clone(),
        );
        let audit_sink_backlog = Family::<AuditSinkLabels, Gauge>::default();
        registry.register(
            "audit_sink_backlog_records",
            "Audit records spooled and not yet delivered to a sink",
            audit_sink_backlog.clone(),
        );
        let prompt_renders = Family::<PromptRenderLabels, Counter>::default();
        registry.register(
            "prompt_renders",
            "Prompt template renders by route, version and outcome",
            prompt_renders.clone(),
        );
        let prompt_context_fetches = Family::<ContextFetchLabels, Counter>::default();
        registry.register(
            "prompt_context_fetches",
            "Fetches of prompt context sources by source and outcome (cache hits are not fetches)",
            prompt_context_fetches.clone(),
        );
        let prompt_context_degraded = Family::<ContextUseLabels, Counter>::default();
        registry.register(
            "prompt_context_degraded",
            "Requests served without an optional context source (unavailable) or with the last copy of one that failed to refresh (stale), by route and source",
            prompt_context_degraded.clone(),
        );
        registry.register(
            "connections_open",
            "Open client connections by listener",
            connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed at accept (over a cap, accept errors) or for idling",
            connections_rejected.clone(),
        );
        registry.register(
            "requests",
            "Requests by endpoint, route, provider, model and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request latency, to the last byte",
            request_duration.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Streaming: time to the first forwarded chunk",
            time_to_first_token.clone(),
        );
        registry.register(
            "tokens",
            "Tokens by direction (input, output, cached_input)",
            tokens.clone(),
        );
        registry.register(
            "cost_usd",
            "Estimated cost in USD from the provider catalog prices",
            cost_usd.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream attempts (each may fall back)",
            upstream_errors.clone(),
        );
        registry.register(
            "stream_failures",
            "Streams ended badly after they started, by reason (timeout, broken_stream, truncated_stream, invalid_stream, provider_error, client_stalled)",
            stream_failures.clone(),
        );
        registry.register(
            "fair_share_rejections",
            "Requests refused a provider slot for fairness, by reason",
            fair_share_rejections.clone(),
        );
        registry.register(
            "fair_queue_wait_seconds",
            "Time a caller under its fair share waited for a full provider's slot",
            fair_queue_wait.clone(),
        );
        registry.register(
            "budget_decisions",
            "Requests a TokenBudget did not simply admit: rejected, downgraded, or over (a Warn budget)",
            budget_decisions.clone(),
        );
        registry.register(
            "budget_state_errors",
            "Budget checks that could not reach the shared state (Redis); failureMode applied",
            budget_state_errors.clone(),
        );
        registry.register(
            "budget_alerts",
            "Usage-anomaly alerts raised by this process (one per incident), by budget and kind",
            budget_alerts.clone(),
        );
        registry.register(
            "mcp_requests",
            "MCP messages by server, method, tool (calls that reached the backend) and outcome: ok, refused (by the gateway), error (the backend's), unreachable",
            mcp_requests.clone(),
        );
        registry.register(
            "mcp_request_duration_seconds",
            "Time from an MCP message to the start of its answer, same labels",
            mcp_duration.clone(),
        );
        registry.register(
            "mcp_aggregate_failures",
            "Aggregated servers (/mcp) left out of a session or a merged list, by server and method (initialize or the list)",
            mcp_list_failures.clone(),
        );
        registry.register(
            "mcp_agent_alerts",
            "Agent-behaviour anomaly alerts raised by this process (one per incident), by MCP server and kind: agentBurst, agentNewTool, agentWriteShift",
            mcp_agent_alerts.clone(),
        );
        registry.register(
            "principal_cost_usd",
            "Estimated cost in USD by the caller's team and app (keyed gateways)",
            principal_cost_usd.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        registry.register(
            "controller_connected",
            "1 while the subscription to the controller is open (controller mode)",
            controller_connected.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            time_to_first_token,
            tokens,
            cost_usd,
            upstream_errors,
            stream_failures,
            fair_share_rejections,
            fair_queue_wait,
            provider_circuit_open,
            provider_circuit_transitions,
            provider_skips,
            budget_decisions,
            budget_state_errors,
            budget_alerts,
            mcp_requests,
            mcp_duration,
            mcp_list_failures,
            mcp_agent_alerts,
            principal_cost_usd,
            in_flight,
            reloads,
            controller_connected,
            connections_open,
            connections_rejected,
            route_tier_decisions,
            guard_decisions,
            audit_records,
            audit_records_lost,
            audit_spool_bytes,
            audit_sink_delivered,
            audit_sink_lost,
            audit_sink_backlog,
            audit_seen: Default::default(),
            prompt_renders,
            prompt_context_fetches,
            prompt_context_degraded,
        }
    }

    /// A provider's breaker entered `state`.
    pub fn circuit_changed(&self, provider: &Arc<str>, state: crate::breaker::State) {
        let open = i64::from(state != crate::breaker::State::Closed);
        self.provider_circuit_open
            .get_or_create(&ProviderLabels {
                provider: provider.clone(),
            })
            .set(open);
        self.provider_circuit_transitions
            .get_or_create(&ProviderEventLabels {
                provider: provider.clone(),
                event: state.as_str(),
            })
            .inc();
    }

    pub fn count_provider_skip(&self, provider: &Arc<str>, reason: &'static str) {
        self.provider_skips
            .get_or_create(&ProviderEventLabels {
                provider: provider.clone(),
                event: reason,
            })
            .inc();
    }

    pub fn count_tier(&self, route: &Arc<str>, tier: &Arc<str>, reason: &'static str) {
        self.route_tier_decisions
            .get_or_create(&TierLabels {
                route: route.clone(),
                tier: tier.clone(),
                reason,
            })
            .inc();
    }

    pub fn count_budget(&self, budget: &Arc<str>, outcome: &'static str) {
        self.budget_decisions
            .get_or_create(&BudgetLabels {
                budget: budget.clone(),
                outcome,
            })
            .inc();
    }

    pub fn count_mcp_list_failure(&self, server: &Arc<str>, method: &'static str) {
        self.mcp_list_failures
            .get_or_create(&McpListLabels {
                server: server.clone(),
                method,
            })
            .inc();
    }

    pub fn count_mcp(&self, labels: &McpLabels, elapsed: std::time::Duration) {
        self.mcp_requests.get_or_create(labels).inc();
        self.mcp_duration
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn count_mcp_agent_alert(&self, server: &str, kind: &str) {
        self.mcp_agent_alerts
            .get_or_create(&McpAgentLabels {
                server: server.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn count_alert(&self, budget: &str, kind: &str) {
        self.budget_alerts
            .get_or_create(&AlertLabels {
                budget: budget.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The text exposition format.
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
