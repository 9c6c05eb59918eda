//! Revocation checking for authenticated devices: OCSP over HTTP with a shared cache.
//!
//! One in-flight fetch per certificate (concurrent authentications of the same device share
//! it), answers cached until their nextUpdate (bounded by a maximum), failures cached briefly
//! so a dead responder is not asked on every authentication, a list of responders tried in
//! order with a timeout each, and a stalled responder delays only the devices that need it.
//! Hard-fail by default: no valid answer means Reject unless `soft_fail` says otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::crl::{Crl, CrlStore, Silent};
use super::ocsp::{self, Answer, IdHash, Status};
pub use super::status::{Report, Source, State};
use crate::logsafe::Escaped;

/// One OCSP responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responder {
    /// URL (http).
    pub url: String,
    /// Send a nonce (some responders, e.g. Microsoft's, do not echo one: turn it off there).
    pub nonce: bool,
}

/// HTTP method for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// POST of the DER request (RFC 6960 A.1).
    Post,
    /// GET with the base64 request in the path (RFC 5019, cache-friendly).
    Get,
}

/// Revocation settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Responders to ask, in order; empty means the certificate's AIA OCSP URL.
    pub responders: Vec<Responder>,
    /// Whether the AIA responder gets a nonce.
    pub aia_nonce: bool,
    /// Timeout per responder.
    pub timeout: Duration,
    /// CertID hash.
    pub hash: IdHash,
    /// HTTP method.
    pub method: Method,
    /// Continue (flagged in the audit line) when no responder gives a valid answer.
    pub soft_fail: bool,
    /// Allowed clock skew for thisUpdate/nextUpdate.
    pub skew: Duration,
    /// Oldest thisUpdate accepted from an OCSP answer or CRL that has no nextUpdate (and,
    /// for OCSP, no nonce proving it fresh).
    pub max_age: Duration,
    /// Longest time an answer is cached, whatever its nextUpdate.
    pub max_ttl: Duration,
    /// How long a failure is cached.
    pub negative_ttl: Duration,
    /// Most certificates cached.
    pub cache_size: u64,
    /// Ask OCSP responders (false: CRLs only).
    pub ocsp: bool,
    /// Also check the intermediate CA certificates the device sends.
    pub check_intermediates: bool,
    /// CRLs: the source without OCSP, the fallback when no responder answers.
    pub crls: Option<Arc<CrlStore>>,
    /// How often CRL files are re-read, and the longest a fetched CRL is kept.
    pub crl_refresh: Duration,
    /// How often the certificates of live sessions are checked again (zero: never), so a
    /// certificate revoked after its device connected is pushed off.
    pub live_recheck: Duration,
    /// Fetch CRLs from the certificate's CRL distribution points (http).
    pub crl_distribution_points: bool,
}

impl Settings {
    /// True when `other` asks for exactly the same checking: a reload that keeps these
    /// settings keeps the running checker, its OCSP answers and its CRLs. CRL stores are
    /// compared by the files they read (their contents are re-read on their own schedule).
    pub fn same_as(&self, other: &Self) -> bool {
        let files = |s: &Self| s.crls.as_ref().map(|c| c.files().to_vec());
        self.responders == other.responders
            && self.aia_nonce == other.aia_nonce
            && self.timeout == other.timeout
            && self.hash == other.hash
            && self.method == other.method
            && self.soft_fail == other.soft_fail
            && self.skew == other.skew
            && self.max_age == other.max_age
            && self.max_ttl == other.max_ttl
            && self.negative_ttl == other.negative_ttl
            && self.cache_size == other.cache_size
            && self.ocsp == other.ocsp
            && self.check_intermediates == other.check_intermediates
            && self.live_recheck == other.live_recheck
            && files(self) == files(other)
            && self.crl_refresh == other.crl_refresh
            && self.crl_distribution_points == other.crl_distribution_points
    }
}

#[derive(Clone)]
struct Cached {
    state: State,
    ttl: Duration,
}

struct TtlPolicy;

impl Expiry<(Vec<u8>, Vec<u8>), Arc<Cached>> for TtlPolicy {
    fn expire_after_create(
        &self,
        _key: &(Vec<u8>, Vec<u8>),
        value: &Arc<Cached>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A CRL distribution point's answer, kept per (URL, issuer key).
enum Fetched {
    /// The issuer's current CRL, its signature checked, kept this long.
    Crl(Arc<Crl>, Duration),
    /// Nothing usable: unreachable, HTTP error, too large, not a CRL, not a complete CRL,
    /// another issuer's, or not current.
    Failed,
    /// A current CRL naming the issuer whose signature does not verify: kept briefly, so an
    /// attacker's answer neither stays nor is fetched on every authentication.
    Forged(String),
}

struct CrlTtl {
    negative: Duration,
}

impl Expiry<(String, [u8; 32]), Arc<Fetched>> for CrlTtl {
    fn expire_after_create(
        &self,
        _key: &(String, [u8; 32]),
        value: &Arc<Fetched>,
        _at: Instant,
    ) -> Option<Duration> {
        Some(match value.as_ref() {
            Fetched::Crl(_, ttl) => *ttl,
            Fetched::Failed | Fetched::Forged(_) => self.negative,
        })
    }
}

/// Issuer keys whose newest CRL is remembered.
const MAX_ISSUERS_REMEMBERED: usize = 256;
/// Memory the CRLs fetched from distribution points may take, all together.
const MAX_CDP_CACHE_BYTES: u64 = 128 * 1024 * 1024;
/// Largest CRL fetched from a distribution point.
const MAX_CRL_BYTES: usize = 32 * 1024 * 1024;
/// Largest OCSP response: a few kilobytes in practice.
const MAX_OCSP_RESPONSE_BYTES: usize = 64 * 1024;

/// Counters for logs and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// OCSP requests sent.
    pub requests: Counter,
    /// Checks answered from the cache.
    pub cache_hits: Counter,
    /// Responder failures (timeouts, HTTP errors, invalid responses), by kind (`timeout`,
    /// `connect`, `http_status`, `ocsp_nonce_mismatch`, ...).
    pub responder_errors: Family<ErrorKind, Counter>,
}

/// The kind of a responder failure, as a metrics label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorKind {
    /// Stable label.
    pub kind: &'static str,
}

impl Stats {
    /// Puts these counters in a metrics registry (under the caller's prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register("ocsp_requests", "OCSP requests sent", self.requests.clone());
        r.register(
            "cache_hits",
            "Revocation checks answered from the OCSP cache",
            self.cache_hits.clone(),
        );
        r.register(
            "responder_errors",
            "OCSP responder failures, by kind",
            self.responder_errors.clone(),
        );
    }
}

/// Checks certificates, sharing answers between authentications.
pub struct Checker {
    settings: Settings,
    http: reqwest::Client,
    cache: Cache<(Vec<u8>, Vec<u8>), Arc<Cached>>,
    /// CRLs fetched from distribution points, by URL and SHA-256 of the issuer's key.
    cdp_cache: Cache<(String, [u8; 32]), Arc<Fetched>>,
    /// The newest verified CRL seen from each issuer key (by thisUpdate): an older one, from
    /// a file put back or replayed at a distribution point, never outranks it while it is
    /// current.
    newest: std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Crl>>>,
    /// Counters.
    pub stats: Stats,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("responders", &self.settings.responders)
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// A checker with its own HTTP client and cache.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(settings: Settings) -> Result<Self, String> {
        // A responder or distribution point URL may come from the device's certificate:
        // the client follows no redirect.
        let http = crate::tls::http_client(settings.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let cache = Cache::builder()
            .max_capacity(settings.cache_size)
            .expire_after(TtlPolicy)
            .build();
        let cdp_cache = Cache::builder()
            .weigher(|_key: &(String, [u8; 32]), fetched: &Arc<Fetched>| {
                let bytes = match fetched.as_ref() {
                    Fetched::Crl(c, _) => c.weight(),
                    Fetched::Failed | Fetched::Forged(_) => 0,
                };
                u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX)
            })
            .max_capacity(MAX_CDP_CACHE_BYTES / 1024)
            .expire_after(CrlTtl {
                negative: settings.negative_ttl,
            })
            .build();
        Ok(Self {
            settings,
            http,
            cache,
            cdp_cache,
            newest: std::sync::Mutex::default(),
            stats: Stats::default(),
        })
    }

    /// Soft-fail is on.
    pub fn soft_fail(&self) -> bool {
        self.settings.soft_fail
    }

    /// Oldest thisUpdate accepted without a nextUpdate, seconds.
    fn max_age(&self) -> i64 {
        i64::try_from(self.settings.max_age.as_secs()).unwrap_or(i64::MAX)
    }

    /// Allowed clock skew, seconds.
    fn skew(&self) -> i64 {
        i64::try_from(self.settings.skew.as_secs()).unwrap_or(300)
    }

    /// The longest one certificate's check may take: every responder in turn, then a CRL
    /// fetch from its distribution point, each bounded by the per-request timeout.
    pub fn longest_check(&self) -> Duration {
        let asks = u32::try_from(self.settings.responders.len().max(1) + 1).unwrap_or(u32::MAX);
        self.settings.timeout.saturating_mul(asks)
    }

    /// How often the certificates of live sessions are checked again (zero: never).
    pub fn live_recheck(&self) -> Duration {
        self.settings.live_recheck
    }

    /// Intermediates are checked too.
    pub fn check_intermediates(&self) -> bool {
        self.settings.check_intermediates
    }

    /// The CRL store and how often to re-read it, if CRLs are configured.
    pub fn crls(&self) -> Option<(Arc<CrlStore>, Duration)> {
        self.settings
            .crls
            .clone()
            .map(|c| (c, self.settings.crl_refresh))
    }

    /// The revocation state of `cert` (DER), issued by `issuer` (DER), at `now` (Unix secs):
    /// OCSP (cached) first; the CRLs when OCSP is off or no responder gave a valid answer.
    ///
    /// `cert_parsed` and `issuer_parsed` are the same certificates, parsed once by the caller.
    pub async fn check(
        &self,
        cert: &[u8],
        cert_parsed: &X509Certificate<'_>,
        issuer: &[u8],
        issuer_parsed: &X509Certificate<'_>,
        now: i64,
    ) -> Report {
        if !self.settings.ocsp {
            return self
                .check_crls(
                    cert_parsed,
                    issuer,
                    issuer_parsed,
                    now,
                    "no current CRL from the issuer".into(),
                )
                .await;
        }
        let report = self
            .check_ocsp(cert, cert_parsed, issuer, issuer_parsed, now)
            .await;
        match &report.state {
            State::NoAnswer(why)
                if self.settings.crls.is_some() || self.settings.crl_distribution_points =>
            {
                let why = format!("{why}; no current CRL from the issuer");
                let fallback = self
                    .check_crls(cert_parsed, issuer, issuer_parsed, now, why)
                    .await;
                match fallback.state {
                    State::NoAnswer(_) => report,
                    state => {
                        tracing::debug!("no OCSP answer: the issuer's CRL answers instead");
                        Report {
                            state,
                            source: Source::CrlAfterOcsp,
                        }
                    }
                }
            }
            _ => report,
        }
    }

    /// The CRLs' answer: configured files first, then the certificate's CRL distribution
    /// points (fetched once, kept until the CRL's nextUpdate bounded by the refresh interval).
    /// Of the current, correctly signed CRLs, the newest answers (so an older CRL cannot
    /// hide a later revocation), including the newest one seen before from this issuer key.
    /// A current CRL naming the issuer whose signature does not verify is an invalid answer
    /// (Reject and alert, never soft-failed) unless another CRL answers.
    async fn check_crls(
        &self,
        cert: &X509Certificate<'_>,
        issuer_der: &[u8],
        issuer: &X509Certificate<'_>,
        now: i64,
        why: String,
    ) -> Report {
        use sha2::{Digest, Sha256};
        let skew = self.skew();
        let key_hash: [u8; 32] = Sha256::digest(issuer.public_key().raw).into();
        let report = |state| Report {
            state,
            source: Source::Crl,
        };
        let mut best: Option<(Arc<Crl>, State)> = None;
        let mut forged: Option<String> = None;
        // Takes `crl` into account; true if it answers.
        let mut consider =
            |crl: &Arc<Crl>| match crl.state_of(cert, issuer, now, skew, self.max_age()) {
                Ok(state) => {
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| crl.this_update() > b.this_update())
                    {
                        best = Some((crl.clone(), state));
                    }
                    true
                }
                Err(Silent::BadSignature) => {
                    forged.get_or_insert_with(|| crl.source());
                    false
                }
                Err(Silent::OtherIssuer | Silent::NotCurrent) => false,
            };
        let mut forged_at_cdp: Option<String> = None;
        let mut from_files = false;
        if let Some(store) = &self.settings.crls {
            for crl in store.crls() {
                from_files |= consider(&crl);
            }
        }
        if self.settings.crl_distribution_points && !from_files {
            for url in crl_distribution_points(cert) {
                let fetched = self
                    .cdp_cache
                    .get_with((url.clone(), key_hash), async {
                        Arc::new(self.fetch_crl(&url, issuer_der, now).await)
                    })
                    .await;
                match fetched.as_ref() {
                    Fetched::Crl(crl, _) => {
                        consider(crl);
                    }
                    Fetched::Forged(source) => {
                        forged_at_cdp.get_or_insert_with(|| source.clone());
                    }
                    Fetched::Failed => {}
                }
            }
        }
        // The newest seen before answers only if strictly newer: a CRL re-issued within the
        // same second (thisUpdate has seconds) by the sources read now is taken as theirs.
        let remembered = self
            .newest
            .lock()
            .ok()
            .and_then(|m| m.get(&key_hash).cloned());
        if let Some(crl) = &remembered {
            consider(crl);
        }
        let forged = forged.or(forged_at_cdp);
        if let Some((crl, state)) = best {
            let newer = remembered.as_ref().is_none_or(|r| !Arc::ptr_eq(r, &crl));
            if newer {
                if let Ok(mut m) = self.newest.lock() {
                    // Issuers are the trusted CAs on verified paths: few. Bounded anyway.
                    if m.len() < MAX_ISSUERS_REMEMBERED || m.contains_key(&key_hash) {
                        m.insert(key_hash, crl);
                    }
                }
            }
            return report(state);
        }
        if let Some(source) = forged {
            let e = format!(
                "CRL {source} names the issuer but is not signed by its key (forged, or an algorithm not accepted such as SHA-1)"
            );
            tracing::warn!(alert = "crl_signature_invalid", issuer = %Escaped(&issuer.subject().to_string()), error = %Escaped(&e), "CRL failed verification");
            return report(State::Invalid(e));
        }
        report(State::NoAnswer(why))
    }

    /// Fetches, parses and (if it names `issuer`, DER) verifies the CRL at a distribution
    /// point; the parsing and the signature check run off the async workers.
    async fn fetch_crl(&self, url: &str, issuer: &[u8], now: i64) -> Fetched {
        let skew = self.skew();
        let fetched = async {
            let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            // CRLs of large CAs run to megabytes; refuse anything absurd.
            let body = read_capped(resp, MAX_CRL_BYTES)
                .await
                .map_err(|e| e.to_string())?;
            let (url, issuer) = (url.to_owned(), issuer.to_vec());
            tokio::task::spawn_blocking(move || {
                let crl = Crl::parse(&url, &body)?;
                let (_, issuer) = X509Certificate::from_der(&issuer).map_err(|e| e.to_string())?;
                // Kept only if it can answer: another issuer's or a stale CRL would sit in
                // the cache for the refresh interval and keep the real one out.
                if !crl.names(&issuer) {
                    return Err(format!(
                        "the CRL is not {}'s",
                        Escaped(&issuer.subject().to_string())
                    ));
                }
                if crl
                    .next_update()
                    .is_some_and(|n| n < now.saturating_sub(skew))
                {
                    return Err("the CRL is past its nextUpdate".to_owned());
                }
                let forged = !crl.signed_by(&issuer);
                Ok((crl, forged))
            })
            .await
            .map_err(|e| e.to_string())?
        }
        .await;
        match fetched {
            Ok((crl, true)) => Fetched::Forged(crl.source()),
            Ok((crl, false)) => {
                let until_next = crl.next_update().map_or(self.settings.crl_refresh, |n| {
                    Duration::from_secs(u64::try_from(n - now).unwrap_or(0))
                });
                // Never shorter than a failure is kept: a CRL about to go stale is not
                // fetched again every second.
                let ttl = until_next
                    .min(self.settings.crl_refresh)
                    .max(self.settings.negative_ttl);
                Fetched::Crl(Arc::new(crl), ttl)
            }
            Err(e) => {
                tracing::warn!(url, error = %Escaped(&e), "CRL distribution point gave no CRL");
                Fetched::Failed
            }
        }
    }

    async fn check_ocsp(
        &self,
        cert: &[u8],
        cert_parsed: &X509Certificate<'_>,
        issuer: &[u8],
        issuer_parsed: &X509Certificate<'_>,
        now: i64,
    ) -> Report {
        let key = cache_key(cert_parsed, issuer_parsed);
        let fetched = AtomicBool::new(false);
        let cached = self
            .cache
            .get_with(key, async {
                fetched.store(true, Ordering::Relaxed);
                Arc::new(self.fetch(cert, issuer, now).await)
            })
            .await;
        let source = if fetched.load(Ordering::Relaxed) {
            Source::Ocsp
        } else {
            self.stats.cache_hits.inc();
            Source::Cache
        };
        Report {
            state: cached.state.clone(),
            source,
        }
    }

    async fn fetch(&self, cert: &[u8], issuer: &[u8], now: i64) -> Cached {
        let responders = if self.settings.responders.is_empty() {
            aia_ocsp_urls(cert)
                .into_iter()
                .map(|url| Responder {
                    url,
                    nonce: self.settings.aia_nonce,
                })
                .collect()
        } else {
            self.settings.responders.clone()
        };
        if responders.is_empty() {
            return self.failure("no OCSP responder configured and none in the certificate".into());
        }
        let mut last = String::new();
        for r in &responders {
            let (kind, e, hostile) = match self.ask(r, cert, issuer, now).await {
                Ok(answer) => return self.answered(&answer, now),
                Err(Failure::Transport(kind, e)) => (kind, e, false),
                Err(Failure::Invalid(kind, e)) => (kind, e, true),
            };
            self.stats
                .responder_errors
                .get_or_create(&ErrorKind { kind })
                .inc();
            if hostile {
                // Not "no answer": someone answered, and the answer is false or broken.
                // Asking the next responder could only turn an attack into an Accept.
                tracing::warn!(alert = "ocsp_answer_invalid", responder = ?r.url, kind, error = %Escaped(&e), "OCSP answer failed verification");
                return Cached {
                    state: State::Invalid(format!("{}: {e}", r.url)),
                    ttl: self.settings.negative_ttl,
                };
            }
            tracing::warn!(responder = ?r.url, kind, error = %Escaped(&e), "OCSP responder gave no answer");
            last = format!("{}: {e}", r.url);
        }
        self.failure(last)
    }

    fn failure(&self, why: String) -> Cached {
        Cached {
            state: State::NoAnswer(why),
            ttl: self.settings.negative_ttl,
        }
    }

    fn answered(&self, a: &Answer, now: i64) -> Cached {
        let state = match &a.status {
            Status::Good => State::Good,
            Status::Revoked { at, reason } => State::Revoked {
                at: *at,
                reason: reason.clone(),
            },
            Status::Unknown => State::Unknown,
        };
        // Until nextUpdate, bounded; "unknown" like a failure; no nextUpdate: the minimum.
        let ttl = match (&state, a.next_update) {
            (State::Unknown, _) => self.settings.negative_ttl,
            (_, Some(next)) => Duration::from_secs(u64::try_from(next - now).unwrap_or(0))
                .min(self.settings.max_ttl),
            (_, None) => self.settings.negative_ttl,
        };
        Cached {
            state,
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    async fn ask(
        &self,
        r: &Responder,
        cert: &[u8],
        issuer: &[u8],
        now: i64,
    ) -> Result<Answer, Failure> {
        let nonce = r.nonce.then(rand::random::<[u8; 16]>);
        let q = ocsp::query(cert, issuer, self.settings.hash, nonce)
            .map_err(|e| Failure::Transport(e.label(), e.to_string()))?;
        self.stats.requests.inc();
        let req = match self.settings.method {
            Method::Post => self
                .http
                .post(&r.url)
                .header("Content-Type", "application/ocsp-request")
                .body(q.der.clone()),
            Method::Get => {
                let b64 = base64_url_path(&q.der);
                self.http
                    .get(format!("{}/{}", r.url.trim_end_matches('/'), b64))
            }
        };
        let http_err = |e: reqwest::Error| {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "http"
            };
            Failure::Transport(kind, e.to_string())
        };
        let resp = req.send().await.map_err(http_err)?;
        if !resp.status().is_success() {
            return Err(Failure::Transport(
                "http_status",
                format!("HTTP {}", resp.status()),
            ));
        }
        let body = read_capped(resp, MAX_OCSP_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::Http(e) => http_err(e),
                // Real answers are a few kilobytes: this is no OCSP response.
                e @ ReadError::TooLarge(_) => Failure::Invalid("ocsp_too_large", e.to_string()),
            })?;
        ocsp::verify(&body, &q, issuer, now, self.skew(), self.max_age()).map_err(|e| {
            if e.is_hostile() {
                Failure::Invalid(e.label(), e.to_string())
            } else {
                Failure::Transport(e.label(), e.to_string())
            }
        })
    }
}

/// Why one responder gave no answer.
enum Failure {
    /// Nothing usable came back: unreachable, timeout, HTTP error, tryLater, stale.
    Transport(&'static str, String),
    /// An answer came back and failed verification, or is no OCSP response at all.
    Invalid(&'static str, String),
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The transfer failed.
    #[error(transparent)]
    Http(reqwest::Error),
    /// The body is longer than allowed.
    #[error("body over {0} bytes")]
    TooLarge(usize),
}

/// Reads a response body, refusing it as soon as it is known to exceed `cap` bytes: from
/// Content-Length before reading, else while the chunks arrive.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ReadError> {
    if resp
        .content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > cap))
    {
        return Err(ReadError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Issuer key hash and serial: what identifies a certificate to its CA.
fn cache_key(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> (Vec<u8>, Vec<u8>) {
    use sha2::{Digest, Sha256};
    let key_hash = Sha256::digest(issuer.public_key().subject_public_key.data.as_ref()).to_vec();
    (key_hash, cert.raw_serial().to_vec())
}

/// The OCSP URLs in a certificate's Authority Information Access extension.
pub fn aia_ocsp_urls(cert: &[u8]) -> Vec<String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let Ok((_, c)) = X509Certificate::from_der(cert) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for ext in c.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for d in &aia.accessdescs {
                if d.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1" {
                    if let GeneralName::URI(u) = &d.access_location {
                        urls.push((*u).to_owned());
                    }
                }
            }
        }
    }
    urls
}

/// Base64 of the request, URL-escaped for a GET path (RFC 5019 §5).
fn base64_url_path(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// The http URLs in a certificate's CRL Distribution Points extension.
pub fn crl_distribution_points(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n {
                            if u.starts_with("http://") {
                                urls.push((*u).to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    urls
}
