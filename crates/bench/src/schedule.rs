//! Open-loop schedule math.
//!
//! Request `i` of a phase is *intended* to be sent at `start + i / rate`.
//! Offsets are computed from the absolute index (not by adding an interval
//! repeatedly), so rounding never accumulates into drift and a late sender
//! catches up instead of shifting the whole schedule.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Requests per second.
    pub rate: f64,
    /// Number of requests in the phase (the count bound).
    pub total: u64,
}

impl Schedule {
    /// A schedule of `rate` req/s lasting `duration`: `floor(rate * secs)`
    /// requests.
    pub fn for_duration(rate: f64, duration: Duration) -> Self {
        assert!(rate > 0.0, "rate must be positive");
        Schedule {
            rate,
            total: (rate * duration.as_secs_f64()).floor() as u64,
        }
    }

    /// Offset of request `i` from the phase start.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * 1e9 / self.rate).round() as u64)
    }

    /// Intended send instant of request `i`.
    pub fn intended(&self, start: Instant, i: u64) -> Instant {
        start + self.offset(i)
    }

    /// Nominal length of the phase (intended time of the one-past-last request).
    pub fn span(&self) -> Duration {
        self.offset(self.total)
    }
}

/// Where a request's latency is measured from.
///
/// * The sender claimed the slot *after* its intended time: every connection
///   was still busy, i.e. the target fell behind. Measuring from the actual
///   send would hide that queueing (coordinated omission), so measure from the
///   intended time.
/// * The sender claimed the slot *before* its intended time and slept until
///   it: any lateness now is timer granularity of the load generator (tokio
///   timers tick at 1 ms), not the target's fault, so measure from the actual
///   send.
pub fn latency_origin(intended: Instant, claimed: Instant, sent: Instant) -> Instant {
    if claimed > intended { intended } else { sent }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_offsets() {
        let s = Schedule::for_duration(2000.0, Duration::from_secs(10));
        assert_eq!(s.total, 20_000);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_micros(500));
        assert_eq!(s.offset(2000), Duration::from_secs(1));
        assert_eq!(s.span(), Duration::from_secs(10));

        let q = Schedule::for_duration(500.0, Duration::from_millis(2500));
        assert_eq!(q.total, 1250);
        assert_eq!(q.offset(1), Duration::from_millis(2));
    }

    #[test]
    fn non_integer_interval_has_no_drift() {
        // 3 req/s: interval 333_333_333.3 ns. Summing rounded intervals
        // would drift by 1 ns every 3 requests; absolute offsets do not.
        let s = Schedule {
            rate: 3.0,
            total: 3_000_000,
        };
        assert_eq!(s.offset(3), Duration::from_secs(1));
        assert_eq!(s.offset(3_000_000), Duration::from_secs(1_000_000));
        assert_eq!(s.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.offset(2), Duration::from_nanos(666_666_667));
    }

    #[test]
    fn fractional_count_rounds_down() {
        let s = Schedule::for_duration(7.0, Duration::from_millis(1500));
        assert_eq!(s.total, 10);
    }

    #[test]
    fn origin_is_intended_when_backlogged() {
        let t0 = Instant::now();
        let intended = t0 + Duration::from_millis(10);
        // Claimed late (all connections busy) -> charge the queueing.
        let claimed = t0 + Duration::from_millis(15);
        let sent = claimed;
        assert_eq!(latency_origin(intended, claimed, sent), intended);
    }

    #[test]
    fn origin_is_sent_when_only_timer_was_late() {
        let t0 = Instant::now();
        let intended = t0 + Duration::from_millis(10);
        let claimed = t0 + Duration::from_millis(9);
        let sent = t0 + Duration::from_micros(10_800); // timer tick lateness
        assert_eq!(latency_origin(intended, claimed, sent), sent);
        // Exactly on time is not backlog either.
        assert_eq!(latency_origin(intended, intended, sent), sent);
    }
}
