//! The facts one decision is made from, as types: the device certificate (from
//! [`crate::pki::facts`]), the requests that carried the conversation, revocation, the TLS
//! version, and `now`. Gathered once per authentication by the server; read here only.

use std::net::{IpAddr, Ipv6Addr};

pub use crate::pki::facts::{CertFacts, Sans};
use crate::pki::status::Source;

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
    /// Calling-Station-Id, normalised to `aa-bb-cc-dd-ee-ff` when it is a MAC address in
    /// any common format; otherwise as sent.
    pub calling_station: Option<String>,
    /// Framed-MTU.
    pub framed_mtu: Option<u32>,
    /// The EAP identity the device gave (first request only; empty in later ones).
    pub eap_identity: String,
    /// Every other attribute the dictionary names and can show as text, `(name, value)`,
    /// in packet order; encrypted ones, EAP payloads, State and authenticators never.
    pub attributes: Vec<(String, String)>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}
