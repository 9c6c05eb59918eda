//! From an authenticated peer to a decision: gather the facts (the certificate, the
//! requests, revocation from its source with a deadline, `now`), then run the policy.
//!
//! A fact source that fails or misses its deadline gives facts that say so ("unknown"),
//! never a pass: the policy refuses on them unless the admin chose soft-fail for that
//! source, and then the audit record says it was soft-failed.

use std::future::Future;
use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::Runtime;
use crate::eap::PeerInfo;
use crate::logsafe::Escaped;
use crate::pki::facts::{CertFacts, CertSummary};
use crate::pki::revocation::{Checker, Report, State};
use crate::policy::{
    self, Decision, Facts, RequestFacts, RevocationFacts, RevocationOutcome, Trace,
};
use crate::tls::VerifiedChain;

/// A source of facts that takes time (an OCSP responder, later an MDM API), made for one
/// authentication with what it is asked about: it is given a deadline, and says what its
/// facts are when the deadline passes first.
pub trait FactSource {
    /// What it finds.
    type Facts;
    /// How long it may take in all.
    fn deadline(&self) -> Duration;
    /// Finds the facts.
    fn gather(&self) -> impl Future<Output = Self::Facts> + Send + '_;
    /// The facts when the deadline passed first.
    fn late(&self) -> Self::Facts;
}

/// Revocation facts being gathered for a conversation since its device's certificate was
/// verified, before the handshake ended (see [`crate::eap::Session::take_early_peer`]).
/// Dropping it (the conversation ended another way) stops the work.
#[derive(Debug)]
pub struct Early {
    path: VerifiedChain,
    task: tokio::task::JoinHandle<RevocationFacts>,
}

impl Drop for Early {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Early {
    /// Starts checking `path` now, within the source's deadline, if revocation is on.
    pub fn start(runtime: &Runtime, path: VerifiedChain, now: i64) -> Option<Self> {
        let checker = runtime.revocation.clone()?;
        let for_task = path.clone();
        let task = tokio::spawn(async move {
            let source = Revocation {
                checker: &checker,
                path: &for_task,
                now,
            };
            gather(&source).await
        });
        Some(Self { path, task })
    }
}

/// Runs a source within its deadline.
pub async fn gather<S: FactSource>(source: &S) -> S::Facts {
    match tokio::time::timeout(source.deadline(), source.gather()).await {
        Ok(facts) => facts,
        Err(_) => source.late(),
    }
}

/// What was decided about an authenticated peer, with the facts and the trace.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The facts.
    pub facts: Facts,
    /// The decision.
    pub decision: Decision,
    /// How it was reached.
    pub trace: Trace,
}

impl Checked {
    /// The certificate fields the audit record and the log carry.
    pub fn cert(&self) -> CertSummary {
        self.facts.cert.summary()
    }
}

/// Gathers the facts about a peer whose chain rustls has verified, at `now` (Unix
/// seconds), and runs the policy on them.
pub async fn decide(
    peer: &PeerInfo,
    first: &RequestFacts,
    last: RequestFacts,
    runtime: &Runtime,
    early: Option<Early>,
    now: i64,
) -> Checked {
    let cert = CertFacts::of(&peer.chain);
    // Started while the handshake went on, for this very path: its answer (awaited within
    // the deadline it was started with).
    let started = early.filter(|e| e.path == peer.path);
    let revocation = match (&runtime.revocation, started) {
        (Some(_), Some(mut e)) => match (&mut e.task).await {
            Ok(facts) => facts,
            Err(_) => RevocationFacts {
                outcome: RevocationOutcome::Unknown {
                    why: "the revocation check was stopped".into(),
                },
                source: None,
                detail: "the revocation check was stopped".into(),
            },
        },
        (Some(checker), None) => {
            let source = Revocation {
                checker,
                path: &peer.path,
                now,
            };
            gather(&source).await
        }
        (None, _) => RevocationFacts::not_checked(),
    };
    let facts = Facts {
        now,
        cert,
        tls_version: peer.tls_version,
        first: first.clone(),
        last,
        revocation,
    };
    let (decision, trace) = policy::evaluate(&runtime.policy, &facts);
    Checked {
        facts,
        decision,
        trace,
    }
}

/// Revocation as a fact source: the device certificate, then (if asked) each CA between it
/// and the trust anchor, each asked about with the CA that verifiably issued it: the path
/// webpki checked, never the certificates the device merely sent.
pub struct Revocation<'a> {
    /// The checker (its responders, CRLs and caches).
    pub checker: &'a Checker,
    /// The path rustls verified.
    pub path: &'a VerifiedChain,
    /// Unix seconds.
    pub now: i64,
}

impl FactSource for Revocation<'_> {
    type Facts = RevocationFacts;

    /// Every certificate checked, each within the checker's own bound, plus a second.
    fn deadline(&self) -> Duration {
        let certs = if self.checker.check_intermediates() {
            u32::try_from(self.path.issued().count().max(1)).unwrap_or(u32::MAX)
        } else {
            1
        };
        self.checker
            .longest_check()
            .saturating_mul(certs)
            .saturating_add(Duration::from_secs(1))
    }

    fn gather(&self) -> impl Future<Output = RevocationFacts> + Send + '_ {
        revocation_facts(self.checker, self.path, self.now)
    }

    fn late(&self) -> RevocationFacts {
        let why = "the revocation check did not finish by its deadline".to_owned();
        no_answer(self.checker, why.clone(), why, None)
    }
}

/// What no usable answer means: soft-fail lets the device on, flagged; else unknown.
fn no_answer(
    checker: &Checker,
    why: String,
    detail: String,
    source: Option<crate::pki::status::Source>,
) -> RevocationFacts {
    if checker.soft_fail() {
        RevocationFacts {
            outcome: RevocationOutcome::SoftFailed { why },
            source,
            detail: format!("soft-failed: {detail}"),
        }
    } else {
        RevocationFacts {
            outcome: RevocationOutcome::Unknown { why },
            source,
            detail,
        }
    }
}

async fn revocation_facts(checker: &Checker, path: &VerifiedChain, now: i64) -> RevocationFacts {
    let count = if checker.check_intermediates() {
        usize::MAX
    } else {
        1
    };
    let mut parts = Vec::new();
    let mut soft: Option<String> = None;
    let mut source = None;
    for (i, (der, issuer)) in path.issued().take(count).enumerate() {
        let report = match revocation_of(checker, der, issuer, now).await {
            Ok(r) => r,
            Err(why) => {
                return RevocationFacts {
                    outcome: RevocationOutcome::Unknown { why: why.into() },
                    source,
                    detail: why.into(),
                }
            }
        };
        if i == 0 {
            source = Some(report.source);
        }
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
            State::Revoked { at, reason } => {
                return RevocationFacts {
                    outcome: RevocationOutcome::Revoked {
                        at,
                        reason,
                        intermediate: i > 0,
                    },
                    source,
                    detail: text,
                };
            }
            // A forged, mis-signed or mismatched answer is an attack or a broken
            // responder, never a reason to let the device on: no soft-fail.
            State::Invalid(why) => {
                let cert = CertSummary::of(der);
                tracing::warn!(
                    alert = "revocation_answer_invalid",
                    cert.serial = %Escaped(&cert.serial),
                    cert.issuer = %Escaped(&cert.issuer),
                    revocation = %Escaped(&text),
                    "revocation answer failed verification: rejected"
                );
                return RevocationFacts {
                    outcome: RevocationOutcome::Invalid { why },
                    source,
                    detail: text,
                };
            }
            State::Unknown | State::NoAnswer(_) if checker.soft_fail() => {
                soft.get_or_insert_with(|| text.clone());
            }
            State::Unknown | State::NoAnswer(_) => {
                return no_answer(checker, text.clone(), text, source);
            }
        }
        parts.push(text);
    }
    let detail = parts.join("; ");
    match soft {
        Some(why) => RevocationFacts {
            outcome: RevocationOutcome::SoftFailed { why },
            source,
            detail: format!("soft-failed: {detail}"),
        },
        None => RevocationFacts {
            outcome: RevocationOutcome::Good,
            source,
            detail,
        },
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
