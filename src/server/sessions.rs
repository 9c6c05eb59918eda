//! The EAP session table, keyed by the State attribute we issued (RFC 2865 §5.24).
//!
//! Bounded: at most `max_sessions` entries (least recently used evicted first) and each
//! dropped after `idle` without traffic, so a flood of half-open handshakes cannot exhaust
//! memory. A session is taken out while a request works on it and put back under a new
//! State, so two requests never work on one session at once and old States stop working.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::checks::{Checked, Early, EarlyPosture};
use super::fifo::{Fifo, Removal};
use crate::config::Client;
use crate::eap::Session;
use crate::policy::{Policy, RequestFacts};

/// Everything kept between two round trips of one device.
#[derive(Debug)]
pub struct SessionEntry {
    /// The EAP-TLS state machine.
    pub session: Session,
    /// EAP identity the device gave.
    pub identity: String,
    /// Name of the client entry (NAS) the conversation belongs to. Names are unique in a
    /// config (`check` refuses duplicates).
    pub nas: String,
    /// Address block of that client entry. With the name it identifies the entry, so only
    /// requests matched to the same entry may continue the conversation, and a reload that
    /// keeps the entry keeps its conversations.
    pub nas_network: IpNet,
    /// The device's Calling-Station-Id (normalised MAC, see [`station_id`]), if the NAS
    /// sent one.
    pub station: Option<String>,
    /// When the conversation started.
    pub started: Instant,
    /// What the NAS said in the request that started the conversation.
    pub first: RequestFacts,
    /// The facts, decision and trace, once the peer is authenticated and checked.
    pub checked: Option<Box<Checked>>,
    /// Revocation being checked since the device's certificate was verified mid-flight.
    pub early: Option<Early>,
    /// Posture being looked up since then.
    pub early_posture: Option<EarlyPosture>,
    /// The policy in force when the conversation started: it decides, even if a reload
    /// replaced it since.
    pub policy: Arc<Policy>,
}

impl SessionEntry {
    /// True when `client` is the entry this conversation started with.
    pub fn belongs_to(&self, client: &Client) -> bool {
        self.nas == client.name && self.nas_network == client.network
    }
}

/// Why [`SessionTable::take`] gave no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// No conversation under this State.
    Unknown,
    /// The State belongs to a conversation of another client entry; it was left alone.
    OtherClient,
    /// A request with this State is being processed right now (a NAS's retransmission with
    /// a new Identifier, say): the conversation is out of the table, not gone.
    InUse,
}

/// Marks a State as being worked on until dropped; see [`SessionTable::take`].
pub struct InUse<'a> {
    table: &'a SessionTable,
    state: [u8; 16],
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.table.busy().remove(&self.state);
    }
}

/// Conversations held, per client entry and per device.
#[derive(Default)]
struct Counts {
    nas: HashMap<String, u64>,
    device: HashMap<(String, String), u64>,
}

impl Counts {
    fn add(&mut self, e: &SessionEntry) {
        *self.nas.entry(e.nas.clone()).or_default() += 1;
        if let Some(station) = &e.station {
            *self
                .device
                .entry((e.nas.clone(), station.clone()))
                .or_default() += 1;
        }
    }

    fn remove(&mut self, e: &SessionEntry) {
        fn down<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u64>, k: &K) {
            if let Some(n) = m.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(k);
                }
            }
        }
        down(&mut self.nas, &e.nas);
        if let Some(station) = &e.station {
            down(&mut self.device, &(e.nas.clone(), station.clone()));
        }
    }
}

pub use crate::radius::attr::station_id;

/// The table.
pub struct SessionTable {
    /// Each round trip takes a session out and puts it back under a new State, so the
    /// table's insertion order is least-recently-used order and age is idle time.
    /// Boxed: the hash table's spare capacity then costs a pointer per slot, not a session.
    table: Fifo<[u8; 16], Box<SessionEntry>>,
    /// Conversations held per client entry, and per (client, Calling-Station-Id).
    per_nas: Mutex<Counts>,
    /// States whose conversation a request is working on; one per such request, so bounded
    /// by the server's in-flight cap.
    busy: Mutex<HashSet<[u8; 16]>>,
}

impl SessionTable {
    /// A table of at most `max` sessions, each dropped after `idle` unused.
    pub fn new(max: u64, idle: Duration) -> Self {
        Self {
            table: Fifo::new(max, idle),
            per_nas: Mutex::default(),
            busy: Mutex::default(),
        }
    }

    /// Conversations held for one client (NAS), expired ones dropped first.
    pub fn count(&self, nas: &str) -> u64 {
        let expired = self.table.expire();
        self.forget(expired.iter().map(|b| &**b));
        self.per_nas
            .lock()
            .ok()
            .and_then(|m| m.nas.get(nas).copied())
            .unwrap_or(0)
    }

    /// Conversations held for one device (Calling-Station-Id) of one client.
    pub fn count_device(&self, nas: &str, station: &str) -> u64 {
        let expired = self.table.expire();
        self.forget(expired.iter().map(|b| &**b));
        self.per_nas
            .lock()
            .ok()
            .and_then(|m| m.device.get(&(nas.to_owned(), station.to_owned())).copied())
            .unwrap_or(0)
    }

    fn forget<'a>(&self, left: impl IntoIterator<Item = &'a SessionEntry>) {
        if let Ok(mut m) = self.per_nas.lock() {
            for e in left {
                m.remove(e);
            }
        }
    }

    /// Takes the session for a State out of the table, if it belongs to `client`, and marks
    /// the State in use until the returned [`InUse`] is dropped. A State of another client
    /// entry leaves the conversation untouched: a NAS that saw another NAS's State cannot
    /// end that conversation.
    ///
    /// # Errors
    /// [`TakeError::Unknown`] for a State not held (never issued, used, expired or evicted);
    /// [`TakeError::OtherClient`] for a State issued to a different client entry;
    /// [`TakeError::InUse`] while another request works on the conversation.
    pub fn take(
        &self,
        state: &[u8],
        client: &Client,
    ) -> Result<(SessionEntry, InUse<'_>), TakeError> {
        let key: [u8; 16] = state.try_into().map_err(|_| TakeError::Unknown)?;
        let mut busy = self.busy();
        if busy.contains(&key) {
            return Err(TakeError::InUse);
        }
        let (removal, expired) = self.table.remove_if(&key, |e| e.belongs_to(client));
        self.forget(expired.iter().map(|b| &**b));
        match removal {
            Removal::Removed(e) => {
                self.forget([&*e]);
                busy.insert(key);
                Ok((
                    *e,
                    InUse {
                        table: self,
                        state: key,
                    },
                ))
            }
            Removal::Refused => Err(TakeError::OtherClient),
            Removal::Absent => Err(TakeError::Unknown),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 16]>> {
        // A panic while holding it leaves plain data behind; keep serving.
        self.busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a session under a State; the least recently used one leaves if the table is
    /// full.
    pub fn put(&self, state: [u8; 16], entry: SessionEntry) {
        if let Ok(mut m) = self.per_nas.lock() {
            m.add(&entry);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn station_ids_in_every_mac_notation_read_the_same() {
        for raw in [
            "00:11:22:aa:bb:cc",
            "00-11-22-AA-BB-CC",
            "0011.22aa.bbcc",
            "001122AABBCC",
        ] {
            assert_eq!(station_id(raw.as_bytes()), "00-11-22-AA-BB-CC", "{raw}");
        }
        assert_eq!(station_id(b"not a mac"), "not a mac");
        assert_eq!(station_id(b"00:11:22:aa:bb:cc:dd"), "00:11:22:aa:bb:cc:dd");
        assert_eq!(station_id(&[b'x'; 300]).len(), 64);
    }
}
