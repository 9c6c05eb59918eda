//! From an authenticated peer to a decision: gather the facts (the certificate, the
//! requests, revocation from its source with a deadline, `now`), then run the policy.
//!
//! A fact source that fails or misses its deadline gives facts that say so ("unknown"),
//! never a pass: the policy refuses on them unless the admin chose soft-fail for that
//! source, and then the audit record says it was soft-failed.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock;
use crate::config::Runtime;
use crate::eap::PeerInfo;
use crate::logsafe::Escaped;
use crate::pki::facts::{CertFacts, CertSummary};
use crate::pki::revocation::{Checker, Report, State};
use crate::policy::{
    self, Decision, Facts, Policy, PostureFacts, PostureReads, RequestFacts, RevocationFacts,
    RevocationOutcome, Trace,
};
use crate::posture::{Asker, Lookup, Served, Sources};
use crate::tls::VerifiedChain;

/// A source of facts that takes time (an OCSP responder, later an MDM API), made for one
/// authentication with what it is asked about: it is given a deadline, and says what its
/// facts are when the deadline passes first.
pub trait FactSource {
    /// What it finds.
    type Facts;
    /// How long it may take in all.
    fn deadline(&self) -> Duration;
    /// Finds the facts.
    fn gather(&self) -> impl Future<Output = Self::Facts> + Send + '_;
    /// The facts when the deadline passed first.
    fn late(&self) -> Self::Facts;
}

/// Revocation facts being gathered for a conversation since its device's certificate was
/// verified, before the handshake ended (see [`crate::eap::Session::take_early_peer`]).
/// Dropping it (the conversation ended another way) stops the work.
///
/// Its answer is used only for the path finally verified, by the checker still running
/// (a reload in between asks again), and only while fresh: a decision later than
/// [`EARLY_FRESH`] after the start gathers anew at its own `now`, so a device that drags
/// its flight out cannot be let on by an answer older than that.
#[derive(Debug)]
pub struct Early {
    path: VerifiedChain,
    checker: Arc<Checker>,
    started: Instant,
    task: tokio::task::JoinHandle<RevocationFacts>,
    _slot: OwnedSemaphorePermit,
}

/// How long an early answer may be used after its check started.
pub const EARLY_FRESH: Duration = Duration::from_secs(10);

/// Early checks running at once, over every conversation: the certificate is verified
/// before the device has proved it holds its key (CertificateVerify comes after it), so
/// anyone with a copy of a certificate can start one; past this they wait for the end of
/// the handshake like before.
pub const MAX_EARLY: usize = 256;

static EARLY_SLOTS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MAX_EARLY)));

impl Drop for Early {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Early {
    /// Starts checking `path` now, within the source's deadline, if revocation is on and
    /// an early slot is free.
    pub fn start(runtime: &Runtime, path: VerifiedChain, now: i64) -> Option<Self> {
        let checker = runtime.revocation.clone()?;
        let slot = EARLY_SLOTS.clone().try_acquire_owned().ok()?;
        let (for_task, task_checker) = (path.clone(), checker.clone());
        let task = tokio::spawn(async move {
            let source = Revocation {
                checker: &task_checker,
                path: &for_task,
                now,
            };
            gather(&source).await
        });
        Some(Self {
            path,
            checker,
            started: clock::now(),
            task,
            _slot: slot,
        })
    }

    /// Whether its answer may stand for `path` checked by `checker` now.
    fn usable(&self, path: &VerifiedChain, checker: &Arc<Checker>) -> bool {
        self.path == *path
            && Arc::ptr_eq(&self.checker, checker)
            && clock::now().saturating_duration_since(self.started) <= EARLY_FRESH
    }
}

/// Posture lookups started for a conversation as soon as its device's certificate was
/// verified, so they overlap the rest of the handshake. Used only for the same device
/// certificate, the same sources and the same policy reads, while fresh ([`EARLY_FRESH`]);
/// dropping it stops the work.
#[derive(Debug)]
pub struct EarlyPosture {
    leaf: Vec<u8>,
    /// The device certificate's facts, parsed once for the lookups and the decision.
    cert: Arc<CertFacts>,
    sources: Arc<Sources>,
    reads: PostureReads,
    asker: Asker,
    started: Instant,
    work: Work,
    _slot: Option<OwnedSemaphorePermit>,
}

/// Early posture lookups: answered at once (from the cache), or running on a task.
#[derive(Debug)]
enum Work {
    Done(Option<Vec<(String, Lookup)>>),
    Running(tokio::task::JoinHandle<Vec<(String, Lookup)>>),
}

static EARLY_POSTURE_SLOTS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MAX_EARLY)));

impl Drop for EarlyPosture {
    fn drop(&mut self) {
        if let Work::Running(task) = &self.work {
            task.abort();
        }
    }
}

impl EarlyPosture {
    /// Starts the lookups `policy` needs for the device of `path` mid-handshake, if posture
    /// sources are configured, the policy reads one, and an early slot is free.
    pub fn start(
        runtime: &Runtime,
        policy: &Policy,
        path: &VerifiedChain,
        first: &RequestFacts,
    ) -> Option<Self> {
        let sources = runtime.posture.clone()?;
        let reads = policy.posture_reads().clone();
        if !sources.needed(&reads) {
            return None;
        }
        let slot = EARLY_POSTURE_SLOTS.clone().try_acquire_owned().ok()?;
        // The device has not signed CertificateVerify yet: anyone with a copy of its
        // certificate may be asking.
        Some(Self::spawn(
            sources,
            reads,
            CertFacts::of(path.certificates()),
            first.calling_station.clone(),
            Asker::Unproven,
            path,
            Some(slot),
        ))
    }

    /// Starts the lookups: answered at once when the caches can (no task, no slot kept),
    /// else on a task of their own.
    fn spawn(
        sources: Arc<Sources>,
        reads: PostureReads,
        cert: CertFacts,
        station: Option<String>,
        asker: Asker,
        path: &VerifiedChain,
        mut slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        use futures_util::FutureExt as _;
        let cert = Arc::new(cert);
        let (task_sources, task_reads, task_cert) = (sources.clone(), reads.clone(), cert.clone());
        let mut lookups = Box::pin(async move {
            let source = PostureLookup {
                sources: &task_sources,
                reads: &task_reads,
                cert: &task_cert,
                calling_station: station.as_deref(),
                asker,
            };
            gather(&source).await
        });
        // Polled once here: a warm cache answers without a task (or a wake-up) per
        // conversation; otherwise the task polls it on, with its own waker.
        let work = match lookups.as_mut().now_or_never() {
            Some(done) => {
                slot = None;
                Work::Done(Some(done))
            }
            None => Work::Running(tokio::spawn(lookups)),
        };
        Self {
            leaf: path.end_entity().to_vec(),
            cert,
            sources,
            reads,
            asker,
            started: clock::now(),
            work,
            _slot: slot,
        }
    }

    fn usable(&self, path: &VerifiedChain, sources: &Arc<Sources>, reads: &PostureReads) -> bool {
        self.leaf == path.end_entity()
            && Arc::ptr_eq(&self.sources, sources)
            && self.reads == *reads
            && clock::now().saturating_duration_since(self.started) <= EARLY_FRESH
    }

    /// The lookups' answers if they are all in and none failed, without waiting.
    fn ready(&mut self) -> Option<Vec<(String, Lookup)>> {
        use futures_util::FutureExt as _;
        if let Work::Running(task) = &mut self.work {
            if !task.is_finished() {
                return None;
            }
            // Its output taken once, kept for `finish`; a task that cannot be read now (the
            // request has spent its cooperative budget) is left for `finish` to await.
            self.work = Work::Done(task.now_or_never()?.ok());
        }
        match &mut self.work {
            Work::Done(done) => done.take_if(|l| l.iter().all(|(_, l)| l.served != Served::Failed)),
            Work::Running(_) => None,
        }
    }

    /// The lookups' answers, within the deadline. A lookup made before the device proved
    /// its key that failed (its share of the rate limit spent, say) is asked again; the
    /// cache answers the rest.
    async fn finish(
        mut self,
        cert: &CertFacts,
        calling_station: Option<&str>,
    ) -> Vec<(String, Lookup)> {
        let source = PostureLookup {
            sources: &self.sources,
            reads: &self.reads,
            cert,
            calling_station,
            asker: Asker::Proven,
        };
        let lookups = match &mut self.work {
            Work::Done(done) => done.take().unwrap_or_else(|| source.late()),
            Work::Running(task) => match tokio::time::timeout(source.deadline(), task).await {
                Ok(Ok(lookups)) => lookups,
                _ => return source.late(),
            },
        };
        let failed = lookups.iter().any(|(_, l)| l.served == Served::Failed);
        if failed && self.asker == Asker::Unproven {
            gather(&source).await
        } else {
            lookups
        }
    }
}

/// Posture as a fact source: every source the policy reads, asked at once.
pub struct PostureLookup<'a> {
    /// The sources.
    pub sources: &'a Sources,
    /// What the policy reads.
    pub reads: &'a PostureReads,
    /// The device's certificate.
    pub cert: &'a CertFacts,
    /// Its Calling-Station-Id.
    pub calling_station: Option<&'a str>,
    /// Whether the device has proved it holds its key.
    pub asker: Asker,
}

impl FactSource for PostureLookup<'_> {
    type Facts = Vec<(String, Lookup)>;

    fn deadline(&self) -> Duration {
        self.sources.deadline(self.reads)
    }

    fn gather(&self) -> impl Future<Output = Self::Facts> + Send + '_ {
        self.sources
            .lookup(self.reads, self.cert, self.calling_station, self.asker)
    }

    fn late(&self) -> Self::Facts {
        Sources::facts_late(self.sources, self.reads)
    }
}

/// The audit text of posture lookups: `mdm (fetched, san_uri): compliant=true, ...`.
pub fn posture_detail(lookups: &[(String, Lookup)]) -> String {
    if lookups.is_empty() {
        return "-".into();
    }
    let mut out = String::with_capacity(128);
    for (i, (name, l)) in lookups.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(name);
        out.push_str(" (");
        out.push_str(l.served.label());
        if let Some(id) = &l.id {
            out.push_str(", ");
            out.push_str(id.from);
        }
        out.push_str("): ");
        l.answer.describe_into(&mut out);
    }
    out
}

/// Runs a source within its deadline.
pub async fn gather<S: FactSource>(source: &S) -> S::Facts {
    match tokio::time::timeout(source.deadline(), source.gather()).await {
        Ok(facts) => facts,
        Err(_) => source.late(),
    }
}

/// What was decided about an authenticated peer, with the facts and the trace.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The facts.
    pub facts: Facts,
    /// The decision.
    pub decision: Decision,
    /// How it was reached.
    pub trace: Trace,
    /// What each posture source answered and how (`-` when none was asked).
    pub posture: String,
    /// The path rustls verified (what revocation is checked on, again for live sessions).
    pub path: VerifiedChain,
}

impl Checked {
    /// The certificate fields the audit record and the log carry.
    pub fn cert(&self) -> CertSummary {
        self.facts.cert.summary()
    }
}

/// Gathers the facts about a peer whose chain rustls has verified, at `now` (Unix
/// seconds), and runs the policy on them; `early` holds the revocation check and posture
/// lookups started mid-handshake, if any.
pub async fn decide(
    peer: &PeerInfo,
    first: &RequestFacts,
    last: RequestFacts,
    runtime: &Runtime,
    policy: &Policy,
    (early, early_posture): (Option<Early>, Option<EarlyPosture>),
    now: i64,
) -> Checked {
    // Posture lookups started mid-handshake, for this device and these sources, if any.
    let reads = policy.posture_reads();
    let sources = runtime.posture.as_ref().filter(|s| s.needed(reads));
    let mut early_posture =
        early_posture.filter(|e| sources.is_some_and(|s| e.usable(&peer.path, s, reads)));
    // The same device certificate: its facts as parsed then (the chain as presented now).
    let cert = match &mut early_posture {
        Some(e) => {
            // Its lookups are done with it, or hold their own reference.
            let mut cert = Arc::unwrap_or_clone(std::mem::take(&mut e.cert));
            cert.chain.clone_from(&peer.chain);
            cert
        }
        None => CertFacts::of(&peer.chain),
    };
    // Answers already in (mid-handshake, or in the cache now): used at once, one decision.
    // Those from the cache now count (and are recorded) only if the rules read them.
    let mut settled = false;
    let ready = match (&mut early_posture, sources) {
        (Some(e), _) => e.ready(),
        (None, Some(s)) => {
            use futures_util::FutureExt as _;
            let station = first.calling_station.as_deref();
            let answers = s.settled(reads, &cert, station).now_or_never().flatten();
            settled = answers.is_some();
            answers
        }
        (None, None) => None,
    };
    // Started while the handshake went on, for this very path: its answer (awaited within
    // the deadline it was started with).
    let revocation = match &runtime.revocation {
        Some(checker) => match early.filter(|e| e.usable(&peer.path, checker)) {
            Some(mut e) => match (&mut e.task).await {
                Ok(facts) => facts,
                Err(_) => {
                    let why = "the revocation check was stopped".to_owned();
                    no_answer(checker, why.clone(), why, None)
                }
            },
            None => {
                let source = Revocation {
                    checker,
                    path: &peer.path,
                    now,
                };
                gather(&source).await
            }
        },
        None => RevocationFacts::not_checked(),
    };
    let mut facts = Facts {
        now,
        cert,
        tls_version: peer.tls_version,
        first: first.clone(),
        last,
        revocation,
        posture: ready.as_deref().map(Sources::facts).unwrap_or_default(),
    };
    // Otherwise decided without posture first: a device whose rules never read it (or
    // that is refused before they do) does not wait for a slow source.
    let (mut decision, mut trace) = policy::evaluate(policy, &facts);
    let mut lookups = ready.unwrap_or_default();
    if let Some(s) = sources.filter(|_| settled) {
        if policy.consulted_posture(&trace) {
            s.count(&lookups);
        } else {
            lookups.clear();
            facts.posture = PostureFacts::default();
        }
    }
    let waiting = lookups.is_empty();
    if let Some(sources) = sources.filter(|_| waiting && policy.consulted_posture(&trace)) {
        let station = facts.first.calling_station.clone();
        lookups = match early_posture {
            Some(e) => e.finish(&facts.cert, station.as_deref()).await,
            // Asked only now that the rules need it: a device whose rules never read
            // posture costs the source nothing.
            None => {
                let source = PostureLookup {
                    sources,
                    reads,
                    cert: &facts.cert,
                    calling_station: station.as_deref(),
                    asker: Asker::Proven,
                };
                gather(&source).await
            }
        };
        facts.posture = Sources::facts(&lookups);
        (decision, trace) = policy::evaluate(policy, &facts);
    }
    Checked {
        facts,
        decision,
        trace,
        posture: posture_detail(&lookups),
        path: peer.path.clone(),
    }
}

/// Revocation as a fact source: the device certificate, then (if asked) each CA between it
/// and the trust anchor, each asked about with the CA that verifiably issued it: the path
/// webpki checked, never the certificates the device merely sent.
pub struct Revocation<'a> {
    /// The checker (its responders, CRLs and caches).
    pub checker: &'a Checker,
    /// The path rustls verified.
    pub path: &'a VerifiedChain,
    /// Unix seconds.
    pub now: i64,
}

impl FactSource for Revocation<'_> {
    type Facts = RevocationFacts;

    /// Every certificate checked, each within the checker's own bound, plus a second.
    fn deadline(&self) -> Duration {
        let certs = if self.checker.check_intermediates() {
            u32::try_from(self.path.issued().count().max(1)).unwrap_or(u32::MAX)
        } else {
            1
        };
        self.checker
            .longest_check()
            .saturating_mul(certs)
            .saturating_add(Duration::from_secs(1))
    }

    fn gather(&self) -> impl Future<Output = RevocationFacts> + Send + '_ {
        revocation_facts(self.checker, self.path, self.now)
    }

    fn late(&self) -> RevocationFacts {
        let why = "the revocation check did not finish by its deadline".to_owned();
        no_answer(self.checker, why.clone(), why, None)
    }
}

/// What no usable answer means: soft-fail lets the device on, flagged; else unknown.
fn no_answer(
    checker: &Checker,
    why: String,
    detail: String,
    source: Option<crate::pki::status::Source>,
) -> RevocationFacts {
    if checker.soft_fail() {
        RevocationFacts {
            outcome: RevocationOutcome::SoftFailed { why },
            source,
            detail: format!("soft-failed: {detail}"),
        }
    } else {
        RevocationFacts {
            outcome: RevocationOutcome::Unknown { why },
            source,
            detail,
        }
    }
}

/// The revocation facts of `path` at `now` (Unix seconds), within the checker's bounds.
pub async fn revocation_facts(
    checker: &Checker,
    path: &VerifiedChain,
    now: i64,
) -> RevocationFacts {
    let count = if checker.check_intermediates() {
        usize::MAX
    } else {
        1
    };
    let mut parts = Vec::new();
    let mut soft: Option<String> = None;
    let mut source = None;
    for (i, (der, issuer)) in path.issued().take(count).enumerate() {
        let report = match revocation_of(checker, der, issuer, now).await {
            Ok(r) => r,
            Err(why) => {
                return RevocationFacts {
                    outcome: RevocationOutcome::Unknown { why: why.into() },
                    source,
                    detail: why.into(),
                }
            }
        };
        if i == 0 {
            source = Some(report.source);
        }
        let text = if i == 0 {
            report.describe()
        } else {
            format!(
                "intermediate {}: {}",
                CertSummary::of(der).subject,
                report.describe()
            )
        };
        match report.state {
            State::Good => {}
            State::Revoked { at, reason } => {
                return RevocationFacts {
                    outcome: RevocationOutcome::Revoked {
                        at,
                        reason,
                        intermediate: i > 0,
                    },
                    source,
                    detail: text,
                };
            }
            // A forged, mis-signed or mismatched answer is an attack or a broken
            // responder, never a reason to let the device on: no soft-fail.
            State::Invalid(why) => {
                let cert = CertSummary::of(der);
                tracing::warn!(
                    alert = "revocation_answer_invalid",
                    cert.serial = %Escaped(&cert.serial),
                    cert.issuer = %Escaped(&cert.issuer),
                    revocation = %Escaped(&text),
                    "revocation answer failed verification: rejected"
                );
                return RevocationFacts {
                    outcome: RevocationOutcome::Invalid { why },
                    source,
                    detail: text,
                };
            }
            State::Unknown | State::NoAnswer(_) if checker.soft_fail() => {
                soft.get_or_insert_with(|| text.clone());
            }
            State::Unknown | State::NoAnswer(_) => {
                return no_answer(checker, text.clone(), text, source);
            }
        }
        parts.push(text);
    }
    let detail = parts.join("; ");
    match soft {
        Some(why) => RevocationFacts {
            outcome: RevocationOutcome::SoftFailed { why },
            source,
            detail: format!("soft-failed: {detail}"),
        },
        None => RevocationFacts {
            outcome: RevocationOutcome::Good,
            source,
            detail,
        },
    }
}

/// The revocation state of one certificate of the verified path, issued by `issuer`.
async fn revocation_of(
    checker: &Checker,
    der: &[u8],
    issuer: &[u8],
    now: i64,
) -> Result<Report, &'static str> {
    let (_, parsed) = X509Certificate::from_der(der).map_err(|_| "certificate does not parse")?;
    let (_, issuer_parsed) =
        X509Certificate::from_der(issuer).map_err(|_| "issuer certificate does not parse")?;
    Ok(checker
        .check(der, &parsed, issuer, &issuer_parsed, now)
        .await)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::config::Config;

    fn runtime(dir: &std::path::Path) -> Runtime {
        let text = "[tls]\ncertificate = \"server.pem\"\nprivate_key = \"server.key\"\n\
                    ca = [\"root-ca.pem\"]\n\n[revocation]\n\
                    responders = [{ url = \"http://127.0.0.1:9/\" }]\ntimeout_ms = 50\n\
                    crl_distribution_points = false\n\n[[client]]\nname = \"nas\"\n\
                    address = \"127.0.0.1\"\nsecret = \"s\"\n";
        let config = Config::parse(&dir.join("anchord.toml"), text).unwrap();
        Runtime::build(&config, None).unwrap()
    }

    fn path(dir: &std::path::Path, device: &str) -> VerifiedChain {
        let pem = |n: &str| CertificateDer::from_pem_file(dir.join(format!("{n}.pem"))).unwrap();
        VerifiedChain::for_test(vec![pem(device), pem("issuing-ca"), pem("root-ca")])
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_answer_stands_only_for_its_path_its_checker_and_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let rt = runtime(dir.path());
        let checker = rt.revocation.clone().unwrap();
        let device = path(dir.path(), "device-ecdsa");
        let e = Early::start(&rt, device.clone(), 0).unwrap();
        assert!(e.usable(&device, &checker));
        // Another device's path.
        assert!(!e.usable(&path(dir.path(), "device-rsa"), &checker));
        // Another checker: the configuration was reloaded meanwhile.
        let reloaded = runtime(dir.path()).revocation.unwrap();
        assert!(!e.usable(&device, &reloaded));
        // A device that drags its flight out past the freshness window.
        tokio::time::advance(EARLY_FRESH + Duration::from_secs(1)).await;
        assert!(!e.usable(&device, &checker));
    }

    #[tokio::test]
    async fn early_checks_are_capped_over_every_conversation() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let rt = runtime(dir.path());
        let device = path(dir.path(), "device-ecdsa");
        let held: Vec<Early> = (0..MAX_EARLY)
            .map_while(|_| Early::start(&rt, device.clone(), 0))
            .collect();
        assert!(
            Early::start(&rt, device.clone(), 0).is_none(),
            "past the cap"
        );
        assert!(held.len() <= MAX_EARLY);
        drop(held);
        assert!(Early::start(&rt, device, 0).is_some(), "slots come back");
    }

    /// Early lookups of a device, unproven, from sources built on `settings`.
    fn early(sources: &Arc<Sources>, device: &VerifiedChain) -> EarlyPosture {
        let reads = PostureReads {
            any: true,
            ..PostureReads::default()
        };
        let cert = crate::posture::tests::cert(crate::posture::tests::ID);
        EarlyPosture::spawn(
            sources.clone(),
            reads,
            cert,
            None,
            Asker::Unproven,
            device,
            None,
        )
    }

    /// Posture sources asking a dev MDM on loopback, and the MDM.
    async fn dev_mdm_sources() -> (Arc<crate::posture::devmdm::DevMdm>, Arc<Sources>) {
        let (mdm, addr) = crate::posture::tests::start(false).await;
        let settings = crate::posture::PostureSettings {
            sources: vec![crate::posture::tests::settings(addr, false)],
        };
        (mdm, Arc::new(Sources::build(&settings).unwrap()))
    }

    /// A dev PKI (its folder), its device-ecdsa path, and [`dev_mdm_sources`].
    async fn posture_lab() -> (
        tempfile::TempDir,
        VerifiedChain,
        Arc<crate::posture::devmdm::DevMdm>,
        Arc<Sources>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let device = path(dir.path(), "device-ecdsa");
        let (mdm, sources) = dev_mdm_sources().await;
        (dir, device, mdm, sources)
    }

    /// Waits (up to 2 s) until early lookups running on a task are done.
    async fn until_finished(e: &EarlyPosture) {
        for _ in 0..200 {
            match &e.work {
                Work::Running(t) if !t.is_finished() => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => return,
            }
        }
    }

    #[tokio::test]
    async fn a_warm_cache_answers_early_lookups_at_once_without_a_task() {
        let (_dir, device, mdm, sources) = posture_lab().await;
        // Cold: fetched on a task.
        let cold = early(&sources, &device);
        assert!(matches!(cold.work, Work::Running(_)));
        let cert = cold.cert.clone();
        let fetched = cold.finish(&cert, None).await;
        assert_eq!(fetched[0].1.served, Served::Fetched);
        // Warm: answered before `spawn` returns, no request.
        let mut warm = early(&sources, &device);
        assert!(matches!(warm.work, Work::Done(_)));
        let ready = warm.ready().expect("answered from the cache");
        assert_eq!(ready[0].1.served, Served::Fresh);
        assert_eq!(mdm.counts().device_requests, 1);
    }

    #[tokio::test]
    async fn an_early_lookup_that_failed_before_the_decision_is_asked_again_not_awaited_twice() {
        let (_dir, device, mdm, sources) = posture_lab().await;
        mdm.set(|k| k.status = Some(500));
        let mut e = early(&sources, &device);
        // The failure is in before the decision looks.
        until_finished(&e).await;
        assert!(e.ready().is_none(), "a failed lookup is not an answer");
        // The device proved its key meanwhile, and the source is back.
        mdm.set(|k| k.status = None);
        let cert = e.cert.clone();
        let lookups = e.finish(&cert, None).await;
        assert_eq!(lookups[0].1.served, Served::Fetched);
        assert!(matches!(
            lookups[0].1.answer,
            crate::policy::PostureAnswer::Known(_)
        ));
    }

    #[tokio::test]
    async fn a_finished_early_lookup_is_read_even_when_the_request_has_spent_its_budget() {
        let (_dir, device, mdm, sources) = posture_lab().await;
        let mut e = early(&sources, &device);
        until_finished(&e).await;
        // The request task has used up its cooperative budget: the finished task cannot be
        // read now, and must not be forgotten.
        while tokio::task::coop::has_budget_remaining() {
            tokio::task::coop::consume_budget().await;
        }
        let _ = e.ready();
        let cert = e.cert.clone();
        let lookups = e.finish(&cert, None).await;
        assert_eq!(
            lookups[0].1.served,
            Served::Fetched,
            "the early answer, not a second lookup"
        );
        assert_eq!(mdm.counts().device_requests, 1);
    }

    #[tokio::test]
    async fn cached_posture_the_rules_never_read_is_neither_recorded_nor_counted() {
        use crate::policy::{Policy, PolicyFile};
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let device = path(dir.path(), "device-ecdsa");
        let text = "[tls]\ncertificate = \"server.pem\"\nprivate_key = \"server.key\"\n\
                    ca = [\"root-ca.pem\"]\n\n[[client]]\nname = \"nas\"\n\
                    address = \"127.0.0.1\"\nsecret = \"s\"\n";
        let config = Config::parse(&dir.path().join("anchord.toml"), text).unwrap();
        let mut rt = Runtime::build(&config, None).unwrap();
        let (_mdm, sources) = dev_mdm_sources().await;
        rt.posture = Some(sources.clone());
        // The device's rule decides before the one that reads posture.
        let policy = Policy::compile(
            &[PolicyFile {
                name: "p.toml".into(),
                text:
                    "[[rule]]\nname = \"devices\"\nwhen = { cert.cn = { prefix = \"device\" } }\n\
                       vlan = 10\n\n[[rule]]\nname = \"others\"\n\
                       when = { posture.mdm.compliant = true }\nvlan = 20\n\n\
                       [[rule]]\nname = \"default\"\nreject = \"unknown\"\n"
                        .into(),
            }],
            config.dictionary.clone(),
            jiff::tz::TimeZone::UTC,
        )
        .unwrap();
        // The device is in the cache (its id is the dev certificate's Intune id).
        let cert = CertFacts::of(device.certificates());
        let warm = sources.all()[0].lookup(&cert, None).await;
        assert_ne!(
            warm.served,
            Served::NoId,
            "the dev certificate carries an id"
        );
        let counted = |kind: &'static str| {
            sources
                .stats
                .lookups
                .get_or_create(&crate::posture::source::SourceLabels {
                    source: "mdm".into(),
                    kind,
                })
                .get()
        };
        let before = counted("fresh");
        let peer = PeerInfo {
            chain: device.certificates().to_vec(),
            path: device.clone(),
            tls_version: "1.3",
            cipher_suite: "TLS13_AES_128_GCM_SHA256",
        };
        let first = RequestFacts::default();
        let checked = decide(&peer, &first, first.clone(), &rt, &policy, (None, None), 0).await;
        assert_eq!(checked.trace.rule, "devices");
        assert_eq!(checked.posture, "-", "posture was not read");
        assert_eq!(counted("fresh"), before, "nor counted");
    }
}
