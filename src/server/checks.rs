//! The check pipeline run after the TLS handshake and before the peer is told it succeeded:
//! identity from the certificate, then revocation (OCSP, cached), then posture and policy
//! (later issues; until then every good certificate gets the configured VLAN).
//!
//! A backend failure is a Deny, never an Allow, unless the admin chose soft-fail for that
//! stage; a soft-failed check is flagged in the audit line.

use crate::config::Config;
use crate::eap::{PeerInfo, Verdict};
use crate::pki::revocation::{Checker, Report, State};
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
        // The device certificate, then (if asked) each intermediate it sent.
        let count = if checker.check_intermediates() {
            peer.chain.len()
        } else {
            1
        };
        let mut parts = Vec::new();
        let mut soft = false;
        for (i, der) in peer.chain.iter().take(count).enumerate() {
            let report = match revocation_of(checker, der, peer, &config.anchors, now).await {
                Ok(r) => r,
                // An intermediate that is itself a configured anchor needs no check.
                Err(_) if i > 0 && config.anchors.iter().any(|a| a.as_slice() == der.as_ref()) => {
                    continue
                }
                Err(why) => return deny("revocation_unknown", cert, why.into()),
            };
            let text = if i == 0 {
                report.describe()
            } else {
                format!(
                    "intermediate {}: {}",
                    CertSummary::of(der).subject,
                    report.describe()
                )
            };
            match report.state {
                State::Good => {}
                State::Revoked { .. } => {
                    let reason = if i == 0 {
                        "revoked"
                    } else {
                        "intermediate_revoked"
                    };
                    return deny(reason, cert, text);
                }
                State::Unknown | State::NoAnswer(_) if checker.soft_fail() => soft = true,
                State::Unknown | State::NoAnswer(_) => {
                    return deny("revocation_unknown", cert, text)
                }
            }
            parts.push(text);
        }
        revocation = parts.join("; ");
        if soft {
            revocation = format!("soft-failed: {revocation}");
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

/// The revocation state of one certificate of the device's chain.
async fn revocation_of(
    checker: &Checker,
    der: &[u8],
    peer: &PeerInfo,
    anchors: &[Vec<u8>],
    now: i64,
) -> Result<Report, &'static str> {
    let (_, parsed) = X509Certificate::from_der(der).map_err(|_| "certificate does not parse")?;
    let (issuer, issuer_parsed) =
        issuer_of(&parsed, peer, anchors).ok_or("no issuer certificate to ask about")?;
    Ok(checker
        .check(der, &parsed, issuer, &issuer_parsed, now)
        .await)
}

/// The certificate that issued the device's: the next one the device sent if it did, else
/// the configured CA that did.
fn issuer_of<'a>(
    leaf: &X509Certificate<'_>,
    peer: &'a PeerInfo,
    anchors: &'a [Vec<u8>],
) -> Option<(&'a [u8], X509Certificate<'a>)> {
    let issuer_name = leaf.issuer().as_raw();
    let sent = peer.chain.iter().skip(1).map(AsRef::as_ref);
    sent.chain(anchors.iter().map(Vec::as_slice)).find_map(|c| {
        let (_, i) = X509Certificate::from_der(c).ok()?;
        (i.subject().as_raw() == issuer_name).then_some((c, i))
    })
}
