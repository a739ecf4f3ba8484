//! Budget windows as slots of time. Pure arithmetic on Unix milliseconds, so
//! the in-memory and Redis counters agree on which slot an instant falls in.
//!
//! A fixed window is one slot (the minute, UTC hour, UTC day or calendar
//! month). A rolling window is [`ROLLING_SLOTS`] slots of a twelfth of its
//! length each (a rolling month is 30 days): usage leaves it a slot at a time.

use tollgate_api::budget::BudgetWindow;

/// Slots per rolling window.
pub const ROLLING_SLOTS: i64 = 12;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A window's geometry: how instants map to slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub window: BudgetWindow,
    pub rolling: bool,
}

impl Span {
    pub fn new(window: BudgetWindow, rolling: bool) -> Self {
        Self { window, rolling }
    }

    /// How many slots the window sums.
    pub fn slots(self) -> i64 {
        if self.rolling { ROLLING_SLOTS } else { 1 }
    }

    /// The slot `now_ms` falls in.
    pub fn slot(self, now_ms: i64) -> i64 {
        match (self.window, self.rolling) {
            (BudgetWindow::Month, false) => month_index(now_ms),
            _ => now_ms.div_euclid(self.slot_ms()),
        }
    }

    /// When `slot` starts.
    pub fn slot_start_ms(self, slot: i64) -> i64 {
        match (self.window, self.rolling) {
            (BudgetWindow::Month, false) => month_start_ms(slot),
            _ => slot * self.slot_ms(),
        }
    }

    /// When usage counted in `slot` stops counting: the end of the window
    /// that slot opens.
    pub fn expires_ms(self, slot: i64) -> i64 {
        self.slot_start_ms(slot + self.slots())
    }

    /// The oldest slot still inside the window at `now_ms`.
    pub fn oldest_live_slot(self, now_ms: i64) -> i64 {
        self.slot(now_ms) - self.slots() + 1
    }

    /// Length of one slot; calendar months vary, so not for fixed months.
    fn slot_ms(self) -> i64 {
        let window = match self.window {
            BudgetWindow::Minute => MINUTE_MS,
            BudgetWindow::Hour => HOUR_MS,
            BudgetWindow::Day => DAY_MS,
            BudgetWindow::Month => 30 * DAY_MS,
        };
        window / self.slots()
    }

    /// As in the spec and status: `Day`, `rolling Day`.
    pub fn label(self) -> String {
        let window = format!("{:?}", self.window);
        if self.rolling {
            format!("rolling {window}")
        } else {
            window
        }
    }
}

/// Months since January 1970 (UTC).
fn month_index(now_ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
    (year - 1970) * 12 + (month - 1)
}

fn month_start_ms(index: i64) -> i64 {
    let year = 1970 + index.div_euclid(12);
    let month = index.rem_euclid(12) + 1;
    days_from_civil(year, month, 1) * DAY_MS
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, after
/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07T00:30:00Z
    const NOW: i64 = 1_796_603_400_000;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(NOW / DAY_MS), (2026, 12, 7));
        for days in [-1000, 0, 59, 60, 11_016, 20_000, 20_794] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn fixed_windows_start_at_calendar_boundaries() {
        let day = Span::new(BudgetWindow::Day, false);
        let slot = day.slot(NOW);
        assert_eq!(
            day.slot_start_ms(slot),
            NOW - 30 * MINUTE_MS,
            "UTC midnight"
        );
        assert_eq!(day.expires_ms(slot), NOW - 30 * MINUTE_MS + DAY_MS);

        let month = Span::new(BudgetWindow::Month, false);
        let slot = month.slot(NOW);
        assert_eq!(slot, (2026 - 1970) * 12 + 11);
        assert_eq!(
            month.slot_start_ms(slot),
            days_from_civil(2026, 12, 1) * DAY_MS
        );
        assert_eq!(month.expires_ms(slot), days_from_civil(2027, 1, 1) * DAY_MS);
        assert_eq!(month.oldest_live_slot(NOW), slot);
    }

    #[test]
    fn rolling_windows_are_twelve_slots() {
        let hour = Span::new(BudgetWindow::Hour, true);
        let slot = hour.slot(NOW);
        assert_eq!(
            hour.slot_start_ms(slot + 1) - hour.slot_start_ms(slot),
            5 * MINUTE_MS
        );
        assert_eq!(hour.oldest_live_slot(NOW), slot - 11);
        assert_eq!(hour.expires_ms(slot), hour.slot_start_ms(slot) + HOUR_MS);
        let month = Span::new(BudgetWindow::Month, true);
        assert_eq!(
            month.expires_ms(month.slot(NOW)) - month.slot_start_ms(month.slot(NOW)),
            30 * DAY_MS
        );
        assert_eq!(hour.label(), "rolling Hour");
    }
}
