//! The server's metrics, in one Prometheus registry (prometheus-client), read by the admin
//! listener's `/metrics` and by tests. Every name starts `anchord_`; label values are
//! stable reason labels and configured client names, never peer-supplied text, so the
//! number of series stays bounded whatever devices and NASes send.
//!
//! The families here count what the server does; the HSM pool and the revocation checker
//! keep their own counters (prometheus-client types too, owned by the live configuration,
//! so a reload that replaces them starts them at zero, which Prometheus reads as a reset).
//! [`Metrics::render`] puts them all in one registry at each scrape.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::config::Runtime;
use crate::eap::Reason;

/// The request codes counted, in the order of [`Metrics::by_client`]'s pairs.
const REQUEST_CODES: [&str; 2] = ["access_request", "status_server"];

/// A request's code and the client it came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `access_request` or `status_server`.
    pub code: &'static str,
    /// The `[[client]]` name.
    pub client: String,
}

/// Why a datagram or request got no answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Stable reason label (`unknown_client`, `bad_message_authenticator`, ...).
    pub reason: Reason,
}

/// How an authentication ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `accept` or `reject`.
    pub outcome: &'static str,
    /// Stable reason label (`ok` for an accept), or a reason the admin's policy gives
    /// (bounded by the policy files).
    pub reason: Reason,
    /// `1.2`, `1.3`, or `none` when the handshake did not get that far.
    pub tls: &'static str,
}

/// An outcome alone (histograms, whose series multiply by bucket).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accept` or `reject`.
    pub outcome: &'static str,
}

/// Success or failure of an operation (reloads, signatures).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// What a duplicate-cache hit did.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DuplicateLabels {
    /// `resent` (the cached reply went out again) or `in_progress` (dropped: the first
    /// copy is still being answered).
    pub answer: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Seconds an authentication took, first request to answer: 1 ms to ~65 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// EAP round trips of one authentication: 1 to 128.
fn rounds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 8))
}

/// Levels read at a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levels {
    /// EAP conversations in the session table.
    pub sessions: u64,
    /// Bytes the duplicate cache's replies weigh.
    pub duplicate_bytes: u64,
    /// Replies the duplicate cache could not keep so far.
    pub not_cached: u64,
    /// Live sessions in the registry.
    pub live_sessions: u64,
    /// Live sessions evicted because the registry was full, so far.
    pub live_sessions_evicted: u64,
    /// New live sessions not kept because their NAS entry had its share, so far.
    pub live_sessions_refused: u64,
    /// Disconnect/CoA requests waiting for a slot.
    pub das_queued: u64,
    /// Disconnect/CoA requests sent, not yet answered.
    pub das_in_flight: u64,
}

/// Every counter and histogram the server keeps (cheap to clone: each is shared).
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    /// The same counters by client name, `[access_request, status_server]`.
    by_client: Arc<RwLock<HashMap<String, [Counter; 2]>>>,
    dropped: Family<DropLabels, Counter>,
    authentications: Family<AuthLabels, Counter>,
    duration: Family<OutcomeLabels, Histogram>,
    rounds: Family<OutcomeLabels, Histogram>,
    duplicates: Family<DuplicateLabels, Counter>,
    in_background: Counter,
    reloads: Family<ResultLabels, Counter>,
    accounting: Family<AcctLabels, Counter>,
    dynamic_authorization: Family<AnswerLabels, Counter>,
}

/// Disconnect/CoA requests by the NAS's answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// `disconnect`, `coa`.
    pub action: &'static str,
    /// `ack`, `nak`, `no_answer`.
    pub answer: &'static str,
}

/// Accounting records stored, by Acct-Status-Type, and whether they joined an
/// authentication of ours through their Class.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcctLabels {
    /// `start`, `interim`, `stop`, `on`, `off`, `other`.
    pub status: &'static str,
    /// `yes` or `no`.
    pub joined: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            by_client: Arc::default(),
            dropped: Family::default(),
            authentications: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            rounds: Family::new_with_constructor(rounds_histogram),
            duplicates: Family::default(),
            in_background: Counter::default(),
            reloads: Family::default(),
            accounting: Family::default(),
            dynamic_authorization: Family::default(),
        }
    }
}

impl Metrics {
    /// An authenticated request from a client.
    ///
    /// Runs for every request: each client's counters are looked up by its name as
    /// borrowed, without building a label set (which would allocate the name every time).
    pub fn request(&self, code: &'static str, client: &str) {
        let at = usize::from(code != REQUEST_CODES[0]);
        let counted = self
            .by_client
            .read()
            .ok()
            .and_then(|m| m.get(client).and_then(|c| c.get(at)).map(Counter::inc));
        if counted.is_some() {
            return;
        }
        // First sight of this client: its counters, shared with the family.
        let counters = REQUEST_CODES.map(|code| {
            self.requests.get_or_create_owned(&RequestLabels {
                code,
                client: client.to_owned(),
            })
        });
        if let Some(c) = counters.get(at) {
            c.inc();
        }
        if let Ok(mut m) = self.by_client.write() {
            m.insert(client.to_owned(), counters);
        }
    }

    /// A datagram or request that got no answer.
    pub fn dropped(&self, reason: impl Into<Reason>) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// An authentication that ended, with its duration and round trips.
    pub fn finished(
        &self,
        outcome: &'static str,
        reason: &Reason,
        tls: &'static str,
        seconds: f64,
        rounds: u32,
    ) {
        let tls = if tls.is_empty() { "none" } else { tls };
        self.authentications
            .get_or_create(&AuthLabels {
                outcome,
                reason: reason.clone(),
                tls,
            })
            .inc();
        let o = OutcomeLabels { outcome };
        self.duration.get_or_create(&o).observe(seconds);
        if rounds > 0 {
            self.rounds.get_or_create(&o).observe(f64::from(rounds));
        }
    }

    /// A retransmission found in the duplicate cache.
    pub fn duplicate(&self, answer: &'static str) {
        self.duplicates
            .get_or_create(&DuplicateLabels { answer })
            .inc();
    }

    /// A request sent to the background runtime (its client is over its share).
    pub fn in_background(&self) {
        self.in_background.inc();
    }

    /// A configuration reload, taken or refused.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// An accounting record stored and answered.
    pub fn accounting(&self, status: &'static str, joined: bool) {
        let joined = if joined { "yes" } else { "no" };
        self.accounting
            .get_or_create(&AcctLabels { status, joined })
            .inc();
    }

    /// A Disconnect or CoA request (`action`) and the NAS's answer.
    pub fn dynamic_authorization(&self, action: &'static str, answer: &'static str) {
        self.dynamic_authorization
            .get_or_create(&AnswerLabels { action, answer })
            .inc();
    }

    /// Accounting records stored with this status, joined or not.
    pub fn accounting_count(&self, status: &'static str, joined: bool) -> u64 {
        let joined = if joined { "yes" } else { "no" };
        self.accounting
            .get(&AcctLabels { status, joined })
            .map_or(0, |c| c.get())
    }

    /// Authentications that ended with this outcome and reason, over every TLS version.
    pub fn authentications(&self, outcome: &'static str, reason: &'static str) -> u64 {
        ["1.2", "1.3", "none"]
            .iter()
            .filter_map(|&tls| {
                self.authentications.get(&AuthLabels {
                    outcome,
                    reason: Reason::Borrowed(reason),
                    tls,
                })
            })
            .map(|c| c.get())
            .sum()
    }

    /// The text exposition (OpenMetrics) of every metric: these, the levels read `now`,
    /// and the counters of the live configuration's HSM pool and revocation
    /// checker.
    pub fn render(&self, runtime: &Runtime, now: &Levels) -> String {
        let mut r = Registry::with_prefix("anchord");
        r.register(
            "build",
            "The running anchord's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        r.register(
            "requests",
            "Authenticated requests, by code and client",
            self.requests.clone(),
        );
        r.register(
            "dropped",
            "Datagrams and requests answered with nothing, by reason",
            self.dropped.clone(),
        );
        r.register(
            "authentications",
            "Finished authentications, by outcome, reason and TLS version",
            self.authentications.clone(),
        );
        r.register_with_unit(
            "authentication_duration",
            "From an authentication's first request to its answer",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "authentication_round_trips",
            "EAP requests sent in one authentication",
            self.rounds.clone(),
        );
        r.register(
            "duplicate_hits",
            "Retransmissions found in the duplicate cache (RFC 5080)",
            self.duplicates.clone(),
        );
        r.register(
            "requests_in_background",
            "Requests served at background priority because their client was over its share",
            self.in_background.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, taken (ok) or refused (error)",
            self.reloads.clone(),
        );
        r.register(
            "accounting_records",
            "Accounting records stored and answered, by status and whether their Class joined them to an authentication",
            self.accounting.clone(),
        );
        r.register(
            "dynamic_authorization_requests",
            "Disconnect/CoA requests sent to NASes, by action and answer",
            self.dynamic_authorization.clone(),
        );
        let gauge = |v: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        r.register(
            "sessions",
            "EAP conversations in the session table",
            gauge(now.sessions),
        );
        r.register(
            "duplicate_cache_bytes",
            "Weight of the replies the duplicate cache holds (server.duplicate_cache_mib bounds it)",
            gauge(now.duplicate_bytes),
        );
        let not_cached = Counter::<u64>::default();
        not_cached.inc_by(now.not_cached);
        r.register(
            "duplicate_not_cached",
            "Replies not kept for retransmissions because the duplicate cache's budget was spent",
            not_cached,
        );
        r.register(
            "live_sessions",
            "Sessions NASes reported in accounting and not yet ended",
            gauge(now.live_sessions),
        );
        let evicted = Counter::<u64>::default();
        evicted.inc_by(now.live_sessions_evicted);
        r.register(
            "live_sessions_evicted",
            "Live sessions dropped because the registry was full (server.max_live_sessions)",
            evicted,
        );
        let refused = Counter::<u64>::default();
        refused.inc_by(now.live_sessions_refused);
        r.register(
            "live_sessions_refused",
            "New live sessions not kept because their NAS entry had its share of the registry (server.max_live_sessions_per_client)",
            refused,
        );
        r.register(
            "dynamic_authorization_backlog",
            "Disconnect/CoA requests waiting for a slot (per-NAS and global caps)",
            gauge(now.das_queued),
        );
        r.register(
            "dynamic_authorization_in_flight",
            "Disconnect/CoA requests sent and not yet answered",
            gauge(now.das_in_flight),
        );
        if let Some(pool) = runtime.pki.as_ref().and_then(|p| p.pool()) {
            pool.stats.register(r.sub_registry_with_prefix("hsm"));
        }
        if let Some(checker) = &runtime.revocation {
            checker
                .stats
                .register(r.sub_registry_with_prefix("revocation"));
        }
        if let Some(posture) = &runtime.posture {
            posture
                .stats
                .register(r.sub_registry_with_prefix("posture"));
        }
        if let Some(audit) = super::audit::current() {
            r.register(
                "audit_dropped",
                "Audit records lost because the sink's queue was full or its writer failed",
                audit.dropped,
            );
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = text::encode(&mut out, &r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_client_and_code() {
        let m = Metrics::default();
        for _ in 0..3 {
            m.request("access_request", "wlc");
        }
        m.request("status_server", "wlc");
        m.request("access_request", "switch");
        let count = |code, client: &str| {
            m.requests
                .get(&RequestLabels {
                    code,
                    client: client.to_owned(),
                })
                .map_or(0, |c| c.get())
        };
        assert_eq!(count("access_request", "wlc"), 3);
        assert_eq!(count("status_server", "wlc"), 1);
        assert_eq!(count("access_request", "switch"), 1);
        assert_eq!(count("status_server", "switch"), 0);
    }
}
