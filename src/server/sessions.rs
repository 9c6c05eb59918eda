//! The EAP session table, keyed by the State attribute we issued (RFC 2865 §5.24).
//!
//! Bounded: at most `max_sessions` entries (least recently used evicted first) and each
//! dropped after `idle` without traffic, so a flood of half-open handshakes cannot exhaust
//! memory. A session is taken out while a request works on it and put back under a new
//! State, so two requests never work on one session at once and old States stop working.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fifo::Fifo;
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

/// The table.
pub struct SessionTable {
    /// Each round trip takes a session out and puts it back under a new State, so the
    /// table's insertion order is least-recently-used order and age is idle time.
    /// Boxed: the hash table's spare capacity then costs a pointer per slot, not a session.
    table: Fifo<[u8; 16], Box<SessionEntry>>,
    per_nas: Mutex<HashMap<String, u64>>,
}

impl SessionTable {
    /// A table of at most `max` sessions, each dropped after `idle` unused.
    pub fn new(max: u64, idle: Duration) -> Self {
        Self {
            table: Fifo::new(max, idle),
            per_nas: Mutex::default(),
        }
    }

    /// Conversations held for one client (NAS), expired ones dropped first.
    pub fn count(&self, nas: &str) -> u64 {
        let expired = self.table.expire();
        self.forget(expired.iter().map(|b| &**b));
        self.per_nas
            .lock()
            .ok()
            .and_then(|m| m.get(nas).copied())
            .unwrap_or(0)
    }

    fn forget<'a>(&self, left: impl IntoIterator<Item = &'a SessionEntry>) {
        if let Ok(mut m) = self.per_nas.lock() {
            for e in left {
                if let Some(n) = m.get_mut(&e.nas) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(&e.nas);
                    }
                }
            }
        }
    }

    /// Takes the session for a State out of the table.
    pub fn take(&self, state: &[u8]) -> Option<SessionEntry> {
        let key: [u8; 16] = state.try_into().ok()?;
        let (entry, expired) = self.table.remove(&key);
        self.forget(expired.iter().chain(&entry).map(|b| &**b));
        entry.map(|b| *b)
    }

    /// Stores a session under a State; the least recently used one leaves if the table is
    /// full.
    pub fn put(&self, state: [u8; 16], entry: SessionEntry) {
        if let Ok(mut m) = self.per_nas.lock() {
            if let Some(n) = m.get_mut(&entry.nas) {
                *n += 1;
            } else {
                m.insert(entry.nas.clone(), 1);
            }
        }
        let left = self.table.insert(state, Box::new(entry));
        if !left.is_empty() {
            self.forget(left.iter().map(|b| &**b));
        }
    }

    /// Sessions held now.
    pub fn len(&self) -> u64 {
        u64::try_from(self.table.len()).unwrap_or(u64::MAX)
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
