//! Agent-behaviour anomalies on one MCP server for one agent (principal):
//! tool calls per interval against an exponentially weighted baseline, the
//! set of tools it has used, and its usual share of write calls. Pure: time
//! comes in as Unix milliseconds.
//!
//! * Nothing is judged during warm-up; the baselines learn only from
//!   intervals without an incident, so an incident does not teach them that
//!   it is normal.
//! * A burst is judged as soon as the current interval's calls pass
//!   `burst_factor × baseline`; a first call to a tool never used before and
//!   a write share `write_shift` over the usual one are judged per call.
//! * One alert per incident, whatever mix of anomalies it shows: the
//!   incident lasts until a whole interval is normal again, and after an
//!   alert the tracker stays quiet for the cooldown.

use std::collections::HashSet;

use tollgate_config::snapshot::mcp::AgentPolicy;

/// Weight of the newest interval in the baselines.
const ALPHA: f64 = 0.3;
/// A call-rate baseline below this counts as this, so a near-idle agent
/// making a handful of calls is not a burst.
const MIN_BASELINE_CALLS: f64 = 5.0;
/// Fewest calls in an interval before its write share means anything.
const MIN_CALLS_FOR_SHIFT: u64 = 5;
/// Most distinct tools remembered per agent.
const MAX_TOOLS: usize = 1_024;
/// Longer gaps than this many intervals are not replayed one by one.
const MAX_REPLAYED_GAP: i64 = 1_000;

/// What an agent did that it does not usually do.
#[derive(Debug, Clone, PartialEq)]
pub enum Anomaly {
    Burst { calls: u64, baseline: f64 },
    NewTool { tool: String },
    WriteShift { share: f64, baseline: f64 },
}

impl Anomaly {
    /// The alert kind: metric label, Event reason suffix.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Burst { .. } => "agentBurst",
            Self::NewTool { .. } => "agentNewTool",
            Self::WriteShift { .. } => "agentWriteShift",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Burst { calls, baseline } => format!(
                "{calls} tool calls in the current interval, against a baseline of {baseline:.1}"
            ),
            Self::NewTool { tool } => format!("a first call to tool {tool}, never used before"),
            Self::WriteShift { share, baseline } => format!(
                "{:.0}% of its calls in the current interval are writes, against a usual {:.0}%",
                share * 100.0,
                baseline * 100.0
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentTracker {
    interval_ms: i64,
    burst_factor: f64,
    write_shift: f64,
    new_tools: bool,
    warmup: u32,
    cooldown_ms: i64,
    start: i64,
    calls: u64,
    writes: u64,
    baseline_calls: f64,
    baseline_write_share: f64,
    intervals_seen: u32,
    tools: HashSet<String>,
    in_incident: bool,
    quiet_until: i64,
}

impl AgentTracker {
    pub fn new(policy: &AgentPolicy, now_ms: i64) -> Self {
        let interval_ms = i64::try_from(policy.interval_ms.max(1)).unwrap_or(i64::MAX);
        Self {
            interval_ms,
            burst_factor: f64::from(policy.burst_factor),
            write_shift: policy.write_shift,
            new_tools: policy.new_tools,
            warmup: policy.warmup_intervals,
            cooldown_ms: i64::try_from(policy.cooldown_ms).unwrap_or(i64::MAX),
            start: now_ms - now_ms.rem_euclid(interval_ms),
            calls: 0,
            writes: 0,
            baseline_calls: 0.0,
            baseline_write_share: 0.0,
            intervals_seen: 0,
            tools: HashSet::new(),
            in_incident: false,
            quiet_until: i64::MIN,
        }
    }

    fn warmed(&self) -> bool {
        self.intervals_seen >= self.warmup
    }

    /// The most calls per interval this agent makes as a rule (what a
    /// throttled agent is held to).
    pub fn usual_calls(&self) -> u64 {
        self.baseline_calls.max(MIN_BASELINE_CALLS).ceil() as u64
    }

    /// Calls made so far in the current interval.
    pub fn calls_now(&mut self, now_ms: i64) -> u64 {
        self.roll(now_ms);
        self.calls
    }

    fn roll(&mut self, now_ms: i64) {
        let elapsed = (now_ms - self.start).div_euclid(self.interval_ms);
        if elapsed <= 0 {
            return;
        }
        for i in 0..elapsed.min(MAX_REPLAYED_GAP) {
            let (calls, writes) = if i == 0 {
                (self.calls, self.writes)
            } else {
                (0, 0)
            };
            let abnormal = self.warmed() && self.judge(calls, writes).is_some();
            if abnormal {
                continue;
            }
            // A whole normal interval ends the incident.
            self.in_incident = false;
            let calls = calls as f64;
            if self.intervals_seen == 0 {
                self.baseline_calls = calls;
            } else {
                self.baseline_calls = ALPHA * calls + (1.0 - ALPHA) * self.baseline_calls;
            }
            if calls > 0.0 {
                let share = writes as f64 / calls;
                self.baseline_write_share =
                    ALPHA * share + (1.0 - ALPHA) * self.baseline_write_share;
            }
            self.intervals_seen = self.intervals_seen.saturating_add(1);
        }
        self.start += elapsed * self.interval_ms;
        self.calls = 0;
        self.writes = 0;
    }

    /// A burst or write shift in an interval with these counts.
    fn judge(&self, calls: u64, writes: u64) -> Option<Anomaly> {
        let baseline = self.baseline_calls.max(MIN_BASELINE_CALLS);
        if calls as f64 > self.burst_factor * baseline {
            return Some(Anomaly::Burst {
                calls,
                baseline: self.baseline_calls,
            });
        }
        if calls >= MIN_CALLS_FOR_SHIFT {
            let share = writes as f64 / calls as f64;
            if share > self.baseline_write_share + self.write_shift {
                return Some(Anomaly::WriteShift {
                    share,
                    baseline: self.baseline_write_share,
                });
            }
        }
        None
    }

    /// Counts one call; `Some` when it starts an incident (alert once).
    pub fn record(&mut self, tool: &str, write: bool, now_ms: i64) -> Option<Anomaly> {
        self.roll(now_ms);
        self.calls += 1;
        if write {
            self.writes += 1;
        }
        let known = self.tools.contains(tool);
        if !known && self.tools.len() < MAX_TOOLS {
            self.tools.insert(tool.to_string());
        }
        if !self.warmed() {
            return None;
        }
        let anomaly = self.judge(self.calls, self.writes).or_else(|| {
            (self.new_tools && !known).then(|| Anomaly::NewTool {
                tool: tool.to_string(),
            })
        })?;
        let quiet = self.in_incident || now_ms < self.quiet_until;
        self.in_incident = true;
        if quiet {
            return None;
        }
        self.quiet_until = now_ms.saturating_add(self.cooldown_ms);
        Some(anomaly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_api::mcp::AnomalyAction;

    const MINUTE: i64 = 60_000;

    fn policy() -> AgentPolicy {
        AgentPolicy {
            interval_ms: MINUTE as u64,
            warmup_intervals: 3,
            burst_factor: 5,
            write_shift: 0.5,
            new_tools: true,
            cooldown_ms: 10 * MINUTE as u64,
            action: AnomalyAction::Alert,
            webhook: None,
            cleared_at_ms: None,
        }
    }

    /// Three quiet minutes: 4 reads a minute of `search`.
    fn warmed() -> AgentTracker {
        let mut tracker = AgentTracker::new(&policy(), 0);
        for minute in 0..3 {
            for call in 0..4 {
                let at = minute * MINUTE + call * 1_000;
                assert_eq!(tracker.record("search", false, at), None);
            }
        }
        tracker
    }

    #[test]
    fn a_burst_alerts_once_per_incident() {
        let mut tracker = warmed();
        let start = 3 * MINUTE;
        let alerts: Vec<Anomaly> = (0..100)
            .filter_map(|i| tracker.record("search", false, start + i * 100))
            .collect();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(
            matches!(alerts[0], Anomaly::Burst { calls: 26, .. }),
            "{alerts:?}"
        );
        // Still bursting next minute: the same incident, and the cooldown.
        let more = (0..100)
            .filter_map(|i| tracker.record("search", false, 4 * MINUTE + i * 100))
            .count();
        assert_eq!(more, 0);
    }

    #[test]
    fn a_turn_to_writes_alerts_once() {
        let start = 3 * MINUTE;
        let mut tracker = warmed();
        tracker.new_tools = false;
        let alerts: Vec<Anomaly> = (0..8)
            .filter_map(|i| tracker.record("write_note", true, start + i * 1_000))
            .collect();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(
            matches!(alerts[0], Anomaly::WriteShift { .. }),
            "{alerts:?}"
        );
        // With new-tool detection on, the same turn is still one incident.
        let mut tracker = warmed();
        let alerts: Vec<Anomaly> = (0..8)
            .filter_map(|i| tracker.record("write_note", true, start + i * 1_000))
            .collect();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(matches!(alerts[0], Anomaly::NewTool { .. }), "{alerts:?}");
    }

    #[test]
    fn a_new_tool_alerts_after_warm_up_only() {
        let mut early = AgentTracker::new(&policy(), 0);
        assert_eq!(early.record("delete_all", true, 0), None, "warming up");
        let mut tracker = warmed();
        let alert = tracker.record("delete_all", true, 3 * MINUTE);
        assert_eq!(
            alert,
            Some(Anomaly::NewTool {
                tool: "delete_all".into()
            })
        );
        assert_eq!(tracker.record("delete_all", true, 3 * MINUTE + 1), None);
    }

    #[test]
    fn normal_use_after_warm_up_raises_nothing() {
        let mut tracker = warmed();
        for minute in 3..30 {
            for call in 0..5 {
                let at = minute * MINUTE + call * 1_000;
                assert_eq!(tracker.record("search", false, at), None, "minute {minute}");
            }
        }
        assert_eq!(tracker.usual_calls(), 5);
    }

    #[test]
    fn an_incident_does_not_teach_the_baseline() {
        let mut tracker = warmed();
        for i in 0..60 {
            tracker.record("search", false, 3 * MINUTE + i * 500);
        }
        // After the burst minute, the baseline is still about 4.
        tracker.calls_now(5 * MINUTE);
        assert!(tracker.baseline_calls < 5.0, "{}", tracker.baseline_calls);
    }
}
