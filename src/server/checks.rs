//! The check pipeline run after the TLS handshake and before the peer is told it succeeded:
//! identity from the certificate, then revocation (OCSP, cached), then posture and policy
//! (later issues; until then every good certificate gets the configured VLAN).
//!
//! A backend failure is a Deny, never an Allow, unless the admin chose soft-fail for that
//! stage; a soft-failed check is flagged in the audit line.

use crate::config::Config;
use crate::eap::{PeerInfo, Verdict};
use crate::pki::revocation::{Report, State};
use crate::tls::CertSummary;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The decision for one authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny, with the reason.
    pub verdict: Verdict,
    /// The end-entity certificate.
    pub cert: CertSummary,
    /// VLAN for an Allow.
    pub vlan: Option<String>,
    /// Revocation result for the audit line ("off" when not checked).
    pub revocation: String,
}

/// Runs every check for a peer whose chain rustls has verified, at `now` (Unix seconds).
pub async fn run(peer: &PeerInfo, config: &Config, now: i64) -> Decision {
    let cert = peer
        .chain
        .first()
        .map(|c| CertSummary::of(c))
        .unwrap_or_default();
    let deny = |reason, cert, revocation| Decision {
        verdict: Verdict::Deny(reason),
        cert,
        vlan: None,
        revocation,
    };
    if cert.identity.is_empty() {
        return deny("no_identity", cert, "off".into());
    }
    let mut revocation = "off".to_owned();
    if let Some(checker) = &config.revocation {
        let Some(leaf) = peer.chain.first() else {
            return deny("revocation_unknown", cert, "no certificate".into());
        };
        let Ok((_, leaf_parsed)) = X509Certificate::from_der(leaf) else {
            return deny(
                "revocation_unknown",
                cert,
                "certificate does not parse".into(),
            );
        };
        let Some(issuer) = issuer_of(&leaf_parsed, peer, &config.anchors) else {
            return deny(
                "revocation_unknown",
                cert,
                "no issuer certificate to ask about".into(),
            );
        };
        let Ok((_, issuer_parsed)) = X509Certificate::from_der(&issuer) else {
            return deny("revocation_unknown", cert, "issuer does not parse".into());
        };
        let report: Report = checker
            .check(leaf, &leaf_parsed, &issuer, &issuer_parsed, now)
            .await;
        revocation = report.describe();
        match report.state {
            State::Good => {}
            State::Revoked { .. } => return deny("revoked", cert, revocation),
            State::Unknown | State::NoAnswer(_) if checker.soft_fail() => {
                revocation = format!("soft-failed: {revocation}");
            }
            State::Unknown | State::NoAnswer(_) => {
                return deny("revocation_unknown", cert, revocation)
            }
        }
    }
    // Posture and policy stages plug in here.
    Decision {
        verdict: Verdict::Allow,
        cert,
        vlan: config.vlan.clone(),
        revocation,
    }
}

/// The certificate that issued the device's: the next one the device sent if it did, else
/// the configured CA that did.
fn issuer_of(leaf: &X509Certificate<'_>, peer: &PeerInfo, anchors: &[Vec<u8>]) -> Option<Vec<u8>> {
    let issuer_name = leaf.issuer().as_raw();
    let sent = peer.chain.iter().skip(1).map(|c| c.to_vec());
    sent.chain(anchors.iter().cloned()).find(|c| {
        X509Certificate::from_der(c).is_ok_and(|(_, i)| i.subject().as_raw() == issuer_name)
    })
}
