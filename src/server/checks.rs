//! The check pipeline run after the TLS handshake and before the peer is told it succeeded:
//! identity from the certificate, then revocation, posture and policy (later issues fill in
//! those three; until then every verified certificate gets the configured VLAN).
//!
//! Whatever a stage returns, a backend failure is a Deny, never an Allow.

use crate::eap::{PeerInfo, Verdict};
use crate::tls::CertSummary;

/// The decision for one authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny, with the reason.
    pub verdict: Verdict,
    /// The end-entity certificate.
    pub cert: CertSummary,
    /// VLAN for an Allow.
    pub vlan: Option<String>,
}

/// Runs every check for a peer whose chain rustls has verified.
pub async fn run(peer: &PeerInfo, vlan: Option<&str>) -> Decision {
    let cert = peer
        .chain
        .first()
        .map(|c| CertSummary::of(c))
        .unwrap_or_default();
    if cert.identity.is_empty() {
        return Decision {
            verdict: Verdict::Deny("no_identity"),
            cert,
            vlan: None,
        };
    }
    // Revocation (OCSP/CRL), posture and policy stages plug in here.
    Decision {
        verdict: Verdict::Allow,
        cert,
        vlan: vlan.map(str::to_owned),
    }
}
