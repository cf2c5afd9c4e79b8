//! The writer thread's CPU time, as Linux accounts it (`/proc/<pid>/task/<tid>/schedstat`, in
//! nanoseconds): what the journal costs per message is that time over the messages written.
//! Elsewhere, or without `/proc`, it is unknown (`None`).

use std::path::PathBuf;
use std::time::Duration;

/// Where to read one thread's CPU time.
#[derive(Debug, Clone)]
pub(crate) struct ThreadCpu {
    schedstat: PathBuf,
}

impl ThreadCpu {
    /// The calling thread's, if the system tells.
    pub(crate) fn current() -> Option<Self> {
        // `/proc/thread-self` names the caller's task directory, e.g. `4242/task/4243`.
        let task = std::fs::read_link("/proc/thread-self").ok()?;
        let cpu = Self {
            schedstat: PathBuf::from("/proc").join(task).join("schedstat"),
        };
        cpu.read().map(|_| cpu)
    }

    /// CPU time the thread has used so far (user and system); `None` once it has ended.
    pub(crate) fn read(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(&self.schedstat).ok()?;
        let nanos = text.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_seen_using_cpu() {
        let Some(cpu) = ThreadCpu::current() else {
            // Not Linux, or no /proc: nothing to measure.
            return;
        };
        let before = cpu.read().unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = cpu.read().unwrap() - before;
        assert!(used >= Duration::from_millis(5), "{used:?}");
    }
}
