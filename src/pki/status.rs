//! What a revocation check found, as types: the state of one certificate and where the
//! answer came from. A leaf of the module tree: OCSP, CRL and the checker all speak it, and
//! it imports none of them.

use std::fmt;

/// The revocation state of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not revoked.
    Good,
    /// Revoked at a time (Unix seconds) for a reason.
    Revoked {
        /// When.
        at: i64,
        /// CRLReason, if given.
        reason: Option<String>,
    },
    /// The responder does not know the certificate.
    Unknown,
    /// No responder could be reached or gave a usable answer (timeout, connection refused,
    /// HTTP error, tryLater, stale): soft-fail may let the device on.
    NoAnswer(String),
    /// A responder answered with something that failed verification (malformed, badly
    /// signed, signed by someone not authorised, about another certificate, wrong nonce):
    /// an attack or a broken responder. Always a Reject, whatever soft-fail says.
    Invalid(String),
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fetched from an OCSP responder for this authentication.
    Ocsp,
    /// An OCSP answer cached from an earlier authentication.
    Cache,
    /// A CRL (OCSP not configured).
    Crl,
    /// A CRL, because OCSP is configured and gave no answer: the audit line shows that the
    /// device was let on by a CRL (fresh to its nextUpdate) rather than a nonce-fresh OCSP
    /// answer.
    CrlAfterOcsp,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ocsp => "ocsp",
            Self::Cache => "cache",
            Self::Crl => "crl",
            Self::CrlAfterOcsp => "crl, OCSP gave no answer",
        })
    }
}

/// A check's result, for the decision and the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The state.
    pub state: State,
    /// Where it came from.
    pub source: Source,
}

impl Report {
    /// One phrase for the audit line, e.g. `good (ocsp)` or `revoked at 1704067200
    /// (KeyCompromise) (cache)`.
    pub fn describe(&self) -> String {
        let what = match &self.state {
            State::Good => "good".to_owned(),
            State::Revoked { at, reason } => {
                format!(
                    "revoked at {at}{}",
                    reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            }
            State::Unknown => "unknown".to_owned(),
            State::NoAnswer(e) => format!("no answer: {e}"),
            State::Invalid(e) => format!("invalid answer: {e}"),
        };
        format!("{what} ({})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_phrases_are_the_ones_admins_grep_for() {
        let r = |state, source| Report { state, source }.describe();
        assert_eq!(r(State::Good, Source::Cache), "good (cache)");
        assert_eq!(r(State::Good, Source::Ocsp), "good (ocsp)");
        assert_eq!(
            r(
                State::Revoked {
                    at: 1_704_067_200,
                    reason: Some("KeyCompromise".into())
                },
                Source::Crl
            ),
            "revoked at 1704067200 (KeyCompromise) (crl)"
        );
        assert_eq!(
            r(State::NoAnswer("timeout".into()), Source::CrlAfterOcsp),
            "no answer: timeout (crl, OCSP gave no answer)"
        );
    }
}
