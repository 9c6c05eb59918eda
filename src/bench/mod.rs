//! The load generator (`anchord bench`): complete EAP-TLS authentications against any RADIUS
//! server, many in flight, every reply verified ([`verify`]), with closed-loop, open-loop and
//! half-open modes. An authentication counts only if every check passed.

pub mod peer;
pub mod trust;
pub mod verify;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        let sock = bind(cfg.server, cfg.bind).await?;
        one(&cfg, &Tally::default(), &sock, &mut rand::random::<u8>()).await;
    }
    let start = clock::now();
    let deadline = start + cfg.duration;
    let progress = cfg.progress.then(|| {
        let t = tally.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let done = t.completed.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>5.0}s  completed {done:>8}  ({:>6}/s)  errors {}",
                    clock::now().saturating_duration_since(start).as_secs_f64(),
                    done - last,
                    t.error_count()
                );
                last = done;
            }
        })
    });
    let mut tasks = JoinSet::new();
    match cfg.mode {
        Mode::Closed { concurrency } => {
            for _ in 0..concurrency.max(1) {
                let (cfg, tally) = (cfg.clone(), tally.clone());
                tasks.spawn(async move {
                    let sock = bind(cfg.server, cfg.bind).await?;
                    let mut id = rand::random::<u8>();
                    while clock::now() < deadline {
                        one(&cfg, &tally, &sock, &mut id).await;
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
                    tally.error(&AuthError::Protocol("offered_dropped (max in flight)"));
                    continue;
                };
                let (cfg, tally) = (cfg.clone(), tally.clone());
                tasks.spawn(async move {
                    let sock = bind(cfg.server, cfg.bind).await?;
                    let mut id = rand::random::<u8>();
                    one(&cfg, &tally, &sock, &mut id).await;
                    drop(permit);
                    Ok(())
                });
            }
        }
        Mode::HalfOpen { count } => {
            let sock = bind(cfg.server, cfg.bind).await?;
            let mut id = rand::random::<u8>();
            for _ in 0..count {
                one(&cfg, &tally, &sock, &mut id).await;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(e);
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = clock::now()
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    let mut lat = tally
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
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
    let completed = tally.completed.load(Ordering::Relaxed);
    let round_trips = tally.round_trips.load(Ordering::Relaxed);
    Ok(Report {
        completed,
        round_trips,
        retransmissions: tally.retransmissions.load(Ordering::Relaxed),
        elapsed_secs: elapsed,
        auths_per_sec: completed as f64 / elapsed,
        round_trips_per_sec: round_trips as f64 / elapsed,
        latency_ms: [
            ("p50", 50.0),
            ("p90", 90.0),
            ("p99", 99.0),
            ("p99.9", 99.9),
            ("max", 100.0),
        ]
        .into_iter()
        .map(|(k, p)| (k.to_owned(), pct(p)))
        .collect(),
        errors: tally.errors.lock().map(|e| e.clone()).unwrap_or_default(),
    })
}

async fn bind(server: SocketAddr, from: Option<std::net::IpAddr>) -> std::io::Result<UdpSocket> {
    let any = if server.is_ipv6() {
        std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let sock = UdpSocket::bind(SocketAddr::new(from.unwrap_or(any), 0)).await?;
    sock.connect(server).await?;
    Ok(sock)
}

async fn one(cfg: &BenchConfig, tally: &Tally, sock: &UdpSocket, id: &mut u8) {
    let started = clock::now();
    match authenticate(cfg, tally, sock, id).await {
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
async fn authenticate(
    cfg: &BenchConfig,
    tally: &Tally,
    sock: &UdpSocket,
    id: &mut u8,
) -> Result<(), AuthError> {
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
        *id = id.wrapping_add(1);
        let authenticator: [u8; 16] = rand::random();
        let mut b = ReplyBuilder::new(Code::AccessRequest, *id);
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
        let reply = exchange(cfg, tally, sock, &request).await?;
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

/// Sends a request and waits for its reply, retransmitting the same bytes on timeout.
async fn exchange(
    cfg: &BenchConfig,
    tally: &Tally,
    sock: &UdpSocket,
    request: &[u8],
) -> Result<Vec<u8>, AuthError> {
    let io = |e: std::io::Error| AuthError::Io(e.to_string());
    let mut buf = vec![0u8; 4096];
    for attempt in 0..=cfg.retries {
        if attempt > 0 {
            tally.retransmissions.fetch_add(1, Ordering::Relaxed);
        }
        sock.send(request).await.map_err(io)?;
        let wait = tokio::time::sleep(cfg.timeout);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                r = sock.recv(&mut buf) => {
                    let n = r.map_err(io)?;
                    let reply = buf.get(..n).unwrap_or_default();
                    // A late reply to an earlier request is not ours: keep waiting.
                    if reply.get(1) != request.get(1) {
                        continue;
                    }
                    tally.round_trips.fetch_add(1, Ordering::Relaxed);
                    return Ok(reply.to_vec());
                }
                () = &mut wait => break,
            }
        }
    }
    Err(AuthError::Timeout)
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
        s.push_str("latency ms: ");
        for (k, v) in &self.latency_ms {
            s.push_str(&format!("{k}={v:.2}  "));
        }
        s.push('\n');
        if self.errors.is_empty() {
            s.push_str("errors: none\n");
        } else {
            for (k, v) in &self.errors {
                s.push_str(&format!("error {k}: {v}\n"));
            }
        }
        s
    }
}
