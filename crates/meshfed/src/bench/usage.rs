//! What the measured processes used during a phase, read from Linux's `/proc`: the peak
//! resident set (`VmHWM` in `/proc/PID/status`, reset at the phase's start through
//! `/proc/PID/clear_refs` where the kernel lets this user) and the CPU time (`utime + stime` in
//! `/proc/PID/stat`, every thread's, including those that ended), divided by the messages
//! delivered. Where `/proc` cannot be read a figure is `None` ("n/a"), never an error.

use std::path::PathBuf;
use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat`'s times: the kernel reports them in `USER_HZ`,
/// which is 100 on every architecture Linux runs meshfed on (x86_64, aarch64, …).
const USER_HZ: u64 = 100;

/// A process whose use is measured, and how the report names it.
#[derive(Debug, Clone)]
pub(super) struct Process {
    pub(super) pid: u32,
    pub(super) label: String,
}

/// A phase's start, as seen in one process.
pub(super) struct Start {
    process: Process,
    cpu_ticks: Option<u64>,
    peak_reset: bool,
}

/// What one process used during a phase.
#[derive(Debug, Clone)]
pub(super) struct Usage {
    pub(super) process: Process,
    /// The most memory resident at once, in bytes.
    pub(super) peak_rss_bytes: Option<u64>,
    /// Whether that peak is the phase's own (reset at its start) or the process's since it
    /// started (the reset was refused).
    pub(super) peak_of_phase: bool,
    /// CPU time (user and system) during the phase.
    pub(super) cpu: Option<Duration>,
}

impl Process {
    fn path(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.pid))
    }

    /// Resets the peak resident set and takes the CPU time so far.
    pub(super) fn start(self) -> Start {
        // "5" resets the peak RSS to the current RSS (Linux ≥ 4.0).
        let peak_reset = std::fs::write(self.path("clear_refs"), "5").is_ok();
        let cpu_ticks = cpu_ticks(&self);
        Start {
            process: self,
            cpu_ticks,
            peak_reset,
        }
    }
}

impl Start {
    /// The use since [`Process::start`].
    pub(super) fn end(self) -> Usage {
        let cpu = match (self.cpu_ticks, cpu_ticks(&self.process)) {
            (Some(before), Some(after)) => Some(ticks(after.saturating_sub(before))),
            _ => None,
        };
        Usage {
            peak_rss_bytes: peak_rss(&self.process),
            peak_of_phase: self.peak_reset,
            cpu,
            process: self.process,
        }
    }
}

impl Usage {
    /// CPU microseconds per message delivered in the phase.
    pub(super) fn cpu_us_per_msg(&self, delivered: u64) -> Option<f64> {
        let cpu = self.cpu?;
        (delivered > 0).then(|| cpu.as_secs_f64() * 1e6 / delivered as f64)
    }
}

fn ticks(n: u64) -> Duration {
    Duration::from_micros(n.saturating_mul(1_000_000 / USER_HZ))
}

/// `utime + stime` of `/proc/PID/stat`, in clock ticks.
fn cpu_ticks(p: &Process) -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string(p.path("stat")).ok()?)
}

/// `VmHWM` of `/proc/PID/status`, in bytes.
fn peak_rss(p: &Process) -> Option<u64> {
    parse_peak_rss(&std::fs::read_to_string(p.path("status")).ok()?)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself: fields are counted after its
/// last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmHWM:   1234 kB` line of `/proc/PID/status`, in bytes.
fn parse_peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    731 269 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_cpu_ticks("4242 (meshfed) S 1"), None);
        assert_eq!(ticks(1000), Duration::from_secs(10));
    }

    #[test]
    fn peak_rss_is_read_in_bytes() {
        let status = "Name:\tmeshfed\nVmPeak:\t  900000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_peak_rss(status), Some(123_456 * 1024));
        assert_eq!(parse_peak_rss("Name:\tmeshfed\n"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        let usage = Process {
            pid: std::process::id(),
            label: "test".into(),
        }
        .start()
        .end();
        assert!(usage.peak_rss_bytes.is_some_and(|b| b > 0), "{usage:?}");
        assert!(usage.cpu.is_some(), "{usage:?}");
        assert_eq!(usage.cpu_us_per_msg(0), None);
    }

    #[test]
    fn a_process_that_cannot_be_read_gives_no_figures() {
        let usage = Process {
            pid: u32::MAX,
            label: "gone".into(),
        }
        .start()
        .end();
        assert_eq!((usage.peak_rss_bytes, usage.cpu), (None, None));
        assert!(!usage.peak_of_phase);
    }
}
