//! Compiled TokenBudgets: whom each counts, its caps per window, and what
//! happens past them. Matching a principal is here; counting is the data
//! plane's.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tollgate_api::budget::{BudgetWindow, Member};

use super::Principal;
use crate::window::Span;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// `namespace/name` of the TokenBudget: the counters' identity, so an
    /// edited limit keeps the usage counted so far.
    pub name: Arc<str>,
    pub subject: Subject,
    pub limits: Vec<Limit>,
    pub on_exceed: OnExceed,
    /// Output tokens reserved when the request sets no cap.
    pub default_max_output_tokens: u64,
    /// End a stream that outgrows its reservation and the budget.
    pub cut_streams: bool,
    /// Percentages whose crossing is reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soft_thresholds: Vec<u32>,
    /// Refuse requests when the shared state cannot be reached.
    pub fail_closed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Arc<AlertPolicy>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Offenders throttled at or before this instant (Unix ms) are released
    /// (annotation `tollgate.dev/throttle-cleared-at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_cleared_at_ms: Option<i64>,
}

/// Token buckets per member: (rate per second, capacity).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Bucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Bucket>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Refill per second.
    pub per_second: f64,
    pub capacity: f64,
}

/// Usage-anomaly alerts of a budget, defaults applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertPolicy {
    pub spike_factor: u32,
    pub interval_ms: u64,
    pub warmup_intervals: u32,
    pub cooldown_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// The rate a member is held to after its spike, until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_offender: Option<RateLimit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub url: String,
    /// `{"text": ...}` for Slack instead of the alert object.
    pub slack: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_member: Option<Member>,
}

/// The member name of a principal that lacks the attribute a per-member
/// budget counts by: such principals share one counter.
pub const NO_MEMBER: &str = "-";

impl Subject {
    /// Whether the budget counts this request. A subject that names anyone
    /// never matches an anonymous request (an open gateway); an empty one does.
    pub fn matches(&self, principal: Option<&Principal>) -> bool {
        let Some(p) = principal else {
            return self.user.is_none()
                && self.team.is_none()
                && self.app.is_none()
                && self.key.is_none()
                && self.match_labels.is_empty();
        };
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        same(&self.user, Some(&p.user))
            && same(&self.team, p.team.as_deref())
            && same(&self.app, p.app.as_deref())
            && same(&self.key, Some(&p.key))
            && self
                .match_labels
                .iter()
                .all(|(k, v)| p.labels.get(k) == Some(v))
    }

    /// The counter a matching request is counted in: `""` for the whole
    /// group, else the member's name.
    pub fn member<'p>(&self, principal: Option<&'p Principal>) -> &'p str {
        let Some(member) = self.per_member else {
            return "";
        };
        let Some(p) = principal else {
            return NO_MEMBER;
        };
        let name = match member {
            Member::User => Some(p.user.as_str()),
            Member::Team => p.team.as_deref(),
            Member::App => p.app.as_deref(),
            Member::Key => Some(p.key.as_str()),
        };
        name.filter(|n| !n.is_empty()).unwrap_or(NO_MEMBER)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    pub window: BudgetWindow,
    pub rolling: bool,
    /// `(metric, cap)`, at least one, in [`Metric`] order.
    pub caps: Vec<(Metric, u64)>,
}

/// What a cap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    InputTokens,
    OutputTokens,
    TotalTokens,
    /// Millionths of a US dollar, so counters stay integers (Redis `INCRBY`).
    CostMicroUsd,
    Requests,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::InputTokens,
        Metric::OutputTokens,
        Metric::TotalTokens,
        Metric::CostMicroUsd,
        Metric::Requests,
    ];

    /// An amount as status and messages show it: `$1.25`, or `1200`.
    pub fn amount(self, n: u64) -> String {
        match self {
            Metric::CostMicroUsd => format!("${}", crate::compile::format_micro_usd(n)),
            _ => n.to_string(),
        }
    }

    /// An amount with its unit: `$1.25`, or `1200 totalTokens`.
    pub fn with_unit(self, n: u64) -> String {
        match self {
            Metric::CostMicroUsd => self.amount(n),
            _ => format!("{n} {}", self.spec_name()),
        }
    }

    /// As in the TokenBudget spec (and status).
    pub fn spec_name(self) -> &'static str {
        match self {
            Metric::InputTokens => "inputTokens",
            Metric::OutputTokens => "outputTokens",
            Metric::TotalTokens => "totalTokens",
            Metric::CostMicroUsd => "costUsd",
            Metric::Requests => "requests",
        }
    }
}

/// A counter's identity, `budget|member|Window-fixed|metric`: the same in
/// every replica, in Redis, and in the usage gateways report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterKey<'a> {
    pub budget: &'a str,
    pub member: &'a str,
    pub span: Span,
    pub metric: Metric,
}

impl<'a> CounterKey<'a> {
    pub fn new(budget: &'a str, member: &'a str, span: Span, metric: Metric) -> Self {
        Self {
            budget,
            member,
            span,
            metric,
        }
    }

    /// The inverse of `to_string`; `None` for anything else.
    pub fn parse(text: &'a str) -> Option<Self> {
        // The budget (namespace/name) holds no `|`; a member name may.
        let (budget, rest) = text.split_once('|')?;
        let mut parts = rest.rsplitn(3, '|');
        let metric = parts.next()?;
        let span = parts.next()?;
        let member = parts.next()?;
        let (window, rolling) = span.split_once('-')?;
        let window = match window {
            "Minute" => BudgetWindow::Minute,
            "Hour" => BudgetWindow::Hour,
            "Day" => BudgetWindow::Day,
            "Month" => BudgetWindow::Month,
            _ => return None,
        };
        let rolling = match rolling {
            "fixed" => false,
            "rolling" => true,
            _ => return None,
        };
        let metric = Metric::ALL.into_iter().find(|m| m.spec_name() == metric)?;
        Some(Self::new(
            budget,
            member,
            Span::new(window, rolling),
            metric,
        ))
    }
}

impl std::fmt::Display for CounterKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rolling = if self.span.rolling {
            "rolling"
        } else {
            "fixed"
        };
        write!(
            f,
            "{}|{}|{:?}-{rolling}|{}",
            self.budget,
            self.member,
            self.span.window,
            self.metric.spec_name()
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum OnExceed {
    Reject,
    Warn,
    /// Served by this model alias instead (a route of the same gateway).
    Downgrade {
        model: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            user: "alice".into(),
            team: Some("search".into()),
            app: None,
            key: "keys/alice".into(),
            labels: [("tier".to_string(), "free".to_string())].into(),
        }
    }

    #[test]
    fn every_given_field_must_match() {
        let p = principal();
        let team = Subject {
            team: Some("search".into()),
            ..Subject::default()
        };
        assert!(team.matches(Some(&p)));
        let team_and_app = Subject {
            app: Some("bot".into()),
            ..team.clone()
        };
        assert!(!team_and_app.matches(Some(&p)), "p has no app");
        let labels = Subject {
            match_labels: [("tier".to_string(), "free".to_string())].into(),
            ..Subject::default()
        };
        assert!(labels.matches(Some(&p)));
        let other_label = Subject {
            match_labels: [("tier".to_string(), "paid".to_string())].into(),
            ..Subject::default()
        };
        assert!(!other_label.matches(Some(&p)));
        let key = Subject {
            key: Some("keys/alice".into()),
            ..Subject::default()
        };
        assert!(key.matches(Some(&p)));
        assert!(Subject::default().matches(Some(&p)));
        assert!(
            Subject::default().matches(None),
            "org budget on an open gateway"
        );
        assert!(!team.matches(None));
    }

    #[test]
    fn counter_keys_name_every_part_and_parse_back() {
        let key = CounterKey::new(
            "ns/b",
            "alice|x",
            Span::new(BudgetWindow::Day, true),
            Metric::CostMicroUsd,
        );
        let text = key.to_string();
        assert_eq!(text, "ns/b|alice|x|Day-rolling|costUsd");
        // A member may hold `|`: the budget name (namespace/name) cannot.
        assert_eq!(CounterKey::parse(&text), Some(key));
        let plain = CounterKey::new(
            "ns/b",
            "",
            Span::new(BudgetWindow::Month, false),
            Metric::Requests,
        );
        assert_eq!(CounterKey::parse(&plain.to_string()), Some(plain));
        assert_eq!(CounterKey::parse("ns/b||Week-fixed|requests"), None);
    }

    #[test]
    fn members_are_counted_apart_and_missing_ones_together() {
        let p = principal();
        let whole = Subject::default();
        assert_eq!(whole.member(Some(&p)), "");
        let per_user = Subject {
            per_member: Some(Member::User),
            ..Subject::default()
        };
        assert_eq!(per_user.member(Some(&p)), "alice");
        let per_app = Subject {
            per_member: Some(Member::App),
            ..Subject::default()
        };
        assert_eq!(per_app.member(Some(&p)), NO_MEMBER);
        assert_eq!(per_user.member(None), NO_MEMBER);
    }
}
