//! The check pipeline run after the TLS handshake and before the peer is told it succeeded:
//! identity from the certificate, then revocation (OCSP, cached), then posture and policy
//! (later issues; until then every good certificate gets the configured VLAN).
//!
//! A backend failure is a Deny, never an Allow, unless the admin chose soft-fail for that
//! stage; a soft-failed check is flagged in the audit line.

use crate::config::{Config, Runtime};
use crate::eap::{PeerInfo, Verdict};
use crate::logsafe::Escaped;
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
pub async fn run(peer: &PeerInfo, config: &Config, runtime: &Runtime, now: i64) -> Decision {
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
    if let Some(checker) = &runtime.revocation {
        // The device certificate, then (if asked) each CA between it and the trust anchor,
        // each asked about with the CA that verifiably issued it: the path webpki checked,
        // never the certificates the device merely sent.
        let count = if checker.check_intermediates() {
            usize::MAX
        } else {
            1
        };
        let mut parts = Vec::new();
        let mut soft = false;
        for (i, (der, issuer)) in peer.path.issued().take(count).enumerate() {
            let report = match revocation_of(checker, der, issuer, now).await {
                Ok(r) => r,
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
                // A forged, mis-signed or mismatched answer is an attack or a broken
                // responder, never a reason to let the device on: no soft-fail.
                State::Invalid(_) => {
                    tracing::warn!(
                        alert = "revocation_answer_invalid",
                        cert.serial = %Escaped(&cert.serial),
                        cert.issuer = %Escaped(&cert.issuer),
                        revocation = %Escaped(&text),
                        "revocation answer failed verification: rejected"
                    );
                    return deny("revocation_invalid", cert, text);
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

/// The revocation state of one certificate of the verified path, issued by `issuer`.
async fn revocation_of(
    checker: &Checker,
    der: &[u8],
    issuer: &[u8],
    now: i64,
) -> Result<Report, &'static str> {
    let (_, parsed) = X509Certificate::from_der(der).map_err(|_| "certificate does not parse")?;
    let (_, issuer_parsed) =
        X509Certificate::from_der(issuer).map_err(|_| "issuer certificate does not parse")?;
    Ok(checker
        .check(der, &parsed, issuer, &issuer_parsed, now)
        .await)
}
