//! A bounded map whose entries leave in insertion order: once older than `ttl`, or oldest
//! first when a shard is full.
//!
//! Both the duplicate cache and the session table fit it. A reply is kept for one fixed
//! window; a session is taken out on every round trip and put back under a new State, so
//! insertion order is least-recently-used order and an entry's age is its idle time.
//!
//! Sharded by key hash so requests on different cores rarely wait on one lock. Every
//! operation is O(1) amortised; memory is bounded by `capacity` entries plus one queue slot
//! each. Expired entries leave on the next operation on their shard.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock;

/// At most this many shards; small tables get fewer so the bound stays close to LRU.
const MAX_SHARDS: u64 = 16;
/// Entries per shard below which a table is not split further.
const MIN_PER_SHARD: u64 = 1024;

/// What [`Fifo::remove_if`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal<V> {
    /// Nothing (live) under the key.
    Absent,
    /// A value is there but was refused; it stays.
    Refused,
    /// The value, now out of the map.
    Removed(V),
}

/// The map.
pub struct Fifo<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
}

struct Shard<K, V> {
    /// Value and the stamp of its queue slot.
    map: HashMap<K, (u64, V)>,
    /// Insertion order; a slot whose stamp no longer matches the map is stale and skipped.
    order: VecDeque<(Instant, u64, K)>,
    next: u64,
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    fn live(&self, stamp: u64, key: &K) -> bool {
        self.map.get(key).is_some_and(|(s, _)| *s == stamp)
    }

    /// Drops what is older than `ttl` and, while more than `keep` entries are held, the
    /// oldest; returns the values dropped.
    fn trim(&mut self, now: Instant, ttl: Duration, keep: usize) -> Vec<V> {
        // Removed and replaced entries leave stale slots; sweep them once they outnumber
        // the live ones, so the queue stays within twice the capacity.
        if self.order.len() > 2 * keep.max(self.map.len()).max(1) {
            let map = &self.map;
            self.order
                .retain(|(_, stamp, key)| map.get(key).is_some_and(|(s, _)| s == stamp));
        }
        let mut gone = Vec::new();
        while let Some((at, stamp, key)) = self.order.front() {
            let live = self.live(*stamp, key);
            if live && self.map.len() <= keep && now.saturating_duration_since(*at) < ttl {
                break;
            }
            let Some((_, _, key)) = self.order.pop_front() else {
                break;
            };
            if live {
                gone.extend(self.map.remove(&key).map(|(_, v)| v));
            }
        }
        gone
    }

    fn push(&mut self, now: Instant, key: K, value: V) -> Option<V> {
        let stamp = self.next;
        self.next = self.next.wrapping_add(1);
        self.order.push_back((now, stamp, key.clone()));
        self.map.insert(key, (stamp, value)).map(|(_, v)| v)
    }
}

impl<K: Hash + Eq + Clone, V> Fifo<K, V> {
    /// A map of at most `capacity` entries (at least one), each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let capacity = capacity.max(1);
        let shards = (capacity / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_shard = usize::try_from(capacity / shards).unwrap_or(usize::MAX);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: VecDeque::new(),
                        next: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            per_shard,
            ttl,
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        let n = self.shards.len();
        let i = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % n.max(1);
        #[allow(
            clippy::indexing_slicing,
            reason = "i < shards.len(), which is at least 1"
        )]
        let m = &self.shards[i];
        // A panic while holding a shard leaves plain data behind; keep serving.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts (replacing any value under `key`). Returns the values that left to make room
    /// or because they expired, for the caller's bookkeeping.
    pub fn insert(&self, key: K, value: V) -> Vec<V> {
        let now = clock::now();
        let mut s = self.shard(&key);
        let mut gone = s.trim(now, self.ttl, self.per_shard.saturating_sub(1));
        gone.extend(s.push(now, key, value));
        gone
    }

    /// Replaces the value under `key` in place, keeping its age; inserts it if absent.
    /// Returns what [`Self::insert`] would.
    pub fn set(&self, key: K, value: V) -> Vec<V> {
        let now = clock::now();
        let mut s = self.shard(&key);
        let mut gone = s.trim(now, self.ttl, self.per_shard);
        if let Some((_, v)) = s.map.get_mut(&key) {
            gone.push(std::mem::replace(v, value));
            return gone;
        }
        gone.extend(self.make_room(&mut s, now));
        gone.extend(s.push(now, key, value));
        gone
    }

    /// Evicts the oldest entry if the shard is full, before a new key goes in.
    fn make_room(&self, s: &mut Shard<K, V>, now: Instant) -> Vec<V> {
        if s.map.len() < self.per_shard {
            return Vec::new();
        }
        s.trim(now, self.ttl, self.per_shard.saturating_sub(1))
    }

    /// Looks `key` up, inserting `make()` if absent. `read` sees the value and whether it
    /// was just inserted. Returns its result and the values that left (see [`Self::insert`]).
    pub fn get_or_insert_with<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        read: impl FnOnce(&V, bool) -> R,
    ) -> (R, Vec<V>) {
        let now = clock::now();
        let mut s = self.shard(&key);
        let mut gone = s.trim(now, self.ttl, self.per_shard);
        if let Some((_, v)) = s.map.get(&key) {
            return (read(v, false), gone);
        }
        gone.extend(self.make_room(&mut s, now));
        let v = make();
        let r = read(&v, true);
        s.push(now, key, v);
        (r, gone)
    }

    /// A copy of the value under `key`, if it is there and not expired, and the values that
    /// expired meanwhile (see [`Self::insert`]).
    pub fn get(&self, key: &K) -> (Option<V>, Vec<V>)
    where
        V: Clone,
    {
        let now = clock::now();
        let mut s = self.shard(key);
        let gone = s.trim(now, self.ttl, self.per_shard);
        (s.map.get(key).map(|(_, v)| v.clone()), gone)
    }

    /// Removes and returns the value under `key`, if it is there and not expired, and the
    /// values that expired meanwhile (see [`Self::insert`]).
    pub fn remove(&self, key: &K) -> (Option<V>, Vec<V>) {
        let now = clock::now();
        let mut s = self.shard(key);
        let gone = s.trim(now, self.ttl, self.per_shard);
        (s.map.remove(key).map(|(_, v)| v), gone)
    }

    /// Removes the value under `key` only if `accept` approves it; a refused value stays
    /// where it was, with its age. Returns what happened and the values that expired
    /// meanwhile (see [`Self::insert`]).
    pub fn remove_if(&self, key: &K, accept: impl FnOnce(&V) -> bool) -> (Removal<V>, Vec<V>) {
        let now = clock::now();
        let mut s = self.shard(key);
        let gone = s.trim(now, self.ttl, self.per_shard);
        let removal = match s.map.get(key) {
            None => Removal::Absent,
            Some((_, v)) if !accept(v) => Removal::Refused,
            Some(_) => s
                .map
                .remove(key)
                .map_or(Removal::Absent, |(_, v)| Removal::Removed(v)),
        };
        (removal, gone)
    }

    /// Drops every expired entry now (other operations do so only on their own shard);
    /// returns the values dropped.
    pub fn expire(&self) -> Vec<V> {
        let now = clock::now();
        let mut gone = Vec::new();
        for m in self.shards.iter() {
            let mut s = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            gone.extend(s.trim(now, self.ttl, self.per_shard));
        }
        gone
    }

    /// Entries held now, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().map_or(0, |s| s.map.len()))
            .sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_leaves_first_when_full() {
        let f: Fifo<u32, u32> = Fifo::new(3, Duration::from_secs(60));
        for k in 0..3 {
            assert!(f.insert(k, k * 10).is_empty());
        }
        assert_eq!(f.insert(3, 30), vec![0]);
        assert_eq!(f.remove(&0).0, None);
        assert_eq!(f.remove(&1).0, Some(10));
        // 1 left by removal: room for one more without evicting.
        assert!(f.insert(4, 40).is_empty());
        assert_eq!(f.len(), 3);
        assert_eq!(f.insert(5, 50), vec![20]);
    }

    #[test]
    fn replacing_keeps_one_entry_and_the_new_value() {
        let f: Fifo<u32, &str> = Fifo::new(2, Duration::from_secs(60));
        assert!(f.insert(1, "one").is_empty());
        assert_eq!(f.insert(1, "uno"), vec!["one"]);
        assert_eq!(f.len(), 1);
        assert!(f.insert(2, "two").is_empty());
        // The stale queue slot of the first insert of 1 is skipped; 1 is still the oldest.
        assert_eq!(f.insert(3, "three"), vec!["uno"]);
        assert_eq!(f.remove(&1).0, None);
        assert_eq!(f.remove(&2).0, Some("two"));
        assert_eq!(f.remove(&3).0, Some("three"));
    }

    #[test]
    fn set_replaces_in_place_without_a_new_queue_slot() {
        let f: Fifo<u32, &str> = Fifo::new(2, Duration::from_secs(60));
        assert!(f.set(1, "one").is_empty());
        assert!(f.insert(2, "two").is_empty());
        assert_eq!(f.set(1, "uno"), vec!["one"]);
        assert_eq!(f.shards.first().unwrap().lock().unwrap().order.len(), 2);
        // 1 kept its age: it is still the oldest.
        assert_eq!(f.insert(3, "three"), vec!["uno"]);
    }

    #[test]
    fn stale_slots_are_swept() {
        let f: Fifo<u32, u32> = Fifo::new(4, Duration::from_secs(60));
        for k in 0..1000 {
            assert!(f.insert(k, k).is_empty());
            assert_eq!(f.remove(&k).0, Some(k));
        }
        let s = f.shards.first().unwrap().lock().unwrap();
        assert!(s.order.len() <= 8, "{}", s.order.len());
    }

    #[test]
    fn get_or_insert_is_atomic_and_reports_freshness() {
        let f: Fifo<u32, &str> = Fifo::new(10, Duration::from_secs(60));
        let (fresh, _) = f.get_or_insert_with(7, || "a", |v, fresh| (*v, fresh));
        assert_eq!(fresh, ("a", true));
        let (again, _) = f.get_or_insert_with(7, || "b", |v, fresh| (*v, fresh));
        assert_eq!(again, ("a", false));
    }

    #[test]
    fn remove_if_leaves_a_refused_value_in_place() {
        let f: Fifo<u32, &str> = Fifo::new(2, Duration::from_secs(60));
        assert!(f.insert(1, "one").is_empty());
        assert!(f.insert(2, "two").is_empty());
        assert_eq!(f.remove_if(&1, |v| *v == "uno"), (Removal::Refused, vec![]));
        assert_eq!(f.len(), 2);
        // Still the oldest: refusing did not refresh its place.
        assert_eq!(f.insert(3, "three"), vec!["one"]);
        assert_eq!(f.remove_if(&1, |_| true), (Removal::Absent, vec![]));
        assert_eq!(
            f.remove_if(&2, |v| *v == "two"),
            (Removal::Removed("two"), vec![])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_ttl() {
        let f: Fifo<u32, u32> = Fifo::new(10, Duration::from_secs(30));
        assert!(f.insert(1, 1).is_empty());
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(f.insert(2, 2).is_empty());
        tokio::time::advance(Duration::from_secs(11)).await;
        // Removing 1 finds it gone and hands back what expired, for the caller's counts.
        assert_eq!(f.remove(&1), (None, vec![1]));
        assert_eq!(f.remove(&2), (Some(2), vec![]));
    }

    #[test]
    fn concurrent_use_keeps_the_bound_and_loses_nothing_it_holds() {
        let f: std::sync::Arc<Fifo<u64, u64>> =
            std::sync::Arc::new(Fifo::new(4096, Duration::from_secs(60)));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let (mut evicted, mut taken) = (0, 0);
                    for i in 0..20_000u64 {
                        let k = t << 32 | i;
                        evicted += f.insert(k, k).len();
                        // Every other key is taken straight back, as a session is (unless
                        // other threads filled the shard and evicted it meanwhile).
                        if i % 2 == 0 {
                            taken += usize::from(f.remove(&k).0 == Some(k));
                        }
                    }
                    (evicted, taken)
                })
            })
            .collect();
        let (mut evicted, mut taken) = (0, 0);
        for t in threads {
            let (e, k) = t.join().unwrap();
            evicted += e;
            taken += k;
        }
        let held = f.len();
        assert!(held <= 4096, "{held}");
        assert!(taken > 0);
        // Every insert is held, was evicted, or was taken back: nothing lost or duplicated.
        assert_eq!(held + evicted + taken, 4 * 20_000);
    }

    #[test]
    fn large_tables_are_sharded_and_stay_bounded() {
        let f: Fifo<u64, ()> = Fifo::new(20_000, Duration::from_secs(60));
        assert_eq!(f.shards.len(), 16);
        for k in 0..100_000 {
            drop(f.insert(k, ()));
        }
        assert!(f.len() <= 20_000, "{}", f.len());
        assert!(f.len() > 19_000, "{}", f.len());
        for m in f.shards.iter() {
            let s = m.lock().unwrap();
            assert!(s.order.len() <= f.per_shard);
        }
    }
}
