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
        // Busy until the thread is seen to have used 5 ms (on a loaded machine that takes
        // longer than 5 ms); the wall-clock bound only fails a reading that never grows.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while cpu.read().unwrap() - before < Duration::from_millis(5) {
            assert!(std::time::Instant::now() < deadline, "no CPU time seen");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        // Another thread's reading does not count this one's work.
        let other = std::thread::spawn(|| ThreadCpu::current().unwrap().read().unwrap())
            .join()
            .unwrap();
        assert!(other < Duration::from_millis(5), "{other:?}");
    }
}
