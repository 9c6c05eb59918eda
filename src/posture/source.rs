//! One posture source at run time: its HTTP client, OAuth2 token, cache, rate limit and
//! back-off.
//!
//! A lookup answers from the cache while the answer is fresh; past `fresh` and within
//! `max_stale` it answers from the cache and refreshes in the background (one refresh per
//! device at a time); otherwise it fetches and waits, bounded by the source's timeout, and
//! concurrent lookups of one device share that one fetch. A 429 or 503 backs the source off
//! (for Retry-After when given, else doubling from a second up to a minute); while backed
//! off, or over its rate, the source is not called and only cached answers are used.
//! Failures are never cached; "unknown device" answers are, like any answer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use super::record::{self, DeviceId, StepOutcome};
use super::settings::{Auth, Secret, SourceSettings};
use crate::clock;
use crate::pki::facts::CertFacts;
use crate::pki::revocation::{read_capped, ReadError};
use crate::policy::{Posture, PostureAnswer};

/// Largest answer body read from a source.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest back-off a Retry-After may ask for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longest an OAuth2 token is held, whatever its `expires_in`.
const MAX_TOKEN_LIFETIME: u64 = 86_400;
/// Back-off after a 429 or 503 without Retry-After: the first, and the most.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);

/// What a source knows about a device (an answer, cached as it is).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Its facts.
    Known(Posture),
    /// It does not know the device: why.
    Unknown(String),
}

impl Answer {
    /// As the policy sees it.
    pub fn facts(&self) -> PostureAnswer {
        match self {
            Self::Known(p) => PostureAnswer::Known(p.clone()),
            Self::Unknown(why) => PostureAnswer::UnknownDevice(why.clone()),
        }
    }
}

/// One fetch of a device, shared by the lookups that wait for it.
type Fetching = OnceCell<Result<Answer, FetchError>>;

/// A cache entry: the answer (`None`: forgotten), as of when it holds, and for an answer a
/// webhook event gave, when the source sent it (by the source's clock).
#[derive(Debug)]
struct Cached {
    answer: Option<Answer>,
    at: Instant,
    event_sent: Option<i64>,
}

fn served(answer: &Answer, served: Served) -> Lookup {
    Lookup {
        id: None,
        answer: answer.facts(),
        served,
    }
}

/// A lookup waiting on a shared fetch; the last to leave takes the fetch off the map.
struct Leaving<'a> {
    source: &'a Source,
    key: &'a str,
    cell: &'a Arc<Fetching>,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.source.inflight.lock() {
            // The map's reference and this one: no one else waits on it.
            let last = Arc::strong_count(self.cell) <= 2;
            if last && m.get(self.key).is_some_and(|c| Arc::ptr_eq(c, self.cell)) {
                m.remove(self.key);
            }
        }
    }
}

/// A background refresh of one id running; dropping it (the task ended, or panicked)
/// ends it.
struct Refreshing {
    source: Arc<Source>,
    key: String,
}

impl Refreshing {
    fn start(source: &Arc<Source>, id: &str) -> Option<Self> {
        let key = source.key(id);
        let mut running = source.refreshing.lock().ok()?;
        running.insert(key.clone()).then(|| Self {
            source: Arc::clone(source),
            key,
        })
    }
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        if let Ok(mut running) = self.source.refreshing.lock() {
            running.remove(&self.key);
        }
    }
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A device that has not proved it holds its certificate's key yet.
    Unproven,
    /// A device that has.
    Proven,
}

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From the cache, fresh.
    Fresh,
    /// From the cache, past its fresh time; a refresh was started.
    Stale,
    /// Fetched now (or shared with a fetch already running).
    Fetched,
    /// Not asked: no device id.
    NoId,
    /// No usable answer.
    Failed,
}

impl Served {
    /// The metrics label and the word `posture lookup` shows.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Fetched => "fetched",
            Self::NoId => "no_id",
            Self::Failed => "failed",
        }
    }
}

/// One source's lookup of one device.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The device id used, if one could be taken.
    pub id: Option<DeviceId>,
    /// What the policy sees.
    pub answer: PostureAnswer,
    /// How it was answered.
    pub served: Served,
}

/// Why a fetch gave no answer; each kind is a metrics label.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The source could not be reached.
    #[error("cannot reach the source: {0}")]
    Connect(String),
    /// It did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// It answered with an error status.
    #[error("HTTP {0}")]
    Status(u16),
    /// It asked us to slow down (429, 503), or our own rate limit is reached.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The body is too large or not JSON.
    #[error("unreadable answer: {0}")]
    Body(String),
    /// The JSON does not have the expected shape.
    #[error("unexpected answer: {0}")]
    Shape(String),
    /// No OAuth2 token could be had.
    #[error("no token: {0}")]
    Token(String),
    /// The device's answer changed (an event) while it was fetched.
    #[error("the device's posture changed while it was being read; ask again")]
    Superseded,
}

impl FetchError {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::Status(_) => "http_status",
            Self::RateLimited(_) => "rate_limited",
            Self::Body(_) => "body",
            Self::Shape(_) => "shape",
            Self::Token(_) => "token",
            Self::Superseded => "superseded",
        }
    }
}

/// A source and a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The source's name.
    pub source: String,
    /// What happened (`fresh`, `stale`, `fetched`, `failed`; an error kind; a refusal
    /// reason).
    pub kind: &'static str,
}

/// The posture counters, shared by every source (labelled by source).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Lookups, by how they were answered.
    pub lookups: Family<SourceLabels, Counter>,
    /// Requests sent to sources.
    pub requests: Family<SourceLabels, Counter>,
    /// Source failures, by kind.
    pub errors: Family<SourceLabels, Counter>,
    /// OAuth2 tokens fetched.
    pub token_refreshes: Family<SourceLabels, Counter>,
    /// 429 and 503 answers.
    pub throttled: Family<SourceLabels, Counter>,
    /// Webhook events, accepted or refused by reason.
    pub webhook: Family<SourceLabels, Counter>,
    /// Devices updated by polling.
    pub polled: Family<SourceLabels, Counter>,
}

impl Stats {
    /// Puts these counters in a metrics registry (under the caller's prefix).
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "lookups",
            "Posture lookups, by source and how they were answered (kind)",
            self.lookups.clone(),
        );
        r.register(
            "requests",
            "HTTP requests sent to posture sources",
            self.requests.clone(),
        );
        r.register(
            "errors",
            "Posture source failures, by kind",
            self.errors.clone(),
        );
        r.register(
            "token_refreshes",
            "OAuth2 tokens fetched for posture sources",
            self.token_refreshes.clone(),
        );
        r.register(
            "throttled",
            "429 and 503 answers from posture sources",
            self.throttled.clone(),
        );
        r.register(
            "webhook_events",
            "Posture webhook events, accepted or refused (kind: the reason)",
            self.webhook.clone(),
        );
        r.register(
            "polled_devices",
            "Devices whose cached posture a poll updated",
            self.polled.clone(),
        );
    }

    /// Counts one in `family` for `source`.
    pub fn count(family: &Family<SourceLabels, Counter>, source: &str, kind: &'static str) {
        family
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
                kind,
            })
            .inc();
    }
}

#[derive(Debug)]
struct Token {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    next: Duration,
}

/// One posture source, live.
pub struct Source {
    /// Its settings.
    pub settings: SourceSettings,
    http: reqwest::Client,
    cache: Cache<String, Arc<Cached>>,
    token: tokio::sync::Mutex<Option<Token>>,
    bucket: Mutex<Bucket>,
    backoff: Mutex<Backoff>,
    refreshing: Mutex<HashSet<String>>,
    /// Fetches running, one per device, shared by its concurrent lookups.
    inflight: Mutex<HashMap<String, Arc<Fetching>>>,
    /// Held while the cache is written (see [`Source::store`]).
    writing: tokio::sync::Mutex<()>,
    /// Its ids are of case-insensitive formats (see [`Source::key`]).
    fold_case: bool,
    stats: Stats,
    /// Webhook signatures seen recently (replay protection), kept across reloads.
    pub seen: Arc<super::webhook::Seen>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.settings.name)
            .field("base", &self.settings.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Source {
    /// A source with its own HTTP client and cache.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(settings: SourceSettings, stats: Stats) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for der in &settings.roots {
            // A bundle may hold certificates webpki cannot use; the rest still count.
            let _ = roots.add(der.clone());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // No redirect: one could take the token to another host.
        let http = crate::tls::http_client(settings.timeout)
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| e.to_string())?;
        let cache = Cache::builder()
            .max_capacity(settings.cache_size)
            .time_to_live(settings.max_stale)
            .build();
        let burst = settings.burst;
        let seen = super::webhook::Seen::for_source(&settings.name);
        let fold_case = settings.fold_case();
        Ok(Self {
            settings,
            http,
            cache,
            token: tokio::sync::Mutex::new(None),
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: clock::now(),
            }),
            backoff: Mutex::new(Backoff::default()),
            refreshing: Mutex::new(HashSet::new()),
            inflight: Mutex::new(HashMap::new()),
            writing: tokio::sync::Mutex::new(()),
            fold_case,
            stats,
            seen,
        })
    }

    /// The counters it shares with the other sources.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The device's id for this source.
    pub fn device_id(&self, cert: &CertFacts, calling_station: Option<&str>) -> Option<DeviceId> {
        record::device_id(&self.settings.identity, cert, calling_station)
    }

    /// Looks the device up for a device that has proved it holds its key: from the cache,
    /// or from the source (see the module docs).
    pub async fn lookup(
        self: &Arc<Self>,
        cert: &CertFacts,
        calling_station: Option<&str>,
    ) -> Lookup {
        self.lookup_as(cert, calling_station, Asker::Proven).await
    }

    /// Looks the device up on behalf of `asker`.
    pub async fn lookup_as(
        self: &Arc<Self>,
        cert: &CertFacts,
        calling_station: Option<&str>,
        asker: Asker,
    ) -> Lookup {
        let Some(id) = self.device_id(cert, calling_station) else {
            return self.counted(self.no_id());
        };
        let lookup = self.lookup_id(&id.id, asker).await;
        self.counted(Lookup {
            id: Some(id),
            ..lookup
        })
    }

    /// The device's answer if it needs nothing from the source: a fresh cached answer, or
    /// "unknown device" when no id can be taken. Not counted (see [`Source::count`]).
    pub async fn settled(&self, cert: &CertFacts, calling_station: Option<&str>) -> Option<Lookup> {
        let Some(id) = self.device_id(cert, calling_station) else {
            return Some(self.no_id());
        };
        let c = self.cache.get(&self.key(&id.id)).await?;
        let answer = c
            .answer
            .as_ref()
            .filter(|_| clock::now().saturating_duration_since(c.at) <= self.settings.fresh)?;
        Some(Lookup {
            id: Some(id),
            ..served(answer, Served::Fresh)
        })
    }

    /// The lookup of a device without an id for this source.
    fn no_id(&self) -> Lookup {
        let tried: Vec<_> = self
            .settings
            .identity
            .iter()
            .map(|e| e.from.label())
            .collect();
        Lookup {
            id: None,
            answer: PostureAnswer::UnknownDevice(format!(
                "no device id in the certificate or request (tried {})",
                tried.join(", ")
            )),
            served: Served::NoId,
        }
    }

    /// Counts a lookup answered by [`Source::settled`].
    pub fn count(&self, l: &Lookup) {
        Stats::count(&self.stats.lookups, self.name(), l.served.label());
    }

    fn counted(&self, l: Lookup) -> Lookup {
        self.count(&l);
        l
    }

    /// Looks up the device with this id.
    pub async fn lookup_id(self: &Arc<Self>, id: &str, asker: Asker) -> Lookup {
        let now = clock::now();
        if let Some(c) = self.cache.get(&self.key(id)).await {
            let age = now.saturating_duration_since(c.at);
            match &c.answer {
                Some(a) if age <= self.settings.fresh => return served(a, Served::Fresh),
                Some(a) if age <= self.settings.max_stale => {
                    self.refresh_in_background(id, asker);
                    return served(a, Served::Stale);
                }
                // Too old, or forgotten: fetched below.
                _ => {}
            }
        }
        match self.fetch_shared(id, asker).await {
            Ok(a) => served(&a, Served::Fetched),
            Err(e) => Lookup {
                id: None,
                answer: PostureAnswer::Unavailable(e.to_string()),
                served: Served::Failed,
            },
        }
    }

    /// Fetches `id` once for every concurrent caller (a caller that gives up hands the
    /// fetch to the next), stores the answer unless a newer one arrived meanwhile, and
    /// gives the answer that stands.
    async fn fetch_shared(&self, id: &str, asker: Asker) -> Result<Answer, FetchError> {
        let k = self.key(id);
        let cell = match self.inflight.lock() {
            Ok(mut m) => m.entry(k.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        // Dropped however this ends (answered, or given up mid-fetch): the last one out
        // takes the fetch off the map.
        let _leaving = Leaving {
            source: self,
            key: &k,
            cell: &cell,
        };
        cell.get_or_init(|| async {
            let started = clock::now();
            let a = self.fetch_within(id, asker).await?;
            match self.store(id, Some(a.clone()), started).await {
                (_, Some(standing)) => Ok(standing),
                // Forgotten while it was fetched: the source changed since it was read.
                (_, None) => Err(FetchError::Superseded),
            }
        })
        .await
        .clone()
    }

    /// Starts one background refresh of `id`, unless one is running or the source is
    /// backed off.
    fn refresh_in_background(self: &Arc<Self>, id: &str, asker: Asker) {
        if self.backed_off().is_some() {
            return;
        }
        let Some(running) = Refreshing::start(self, id) else {
            return;
        };
        let this = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move {
            let started = clock::now();
            if let Ok(answer) = this.fetch_within(&id, asker).await {
                this.store(&id, Some(answer), started).await;
            }
            drop(running);
        });
    }

    /// Replaces the device's answer with one the source gave as of `as_of` (a poll),
    /// unless the cache holds a newer one; whether it did.
    pub async fn push(&self, id: &str, answer: Answer, as_of: Instant) -> bool {
        self.store(id, Some(answer), as_of).await.0
    }

    /// Forgets the device's answer as of `as_of`: the next lookup fetches (an answer older
    /// than `as_of` arriving later is not stored).
    pub async fn forget(&self, id: &str, as_of: Instant) {
        self.store(id, None, as_of).await;
    }

    /// Applies a webhook event the source sent at `sent` (Unix seconds, its clock):
    /// `answer`, or forgotten for `None`. It replaces any fetched or polled answer (it is
    /// news), but not one from an event the source sent later (events held back on the way
    /// cannot undo newer ones; both stamps are the source's clock). Whether it applied.
    pub async fn push_event(&self, id: &str, answer: Option<Answer>, sent: i64) -> bool {
        let _one_writer = self.writing.lock().await;
        let k = self.key(id);
        if let Some(c) = self.cache.get(&k).await {
            if c.event_sent.is_some_and(|t| t > sent) {
                return false;
            }
        }
        let cached = Cached {
            answer,
            at: clock::now(),
            event_sent: Some(sent),
        };
        self.cache.insert(k, Arc::new(cached)).await;
        true
    }

    /// Stores `answer` (`None`: forgotten) as of `as_of` unless the entry is newer:
    /// whether it did, and the answer that stands (`None` when forgotten). Writes are
    /// serialised per source, so a late, older answer never replaces a newer one.
    async fn store(
        &self,
        id: &str,
        answer: Option<Answer>,
        as_of: Instant,
    ) -> (bool, Option<Answer>) {
        let _one_writer = self.writing.lock().await;
        let k = self.key(id);
        if let Some(c) = self.cache.get(&k).await {
            if c.at > as_of {
                return (false, c.answer.clone());
            }
        }
        let cached = Cached {
            answer: answer.clone(),
            at: as_of,
            event_sent: None,
        };
        self.cache.insert(k, Arc::new(cached)).await;
        (true, answer)
    }

    /// The cache key of a device id: for sources whose ids are of a case-insensitive
    /// format (GUIDs, hex, MACs) ASCII case is folded, as records are matched, so one
    /// device has one entry however a poll, an event or a certificate spell it; other ids
    /// are taken as they are.
    /// The cache key of a device id: case-folded for the extractors whose ids are
    /// case-insensitive (GUID, hex, MAC), else as it is.
    pub fn key(&self, id: &str) -> String {
        if self.fold_case {
            id.to_ascii_lowercase()
        } else {
            id.to_owned()
        }
    }

    /// Fetches running (shared by their lookups).
    pub fn fetches_in_flight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The cached answer and its age, if any.
    pub async fn cached(&self, id: &str) -> Option<(Answer, Duration)> {
        let c = self.cache.get(&self.key(id)).await?;
        Some((
            c.answer.clone()?,
            clock::now().saturating_duration_since(c.at),
        ))
    }

    /// Fetches within the source's timeout, counting failures.
    pub async fn fetch_within(&self, id: &str, asker: Asker) -> Result<Answer, FetchError> {
        let r = match tokio::time::timeout(self.settings.timeout, self.fetch(id, asker)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.settings.timeout)),
        };
        // An unproven asker over its share of the rate is the limit working, not a failure.
        let limited = matches!(r, Err(FetchError::RateLimited(_))) && asker == Asker::Unproven;
        if let (Err(e), false) = (&r, limited) {
            Stats::count(&self.stats.errors, self.name(), e.kind());
            debug!(posture.source = %self.name(), error = %e, "posture lookup failed");
        }
        r
    }

    /// Runs the lookup's steps for `id`.
    async fn fetch(&self, id: &str, asker: Asker) -> Result<Answer, FetchError> {
        let mut vars: Vec<(String, String)> = vec![("id".into(), id.to_owned())];
        let mut last = Value::Null;
        for (i, step) in self.settings.steps.iter().enumerate() {
            let lookup = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let path = step.path.fill(lookup, encode).ok_or_else(|| {
                FetchError::Shape(format!("step {}: a placeholder without a value", i + 1))
            })?;
            let url = self.url(&path)?;
            let body = match self.get_as(url, asker).await? {
                Got::Body(b) => b,
                Got::NotFound => {
                    return Ok(Answer::Unknown(format!(
                        "the source has no record (step {}: HTTP 404)",
                        i + 1
                    )))
                }
            };
            let record = match record::record_of(step, &body, &lookup, self.fold_case)
                .map_err(FetchError::Shape)?
            {
                StepOutcome::Record(r) => r.clone(),
                StepOutcome::Unknown(why) => return Ok(Answer::Unknown(why)),
            };
            for (name, ptr) in &step.save {
                let v = record
                    .pointer(ptr)
                    .and_then(record::scalar)
                    .filter(|v| !v.is_empty() && v.len() <= record::MAX_ID)
                    .ok_or_else(|| FetchError::Shape(format!("step {}: no usable {ptr}", i + 1)))?;
                vars.push((name.clone(), v));
            }
            last = record;
        }
        record::posture_of(&self.settings.facts, &last)
            .map(Answer::Known)
            .map_err(FetchError::Shape)
    }

    /// `path` (and query) on the source's base URL.
    pub fn url(&self, path: &str) -> Result<Url, FetchError> {
        let base = self.settings.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).map_err(|e| FetchError::Shape(format!("URL: {e}")))
    }

    /// Whether `url` is on the source's own origin (scheme, host, port).
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.settings.base.origin()
    }

    /// GETs `url` (auth, rate limit, back-off, one token refresh after a 401) and reads a
    /// JSON body.
    ///
    /// # Errors
    /// See [`FetchError`].
    pub async fn get(&self, url: Url) -> Result<Got, FetchError> {
        self.get_as(url, Asker::Proven).await
    }

    /// [`Self::get`] on behalf of `asker`: a device that has not proved its key yet may
    /// take no more than half the rate limit's bucket, so replaying a copied certificate
    /// cannot starve the lookups of devices that have.
    async fn get_as(&self, url: Url, asker: Asker) -> Result<Got, FetchError> {
        let mut refreshed = false;
        loop {
            if let Some(left) = self.backed_off() {
                return Err(FetchError::RateLimited(format!(
                    "backed off for {}s more",
                    left.as_secs().max(1)
                )));
            }
            if !self.take_token(asker) {
                return Err(FetchError::RateLimited(format!(
                    "over {}/s",
                    self.settings.rate
                )));
            }
            let (req, bearer) = self.authorised(self.http.get(url.clone())).await?;
            Stats::count(&self.stats.requests, self.name(), "get");
            let resp = req
                .send()
                .await
                .map_err(|e| http_error(&e, self.settings.timeout))?;
            let status = resp.status();
            match status {
                StatusCode::UNAUTHORIZED if !refreshed && bearer.is_some() => {
                    // The token may have been revoked or expired early: one fresh one.
                    self.drop_token(bearer.as_ref()).await;
                    refreshed = true;
                    continue;
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    Stats::count(&self.stats.throttled, self.name(), "throttled");
                    let wait = self.back_off(resp.headers().get(RETRY_AFTER));
                    warn!(
                        posture.source = %self.name(),
                        status = status.as_u16(),
                        backoff_secs = wait.as_secs(),
                        "posture source asked to slow down: backing off"
                    );
                    return Err(FetchError::RateLimited(format!(
                        "HTTP {} (retry in {}s)",
                        status.as_u16(),
                        wait.as_secs()
                    )));
                }
                StatusCode::NOT_FOUND => {
                    self.backed_on();
                    return Ok(Got::NotFound);
                }
                s if !s.is_success() => return Err(FetchError::Status(s.as_u16())),
                _ => {}
            }
            self.backed_on();
            let body = read_capped(resp, MAX_BODY).await.map_err(|e| match e {
                ReadError::Http(e) => http_error(&e, self.settings.timeout),
                e @ ReadError::TooLarge(_) => FetchError::Body(e.to_string()),
            })?;
            let json: Value =
                serde_json::from_slice(&body).map_err(|_| FetchError::Body("not JSON".into()))?;
            return Ok(Got::Body(json));
        }
    }

    /// Adds the source's headers and credentials; hands back the bearer token used, if
    /// one is an OAuth2 token.
    async fn authorised(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::RequestBuilder, Option<Secret>), FetchError> {
        for (k, v) in &self.settings.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let secret_header = |v: &str| {
            let mut h = HeaderValue::from_str(v)
                .map_err(|_| FetchError::Token("the secret is not a valid header value".into()))?;
            h.set_sensitive(true);
            Ok::<_, FetchError>(h)
        };
        match &self.settings.auth {
            Auth::None => Ok((req, None)),
            Auth::Bearer(t) => Ok((
                req.header(
                    AUTHORIZATION,
                    secret_header(&format!("Bearer {}", t.expose()))?,
                ),
                None,
            )),
            Auth::ApiKey { header, key } => {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| FetchError::Token("bad header name".into()))?;
                Ok((req.header(name, secret_header(key.expose())?), None))
            }
            Auth::OAuth2 { .. } => {
                let token = self.oauth2_token().await?;
                let h = secret_header(&format!("Bearer {}", token.expose()))?;
                Ok((req.header(AUTHORIZATION, h), Some(token)))
            }
        }
    }

    /// The cached OAuth2 token, or a new one when there is none or it is near expiry.
    async fn oauth2_token(&self) -> Result<Secret, FetchError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| clock::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let t = self.fetch_token().await?;
        let value = t.value.clone();
        *slot = Some(t);
        Ok(value)
    }

    /// Forgets the token a 401 refused, unless another request replaced it meanwhile.
    async fn drop_token(&self, refused: Option<&Secret>) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().map(|t| &t.value) == refused {
            *slot = None;
        }
    }

    async fn fetch_token(&self) -> Result<Token, FetchError> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
        } = &self.settings.auth
        else {
            return Err(FetchError::Token("not an OAuth2 source".into()));
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose()),
        ];
        if let Some(s) = scope {
            form.push(("scope", s.as_str()));
        }
        Stats::count(&self.stats.token_refreshes, self.name(), "fetched");
        let resp = self
            .http
            .post(token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| FetchError::Token(http_error(&e, self.settings.timeout).to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            // The body may echo what was sent: never log it.
            return Err(FetchError::Token(format!(
                "the token endpoint answered HTTP {}",
                status.as_u16()
            )));
        }
        let body = read_capped(resp, 64 * 1024)
            .await
            .map_err(|e| FetchError::Token(e.to_string()))?;
        let json: Value = serde_json::from_slice(&body)
            .map_err(|_| FetchError::Token("the token answer is not JSON".into()))?;
        let value = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| FetchError::Token("no access_token in the answer".into()))?;
        let lifetime = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(300)
        // However long the endpoint says, held a day at most (and never an Instant that
        // overflows).
        .min(MAX_TOKEN_LIFETIME);
        // Refreshed before it expires: a tenth of its life or a minute early, whichever is
        // less, so requests in flight never carry an expired token.
        let early = (lifetime / 10).min(60);
        let refresh_at = clock::now() + Duration::from_secs(lifetime.saturating_sub(early).max(1));
        Ok(Token {
            value: Secret(zeroize::Zeroizing::new(value.to_owned())),
            refresh_at,
        })
    }

    /// How long the source stays backed off, if it is.
    pub fn backed_off(&self) -> Option<Duration> {
        let b = self.backoff.lock().ok()?;
        let until = b.until?;
        let now = clock::now();
        (until > now).then(|| until - now)
    }

    /// Backs the source off after a 429 or 503; returns for how long.
    fn back_off(&self, retry_after: Option<&HeaderValue>) -> Duration {
        let asked = retry_after
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after_secs(v, clock::unix_now()))
            .map(|s| Duration::from_secs(s).min(MAX_BACKOFF));
        let Ok(mut b) = self.backoff.lock() else {
            return FIRST_BACKOFF;
        };
        let wait = asked.unwrap_or_else(|| b.next.max(FIRST_BACKOFF));
        b.next = (wait * 2).min(LONGEST_BACKOFF);
        b.until = Some(clock::now() + wait);
        wait
    }

    /// A good answer ends the back-off's doubling.
    fn backed_on(&self) {
        if let Ok(mut b) = self.backoff.lock() {
            b.next = Duration::ZERO;
        }
    }

    /// Takes one request from the rate limit's bucket.
    fn take_token(&self, asker: Asker) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return false;
        };
        let now = clock::now();
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.settings.rate).min(self.settings.burst);
        b.at = now;
        let floor = match asker {
            Asker::Proven => 0.0,
            Asker::Unproven => self.settings.burst / 2.0,
        };
        if b.tokens >= 1.0 + floor {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A GET's result.
#[derive(Debug)]
pub enum Got {
    /// A JSON body.
    Body(Value),
    /// HTTP 404.
    NotFound,
}

/// A Retry-After value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date; seconds from
/// `now` (Unix seconds).
pub fn retry_after_secs(v: &str, now: i64) -> Option<u64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s);
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp().as_second();
    Some(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

fn http_error(e: &reqwest::Error, timeout: Duration) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout(timeout)
    } else {
        // Without the URL: it may carry an id; the chain says what failed.
        FetchError::Connect(e.without_url_string())
    }
}

trait WithoutUrl {
    fn without_url_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_string(&self) -> String {
        let mut s = String::new();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&e.to_string());
            cur = e.source();
        }
        if s.is_empty() {
            "request failed".into()
        } else {
            s
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (dots included, so `..`
/// cannot become a dot segment), so an id can never add or remove a path segment, a query
/// or a fragment.
pub fn encode(v: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_their_path_segment() {
        assert_eq!(encode("abc-1_~"), "abc-1_~");
        // Dots too: `..` alone would be a dot segment, which URL parsing folds away.
        assert_eq!(encode(".."), "%2E%2E");
        assert_eq!(encode("../x?y#z/%"), "%2E%2E%2Fx%3Fy%23z%2F%25");
        assert_eq!(encode("a b"), "a%20b");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after_secs("120", 0), Some(120));
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777.
        assert_eq!(
            retry_after_secs("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_677),
            Some(100)
        );
        assert_eq!(
            retry_after_secs("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_877),
            Some(0)
        );
        assert_eq!(retry_after_secs("soon", 0), None);
    }
}
