//! Rate limit for repeated log lines about rejected or dropped requests.
//!
//! One misconfigured or hostile device can be rejected many times a second; an info line
//! for each floods the log and hides everything else. Per (reason, client) the first
//! [`BURST`] lines of each [`INTERVAL`] are written; the rest are only counted, and the next
//! line written for that pair is preceded by one summary ("suppressed K similar"). Counters
//! and audit records are not affected: they still see every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::eap::Reason;

/// Lines written per (reason, client) and interval.
pub const BURST: u32 = 10;
/// Length of one interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Pairs tracked before idle ones are pruned (clients x reasons is small; this bounds a
/// config reloaded many times with new client names).
const MAX_KEYS: usize = 4096;

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; first say how many similar lines were suppressed before it (if any).
    Log {
        /// Lines suppressed since the last one written for this pair.
        suppressed: u64,
    },
    /// Do not write it (it is counted).
    Suppress,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// The limiter; time is passed in.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    interval: Duration,
    windows: Mutex<HashMap<(Reason, String), Window>>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(BURST, INTERVAL)
    }
}

impl LogLimiter {
    /// At most `burst` lines per pair in each `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst,
            interval,
            windows: Mutex::default(),
        }
    }

    /// Decides about one line for `reason` and `client` at `now`.
    pub fn check(&self, now: Instant, reason: impl Into<Reason>, client: &str) -> Verdict {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= MAX_KEYS {
            let interval = self.interval;
            windows.retain(|_, w| {
                w.suppressed > 0 || now.saturating_duration_since(w.start) < interval
            });
        }
        let w = windows
            .entry((reason.into(), client.to_owned()))
            .or_insert(Window {
                start: now,
                logged: 0,
                suppressed: 0,
            });
        if now.saturating_duration_since(w.start) >= self.interval {
            w.start = now;
            w.logged = 0;
        }
        if w.logged < self.burst {
            w.logged += 1;
            let suppressed = std::mem::take(&mut w.suppressed);
            Verdict::Log { suppressed }
        } else {
            w.suppressed += 1;
            Verdict::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_are_written_then_counted_and_summarised_next_interval() {
        let l = LogLimiter::new(3, Duration::from_secs(10));
        let t0 = crate::clock::now();
        let verdicts: Vec<_> = (0..5u64)
            .map(|i| l.check(t0 + Duration::from_secs(i), "unknown_state", "nas-a"))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Log { suppressed: 0 },
                Verdict::Log { suppressed: 0 },
                Verdict::Log { suppressed: 0 },
                Verdict::Suppress,
                Verdict::Suppress,
            ]
        );
        // Still the same interval: suppressed.
        assert_eq!(
            l.check(t0 + Duration::from_millis(9_999), "unknown_state", "nas-a"),
            Verdict::Suppress
        );
        // The next interval's first line carries the count of the three suppressed.
        let next = t0 + Duration::from_secs(10);
        assert_eq!(
            l.check(next, "unknown_state", "nas-a"),
            Verdict::Log { suppressed: 3 }
        );
        assert_eq!(
            l.check(next, "unknown_state", "nas-a"),
            Verdict::Log { suppressed: 0 }
        );
    }

    #[test]
    fn reasons_and_clients_are_limited_separately() {
        let l = LogLimiter::new(1, Duration::from_secs(10));
        let t0 = crate::clock::now();
        assert_eq!(l.check(t0, "a", "n1"), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(t0, "a", "n1"), Verdict::Suppress);
        assert_eq!(l.check(t0, "b", "n1"), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(t0, "a", "n2"), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn idle_pairs_are_pruned_but_pending_counts_kept() {
        let l = LogLimiter::new(1, Duration::from_secs(10));
        let t0 = crate::clock::now();
        assert_eq!(l.check(t0, "a", "keep"), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(t0, "a", "keep"), Verdict::Suppress);
        for i in 0..MAX_KEYS {
            let _ = l.check(t0, "b", &i.to_string());
        }
        let later = t0 + Duration::from_secs(11);
        let _ = l.check(later, "c", "new");
        assert!(l.windows.lock().unwrap().len() <= 3);
        assert_eq!(l.check(later, "a", "keep"), Verdict::Log { suppressed: 1 });
    }
}
