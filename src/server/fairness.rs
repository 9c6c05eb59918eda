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
//!
//! Turns alone still let a flooding client keep the cores busy whenever nobody else is
//! stepping, and the operating system then time-shares every other client's step with it.
//! So the processor time each client's requests take is also counted (their tasks' own
//! running time, see [`charged`], and their steps on the blocking pools; decaying over
//! [`USAGE_WINDOW`]), and a client that used more than an equal share of it among the
//! clients active, while together they keep at least half a core busy, has its requests,
//! and its steps, run on the background runtime ([`background`]): nice 19, `SCHED_BATCH`,
//! so the kernel runs the other clients' work first, yet still gives these threads a small
//! share and so never leaves a lock or permit they hold stuck. Alone, or on an idle server,
//! a client is never over; beside a flood, the other clients' devices do not wait for it.
//! Counting whole requests, not only TLS steps, and counting a client refused conversations
//! for its session-table share as over, keeps a flood that has hit its session cap (every
//! request a cheap reject) where it is.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::clock;

/// How long a step without a token may wait for its client's turn.
pub const STEP_WAIT: Duration = Duration::from_secs(2);

/// The time constant of the step-time counts: a client's usage is, roughly, the step time
/// it used in the last this long.
pub const USAGE_WINDOW: Duration = Duration::from_secs(1);

/// A client whose requests used less than this in the window is within its share whatever
/// the others use: a few devices never go to the background.
const LIGHT_USE: Duration = Duration::from_millis(20);

/// How far over an equal share a client must be to be over it: clients that use about the
/// same (two busy NASes, or a flood held to cheap rejects by its session cap beside a NAS
/// of devices) stay where they are instead of trading places.
const OVER_FACTOR: f64 = 1.25;

/// Below this much processor time used by all clients together in the window the server
/// is not contended, and nobody is over a share of it: a big controller beside a quiet
/// switch keeps normal priority.
const CONTENDED: Duration = Duration::from_millis(500);

/// A client counts as active when its requests used at least this in the window.
const ACTIVE_USE: Duration = Duration::from_millis(1);

/// How often the number of active clients is counted again.
const RECOUNT: Duration = Duration::from_millis(100);

/// The shares of every client entry seen, by name (names are unique in a config).
pub struct Shares {
    by_client: Mutex<HashMap<String, Arc<Share>>>,
    common: Arc<Common>,
}

/// What every share sees: the step count per client, the usage of all clients and how many
/// are active.
struct Common {
    steps: usize,
    total: Mutex<Usage>,
    /// Active clients, and when they were counted.
    active: Mutex<(usize, Option<Instant>)>,
}

/// One client's share.
pub struct Share {
    inflight: AtomicUsize,
    /// Whether its requests were last sent to the background runtime.
    in_background: AtomicBool,
    /// When a new conversation of it was last refused for its share of the session table.
    capped: Mutex<Option<Instant>>,
    steps: Arc<Semaphore>,
    usage: Mutex<Usage>,
    common: Arc<Common>,
}

/// Processor time used, decaying exponentially with [`USAGE_WINDOW`].
#[derive(Default, Clone, Copy)]
struct Usage {
    /// Seconds used, as of `at`.
    secs: f64,
    at: Option<Instant>,
}

impl Usage {
    /// The usage as of `now`.
    fn at(self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let age = now.saturating_duration_since(at).as_secs_f64();
                self.secs * (-age / USAGE_WINDOW.as_secs_f64()).exp()
            }
        }
    }

    fn add(&mut self, now: Instant, used: Duration) {
        self.secs = self.at(now) + used.as_secs_f64();
        self.at = Some(now);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        let steps = steps.max(1);
        Self {
            by_client: Mutex::default(),
            common: Arc::new(Common {
                steps,
                total: Mutex::default(),
                active: Mutex::new((0, None)),
            }),
        }
    }

    /// Steps one client may run at once.
    pub fn steps(&self) -> usize {
        self.common.steps
    }

    /// The share of the client entry named `client`.
    pub fn of(&self, client: &str) -> Arc<Share> {
        let mut m = lock(&self.by_client);
        // Called for every datagram: look up by &str, and own the name only the first time.
        let share = if let Some(share) = m.get(client) {
            share.clone()
        } else {
            let share = Arc::new(Share {
                inflight: AtomicUsize::new(0),
                in_background: AtomicBool::new(false),
                capped: Mutex::new(None),
                steps: Arc::new(Semaphore::new(self.common.steps)),
                usage: Mutex::default(),
                common: self.common.clone(),
            });
            m.insert(client.to_owned(), share.clone());
            share
        };
        let now = clock::now();
        let mut active = lock(&self.common.active);
        if active
            .1
            .is_none_or(|at| now.saturating_duration_since(at) >= RECOUNT)
        {
            let floor = ACTIVE_USE.as_secs_f64();
            let n = m
                .values()
                .filter(|s| lock(&s.usage).at(now) >= floor)
                .count();
            *active = (n, Some(now));
        }
        share
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

    /// Whether, with other clients active, this client was refused a conversation for its
    /// share of the session table in the last [`USAGE_WINDOW`], or, with the server
    /// contended ([`CONTENDED`]), its requests used clearly more ([`OVER_FACTOR`]) than an
    /// equal share of the time of the active clients (and more than [`LIGHT_USE`]) in about
    /// that time.
    pub fn over(&self) -> bool {
        let now = clock::now();
        let active = lock(&self.common.active).0;
        // Holding its whole share of the session table is being over a share, however
        // cheap its refused requests are.
        let capped =
            lock(&self.capped).is_some_and(|at| now.saturating_duration_since(at) < USAGE_WINDOW);
        if capped && active >= 2 {
            return true;
        }
        let own = lock(&self.usage).at(now);
        if own < LIGHT_USE.as_secs_f64() {
            return false;
        }
        let total = lock(&self.common.total).at(now);
        if total < CONTENDED.as_secs_f64() {
            return false;
        }
        // An equal share among the active clients; alone, a client is never over it.
        #[allow(clippy::cast_precision_loss, reason = "a count of clients")]
        let over = active >= 2 && own * active as f64 > total * OVER_FACTOR;
        over
    }

    /// Records that a new conversation of this client was refused because it holds its
    /// share of the session table: for [`USAGE_WINDOW`], it is over its share.
    pub fn note_session_cap(&self) {
        *lock(&self.capped) = Some(clock::now());
    }

    /// Records where this client's requests go now; true when that changed.
    pub fn mark_background(&self, background: bool) -> bool {
        self.in_background.swap(background, Ordering::AcqRel) != background
    }

    /// Counts `used` of processor time against this client.
    pub fn charge(&self, used: Duration) {
        let now = clock::now();
        lock(&self.usage).add(now, used);
        lock(&self.common.total).add(now, used);
    }

    /// Runs blocking `work` on the background runtime ([`background`]); None if there is
    /// none or the work panicked.
    pub async fn in_background<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        background()?.spawn_blocking(work).await.ok()
    }
}

/// Measures the processor time the calling thread spends from [`Meter::start`] to
/// [`Meter::used`]: a mutex wait, a token's latency or being preempted is not use. Where
/// the system has no thread clock, the elapsed time stands in.
pub struct Meter {
    cpu: Option<cpu_time::ThreadTime>,
    wall: Instant,
}

impl Meter {
    /// Starts measuring on the calling thread.
    pub fn start() -> Self {
        Self {
            cpu: clock::thread_cpu(),
            wall: clock::now(),
        }
    }

    /// Processor time used since the start; call it on the same thread.
    pub fn used(&self) -> Duration {
        self.cpu
            .as_ref()
            .and_then(|t| t.try_elapsed().ok())
            .unwrap_or_else(|| clock::now().saturating_duration_since(self.wall))
    }
}

/// The runtime the server's ordinary work runs on (set by the server when it starts).
static FOREGROUND: OnceLock<Handle> = OnceLock::new();

/// Remembers the current runtime as the foreground one; the first call wins.
pub fn set_foreground(handle: Handle) {
    let _ = FOREGROUND.set(handle);
}

/// Spawns `work` on the foreground runtime (the current one if none was set): work a
/// background request asks for on behalf of every client, such as re-initialising an HSM
/// module with every signing slot held, must not run at background priority.
pub fn spawn_foreground<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match FOREGROUND.get() {
        Some(handle) => drop(handle.spawn(work)),
        None => drop(tokio::spawn(work)),
    }
}

/// Runs `request` and, if it says it was authentic, charges the processor time spent inside
/// its polls (the task's own running time, without its waits) to `share`: datagrams forged with a
/// client's address must not push that client over its share.
pub async fn charged<F: Future<Output = bool>>(share: Arc<Share>, request: F) {
    let mut request = std::pin::pin!(request);
    let mut used = Duration::ZERO;
    let authentic = std::future::poll_fn(|cx| {
        let meter = Meter::start();
        let poll = request.as_mut().poll(cx);
        used += meter.used();
        poll
    })
    .await;
    if authentic {
        share.charge(used);
    }
}

/// The background runtime, for the requests and steps of clients over their share: threads
/// at nice 19 under `SCHED_BATCH` (Linux; elsewhere they run at normal priority), which the
/// kernel runs after normal threads but never starves outright (weight 15 against 1024),
/// so a lock or permit one holds is released even on a busy machine. Not `SCHED_IDLE`: an
/// idle thread holding an HSM signing slot could wait behind any other load indefinitely.
/// One per process, started on first use and never stopped (a runtime cannot be dropped
/// from async code); None if it could not be started, and everything then runs at normal
/// priority. A thread never raises its priority back: an unprivileged process could not.
pub fn background() -> Option<&'static Handle> {
    static BACKGROUND: OnceLock<Option<Runtime>> = OnceLock::new();
    BACKGROUND
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, usize::from);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("anchord-bg")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .inspect_err(|e| warn!(error = %e, "could not start the background runtime"))
                .ok()
        })
        .as_ref()
        .map(Runtime::handle)
}

/// Makes the calling thread run after normal threads: nice 19, `SCHED_BATCH`.
#[cfg(target_os = "linux")]
fn lower_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, batch) {
        debug!(error = ?e, "background step thread keeps normal priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {
    debug!("background step threads run at normal priority on this system");
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

    #[tokio::test(start_paused = true)]
    async fn a_client_over_an_equal_share_of_step_time_is_over_only_while_others_are_active() {
        let shares = Shares::new(1);
        let (flood, good) = (shares.of("flood"), shares.of("good"));
        flood.charge(Duration::from_millis(800));
        good.charge(Duration::from_millis(100));
        tokio::time::advance(RECOUNT).await;
        shares.of("good");
        assert!(flood.over(), "80% of the step time with two clients active");
        assert!(!good.over(), "10% is within an equal share");
        // Two clients using about the same stay where they are.
        let even = Shares::new(1);
        let (x, y) = (even.of("x"), even.of("y"));
        x.charge(Duration::from_millis(60));
        y.charge(Duration::from_millis(75));
        tokio::time::advance(RECOUNT).await;
        even.of("x");
        assert!(!x.over() && !y.over());

        // Three clients, two of them heavy: each heavy one is over a third.
        let other = shares.of("other");
        other.charge(Duration::from_millis(800));
        tokio::time::advance(RECOUNT).await;
        shares.of("good");
        assert!(flood.over() && other.over() && !good.over());

        // Alone (the others' use decayed away), the flood is not over anything.
        let alone = Shares::new(1);
        let a = alone.of("a");
        alone.of("b").charge(Duration::from_millis(5));
        a.charge(Duration::from_millis(900));
        tokio::time::advance(RECOUNT).await;
        alone.of("a");
        assert!(a.over(), "b is still active");
        tokio::time::advance(USAGE_WINDOW * 8).await;
        a.charge(Duration::from_millis(900));
        alone.of("a");
        assert!(!a.over(), "b's use has decayed: a is alone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_at_its_session_cap_is_over_while_others_are_active() {
        let shares = Shares::new(1);
        let (flood, good) = (shares.of("flood"), shares.of("good"));
        // Cheap refusals: about the same time as the other client's devices.
        flood.charge(Duration::from_millis(60));
        good.charge(Duration::from_millis(75));
        tokio::time::advance(RECOUNT).await;
        shares.of("good");
        assert!(!flood.over());
        flood.note_session_cap();
        assert!(flood.over() && !good.over());
        tokio::time::advance(USAGE_WINDOW).await;
        flood.charge(Duration::from_millis(60));
        good.charge(Duration::from_millis(75));
        assert!(!flood.over(), "no refusal for a window");
        // Alone, being at the cap is not over anything.
        let alone = Shares::new(1);
        let a = alone.of("a");
        a.charge(Duration::from_millis(60));
        tokio::time::advance(RECOUNT).await;
        alone.of("a");
        a.note_session_cap();
        assert!(!a.over());
    }

    #[tokio::test(start_paused = true)]
    async fn a_light_client_is_never_over() {
        let shares = Shares::new(1);
        let (a, b) = (shares.of("a"), shares.of("b"));
        a.charge(LIGHT_USE / 2);
        b.charge(LIGHT_USE / 10);
        tokio::time::advance(RECOUNT).await;
        shares.of("a");
        assert!(!a.over());
    }

    /// The calling thread's scheduling policy and nice value.
    #[cfg(target_os = "linux")]
    fn scheduling() -> (Option<thread_priority::ThreadSchedulePolicy>, i64) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after = stat.rsplit_once(") ").unwrap().1;
        let nice = after.split(' ').nth(16).unwrap().parse().unwrap();
        (thread_priority::unix::thread_schedule_policy().ok(), nice)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn background_steps_run_at_nice_19_batch_and_foreground_work_does_not() {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let batch = Some(ThreadSchedulePolicy::Normal(
            NormalThreadSchedulePolicy::Batch,
        ));
        let shares = Shares::new(2);
        let there = shares.of("a").in_background(scheduling).await.unwrap();
        assert_eq!(there, (batch, 19));
        // Work a background request hands to the foreground runs at the caller's priority.
        set_foreground(Handle::current());
        let here = scheduling();
        let (tx, rx) = tokio::sync::oneshot::channel();
        background().unwrap().spawn(async move {
            spawn_foreground(async move {
                let _ = tx.send(scheduling());
            });
        });
        assert_eq!(rx.await.unwrap(), here);
        assert_ne!(here, there);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_client_beside_a_quiet_one_on_an_uncontended_server_is_not_over() {
        let shares = Shares::new(1);
        let (big, tiny) = (shares.of("big"), shares.of("tiny"));
        big.charge(Duration::from_millis(300));
        tiny.charge(Duration::from_millis(2));
        tokio::time::advance(RECOUNT).await;
        shares.of("big");
        assert!(!big.over(), "300 ms of a second is not contention");
        big.charge(Duration::from_millis(400));
        assert!(big.over(), "700 ms is, and big has nearly all of it");
    }

    #[tokio::test]
    async fn an_authentic_requests_own_running_time_is_charged_and_its_waits_are_not() {
        let shares = Shares::new(1);
        let a = shares.of("a");
        charged(a.clone(), async {
            spin(Duration::from_millis(30)); // running on the thread
            tokio::time::sleep(Duration::from_millis(200)).await; // waiting
            true
        })
        .await;
        let used = lock(&a.usage).at(clock::now());
        // 30 ms (charged at the end; less if the thread was preempted); counting the wait
        // would be far more.
        assert!((0.01..0.1).contains(&used), "{used}");
        // A forged datagram (not authentic) is not charged to the client it claims.
        let b = shares.of("b");
        charged(b.clone(), async {
            spin(Duration::from_millis(30));
            false
        })
        .await;
        assert!(lock(&b.usage).at(clock::now()) < f64::EPSILON);
    }

    /// Keeps the thread busy for `d` of wall time (not under a paused clock).
    fn spin(d: Duration) {
        let start = clock::now();
        let mut x = 0u64;
        while clock::now().saturating_duration_since(start) < d {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn a_meter_counts_processor_time_not_waiting() {
        let m = Meter::start();
        std::thread::sleep(Duration::from_millis(50));
        assert!(m.used() < Duration::from_millis(5), "{:?}", m.used());
        let m = Meter::start();
        spin(Duration::from_millis(30));
        assert!(m.used() >= Duration::from_millis(10), "{:?}", m.used());
    }
}
