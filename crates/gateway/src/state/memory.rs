//! Counters in this process: one lock over every counter, held for a few
//! map lookups, so checking and charging several budgets is one atomic step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Charge, Check, Span, Verdict, retry_after_ms};

/// Sweep expired counters after this many reservations.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug, Default)]
pub struct MemoryCounters {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counters: HashMap<Arc<str>, Ring>,
    reservations: u64,
}

/// A counter's live slots, oldest first: `(slot, value)`.
#[derive(Debug, Default)]
struct Ring {
    span: Option<Span>,
    slots: Vec<(i64, u64)>,
}

impl Ring {
    fn live(&self, span: Span, now_ms: i64) -> impl Iterator<Item = (i64, u64)> + '_ {
        let oldest = span.oldest_live_slot(now_ms);
        self.slots
            .iter()
            .copied()
            .filter(move |(s, _)| *s >= oldest)
    }

    fn used(&self, span: Span, now_ms: i64) -> u64 {
        self.live(span, now_ms).map(|(_, v)| v).sum()
    }

    fn add(&mut self, span: Span, slot: i64, amount: u64, now_ms: i64) {
        let oldest = span.oldest_live_slot(now_ms);
        self.slots.retain(|(s, _)| *s >= oldest);
        self.span = Some(span);
        match self.slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, value)) => *value += amount,
            None => {
                self.slots.push((slot, amount));
                self.slots.sort_unstable_by_key(|(s, _)| *s);
            }
        }
    }

    /// Settles a charge: `actual` replaces `charged` in `slot`, if the slot
    /// is still counted.
    fn settle(&mut self, slot: i64, charged: u64, actual: u64) {
        if let Some((_, value)) = self.slots.iter_mut().find(|(s, _)| *s == slot) {
            *value = (*value + actual).saturating_sub(charged);
        }
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.span
            .is_none_or(|span| self.live(span, now_ms).next().is_none())
    }
}

impl MemoryCounters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind, still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Charges every check if every enforced one fits; else charges nothing.
    pub fn reserve(&self, checks: &[Check], now_ms: i64) -> Verdict {
        let mut inner = self.lock();
        let mut used = Vec::with_capacity(checks.len());
        for (index, check) in checks.iter().enumerate() {
            let ring = inner.counters.get(&check.key);
            let so_far = ring.map_or(0, |r| r.used(check.span, now_ms));
            if check.enforce && so_far + check.amount > check.limit {
                let slots: Vec<(i64, u64)> = ring
                    .map(|r| r.live(check.span, now_ms).collect())
                    .unwrap_or_default();
                return Verdict::Refused {
                    failing: index,
                    used: so_far,
                    retry_after_ms: retry_after_ms(
                        check.span,
                        now_ms,
                        slots,
                        check.amount,
                        check.limit,
                    ),
                };
            }
            used.push(so_far);
        }
        let mut charges = Vec::with_capacity(checks.len());
        let mut over = Vec::new();
        for (index, check) in checks.iter().enumerate() {
            let slot = check.span.slot(now_ms);
            inner.counters.entry(check.key.clone()).or_default().add(
                check.span,
                slot,
                check.amount,
                now_ms,
            );
            used[index] += check.amount;
            if used[index] > check.limit {
                over.push(index);
            }
            charges.push(Charge {
                key: check.key.clone(),
                span: check.span,
                slot,
                amount: check.amount,
            });
        }
        inner.reservations += 1;
        if inner.reservations.is_multiple_of(SWEEP_EVERY) {
            inner.counters.retain(|_, ring| !ring.expired(now_ms));
        }
        Verdict::Admitted {
            charges,
            over,
            used,
        }
    }

    /// Replaces each charge's estimate with the actual figure.
    pub fn settle(&self, charges: &[Charge], actual: &[u64]) {
        let mut inner = self.lock();
        for (charge, &actual) in charges.iter().zip(actual) {
            if let Some(ring) = inner.counters.get_mut(&charge.key) {
                ring.settle(charge.slot, charge.amount, actual);
            }
        }
    }

    /// Each counter's usage now, for reports.
    pub fn usage(&self, now_ms: i64) -> Vec<(Arc<str>, u64)> {
        let inner = self.lock();
        inner
            .counters
            .iter()
            .filter_map(|(key, ring)| Some((key.clone(), ring.used(ring.span?, now_ms))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_api::budget::BudgetWindow;

    const NOW: i64 = 1_796_603_400_000;
    const MINUTE: i64 = 60_000;

    fn check(key: &str, span: Span, amount: u64, limit: u64) -> Check {
        Check {
            key: Arc::from(key),
            span,
            amount,
            limit,
            enforce: true,
        }
    }

    fn fixed_day() -> Span {
        Span::new(BudgetWindow::Day, false)
    }

    #[test]
    fn all_checks_fit_or_nothing_is_charged() {
        let counters = MemoryCounters::default();
        let team = check("team", fixed_day(), 60, 100);
        let user = check("user", fixed_day(), 60, 1000);
        assert!(matches!(
            counters.reserve(&[team.clone(), user.clone()], NOW),
            Verdict::Admitted { .. }
        ));
        let Verdict::Refused { failing, used, .. } = counters.reserve(&[user.clone(), team], NOW)
        else {
            panic!("the team budget is spent")
        };
        assert_eq!((failing, used), (1, 60));
        let usage: HashMap<_, _> = counters.usage(NOW).into_iter().collect();
        assert_eq!(
            usage[&Arc::from("user")],
            60,
            "the user check was not charged"
        );
    }

    #[test]
    fn settling_replaces_the_estimate_in_its_own_slot() {
        let counters = MemoryCounters::default();
        let minute = Span::new(BudgetWindow::Minute, false);
        let Verdict::Admitted { charges, .. } =
            counters.reserve(&[check("k", minute, 100, 150)], NOW)
        else {
            panic!()
        };
        counters.settle(&charges, &[30]);
        assert!(matches!(
            counters.reserve(&[check("k", minute, 100, 150)], NOW + 1),
            Verdict::Admitted { .. }
        ));
        // A request reserved in one minute and settled in the next leaves the
        // new minute alone.
        let Verdict::Admitted { charges, .. } =
            counters.reserve(&[check("k2", minute, 10, 150)], NOW)
        else {
            panic!()
        };
        counters.reserve(&[check("k2", minute, 20, 150)], NOW + MINUTE);
        counters.settle(&charges, &[0]);
        let usage: HashMap<_, _> = counters.usage(NOW + MINUTE).into_iter().collect();
        assert_eq!(usage[&Arc::from("k2")], 20);
    }

    #[test]
    fn unenforced_checks_are_charged_and_reported_over() {
        let counters = MemoryCounters::default();
        let warn = Check {
            enforce: false,
            ..check("warn", fixed_day(), 80, 100)
        };
        counters.reserve(std::slice::from_ref(&warn), NOW);
        let Verdict::Admitted { over, used, .. } = counters.reserve(&[warn], NOW) else {
            panic!()
        };
        assert_eq!((over, used), (vec![0], vec![160]));
    }

    #[test]
    fn retry_after_is_when_enough_usage_leaves_the_window() {
        let counters = MemoryCounters::default();
        // Fixed day: the end of the UTC day, 23h30m after NOW.
        counters.reserve(&[check("d", fixed_day(), 90, 100)], NOW);
        let Verdict::Refused { retry_after_ms, .. } =
            counters.reserve(&[check("d", fixed_day(), 20, 100)], NOW)
        else {
            panic!()
        };
        assert_eq!(retry_after_ms, Some(23 * 60 * MINUTE + 30 * MINUTE));
        // Rolling minute (5 s slots): 50 at t, 50 at t+20 s. At t+30 s, 50
        // more fit once the first 50 leave (t+60 s); 60 more only once both
        // have (t+80 s).
        let rolling = Span::new(BudgetWindow::Minute, true);
        let start = rolling.slot_start_ms(rolling.slot(NOW));
        counters.reserve(&[check("r", rolling, 50, 100)], start);
        counters.reserve(&[check("r", rolling, 50, 100)], start + 20_000);
        let retry =
            |amount| match counters.reserve(&[check("r", rolling, amount, 100)], start + 30_000) {
                Verdict::Refused { retry_after_ms, .. } => retry_after_ms,
                admitted => panic!("{admitted:?}"),
            };
        assert_eq!(retry(50), Some(30_000));
        assert_eq!(retry(60), Some(50_000));
        assert!(matches!(
            counters.reserve(&[check("r", rolling, 50, 100)], start + 60_000),
            Verdict::Admitted { .. }
        ));
        // Larger than the limit itself: never.
        let Verdict::Refused { retry_after_ms, .. } =
            counters.reserve(&[check("x", fixed_day(), 101, 100)], NOW)
        else {
            panic!()
        };
        assert_eq!(retry_after_ms, None);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let counters = Arc::new(MemoryCounters::default());
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if let Verdict::Admitted { .. } =
                            counters.reserve(&[check("c", fixed_day(), 7, 10_000)], NOW)
                        {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 10_000 / 7, "exactly as many as fit");
    }
}
