//! The one place that reads the clock, through tokio so `time::pause()` controls it in tests.

use std::time::Instant;

/// Now, for deadlines and durations.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Processor time the calling thread has used so far; None where the system cannot say.
pub fn thread_cpu() -> Option<cpu_time::ThreadTime> {
    cpu_time::ThreadTime::try_now().ok()
}

/// Now as Unix seconds, for certificate and OCSP validity.
#[allow(
    clippy::disallowed_methods,
    reason = "the one place that reads the wall clock"
)]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Now as a UTC date and time, for audit records.
#[allow(
    clippy::disallowed_methods,
    reason = "the one place that reads the wall clock"
)]
pub fn utc_now() -> time::OffsetDateTime {
    time::OffsetDateTime::from(std::time::SystemTime::now())
}
