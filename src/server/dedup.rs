//! Duplicate detection (RFC 5080 §2.2.2): a retransmission (same source address and port,
//! Identifier and Request Authenticator) gets the cached reply; one still being processed
//! is dropped, never processed twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

/// Identifies one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// Source address and port.
    pub src: SocketAddr,
    /// RADIUS Identifier.
    pub identifier: u8,
    /// Request Authenticator.
    pub authenticator: [u8; 16],
}

#[derive(Debug, Clone)]
enum Slot {
    InProgress,
    Answered(Arc<Vec<u8>>),
}

/// What to do with a request.
#[derive(Debug)]
pub enum Begin {
    /// First sight: process it, then call [`Dedup::answered`] or [`Dedup::abandon`].
    New,
    /// Being processed right now: drop this copy.
    InProgress,
    /// Already answered: send this reply again.
    Replay(Arc<Vec<u8>>),
}

/// The cache of recent requests and replies.
pub struct Dedup {
    cache: Cache<RequestKey, Slot>,
}

impl Dedup {
    /// A cache holding at most `capacity` requests for `window`.
    pub fn new(capacity: u64, window: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
        }
    }

    /// Registers a request atomically.
    pub fn begin(&self, key: RequestKey) -> Begin {
        let entry = self.cache.entry(key).or_insert_with(|| Slot::InProgress);
        if entry.is_fresh() {
            return Begin::New;
        }
        match entry.into_value() {
            Slot::InProgress => Begin::InProgress,
            Slot::Answered(reply) => Begin::Replay(reply),
        }
    }

    /// Stores the reply sent for a request.
    pub fn answered(&self, key: RequestKey, reply: Arc<Vec<u8>>) {
        self.cache.insert(key, Slot::Answered(reply));
    }

    /// Forgets a request that got no reply, so a retransmission is processed afresh.
    pub fn abandon(&self, key: &RequestKey) {
        self.cache.invalidate(key);
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
        d.answered(key, Arc::new(vec![1, 2, 3]));
        assert!(matches!(d.begin(key), Begin::Replay(r) if *r == vec![1, 2, 3]));
        let other = RequestKey {
            identifier: 2,
            ..key
        };
        assert!(matches!(d.begin(other), Begin::New));
        d.abandon(&other);
        assert!(matches!(d.begin(other), Begin::New));
    }
}
