//! Counters by stable reason label (dropped packets, outcomes). Read by logs and tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A set of named counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(name).or_default() += 1;
        }
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }
}
