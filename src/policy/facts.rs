//! The facts one decision is made from, as types: the device certificate (from
//! [`crate::pki::facts`]), the requests that carried the conversation, revocation, the TLS
//! version, and `now`. Gathered once per authentication by the server; read here only.

use std::net::{IpAddr, Ipv6Addr};

pub use crate::pki::facts::{CertFacts, Sans};
use crate::pki::status::Source;
use crate::radius::attr::station_id;
use crate::radius::dictionary::Dictionary;
use crate::radius::packet::Attribute;
use crate::radius::summary::request_facts;
use crate::radius::AttrType;

/// What a NAS said about the device in one Access-Request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The `[[client]]` entry the request came from, by name.
    pub client: String,
    /// NAS-IP-Address.
    pub nas_ip: Option<IpAddr>,
    /// NAS-IPv6-Address.
    pub nas_ipv6: Option<Ipv6Addr>,
    /// NAS-Identifier.
    pub nas_identifier: Option<String>,
    /// NAS-Port-Type (e.g. 19 for Wireless-802.11, 15 for Ethernet).
    pub nas_port_type: Option<u32>,
    /// NAS-Port-Id.
    pub nas_port_id: Option<String>,
    /// Called-Station-Id as sent (often `AA-BB-CC-DD-EE-FF:SSID`).
    pub called_station: Option<String>,
    /// The SSID: what follows the first ':' of Called-Station-Id, where there is one.
    pub ssid: Option<String>,
    /// Calling-Station-Id, normalised to `AA-BB-CC-DD-EE-FF` when it is a MAC address in
    /// any common format; otherwise as sent.
    pub calling_station: Option<String>,
    /// Framed-MTU.
    pub framed_mtu: Option<u32>,
    /// The EAP identity the device gave (first request only; empty in later ones).
    pub eap_identity: String,
    /// Every other attribute the dictionary names and can show as text, `(name, value)`,
    /// in packet order; encrypted ones, EAP payloads, State and authenticators never.
    pub attributes: Vec<(String, String)>,
    /// The request held more attribute values than are kept in `attributes`.
    pub incomplete: bool,
}

impl RequestFacts {
    /// The first value of the attribute named `name` (dictionary spelling).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// RADIUS attribute numbers without an [`AttrType`] of their own (RFC 2869, RFC 3162).
const NAS_PORT_TYPE: u8 = 61;
const NAS_PORT_ID: u8 = 87;
const NAS_IPV6_ADDRESS: u8 = 95;

impl RequestFacts {
    /// The facts of a request's `attrs` from the client named `client`; `eap_identity` is
    /// the EAP identity it carried, if any. The server and the admin tools (`policy
    /// explain`, `policy test`) read requests through this one function.
    pub fn of(
        attrs: &[Attribute<'_>],
        client: &str,
        dictionary: &Dictionary,
        eap_identity: &str,
    ) -> Self {
        let first = |ty: AttrType| attrs.iter().find(|a| a.ty == ty).map(|a| a.value);
        let text = |ty: AttrType| first(ty).map(|v| String::from_utf8_lossy(v).into_owned());
        let u32_of = |ty: AttrType| {
            first(ty)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_be_bytes)
        };
        let called_station = text(AttrType::CalledStationId);
        let ssid = called_station.as_deref().and_then(ssid_of);
        let (attributes, incomplete) = request_facts(attrs, dictionary);
        Self {
            client: client.to_owned(),
            nas_ip: first(AttrType::NasIpAddress)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(IpAddr::from),
            nas_ipv6: first(AttrType::Other(NAS_IPV6_ADDRESS))
                .and_then(|v| <[u8; 16]>::try_from(v).ok())
                .map(Ipv6Addr::from),
            nas_identifier: text(AttrType::NasIdentifier),
            nas_port_type: u32_of(AttrType::Other(NAS_PORT_TYPE)),
            nas_port_id: text(AttrType::Other(NAS_PORT_ID)),
            called_station,
            ssid,
            calling_station: first(AttrType::CallingStationId).map(station_id),
            framed_mtu: u32_of(AttrType::FramedMtu),
            eap_identity: eap_identity.to_owned(),
            attributes,
            incomplete,
        }
    }
}

/// The SSID in a Called-Station-Id (RFC 3580 §3.20, `AA-BB-CC-DD-EE-FF:SSID`): what
/// follows the access point's MAC, in any notation, and a `:`; for a value not led by a
/// MAC, what follows its first `:`. `None` for a MAC alone (a wired port) or an empty SSID.
fn ssid_of(called: &str) -> Option<String> {
    let is_mac = |m: &str| {
        let b = m.as_bytes();
        let hex = |r: &[u8]| r.iter().all(u8::is_ascii_hexdigit);
        match b.len() {
            // AA-BB-CC-DD-EE-FF or AA:BB:CC:DD:EE:FF, one separator throughout.
            17 => {
                let sep = b.get(2).copied().filter(|s| matches!(s, b':' | b'-'));
                sep.is_some_and(|sep| {
                    b.chunks(3).all(|c| {
                        hex(c.get(..2).unwrap_or_default()) && c.get(2).is_none_or(|&x| x == sep)
                    })
                })
            }
            // aabb.ccdd.eeff
            14 => b.chunks(5).all(|c| {
                hex(c.get(..4).unwrap_or_default()) && c.get(4).is_none_or(|&x| x == b'.')
            }),
            12 => hex(b),
            _ => false,
        }
    };
    let rest = [17, 14, 12]
        .into_iter()
        .find_map(|len| {
            called
                .get(..len)
                .filter(|m| is_mac(m))
                .and(called.get(len..))
        })
        .map(|rest| rest.strip_prefix(':'))
        .unwrap_or_else(|| called.split_once(':').map(|(_, s)| s));
    rest.filter(|s| !s.is_empty()).map(str::to_owned)
}

/// What a revocation check found for the device's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationOutcome {
    /// Not checked (`[revocation]` off).
    NotChecked,
    /// Every certificate checked is good.
    Good,
    /// A certificate of the path is revoked.
    Revoked {
        /// When (Unix seconds).
        at: i64,
        /// CRLReason, if given.
        reason: Option<String>,
        /// An intermediate CA, not the device's own certificate.
        intermediate: bool,
    },
    /// No usable answer and no soft-fail: the state is unknown.
    Unknown {
        /// Why.
        why: String,
    },
    /// An answer that failed verification (forged, mis-signed, about another certificate,
    /// wrong nonce): an attack or a broken responder.
    Invalid {
        /// Why.
        why: String,
    },
    /// No usable answer, and `soft_fail` lets the device on, flagged.
    SoftFailed {
        /// Why.
        why: String,
    },
}

impl RevocationOutcome {
    /// The label a policy matches on (`revocation = "good"`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotChecked => "not_checked",
            Self::Good => "good",
            Self::Revoked { .. } => "revoked",
            Self::Unknown { .. } => "unknown",
            Self::Invalid { .. } => "invalid",
            Self::SoftFailed { .. } => "soft_failed",
        }
    }
}

/// Revocation facts: the outcome, where the device certificate's answer came from, and
/// the audit text (e.g. `good (ocsp)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationFacts {
    /// The outcome.
    pub outcome: RevocationOutcome,
    /// The device certificate's answer's source, when one was asked.
    pub source: Option<Source>,
    /// One phrase for the audit record.
    pub detail: String,
}

impl RevocationFacts {
    /// Revocation not checked.
    pub fn not_checked() -> Self {
        Self {
            outcome: RevocationOutcome::NotChecked,
            source: None,
            detail: "off".into(),
        }
    }
}

/// Everything one decision is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Now, Unix seconds (a fact, so the decision is a pure function of the facts).
    pub now: i64,
    /// The device certificate, verified.
    pub cert: CertFacts,
    /// "1.2" or "1.3".
    pub tls_version: &'static str,
    /// The request that started the conversation.
    pub first: RequestFacts,
    /// The request that finished the handshake.
    pub last: RequestFacts,
    /// Revocation.
    pub revocation: RevocationFacts,
    /// The device's live posture, per source (none until posture sources are configured).
    pub posture: PostureFacts,
}

/// What the posture sources (MDM, EDR) said about the device, one entry per source, in
/// the configured order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostureFacts {
    /// Each source's answer.
    pub sources: Vec<SourcePosture>,
}

/// One posture source's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePosture {
    /// The source's name from the config.
    pub source: String,
    /// Its facts, or why there are none.
    pub answer: PostureAnswer,
}

/// A source's facts, or why it gave none.
#[derive(Debug, Clone, PartialEq)]
pub enum PostureAnswer {
    /// The source knows the device.
    Known(Posture),
    /// No usable answer (down, timed out, rate limited, garbage): the reason.
    Unavailable(String),
    /// The source answered and does not know the device: no id could be taken from the
    /// certificate, or the lookup did not come back with exactly one record for that id.
    UnknownDevice(String),
}

impl PostureAnswer {
    /// The answer in one phrase for the audit record and `explain`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        self.describe_into(&mut out);
        out
    }

    /// [`PostureAnswer::describe`], appended to `out`.
    pub fn describe_into(&self, out: &mut String) {
        match self {
            Self::Known(p) => p.describe_into(out),
            Self::Unavailable(why) => {
                out.push_str("unavailable: ");
                out.push_str(why);
            }
            Self::UnknownDevice(why) => {
                out.push_str("unknown device: ");
                out.push_str(why);
            }
        }
    }
}

/// Posture facts about one device from one source; each may be missing from an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Posture {
    /// Compliant with the source's policies.
    pub compliant: Option<bool>,
    /// Enrolled in (managed by) the source.
    pub managed: Option<bool>,
    /// Risk score (higher is riskier).
    pub risk_score: Option<f64>,
    /// Operating system.
    pub os: Option<String>,
    /// Operating system version.
    pub os_version: Option<String>,
    /// Last check-in with the source, Unix seconds.
    pub last_seen: Option<i64>,
    /// Further named facts, as text.
    pub extra: Vec<(String, String)>,
}

impl PostureFacts {
    /// The first known answer with `fact` set, across sources in order (or only `source`).
    pub fn known<'a, T>(
        &'a self,
        source: Option<&str>,
        fact: impl Fn(&'a Posture) -> Option<T>,
    ) -> Option<T> {
        self.sources
            .iter()
            .filter(|s| source.is_none_or(|n| n == s.source))
            .find_map(|s| match &s.answer {
                PostureAnswer::Known(p) => fact(p),
                PostureAnswer::Unavailable(_) | PostureAnswer::UnknownDevice(_) => None,
            })
    }

    /// True when no source (or `source`) gave an answer: none configured, or each
    /// unavailable.
    pub fn unavailable(&self, source: Option<&str>) -> bool {
        !self
            .sources
            .iter()
            .filter(|s| source.is_none_or(|n| n == s.source))
            .any(|s| matches!(s.answer, PostureAnswer::Known(_)))
    }

    /// True when a source (or `source`) answered that it does not know the device.
    pub fn unknown_device(&self, source: Option<&str>) -> bool {
        self.sources
            .iter()
            .filter(|s| source.is_none_or(|n| n == s.source))
            .any(|s| matches!(s.answer, PostureAnswer::UnknownDevice(_)))
    }

    /// Every source's answer in one line for the audit record: `mdm: compliant=true,
    /// os=Windows; edr: unavailable: timeout`; `-` when no source was asked.
    pub fn describe(&self) -> String {
        if self.sources.is_empty() {
            return "-".into();
        }
        self.sources
            .iter()
            .map(|s| format!("{}: {}", s.source, s.answer.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Posture {
    /// The facts present, `name=value`, comma-separated (`no facts` when none).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        self.describe_into(&mut out);
        out
    }

    /// [`Posture::describe`], appended to `out` (on every authentication that asks posture).
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write as _;
        let start = out.len();
        let mut put = |k: &str, v: &dyn std::fmt::Display| {
            if out.len() > start {
                out.push_str(", ");
            }
            let _ = write!(out, "{k}={v}");
        };
        if let Some(b) = self.compliant {
            put("compliant", &b);
        }
        if let Some(b) = self.managed {
            put("managed", &b);
        }
        if let Some(n) = self.risk_score {
            put("risk_score", &n);
        }
        if let Some(v) = &self.os {
            put("os", v);
        }
        if let Some(v) = &self.os_version {
            put("os_version", v);
        }
        if let Some(t) = self.last_seen {
            put("last_seen", &t);
        }
        for (k, v) in &self.extra {
            put(k, v);
        }
        if out.len() == start {
            out.push_str("no facts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssid(called: &str) -> Option<String> {
        let attrs = [Attribute {
            ty: AttrType::CalledStationId,
            value: called.as_bytes(),
        }];
        RequestFacts::of(&attrs, "c", &Dictionary::builtin().unwrap(), "").ssid
    }

    #[test]
    fn the_ssid_follows_the_access_point_mac_in_any_notation() {
        assert_eq!(ssid("AA-BB-CC-DD-EE-FF:Corp").as_deref(), Some("Corp"));
        assert_eq!(ssid("AA:BB:CC:DD:EE:FF:Corp").as_deref(), Some("Corp"));
        assert_eq!(ssid("aabb.ccdd.eeff:Corp").as_deref(), Some("Corp"));
        assert_eq!(
            ssid("AABBCCDDEEFF:Corp:Guest").as_deref(),
            Some("Corp:Guest")
        );
        // Wired ports: a MAC and no SSID.
        assert_eq!(ssid("00:11:22:33:44:55"), None);
        assert_eq!(ssid("00-11-22-33-44-55"), None);
        assert_eq!(ssid("AA-BB-CC-DD-EE-FF:"), None);
    }
}
