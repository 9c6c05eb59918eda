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
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::das::{self, Answer};
use super::registry::LiveSession;
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
}

impl Default for Enforcer {
    fn default() -> Self {
        Self {
            global: Arc::new(Semaphore::new(GLOBAL_IN_FLIGHT)),
            per_nas: Mutex::default(),
        }
    }
}

impl Enforcer {
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
    let result = match das {
        None => "no dynamic_authorization configured for this NAS".to_owned(),
        Some(das) => {
            let to = SocketAddr::new(das.address.unwrap_or(session.nas_addr), das.port);
            let nas_slots = shared.enforcer.nas_slots(&session.key.nas);
            let answer = match (
                shared.enforcer.global.clone().acquire_owned().await,
                nas_slots.acquire_owned().await,
            ) {
                (Ok(_g), Ok(_n)) => das::disconnect(&session, to, &das.secret).await,
                _ => Answer::NoAnswer,
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
