//! Minimal /proc readers: CPU time (utime+stime) and memory (VmRSS/VmHWM).

use crate::error::{BenchError, Result};
use std::time::Duration;

/// Fields we need from /proc/PID/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    /// User + system CPU time, in clock ticks (USER_HZ).
    pub cpu_ticks: u64,
}

/// Parses the content of /proc/PID/stat.
///
/// `comm` (field 2) may contain spaces and parentheses, so split at the
/// *last* ')' rather than on whitespace from the start.
pub fn parse_stat(content: &str) -> Result<ProcStat> {
    let err = |detail: &str| BenchError::Parse {
        what: "/proc/PID/stat".into(),
        detail: detail.into(),
    };
    let open = content.find('(').ok_or_else(|| err("no '('"))?;
    let close = content.rfind(')').ok_or_else(|| err("no ')'"))?;
    let pid = content[..open].trim().parse().map_err(|_| err("bad pid"))?;
    // After ')': field 3 (state) is index 0, ppid (4) index 1,
    // utime (14) index 11, stime (15) index 12.
    let rest: Vec<&str> = content[close + 1..].split_whitespace().collect();
    let field = |idx: usize, name: &str| -> Result<u64> {
        rest.get(idx)
            .ok_or_else(|| err(&format!("missing {name}")))?
            .parse()
            .map_err(|_| err(&format!("bad {name}")))
    };
    let ppid = field(1, "ppid")? as u32;
    let utime = field(11, "utime")?;
    let stime = field(12, "stime")?;
    Ok(ProcStat {
        pid,
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// Memory figures from /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemStatus {
    pub vm_rss_kib: u64,
    pub vm_hwm_kib: u64,
}

/// Parses VmRSS and VmHWM ("VmRSS:\t   1234 kB") out of /proc/PID/status.
pub fn parse_status(content: &str) -> Result<MemStatus> {
    let mut rss = None;
    let mut hwm = None;
    for line in content.lines() {
        let slot = if line.starts_with("VmRSS:") {
            &mut rss
        } else if line.starts_with("VmHWM:") {
            &mut hwm
        } else {
            continue;
        };
        let value = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| BenchError::Parse {
                what: "/proc/PID/status".into(),
                detail: format!("bad line {line:?}"),
            })?;
        *slot = Some(value);
    }
    match (rss, hwm) {
        (Some(vm_rss_kib), Some(vm_hwm_kib)) => Ok(MemStatus {
            vm_rss_kib,
            vm_hwm_kib,
        }),
        _ => Err(BenchError::Parse {
            what: "/proc/PID/status".into(),
            detail: "VmRSS/VmHWM missing (kernel thread or exited?)".into(),
        }),
    }
}

pub fn read_stat(pid: u32) -> Result<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

pub fn read_mem(pid: u32) -> Result<MemStatus> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status"))?)
}

/// Sums memory over several processes (nginx master + workers).
pub fn read_mem_sum(pids: &[u32]) -> Result<MemStatus> {
    let mut total = MemStatus::default();
    for &pid in pids {
        let m = read_mem(pid)?;
        total.vm_rss_kib += m.vm_rss_kib;
        total.vm_hwm_kib += m.vm_hwm_kib;
    }
    Ok(total)
}

/// Direct children of `parent`, found by scanning /proc/*/stat for ppid.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_stat(pid).ok())
        .filter(|s| s.ppid == parent)
        .map(|s| s.pid)
        .collect()
}

/// The process itself plus its direct children (nginx: master + workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    pids.extend(children_of(pid));
    pids
}

/// Kernel clock ticks per second for the tick fields of /proc/PID/stat.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Total CPU time of a set of processes, converted to a Duration.
pub fn cpu_time(pids: &[u32]) -> Result<Duration> {
    let hz = clock_ticks_per_sec();
    let mut ticks = 0;
    for &pid in pids {
        ticks += read_stat(pid)?.cpu_ticks;
    }
    Ok(ticks_to_duration(ticks, hz))
}

pub fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    Duration::from_nanos(((ticks as u128 * 1_000_000_000) / hz.max(1) as u128) as u64)
}

/// Microseconds of CPU per request between two samples.
pub fn cpu_us_per_request(before: Duration, after: Duration, requests: u64) -> Option<f64> {
    if requests == 0 {
        return None;
    }
    let spent = after.saturating_sub(before);
    Some(spent.as_secs_f64() * 1e6 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "4242 (tollgate (x) y) S 1 4242 4242 0 -1 4194304 1000 0 0 0 \
                    250 75 0 0 20 0 4 0 12345 1000000 500 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_ticks, 325);
    }

    #[test]
    fn stat_truncated_is_error() {
        assert!(parse_stat("1 (x) S 0 1").is_err());
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn stat_of_self_is_readable() {
        let s = read_stat(std::process::id()).unwrap();
        assert_eq!(s.pid, std::process::id());
        assert!(s.ppid > 0);
    }

    #[test]
    fn status_parsing() {
        let content = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    8120 kB\nVmRSS:\t    7000 kB\nThreads:\t1\n";
        let m = parse_status(content).unwrap();
        assert_eq!(
            m,
            MemStatus {
                vm_rss_kib: 7000,
                vm_hwm_kib: 8120
            }
        );
        assert!(parse_status("Name:\tkthreadd\n").is_err());
    }

    #[test]
    fn cpu_math() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        let us = cpu_us_per_request(
            Duration::from_millis(100),
            Duration::from_millis(300),
            10_000,
        )
        .unwrap();
        assert!((us - 20.0).abs() < 1e-9);
        assert_eq!(cpu_us_per_request(Duration::ZERO, Duration::ZERO, 0), None);
        // A clock going "backwards" (process restarted) must not underflow.
        assert_eq!(
            cpu_us_per_request(Duration::from_secs(2), Duration::from_secs(1), 10),
            Some(0.0)
        );
    }

    #[test]
    fn children_of_self_includes_spawned_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children_of(std::process::id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(kids.contains(&child.id()));
    }
}
