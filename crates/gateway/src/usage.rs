//! Who drives cost: every settled request of a known principal, summed per
//! hour by principal, route, provider and model, kept 32 days, and the
//! report behind `GET /v1/usage` on the admin port. Per process: a fleet's
//! figure is the sum over its gateways (`tollgate usage` adds them up).
//!
//! An open gateway (no keys) records nothing here: there is nobody to
//! attribute cost to, and the plain passthrough stays as cheap as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tollgate_config::snapshot::Principal;

const HOUR_MS: i64 = 3_600_000;
/// Hours kept.
pub const RETENTION_HOURS: i64 = 32 * 24;
/// Rows kept at most; past it new combinations are counted as dropped.
const MAX_ROWS: usize = 200_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Row {
    hour: i64,
    principal: Arc<Principal>,
    route: Arc<str>,
    provider: Arc<str>,
    model: Arc<str>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// What a report groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    User,
    Team,
    App,
    Key,
    Route,
    Provider,
    Model,
}

impl Dimension {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "user" => Dimension::User,
            "team" => Dimension::Team,
            "app" => Dimension::App,
            "key" => Dimension::Key,
            "route" => Dimension::Route,
            "provider" => Dimension::Provider,
            "model" => Dimension::Model,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Dimension::User => "user",
            Dimension::Team => "team",
            Dimension::App => "app",
            Dimension::Key => "key",
            Dimension::Route => "route",
            Dimension::Provider => "provider",
            Dimension::Model => "model",
        }
    }

    fn value(self, row: &Row) -> String {
        let p = &row.principal;
        match self {
            Dimension::User => p.user.clone(),
            Dimension::Team => p.team.clone().unwrap_or_default(),
            Dimension::App => p.app.clone().unwrap_or_default(),
            Dimension::Key => p.key.clone(),
            Dimension::Route => row.route.to_string(),
            Dimension::Provider => row.provider.to_string(),
            Dimension::Model => row.model.to_string(),
        }
    }
}

/// How far back a report reaches, in hours (the current hour included).
pub fn window_hours(window: &str) -> Option<i64> {
    Some(match window {
        "hour" => 1,
        "day" => 24,
        "week" => 24 * 7,
        "month" => 24 * 30,
        _ => return None,
    })
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Dimension → value (`""` when the principal has none).
    pub key: std::collections::BTreeMap<&'static str, String>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Default)]
pub struct UsageLedger {
    inner: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    rows: HashMap<Row, Totals>,
    dropped: u64,
    newest_hour: i64,
}

/// One settled request.
pub struct Entry<'a> {
    pub principal: &'a Arc<Principal>,
    pub route: &'a Arc<str>,
    pub provider: &'a Arc<str>,
    pub model: &'a Arc<str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl UsageLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self, entry: Entry<'_>, now_ms: i64) {
        let hour = now_ms.div_euclid(HOUR_MS);
        let row = Row {
            hour,
            principal: entry.principal.clone(),
            route: entry.route.clone(),
            provider: entry.provider.clone(),
            model: entry.model.clone(),
        };
        let totals = Totals {
            requests: 1,
            input_tokens: entry.input_tokens,
            output_tokens: entry.output_tokens,
            cost_usd: entry.cost_usd,
        };
        let mut ledger = self.lock();
        if hour > ledger.newest_hour {
            // A new hour: forget the hours past retention.
            ledger.newest_hour = hour;
            ledger.rows.retain(|r, _| r.hour > hour - RETENTION_HOURS);
        }
        let full = ledger.rows.len() >= MAX_ROWS;
        match ledger.rows.get_mut(&row) {
            Some(existing) => existing.add(&totals),
            None if full => ledger.dropped += 1,
            None => {
                ledger.rows.insert(row, totals);
            }
        }
    }

    /// Totals of the last `hours` hours grouped by `by`, costliest first,
    /// and the requests that could not be recorded (row cap).
    pub fn report(&self, by: &[Dimension], hours: i64, now_ms: i64) -> (Vec<Group>, Totals, u64) {
        let since = now_ms.div_euclid(HOUR_MS) - hours + 1;
        let ledger = self.lock();
        let mut groups: HashMap<Vec<String>, Totals> = HashMap::new();
        let mut total = Totals::default();
        for (row, totals) in ledger.rows.iter().filter(|(r, _)| r.hour >= since) {
            let key = by.iter().map(|d| d.value(row)).collect();
            groups.entry(key).or_default().add(totals);
            total.add(totals);
        }
        let dropped = ledger.dropped;
        drop(ledger);
        let mut out: Vec<Group> = groups
            .into_iter()
            .map(|(values, totals)| Group {
                key: by.iter().map(|d| d.name()).zip(values).collect(),
                totals,
            })
            .collect();
        out.sort_by(|a, b| {
            b.totals
                .cost_usd
                .total_cmp(&a.totals.cost_usd)
                .then(b.totals.requests.cmp(&a.totals.requests))
                .then_with(|| a.key.cmp(&b.key))
        });
        (out, total, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, team: &str, app: Option<&str>) -> Arc<Principal> {
        Arc::new(Principal {
            user: user.into(),
            team: Some(team.into()),
            app: app.map(Into::into),
            ..Principal::default()
        })
    }

    #[test]
    fn groups_by_any_dimensions_costliest_first_within_the_window() {
        let ledger = UsageLedger::default();
        let (route, provider, model): (Arc<str>, Arc<str>, Arc<str>) =
            ("ns/chat".into(), "openai".into(), "gpt".into());
        let now = 1_796_603_400_000;
        let record = |p: &Arc<Principal>, cost: f64, at: i64| {
            ledger.record(
                Entry {
                    principal: p,
                    route: &route,
                    provider: &provider,
                    model: &model,
                    input_tokens: 10,
                    output_tokens: 5,
                    cost_usd: cost,
                },
                at,
            )
        };
        let (alice, bob, carol) = (
            principal("alice", "a", Some("bot")),
            principal("bob", "a", None),
            principal("carol", "b", Some("bot")),
        );
        record(&alice, 1.0, now);
        record(&bob, 2.0, now);
        record(&carol, 0.5, now);
        record(&carol, 0.5, now - 2 * HOUR_MS);
        record(&carol, 100.0, now - 25 * HOUR_MS);

        let (groups, total, dropped) = ledger.report(&[Dimension::Team], 24, now);
        assert_eq!(dropped, 0);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].key["team"], "a");
        assert_eq!(groups[0].totals.cost_usd, 3.0);
        assert_eq!(groups[0].totals.requests, 2);
        assert_eq!(
            groups[1].totals.cost_usd, 1.0,
            "the 25-hour-old request is out"
        );
        assert_eq!(total.requests, 4);
        assert_eq!(total.input_tokens, 40);

        let (groups, _, _) = ledger.report(&[Dimension::App, Dimension::User], 1, now);
        let keys: Vec<String> = groups
            .iter()
            .map(|g| format!("{}/{}", g.key["app"], g.key["user"]))
            .collect();
        assert_eq!(keys, ["/bob", "bot/alice", "bot/carol"]);

        let (groups, _, _) = ledger.report(&[Dimension::Team], 24 * 30, now);
        assert_eq!(groups[0].key["team"], "b", "{groups:?}");
    }
}
