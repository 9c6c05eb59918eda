//! One authenticated Access-Request in, one reply (or nothing) out.
//!
//! Order (STYLE §2.5): the caller has already matched the client, parsed, verified the
//! Message-Authenticator and checked for duplicates. Here: decode EAP, find the session by
//! State, step the EAP-TLS state machine, run the checks when it asks, encode the reply.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::checks;
use super::ending::{self, Conversation, Ended};
use super::fairness;
use super::registry::Authentication;
use super::sessions::{SessionEntry, TakeError};
use super::Shared;
use super::{facts, reply};
use crate::clock;
use crate::config::{Client, Config, Runtime};
use crate::eap::packet::{EapCode, TYPE_IDENTITY};
use crate::eap::{Action, EapError, EapPacket, Event, Outcome, Reason, Session, Verdict};
use crate::policy::Decision;
use crate::radius::{AttrType, Code, ReplyBuilder, Request};

/// Builds the signed reply for an authenticated request; `None` means send nothing.
pub(crate) async fn process(
    shared: &Arc<Shared>,
    config: &Config,
    runtime: &Runtime,
    client: &Client,
    src: SocketAddr,
    req: &Request<'_>,
) -> Option<Vec<u8>> {
    let who = Who {
        shared,
        client,
        src,
        req,
        ended: Mutex::new(None),
    };
    let reply = match req.code {
        Code::StatusServer => Some(ReplyBuilder::new(Code::AccessAccept, req.identifier)),
        _ => access_request(&who, config, runtime).await,
    };
    let bytes = reply.and_then(|r| finish(r, client, req));
    // The request's end is recorded now that it is known whether a reply goes out: an
    // Accept that could not be encoded is recorded as the drop it is, not as an accept.
    who.record(bytes.is_some());
    bytes
}

/// Copies Proxy-State and signs the reply; `None` (logged) when it does not fit.
/// Acct-Interim-Interval (85, RFC 2869 §5.16).
const ACCT_INTERIM_INTERVAL: u8 = 85;

fn finish(mut reply: ReplyBuilder, client: &Client, req: &Request<'_>) -> Option<Vec<u8>> {
    // RFC 2865 §5.33: Proxy-State is copied unchanged, in order, into the reply.
    let copied = req
        .all(AttrType::ProxyState)
        .try_for_each(|ps| reply.push(AttrType::ProxyState, ps).map(drop));
    match copied.and_then(|()| reply.finish(&client.secret, &req.authenticator)) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            warn!(nas = %client.name, error = %e, "reply could not be encoded; dropped");
            None
        }
    }
}

/// Where a conversation stands once a request has been handled.
struct Step {
    entry: SessionEntry,
    action: Action,
}

async fn access_request(
    who: &Who<'_, '_>,
    config: &Config,
    runtime: &Runtime,
) -> Option<ReplyBuilder> {
    let (shared, client, req) = (who.shared, who.client, who.req);
    let Some(eap_bytes) = req.eap_message() else {
        who.finished(
            &Conversation::default(),
            "reject",
            "no_eap".into(),
            "only EAP-TLS is offered",
        );
        return Some(ReplyBuilder::new(Code::AccessReject, req.identifier));
    };
    if eap_bytes.is_empty() {
        // EAP-Start from the NAS (RFC 3579 §2.1): ask for the identity.
        let mut b = ReplyBuilder::new(Code::AccessChallenge, req.identifier);
        let ask = EapPacket::request(rand::random(), TYPE_IDENTITY, Vec::new());
        b.push_eap(&ask.to_bytes()).ok()?;
        return Some(b);
    }
    let eap = match EapPacket::decode(&eap_bytes) {
        Ok(p) => p,
        Err(e) => {
            return Some(who.reject(
                None,
                e.reason(),
                &e.to_string(),
                EapPacket::outcome(EapCode::Failure, eap_identifier(&eap_bytes)),
            ));
        }
    };
    // Holds the State of the conversation being worked on until this request is answered.
    let mut _in_use = None;
    let mut step = match req.first(AttrType::State) {
        None if config
            .max_sessions_per_client
            .is_some_and(|cap| shared.sessions.count(&client.name) >= cap) =>
        {
            shared.shares.of(&client.name).note_session_cap();
            return Some(who.reject(
                None,
                "too_many_sessions",
                "this client holds max_sessions_per_client conversations",
                EapPacket::outcome(EapCode::Failure, eap.identifier),
            ));
        }
        None if config.max_conversations_per_device
            <= device_conversations(shared, client, req) =>
        {
            return Some(who.reject(
                None,
                "too_many_device_conversations",
                "this device already has max_conversations_per_device conversations going",
                EapPacket::outcome(EapCode::Failure, eap.identifier),
            ));
        }
        None => match start(config, runtime, client, req, &eap) {
            Ok(step) => step,
            Err(e) => {
                return Some(who.reject(
                    None,
                    e.reason(),
                    &e.to_string(),
                    EapPacket::outcome(EapCode::Failure, eap.identifier),
                ));
            }
        },
        Some(state) => {
            let entry = match shared.sessions.take(state, client) {
                Ok((entry, in_use)) => {
                    _in_use = Some(in_use);
                    entry
                }
                Err(TakeError::InUse) => {
                    // A copy of a request still being worked on (a NAS's retransmission
                    // under a new Identifier): the first one will answer.
                    return who.discard(
                        None,
                        "state_in_use",
                        "a request with this State is being processed",
                    );
                }
                Err(TakeError::OtherClient) => {
                    // Another NAS cannot continue, or by a Reject end, a conversation it
                    // merely saw: drop its copy and leave the conversation alone.
                    return who.discard(
                        None,
                        "state_of_other_client",
                        "its State belongs to another client's conversation",
                    );
                }
                Err(TakeError::Unknown) => {
                    return Some(who.reject(
                        None,
                        "unknown_state",
                        "State unknown or expired",
                        EapPacket::outcome(EapCode::Failure, eap.identifier),
                    ));
                }
            };
            let share = shared.shares.of(&client.name);
            // What the audit record needs, should the step never hand the entry back.
            let before = Conversation::of(&entry);
            let (entry, result) = match step_session(runtime, &share, entry, eap.clone()).await {
                Ok(r) => r,
                Err(missed) => {
                    let (reason, why) = match missed {
                        Missed::Signing => ("hsm_timeout", "the token did not sign in time"),
                        Missed::Turn => (
                            "server_busy",
                            "this client's TLS steps did not get a turn in time",
                        ),
                    };
                    who.finished(&before, "reject", reason.into(), why);
                    return Some(reply::reject(
                        req,
                        &EapPacket::outcome(EapCode::Failure, eap.identifier),
                    ));
                }
            };
            let mut entry = entry;
            if let (Ok(Action::Send(_)), Some(path)) = (&result, entry.session.take_early_peer()) {
                // The device's certificate is verified but its flight is not complete:
                // revocation starts now rather than after the handshake.
                entry.early_posture =
                    checks::EarlyPosture::start(runtime, &entry.policy, &path, &entry.first);
                entry.early = checks::Early::start(runtime, path, clock::unix_now());
                if entry.early.is_some() {
                    debug!(nas = %client.name, round = entry.session.rounds(), "device certificate verified mid-flight: revocation check started");
                }
            }
            match result {
                Ok(action) => Step { entry, action },
                Err(e) if e.is_discard() => {
                    let ended = who.discard(Some(&entry), e.reason(), &e.to_string());
                    if let Ok(state) = state.try_into() {
                        shared.sessions.put(state, entry);
                    }
                    return ended;
                }
                Err(e) => {
                    return Some(who.reject(
                        Some(&entry),
                        e.reason(),
                        &e.to_string(),
                        entry.session.failure(),
                    ));
                }
            }
        }
    };
    if let Action::CheckPeer(peer) = &step.action {
        let last = facts::request_facts(req, client, &config.dictionary, "");
        let early = step.entry.early.take();
        let early_posture = step.entry.early_posture.take();
        let checked = checks::decide(
            peer,
            &step.entry.first,
            last,
            runtime,
            &step.entry.policy,
            (early, early_posture),
            clock::unix_now(),
        )
        .await;
        let verdict = match &checked.decision {
            Decision::Accept { .. } => Verdict::Allow,
            Decision::Reject { reason, .. } => Verdict::Deny(reason.clone()),
        };
        step.entry.checked = Some(Box::new(checked));
        step.action = match step.entry.session.handle(Event::Verdict(verdict)) {
            Ok(a) => a,
            Err(e) => {
                return Some(who.reject(
                    Some(&step.entry),
                    e.reason(),
                    &e.to_string(),
                    step.entry.session.failure(),
                ));
            }
        };
    }
    let Step { entry, action } = step;
    match action {
        Action::Send(request) => {
            let state: [u8; 16] = rand::random();
            let mut b = ReplyBuilder::new(Code::AccessChallenge, req.identifier);
            b.push_eap(&request.to_bytes()).ok()?;
            b.push(AttrType::State, &state).ok()?;
            // The Proxy-State the reply must echo could push it past a packet: then no
            // reply goes out, and the conversation is not kept under a State nobody got.
            let echoed: usize = req.all(AttrType::ProxyState).map(|p| p.len() + 2).sum();
            if b.len() + echoed > crate::radius::MAX_PACKET {
                return who.discard(
                    Some(&entry),
                    "encode_error",
                    "the challenge and the Proxy-State it must echo do not fit one packet",
                );
            }
            debug!(
                eap.id = request.identifier,
                round = entry.session.rounds(),
                len = request.data.len(),
                "challenge"
            );
            shared.sessions.put(state, entry);
            Some(b)
        }
        Action::CheckPeer(_) => Some(who.reject(
            Some(&entry),
            "internal",
            "checks asked twice",
            entry.session.failure(),
        )),
        Action::Finish(Outcome::Failure { eap, reason }) => {
            Some(who.reject(Some(&entry), reason, "denied by checks", eap))
        }
        Action::Finish(Outcome::Success { eap, keys }) => {
            // Success follows an Allow verdict, which only an accepting decision gives;
            // should that ever not hold, no Accept goes out without its decision.
            let (user, attrs) = match entry.checked.as_deref() {
                Some(c) => match &c.decision {
                    Decision::Accept { reply } => (c.facts.cert.identity(), reply.as_slice()),
                    Decision::Reject { .. } => {
                        return Some(who.reject(
                            Some(&entry),
                            "internal",
                            "EAP success after a refusing decision",
                            EapPacket::outcome(EapCode::Failure, eap.identifier),
                        ))
                    }
                },
                None => {
                    return Some(who.reject(
                        Some(&entry),
                        "internal",
                        "EAP success without a decision",
                        EapPacket::outcome(EapCode::Failure, eap.identifier),
                    ))
                }
            };
            let user = if user.is_empty() {
                entry.identity.as_str()
            } else {
                user
            };
            match reply::accept(
                client,
                req,
                user,
                attrs,
                entry.policy.dictionary(),
                &eap,
                &keys.msk[..],
            ) {
                Ok(mut b) => {
                    // The Class the NAS echoes in accounting: joins its sessions to this.
                    let (id, class) = shared.class_key.mint();
                    // How often the NAS reports the session: what keeps it live here.
                    if let Some(secs) = config.accounting_interim.filter(|_| {
                        !attrs
                            .iter()
                            .any(|a| a.name.eq_ignore_ascii_case("Acct-Interim-Interval"))
                    }) {
                        let _ = b.push(AttrType::Other(ACCT_INTERIM_INTERVAL), &secs.to_be_bytes());
                    }
                    if b.push(AttrType::Class, &class).is_ok() {
                        if let Some(c) = entry.checked.as_deref() {
                            let cert = c.cert();
                            shared.registry.accepted(Authentication {
                                id,
                                at: clock::unix_now(),
                                nas: client.name.clone(),
                                identity: entry.identity.clone(),
                                station: entry.station.clone(),
                                cert_subject: cert.subject,
                                cert_serial: cert.serial,
                                cert_issuer: cert.issuer,
                                rule: Some(c.trace.rule.clone()),
                                vlan: c.decision.vlan().map(str::to_owned),
                                reply: attrs.to_vec(),
                                posture: c.posture.clone(),
                                posture_ids: runtime
                                    .posture
                                    .iter()
                                    .flat_map(|p| p.all())
                                    .filter_map(|s| {
                                        let station = c.facts.first.calling_station.as_deref();
                                        let id = s.device_id(&c.facts.cert, station)?;
                                        Some((s.name().to_owned(), s.key(&id.id)))
                                    })
                                    .collect(),
                                facts: Arc::new(c.facts.clone()),
                                path: c.path.clone(),
                            });
                        }
                    }
                    who.finished(&Conversation::of(&entry), "accept", "ok".into(), "");
                    Some(b)
                }
                Err(e) => Some(who.reject(
                    Some(&entry),
                    "internal",
                    &e.to_string(),
                    EapPacket::outcome(EapCode::Failure, eap.identifier),
                )),
            }
        }
    }
}

fn start(
    config: &Config,
    runtime: &Runtime,
    client: &Client,
    req: &Request<'_>,
    eap: &EapPacket,
) -> Result<Step, EapError> {
    if eap.code != EapCode::Response || eap.ty != Some(TYPE_IDENTITY) {
        return Err(EapError::UnexpectedType(eap.ty.unwrap_or(0)));
    }
    let identity: String = String::from_utf8_lossy(&eap.data)
        .chars()
        .take(253)
        .collect();
    let (session, action) = Session::start(runtime.eap.clone(), rand::random(), req.framed_mtu())?;
    let first = facts::request_facts(req, client, &config.dictionary, &identity);
    let entry = SessionEntry {
        session,
        identity,
        nas: client.name.clone(),
        nas_network: client.network,
        station: req
            .first(AttrType::CallingStationId)
            .map(super::sessions::station_id),
        started: clock::now(),
        first,
        checked: None,
        early: None,
        early_posture: None,
        policy: runtime.policy.clone(),
    };
    Ok(Step { entry, action })
}

/// Conversations the requesting device (its Calling-Station-Id) already has going with this
/// client; 0 when the NAS sent none.
fn device_conversations(shared: &Shared, client: &Client, req: &Request<'_>) -> u64 {
    req.first(AttrType::CallingStationId).map_or(0, |raw| {
        shared
            .sessions
            .count_device(&client.name, &super::sessions::station_id(raw))
    })
}

/// Why a step did not run.
enum Missed {
    /// The token did not sign within `[pki]`'s deadline (waiting included).
    Signing,
    /// The client's turn at a TLS step did not come within [`fairness::STEP_WAIT`].
    Turn,
}

/// Feeds a response to the session, in the client's turn (see [`super::fairness`]). With
/// the server key in a token, the step that answers the ClientHello signs through PKCS#11,
/// which blocks: it runs on the blocking pool, at most `[pki] sessions` such steps at once,
/// with a deadline that includes waiting for the turn and for a slot; a missed deadline
/// fails closed (the conversation is dropped and the device rejected). Every other step runs
/// inline once its turn has come. The steps of a client over its share run on the
/// background runtime instead; the time of a step off the request's task is charged to its
/// client here (inline, [`fairness::charged`] counts it).
async fn step_session(
    runtime: &Runtime,
    share: &Arc<fairness::Share>,
    mut entry: SessionEntry,
    eap: EapPacket,
) -> Result<(SessionEntry, Result<Action, EapError>), Missed> {
    let Some(pki) = runtime.pki.as_ref().filter(|_| entry.session.may_sign()) else {
        let step = async {
            let turn = share.step().await?;
            if share.over() && fairness::background().is_some() {
                let charged = share.clone();
                return share
                    .in_background(move || {
                        let result =
                            timed(&charged, || entry.session.handle(Event::Response(&eap)));
                        drop(turn);
                        (entry, result)
                    })
                    .await;
            }
            // Inline, the step is charged with the rest of the request's own time.
            let result = entry.session.handle(Event::Response(&eap));
            drop(turn);
            Some((entry, result))
        };
        return tokio::time::timeout(fairness::STEP_WAIT, step)
            .await
            .ok()
            .flatten()
            .ok_or(Missed::Turn);
    };
    let (slots, reserved) = (pki.signing_slots.clone(), pki.background_signing.clone());
    let runtime = pki.clone();
    let share = share.clone();
    let step = async move {
        // The client's turn first, then a signing slot: one client's queue of signatures
        // waits behind its own turns, not in front of other clients'. Both permits live as
        // long as the blocking work, even past our deadline.
        let turn = share.step().await?;
        let over = share.over() && fairness::background().is_some();
        let permit = signing_permit(&slots, &reserved, over).await?;
        let charged = share.clone();
        let work = move || {
            let result = timed(&charged, || entry.session.handle(Event::Response(&eap)));
            drop((permit, turn));
            (entry, result)
        };
        if over {
            share.in_background(work).await
        } else {
            tokio::task::spawn_blocking(work).await.ok()
        }
    };
    let result = tokio::time::timeout(pki.sign_timeout, step).await;
    // A signature that failed on every token asks for its module to be re-initialised;
    // that waits for every signing permit, so it runs apart from this request.
    let modules = crate::pki::hsm::take_reinit_requests();
    if !modules.is_empty() {
        fairness::spawn_foreground(super::reinitialize_modules(runtime, modules));
    }
    result.ok().flatten().ok_or(Missed::Signing)
}

/// A signing slot: for a client over its share, only within the slots such clients may hold
/// together (see `PkiRuntime::background_signing`), so one stays for the others.
async fn signing_permit(
    slots: &Arc<Semaphore>,
    reserved: &Arc<Semaphore>,
    over: bool,
) -> Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)> {
    let limit = if over {
        Some(reserved.clone().acquire_owned().await.ok()?)
    } else {
        None
    };
    let slot = slots.clone().acquire_owned().await.ok()?;
    Some((slot, limit))
}

/// Runs one step off the request's task and charges its processor time to the client.
fn timed<T>(share: &fairness::Share, step: impl FnOnce() -> T) -> T {
    let meter = fairness::Meter::start();
    let result = step();
    share.charge(meter.used());
    result
}

fn eap_identifier(bytes: &[u8]) -> u8 {
    bytes.get(1).copied().unwrap_or(0)
}

/// Who is being answered: what the audit line and the reply need, and how the request
/// ended, recorded once the reply is known to go out.
struct Who<'a, 'r> {
    shared: &'a Arc<Shared>,
    client: &'a Client,
    src: SocketAddr,
    req: &'a Request<'r>,
    ended: Mutex<Option<Ended>>,
}

impl Who<'_, '_> {
    /// Records a rejected authentication and builds its Access-Reject.
    fn reject(
        &self,
        entry: Option<&SessionEntry>,
        reason: impl Into<Reason>,
        detail: &str,
        failure: EapPacket,
    ) -> ReplyBuilder {
        self.finished(&Conversation::from(entry), "reject", reason.into(), detail);
        reply::reject(self.req, &failure)
    }

    /// Records a request answered with nothing (the NAS's copy is dropped; a conversation
    /// it belongs to, if any, goes on). Always `None`, the reply.
    fn discard(
        &self,
        entry: Option<&SessionEntry>,
        reason: &'static str,
        detail: &str,
    ) -> Option<ReplyBuilder> {
        self.finished(&Conversation::from(entry), "discard", reason.into(), detail);
        None
    }

    /// Notes how the request ended (an authentication's end, or a drop); recorded by
    /// [`Self::record`] once the reply is known to go out.
    fn finished(
        &self,
        conversation: &Conversation,
        outcome: &'static str,
        reason: Reason,
        detail: &str,
    ) {
        let ended = Ended {
            conversation: conversation.clone(),
            outcome,
            reason,
            detail: detail.to_owned(),
        };
        if let Ok(mut e) = self.ended.lock() {
            *e = Some(ended);
        }
    }

    /// Records the request's end (see [`ending::record`]) once it is known whether its
    /// reply went out.
    fn record(&self, sent: bool) {
        let ended = self.ended.lock().ok().and_then(|mut e| e.take());
        ending::record(self.shared, self.client, self.src, ended, sent);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::radius::reply::tests::signed_request;
    use crate::radius::{SharedSecret, UnverifiedRequest};
    use crate::server::loglimit::BURST;
    use crate::server::Server;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn config(dir: &Path) -> Config {
        crate::pki::dev::generate(dir, time::OffsetDateTime::now_utc()).unwrap();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[tls]\ncertificate = \"{d}/server.pem\"\n\
             private_key = \"{d}/server.key\"\nca = [\"{d}/root-ca.pem\"]\n\n[[client]]\n\
             name = \"nas\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n",
            d = dir.display()
        );
        Config::parse(&dir.join("anchord.toml"), &text).unwrap()
    }

    #[test]
    fn repeated_rejects_are_all_counted_and_answered_but_logged_up_to_the_burst() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(config(dir.path()));
        let log = Captured::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runtime = Arc::new(Runtime::build(&config, None).unwrap());
        let server =
            rt.block_on(async { Server::bind(config.clone(), runtime.clone(), None).unwrap() });
        let shared = server.shared();
        let client = config.clients.first().unwrap();
        let secret = SharedSecret::new(b"s".to_vec());
        let src = "127.0.0.1:5000".parse().unwrap();
        let n = u64::from(BURST) * 3;
        let mut rejects = 0;
        for i in 0..n {
            let state = [u8::try_from(i).unwrap(); 16];
            let bytes = signed_request(
                &secret,
                &[(79, vec![2, 1, 0, 6, 13, 0]), (24, state.to_vec())],
                true,
            );
            let req = UnverifiedRequest::parse(&bytes)
                .unwrap()
                .verify(&secret, true)
                .unwrap();
            let reply = rt
                .block_on(process(&shared, &config, &runtime, client, src, &req))
                .unwrap();
            rejects += u64::from(reply.first() == Some(&3));
        }
        assert_eq!(rejects, n, "every request is answered");
        assert_eq!(
            shared.metrics.authentications("reject", "unknown_state"),
            n,
            "every reject is counted"
        );
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines = text
            .lines()
            .filter(|l| l.contains("reason=\"unknown_state\""))
            .count();
        assert_eq!(lines, usize::try_from(BURST).unwrap(), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn clients_over_their_share_never_hold_every_signing_slot() {
        let slots = Arc::new(Semaphore::new(2));
        let reserved = Arc::new(Semaphore::new(1));
        let flood = signing_permit(&slots, &reserved, true).await.unwrap();
        // A second background signature waits, though a slot is free...
        let waiting = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            signing_permit(&slots, &reserved, true),
        )
        .await;
        assert!(
            waiting.is_err(),
            "the last slot is kept for clients within their share"
        );
        // ...which another NAS's device gets at once.
        let good = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            signing_permit(&slots, &reserved, false),
        )
        .await;
        assert!(matches!(good, Ok(Some(_))));
        drop((flood, good));
        assert_eq!(slots.available_permits(), 2);
        assert_eq!(reserved.available_permits(), 1);
    }

    #[test]
    fn an_end_whose_reply_cannot_be_sent_is_recorded_once_as_the_drop_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(config(dir.path()));
        let runtime = Arc::new(Runtime::build(&config, None).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let server =
            rt.block_on(async { Server::bind(config.clone(), runtime, Some(tx)).unwrap() });
        let shared = server.shared();
        let client = config.clients.first().unwrap();
        let secret = SharedSecret::new(b"s".to_vec());
        let bytes = signed_request(&secret, &[(79, vec![2, 1, 0, 5, 1])], true);
        let req = UnverifiedRequest::parse(&bytes)
            .unwrap()
            .verify(&secret, true)
            .unwrap();
        let who = Who {
            shared: &shared,
            client,
            src: "127.0.0.1:5000".parse().unwrap(),
            req: &req,
            ended: Mutex::new(None),
        };
        let conversation = Conversation {
            tls_version: "1.3",
            ..Conversation::default()
        };
        who.finished(&conversation, "accept", "ok".into(), "");
        who.record(false);
        assert_eq!(shared.metrics.authentications("accept", "ok"), 0);
        let record = rx.try_recv().unwrap();
        assert_eq!(
            (record.outcome, record.reason.as_ref()),
            ("discard", "encode_error")
        );
        assert!(rx.try_recv().is_err(), "one record");
        let text = shared.metrics_text();
        assert!(
            text.contains("anchord_dropped_total{reason=\"encode_error\"} 1"),
            "{text}"
        );
        // A second record() has nothing left to record.
        who.record(true);
        assert!(rx.try_recv().is_err());
    }
}
