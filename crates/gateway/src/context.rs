//! `RequestContext`: what one request carries from its first stage to the
//! last (principal, endpoint, route, attempts, usage, timings, cost), and
//! `settle`, the one place every exit goes through: a full response, an
//! error, a stream's end, a broken stream, or a client that went away.

use std::sync::{Arc, LazyLock};

use tokio::time::Instant;
use tollgate_config::snapshot::{Pricing, Principal};
use tollgate_llm::Usage;

use crate::dialect::Endpoint;
use crate::llm::admit::{Admission, Amounts};
use crate::metrics::{RequestLabels, TokenLabels, UpstreamErrorLabels, UsageLabels};
use crate::runtime::Gateway;

/// Status recorded for a request whose client disconnected before the end.
pub const CLIENT_CLOSED: u16 = 499;

/// The label of a stage not reached; one shared allocation.
fn empty() -> Arc<str> {
    static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// One try of one backend.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    /// Why the attempt did not answer (`None` while running or when it did).
    pub failure: Option<&'static str>,
    pub started: Instant,
}

pub struct RequestContext {
    pub gateway: Arc<Gateway>,
    pub endpoint: Endpoint,
    pub started: Instant,
    /// Who is asking; `None` on an open gateway.
    pub principal: Option<Arc<Principal>>,
    /// `namespace/name` of the AIRoute, once routed (empty before).
    pub route: Arc<str>,
    /// Every backend tried, in order; the last one is the one answering.
    pub attempts: Vec<Attempt>,
    /// Price of the answering backend's model, when the catalog has it.
    pub pricing: Option<Pricing>,
    pub usage: Option<Usage>,
    /// When the first byte of the answer went to the client.
    pub first_output: Option<Instant>,
    /// The budget reservation, settled with the actual usage.
    pub admission: Option<Admission>,
    /// The route's guard policy at work (guarded routes only).
    pub guard: Option<Box<crate::llm::guard::GuardState>>,
    /// What the request's audit record captures (`spec.audit` only).
    pub audit: Option<Box<crate::audit::Capture>>,
    settled: bool,
}

impl RequestContext {
    pub fn new(gateway: Arc<Gateway>, endpoint: Endpoint) -> Self {
        gateway.metrics.in_flight.inc();
        Self {
            gateway: gateway.clone(),
            endpoint,
            started: Instant::now(),
            principal: None,
            route: empty(),
            attempts: Vec::new(),
            pricing: None,
            usage: None,
            first_output: None,
            admission: None,
            guard: None,
            audit: gateway
                .audit
                .current()
                .map(|auditor| Box::new(crate::audit::Capture::new(auditor))),
            settled: false,
        }
    }

    /// Starts an attempt on `provider` / `model`.
    pub fn attempt(&mut self, provider: &Arc<str>, model: Arc<str>, pricing: Option<Pricing>) {
        self.pricing = pricing;
        self.attempts.push(Attempt {
            provider: provider.clone(),
            model,
            failure: None,
            started: Instant::now(),
        });
    }

    /// The current attempt failed for `reason` (counted per provider).
    pub fn attempt_failed(&mut self, reason: &'static str) {
        let Some(attempt) = self.attempts.last_mut() else {
            return;
        };
        attempt.failure = Some(reason);
        let labels = UpstreamErrorLabels {
            provider: attempt.provider.clone(),
            reason,
        };
        self.gateway
            .metrics
            .upstream_errors
            .get_or_create(&labels)
            .inc();
    }

    /// The answering (or last tried) provider; empty before any attempt.
    pub fn provider(&self) -> Arc<str> {
        self.attempts
            .last()
            .map_or_else(empty, |a| a.provider.clone())
    }

    /// The model asked of [`Self::provider`]; empty before any attempt.
    pub fn model(&self) -> Arc<str> {
        self.attempts.last().map_or_else(empty, |a| a.model.clone())
    }

    pub fn usage_labels(&self) -> UsageLabels {
        UsageLabels {
            route: self.route.clone(),
            provider: self.provider(),
            model: self.model(),
        }
    }

    /// A stream that ended badly after it started, by why.
    pub fn count_stream_failure(&self, reason: &'static str) {
        self.gateway
            .metrics
            .stream_failures
            .get_or_create(&crate::metrics::StreamFailureLabels {
                endpoint: self.endpoint.label(),
                reason,
            })
            .inc();
    }

    /// The first byte of the answer is going out now.
    pub fn output_started(&mut self) {
        if self.first_output.is_none() {
            let now = Instant::now();
            self.first_output = Some(now);
            self.gateway
                .metrics
                .time_to_first_token
                .get_or_create(&self.usage_labels())
                .observe((now - self.started).as_secs_f64());
        }
    }

    /// Records the request's outcome exactly once: status, latency, tokens
    /// and cost. Later calls are no-ops, so every exit may call it.
    pub fn settle(&mut self, status: u16) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.settle_budgets(status);
        if let Some(capture) = self.audit.take() {
            self.write_audit(&capture, status);
        }
        let metrics = &self.gateway.metrics;
        if let Some(guard) = &self.guard {
            guard.count(metrics, &self.route);
        }
        let labels = RequestLabels {
            endpoint: self.endpoint.label(),
            route: self.route.clone(),
            provider: self.provider(),
            model: self.model(),
            status,
        };
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .request_duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        let Some(usage) = self.usage else {
            self.record_principal_usage(0, 0, 0.0);
            return;
        };
        let cached = usage.cached_tokens();
        for (direction, count) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
            ("cached_input", cached),
        ] {
            if count > 0 {
                let labels = TokenLabels {
                    route: self.route.clone(),
                    provider: self.provider(),
                    model: self.model(),
                    direction,
                };
                metrics.tokens.get_or_create(&labels).inc_by(count);
            }
        }
        let mut cost = 0.0;
        if let Some(pricing) = self.pricing {
            cost = pricing.cost(usage.prompt_tokens, cached, usage.completion_tokens);
            metrics
                .cost_usd
                .get_or_create(&self.usage_labels())
                .inc_by(cost);
        }
        self.record_principal_usage(usage.prompt_tokens, usage.completion_tokens, cost);
    }

    /// The request's audit record: who, what, the guard's decisions,
    /// tokens, cost, latency, and the bodies' hashes (and content).
    fn write_audit(&self, capture: &crate::audit::Capture, status: u16) {
        use serde_json::{Value, json};
        let mut record = serde_json::Map::new();
        record.insert("kind".into(), json!("llm.request"));
        record.insert(
            "principal".into(),
            match &self.principal {
                Some(p) => json!({"user": p.user, "team": p.team, "app": p.app, "key": p.key}),
                None => Value::Null,
            },
        );
        record.insert("endpoint".into(), json!(self.endpoint.label()));
        record.insert("route".into(), json!(&*self.route));
        record.insert("provider".into(), json!(&*self.provider()));
        record.insert("model".into(), json!(&*self.model()));
        record.insert("status".into(), json!(status));
        let failed: Vec<Value> = self
            .attempts
            .iter()
            .filter_map(|a| {
                a.failure
                    .map(|f| json!({"provider": &*a.provider, "model": &*a.model, "failure": f}))
            })
            .collect();
        if !failed.is_empty() {
            record.insert("failedAttempts".into(), Value::Array(failed));
        }
        let decision = match &self.guard {
            None => "allowed",
            Some(guard) => {
                let actions = |action: &str| guard.decisions.iter().any(|d| d.action == action);
                let decisions: Vec<Value> = guard
                    .decisions
                    .iter()
                    .map(|d| json!({"stage": d.stage, "rule": &*d.rule, "action": d.action, "count": d.count}))
                    .collect();
                record.insert(
                    "guard".into(),
                    json!({"policy": guard.policy.name, "decisions": decisions}),
                );
                if actions("block") {
                    "blocked"
                } else if actions("redact") || actions("mask") {
                    "redacted"
                } else if actions("flag") {
                    "flagged"
                } else {
                    "allowed"
                }
            }
        };
        record.insert("decision".into(), json!(decision));
        if let Some(usage) = &self.usage {
            let cached = usage.cached_tokens();
            record.insert(
                "tokens".into(),
                json!({"input": usage.prompt_tokens, "output": usage.completion_tokens, "cachedInput": cached}),
            );
            if let Some(pricing) = self.pricing {
                // A decimal string: floats do not survive every JSON
                // round trip bit for bit, and the record's hash covers it.
                let cost = pricing.cost(usage.prompt_tokens, cached, usage.completion_tokens);
                record.insert("costUsd".into(), json!(format!("{cost:.9}")));
            }
        }
        // Whole microseconds: integers hash the same after any re-encoding.
        record.insert(
            "latencyUs".into(),
            json!(self.started.elapsed().as_micros() as u64),
        );
        if let Some(first) = self.first_output {
            record.insert(
                "ttftUs".into(),
                json!((first - self.started).as_micros() as u64),
            );
        }
        capture.fields(&mut record);
        capture.auditor.record(record);
    }

    /// Cost by who asked, for `/v1/usage` and the per-team metric; nothing
    /// on an open gateway.
    fn record_principal_usage(&self, input_tokens: u64, output_tokens: u64, cost_usd: f64) {
        let Some(principal) = &self.principal else {
            return;
        };
        let (provider, model) = (self.provider(), self.model());
        self.gateway.usage.record(
            crate::usage::Entry {
                principal,
                route: &self.route,
                provider: &provider,
                model: &model,
                input_tokens,
                output_tokens,
                cost_usd,
            },
            crate::state::window::now_ms(),
        );
        if cost_usd > 0.0 {
            self.gateway
                .metrics
                .principal_cost_usd
                .get_or_create(&crate::metrics::PrincipalLabels {
                    team: principal.team.clone().unwrap_or_default(),
                    app: principal.app.clone().unwrap_or_default(),
                })
                .inc_by(cost_usd);
        }
    }
}

impl RequestContext {
    /// Replaces the reservation with what the request used: the provider's
    /// usage when it reported any; nothing for a failure that sent the
    /// client nothing; the whole estimate otherwise (a stream cut off
    /// before its usage arrived: the provider may have produced it all).
    fn settle_budgets(&mut self, status: u16) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let used = match &self.usage {
            Some(usage) => Amounts::actual(usage, self.pricing),
            None if status >= 400 && self.first_output.is_none() => Amounts::default(),
            None => admission.estimate,
        };
        admission.settle(used, &self.gateway);
    }
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        // Settled already unless the client went away before the end.
        self.settle(CLIENT_CLOSED);
        self.gateway.metrics.in_flight.dec();
    }
}
