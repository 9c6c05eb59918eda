//! PURE: one decision from typed facts. `evaluate` reads no clock and does no I/O (`now`
//! is a fact); it returns the [`Decision`] and a [`Trace`] saying which rule decided and
//! why. The server gathers the facts and builds the reply from the decision.
//!
//! Before any rule, two refusals no policy can undo: a certificate that names no device,
//! and a revocation finding (revoked, invalid answer, unknown without soft-fail). Then the
//! admin's rules ([`load`], from `policies/`) decide, first match wins; without policy
//! files, [`Policy::builtin`] accepts every device into the `[authorization]` VLAN
//! (RFC 3580). A soft-failed revocation check reaches the rules, flagged.

pub mod cases;
pub mod facts;
pub mod load;
pub mod rules;

use std::borrow::Cow;
use std::sync::Arc;

use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};

pub use load::{PolicyError, PolicyFile};
pub use rules::{Action, Place, Rule};

use crate::radius::dictionary::Dictionary;

pub use facts::{
    Facts, Posture, PostureAnswer, PostureFacts, RequestFacts, RevocationFacts, RevocationOutcome,
    SourcePosture,
};

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
    /// An attribute by dictionary name.
    pub fn new(name: &str, tag: Option<u8>, value: &str) -> Self {
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
    /// The rule that decided (`identity` and `revocation` for the refusals before the
    /// rules, `default` for the built-in policy).
    pub rule: String,
    /// Where that rule is written, for an admin's rule.
    pub at: Option<Place>,
    /// The preset the deciding rule used (e.g. `quarantine`).
    pub preset: Option<String>,
    /// What the checks before the rules found, in order.
    pub checks: Vec<String>,
    /// Each rule tried before the deciding one: its index and the index of its first
    /// condition that failed.
    pub tried: Vec<(usize, usize)>,
}

/// The rules a decision runs, with the dictionary they were checked against, the time
/// zone their time conditions read, and their version.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Rules,
    /// Some rule reads request attributes from the dictionary list (`attr.*`,
    /// `nas_port_type` by name).
    reads_attributes: bool,
    /// The posture sources some rule reads.
    posture: PostureReads,
    /// Distinct conditions among the rules.
    distinct: usize,
    dictionary: Arc<Dictionary>,
    zone: TimeZone,
    version: String,
}

/// Which posture sources a policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostureReads {
    /// Some rule reads a fact across sources (`posture.compliant`): every source.
    pub any: bool,
    /// Sources some rule names (`posture.mdm.compliant`).
    pub named: std::collections::BTreeSet<String>,
}

impl PostureReads {
    /// Whether the source named `name` is read.
    pub fn needs(&self, name: &str) -> bool {
        self.any || self.named.contains(name)
    }
}

#[derive(Debug, Clone)]
enum Rules {
    /// Accept every device into this VLAN (`[authorization] vlan`), if any.
    Builtin(Option<String>),
    /// The admin's rules.
    Admin(Vec<Rule>),
}

impl Policy {
    /// The built-in policy with the `[authorization]` VLAN.
    pub fn builtin(vlan: Option<String>, dictionary: Arc<Dictionary>) -> Self {
        Self {
            rules: Rules::Builtin(vlan),
            reads_attributes: false,
            posture: PostureReads::default(),
            distinct: 0,
            dictionary,
            zone: TimeZone::UTC,
            version: "builtin".into(),
        }
    }

    /// Compiles and lints the admin's `files` (in load order) against `dictionary`;
    /// time conditions read the time in `zone`.
    ///
    /// # Errors
    /// Every error found, each with file:line and the rule.
    pub fn compile(
        files: &[PolicyFile],
        dictionary: Arc<Dictionary>,
        zone: TimeZone,
    ) -> Result<Self, Vec<PolicyError>> {
        let compiled = load::compile(files, &dictionary)?;
        let mut hash = Sha256::new();
        // The time zone and the dictionary decide too: a change of either is a new version.
        hash.update(zone.iana_name().unwrap_or("UTC").as_bytes());
        hash.update([0]);
        hash.update(dictionary.fingerprint());
        for f in files {
            hash.update(f.name.as_bytes());
            hash.update([0]);
            hash.update(f.text.as_bytes());
            hash.update([0]);
        }
        let version = hash
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let reads_attributes = compiled.rules.iter().any(|r| {
            r.conditions.iter().any(|c| {
                matches!(
                    c.field,
                    rules::Field::Attribute(_) | rules::Field::NasPortType
                )
            })
        });
        let mut posture = PostureReads::default();
        for c in compiled.rules.iter().flat_map(|r| &r.conditions) {
            if let rules::Field::Posture { source, .. } = &c.field {
                match source {
                    Some(name) => {
                        posture.named.insert(name.clone());
                    }
                    None => posture.any = true,
                }
            }
        }
        Ok(Self {
            reads_attributes,
            posture,
            distinct: compiled.distinct,
            rules: Rules::Admin(compiled.rules),
            dictionary,
            zone,
            version,
        })
    }

    /// The posture sources the rules read: only those are asked during an authentication.
    pub fn posture_reads(&self) -> &PostureReads {
        &self.posture
    }

    /// Whether the decision `trace` records read a posture fact: some condition evaluated
    /// on its way (the conditions of each rule tried up to the one that failed, and every
    /// condition of the rule that decided) is a posture condition. When none is, the
    /// decision is the same whatever the posture, so no one need wait for it.
    pub fn consulted_posture(&self, trace: &Trace) -> bool {
        let Rules::Admin(rules) = &self.rules else {
            return false;
        };
        let posture = |c: &rules::Condition| matches!(c.field, rules::Field::Posture { .. });
        let tried = trace.tried.iter().any(|&(i, failed)| {
            rules
                .get(i)
                .is_some_and(|r| r.conditions.iter().take(failed + 1).any(posture))
        });
        tried
            || trace.at.as_ref().is_some_and(|at| {
                rules
                    .iter()
                    .find(|r| r.at == *at && r.name == trace.rule)
                    .is_some_and(|r| r.conditions.iter().any(posture))
            })
    }

    /// The version: a hash of the policy files' names and contents (`builtin` without).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The dictionary the reply attributes were checked against (and are encoded with).
    pub fn dictionary(&self) -> &Arc<Dictionary> {
        &self.dictionary
    }

    /// The time zone of time conditions.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The admin's rules, in order (none for the built-in policy).
    pub fn rules(&self) -> &[Rule] {
        match &self.rules {
            Rules::Builtin(_) => &[],
            Rules::Admin(r) => r,
        }
    }
}

/// Decides about one authenticated device.
pub fn evaluate(policy: &Policy, facts: &Facts) -> (Decision, Trace) {
    let mut trace = Trace::default();
    if let Some(d) = refusal(facts, &mut trace) {
        return (d, trace);
    }
    match &policy.rules {
        Rules::Builtin(vlan) => (builtin(vlan.as_deref(), &mut trace), trace),
        Rules::Admin(rules) => {
            // Rules match on names: a certificate some of whose names were not read (too
            // many, or in an unreadable string type) could slip past a rule refusing one.
            if facts.cert.incomplete {
                trace.checks.push(
                    "names: the certificate has more names of a kind than are read, or a \
                     name that does not decode"
                        .into(),
                );
                trace.rule = "identity".into();
                let d = Decision::Reject {
                    reason: Cow::Borrowed("certificate_names_incomplete"),
                    rule: "identity".into(),
                };
                return (d, trace);
            }
            // Likewise a request holding more attribute values than are kept, for rules
            // reading attributes by name.
            if facts.first.incomplete && policy.reads_attributes {
                trace.checks.push(
                    "attributes: the request holds more attribute values than are read".into(),
                );
                trace.rule = "identity".into();
                let d = Decision::Reject {
                    reason: Cow::Borrowed("request_attributes_incomplete"),
                    rule: "identity".into(),
                };
                return (d, trace);
            }
            let mut memo = vec![0u8; policy.distinct];
            for (i, rule) in rules.iter().enumerate() {
                if let Some(failed) = rule.first_failed(facts, &policy.zone, &mut memo) {
                    trace.tried.push((i, failed));
                    continue;
                }
                trace.rule.clone_from(&rule.name);
                trace.at = Some(rule.at.clone());
                let decision = match &rule.action {
                    Action::Accept { reply, preset } => {
                        trace.preset.clone_from(preset);
                        Decision::Accept {
                            reply: reply.clone(),
                        }
                    }
                    Action::Reject(reason) => Decision::Reject {
                        reason: Cow::Owned(reason.clone()),
                        rule: rule.name.clone(),
                    },
                };
                return (decision, trace);
            }
            // The linter refuses a policy without a default rule; should one get here, no
            // rule means no access.
            trace.rule = "no_rule".into();
            let d = Decision::Reject {
                reason: Cow::Borrowed("no_rule_matched"),
                rule: "no_rule".into(),
            };
            (d, trace)
        }
    }
}

/// The refusals before any rule: a certificate naming no device, a revocation finding.
fn refusal(facts: &Facts, trace: &mut Trace) -> Option<Decision> {
    let reject = |trace: &mut Trace, rule: &str, reason: &'static str| {
        trace.rule = rule.to_owned();
        Some(Decision::Reject {
            reason: Cow::Borrowed(reason),
            rule: rule.to_owned(),
        })
    };
    if facts.cert.identity().is_empty() {
        trace
            .checks
            .push("identity: the certificate has no CN and no DNS or email SAN".into());
        return reject(trace, "identity", "no_identity");
    }
    trace
        .checks
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
        .checks
        .push(format!("revocation: {}", revocation.detail));
    match refused {
        Some(reason) => reject(trace, "revocation", reason),
        None => None,
    }
}

fn builtin(vlan: Option<&str>, trace: &mut Trace) -> Decision {
    trace.rule = "default".into();
    let reply = vlan.map_or_else(Vec::new, |v| {
        trace.checks.push(format!("default: accept into VLAN {v}"));
        // RFC 3580 §3.31: VLAN assignment on RFC 2868 tunnel attributes, tag 0.
        vec![
            ReplyAttribute::new("Tunnel-Type", Some(0), "VLAN"),
            ReplyAttribute::new("Tunnel-Medium-Type", Some(0), "IEEE-802"),
            ReplyAttribute::new("Tunnel-Private-Group-Id", Some(0), v),
        ]
    });
    if vlan.is_none() {
        trace.checks.push("default: accept, no VLAN".into());
    }
    Decision::Accept { reply }
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
            posture: PostureFacts::default(),
        }
    }

    fn dict() -> Arc<Dictionary> {
        Arc::new(Dictionary::builtin().unwrap())
    }

    fn vlan() -> Policy {
        Policy::builtin(Some("100".into()), dict())
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
            &Policy::builtin(None, dict()),
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
        assert!(t.checks.iter().any(|s| s == "revocation: detail"), "{t:?}");
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

    #[test]
    fn admin_rules_refuse_a_certificate_whose_names_were_not_all_read() {
        let text =
            "[[rule]]\nname = \"guests\"\nwhen = { cert.ou = \"Guests\" }\nreject = \"guest\"\n\n\
                    [[rule]]\nname = \"default\"\naccept = true\n";
        let policy = Policy::compile(
            &[PolicyFile {
                name: "p.toml".into(),
                text: text.into(),
            }],
            dict(),
            TimeZone::UTC,
        )
        .unwrap();
        let mut f = facts("laptop", RevocationOutcome::Good);
        f.cert.incomplete = true;
        let (d, t) = evaluate(&policy, &f);
        assert_eq!(
            d,
            Decision::Reject {
                reason: "certificate_names_incomplete".into(),
                rule: "identity".into()
            }
        );
        assert_eq!(t.rule, "identity");
        // The built-in policy matches no names: it is unaffected.
        assert!(matches!(evaluate(&vlan(), &f).0, Decision::Accept { .. }));
    }
}
