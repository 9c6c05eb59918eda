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
    /// Sessions with a Disconnect queued or under way: a trigger repeated meanwhile (a
    /// webhook resent, the next revocation pass) does not queue another.
    busy: Mutex<std::collections::HashSet<SessionKey>>,
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
            busy: Mutex::default(),
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
/// to be removed (a CoA-Request can set attributes, not take them away).
fn coa_fits(
    allowed: &[String],
    was: &[crate::policy::ReplyAttribute],
    now: &[crate::policy::ReplyAttribute],
) -> bool {
    let ok = |name: &str| allowed.iter().any(|a| a.eq_ignore_ascii_case(name));
    !now.is_empty()
        && now.iter().all(|a| ok(&a.name))
        && was
            .iter()
            .all(|w| now.iter().any(|n| n.name.eq_ignore_ascii_case(&w.name)))
}

/// A session marked busy; unmarked when dropped.
struct Busy<'a> {
    enforcer: &'a Enforcer,
    key: SessionKey,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.enforcer.busy.lock() {
            b.remove(&self.key);
        }
    }
}

impl Enforcer {
    /// Marks `key` busy, unless it is already.
    fn begin(&self, key: &SessionKey) -> Option<Busy<'_>> {
        let mut b = self.busy.lock().ok()?;
        b.insert(key.clone()).then(|| Busy {
            enforcer: self,
            key: key.clone(),
        })
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

/// Disconnects `session` because of `trigger` (`admin`, `posture`, `revocation`,
/// `policy`); what happened, as the admin listener reports it.
pub async fn disconnect(
    shared: &Arc<Shared>,
    session: Arc<LiveSession>,
    trigger: &'static str,
) -> serde_json::Value {
    act(shared, session, trigger, None).await
}

/// Gives `session` its new authorization `change` (a CoA-Request, if its NAS takes one
/// for these attributes) or, without a change or when the CoA fails, disconnects it.
/// The audit record of the last request sent, as the admin listener reports it.
pub async fn act(
    shared: &Arc<Shared>,
    session: Arc<LiveSession>,
    trigger: &'static str,
    change: Option<Change>,
) -> serde_json::Value {
    let (das, dictionary) = {
        let live = shared.live();
        let das = live
            .config
            .clients
            .iter()
            .find(|c| c.name == session.key.nas)
            .and_then(|c| c.das.clone());
        (das, live.config.dictionary.clone())
    };
    let busy = shared.enforcer.begin(&session.key);
    let Some(das) = das else {
        return record(
            &session,
            trigger,
            "disconnect",
            "no dynamic_authorization configured for this NAS",
        );
    };
    if busy.is_none() {
        return record(
            &session,
            trigger,
            "disconnect",
            "a request for this session is already under way",
        );
    }
    let to = SocketAddr::new(das.address.unwrap_or(session.nas_addr), das.port);
    let Some(_slots) = shared.enforcer.slots(&session.key.nas).await else {
        return record(&session, trigger, "disconnect", "no answer");
    };
    let was = session
        .auth
        .as_ref()
        .map(|a| a.reply.as_slice())
        .unwrap_or_default();
    let change = change.filter(|c| {
        let fits = das.coa && coa_fits(&das.coa_attributes, was, &c.reply);
        if das.coa && !fits {
            info!(nas = %session.key.nas, session = %Escaped(&session.key.acct_session_id), trigger, "a CoA-Request cannot carry this change (an attribute outside the NAS's coa_attributes, or one the session has that would have to be removed): disconnecting the session instead");
        }
        fits
    });
    if let Some(change) = change {
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
                shared.registry.reauthorized(&session.key, &change);
                info!(nas = %session.key.nas, %to, session = %Escaped(&session.key.acct_session_id), trigger, vlan = ?change.vlan, "session re-authorized (CoA)");
                return record(&session, trigger, "coa", &label);
            }
            Ok(Answer::Nak(Some(das::SESSION_NOT_FOUND))) => {
                shared.registry.stop(&session.key);
                info!(nas = %session.key.nas, %to, session = %Escaped(&session.key.acct_session_id), trigger, "the NAS does not know the session (CoA-NAK 503): removed from the registry");
                return record(&session, trigger, "coa", &label);
            }
            _ => {
                warn!(nas = %session.key.nas, %to, session = %Escaped(&session.key.acct_session_id), trigger, answer = %label, "CoA-Request not acknowledged: disconnecting the session instead");
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
    if let Ok(Answer::Ack | Answer::Nak(Some(das::SESSION_NOT_FOUND))) = answer {
        shared.registry.stop(&session.key);
    }
    if label == "ack" {
        info!(nas = %session.key.nas, %to, session = %Escaped(&session.key.acct_session_id), trigger, "session disconnected");
    } else {
        warn!(nas = %session.key.nas, %to, session = %Escaped(&session.key.acct_session_id), trigger, answer = %label, "Disconnect-Request not acknowledged");
    }
    record(&session, trigger, "disconnect", &label)
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

/// After a reload (with `[server] reevaluate_live_sessions`): re-runs the policy now in
/// force on every live session's facts and acts on each whose outcome changes, at
/// most `reevaluate_per_second` a second, oldest session first. A later reload ends this
/// sweep and starts its own.
pub async fn on_reload(shared: Arc<Shared>, per_second: u32) {
    let sweep = shared.enforcer.sweeps.fetch_add(1, Ordering::SeqCst) + 1;
    let policy = shared.live().runtime.policy.clone();
    let mut pace = tokio::time::interval(std::time::Duration::from_secs_f64(
        1.0 / f64::from(per_second.max(1)),
    ));
    let (mut changed, mut seen) = (0u64, 0u64);
    for session in shared.registry.sessions() {
        if shared.enforcer.sweeps.load(Ordering::SeqCst) != sweep {
            info!(
                seen,
                changed, "a newer policy reload took over re-evaluating live sessions"
            );
            return;
        }
        let Some(auth) = &session.auth else {
            continue;
        };
        seen += 1;
        let mut facts = (*auth.facts).clone();
        facts.now = crate::clock::unix_now();
        let Some(change) = reevaluate(&policy, auth, facts) else {
            continue;
        };
        pace.tick().await;
        changed += 1;
        info!(
            nas = %session.key.nas,
            session = %Escaped(&session.key.acct_session_id),
            policy = policy.version(),
            rule = %change.as_ref().map_or("(refused)", |c| c.rule.as_str()),
            vlan = ?change.as_ref().and_then(|c| c.vlan.as_deref()),
            was = ?auth.vlan,
            "the reloaded policy turns a live session's decision: acting on it"
        );
        let shared = shared.clone();
        tokio::spawn(async move {
            act(&shared, session, "policy", change).await;
        });
    }
    info!(
        seen,
        changed,
        policy = policy.version(),
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

/// A device's posture changed at a source: each live session of that device has the
/// policy (the one in force now) re-run on the facts it was decided on with the new answer;
/// one whose outcome changes (another VLAN, or a refusal) is disconnected, so the device
/// re-authenticates into its new decision. A forgotten answer changes nothing now (the next
/// authentication asks the source).
fn on_posture(
    shared: &Arc<Shared>,
    sources: &crate::posture::Sources,
    event: &crate::posture::Event,
) {
    use crate::policy::SourcePosture;
    let Some(answer) = &event.answer else {
        return;
    };
    let Some(source) = sources.source(&event.source) else {
        return;
    };
    let key = source.key(&event.device);
    let policy = shared.live().runtime.policy.clone();
    for session in shared.registry.by_posture(&event.source, &key) {
        let Some(auth) = &session.auth else {
            continue;
        };
        let mut facts = (*auth.facts).clone();
        facts.now = crate::clock::unix_now();
        match facts
            .posture
            .sources
            .iter_mut()
            .find(|p| p.source == event.source)
        {
            Some(p) => p.answer = answer.clone(),
            None => facts.posture.sources.push(SourcePosture {
                source: event.source.clone(),
                answer: answer.clone(),
            }),
        }
        let Some(change) = reevaluate(&policy, auth, facts) else {
            continue;
        };
        info!(
            nas = %session.key.nas,
            session = %Escaped(&session.key.acct_session_id),
            posture.source = %event.source,
            rule = %change.as_ref().map_or("(refused)", |c| c.rule.as_str()),
            vlan = ?change.as_ref().and_then(|c| c.vlan.as_deref()),
            was = ?auth.vlan,
            "posture change turns a live session's decision: acting on it"
        );
        let shared = shared.clone();
        tokio::spawn(async move {
            act(&shared, session, "posture", change).await;
        });
    }
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
    fn a_session_is_disconnected_once_at_a_time() {
        let e = Enforcer::default();
        let key = SessionKey {
            nas: "ap".into(),
            acct_session_id: "S".into(),
            auth: None,
        };
        let first = e.begin(&key);
        assert!(first.is_some());
        assert!(e.begin(&key).is_none(), "a repeated trigger queues nothing");
        drop(first);
        assert!(e.begin(&key).is_some(), "the next one, once it is done");
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
    }
}
