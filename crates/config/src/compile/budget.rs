//! TokenBudget: subject, caps per window and the exceed policy, checked and
//! flattened for the data plane.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use tollgate_api::TokenBudget;
use tollgate_api::budget::{
    self as api, DOWNGRADE_MODEL_MESSAGE, ExceedAction, LIMIT_EMPTY_MESSAGE, LIMITS_UNIQUE_MESSAGE,
    USD_MESSAGE,
};
use tollgate_api::conditions::reason;

use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::resources::object_ref;
use crate::snapshot::budget::{
    AlertPolicy, Bucket, Budget, Limit, Metric, OnExceed, RateLimit, Subject, Webhook,
};

/// Output tokens reserved for a request without a cap, unless the budget says.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// The budget for the data plane, or `None` (with diagnostics) when invalid.
pub(super) fn compile_budget(
    budget: &TokenBudget,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Budget> {
    let object = object_ref(budget);
    let spec = &budget.spec;
    let mut error = |field: String, message: &str| {
        diagnostics.push(Diagnostic::error(&object, field, reason::INVALID, message));
    };
    let mut valid = true;
    if spec.limits.is_empty() && spec.rate_limit.is_none() {
        error("spec.limits".into(), api::NOTHING_LIMITED_MESSAGE);
        valid = false;
    }
    let mut windows = BTreeSet::new();
    let mut limits = Vec::with_capacity(spec.limits.len());
    for (i, limit) in spec.limits.iter().enumerate() {
        if !windows.insert((limit.window, limit.rolling)) {
            error(format!("spec.limits[{i}]"), LIMITS_UNIQUE_MESSAGE);
            valid = false;
        }
        match caps(limit) {
            Some(caps) if caps.is_empty() => {
                error(format!("spec.limits[{i}]"), LIMIT_EMPTY_MESSAGE);
                valid = false;
            }
            Some(caps) => limits.push(Limit {
                window: limit.window,
                rolling: limit.rolling,
                caps,
            }),
            None => {
                error(format!("spec.limits[{i}].costUsd"), USD_MESSAGE);
                valid = false;
            }
        }
    }
    let on_exceed = match (spec.on_exceed.action, &spec.on_exceed.model) {
        (ExceedAction::Reject, _) => OnExceed::Reject,
        (ExceedAction::Warn, _) => OnExceed::Warn,
        (ExceedAction::Downgrade, Some(model)) if !model.is_empty() => OnExceed::Downgrade {
            model: model.clone(),
        },
        (ExceedAction::Downgrade, _) => {
            error("spec.onExceed.model".into(), DOWNGRADE_MODEL_MESSAGE);
            valid = false;
            OnExceed::Reject
        }
    };
    if spec.soft_thresholds.iter().any(|p| !(1..=100).contains(p)) {
        error(
            "spec.softThresholds".into(),
            "soft thresholds are percentages between 1 and 100",
        );
        valid = false;
    }
    let alerts = match &spec.alerts {
        None => None,
        Some(alerts) => match alert_policy(alerts) {
            Ok(policy) => Some(Arc::new(policy)),
            Err((field, message)) => {
                error(format!("spec.alerts.{field}"), message);
                valid = false;
                None
            }
        },
    };
    let rate_limit = match spec.rate_limit.as_ref().map(rate_limit) {
        Some(None) => {
            error("spec.rateLimit".into(), api::RATE_LIMIT_EMPTY_MESSAGE);
            valid = false;
            None
        }
        other => other.flatten(),
    };
    let throttle_cleared_at_ms = match budget
        .annotations()
        .get(api::THROTTLE_CLEARED_AT_ANNOTATION)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(text) => match text.parse::<k8s_openapi::jiff::Timestamp>() {
            Ok(instant) => Some(instant.as_millisecond()),
            Err(_) => {
                error(
                    format!(
                        "metadata.annotations[{}]",
                        api::THROTTLE_CLEARED_AT_ANNOTATION
                    ),
                    "must be an RFC 3339 instant such as 2026-12-07T10:00:00Z",
                );
                valid = false;
                None
            }
        },
    };
    if !valid {
        return None;
    }
    let mut soft_thresholds = spec.soft_thresholds.clone();
    soft_thresholds.sort_unstable();
    soft_thresholds.dedup();
    let subject = &spec.subject;
    Some(Budget {
        name: Arc::from(format!("{}/{}", object.namespace, object.name)),
        subject: Subject {
            user: subject.user.clone(),
            team: subject.team.clone(),
            app: subject.app.clone(),
            key: subject.key.clone(),
            match_labels: subject.match_labels.clone(),
            per_member: subject.per_member,
        },
        limits,
        on_exceed,
        default_max_output_tokens: spec
            .default_max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
        cut_streams: spec.streams == api::StreamOverrun::Cut,
        soft_thresholds,
        fail_closed: spec.failure_mode == api::FailureMode::Closed,
        alerts,
        rate_limit,
        throttle_cleared_at_ms,
    })
}

/// Token buckets of a rate limit; `None` when it names no rate.
fn rate_limit(spec: &api::RateLimit) -> Option<RateLimit> {
    let requests = spec.requests_per_second.map(|rps| Bucket {
        per_second: f64::from(rps),
        capacity: f64::from(spec.burst.unwrap_or(rps)),
    });
    let tokens = spec.tokens_per_minute.map(|tpm| Bucket {
        per_second: tpm as f64 / 60.0,
        capacity: tpm as f64,
    });
    (requests.is_some() || tokens.is_some()).then_some(RateLimit { requests, tokens })
}

pub const DEFAULT_SPIKE_FACTOR: u32 = 10;
pub const DEFAULT_ALERT_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_WARMUP_INTERVALS: u32 = 5;
pub const DEFAULT_ALERT_COOLDOWN_MS: u64 = 15 * 60_000;

fn alert_policy(spec: &api::BudgetAlerts) -> Result<AlertPolicy, (&'static str, &'static str)> {
    let duration = |text: &Option<String>, default: u64, field: &'static str, zero_ok: bool| {
        let Some(text) = text else { return Ok(default) };
        match tollgate_api::duration::parse(text) {
            Ok(d) if zero_ok || !d.is_zero() => {
                Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            _ => Err((field, tollgate_api::duration::POSITIVE_DURATION_MESSAGE)),
        }
    };
    let spike_factor = spec.spike_factor.unwrap_or(DEFAULT_SPIKE_FACTOR);
    if !(2..=1000).contains(&spike_factor) {
        return Err(("spikeFactor", "spikeFactor must be between 2 and 1000"));
    }
    let warmup_intervals = spec.warmup_intervals.unwrap_or(DEFAULT_WARMUP_INTERVALS);
    if !(1..=1000).contains(&warmup_intervals) {
        return Err((
            "warmupIntervals",
            "warmupIntervals must be between 1 and 1000",
        ));
    }
    let webhook = match &spec.webhook {
        None => None,
        Some(w) if w.url.starts_with("http://") || w.url.starts_with("https://") => Some(Webhook {
            url: w.url.clone(),
            slack: w.format == api::WebhookFormat::Slack,
        }),
        Some(_) => {
            return Err((
                "webhook.url",
                "webhook url must be an http:// or https:// URL",
            ));
        }
    };
    let throttle_offender = match &spec.throttle_offender {
        None => None,
        Some(limit) => Some(rate_limit(limit).ok_or((
            "throttleOffender",
            "throttleOffender needs requestsPerSecond or tokensPerMinute",
        ))?),
    };
    Ok(AlertPolicy {
        throttle_offender,
        spike_factor,
        interval_ms: duration(&spec.interval, DEFAULT_ALERT_INTERVAL_MS, "interval", false)?,
        warmup_intervals,
        cooldown_ms: duration(&spec.cooldown, DEFAULT_ALERT_COOLDOWN_MS, "cooldown", true)?,
        webhook,
    })
}

/// A Downgrade budget whose model no route of its gateway serves: a warning,
/// since the route may come later; until then such requests are rejected.
pub(super) fn check_downgrade_target(
    budget: &Budget,
    object: &ObjectRef,
    serves: impl Fn(&str) -> bool,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let OnExceed::Downgrade { model } = &budget.on_exceed
        && !serves(model)
    {
        diagnostics.push(Diagnostic::warning(
            object,
            "spec.onExceed.model",
            reason::INVALID,
            format!(
                "no route of this gateway serves model {model:?}; requests past this budget are rejected until one does"
            ),
        ));
    }
}

/// The caps of one limit, in [`Metric`] order; `None` for a bad dollar amount.
fn caps(limit: &api::BudgetLimit) -> Option<Vec<(Metric, u64)>> {
    let cost = match limit.cost_usd.as_deref() {
        Some(text) => Some(parse_micro_usd(text)?),
        None => None,
    };
    Some(
        [
            (Metric::InputTokens, limit.input_tokens),
            (Metric::OutputTokens, limit.output_tokens),
            (Metric::TotalTokens, limit.total_tokens),
            (Metric::CostMicroUsd, cost),
            (Metric::Requests, limit.requests),
        ]
        .into_iter()
        .filter_map(|(metric, cap)| Some((metric, cap?)))
        .collect(),
    )
}

/// `"25.5"` → 25_500_000 millionths of a dollar; `None` unless the text
/// follows [`api::USD_RULE`].
pub fn parse_micro_usd(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(whole, 12) || !(fraction.is_empty() || digits(fraction, 6)) || text.ends_with('.') {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = format!("{fraction:0<6}").parse().ok()?;
    Some(whole * 1_000_000 + fraction)
}

/// Millionths of a dollar as a decimal string without trailing zeros.
pub fn format_micro_usd(micro: u64) -> String {
    let (whole, fraction) = (micro / 1_000_000, micro % 1_000_000);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:06}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::compile;
    use super::super::fixtures::{BASE, gw, load};
    use super::*;

    #[test]
    fn offender_throttles_compile_and_the_clearing_annotation_is_an_instant() {
        let budget = |annotation: &str| {
            format!(
                "{BASE}---
apiVersion: tollgate.dev/v1alpha1
kind: TokenBudget
metadata: {{name: spiky{annotation}}}
spec:
  gatewayRef: {{name: gw}}
  subject: {{perMember: App}}
  limits: [{{window: Day, requests: 1000}}]
  alerts: {{throttleOffender: {{requestsPerSecond: 2, burst: 4, tokensPerMinute: 600}}}}
"
            )
        };
        let compiled = compile(
            &load(&budget(
                ", annotations: {tollgate.dev/throttle-cleared-at: \"2026-12-07T10:00:00Z\"}",
            ))
            .resources,
        );
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        let spiky = &compiled.snapshots[&gw()].config.budgets[0];
        let throttle = spiky.alerts.as_ref().unwrap().throttle_offender.unwrap();
        assert_eq!(
            throttle.requests,
            Some(Bucket {
                per_second: 2.0,
                capacity: 4.0
            })
        );
        assert_eq!(
            throttle.tokens,
            Some(Bucket {
                per_second: 10.0,
                capacity: 600.0
            })
        );
        assert_eq!(spiky.throttle_cleared_at_ms, Some(1_796_637_600_000));

        let compiled = compile(
            &load(&budget(
                ", annotations: {tollgate.dev/throttle-cleared-at: yesterday}",
            ))
            .resources,
        );
        let d = &compiled.diagnostics[0];
        assert!(d.is_error());
        assert_eq!(
            d.field,
            "metadata.annotations[tollgate.dev/throttle-cleared-at]"
        );
        assert!(compiled.snapshots[&gw()].config.budgets.is_empty());
    }

    #[test]
    fn dollars_parse_to_millionths_and_back() {
        assert_eq!(parse_micro_usd("25"), Some(25_000_000));
        assert_eq!(parse_micro_usd("0.5"), Some(500_000));
        assert_eq!(parse_micro_usd("1.000001"), Some(1_000_001));
        for bad in ["", ".5", "5.", "1.0000001", "-1", "1e3", "abc"] {
            assert_eq!(parse_micro_usd(bad), None, "{bad:?}");
        }
        assert_eq!(format_micro_usd(25_000_000), "25");
        assert_eq!(format_micro_usd(500_000), "0.5");
        assert_eq!(format_micro_usd(1_000_001), "1.000001");
    }

    #[test]
    fn budgets_compile_onto_their_gateway_sorted_with_caps_in_order() {
        let yaml = format!(
            "{BASE}---
apiVersion: tollgate.dev/v1alpha1
kind: TokenBudget
metadata: {{name: team-search}}
spec:
  gatewayRef: {{name: gw}}
  subject: {{team: search, perMember: User}}
  limits:
  - {{window: Day, requests: 100, costUsd: \"2.50\", totalTokens: 50000}}
  - {{window: Minute, rolling: true, outputTokens: 1000}}
  onExceed: {{action: Downgrade, model: chat}}
  softThresholds: [90, 80]
---
apiVersion: tollgate.dev/v1alpha1
kind: TokenBudget
metadata: {{name: org}}
spec:
  gatewayRef: {{name: gw}}
  limits: [{{window: Month, costUsd: \"1000\"}}]
  defaultMaxOutputTokens: 512
  streams: Finish
  failureMode: Closed
"
        );
        let compiled = compile(&load(&yaml).resources);
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let budgets = &compiled.snapshots[&gw()].config.budgets;
        let names: Vec<&str> = budgets.iter().map(|b| &*b.name).collect();
        assert_eq!(names, ["default/org", "default/team-search"]);
        let org = &budgets[0];
        assert_eq!(org.default_max_output_tokens, 512);
        assert!(!org.cut_streams && org.fail_closed);
        assert_eq!(org.on_exceed, OnExceed::Reject);
        let team = &budgets[1];
        assert_eq!(team.soft_thresholds, [80, 90]);
        assert_eq!(
            team.limits[0].caps,
            [
                (Metric::TotalTokens, 50_000),
                (Metric::CostMicroUsd, 2_500_000),
                (Metric::Requests, 100)
            ]
        );
        assert!(team.limits[1].rolling);
        assert_eq!(
            team.on_exceed,
            OnExceed::Downgrade {
                model: "chat".into()
            }
        );
        assert_eq!(team.default_max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS);
    }

    #[test]
    fn bad_budgets_are_reported_on_themselves_and_left_out() {
        let yaml = format!(
            "{BASE}---
apiVersion: tollgate.dev/v1alpha1
kind: TokenBudget
metadata: {{name: nowhere}}
spec:
  gatewayRef: {{name: missing}}
  limits: [{{window: Day, requests: 1}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: TokenBudget
metadata: {{name: downgrade-unserved}}
spec:
  gatewayRef: {{name: gw}}
  limits: [{{window: Day, requests: 1}}]
  onExceed: {{action: Downgrade, model: no-such-model}}
"
        );
        let compiled = compile(&load(&yaml).resources);
        let messages: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.object.as_ref().unwrap().name, d.message))
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("nowhere: AIGateway \"missing\" not found")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("downgrade-unserved: no route of this gateway serves")),
            "{messages:?}"
        );
        let budgets = &compiled.snapshots[&gw()].config.budgets;
        assert_eq!(budgets.len(), 1, "the warning does not drop the budget");
    }

    #[test]
    fn compile_repeats_the_cel_rules_for_files() {
        let budget = |limits: &str, on_exceed: &str| -> TokenBudget {
            serde_yaml::from_str(&format!(
                "apiVersion: tollgate.dev/v1alpha1\nkind: TokenBudget\nmetadata: {{name: b}}\n\
                 spec: {{gatewayRef: {{name: gw}}, limits: {limits}, onExceed: {on_exceed}}}"
            ))
            .unwrap()
        };
        let messages = |b: TokenBudget| {
            let mut diagnostics = Vec::new();
            assert!(compile_budget(&b, &mut diagnostics).is_none());
            diagnostics
                .into_iter()
                .map(|d| d.message)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            messages(budget("[{window: Day}]", "{action: Reject}")),
            [LIMIT_EMPTY_MESSAGE]
        );
        assert_eq!(
            messages(budget(
                "[{window: Day, requests: 1}, {window: Day, requests: 2}]",
                "{action: Reject}"
            )),
            [LIMITS_UNIQUE_MESSAGE]
        );
        assert_eq!(
            messages(budget(
                "[{window: Day, costUsd: \"1.1234567\"}]",
                "{action: Reject}"
            )),
            [USD_MESSAGE]
        );
        assert_eq!(
            messages(budget(
                "[{window: Day, requests: 1}]",
                "{action: Downgrade}"
            )),
            [DOWNGRADE_MODEL_MESSAGE]
        );
    }
}
