//! Acting on live sessions: a Disconnect-Request (RFC 5176) to the NAS of each session a
//! trigger names, within a global cap and a per-NAS cap of requests in flight, so a mass
//! change cannot flood the controllers (the rest wait their turn, in order). The answer
//! updates the registry (an ACK, or a NAK "Session Context Not Found", ends the session)
//! and every action is an audit record: what triggered it, which session, what the NAS
//! said.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::das::{self, Answer};
use super::registry::{LiveSession, SessionKey};
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
}

impl Default for Enforcer {
    fn default() -> Self {
        Self {
            global: Arc::new(Semaphore::new(GLOBAL_IN_FLIGHT)),
            per_nas: Mutex::default(),
            busy: Mutex::default(),
        }
    }
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
}

/// Disconnects `session` because of `trigger` (`admin`, `posture`, `revocation`); what
/// happened, as the admin listener reports it.
pub async fn disconnect(
    shared: &Arc<Shared>,
    session: Arc<LiveSession>,
    trigger: &'static str,
) -> serde_json::Value {
    let das = {
        let live = shared.live();
        live.config
            .clients
            .iter()
            .find(|c| c.name == session.key.nas)
            .and_then(|c| c.das.clone())
    };
    let busy = shared.enforcer.begin(&session.key);
    let result = match das {
        None => "no dynamic_authorization configured for this NAS".to_owned(),
        Some(_) if busy.is_none() => {
            "a Disconnect for this session is already under way".to_owned()
        }
        Some(das) => {
            let to = SocketAddr::new(das.address.unwrap_or(session.nas_addr), das.port);
            let answer = match shared.enforcer.slots(&session.key.nas).await {
                Some(_slots) => das::disconnect(&session, to, &das.secret).await,
                None => Answer::NoAnswer,
            };
            if matches!(
                answer,
                Answer::Ack | Answer::Nak(Some(das::SESSION_NOT_FOUND))
            ) {
                shared.registry.stop(&session.key);
            }
            shared.metrics.dynamic_authorization(match answer {
                Answer::Ack => "ack",
                Answer::Nak(_) => "nak",
                Answer::NoAnswer => "no_answer",
            });
            let label = answer.label();
            if matches!(answer, Answer::Ack) {
                info!(nas = %session.key.nas, %to, session = %Escaped(&session.key.acct_session_id), trigger, "session disconnected");
            } else {
                warn!(nas = %session.key.nas, %to, session = %Escaped(&session.key.acct_session_id), trigger, answer = %label, "Disconnect-Request not acknowledged");
            }
            label
        }
    };
    let record = json!({
        "time": super::audit::now_text(),
        "event": "dynamic_authorization",
        "action": "disconnect",
        "trigger": trigger,
        "nas": session.key.nas,
        "session_id": session.key.acct_session_id,
        "station": session.station,
        "user_name": session.user_name,
        "authentication": session.key.auth.as_ref().map(super::class::id_text),
        "answer": result,
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
    for session in shared.registry.sessions() {
        let Some(auth) = &session.auth else {
            continue;
        };
        if !auth
            .posture_ids
            .iter()
            .any(|(name, id)| *name == event.source && *id == key)
        {
            continue;
        }
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
        let (decision, trace) = crate::policy::evaluate(&policy, &facts);
        if !outcome_changes(&auth.reply, &decision) {
            continue;
        }
        info!(
            nas = %session.key.nas,
            session = %Escaped(&session.key.acct_session_id),
            posture.source = %event.source,
            rule = %trace.rule,
            vlan = ?decision.vlan(),
            was = ?auth.vlan,
            "posture change turns a live session's decision: disconnecting it"
        );
        let shared = shared.clone();
        tokio::spawn(async move {
            disconnect(&shared, session, "posture").await;
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
        for sessions in by_cert.into_values() {
            let Some(auth) = sessions.first().and_then(|s| s.auth.clone()) else {
                continue;
            };
            let now = crate::clock::unix_now();
            let facts = super::checks::revocation_facts(&checker, &auth.path, now).await;
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
}
