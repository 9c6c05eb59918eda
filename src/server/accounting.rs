//! Accounting (RFC 2866) on the accounting listener: each Accounting-Request, once its
//! Request Authenticator verified, is written to the audit sink, applied to the session
//! registry, and only then answered with an Accounting-Response, so a record the NAS saw
//! answered is never lost to a restart (only the live registry is, which the next
//! Interim-Updates rebuild). A record that cannot be stored gets no answer: the NAS
//! retransmits it (RFC 2866 §2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::{debug, warn};

use super::class::id_text;
use super::registry::{LiveSession, SessionKey};
use super::Shared;
use crate::config::Client;
use crate::radius::attr::{station_id, AttrType};
use crate::radius::packet::{Code, Request};
use crate::radius::reply::ReplyBuilder;

/// Acct-Status-Type (40).
pub const ACCT_STATUS_TYPE: u8 = 40;
/// Acct-Input-Octets (42).
pub const ACCT_INPUT_OCTETS: u8 = 42;
/// Acct-Output-Octets (43).
pub const ACCT_OUTPUT_OCTETS: u8 = 43;
/// Acct-Session-Id (44).
pub const ACCT_SESSION_ID: u8 = 44;
/// Acct-Session-Time (46).
pub const ACCT_SESSION_TIME: u8 = 46;
/// Acct-Terminate-Cause (49).
pub const ACCT_TERMINATE_CAUSE: u8 = 49;
/// Acct-Delay-Time (41).
const ACCT_DELAY_TIME: u8 = 41;
/// Event-Timestamp (55).
const EVENT_TIMESTAMP: u8 = 55;
/// NAS-IPv6-Address (95).
pub const NAS_IPV6_ADDRESS: u8 = 95;

/// How long the audit sink may take to take a record before the request goes unanswered
/// (the NAS retransmits).
const AUDIT_WAIT: Duration = Duration::from_secs(2);

/// Most characters of an Acct-Session-Id kept (RFC 2866 gives no bound; a registry key must
/// have one).
const MAX_SESSION_ID: usize = 253;

/// Acct-Status-Type values (RFC 2866 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 1.
    Start,
    /// 2.
    Stop,
    /// 3.
    Interim,
    /// 7: the NAS (re)started; its earlier sessions are gone.
    On,
    /// 8: the NAS is stopping; so are its sessions.
    Off,
    /// Anything else (stored and answered, not applied).
    Other(u32),
}

impl Status {
    fn of(v: u32) -> Self {
        match v {
            1 => Self::Start,
            2 => Self::Stop,
            3 => Self::Interim,
            7 => Self::On,
            8 => Self::Off,
            n => Self::Other(n),
        }
    }

    /// The metrics label and the audit record's `status`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Interim => "interim",
            Self::On => "on",
            Self::Off => "off",
            Self::Other(_) => "other",
        }
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// The NAS-IP-Address or NAS-IPv6-Address, as text.
fn nas_ip(req: &Request<'_>) -> Option<String> {
    if let Some(v) = req.first(AttrType::NasIpAddress) {
        let b: [u8; 4] = v.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(b)).to_string());
    }
    let v = req.first(AttrType::Other(NAS_IPV6_ADDRESS))?;
    let b: [u8; 16] = v.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(b)).to_string())
}

/// Stores and answers one authenticated Accounting-Request; `None`: not stored, no answer.
pub async fn process(
    shared: &Arc<Shared>,
    client: &Client,
    src: SocketAddr,
    req: &Request<'_>,
) -> Option<Vec<u8>> {
    let Some(status) = req
        .first(AttrType::Other(ACCT_STATUS_TYPE))
        .and_then(u32_of)
    else {
        shared.metrics.dropped("accounting_without_status");
        debug!(nas = %client.name, "Accounting-Request without Acct-Status-Type dropped");
        return None;
    };
    let status = Status::of(status);
    let session_id: Option<String> = req
        .text(AttrType::Other(ACCT_SESSION_ID))
        .map(|s| s.chars().take(MAX_SESSION_ID).collect());
    if session_id.is_none() && matches!(status, Status::Start | Status::Stop | Status::Interim) {
        shared.metrics.dropped("accounting_without_session_id");
        debug!(nas = %client.name, status = status.label(), "Accounting-Request without Acct-Session-Id dropped");
        return None;
    }
    // Our Class, if the NAS echoed one: the authentication this session belongs to.
    let auth_id = req
        .all(AttrType::Class)
        .find_map(|c| shared.class_key.open(c));
    // Only the NAS entry the device authenticated through may report its sessions: the
    // Class travels in clear in the Accept, and another NAS must not claim the device.
    let auth = auth_id
        .and_then(|id| shared.registry.authentication(&id))
        .filter(|a| a.nas == client.name);
    let station = req.first(AttrType::CallingStationId).map(station_id);
    let user_name = req.text(AttrType::UserName);
    let nas_ip = nas_ip(req);
    let nas_identifier = req.text(AttrType::NasIdentifier);
    let number = |ty: u8| req.first(AttrType::Other(ty)).and_then(u32_of);
    let record = json!({
        "time": crate::server::audit::now_text(),
        "event": "accounting",
        "status": status.label(),
        "nas": client.name,
        "nas_addr": src.to_string(),
        "nas_ip": nas_ip,
        "nas_identifier": nas_identifier,
        "session_id": session_id,
        "user_name": user_name,
        "station": station,
        "authentication": auth_id.as_ref().map(id_text),
        "joined": auth.is_some(),
        "cert": auth.as_ref().map(|a| json!({
            "subject": a.cert_subject,
            "serial": a.cert_serial,
            "issuer": a.cert_issuer,
        })),
        "vlan": auth.as_ref().and_then(|a| a.vlan.clone()),
        "session_time": number(ACCT_SESSION_TIME),
        "input_octets": number(ACCT_INPUT_OCTETS),
        "output_octets": number(ACCT_OUTPUT_OCTETS),
        "terminate_cause": number(ACCT_TERMINATE_CAUSE),
    })
    .to_string();
    if let Some(audit) = super::audit::current() {
        let Some(written) = audit.send_acked(record, "accounting") else {
            shared.metrics.dropped("accounting_not_stored");
            warn!(nas = %client.name, "accounting record not stored (audit queue full): left unanswered for the NAS to retransmit");
            return None;
        };
        match tokio::time::timeout(AUDIT_WAIT, written).await {
            Ok(Ok(true)) => {}
            _ => {
                shared.metrics.dropped("accounting_not_stored");
                warn!(nas = %client.name, "accounting record not stored (audit sink failed or slow): left unanswered for the NAS to retransmit");
                return None;
            }
        }
    }
    let now = crate::clock::unix_now();
    // When it happened at the NAS (RFC 2869 §5.3; RFC 2866 §5.2): what orders records.
    // Never ahead of this server's clock: a NAS whose clock runs ahead (or a forged
    // far-future timestamp) must not make every later record, a Stop without a timestamp
    // among them, look old.
    let event_time = number(EVENT_TIMESTAMP)
        .map_or_else(
            || now - i64::from(number(ACCT_DELAY_TIME).unwrap_or(0)),
            i64::from,
        )
        .min(now);
    let key = |id: String| SessionKey {
        nas: client.name.clone(),
        acct_session_id: id,
        auth: auth_id,
    };
    match (status, session_id) {
        (Status::Start | Status::Interim, Some(id)) => {
            let kept = shared.registry.update(LiveSession {
                key: key(id),
                auth: auth.clone(),
                user_name,
                station,
                nas_addr: src.ip(),
                nas_ip,
                nas_identifier,
                started: now,
                updated: now,
                event_time,
                generation: 0,
            });
            if !kept {
                // Its devices are out of reach of live enforcement: say so, not once per
                // record.
                if let super::loglimit::Verdict::Log { suppressed } = shared.log_limit.check(
                    crate::clock::now(),
                    "live_sessions_per_client",
                    &client.name,
                ) {
                    warn!(nas = %client.name, suppressed, "new live session not tracked: this NAS entry has its share of the registry (server.max_live_sessions_per_client); its devices are out of reach of live enforcement until sessions end");
                }
            }
        }
        (Status::Stop, Some(id)) => {
            shared.registry.stop_reported(&key(id), event_time);
        }
        (Status::On | Status::Off, _) => shared.registry.clear_nas(&client.name, src.ip()),
        _ => {}
    }
    shared.metrics.accounting(status.label(), auth.is_some());
    response(client, req)
}

/// The Accounting-Response to `req`, its Proxy-State copied unchanged and in order
/// (RFC 2865 §5.33); `None` if it cannot be encoded.
pub fn response(client: &Client, req: &Request<'_>) -> Option<Vec<u8>> {
    let mut reply = ReplyBuilder::new(Code::AccountingResponse, req.identifier);
    for ps in req.all(AttrType::ProxyState) {
        if reply.push(AttrType::ProxyState, ps).is_err() {
            return None;
        }
    }
    match reply.finish(&client.secret, &req.authenticator) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            warn!(nas = %client.name, error = %e, "Accounting-Response could not be built");
            None
        }
    }
}
