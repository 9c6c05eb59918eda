//! Accounting load (`anchord bench --accounting`): simulated NAS sessions, each an
//! Accounting-Request Start, `interims` Interim-Updates and a Stop (RFC 2866), many in
//! flight. Every Accounting-Response is verified (code, identifier, Response Authenticator,
//! Message-Authenticator when present); a record counts only once its answer verified.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{latency_and_errors, offer, progress_lines, wrap_up, AuthError, Link, Mode, Target};
use crate::clock;
use crate::radius::attr::AttrType;
use crate::radius::crypto::SharedSecret;
use crate::radius::packet::verify_reply;
use crate::radius::{Code, ReplyBuilder};
use serde::Serialize;

/// Attribute numbers the server's accounting does not read itself (RFC 2866 §5, RFC 2869
/// §5.3, RFC 2865 §5.5 and §5.41).
mod ty {
    pub(super) use crate::server::accounting::{
        ACCT_INPUT_OCTETS as IN_OCTETS, ACCT_OUTPUT_OCTETS as OUT_OCTETS,
        ACCT_SESSION_ID as SESSION_ID, ACCT_SESSION_TIME as SESSION_TIME,
        ACCT_STATUS_TYPE as STATUS, ACCT_TERMINATE_CAUSE as TERMINATE_CAUSE,
    };
    pub(super) const NAS_PORT: u8 = 5;
    pub(super) const DELAY: u8 = 41;
    pub(super) const AUTHENTIC: u8 = 45;
    pub(super) const IN_PACKETS: u8 = 47;
    pub(super) const OUT_PACKETS: u8 = 48;
    pub(super) const EVENT_TIMESTAMP: u8 = 55;
    pub(super) const NAS_PORT_TYPE: u8 = 61;
}

/// Everything one accounting run needs.
#[derive(Debug, Clone)]
pub struct AcctConfig {
    /// The accounting server.
    pub server: SocketAddr,
    /// Shared secret.
    pub secret: SharedSecret,
    /// Interim-Updates between each session's Start and Stop.
    pub interims: u32,
    /// User-Name of every session.
    pub user_name: String,
    /// Load shape (closed or open loop; a unit is one session).
    pub mode: Mode,
    /// How long to offer load.
    pub duration: Duration,
    /// Wait for an answer before retransmitting.
    pub timeout: Duration,
    /// Retransmissions before a record counts as timed out.
    pub retries: u32,
    /// Source address, if not the system's choice.
    pub bind: Option<IpAddr>,
    /// Print a progress line every second.
    pub progress: bool,
}

/// Results of an accounting run.
#[derive(Debug, Default, Serialize)]
pub struct AcctReport {
    /// Accounting-Requests answered with a verified Accounting-Response.
    pub records: u64,
    /// Of which, by Acct-Status-Type.
    pub by_status: BTreeMap<String, u64>,
    /// Sessions whose every record was answered.
    pub sessions: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Records answered per second.
    pub records_per_sec: f64,
    /// Per-record latency percentiles in milliseconds: p50, p90, p99, p99.9, max.
    pub latency_ms: BTreeMap<String, f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

impl AcctReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "records {} ({} sessions)  in {:.1}s  =>  {:.1} records/s, {} retransmissions\n",
            self.records,
            self.sessions,
            self.elapsed_secs,
            self.records_per_sec,
            self.retransmissions
        );
        s.push_str("by status: ");
        for (k, v) in &self.by_status {
            s.push_str(&format!("{k}={v}  "));
        }
        s.push('\n');
        s.push_str(&latency_and_errors(&self.latency_ms, &self.errors));
        s
    }
}

#[derive(Default)]
struct Tally {
    records: AtomicU64,
    sessions: AtomicU64,
    retransmissions: AtomicU64,
    by_status: Mutex<BTreeMap<&'static str, u64>>,
    latencies_us: Mutex<Vec<u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    fn error(&self, e: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(e).or_default() += 1;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

#[derive(Clone, Copy)]
enum Status {
    Start,
    Interim,
    Stop,
}

impl Status {
    fn value(self) -> u32 {
        match self {
            Self::Start => 1,
            Self::Stop => 2,
            Self::Interim => 3,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Interim => "interim",
            Self::Stop => "stop",
        }
    }
}

/// One simulated session's identity.
struct Session {
    id: String,
    station: String,
    nas_port: u32,
    started: i64,
}

/// Runs the load and returns the report.
///
/// # Errors
/// Only setup errors (sockets); per-record failures are counted in the report.
pub async fn run(cfg: AcctConfig) -> std::io::Result<AcctReport> {
    let cfg = Arc::new(cfg);
    let tally = Arc::new(Tally::default());
    let start = clock::now();
    let t = tally.clone();
    let progress = cfg.progress.then(|| {
        progress_lines(start, "records", move || {
            (t.records.load(Ordering::Relaxed), t.error_count())
        })
    });
    let (c, t) = (cfg.clone(), tally.clone());
    let dropped = move || t.error("offered_dropped (max in flight)");
    let t = tally.clone();
    offer(
        cfg.mode,
        &Target::of(cfg.server, cfg.bind),
        start + cfg.duration,
        dropped,
        move |link| {
            let (c, t) = (c.clone(), t.clone());
            async move { session(&c, &t, &link).await }
        },
    )
    .await?;
    let (elapsed, latency_ms) = wrap_up(start, progress, &tally.latencies_us);
    let records = tally.records.load(Ordering::Relaxed);
    Ok(AcctReport {
        records,
        by_status: owned(&tally.by_status),
        sessions: tally.sessions.load(Ordering::Relaxed),
        retransmissions: tally.retransmissions.load(Ordering::Relaxed),
        elapsed_secs: elapsed,
        records_per_sec: records as f64 / elapsed,
        latency_ms,
        errors: owned(&tally.errors),
    })
}

fn owned(m: &Mutex<BTreeMap<&'static str, u64>>) -> BTreeMap<String, u64> {
    m.lock()
        .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
        .unwrap_or_default()
}

/// One session: Start, the Interim-Updates, Stop; it ends at its first failed record.
async fn session(cfg: &AcctConfig, tally: &Tally, link: &Link) {
    let mac: [u8; 6] = rand::random();
    let s = Session {
        // As hostapd writes it: 16 upper-case hex digits.
        id: format!("{:016X}", rand::random::<u64>()),
        // Locally administered, unicast.
        station: format!(
            "{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}",
            (mac[0] | 0x02) & 0xfe,
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5]
        ),
        nas_port: rand::random::<u32>() % 4096,
        started: crate::clock::unix_now(),
    };
    let steps = std::iter::once(Status::Start)
        .chain((0..cfg.interims).map(|_| Status::Interim))
        .chain(std::iter::once(Status::Stop));
    for (n, status) in steps.enumerate() {
        let started = clock::now();
        match record(cfg, tally, link, &s, status, n as u32).await {
            Ok(()) => {
                tally.records.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut m) = tally.by_status.lock() {
                    *m.entry(status.label()).or_default() += 1;
                }
                let us = u64::try_from(clock::now().saturating_duration_since(started).as_micros())
                    .unwrap_or(u64::MAX);
                if let Ok(mut l) = tally.latencies_us.lock() {
                    l.push(us);
                }
            }
            Err(e) => {
                tally.error(e);
                return;
            }
        }
    }
    tally.sessions.fetch_add(1, Ordering::Relaxed);
}

/// Sends one Accounting-Request and verifies its answer.
async fn record(
    cfg: &AcctConfig,
    tally: &Tally,
    link: &Link,
    s: &Session,
    status: Status,
    n: u32,
) -> Result<(), &'static str> {
    let request = request(cfg, link.next_id(), s, status, n).map_err(|_| "encode")?;
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(request.get(4..20).unwrap_or(&[0; 16]));
    let reply = link
        .exchange(&request, cfg.timeout, cfg.retries, &tally.retransmissions)
        .await
        .map_err(|e| match e {
            AuthError::Timeout => "timeout",
            _ => "io",
        })?;
    let (code, _, _) = verify_reply(&reply, &authenticator, &cfg.secret)
        .map_err(|_| "bad_response_authenticator")?;
    if code == Code::AccountingResponse {
        Ok(())
    } else {
        Err("unexpected_code")
    }
}

/// The Accounting-Request a NAS sends for `status` (what hostapd puts in one), signed.
fn request(
    cfg: &AcctConfig,
    id: u8,
    s: &Session,
    status: Status,
    n: u32,
) -> Result<Vec<u8>, crate::radius::EncodeError> {
    let now = crate::clock::unix_now();
    let u32_of = |v: i64| u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes();
    let mut b = ReplyBuilder::new(Code::AccountingRequest, id);
    b.push(AttrType::UserName, cfg.user_name.as_bytes())?
        .push(AttrType::NasIpAddress, &[127, 0, 0, 1])?
        .push(AttrType::Other(ty::NAS_PORT), &s.nas_port.to_be_bytes())?
        .push(AttrType::NasIdentifier, b"bench-nas")?
        .push(AttrType::CalledStationId, b"02-00-00-00-00-01")?
        .push(AttrType::CallingStationId, s.station.as_bytes())?
        .push(AttrType::Other(ty::NAS_PORT_TYPE), &15u32.to_be_bytes())?
        .push(AttrType::Other(ty::STATUS), &status.value().to_be_bytes())?
        .push(AttrType::Other(ty::SESSION_ID), s.id.as_bytes())?
        .push(AttrType::Other(ty::AUTHENTIC), &1u32.to_be_bytes())?
        .push(AttrType::Other(ty::DELAY), &0u32.to_be_bytes())?
        .push(AttrType::Other(ty::EVENT_TIMESTAMP), &u32_of(now))?;
    if !matches!(status, Status::Start) {
        let k = i64::from(n);
        b.push(
            AttrType::Other(ty::SESSION_TIME),
            &u32_of(now.saturating_sub(s.started) + k * 600),
        )?
        .push(AttrType::Other(ty::IN_OCTETS), &u32_of(k * 1_500_000))?
        .push(AttrType::Other(ty::OUT_OCTETS), &u32_of(k * 9_000_000))?
        .push(AttrType::Other(ty::IN_PACKETS), &u32_of(k * 2_000))?
        .push(AttrType::Other(ty::OUT_PACKETS), &u32_of(k * 7_000))?;
    }
    if matches!(status, Status::Stop) {
        // User-Request.
        b.push(AttrType::Other(ty::TERMINATE_CAUSE), &1u32.to_be_bytes())?;
    }
    b.finish_signed_request(&cfg.secret)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use super::*;
    use crate::radius::packet::UnverifiedRequest;

    fn cfg() -> AcctConfig {
        AcctConfig {
            server: ([127, 0, 0, 1], 1813).into(),
            secret: SharedSecret::new(b"s3cret".to_vec()),
            interims: 2,
            user_name: "bench-device".into(),
            mode: Mode::Closed { concurrency: 1 },
            duration: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 0,
            bind: None,
            progress: false,
        }
    }

    /// The generator's requests are what a server verifies: RFC 2866 Request
    /// Authenticator, Message-Authenticator, and the session's attributes.
    #[test]
    fn requests_verify_as_accounting_requests() {
        let c = cfg();
        let s = Session {
            id: "00000000000000AB".into(),
            station: "02-00-00-00-00-02".into(),
            nas_port: 7,
            started: 0,
        };
        let p = request(&c, 9, &s, Status::Stop, 3).unwrap();
        let r = UnverifiedRequest::parse(&p).unwrap();
        let req = r.verify(&c.secret, false).unwrap();
        assert_eq!(req.code, Code::AccountingRequest);
        assert_eq!(
            req.first(AttrType::Other(ty::STATUS)),
            Some(&2u32.to_be_bytes()[..])
        );
        assert_eq!(
            req.text(AttrType::Other(ty::SESSION_ID)).as_deref(),
            Some("00000000000000AB")
        );
        assert!(req.first(AttrType::Other(ty::TERMINATE_CAUSE)).is_some());
        let mut tampered = p.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let r = UnverifiedRequest::parse(&tampered).unwrap();
        assert!(r.verify(&c.secret, false).is_err());
    }
}
