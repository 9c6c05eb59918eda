//! PURE: one decision from typed facts. `evaluate` reads no clock and does no I/O (`now`
//! is a fact); it returns the [`Decision`] and a [`Trace`] saying which rule decided and
//! why. The server gathers the facts and builds the reply from the decision.
//!
//! Until admin policy files land, [`Policy::builtin`] is the one policy: refuse a
//! certificate that names no device, refuse on a revocation finding, accept everything
//! else with the `[authorization]` VLAN (RFC 3580), a soft-failed revocation check
//! accepted but flagged.

pub mod facts;

use std::borrow::Cow;

pub use facts::{Facts, RequestFacts, RevocationFacts, RevocationOutcome};

/// Why a device was refused: a stable label or an admin's text.
pub type Reason = crate::eap::Reason;

/// One reply attribute, by dictionary name (the server encodes it by its type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAttribute {
    /// Dictionary name, e.g. `Tunnel-Private-Group-Id`, `Filter-Id`, `Aruba-User-Role`.
    pub name: String,
    /// RFC 2868 tag, for attributes that carry one.
    pub tag: Option<u8>,
    /// The value as text: a string, a number or a VALUE name, an address.
    pub value: String,
}

impl ReplyAttribute {
    fn new(name: &str, tag: Option<u8>, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            tag,
            value: value.to_owned(),
        }
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Access-Accept with these attributes (besides User-Name, the keys and EAP-Success,
    /// which every Accept carries).
    Accept {
        /// Attributes, in order.
        reply: Vec<ReplyAttribute>,
    },
    /// Access-Reject.
    Reject {
        /// Why (audited, counted).
        reason: Reason,
        /// The rule that refused.
        rule: String,
    },
}

impl Decision {
    /// The VLAN an Accept assigns (its Tunnel-Private-Group-Id), for the audit record.
    pub fn vlan(&self) -> Option<&str> {
        match self {
            Self::Accept { reply } => reply
                .iter()
                .find(|a| a.name == "Tunnel-Private-Group-Id")
                .map(|a| a.value.as_str()),
            Self::Reject { .. } => None,
        }
    }
}

/// How the decision was reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The rule that decided.
    pub rule: String,
    /// What each rule looked at, in order.
    pub steps: Vec<String>,
}

/// The rules a decision runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// The built-in policy: accept every good certificate into `vlan`.
    Builtin {
        /// `[authorization] vlan`.
        vlan: Option<String>,
    },
}

impl Policy {
    /// The built-in policy with the `[authorization]` VLAN.
    pub fn builtin(vlan: Option<String>) -> Self {
        Self::Builtin { vlan }
    }
}

/// Decides about one authenticated device.
pub fn evaluate(policy: &Policy, facts: &Facts) -> (Decision, Trace) {
    match policy {
        Policy::Builtin { vlan } => builtin(vlan.as_deref(), facts),
    }
}

fn builtin(vlan: Option<&str>, facts: &Facts) -> (Decision, Trace) {
    let mut trace = Trace::default();
    let reject = |trace: &mut Trace, rule: &str, reason: &'static str| {
        trace.rule = rule.to_owned();
        Decision::Reject {
            reason: Cow::Borrowed(reason),
            rule: rule.to_owned(),
        }
    };
    if facts.cert.identity().is_empty() {
        trace
            .steps
            .push("identity: the certificate has no CN and no DNS or email SAN".into());
        let d = reject(&mut trace, "identity", "no_identity");
        return (d, trace);
    }
    trace
        .steps
        .push(format!("identity: {}", facts.cert.identity()));
    let revocation = &facts.revocation;
    let refused = match &revocation.outcome {
        RevocationOutcome::Revoked {
            intermediate: false,
            ..
        } => Some("revoked"),
        RevocationOutcome::Revoked {
            intermediate: true, ..
        } => Some("intermediate_revoked"),
        RevocationOutcome::Invalid { .. } => Some("revocation_invalid"),
        RevocationOutcome::Unknown { .. } => Some("revocation_unknown"),
        RevocationOutcome::NotChecked
        | RevocationOutcome::Good
        | RevocationOutcome::SoftFailed { .. } => None,
    };
    trace
        .steps
        .push(format!("revocation: {}", revocation.detail));
    if let Some(reason) = refused {
        let d = reject(&mut trace, "revocation", reason);
        return (d, trace);
    }
    trace.rule = "default".into();
    let reply = vlan.map_or_else(Vec::new, |v| {
        trace.steps.push(format!("default: accept into VLAN {v}"));
        // RFC 3580 §3.31: VLAN assignment on RFC 2868 tunnel attributes, tag 0.
        vec![
            ReplyAttribute::new("Tunnel-Type", Some(0), "VLAN"),
            ReplyAttribute::new("Tunnel-Medium-Type", Some(0), "IEEE-802"),
            ReplyAttribute::new("Tunnel-Private-Group-Id", Some(0), v),
        ]
    });
    if vlan.is_none() {
        trace.steps.push("default: accept, no VLAN".into());
    }
    (Decision::Accept { reply }, trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::facts::CertFacts;

    fn facts(cn: &str, outcome: RevocationOutcome) -> Facts {
        Facts {
            now: 1_800_000_000,
            cert: CertFacts {
                subject_cn: if cn.is_empty() {
                    Vec::new()
                } else {
                    vec![cn.into()]
                },
                ..CertFacts::default()
            },
            tls_version: "1.3",
            first: RequestFacts::default(),
            last: RequestFacts::default(),
            revocation: RevocationFacts {
                outcome,
                source: None,
                detail: "detail".into(),
            },
        }
    }

    fn vlan() -> Policy {
        Policy::builtin(Some("100".into()))
    }

    #[test]
    fn a_good_device_is_accepted_into_the_vlan_on_tagged_tunnel_attributes() {
        let (d, t) = evaluate(&vlan(), &facts("laptop", RevocationOutcome::Good));
        assert_eq!(d.vlan(), Some("100"));
        let Decision::Accept { reply } = d else {
            panic!("{d:?}")
        };
        let names: Vec<_> = reply.iter().map(|a| (a.name.as_str(), a.tag)).collect();
        assert_eq!(
            names,
            [
                ("Tunnel-Type", Some(0)),
                ("Tunnel-Medium-Type", Some(0)),
                ("Tunnel-Private-Group-Id", Some(0))
            ]
        );
        assert_eq!(t.rule, "default");
        let (d, _) = evaluate(
            &Policy::builtin(None),
            &facts("laptop", RevocationOutcome::Good),
        );
        assert_eq!(d, Decision::Accept { reply: Vec::new() });
    }

    #[test]
    fn soft_failed_revocation_is_accepted_and_says_so_in_the_trace() {
        let soft = RevocationOutcome::SoftFailed {
            why: "timeout".into(),
        };
        let (d, t) = evaluate(&vlan(), &facts("laptop", soft));
        assert!(matches!(d, Decision::Accept { .. }));
        assert!(t.steps.iter().any(|s| s == "revocation: detail"), "{t:?}");
    }

    #[test]
    fn each_revocation_finding_and_a_nameless_certificate_are_refused_with_their_reason() {
        let cases = [
            (
                RevocationOutcome::Revoked {
                    at: 1,
                    reason: None,
                    intermediate: false,
                },
                "revoked",
            ),
            (
                RevocationOutcome::Revoked {
                    at: 1,
                    reason: None,
                    intermediate: true,
                },
                "intermediate_revoked",
            ),
            (
                RevocationOutcome::Invalid { why: "sig".into() },
                "revocation_invalid",
            ),
            (
                RevocationOutcome::Unknown { why: "down".into() },
                "revocation_unknown",
            ),
        ];
        for (outcome, want) in cases {
            let (d, t) = evaluate(&vlan(), &facts("laptop", outcome));
            assert_eq!(
                d,
                Decision::Reject {
                    reason: want.into(),
                    rule: "revocation".into()
                }
            );
            assert_eq!(t.rule, "revocation");
        }
        let (d, _) = evaluate(&vlan(), &facts("", RevocationOutcome::Good));
        assert!(matches!(d, Decision::Reject { reason, .. } if reason == "no_identity"));
    }

    #[test]
    fn the_same_facts_always_give_the_same_decision() {
        let f = facts("laptop", RevocationOutcome::Good);
        assert_eq!(evaluate(&vlan(), &f), evaluate(&vlan(), &f));
    }
}
