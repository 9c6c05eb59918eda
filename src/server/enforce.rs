//! Acting on live sessions: a CoA-Request (RFC 5176) with the session's new authorization
//! where its NAS takes one, else a Disconnect-Request (the device re-authenticates into its
//! new decision), within a global cap and a per-NAS cap of requests in flight, so a mass
//! change cannot flood the controllers (the rest wait their turn, in order, counted in the
//! `dynamic_authorization_backlog` metric). The answer updates the registry (a CoA-ACK
//! gives the session its new authorization; a Disconnect-ACK, or a NAK "Session Context Not
//! Found", ends it; a CoA-NAK for any other cause, or no answer, falls back to a
//! Disconnect) and every request is an audit record: what triggered it, which session, what
//! the NAS said.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::das::{self, Answer, Ask};
use super::registry::{Authentication, LiveSession, SessionKey};
use super::Shared;
use crate::logsafe::Escaped;

/// Requests to every NAS in flight at once.
pub const GLOBAL_IN_FLIGHT: usize = 64;
/// Requests to one NAS in flight at once.
pub const PER_NAS_IN_FLIGHT: usize = 4;

/// The caps on requests in flight.
#[derive(Debug)]
pub struct Enforcer {
    global: Arc<Semaphore>,
    per_nas: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Sessions with a worker (see [`act`]), each with what was asked for it meanwhile
    /// (only the latest is kept: a trigger repeated, a webhook resent, the next revocation
    /// pass, do not queue more).
    work: Mutex<HashMap<SessionKey, Option<Pending>>>,
    /// Requests waiting for a slot.
    queued: AtomicU64,
    /// Requests sent and not yet answered (or given up).
    in_flight: AtomicU64,
    /// Policy sweeps started: a sweep stops when a newer one starts.
    sweeps: AtomicU64,
}

impl Default for Enforcer {
    fn default() -> Self {
        Self {
            global: Arc::new(Semaphore::new(GLOBAL_IN_FLIGHT)),
            per_nas: Mutex::default(),
            work: Mutex::default(),
            queued: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
        }
    }
}

/// Counts one while alive.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A live session's new authorization: the policy's Accept when a trigger re-ran it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The reply attributes (VLAN, Filter-Id, ...).
    pub reply: Vec<crate::policy::ReplyAttribute>,
    /// The VLAN among them.
    pub vlan: Option<String>,
    /// The rule that decided.
    pub rule: String,
    /// The facts it was decided on.
    pub facts: Arc<crate::policy::Facts>,
}

/// Whether a CoA-Request can carry the change from `was` to `now` for a NAS that accepts
/// `allowed`: every new attribute is one it accepts, and nothing the session has would have
/// to be removed (a CoA-Request can set attributes, not take them away): for each name and
/// tag, the new reply has at least as many values as the old.
fn coa_fits(
    allowed: &[String],
    was: &[crate::policy::ReplyAttribute],
    now: &[crate::policy::ReplyAttribute],
) -> bool {
    let ok = |name: &str| allowed.iter().any(|a| a.eq_ignore_ascii_case(name));
    let count = |attrs: &[crate::policy::ReplyAttribute], like: &crate::policy::ReplyAttribute| {
        attrs
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case(&like.name) && a.tag == like.tag)
            .count()
    };
    !now.is_empty()
        && now.iter().all(|a| ok(&a.name))
        && was.iter().all(|w| count(now, w) >= count(was, w))
}

impl Enforcer {
    fn work(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Option<Pending>>> {
        self.work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks `p` for `key`: true when the caller is to be the session's worker (there is
    /// none), false when there is one, which takes `p` once its request is answered (a
    /// Disconnect asked is not replaced by a reconsideration).
    fn want(&self, key: &SessionKey, p: Pending) -> bool {
        let mut work = self.work();
        match work.get_mut(key) {
            Some(slot) => {
                *slot = Some(match *slot {
                    // A Disconnect asked is not replaced by a reconsideration.
                    Some(
                        queued @ Pending {
                            want: Want::Disconnect,
                            ..
                        },
                    ) => queued,
                    // Two reconsiderations: one that no reload's sweep asked (a posture
                    // change) must not become one a later reload could cancel.
                    Some(queued) if p.want == Want::Reconsider => Pending {
                        sweep: queued.sweep.and(p.sweep),
                        ..p
                    },
                    _ => p,
                });
                false
            }
            None => {
                work.insert(key.clone(), None);
                true
            }
        }
    }

    /// What was asked for `key` since the worker's last request; `None` ends the worker.
    fn next(&self, key: &SessionKey) -> Option<Pending> {
        let mut work = self.work();
        let next = work.get_mut(key).and_then(Option::take);
        if next.is_none() {
            work.remove(key);
        }
        next
    }

    /// After a CoA-ACK for `key`: a reconsideration next, unless something was asked
    /// meanwhile.
    fn want_after(&self, key: &SessionKey, done: Pending) {
        if let Some(slot @ None) = self.work().get_mut(key) {
            *slot = Some(Pending {
                want: Want::Reconsider,
                ..done
            });
        }
    }

    /// Whether a worker is under way for `key`.
    fn busy(&self, key: &SessionKey) -> bool {
        self.work().contains_key(key)
    }

    /// The session is gone: what was asked for it no longer matters; ends the worker.
    fn done(&self, key: &SessionKey) {
        self.work().remove(key);
    }

    /// A reload happened: the sweep it may start is this one, and a sweep or queued
    /// reconsideration of an earlier reload stops.
    pub fn new_sweep(&self) -> u64 {
        self.sweeps.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A turn to send to `nas`: its own slot first, then one of the global ones, so
    /// requests queued for a NAS that does not answer never hold global slots other NASes
    /// need.
    async fn slots(&self, nas: &str) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let _queued = Counted::new(&self.queued);
        let own = self.nas_slots(nas).acquire_owned().await.ok()?;
        let global = self.global.clone().acquire_owned().await.ok()?;
        Some((own, global))
    }

    fn nas_slots(&self, nas: &str) -> Arc<Semaphore> {
        match self.per_nas.lock() {
            Ok(mut m) => m
                .entry(nas.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_NAS_IN_FLIGHT)))
                .clone(),
            Err(_) => Arc::new(Semaphore::new(PER_NAS_IN_FLIGHT)),
        }
    }

    /// Requests waiting for a slot, and requests sent and not yet answered.
    pub fn backlog(&self) -> (u64, u64) {
        (
            self.queued.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
        )
    }
}

/// What a trigger asks for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Push it off (an admin, a revoked certificate).
    Disconnect,
    /// Re-run the policy in force on its facts with the posture sources' current answers,
    /// when its turn to send comes, and act if the outcome is not what it has (a posture
    /// change, a reload): a CoA-Request where the NAS takes one, else a Disconnect.
    Reconsider,
}

/// What was asked for a session whose worker is busy.
#[derive(Debug, Clone, Copy)]
struct Pending {
    trigger: &'static str,
    want: Want,
    /// The reload sweep that asked, if one did: a later reload cancels it.
    sweep: Option<u64>,
}

/// Most looks a worker takes at its session after CoA-ACKs in a row (a device whose
/// posture flaps is reconsidered at its next change, not chased forever).
const ROUNDS: usize = 8;

/// Disconnects `session` because of `trigger` (`admin`, `revocation`); what happened, as
/// the admin listener reports it.
pub async fn disconnect(
    shared: &Arc<Shared>,
    session: Arc<LiveSession>,
    trigger: &'static str,
) -> serde_json::Value {
    act(shared, session, trigger, Want::Disconnect, None).await
}

/// Acts on `session` as `want`s. One worker per session sends its requests one at a
/// time; what is asked while one is under way waits (only the latest kept) and is done
/// next, decided afresh when its turn to send comes, and after a CoA-ACK the session is
/// reconsidered once more, so no answer can leave it with an outcome older than the
/// newest facts. The audit record of the last request (or of why none was sent), as the
/// admin listener reports it.
pub async fn act(
    shared: &Arc<Shared>,
    session: Arc<LiveSession>,
    trigger: &'static str,
    want: Want,
    sweep: Option<u64>,
) -> serde_json::Value {
    let key = session.key.clone();
    if das_of(shared, &key.nas).is_none() {
        return record(
            &session,
            trigger,
            "disconnect",
            "no dynamic_authorization configured for this NAS",
        );
    }
    let mut pending = Pending {
        trigger,
        want,
        sweep,
    };
    if !shared.enforcer.want(&key, pending) {
        return record(
            &session,
            trigger,
            "queued",
            "after the request under way for this session",
        );
    }
    // Ends the worker however this future ends (dropped at shutdown included).
    let mut worker = Worker {
        enforcer: &shared.enforcer,
        key: &key,
        running: true,
    };
    // Unless a request is sent: nothing to do (not an audit record).
    let mut last = json!({
        "event": "dynamic_authorization",
        "action": "none",
        "trigger": trigger,
        "nas": key.nas,
        "session_id": key.acct_session_id,
        "answer": "no change",
    });
    let mut looks = 0;
    loop {
        let (rec, next) = step(shared, &key, pending).await;
        if let Some(r) = rec {
            last = r;
        }
        match next {
            Next::Ended => {
                shared.enforcer.done(&key);
                worker.running = false;
                return last;
            }
            // After a CoA-ACK: unless something newer was asked, look once more (as part of
            // the same sweep, if a reload's: a later reload stops it), a few times at most
            // (a device whose posture flaps is looked at again at its next change).
            Next::Reconsider if looks < ROUNDS => {
                looks += 1;
                shared.enforcer.want_after(&key, pending);
            }
            Next::Reconsider | Next::Idle => {}
        }
        // Whatever was asked meanwhile is done before the worker ends: nothing is lost.
        match shared.enforcer.next(&key) {
            Some(p) => pending = p,
            None => {
                worker.running = false;
                return last;
            }
        }
    }
}

/// Ends the session's worker when dropped still running.
struct Worker<'a> {
    enforcer: &'a Enforcer,
    key: &'a SessionKey,
    running: bool,
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        if self.running {
            self.enforcer.done(self.key);
        }
    }
}

/// What the worker does after a step.
enum Next {
    /// The session is gone (or its NAS said so).
    Ended,
    /// A CoA was acknowledged: reconsider it once more.
    Reconsider,
    /// Nothing more of its own.
    Idle,
}

/// The DAS settings of the NAS entry `nas`, if it has dynamic authorization on.
fn das_of(shared: &Shared, nas: &str) -> Option<crate::config::DasSettings> {
    shared
        .live()
        .config
        .clients
        .iter()
        .find(|c| c.name == nas)
        .and_then(|c| c.das.clone())
}

/// The session's facts with the posture sources' current answers (their caches: a webhook
/// event or a poll has put its answer there) in place of those it was decided on.
async fn current_facts(shared: &Shared, auth: &Authentication) -> crate::policy::Facts {
    use crate::policy::SourcePosture;
    let mut facts = (*auth.facts).clone();
    facts.now = crate::clock::unix_now();
    let Some(sources) = shared.live().runtime.posture.clone() else {
        return facts;
    };
    for (name, id) in &auth.posture_ids {
        let Some(source) = sources.source(name) else {
            continue;
        };
        let Some((answer, _age)) = source.cached(id).await else {
            continue;
        };
        let answer = answer.facts();
        match facts.posture.sources.iter_mut().find(|p| p.source == *name) {
            Some(p) => p.answer = answer,
            None => facts.posture.sources.push(SourcePosture {
                source: name.clone(),
                answer,
            }),
        }
    }
    facts
}

/// Whether the policy in force, on the session's current facts, decides otherwise than
/// what the session has: `None` if not; else a [`Change`] for a new Accept, or `None` inside
/// for a refusal.
async fn reconsider(shared: &Shared, session: &LiveSession) -> Option<Option<Change>> {
    let auth = session.auth.as_ref()?;
    let facts = current_facts(shared, auth).await;
    let policy = shared.live().runtime.policy.clone();
    reevaluate(&policy, auth, facts)
}

/// One request for the session `key` as `pending` asks, decided when its turn to send
/// comes: its audit record (none when there was nothing to do) and what next.
async fn step(
    shared: &Arc<Shared>,
    key: &SessionKey,
    pending: Pending,
) -> (Option<serde_json::Value>, Next) {
    let trigger = pending.trigger;
    let Some(das) = das_of(shared, &key.nas) else {
        return (None, Next::Idle);
    };
    let Some(_slots) = shared.enforcer.slots(&key.nas).await else {
        return (None, Next::Idle);
    };
    // As the session is now (a CoA may have changed it, accounting ended it).
    let Some(session) = shared.registry.get(key) else {
        return (None, Next::Ended);
    };
    let change = match pending.want {
        Want::Disconnect => None,
        Want::Reconsider => {
            if pending
                .sweep
                .is_some_and(|s| s != shared.enforcer.sweeps.load(Ordering::SeqCst))
            {
                return (None, Next::Idle);
            }
            let Some(change) = reconsider(shared, &session).await else {
                return (None, Next::Idle);
            };
            let what = if trigger == "policy" {
                "the reloaded policy turns a live session's decision: acting on it"
            } else {
                "posture change turns a live session's decision: acting on it"
            };
            info!(
                nas = %key.nas,
                session = %Escaped(&key.acct_session_id),
                trigger,
                rule = %change.as_ref().map_or("(refused)", |c| c.rule.as_str()),
                vlan = ?change.as_ref().and_then(|c| c.vlan.as_deref()),
                was = ?session.auth.as_ref().and_then(|a| a.vlan.as_deref()),
                "{what}"
            );
            change
        }
    };
    let to = SocketAddr::new(das.address.unwrap_or(session.nas_addr), das.port);
    let was = session
        .auth
        .as_ref()
        .map(|a| a.reply.as_slice())
        .unwrap_or_default();
    let change = change.filter(|c| {
        let fits = das.coa && coa_fits(&das.coa_attributes, was, &c.reply);
        if das.coa && !fits {
            info!(nas = %key.nas, session = %Escaped(&key.acct_session_id), trigger, "a CoA-Request cannot carry this change (an attribute outside the NAS's coa_attributes, or one the session has that would have to be removed): disconnecting the session instead");
        }
        fits
    });
    if let Some(change) = change {
        let dictionary = shared.live().config.dictionary.clone();
        let answer = {
            let _in_flight = Counted::new(&shared.enforcer.in_flight);
            das::ask(
                Ask::Change(&change.reply, &dictionary),
                &session,
                to,
                &das.secret,
            )
            .await
        };
        let label = match &answer {
            Ok(a) => a.label(),
            Err(e) => format!("not sent: {e}"),
        };
        shared
            .metrics
            .dynamic_authorization("coa", metric_label(answer.as_ref().ok()));
        match answer {
            Ok(Answer::Ack) => {
                shared.registry.reauthorized(key, &change);
                info!(nas = %key.nas, %to, session = %Escaped(&key.acct_session_id), trigger, vlan = ?change.vlan, "session re-authorized (CoA)");
                return (
                    Some(record(&session, trigger, "coa", &label)),
                    Next::Reconsider,
                );
            }
            Ok(Answer::Nak(Some(das::SESSION_NOT_FOUND))) => {
                shared.registry.stop(key);
                info!(nas = %key.nas, %to, session = %Escaped(&key.acct_session_id), trigger, "the NAS does not know the session (CoA-NAK 503): removed from the registry");
                return (Some(record(&session, trigger, "coa", &label)), Next::Ended);
            }
            _ => {
                warn!(nas = %key.nas, %to, session = %Escaped(&key.acct_session_id), trigger, answer = %label, "CoA-Request not acknowledged: disconnecting the session instead");
                record(&session, trigger, "coa", &label);
            }
        }
    }
    let answer = {
        let _in_flight = Counted::new(&shared.enforcer.in_flight);
        das::ask(Ask::Disconnect, &session, to, &das.secret).await
    };
    let label = match &answer {
        Ok(a) => a.label(),
        Err(e) => format!("not sent: {e}"),
    };
    shared
        .metrics
        .dynamic_authorization("disconnect", metric_label(answer.as_ref().ok()));
    let ended = matches!(
        answer,
        Ok(Answer::Ack | Answer::Nak(Some(das::SESSION_NOT_FOUND)))
    );
    if ended {
        shared.registry.stop(key);
    }
    if label == "ack" {
        info!(nas = %key.nas, %to, session = %Escaped(&key.acct_session_id), trigger, "session disconnected");
    } else {
        warn!(nas = %key.nas, %to, session = %Escaped(&key.acct_session_id), trigger, answer = %label, "Disconnect-Request not acknowledged");
    }
    (
        Some(record(&session, trigger, "disconnect", &label)),
        if ended { Next::Ended } else { Next::Idle },
    )
}

/// The metrics label of an answer (`None`: the request could not be made).
fn metric_label(answer: Option<&Answer>) -> &'static str {
    match answer {
        Some(Answer::Ack) => "ack",
        Some(Answer::Nak(_)) => "nak",
        Some(Answer::NoAnswer) | None => "no_answer",
    }
}

/// Writes the audit record of one request (or of why none was sent) and returns it.
fn record(
    session: &LiveSession,
    trigger: &'static str,
    action: &'static str,
    answer: &str,
) -> serde_json::Value {
    let record = json!({
        "time": super::audit::now_text(),
        "event": "dynamic_authorization",
        "action": action,
        "trigger": trigger,
        "nas": session.key.nas,
        "session_id": session.key.acct_session_id,
        "station": session.station,
        "user_name": session.user_name,
        "authentication": session.key.auth.as_ref().map(super::class::id_text),
        "answer": answer,
    });
    if let Some(audit) = super::audit::current() {
        audit.line(record.to_string(), "dynamic_authorization");
    }
    record
}

/// Whether `decision` differs from an Accept with `reply`: a refusal, or any reply
/// attribute (VLAN, Filter-Id, a vendor role, Session-Timeout, ...) added, removed or
/// changed.
fn outcome_changes(
    reply: &[crate::policy::ReplyAttribute],
    decision: &crate::policy::Decision,
) -> bool {
    match decision {
        crate::policy::Decision::Accept { reply: new } => new.as_slice() != reply,
        crate::policy::Decision::Reject { .. } => true,
    }
}

/// Re-runs `policy` on `facts` (a live session's, perhaps with a new posture answer):
/// `None` when the outcome is what `auth` got; else what to do, a [`Change`] for a new Accept
/// or `None` inside for a refusal (a Disconnect).
fn reevaluate(
    policy: &crate::policy::Policy,
    auth: &Authentication,
    facts: crate::policy::Facts,
) -> Option<Option<Change>> {
    let (decision, trace) = crate::policy::evaluate(policy, &facts);
    if !outcome_changes(&auth.reply, &decision) {
        return None;
    }
    let vlan = decision.vlan().map(str::to_owned);
    Some(match decision {
        crate::policy::Decision::Accept { reply } => Some(Change {
            vlan,
            reply,
            rule: trace.rule.clone(),
            facts: Arc::new(facts),
        }),
        crate::policy::Decision::Reject { .. } => None,
    })
}

/// After a reload (with `[server] reevaluate_live_sessions`), as sweep `sweep` (see
/// [`Enforcer::new_sweep`]): re-runs the policy now in force on every live session's current
/// facts and acts on each whose outcome changes, at most `per_second` sessions a second,
/// oldest first. A later reload ends this sweep, and what it queued is dropped unsent.
pub async fn on_reload(shared: Arc<Shared>, sweep: u64, per_second: u32) {
    let mut pace = tokio::time::interval(std::time::Duration::from_secs_f64(
        1.0 / f64::from(per_second.max(1)),
    ));
    let (mut changed, mut seen) = (0u64, 0u64);
    for session in shared.registry.sessions() {
        if shared.enforcer.sweeps.load(Ordering::SeqCst) != sweep {
            info!(
                seen,
                changed, "a newer reload took over re-evaluating live sessions"
            );
            return;
        }
        if session.auth.is_none() {
            continue;
        }
        seen += 1;
        if reconsider(&shared, &session).await.is_none() {
            continue;
        }
        pace.tick().await;
        changed += 1;
        let shared = shared.clone();
        tokio::spawn(async move {
            act(&shared, session, "policy", Want::Reconsider, Some(sweep)).await;
        });
    }
    info!(
        seen,
        changed,
        policy = shared.live().runtime.policy.version(),
        "live sessions re-evaluated after a reload"
    );
}

/// How often the posture watcher looks whether a reload replaced the posture sources.
const SOURCES_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Acts on posture changes (webhook events, polls) until `shutdown`: see [`on_posture`].
pub async fn watch_posture(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let sources = shared.live().runtime.posture.clone();
        let Some(sources) = sources else {
            tokio::select! {
                () = tokio::time::sleep(SOURCES_CHECK) => continue,
                () = shutdown.cancelled() => return,
            }
        };
        let mut events = sources.subscribe();
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Ok(event) => on_posture(&shared, &sources, &event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "posture changes came faster than live sessions were checked: those sessions keep their access until they re-authenticate");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = tokio::time::sleep(SOURCES_CHECK) => {
                    let now = shared.live().runtime.posture.clone();
                    if !now.is_some_and(|n| Arc::ptr_eq(&n, &sources)) {
                        break;
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// A device's posture changed at a source: each live session of that device is
/// reconsidered ([`Want::Reconsider`]): the policy in force re-run on the facts it was
/// decided on with the sources' current answers; one whose outcome changes (another VLAN or
/// attribute, or a refusal) gets a CoA or is disconnected, so the device re-authenticates
/// into its new decision. A forgotten answer changes nothing now (the next authentication
/// asks the source).
fn on_posture(
    shared: &Arc<Shared>,
    sources: &crate::posture::Sources,
    event: &crate::posture::Event,
) {
    if event.answer.is_none() {
        return;
    }
    let Some(source) = sources.source(&event.source) else {
        return;
    };
    let key = source.key(&event.device);
    let sessions = shared.registry.by_posture(&event.source, &key);
    if sessions.is_empty() {
        return;
    }
    let shared = shared.clone();
    // One task per event (a device has a session or two).
    tokio::spawn(async move {
        for session in sessions {
            if session.auth.is_none() {
                continue;
            }
            // Nothing queued (no audit record) for a session whose outcome stays; while
            // a request for it is under way the registry may not show what the NAS is
            // being given, so its worker decides.
            if shared.enforcer.busy(&session.key) || reconsider(&shared, &session).await.is_some() {
                let shared = shared.clone();
                tokio::spawn(async move {
                    act(&shared, session, "posture", Want::Reconsider, None).await;
                });
            }
        }
    });
}

/// Checks the certificates of live sessions for revocation every `[revocation]
/// live_recheck_secs` (through the checker's cache: an answer still fresh is not asked
/// again), and disconnects every session of a certificate found revoked.
pub async fn watch_revocation(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let checker = shared.live().runtime.revocation.clone();
        let every = checker
            .as_ref()
            .map(|c| c.live_recheck())
            .filter(|d| !d.is_zero());
        tokio::select! {
            () = tokio::time::sleep(every.unwrap_or(SOURCES_CHECK)) => {}
            () = shutdown.cancelled() => return,
        }
        let (Some(checker), Some(_)) = (checker, every) else {
            continue;
        };
        // One check per certificate, however many sessions it has.
        let mut by_cert: HashMap<String, Vec<Arc<LiveSession>>> = HashMap::new();
        for s in shared.registry.sessions() {
            if let Some(a) = &s.auth {
                by_cert
                    .entry(a.facts.cert.sha256.clone())
                    .or_default()
                    .push(s.clone());
            }
        }
        let sweep = revoked_sessions(&shared, &checker, by_cert);
        tokio::select! {
            () = sweep => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Certificates of live sessions checked at once in a revocation pass (each through the
/// checker's cache and its own timeouts): a slow responder delays a pass, not every check
/// after it one by one.
const RECHECKS_AT_ONCE: usize = 16;

/// Checks each certificate of `by_cert` (its sessions) and disconnects every session of
/// one found revoked.
async fn revoked_sessions(
    shared: &Arc<Shared>,
    checker: &Arc<crate::pki::revocation::Checker>,
    by_cert: HashMap<String, Vec<Arc<LiveSession>>>,
) {
    use futures_util::stream::{self, StreamExt};
    let mut checks = stream::iter(by_cert.into_values().filter_map(|sessions| {
        let auth = sessions.first().and_then(|s| s.auth.clone())?;
        Some((sessions, auth))
    }))
    .map(|(sessions, auth)| {
        let checker = checker.clone();
        async move {
            let now = crate::clock::unix_now();
            let facts = super::checks::revocation_facts(&checker, &auth.path, now).await;
            (sessions, auth, facts)
        }
    })
    .buffer_unordered(RECHECKS_AT_ONCE);
    while let Some((sessions, auth, facts)) = checks.next().await {
        if !matches!(
            facts.outcome,
            crate::policy::RevocationOutcome::Revoked { .. }
        ) {
            continue;
        }
        info!(
            cert.serial = %auth.cert_serial,
            sessions = sessions.len(),
            revocation = %Escaped(&facts.detail),
            "a live session's certificate is revoked: disconnecting its sessions"
        );
        for s in sessions {
            let shared = shared.clone();
            tokio::spawn(async move {
                disconnect(&shared, s, "revocation").await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_session_takes_the_latest_ask_and_a_disconnect_is_not_replaced() {
        let e = Enforcer::default();
        let key = SessionKey {
            nas: "ap".into(),
            acct_session_id: "S".into(),
            auth: None,
        };
        let ask = |trigger, want| Pending {
            trigger,
            want,
            sweep: None,
        };
        assert!(
            e.want(&key, ask("posture", Want::Reconsider)),
            "the first works"
        );
        assert!(
            !e.want(&key, ask("posture", Want::Reconsider)),
            "a second waits"
        );
        assert!(!e.want(&key, ask("policy", Want::Reconsider)));
        // Only the latest is kept; a posture change's is not made cancellable by a sweep's.
        let next = e.next(&key).unwrap();
        assert_eq!((next.trigger, next.want), ("policy", Want::Reconsider));
        assert_eq!(next.sweep, None);
        assert!(!e.want(
            &key,
            Pending {
                sweep: Some(3),
                ..ask("policy", Want::Reconsider)
            }
        ));
        assert!(!e.want(
            &key,
            Pending {
                sweep: Some(4),
                ..ask("policy", Want::Reconsider)
            }
        ));
        assert_eq!(
            e.next(&key).unwrap().sweep,
            Some(4),
            "sweep after sweep: the latest"
        );
        assert!(!e.want(&key, ask("posture", Want::Reconsider)));
        assert!(!e.want(
            &key,
            Pending {
                sweep: Some(5),
                ..ask("policy", Want::Reconsider)
            }
        ));
        assert_eq!(
            e.next(&key).unwrap().sweep,
            None,
            "the posture change stays uncancellable"
        );
        // A Disconnect asked meanwhile is not replaced by a later reconsideration.
        assert!(!e.want(&key, ask("admin", Want::Disconnect)));
        assert!(!e.want(&key, ask("posture", Want::Reconsider)));
        assert_eq!(e.next(&key).unwrap().want, Want::Disconnect);
        // After a CoA-ACK the worker looks again, unless something newer was asked.
        e.want_after(&key, ask("posture", Want::Reconsider));
        assert_eq!(e.next(&key).unwrap().want, Want::Reconsider);
        assert!(e.next(&key).is_none(), "nothing asked: the worker ends");
        assert!(
            e.want(&key, ask("admin", Want::Disconnect)),
            "then a new one works"
        );
        e.done(&key);
        assert!(e.want(&key, ask("admin", Want::Disconnect)));
    }

    #[test]
    fn any_change_of_the_reply_is_a_changed_outcome_not_only_the_vlan() {
        use crate::policy::{Decision, ReplyAttribute};
        let attr = |name: &str, value: &str| ReplyAttribute {
            name: name.into(),
            tag: None,
            value: value.into(),
        };
        let was = vec![attr("Filter-Id", "full")];
        let same = Decision::Accept { reply: was.clone() };
        assert!(!outcome_changes(&was, &same));
        let restricted = Decision::Accept {
            reply: vec![attr("Filter-Id", "restricted")],
        };
        assert!(
            outcome_changes(&was, &restricted),
            "same VLAN (none), other filter"
        );
        let refused = Decision::Reject {
            reason: "noncompliant".into(),
            rule: "r".into(),
        };
        assert!(outcome_changes(&was, &refused));
    }

    #[tokio::test]
    async fn requests_queued_for_a_silent_nas_leave_the_others_their_turn() {
        let e = Arc::new(Enforcer::default());
        // A NAS that never answers: its slots held, a crowd of requests waiting for them.
        let mut held = Vec::new();
        for _ in 0..PER_NAS_IN_FLIGHT {
            held.push(e.slots("silent").await.unwrap());
        }
        let waiting: Vec<_> = (0..GLOBAL_IN_FLIGHT * 2)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move { e.slots("silent").await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        let other = tokio::time::timeout(std::time::Duration::from_secs(1), e.slots("other")).await;
        assert!(
            matches!(other, Ok(Some(_))),
            "another NAS gets its turn at once"
        );
        drop(held);
        for w in waiting {
            w.abort();
        }
    }

    #[test]
    fn a_coa_carries_a_change_only_with_attributes_the_nas_takes_and_nothing_to_remove() {
        use crate::policy::ReplyAttribute;
        let attr = |name: &str, value: &str| ReplyAttribute {
            name: name.into(),
            tag: None,
            value: value.into(),
        };
        let allowed: Vec<String> = ["Tunnel-Private-Group-Id", "Filter-Id"]
            .map(String::from)
            .to_vec();
        let was = vec![attr("Tunnel-Private-Group-Id", "100")];
        let quarantine = vec![attr("tunnel-private-group-id", "999")];
        assert!(coa_fits(&allowed, &was, &quarantine));
        let with_filter = vec![
            attr("Tunnel-Private-Group-Id", "999"),
            attr("Filter-Id", "q"),
        ];
        assert!(coa_fits(&allowed, &was, &with_filter));
        // Session-Timeout is not one this NAS takes in a CoA.
        let timeout = vec![
            attr("Tunnel-Private-Group-Id", "999"),
            attr("Session-Timeout", "60"),
        ];
        assert!(!coa_fits(&allowed, &was, &timeout));
        // The Filter-Id would have to be taken away: a CoA cannot.
        assert!(!coa_fits(&allowed, &with_filter, &quarantine));
        // Nothing to send.
        assert!(!coa_fits(&allowed, &[], &[]));
        // Tagged: the VLAN of tag 2 would stay on the NAS.
        let tagged = |tag: u8, v: &str| ReplyAttribute {
            name: "Tunnel-Private-Group-Id".into(),
            tag: Some(tag),
            value: v.into(),
        };
        assert!(!coa_fits(
            &allowed,
            &[tagged(1, "100"), tagged(2, "200")],
            &[tagged(1, "999")]
        ));
        assert!(coa_fits(&allowed, &[tagged(1, "100")], &[tagged(1, "999")]));
        // Two filters before, one after: one would stay.
        let filters = vec![attr("Filter-Id", "a"), attr("Filter-Id", "b")];
        assert!(!coa_fits(&allowed, &filters, &[attr("Filter-Id", "q")]));
    }
}
