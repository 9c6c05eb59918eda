//! The load generator (`anchord bench`): complete EAP-TLS authentications against any RADIUS
//! server, many in flight, every reply verified ([`verify`]), with closed-loop, open-loop and
//! half-open modes. An authentication counts only if every check passed.

pub mod accounting;
pub mod peer;
pub mod trust;
pub mod verify;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::clock;
use crate::eap::packet::{EapCode, EapPacket};
use crate::radius::attr::AttrType;
use crate::radius::crypto::SharedSecret;
use crate::radius::{Code, ReplyBuilder};
use peer::{Peer, PeerError};
use verify::{check_accept, verify_reply, ReplyError};

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// N devices, each starting again as soon as it finishes.
    Closed {
        /// Devices in flight.
        concurrency: usize,
    },
    /// A fixed rate of new authentications per second, whatever the latency.
    Open {
        /// Authentications started per second.
        rate: f64,
        /// Most in flight; beyond it an arrival is counted as `offered_dropped`.
        max_inflight: usize,
    },
    /// Start `count` conversations, stop each right after the server's first TLS flight,
    /// and leave them half-open on the server (memory measurements).
    HalfOpen {
        /// Conversations to leave open.
        count: usize,
    },
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The RADIUS server.
    pub server: SocketAddr,
    /// Shared secret.
    pub secret: SharedSecret,
    /// Device TLS settings: certificate, key, CA for the server, versions.
    pub tls: Arc<ClientConfig>,
    /// Name the server certificate must carry.
    pub server_name: ServerName<'static>,
    /// Device fragment size.
    pub fragment_size: usize,
    /// EAP identity.
    pub identity: String,
    /// Wait for a reply before retransmitting.
    pub timeout: Duration,
    /// Retransmissions before giving up.
    pub retries: u32,
    /// VLAN every Accept must carry.
    pub expect_vlan: Option<String>,
    /// Load shape.
    pub mode: Mode,
    /// How long to offer load (closed and open loop).
    pub duration: Duration,
    /// Framed-MTU to put in requests (lowers the server's fragment size).
    pub framed_mtu: Option<u32>,
    /// Print a progress line every second.
    pub progress: bool,
    /// Source address to send from (a second NAS on loopback: 127.0.0.2), if not the
    /// system's choice.
    pub bind: Option<std::net::IpAddr>,
    /// Abandon every conversation right after the server's first TLS flight, as a flood of
    /// unauthenticated devices would (each still costs the server a handshake signature).
    pub abandon: bool,
}

/// Why an authentication did not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No valid reply after every retransmission.
    #[error("timeout")]
    Timeout,
    /// A reply failed a check.
    #[error("{0}")]
    Reply(#[from] ReplyError),
    /// The device side failed.
    #[error("{0}")]
    Peer(#[from] PeerError),
    /// The server rejected the device.
    #[error("rejected")]
    Rejected,
    /// Something unexpected in the conversation.
    #[error("{0}")]
    Protocol(&'static str),
    /// Socket error.
    #[error("io: {0}")]
    Io(String),
}

impl AuthError {
    fn label(&self) -> String {
        match self {
            Self::Timeout => "timeout".into(),
            Self::Reply(e) => e.label().into(),
            Self::Peer(PeerError::Framing(_)) => "peer_framing".into(),
            Self::Peer(PeerError::Tls(_)) => "peer_tls".into(),
            Self::Rejected => "rejected".into(),
            Self::Protocol(p) => format!("protocol: {p}"),
            Self::Io(_) => "io".into(),
        }
    }
}

/// Results of a run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Authentications that passed every check (or half-open conversations made).
    pub completed: u64,
    /// RADIUS request/reply exchanges.
    pub round_trips: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Completed per second.
    pub auths_per_sec: f64,
    /// Round trips per second.
    pub round_trips_per_sec: f64,
    /// Latency percentiles in milliseconds: p50, p90, p99, p99.9, max.
    pub latency_ms: BTreeMap<String, f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Tally {
    completed: AtomicU64,
    round_trips: AtomicU64,
    retransmissions: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn error(&self, e: &AuthError) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(e.label()).or_default() += 1;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// Runs the load and returns the report.
///
/// # Errors
/// Only setup errors (sockets); per-authentication failures are counted in the report.
pub async fn run(cfg: BenchConfig) -> std::io::Result<Report> {
    let cfg = Arc::new(cfg);
    let tally = Arc::new(Tally::default());
    if !cfg.abandon && !matches!(cfg.mode, Mode::HalfOpen { .. }) {
        // One authentication outside the figures: the generator's own first-time costs
        // (its first handshake takes tens of milliseconds) are not the server's latency.
        let link = Target::of(cfg.server, cfg.bind).link().await?;
        one(&cfg, &Tally::default(), &link).await;
    }
    let start = clock::now();
    let t = tally.clone();
    let progress = cfg.progress.then(|| {
        progress_lines(start, "completed", move || {
            (t.completed.load(Ordering::Relaxed), t.error_count())
        })
    });
    let (c, t) = (cfg.clone(), tally.clone());
    let dropped = move || t.error(&AuthError::Protocol("offered_dropped (max in flight)"));
    let t = tally.clone();
    offer(
        cfg.mode,
        &Target::of(cfg.server, cfg.bind),
        start + cfg.duration,
        dropped,
        move |link| {
            let (c, t) = (c.clone(), t.clone());
            async move { one(&c, &t, &link).await }
        },
    )
    .await?;
    let (elapsed, latency_ms) = wrap_up(start, progress, &tally.latencies_us);
    let completed = tally.completed.load(Ordering::Relaxed);
    let round_trips = tally.round_trips.load(Ordering::Relaxed);
    Ok(Report {
        completed,
        round_trips,
        retransmissions: tally.retransmissions.load(Ordering::Relaxed),
        elapsed_secs: elapsed,
        auths_per_sec: completed as f64 / elapsed,
        round_trips_per_sec: round_trips as f64 / elapsed,
        latency_ms,
        errors: tally.errors.lock().map(|e| e.clone()).unwrap_or_default(),
    })
}

/// Stops the progress line: the run's wall time (seconds) and its latency percentiles.
fn wrap_up(
    start: Instant,
    progress: Option<tokio::task::JoinHandle<()>>,
    latencies_us: &Mutex<Vec<u64>>,
) -> (f64, BTreeMap<String, f64>) {
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = clock::now()
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    let mut lat = latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
    (elapsed, percentiles(&mut lat))
}

/// The report table's latency line and error lines.
fn latency_and_errors(
    latency_ms: &BTreeMap<String, f64>,
    errors: &BTreeMap<String, u64>,
) -> String {
    let mut s = String::from("latency ms: ");
    for (k, v) in latency_ms {
        s.push_str(&format!("{k}={v:.2}  "));
    }
    s.push('\n');
    if errors.is_empty() {
        s.push_str("errors: none\n");
    }
    for (k, v) in errors {
        s.push_str(&format!("error {k}: {v}\n"));
    }
    s
}

/// p50, p90, p99, p99.9 and max of latencies in microseconds, in milliseconds.
fn percentiles(lat: &mut [u64]) -> BTreeMap<String, f64> {
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat.get(rank.saturating_sub(1).min(lat.len() - 1))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    [
        ("p50", 50.0),
        ("p90", 90.0),
        ("p99", 99.0),
        ("p99.9", 99.9),
        ("max", 100.0),
    ]
    .into_iter()
    .map(|(k, p)| (k.to_owned(), pct(p)))
    .collect()
}

/// Where load goes, and from which local address.
#[derive(Debug, Clone, Copy)]
struct Target {
    server: SocketAddr,
    bind: Option<std::net::IpAddr>,
}

impl Target {
    fn of(server: SocketAddr, bind: Option<std::net::IpAddr>) -> Self {
        Self { server, bind }
    }

    /// A socket of its own, connected to the server, with a random first identifier.
    async fn link(&self) -> std::io::Result<Link> {
        let any = if self.server.is_ipv6() {
            std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        };
        let sock = UdpSocket::bind(SocketAddr::new(self.bind.unwrap_or(any), 0)).await?;
        sock.connect(self.server).await?;
        Ok(Link {
            sock,
            id: AtomicU8::new(rand::random()),
        })
    }
}

/// One simulated NAS socket: one request in flight at a time, identifiers in sequence.
struct Link {
    sock: UdpSocket,
    id: AtomicU8,
}

impl Link {
    /// The identifier of the next request.
    fn next_id(&self) -> u8 {
        self.id.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// Sends a request and waits for its reply (the first datagram with its identifier),
    /// retransmitting the same bytes after each `timeout`, `retries` times.
    async fn exchange(
        &self,
        request: &[u8],
        timeout: Duration,
        retries: u32,
        retransmissions: &AtomicU64,
    ) -> Result<Vec<u8>, AuthError> {
        let io = |e: std::io::Error| AuthError::Io(e.to_string());
        let mut buf = vec![0u8; 4096];
        for attempt in 0..=retries {
            if attempt > 0 {
                retransmissions.fetch_add(1, Ordering::Relaxed);
            }
            self.sock.send(request).await.map_err(io)?;
            let wait = tokio::time::sleep(timeout);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    r = self.sock.recv(&mut buf) => {
                        let n = r.map_err(io)?;
                        let reply = buf.get(..n).unwrap_or_default();
                        // A late reply to an earlier request is not ours: keep waiting.
                        if reply.get(1) != request.get(1) {
                            continue;
                        }
                        return Ok(reply.to_vec());
                    }
                    () = &mut wait => break,
                }
            }
        }
        Err(AuthError::Timeout)
    }
}

/// Offers `unit` (one authentication, one accounting session) in `mode` until `deadline`:
/// closed loop, each of N links starting again at once; open loop, a new link and unit at
/// each tick (`dropped` counts an arrival over the in-flight cap); half-open, `count` units
/// in turn on one link.
async fn offer<F, Fut>(
    mode: Mode,
    target: &Target,
    deadline: Instant,
    dropped: impl Fn(),
    unit: F,
) -> std::io::Result<()>
where
    F: Fn(Arc<Link>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let target = *target;
    let mut tasks = JoinSet::new();
    match mode {
        Mode::Closed { concurrency } => {
            for _ in 0..concurrency.max(1) {
                let unit = unit.clone();
                tasks.spawn(async move {
                    let link = Arc::new(target.link().await?);
                    while clock::now() < deadline {
                        unit(link.clone()).await;
                    }
                    Ok::<(), std::io::Error>(())
                });
            }
        }
        Mode::Open { rate, max_inflight } => {
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let inflight = Arc::new(tokio::sync::Semaphore::new(max_inflight.max(1)));
            while clock::now() < deadline {
                tick.tick().await;
                while tasks.try_join_next().is_some() {}
                let Ok(permit) = inflight.clone().try_acquire_owned() else {
                    dropped();
                    continue;
                };
                let unit = unit.clone();
                tasks.spawn(async move {
                    let link = Arc::new(target.link().await?);
                    unit(link).await;
                    drop(permit);
                    Ok(())
                });
            }
        }
        Mode::HalfOpen { count } => {
            let link = Arc::new(target.link().await?);
            for _ in 0..count {
                unit(link.clone()).await;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(e);
        }
    }
    Ok(())
}

/// Prints "completed N (n/s) errors E" (with `what` for "completed") every second, from
/// `now() -> (done, errors)`, until aborted.
fn progress_lines(
    start: Instant,
    what: &'static str,
    now: impl Fn() -> (u64, u64) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        loop {
            tick.tick().await;
            let (done, errors) = now();
            eprintln!(
                "  {:>5.0}s  {what} {done:>9}  ({:>7}/s)  errors {errors}",
                clock::now().saturating_duration_since(start).as_secs_f64(),
                done - last,
            );
            last = done;
        }
    })
}

async fn one(cfg: &BenchConfig, tally: &Tally, link: &Link) {
    let started = clock::now();
    match authenticate(cfg, tally, link).await {
        Ok(()) => {
            tally.completed.fetch_add(1, Ordering::Relaxed);
            let us = u64::try_from(clock::now().saturating_duration_since(started).as_micros())
                .unwrap_or(u64::MAX);
            if let Ok(mut l) = tally.latencies_us.lock() {
                l.push(us);
            }
        }
        Err(e) => tally.error(&e),
    }
}

/// One complete EAP-TLS authentication (or, in half-open mode, its first half).
async fn authenticate(cfg: &BenchConfig, tally: &Tally, link: &Link) -> Result<(), AuthError> {
    let mut peer = Peer::new(cfg.tls.clone(), cfg.server_name.clone(), cfg.fragment_size)?;
    let mut eap = Peer::identity(rand::random(), &cfg.identity);
    let mut state: Option<Vec<u8>> = None;
    let half_open = cfg.abandon || matches!(cfg.mode, Mode::HalfOpen { .. });
    // Each authentication is another device: its own MAC (locally administered).
    let mac: [u8; 5] = rand::random();
    let station = format!(
        "02-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}",
        mac[0], mac[1], mac[2], mac[3], mac[4]
    );
    loop {
        let authenticator: [u8; 16] = rand::random();
        let mut b = ReplyBuilder::new(Code::AccessRequest, link.next_id());
        let enc = |e: crate::radius::EncodeError| AuthError::Io(e.to_string());
        b.push(AttrType::UserName, cfg.identity.as_bytes())
            .map_err(enc)?;
        b.push(AttrType::CallingStationId, station.as_bytes())
            .map_err(enc)?;
        if let Some(mtu) = cfg.framed_mtu {
            b.push(AttrType::FramedMtu, &mtu.to_be_bytes())
                .map_err(enc)?;
        }
        b.push_eap(&eap.to_bytes()).map_err(enc)?;
        if let Some(s) = &state {
            b.push(AttrType::State, s).map_err(enc)?;
        }
        let request = b.finish_request(&cfg.secret, &authenticator).map_err(enc)?;
        let reply = link
            .exchange(&request, cfg.timeout, cfg.retries, &tally.retransmissions)
            .await?;
        tally.round_trips.fetch_add(1, Ordering::Relaxed);
        let parsed = verify_reply(&reply, &request, &cfg.secret)?;
        match Code::from_number(parsed.code) {
            Code::AccessChallenge => {
                state = parsed.first(AttrType::State).map(<[u8]>::to_vec);
                let req = EapPacket::decode(&parsed.eap())
                    .map_err(|_| AuthError::Protocol("bad EAP in challenge"))?;
                if half_open && peer.started() {
                    return Ok(());
                }
                eap = peer.respond(&req)?;
            }
            Code::AccessAccept => {
                if !peer.finished() {
                    return Err(AuthError::Protocol("accept before the handshake finished"));
                }
                let keys = peer.keys()?;
                check_accept(
                    &parsed,
                    &authenticator,
                    &cfg.secret,
                    &keys.msk,
                    cfg.expect_vlan.as_deref(),
                )?;
                let eap = EapPacket::decode(&parsed.eap())
                    .map_err(|_| AuthError::Protocol("bad EAP in accept"))?;
                if eap.code != EapCode::Success {
                    return Err(ReplyError::NoEapSuccess.into());
                }
                return Ok(());
            }
            Code::AccessReject => return Err(AuthError::Rejected),
            _ => return Err(AuthError::Protocol("unexpected reply code")),
        }
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "completed {}  in {:.1}s  =>  {:.1} auths/s, {:.1} round trips/s, {} retransmissions\n",
            self.completed,
            self.elapsed_secs,
            self.auths_per_sec,
            self.round_trips_per_sec,
            self.retransmissions
        );
        s.push_str(&latency_and_errors(&self.latency_ms, &self.errors));
        s
    }
}
