//! Stage `admit`: reserve the request's estimated cost against every
//! TokenBudget that applies to its principal, before anything goes upstream.
//!
//! The estimate is an upper bound where the request allows one: prompt
//! tokens from the text ([`super::tokens::estimate`], with the tokenizer of
//! the route's first backend), output tokens from
//! the request's own cap (`max_tokens` and kin) or the budget's
//! `defaultMaxOutputTokens`, cost at the dearest price among the route's
//! backends. All budgets admit the request or none is charged (one atomic
//! step in [`crate::state`]); the context settles the charges with the
//! provider's actual usage when the answer ends, whichever way it ends.

use std::sync::Arc;

use tollgate_config::snapshot::budget::{
    AlertPolicy, Budget, CounterKey, Metric, OnExceed, RateLimit,
};
use tollgate_config::snapshot::{Pricing, Principal, Route};
use tollgate_llm::Usage;

use super::ingress::Inbound;
use super::tokens::Tokenizer;
use crate::alerts;
use crate::context::RequestContext;
use crate::dialect::Endpoint;
use crate::error::ApiError;
use crate::runtime::{Gateway, Runtime};
use crate::state::redis::RedisStateError;
use crate::state::throttle::Take;
use crate::state::{Charge, Check, Span, Store, Verdict, window};

/// A request's cost in every unit a budget can count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micro_usd: u64,
    pub requests: u64,
}

impl Amounts {
    pub fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::InputTokens => self.input_tokens,
            Metric::OutputTokens => self.output_tokens,
            Metric::TotalTokens => self.input_tokens + self.output_tokens,
            Metric::CostMicroUsd => self.cost_micro_usd,
            Metric::Requests => self.requests,
        }
    }

    /// What a finished request used, from the provider's usage.
    pub fn actual(usage: &Usage, pricing: Option<Pricing>) -> Self {
        let cost = pricing.map_or(0.0, |p| {
            p.cost(
                usage.prompt_tokens,
                usage.cached_tokens(),
                usage.completion_tokens,
            )
        });
        Self {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cost_micro_usd: micro_usd(cost),
            requests: 1,
        }
    }
}

/// Dollars to whole millionths, rounded up so estimates stay upper bounds.
fn micro_usd(dollars: f64) -> u64 {
    (dollars * 1_000_000.0).ceil().max(0.0) as u64
}

/// The reservation a request holds until it settles.
#[derive(Debug)]
pub struct Admission {
    store: Store,
    charges: Vec<Charge>,
    /// The metric of each charge, in order.
    metrics: Vec<Metric>,
    pub estimate: Amounts,
    /// Budgets watching for spikes: (budget, member, policy).
    watched: Vec<(Arc<str>, String, Arc<AlertPolicy>)>,
    /// Token buckets (tokens per minute) to settle with the actual count.
    token_takes: Vec<Take>,
    /// Output tokens a stream may generate before a budget ends it: set
    /// when the request has no output cap of its own (the provider enforces
    /// one it has) and a budget with `streams: Cut` applies.
    pub stream_allowance: Option<u64>,
}

impl Admission {
    /// Replaces the estimate with what the request used, and feeds the
    /// spike detectors.
    pub fn settle(self, used: Amounts, gateway: &Gateway) {
        let actual = self.metrics.iter().map(|m| used.get(*m)).collect();
        let tokens = used.input_tokens + used.output_tokens;
        self.store
            .settle(self.charges, actual, &self.token_takes, tokens);
        if self.watched.is_empty() {
            return;
        }
        let name = gateway
            .runtime()
            .map(|r| gateway_name(&r))
            .unwrap_or_default();
        let cx = alerts::Context {
            metrics: &gateway.metrics,
            clients: &gateway.clients,
            gateway: &name,
        };
        let tokens = used.input_tokens + used.output_tokens;
        let now = window::now_ms();
        for (budget, member, policy) in &self.watched {
            gateway
                .alerts
                .record_usage(&cx, budget, member, policy, tokens, now);
        }
    }
}

/// What admission decided beyond the reservation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// A Downgrade budget is spent: serve this model alias instead.
    pub downgrade_to: Option<String>,
}

/// One check's origin, for messages and metrics.
struct Origin<'b> {
    budget: &'b Budget,
    span: Span,
    metric: Metric,
}

/// Reserves `inbound`'s estimate against the budgets that apply. `Ok` with
/// the admission on the context; `Err` when a rejecting budget is spent.
pub async fn admit(
    context: &mut RequestContext,
    runtime: &Runtime,
    route: &Route,
    inbound: &Inbound<'_>,
) -> Result<Decision, ApiError> {
    let budgets = &runtime.snapshot.config.budgets;
    let principal = context.principal.as_deref();
    let applicable: Vec<&Budget> = budgets
        .iter()
        .filter(|b| b.subject.matches(principal))
        .collect();
    if applicable.is_empty() {
        return Ok(Decision::default());
    }
    let (estimate, capped) = estimate(inbound, &applicable, route_profile(runtime, route, inbound));
    let now = window::now_ms();
    let takes = throttle_takes(&applicable, principal, estimate, &context.gateway.alerts);
    let (checks, origins) = checks(&applicable, principal, estimate);
    let store = &runtime.budget_store;
    let verdict = match store.reserve(&checks, &takes, now).await {
        Ok(verdict) => verdict,
        Err(error) => return state_unavailable(context, &applicable, &error),
    };
    match verdict {
        Verdict::Throttled {
            bucket,
            retry_after_ms,
        } => {
            let seconds = u64::try_from(retry_after_ms)
                .unwrap_or(1)
                .div_ceil(1000)
                .max(1);
            let key = takes.get(bucket).map_or("", |t| &*t.key);
            let budget = key.split('|').next().unwrap_or_default();
            let offender = key
                .rsplit('|')
                .next()
                .is_some_and(|k| k.starts_with(OFFENDER));
            let (decision, message) = if offender {
                (
                    "offender_throttled",
                    format!(
                        "Budget {budget} holds this caller to a reduced rate after a usage spike, until an operator clears it. Retry in {seconds} s."
                    ),
                )
            } else {
                (
                    "throttled",
                    format!(
                        "Rate limit of budget {budget} reached for this caller. Retry in {seconds} s."
                    ),
                )
            };
            context
                .gateway
                .metrics
                .count_budget(&Arc::from(budget), decision);
            Err(ApiError::budget_exceeded(message, seconds).with_code("rate_limited"))
        }
        Verdict::Refused {
            failing,
            used,
            retry_after_ms,
        } => {
            let origin = &origins[failing];
            context
                .gateway
                .metrics
                .count_budget(&origin.budget.name, "rejected");
            Err(refusal(origin, &checks[failing], used, retry_after_ms))
        }
        Verdict::Admitted {
            charges,
            over,
            used,
        } => {
            report_soft_thresholds(context, runtime, &checks, &origins, &used, now);
            let mut decision = Decision::default();
            for index in over {
                let origin = &origins[index];
                match &origin.budget.on_exceed {
                    OnExceed::Downgrade { model } => {
                        context
                            .gateway
                            .metrics
                            .count_budget(&origin.budget.name, "downgraded");
                        decision.downgrade_to.get_or_insert_with(|| model.clone());
                    }
                    _ => {
                        context
                            .gateway
                            .metrics
                            .count_budget(&origin.budget.name, "over");
                        tracing::warn!(
                            budget = %origin.budget.name,
                            window = %origin.span.label(),
                            metric = origin.metric.spec_name(),
                            limit = checks[index].limit,
                            "request admitted past a Warn budget"
                        );
                    }
                }
            }
            let watched = applicable
                .iter()
                .filter_map(|b| {
                    let policy = b.alerts.clone()?;
                    Some((
                        b.name.clone(),
                        b.subject.member(principal).to_string(),
                        policy,
                    ))
                })
                .collect();
            context.admission = Some(Admission {
                store: store.clone(),
                charges,
                metrics: origins.iter().map(|o| o.metric).collect(),
                estimate,
                watched,
                token_takes: takes
                    .into_iter()
                    .filter(|t| t.key.ends_with("tokens"))
                    .collect(),
                stream_allowance: (!capped
                    && applicable
                        .iter()
                        .any(|b| b.cut_streams && !b.limits.is_empty()))
                .then_some(estimate.output_tokens),
            });
            Ok(decision)
        }
    }
}

/// Soft thresholds the reservation just crossed, reported once per window.
fn report_soft_thresholds(
    context: &RequestContext,
    runtime: &Runtime,
    checks: &[Check],
    origins: &[Origin<'_>],
    used: &[u64],
    now: i64,
) {
    if origins.iter().all(|o| o.budget.soft_thresholds.is_empty()) {
        return;
    }
    let gateway = &context.gateway;
    let name = gateway_name(runtime);
    let cx = alerts::Context {
        metrics: &gateway.metrics,
        clients: &gateway.clients,
        gateway: &name,
    };
    for ((check, origin), &after) in checks.iter().zip(origins).zip(used) {
        let budget = origin.budget;
        if budget.soft_thresholds.is_empty() {
            continue;
        }
        let before = after.saturating_sub(check.amount);
        let window_end = check.span.expires_ms(check.span.slot(now));
        let webhook = budget.alerts.as_ref().and_then(|a| a.webhook.as_ref());
        gateway.alerts.soft_thresholds(
            &cx,
            &check.key,
            (before, after, check.limit),
            &budget.soft_thresholds,
            window_end,
            webhook,
            now,
        );
    }
}

/// `namespace/name` of the gateway, for alerts.
pub fn gateway_name(runtime: &Runtime) -> String {
    let gateway = &runtime.snapshot.config.gateway;
    format!("{}/{}", gateway.namespace, gateway.name)
}

/// The shared state could not be asked: each budget's `failureMode`
/// decides. One `Closed` budget refuses the request (503); otherwise it goes
/// ahead uncounted.
fn state_unavailable(
    context: &RequestContext,
    applicable: &[&Budget],
    error: &RedisStateError,
) -> Result<Decision, ApiError> {
    let metrics = &context.gateway.metrics;
    metrics.budget_state_errors.inc();
    let closed = applicable.iter().find(|b| b.fail_closed);
    if context.gateway.log_throttle.allow() {
        tracing::warn!(
            %error,
            refused = closed.is_some(),
            "budget state unreachable; applying the budgets' failureMode (logged at most every few seconds)"
        );
    }
    match closed {
        Some(budget) => {
            metrics.count_budget(&budget.name, "unavailable");
            Err(ApiError::unavailable(format!(
                "Budget {} cannot be checked right now (its state store is unreachable) and is configured to fail closed. Retry shortly.",
                budget.name
            )))
        }
        None => {
            for budget in applicable {
                metrics.count_budget(&budget.name, "uncounted");
            }
            Ok(Decision::default())
        }
    }
}

/// Prefix of the buckets that hold an offender after its spike.
const OFFENDER: &str = "offender-";

/// The buckets of applicable budgets' rate limits (and of offender
/// throttles, for members a spike alert marked): one request, and the
/// estimated tokens.
fn throttle_takes(
    budgets: &[&Budget],
    principal: Option<&Principal>,
    estimate: Amounts,
    alerts: &alerts::AlertHub,
) -> Vec<Take> {
    let mut takes = Vec::new();
    for budget in budgets {
        let member = budget.subject.member(principal);
        let mut push = |limit: RateLimit, prefix: &str| {
            let tokens = (estimate.input_tokens + estimate.output_tokens) as f64;
            for (bucket, what, amount) in [
                (limit.requests, "requests", 1.0),
                (limit.tokens, "tokens", tokens),
            ] {
                if let Some(bucket) = bucket {
                    takes.push(Take {
                        key: Arc::from(format!("{}|{member}|{prefix}{what}", budget.name)),
                        bucket,
                        amount,
                    });
                }
            }
        };
        if let Some(limit) = budget.rate_limit {
            push(limit, "");
        }
        if let Some(limit) = budget.alerts.as_ref().and_then(|a| a.throttle_offender)
            && alerts
                .offender_since(&budget.name, member, budget.throttle_cleared_at_ms)
                .is_some()
        {
            push(limit, OFFENDER);
        }
    }
    takes
}

/// One check per cap of every limit of every applicable budget.
fn checks<'b>(
    budgets: &[&'b Budget],
    principal: Option<&Principal>,
    estimate: Amounts,
) -> (Vec<Check>, Vec<Origin<'b>>) {
    let mut checks = Vec::new();
    let mut origins = Vec::new();
    for &budget in budgets {
        let member = budget.subject.member(principal);
        let enforce = budget.on_exceed == OnExceed::Reject;
        for limit in &budget.limits {
            let span = Span::new(limit.window, limit.rolling);
            for &(metric, cap) in &limit.caps {
                checks.push(Check {
                    key: Arc::from(CounterKey::new(&budget.name, member, span, metric).to_string()),
                    span,
                    amount: estimate.get(metric),
                    limit: cap,
                    enforce,
                });
                origins.push(Origin {
                    budget,
                    span,
                    metric,
                });
            }
        }
    }
    (checks, origins)
}

fn refusal(origin: &Origin<'_>, check: &Check, used: u64, retry_after_ms: Option<i64>) -> ApiError {
    let metric = origin.metric;
    let show = |n: u64| metric.with_unit(n);
    let window = origin.span.label();
    let budget = &origin.budget.name;
    match retry_after_ms {
        Some(ms) => {
            let seconds = u64::try_from(ms).unwrap_or(1).div_ceil(1000).max(1);
            ApiError::budget_exceeded(
                format!(
                    "Budget {budget} is spent for this {window} window: {} of {} used, and this request may need up to {}. Retry in {seconds} s.",
                    show(used),
                    show(check.limit),
                    show(check.amount),
                ),
                seconds,
            )
        }
        None => ApiError::invalid_request(
            "request_exceeds_budget",
            format!(
                "This request may need up to {}, more than budget {budget} allows per {window} ({}). Lower max_tokens or shorten the prompt.",
                show(check.amount),
                show(check.limit),
            ),
        ),
    }
}

/// The most any backend of `route` charges per input and output token, and
/// the tokenizer of its first backend (the one tried first unless weights
/// say otherwise; fallbacks are counted as it counts).
fn route_profile(runtime: &Runtime, route: &Route, inbound: &Inbound<'_>) -> (Pricing, Tokenizer) {
    let mut max = Pricing::default();
    let mut tokenizer = None;
    for backend in &route.backends {
        let upstream = &runtime.upstreams[backend.provider];
        let model = if backend.pass_model {
            inbound.payload.model.as_str()
        } else {
            &backend.model
        };
        tokenizer.get_or_insert_with(|| Tokenizer::for_model(upstream.config.provider_type, model));
        if let Some(entry) = upstream.config.models.get(model) {
            let p = entry.pricing;
            max.input_per_million = max.input_per_million.max(p.input_per_million);
            max.output_per_million = max.output_per_million.max(p.output_per_million);
        }
    }
    (max, tokenizer.unwrap_or(Tokenizer::Approximate))
}

/// The request's upper-bound cost, and whether the request caps its own
/// output (then the provider enforces the output estimate).
fn estimate(
    inbound: &Inbound<'_>,
    budgets: &[&Budget],
    (pricing, tokenizer): (Pricing, Tokenizer),
) -> (Amounts, bool) {
    let (input_tokens, cap) = match inbound.endpoint {
        Endpoint::Embeddings => (inbound.payload.embedding_input_tokens(tokenizer), Some(0)),
        _ => match inbound.canonical() {
            Ok(canonical) => (
                super::tokens::estimate(&canonical.request, tokenizer),
                canonical.request.max_output_tokens(),
            ),
            // The provider will refuse it; count the bytes meanwhile.
            Err(_) => (inbound.body_len().div_ceil(4) as u64, None),
        },
    };
    let output_tokens = cap.unwrap_or_else(|| {
        budgets
            .iter()
            .map(|b| b.default_max_output_tokens)
            .max()
            .unwrap_or(0)
    });
    let cost = pricing.cost(input_tokens, 0, output_tokens);
    let amounts = Amounts {
        input_tokens,
        output_tokens,
        cost_micro_usd: micro_usd(cost),
        requests: 1,
    };
    (amounts, cap.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_tokens_add_input_and_output() {
        let a = Amounts {
            input_tokens: 10,
            output_tokens: 5,
            cost_micro_usd: 7,
            requests: 1,
        };
        assert_eq!(a.get(Metric::TotalTokens), 15);
        assert_eq!(a.get(Metric::CostMicroUsd), 7);
    }

    #[test]
    fn actual_cost_rounds_up_to_a_millionth() {
        let usage = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
            ..Usage::default()
        };
        let pricing = Pricing {
            input_per_million: 0.15,
            output_per_million: 0.6,
            cached_input_per_million: 0.0,
        };
        // 1000 * 0.15 + 500 * 0.6 = 450 millionths.
        assert_eq!(Amounts::actual(&usage, Some(pricing)).cost_micro_usd, 450);
        assert_eq!(Amounts::actual(&usage, None).cost_micro_usd, 0);
    }
}
