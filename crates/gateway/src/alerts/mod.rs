//! Usage-anomaly alerts of TokenBudgets: spikes against a learned baseline
//! ([`detector`]) and soft-threshold crossings, raised once per incident.
//!
//! An alert is counted (`tollgate_budget_alerts_total`), logged, queued for
//! the controller (which records a Warning Event on the TokenBudget and calls
//! the webhook, once for all replicas) and, when no controller is in charge
//! (file mode), POSTed to the budget's webhook from here.
//!
//! A budget with `alerts.throttleOffender` also marks the member whose spike
//! it was as an offender: admission then holds it to that rate
//! ([`AlertHub::offender_since`]) until the budget's
//! `tollgate.dev/throttle-cleared-at` annotation names a later time.

pub mod agent;
pub mod detector;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use tollgate_config::egress::EgressPolicy;
use tollgate_config::snapshot::budget::{AlertPolicy, Webhook};

use crate::metrics::Metrics;
use crate::providers::http::{Clients, send};
use agent::AgentTracker;
use detector::Tracker;
use tollgate_api::mcp::AnomalyAction;
use tollgate_config::snapshot::McpServer;

/// Alerts kept for the controller between two usage reports.
const MAX_PENDING: usize = 100;
/// How long a webhook may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

pub use tollgate_config::push::BudgetAlert as Alert;

#[derive(Default)]
pub struct AlertHub {
    trackers: Mutex<HashMap<(Arc<str>, String), Tracker>>,
    /// Soft thresholds already reported, until their window ends.
    crossed: Mutex<HashMap<String, i64>>,
    pending: Mutex<Vec<Alert>>,
    /// Off when a controller delivers webhooks (once for every replica).
    controller_delivers: AtomicBool,
    /// `budget|member` → when its spike alert throttled it (Unix ms).
    offenders: Mutex<HashMap<String, i64>>,
    /// Whether `offenders` may hold anything: admission skips the lock
    /// while nobody is throttled.
    any_offender: AtomicBool,
    /// Per (MCPServer, agent): its tool-call behaviour.
    agents: Mutex<HashMap<(Arc<str>, String), AgentTracker>>,
    /// `server|agent` → when an anomaly held it back (Unix ms).
    held_agents: Mutex<HashMap<String, i64>>,
}

/// Agents watched at most per replica.
const MAX_AGENTS: usize = 100_000;

/// Who calls: the identity behaviour is tracked by, and how alerts name it.
pub struct AgentRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// Why an agent's call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Suspended { since: i64 },
    Throttled { retry_after_ms: i64 },
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What raising an alert needs besides the alert.
pub struct Context<'a> {
    pub metrics: &'a Metrics,
    pub clients: &'a Clients,
    /// `namespace/name` of the AIGateway, for webhook bodies.
    pub gateway: &'a str,
}

impl AlertHub {
    /// The controller takes over webhooks and Events (controller mode).
    pub fn set_controller_delivers(&self, yes: bool) {
        self.controller_delivers.store(yes, Ordering::Relaxed);
    }

    /// Counts a settled request's tokens for spike detection.
    pub fn record_usage(
        &self,
        cx: &Context<'_>,
        budget: &Arc<str>,
        member: &str,
        policy: &AlertPolicy,
        tokens: u64,
        now_ms: i64,
    ) {
        let spike = {
            let mut trackers = lock(&self.trackers);
            trackers
                .entry((budget.clone(), member.to_string()))
                .or_insert_with(|| Tracker::new(policy, now_ms))
                .record(tokens, now_ms)
        };
        if let Some(spike) = spike {
            let who = if member.is_empty() {
                String::new()
            } else {
                format!(" by {member}")
            };
            let interval_s = policy.interval_ms as f64 / 1000.0;
            let mut message = format!(
                "Budget {budget}: token use{who} spiked to {} tokens in the current {interval_s}s interval, over {}x its baseline of {:.0}",
                spike.tokens, spike.factor, spike.baseline
            );
            if policy.throttle_offender.is_some() {
                lock(&self.offenders).insert(offender_key(budget, member), now_ms);
                self.any_offender.store(true, Ordering::Release);
                message.push_str(&format!(
                    ". Throttled to its offender rate until cleared: set annotation {} on the TokenBudget to a time after this alert",
                    tollgate_api::budget::THROTTLE_CLEARED_AT_ANNOTATION
                ));
            }
            self.raise(
                cx,
                Alert {
                    kind: "spike".into(),
                    budget: budget.to_string(),
                    member: member.to_string(),
                    detail: if policy.throttle_offender.is_some() {
                        "throttled".into()
                    } else {
                        String::new()
                    },
                    message,
                    at_ms: now_ms,
                    mcp_server: String::new(),
                },
                policy.webhook.as_ref(),
            );
        }
    }

    /// When `member` of `budget` was throttled for a spike, unless it has
    /// been released since: `cleared_at_ms` (the budget's annotation) at or
    /// after that time releases it for good.
    pub fn offender_since(
        &self,
        budget: &str,
        member: &str,
        cleared_at_ms: Option<i64>,
    ) -> Option<i64> {
        if !self.any_offender.load(Ordering::Acquire) {
            return None;
        }
        let mut offenders = lock(&self.offenders);
        let key = offender_key(budget, member);
        let since = *offenders.get(&key)?;
        if cleared_at_ms.is_some_and(|cleared| since <= cleared) {
            offenders.remove(&key);
            if offenders.is_empty() {
                self.any_offender.store(false, Ordering::Release);
            }
            tracing::info!(%budget, %member, "offender released by the throttle-cleared-at annotation");
            return None;
        }
        Some(since)
    }

    /// Counts an agent's tool call on an MCPServer with anomaly detection:
    /// `Err` when the agent is held back (suspended, or throttled to its
    /// usual rate) after an earlier anomaly; an anomaly raises one alert per
    /// incident and, per the policy, holds the agent from now on.
    pub fn record_agent_call(
        &self,
        cx: &Context<'_>,
        server: &McpServer,
        agent: &AgentRef<'_>,
        call: (&str, bool),
        now_ms: i64,
    ) -> Result<(), Held> {
        let Some(policy) = &server.anomalies else {
            return Ok(());
        };
        let (tool, write) = call;
        let key = (server.name.clone(), agent.id.to_string());
        let held_key = format!("{}|{}", server.name, agent.id);
        let held_since = lock(&self.held_agents).get(&held_key).copied();
        if let Some(since) = held_since {
            if policy.cleared_at_ms.is_some_and(|cleared| since <= cleared) {
                lock(&self.held_agents).remove(&held_key);
                tracing::info!(server = %server.name, agent = agent.name, "agent released by the agents-cleared-at annotation");
            } else {
                match policy.action {
                    AnomalyAction::Suspend => return Err(Held::Suspended { since }),
                    AnomalyAction::Throttle => {
                        let mut agents = lock(&self.agents);
                        let tracker = agents
                            .entry(key.clone())
                            .or_insert_with(|| AgentTracker::new(policy, now_ms));
                        if tracker.calls_now(now_ms) >= tracker.usual_calls() {
                            let interval =
                                i64::try_from(policy.interval_ms).unwrap_or(i64::MAX).max(1);
                            let retry_after_ms = interval - now_ms.rem_euclid(interval);
                            return Err(Held::Throttled { retry_after_ms });
                        }
                    }
                    AnomalyAction::Alert => {}
                }
            }
        }
        let anomaly = {
            let mut agents = lock(&self.agents);
            if agents.len() >= MAX_AGENTS && !agents.contains_key(&key) {
                // Past the bound, new agents go unwatched rather than grow memory.
                return Ok(());
            }
            agents
                .entry(key)
                .or_insert_with(|| AgentTracker::new(policy, now_ms))
                .record(tool, write, now_ms)
        };
        let Some(anomaly) = anomaly else {
            return Ok(());
        };
        let mut message = format!(
            "MCP server {}: agent {} made {}",
            server.name,
            agent.name,
            anomaly.describe()
        );
        match policy.action {
            AnomalyAction::Alert => {}
            action => {
                lock(&self.held_agents).insert(held_key, now_ms);
                message.push_str(&format!(
                    ". {} until cleared: set annotation {} on the MCPServer to a time after this alert",
                    if action == AnomalyAction::Suspend { "Suspended" } else { "Throttled to its usual rate" },
                    tollgate_api::mcp::AGENTS_CLEARED_AT_ANNOTATION
                ));
            }
        }
        self.raise(
            cx,
            Alert {
                kind: anomaly.kind().into(),
                budget: String::new(),
                member: agent.name.to_string(),
                detail: String::new(),
                message,
                at_ms: now_ms,
                mcp_server: server.name.to_string(),
            },
            policy.webhook.as_ref(),
        );
        Ok(())
    }

    /// A counter went from `before` to `after` of `limit`: reports each of
    /// `thresholds` (percent) it crossed, once per window (`window_end_ms`).
    #[allow(clippy::too_many_arguments)]
    pub fn soft_thresholds(
        &self,
        cx: &Context<'_>,
        counter: &str,
        (before, after, limit): (u64, u64, u64),
        thresholds: &[u32],
        window_end_ms: i64,
        webhook: Option<&Webhook>,
        now_ms: i64,
    ) {
        for &percent in thresholds {
            let mark = u128::from(limit) * u128::from(percent);
            let crossed = u128::from(before) * 100 < mark && u128::from(after) * 100 >= mark;
            if !crossed {
                continue;
            }
            let id = format!("{counter}@{percent}%");
            {
                let mut seen = lock(&self.crossed);
                seen.retain(|_, end| *end > now_ms);
                if seen.contains_key(&id) {
                    continue;
                }
                seen.insert(id.clone(), window_end_ms);
            }
            let key = tollgate_config::snapshot::budget::CounterKey::parse(counter);
            let (budget, member, what) = key.map_or((counter, "", String::new()), |k| {
                (
                    k.budget,
                    k.member,
                    format!(" {} of its {} window", k.metric.spec_name(), k.span.label()),
                )
            });
            self.raise(
                cx,
                Alert {
                    kind: "softThreshold".into(),
                    budget: budget.to_string(),
                    member: member.to_string(),
                    detail: id,
                    message: format!(
                        "Budget {budget}: {percent}% of the limit{what} reached ({after} of {limit}){}",
                        if member.is_empty() { String::new() } else { format!(" by {member}") }
                    ),
                    at_ms: now_ms,
                    mcp_server: String::new(),
                },
                webhook,
            );
        }
    }

    fn raise(&self, cx: &Context<'_>, alert: Alert, webhook: Option<&Webhook>) {
        if alert.mcp_server.is_empty() {
            cx.metrics.count_alert(&alert.budget, &alert.kind);
            tracing::warn!(budget = %alert.budget, member = %alert.member, kind = %alert.kind, "{}", alert.message);
        } else {
            cx.metrics
                .count_mcp_agent_alert(&alert.mcp_server, &alert.kind);
            tracing::warn!(server = %alert.mcp_server, agent = %alert.member, kind = %alert.kind, "{}", alert.message);
        }
        if let Some(webhook) = webhook
            && !self.controller_delivers.load(Ordering::Relaxed)
        {
            deliver(
                cx.clients,
                webhook,
                alert.webhook_body(cx.gateway, webhook.slack),
            );
        }
        let mut pending = lock(&self.pending);
        if pending.len() < MAX_PENDING {
            pending.push(alert);
        }
    }

    /// The alerts raised since the last call.
    pub fn drain(&self) -> Vec<Alert> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

fn offender_key(budget: &str, member: &str) -> String {
    format!("{budget}|{member}")
}

/// POSTs `body` to the webhook in the background; a failure is logged.
pub fn deliver(clients: &Clients, webhook: &Webhook, body: Vec<u8>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // Alert receivers often run in the cluster; cloud metadata stays out of reach.
    let policy = EgressPolicy {
        allow_loopback: true,
        allow_link_local: false,
    };
    let client = clients.pooled(WEBHOOK_TIMEOUT.as_millis() as u64, policy);
    let url = webhook.url.clone();
    let request = Request::post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)));
    let Ok(request) = request else {
        tracing::warn!(%url, "alert webhook URL is not usable");
        return;
    };
    runtime.spawn(async move {
        let deadline = tokio::time::Instant::now() + WEBHOOK_TIMEOUT;
        match send(client, request, deadline).await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(%url, status = %response.status(), "alert webhook refused the alert")
            }
            Err(error) => tracing::warn!(%url, %error, "alert webhook failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_bodies_are_the_alert_or_slack_text() {
        let alert = Alert {
            kind: "spike".into(),
            budget: "ns/b".into(),
            member: "bot".into(),
            detail: String::new(),
            message: "Budget ns/b: token use by bot spiked".into(),
            at_ms: 7,
            mcp_server: String::new(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&alert.webhook_body("ns/gw", false)).unwrap();
        assert_eq!(json["budget"], "ns/b");
        assert_eq!(json["member"], "bot");
        assert_eq!(json["gateway"], "ns/gw");
        let slack: serde_json::Value =
            serde_json::from_slice(&alert.webhook_body("ns/gw", true)).unwrap();
        assert_eq!(
            slack,
            serde_json::json!({"text": "Tollgate ns/gw: Budget ns/b: token use by bot spiked"})
        );
    }
}
