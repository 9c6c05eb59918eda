//! Each client's share of the server: requests in flight and turns at the CPU-bound TLS steps.
//!
//! Without shares, a flood of half-open handshakes behind one NAS (each ClientHello costs the
//! server a key exchange and a signature) fills the in-flight slots and the run queue, and
//! the devices of every other NAS wait behind it. Here every client entry gets:
//! - a cap on its requests in flight (`server.max_inflight_per_client`); past it its
//!   datagrams are dropped and counted, as past the global cap;
//! - at most [`Shares::steps`] TLS steps at once (the cores the process may use). A step
//!   waits for its client's turn, not behind other clients' queues, so however many requests
//!   one NAS has queued, another NAS's step competes with at most that many of them.
//!
//! Waiting for a turn does not run on the CPU; the deadline of the step (the signing deadline
//! with a token, else [`STEP_WAIT`]) bounds it, and a step that misses it fails closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a step without a token may wait for its client's turn.
pub const STEP_WAIT: Duration = Duration::from_secs(2);

/// The shares of every client entry seen, by name (names are unique in a config).
pub struct Shares {
    by_client: Mutex<HashMap<String, Arc<Share>>>,
    steps: usize,
}

/// One client's share.
pub struct Share {
    inflight: AtomicUsize,
    steps: Arc<Semaphore>,
}

/// A request in flight, counted against its client until dropped.
pub struct InFlight {
    share: Arc<Share>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.share.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shares {
    /// Shares allowing `steps` TLS steps at once per client.
    pub fn new(steps: usize) -> Self {
        Self {
            by_client: Mutex::default(),
            steps: steps.max(1),
        }
    }

    /// Steps one client may run at once.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The share of the client entry named `client`.
    pub fn of(&self, client: &str) -> Arc<Share> {
        let mut m = self
            .by_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(client.to_owned())
            .or_insert_with(|| {
                Arc::new(Share {
                    inflight: AtomicUsize::new(0),
                    steps: Arc::new(Semaphore::new(self.steps)),
                })
            })
            .clone()
    }
}

impl Default for Shares {
    /// As many steps per client as the process may use cores.
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, usize::from))
    }
}

impl Share {
    /// Counts a request in flight, unless the client already has `cap` (None: no cap).
    pub fn enter(self: &Arc<Self>, cap: Option<usize>) -> Option<InFlight> {
        let cap = cap.unwrap_or(usize::MAX);
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight {
            share: self.clone(),
        })
    }

    /// Waits for this client's turn at a TLS step; hold the permit for the step.
    pub async fn step(&self) -> Option<OwnedSemaphorePermit> {
        self.steps.clone().acquire_owned().await.ok()
    }

    /// Requests of this client in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_at_its_cap_gets_no_more_in_flight_and_others_are_unaffected() {
        let shares = Shares::new(2);
        let a = shares.of("a");
        let held: Vec<_> = (0..3).map(|_| a.enter(Some(3)).unwrap()).collect();
        assert!(a.enter(Some(3)).is_none(), "at its cap");
        assert!(shares.of("b").enter(Some(3)).is_some(), "another client");
        assert!(a.enter(None).is_some(), "no cap");
        drop(held);
        assert_eq!(a.inflight(), 0);
        assert!(a.enter(Some(3)).is_some());
    }

    #[tokio::test]
    async fn one_clients_queue_of_steps_does_not_hold_up_another_client() {
        let shares = Arc::new(Shares::new(2));
        let a = shares.of("a");
        let _busy = (a.step().await.unwrap(), a.step().await.unwrap());
        // Client a has its two steps running and more waiting.
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.step().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a waits for its own turn");
        // Client b gets its turn at once.
        let b = shares.of("b");
        let turn = tokio::time::timeout(Duration::from_millis(100), b.step()).await;
        assert!(matches!(turn, Ok(Some(_))));
        waiting.abort();
    }
}
