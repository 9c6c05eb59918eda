//! The one place that reads the clock, through tokio so `time::pause()` controls it in tests.

use std::time::Instant;

/// Now, for deadlines and durations.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
