//! The EAP session table, keyed by the State attribute we issued (RFC 2865 §5.24).
//!
//! Bounded: at most `max_sessions` entries (least recently used evicted first) and each
//! dropped after `idle` without traffic, so a flood of half-open handshakes cannot exhaust
//! memory. A session is taken out while a request works on it and put back under a new
//! State, so two requests never work on one session at once and old States stop working.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use crate::eap::Session;
use crate::tls::CertSummary;

/// Everything kept between two round trips of one device.
#[derive(Debug)]
pub struct SessionEntry {
    /// The EAP-TLS state machine.
    pub session: Session,
    /// EAP identity the device gave.
    pub identity: String,
    /// The client (NAS) the conversation belongs to; another client's State is not honoured.
    pub nas: String,
    /// When the conversation started.
    pub started: Instant,
    /// The verified client certificate, once known.
    pub cert: Option<CertSummary>,
    /// VLAN chosen by the checks, once decided.
    pub vlan: Option<String>,
    /// Revocation result, once checked.
    pub revocation: Option<String>,
}

/// A table slot: the owning NAS (for the per-client count) and the session, taken out while
/// a request works on it.
type Slot = Arc<(String, Mutex<Option<SessionEntry>>)>;

/// The table.
pub struct SessionTable {
    cache: Cache<[u8; 16], Slot>,
    per_nas: Arc<Mutex<HashMap<String, u64>>>,
}

impl SessionTable {
    /// A table of at most `max` sessions, each dropped after `idle` unused.
    pub fn new(max: u64, idle: Duration) -> Self {
        let per_nas: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let counts = per_nas.clone();
        // Called for every way a slot leaves the table: taken, evicted, expired.
        let listener = move |_key: Arc<[u8; 16]>, slot: Slot, _cause| {
            if let Ok(mut m) = counts.lock() {
                if let Some(n) = m.get_mut(&slot.0) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(&slot.0);
                    }
                }
            }
        };
        Self {
            cache: Cache::builder()
                .max_capacity(max)
                .time_to_idle(idle)
                .eviction_policy(EvictionPolicy::lru())
                .eviction_listener(listener)
                .build(),
            per_nas,
        }
    }

    /// Conversations held for one client (NAS).
    pub fn count(&self, nas: &str) -> u64 {
        self.per_nas
            .lock()
            .ok()
            .and_then(|m| m.get(nas).copied())
            .unwrap_or(0)
    }

    /// Takes the session for a State out of the table.
    pub fn take(&self, state: &[u8]) -> Option<SessionEntry> {
        let key: [u8; 16] = state.try_into().ok()?;
        let slot = self.cache.remove(&key)?;
        let mut guard = slot.1.lock().ok()?;
        guard.take()
    }

    /// Stores a session under a State.
    pub fn put(&self, state: [u8; 16], entry: SessionEntry) {
        let nas = entry.nas.clone();
        if let Ok(mut m) = self.per_nas.lock() {
            *m.entry(nas.clone()).or_default() += 1;
        }
        self.cache
            .insert(state, Arc::new((nas, Mutex::new(Some(entry)))));
        // moka applies evictions in batches; apply them now so the bound holds exactly
        // under a flood of new conversations.
        self.cache.run_pending_tasks();
    }

    /// Sessions held now (approximate, for metrics).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
