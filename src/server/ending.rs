//! How a request ends: one counter, one audit record (to the `[audit]` sink and the
//! demo's channel), one log line (rate-limited for rejects, at debug for discards). The
//! handler notes the end; it is recorded here once the reply is known to go out.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{debug, info};

use super::checks::Checked;
use super::loglimit::Verdict as LogVerdict;
use super::sessions::SessionEntry;
use super::{AuditRecord, PolicyMark, Shared};
use crate::clock;
use crate::config::Client;
use crate::eap::Reason;
use crate::logsafe::Escaped;
use crate::tls::CertSummary;

/// How a request ended, until it is recorded.
pub(super) struct Ended {
    pub(super) conversation: Conversation,
    pub(super) outcome: &'static str,
    pub(super) reason: Reason,
    pub(super) detail: String,
}

/// What the audit record says about a conversation: taken from its session entry, or
/// empty when the request ended before it had one.
#[derive(Debug, Clone, Default)]
pub(super) struct Conversation {
    pub(super) identity: String,
    pub(super) cert: Option<CertSummary>,
    pub(super) tls_version: &'static str,
    pub(super) rounds: u32,
    pub(super) started: Option<std::time::Instant>,
    pub(super) revocation: Option<String>,
    pub(super) posture: Option<String>,
    pub(super) vlan: Option<String>,
    pub(super) policy: Option<PolicyMark>,
}

impl Conversation {
    pub(super) fn of(entry: &SessionEntry) -> Self {
        let checked = entry.checked.as_deref();
        Self {
            identity: entry.identity.clone(),
            cert: checked.map(Checked::cert),
            tls_version: entry.session.tls_version().unwrap_or(""),
            rounds: entry.session.rounds(),
            started: Some(entry.started),
            revocation: checked.map(|c| c.facts.revocation.detail.clone()),
            posture: checked.map(|c| c.posture.clone()),
            vlan: checked.and_then(|c| c.decision.vlan().map(str::to_owned)),
            policy: checked.map(|c| PolicyMark {
                version: entry.policy.version().to_owned(),
                rule: c.trace.rule.clone(),
                preset: c.trace.preset.clone(),
            }),
        }
    }

    pub(super) fn from(entry: Option<&SessionEntry>) -> Self {
        entry.map(Self::of).unwrap_or_default()
    }
}

/// The one end of a request that ends an authentication or is dropped: one counter,
/// one audit record, one log line (rate-limited for rejects and at debug for discards).
/// The one end of a request that ends an authentication or is dropped: one counter,
/// one audit record, one log line (rate-limited for rejects and at debug for discards).
/// `sent`: its reply went out; if not, the request was dropped (`encode_error`),
/// whatever it was going to say.
pub(super) fn record(
    shared: &Arc<Shared>,
    client: &Client,
    src: SocketAddr,
    ended: Option<Ended>,
    sent: bool,
) {
    let Some(Ended {
        conversation,
        mut outcome,
        mut reason,
        mut detail,
    }) = ended
    else {
        if !sent {
            shared.metrics.dropped("encode_error");
        }
        return;
    };
    if !sent && outcome != "discard" {
        detail = format!("the {outcome} could not be encoded ({reason}): dropped");
        (outcome, reason) = ("discard", "encode_error".into());
    }
    let conversation = &conversation;
    let detail = detail.as_str();
    let duration = conversation
        .started
        .map(|t| clock::now().saturating_duration_since(t))
        .unwrap_or_default();
    if outcome == "discard" {
        shared.metrics.dropped(reason.clone());
    } else {
        shared.metrics.finished(
            outcome,
            &reason,
            conversation.tls_version,
            duration.as_secs_f64(),
            conversation.rounds,
        );
    }
    let cert = conversation.cert.clone().unwrap_or_default();
    let record = AuditRecord {
        outcome,
        reason,
        nas: client.name.clone(),
        nas_addr: src,
        identity: conversation.identity.clone(),
        cert_subject: cert.subject,
        cert_serial: cert.serial,
        cert_issuer: cert.issuer,
        tls_version: conversation.tls_version,
        rounds: conversation.rounds,
        duration_ms: duration.as_millis(),
        revocation: conversation
            .revocation
            .clone()
            .unwrap_or_else(|| "-".into()),
        posture: conversation.posture.clone().unwrap_or_else(|| "-".into()),
        vlan: if outcome == "accept" {
            conversation.vlan.clone()
        } else {
            None
        },
        policy: conversation.policy.clone(),
    };
    if outcome == "discard" {
        debug!(nas = %client.name, reason = record.reason.as_ref(), "request dropped: {detail}");
    } else if outcome == "accept" || log_allowed(shared, record.reason.clone(), &client.name) {
        // Every authentication is counted and audited; repeated reject lines are rate
        // limited.
        log_finished(&record, detail);
    }
    if let Some(audit) = super::audit::current() {
        audit.record(&record);
    }
    if let Some(tx) = &shared.audit {
        let _ = tx.send(record);
    }
}

/// True when a per-request reject line for `reason` and client `nas` may be written now
/// (see [`super::loglimit`]); first writes the summary of lines suppressed before it.
pub(crate) fn log_allowed(shared: &Shared, reason: impl Into<Reason>, nas: &str) -> bool {
    let reason = reason.into();
    match shared.log_limit.check(clock::now(), reason.clone(), nas) {
        LogVerdict::Suppress => false,
        LogVerdict::Log { suppressed: 0 } => true,
        LogVerdict::Log { suppressed } => {
            info!(reason = reason.as_ref(), nas = %nas, suppressed, "suppressed {suppressed} similar log lines");
            true
        }
    }
}

fn log_finished(record: &AuditRecord, detail: &str) {
    info!(
        outcome = record.outcome,
        reason = record.reason.as_ref(),
        nas = %record.nas,
        identity = %Escaped(&record.identity),
        cert.subject = %Escaped(&record.cert_subject),
        cert.serial = %Escaped(&record.cert_serial),
        cert.issuer = %Escaped(&record.cert_issuer),
        tls = record.tls_version,
        rounds = record.rounds,
        duration_ms = record.duration_ms as u64,
        vlan = record.vlan.as_deref().unwrap_or("-"),
        rule = record.policy.as_ref().map_or("-", |p| p.rule.as_str()),
        policy = record.policy.as_ref().map_or("-", |p| p.version.as_str()),
        revocation = %Escaped(&record.revocation),
        posture = %Escaped(&record.posture),
        detail,
        "authentication finished"
    );
}
