//! Duplicate detection (RFC 5080 §2.2.2): a retransmission (same source address and port,
//! Identifier and Request Authenticator) gets the cached reply; one still being processed
//! is dropped, never processed twice.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::fifo::Fifo;

/// Identifies one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey {
    /// Source address and port.
    pub src: SocketAddr,
    /// RADIUS Identifier.
    pub identifier: u8,
    /// Request Authenticator.
    pub authenticator: [u8; 16],
}

impl Hash for RequestKey {
    /// One write of the fields that tell requests apart, so hashing costs one pass.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 35];
        let (ip, rest) = b.split_at_mut(16);
        match self.src.ip() {
            IpAddr::V4(a) => ip.copy_from_slice(&a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => ip.copy_from_slice(&a.octets()),
        }
        let (port, rest) = rest.split_at_mut(2);
        port.copy_from_slice(&self.src.port().to_be_bytes());
        let (id, auth) = rest.split_at_mut(1);
        id.fill(self.identifier);
        auth.copy_from_slice(&self.authenticator);
        state.write(&b);
    }
}

#[derive(Debug, Clone)]
enum Slot {
    InProgress,
    Answered(Arc<[u8]>),
}

/// What to do with a request.
#[derive(Debug)]
pub enum Begin {
    /// First sight: process it, then call [`Dedup::answered`] or [`Dedup::abandon`].
    New,
    /// Being processed right now: drop this copy.
    InProgress,
    /// Already answered: send this reply again.
    Replay(Arc<[u8]>),
}

/// The cache of recent requests and replies.
pub struct Dedup {
    cache: Fifo<RequestKey, Slot>,
}

impl Dedup {
    /// A cache holding at most `capacity` requests, each for `window` from its first sight.
    pub fn new(capacity: u64, window: Duration) -> Self {
        Self {
            cache: Fifo::new(capacity, window),
        }
    }

    /// Registers a request atomically.
    pub fn begin(&self, key: RequestKey) -> Begin {
        let (begin, _) = self.cache.get_or_insert_with(
            key,
            || Slot::InProgress,
            |slot, fresh| match slot {
                _ if fresh => Begin::New,
                Slot::InProgress => Begin::InProgress,
                Slot::Answered(reply) => Begin::Replay(reply.clone()),
            },
        );
        begin
    }

    /// Stores the reply sent for a request (kept for the window from the request's first
    /// sight).
    pub fn answered(&self, key: RequestKey, reply: Arc<[u8]>) {
        drop(self.cache.set(key, Slot::Answered(reply)));
    }

    /// Forgets a request that got no reply, so a retransmission is processed afresh.
    pub fn abandon(&self, key: &RequestKey) {
        drop(self.cache.remove(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_copy_waits_then_replays() {
        let d = Dedup::new(100, Duration::from_secs(30));
        let key = RequestKey {
            src: "127.0.0.1:1000".parse().unwrap(),
            identifier: 1,
            authenticator: [7; 16],
        };
        assert!(matches!(d.begin(key), Begin::New));
        assert!(matches!(d.begin(key), Begin::InProgress));
        d.answered(key, Arc::from([1, 2, 3]));
        assert!(matches!(d.begin(key), Begin::Replay(r) if *r == [1, 2, 3]));
        let other = RequestKey {
            identifier: 2,
            ..key
        };
        assert!(matches!(d.begin(other), Begin::New));
        d.abandon(&other);
        assert!(matches!(d.begin(other), Begin::New));
    }
}
