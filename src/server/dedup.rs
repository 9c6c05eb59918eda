//! Duplicate detection (RFC 5080 §2.2.2): a retransmission (same source address and port,
//! Identifier and Request Authenticator) gets the cached reply; one still being processed
//! is dropped, never processed twice, however long it takes.
//!
//! Sized by bytes, not by a count tied to the session table: replies are kept for the
//! window while their total weight (reply plus bookkeeping) stays within the budget
//! (`server.duplicate_cache_mib`), so a NAS retransmitting within the window gets the cached
//! reply at any rate the budget covers (128 MiB: about 86,000 challenges of 1 KiB, 17,000
//! requests a second over a 5 s window); past it a reply is not cached and its
//! retransmission is processed afresh. Memory stays within the budget whatever the rate.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::fifo::Fifo;

/// Locks over the requests being processed.
const BUSY_SHARDS: usize = 16;

/// Bytes one cached reply may cost besides the reply itself, at worst: its map slot (key,
/// stamp, pointer; the table at its load factor, doubled while it grows), its age-queue
/// slot (time, stamp, key; up to twice as many slots as entries, doubled while it grows),
/// the shared reply's header and the allocator's rounding.
pub const ENTRY_OVERHEAD: usize = 448;

/// What a cached reply weighs against the budget.
fn weight(reply: &[u8]) -> usize {
    reply.len() + ENTRY_OVERHEAD
}

/// Identifies one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey {
    /// Source address and port.
    pub src: SocketAddr,
    /// Packet code: an Access-Request and an Accounting-Request (two ports, two kinds of
    /// answer) never stand for each other, whatever their identifiers and authenticators.
    pub code: u8,
    /// RADIUS Identifier.
    pub identifier: u8,
    /// Request Authenticator.
    pub authenticator: [u8; 16],
}

impl Hash for RequestKey {
    /// One write of the fields that tell requests apart, so hashing costs one pass.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 36];
        let (ip, rest) = b.split_at_mut(16);
        match self.src.ip() {
            IpAddr::V4(a) => ip.copy_from_slice(&a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => ip.copy_from_slice(&a.octets()),
        }
        let (port, rest) = rest.split_at_mut(2);
        port.copy_from_slice(&self.src.port().to_be_bytes());
        let (code, rest) = rest.split_at_mut(1);
        code.fill(self.code);
        let (id, auth) = rest.split_at_mut(1);
        id.fill(self.identifier);
        auth.copy_from_slice(&self.authenticator);
        state.write(&b);
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Begin<'a> {
    /// First sight: process it, then hand the reply to [`Pending::answered`]; dropping the
    /// ticket without a reply forgets the request, so a retransmission is processed afresh.
    New(Pending<'a>),
    /// Being processed right now: drop this copy.
    InProgress,
    /// Already answered: send this reply again.
    Replay(Arc<[u8]>),
}

/// A request being processed. While it exists, copies of the request are dropped however
/// long processing takes (revocation timeouts, CRL fallback, signing deadlines): only a
/// reply ages out of the window. Each is held by the task working on its request, so there
/// are never more than the server's in-flight cap.
#[derive(Debug)]
pub struct Pending<'a> {
    dedup: &'a Dedup,
    key: RequestKey,
}

impl Pending<'_> {
    /// Stores the reply sent for the request; copies get it for the window from now.
    pub fn answered(self, reply: Arc<[u8]>) {
        let dedup = self.dedup;
        let mut busy = dedup.busy_shard(&self.key);
        let w = weight(&reply);
        // Reserve the reply's weight first: the budget holds even with many answering at
        // once. Over it, the expired replies every shard still holds are dropped (each
        // shard drops its own only when it is next used), and the reply gets one more try.
        if dedup.reserve(w) || (dedup.release_expired() && dedup.reserve(w)) {
            let gone = dedup.replies.insert(self.key, reply);
            dedup.release(&gone);
        } else {
            dedup.over_budget.fetch_add(1, Ordering::Relaxed);
        }
        busy.remove(&self.key);
        drop(busy);
        // Already removed: nothing left for Drop to do.
        std::mem::forget(self);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.dedup.busy_shard(&self.key).remove(&self.key);
    }
}

/// The cache of recent requests and replies.
pub struct Dedup {
    /// Answered requests, each kept for the window from its answer.
    replies: Fifo<RequestKey, Arc<[u8]>>,
    /// Requests being processed, sharded like the replies so tasks rarely wait on one lock.
    busy: Box<[Mutex<HashSet<RequestKey>>]>,
    hasher: RandomState,
    /// Weight of the replies held (expired ones not yet dropped included).
    bytes: AtomicUsize,
    /// Most weight held.
    budget: usize,
    /// Replies not cached because the budget was spent.
    over_budget: AtomicUsize,
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup").finish_non_exhaustive()
    }
}

impl Dedup {
    /// A cache holding replies of at most `budget` bytes in all (see [`ENTRY_OVERHEAD`]),
    /// each for `window` from its answer.
    pub fn new(budget: usize, window: Duration) -> Self {
        // As many entries as the budget could hold of the smallest replies (20 bytes).
        let most = u64::try_from(budget / weight(&[0; crate::radius::MIN_PACKET])).unwrap_or(1);
        Self {
            replies: Fifo::new(most, window),
            busy: (0..BUSY_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            bytes: AtomicUsize::new(0),
            budget,
            over_budget: AtomicUsize::new(0),
        }
    }

    /// Takes `w` bytes of the budget, if they are free.
    fn reserve(&self, w: usize) -> bool {
        if self.bytes.fetch_add(w, Ordering::Relaxed).saturating_add(w) <= self.budget {
            return true;
        }
        self.bytes.fetch_sub(w, Ordering::Relaxed);
        false
    }

    /// Drops every expired reply now; true when that freed anything.
    fn release_expired(&self) -> bool {
        let gone = self.replies.expire();
        self.release(&gone);
        !gone.is_empty()
    }

    /// Gives back the weight of replies that left the cache.
    fn release(&self, gone: &[Arc<[u8]>]) {
        let w: usize = gone.iter().map(|r| weight(r)).sum();
        if w > 0 {
            self.bytes.fetch_sub(w, Ordering::Relaxed);
        }
    }

    /// Bytes the cached replies weigh now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Replies not cached so far because the budget was spent.
    pub fn over_budget(&self) -> usize {
        self.over_budget.load(Ordering::Relaxed)
    }

    fn busy_shard(&self, key: &RequestKey) -> MutexGuard<'_, HashSet<RequestKey>> {
        let n = self.busy.len().max(1);
        let i = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % n;
        #[allow(
            clippy::indexing_slicing,
            reason = "i < busy.len(), which is BUSY_SHARDS"
        )]
        let m = &self.busy[i];
        // A panic while holding a shard leaves plain data behind; keep serving.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a request atomically: a reply is looked up and the request marked as being
    /// processed under one lock, so two copies never both see [`Begin::New`].
    pub fn begin(&self, key: RequestKey) -> Begin<'_> {
        let mut busy = self.busy_shard(&key);
        if busy.contains(&key) {
            return Begin::InProgress;
        }
        let (cached, gone) = self.replies.get(&key);
        self.release(&gone);
        if let Some(reply) = cached {
            return Begin::Replay(reply);
        }
        busy.insert(key);
        Begin::New(Pending { dedup: self, key })
    }

    /// Requests being processed now.
    pub fn in_progress(&self) -> usize {
        self.busy
            .iter()
            .map(|m| m.lock().map_or(0, |s| s.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(identifier: u8) -> RequestKey {
        RequestKey {
            src: "127.0.0.1:1000".parse().unwrap(),
            code: 1,
            identifier,
            authenticator: [7; 16],
        }
    }

    #[test]
    fn an_accounting_request_is_never_answered_with_an_access_reply_of_the_same_id() {
        let d = Dedup::new(100 * weight(&[0; 64]), Duration::from_secs(30));
        let Begin::New(access) = d.begin(key(1)) else {
            panic!("first sight is new");
        };
        access.answered(std::sync::Arc::from(&b"access-reject"[..]));
        let accounting = RequestKey { code: 4, ..key(1) };
        assert!(matches!(d.begin(accounting), Begin::New(_)));
    }

    #[test]
    fn second_copy_waits_then_replays() {
        let d = Dedup::new(100 * weight(&[0; 64]), Duration::from_secs(30));
        let Begin::New(pending) = d.begin(key(1)) else {
            panic!("first sight is new");
        };
        assert!(matches!(d.begin(key(1)), Begin::InProgress));
        pending.answered(Arc::from([1, 2, 3]));
        assert!(matches!(d.begin(key(1)), Begin::Replay(r) if *r == [1, 2, 3]));
        assert_eq!(d.in_progress(), 0);
        let Begin::New(other) = d.begin(key(2)) else {
            panic!("another identifier is another request");
        };
        drop(other);
        assert!(matches!(d.begin(key(2)), Begin::New(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_never_expires_but_its_reply_does() {
        let d = Dedup::new(100 * weight(&[0; 64]), Duration::from_secs(5));
        let Begin::New(pending) = d.begin(key(1)) else {
            panic!("first sight is new");
        };
        // Far past the window (an OCSP timeout, a CRL fallback, a signing deadline), and
        // with other requests coming and going meanwhile: a copy is still dropped.
        for i in 0..60u8 {
            tokio::time::advance(Duration::from_secs(1)).await;
            drop(d.begin(key(100 + i)));
        }
        assert!(matches!(d.begin(key(1)), Begin::InProgress));
        pending.answered(Arc::from([9]));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(matches!(d.begin(key(1)), Begin::Replay(r) if *r == [9]));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(d.begin(key(1)), Begin::New(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn weight_left_by_expired_replies_in_other_shards_does_not_refuse_new_ones() {
        let key = |i: u16| RequestKey {
            src: "127.0.0.1:1000".parse().unwrap(),
            code: 1,
            identifier: 0,
            authenticator: [[0; 14].as_slice(), &i.to_be_bytes()]
                .concat()
                .try_into()
                .unwrap(),
        };
        let reply = || Arc::<[u8]>::from(vec![0; 1000]);
        let each = weight(&reply());
        // Enough replies for the map to be split in shards; the budget holds exactly them.
        let n = 2000u16;
        let d = Dedup::new(usize::from(n) * each, Duration::from_secs(5));
        let answer = |i: u16| match d.begin(key(i)) {
            Begin::New(p) => p.answered(reply()),
            other => panic!("{other:?}"),
        };
        (0..n).for_each(answer);
        assert_eq!(d.over_budget(), 0);
        assert_eq!(d.bytes(), usize::from(n) * each);
        tokio::time::advance(Duration::from_secs(6)).await;
        // Every reply has expired, but only the shard of the next key drops its own.
        let Begin::New(p) = d.begin(key(n)) else {
            panic!("new")
        };
        assert!(
            d.bytes() > each,
            "other shards still hold their expired weight"
        );
        p.answered(reply());
        assert_eq!(d.over_budget(), 0);
        assert!(matches!(d.begin(key(n)), Begin::Replay(_)));
        // What a reply over the budget does first: every shard drops its expired replies.
        assert!(d.release_expired());
        assert_eq!(d.bytes(), each, "only the live reply is weighed");
    }

    #[test]
    fn requests_in_progress_are_held_whatever_the_reply_capacity() {
        let d = Dedup::new(2, Duration::from_secs(30));
        let held: Vec<_> = (0..10)
            .map(|i| match d.begin(key(i)) {
                Begin::New(p) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(d.in_progress(), 10);
        assert!((0..10).all(|i| matches!(d.begin(key(i)), Begin::InProgress)));
        drop(held);
        assert_eq!(d.in_progress(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_budget_bounds_the_cache_and_frees_as_replies_expire() {
        let reply = |i: u8| Arc::<[u8]>::from(vec![i; 1000]);
        let each = weight(&reply(0));
        let d = Dedup::new(10 * each, Duration::from_secs(5));
        let answer = |i: u8| match d.begin(key(i)) {
            Begin::New(p) => p.answered(reply(i)),
            other => panic!("{other:?}"),
        };
        // Ten fit, all replayable within the window: a retransmission gets its reply.
        (0..10).for_each(answer);
        assert!((0..10).all(|i| matches!(d.begin(key(i)), Begin::Replay(r) if r[0] == i)));
        assert_eq!(d.bytes(), 10 * each);
        // The eleventh is not cached: the budget holds.
        answer(10);
        assert_eq!(d.over_budget(), 1);
        assert_eq!(d.bytes(), 10 * each);
        assert!(matches!(d.begin(key(10)), Begin::New(_)));
        // Past the window the weight is given back and replies are cached again.
        tokio::time::advance(Duration::from_secs(6)).await;
        for i in 0..10 {
            assert!(matches!(d.begin(key(i)), Begin::New(_)));
        }
        assert_eq!(d.bytes(), 0);
        answer(11);
        assert!(matches!(d.begin(key(11)), Begin::Replay(_)));
        assert_eq!(d.bytes(), each);
    }
}
