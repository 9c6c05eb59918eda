//! Admin-written expectations of a policy (`policies/tests/*.toml`): a device (its
//! certificate, as a PEM file or as facts), a request (attributes by dictionary name) and
//! what the policy must answer (rule, VLAN, reject reason, attributes). `anchord check`,
//! `anchord policy test` and every reload run them, so a change that breaks one is refused
//! before it goes live.
//!
//! ```toml
//! [[case]]
//! name = "staff laptop on Corp"
//! cert = { cn = "laptop-1", ou = "Staff" }
//! request = { Called-Station-Id = "AA-BB-CC-DD-EE-FF:Corp" }
//! expect = { rule = "staff", vlan = "100" }
//! ```

use rustls::pki_types::CertificateDer;

use super::facts::{
    CertFacts, Facts, Posture, PostureAnswer, PostureFacts, RequestFacts, RevocationFacts,
    RevocationOutcome, SourcePosture,
};
use super::load::{parse_attribute, parse_toml, Node, PolicyError, PolicyFile, Value};
use super::rules::Place;
use super::{evaluate, Decision, Policy, ReplyAttribute};
use crate::radius::dictionary::Dictionary;
use crate::radius::packet::Attribute;
use crate::radius::AttrType;

/// When a case that gives no `now` is decided: Wednesday 7 January 2026, 12:00 UTC.
pub const DEFAULT_NOW: i64 = 1_767_787_200;

/// One expectation.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// Where it is written.
    pub at: Place,
    /// The facts the policy is run on.
    pub facts: Facts,
    /// What it must answer.
    pub expect: Expect,
}

/// What a case expects; only what is given is checked.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The rule that decides.
    pub rule: Option<String>,
    /// Accept (true) or reject (false).
    pub accept: Option<bool>,
    /// The VLAN of the Accept (its Tunnel-Private-Group-Id).
    pub vlan: Option<String>,
    /// The reject reason.
    pub reject: Option<String>,
    /// The preset the rule used.
    pub preset: Option<String>,
    /// Attributes the Accept must carry (among others).
    pub attributes: Vec<ReplyAttribute>,
}

/// A case the policy fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The case.
    pub case: String,
    /// Where it is written.
    pub at: Place,
    /// What differed.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: case `{}`: {}", self.at, self.case, self.message)
    }
}

/// Reads one file of cases. `load_cert` reads a PEM file named in a case (relative to the
/// case file) into its chain. A case that gives no `now` is decided at [`DEFAULT_NOW`], so an
/// expectation never depends on when it runs (a reload at 02:00 must not fail where one at
/// 10:00 passed).
///
/// # Errors
/// Every error, with file:line and the case.
pub fn parse(
    file: &PolicyFile,
    load_cert: &mut dyn FnMut(&str) -> Result<Vec<CertificateDer<'static>>, String>,
    dictionary: &Dictionary,
) -> Result<Vec<Case>, Vec<PolicyError>> {
    let root = parse_toml(&file.name, &file.text).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut cases = Vec::new();
    let mut err = |at: &Place, case: Option<&str>, message: String| {
        errors.push(PolicyError {
            at: at.clone(),
            rule: case.map(|c| format!("case {c}")),
            message,
        });
    };
    let Value::Table(top) = &root.value else {
        return Ok(Vec::new());
    };
    for (key, node) in top {
        if key != "case" {
            err(
                &node.at,
                None,
                format!("unknown key `{key}` (expected [[case]])"),
            );
            continue;
        }
        let Value::Array(items) = &node.value else {
            err(&node.at, None, "`case` must be [[case]] tables".into());
            continue;
        };
        for item in items {
            match case(item, load_cert, dictionary, DEFAULT_NOW) {
                Ok(c) => cases.push(c),
                Err((at, message)) => {
                    let name = item.get("name").and_then(Node::as_str);
                    err(&at, name, message);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

type CaseError = (Place, String);

fn case(
    node: &Node,
    load_cert: &mut dyn FnMut(&str) -> Result<Vec<CertificateDer<'static>>, String>,
    dictionary: &Dictionary,
    default_now: i64,
) -> Result<Case, CaseError> {
    let name = node
        .get("name")
        .and_then(Node::as_str)
        .ok_or_else(|| (node.at.clone(), "a case needs a `name`".to_owned()))?
        .to_owned();
    let mut now = default_now;
    let mut cert = None;
    let mut request = Vec::new();
    let mut identity = None;
    let mut client = "test".to_owned();
    let mut revocation = RevocationOutcome::Good;
    let mut tls_version = "1.3";
    let mut posture = PostureFacts::default();
    let mut expect = None;
    let Value::Table(entries) = &node.value else {
        return Err((node.at.clone(), "a case is a table".into()));
    };
    for (key, v) in entries {
        let bad = |what: &str| (v.at.clone(), format!("`{key}` {what}, not {v}"));
        match key.as_str() {
            "name" | "description" => {}
            "now" => {
                let text = match &v.value {
                    Value::Str(s) | Value::Datetime(s) => s.clone(),
                    _ => return Err(bad("is a time like 2026-12-02T10:00:00Z")),
                };
                now = text
                    .parse::<jiff::Timestamp>()
                    .map_err(|e| bad(&format!("is a time like 2026-12-02T10:00:00Z ({e})")))?
                    .as_second();
            }
            "cert" => cert = Some(v.clone()),
            "request" => {
                let Value::Table(attrs) = &v.value else {
                    return Err(bad("is a table of attributes by dictionary name"));
                };
                for (attr, value) in attrs {
                    let text = match &value.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(n) => n.to_string(),
                        _ => {
                            return Err((value.at.clone(), format!("`{attr}`: a string or number")))
                        }
                    };
                    request.push(
                        request_attribute(dictionary, attr, &text)
                            .map_err(|e| (value.at.clone(), e))?,
                    );
                }
            }
            "identity" => identity = Some(v.as_str().ok_or_else(|| bad("is a string"))?.to_owned()),
            "client" => client = v.as_str().ok_or_else(|| bad("is a string"))?.to_owned(),
            "tls_version" => {
                tls_version = match v.as_str() {
                    Some("1.2") => "1.2",
                    Some("1.3") => "1.3",
                    _ => return Err(bad("is \"1.2\" or \"1.3\"")),
                };
            }
            "revocation" => {
                revocation = match v.as_str() {
                    Some("good") => RevocationOutcome::Good,
                    Some("not_checked") => RevocationOutcome::NotChecked,
                    Some("soft_failed") => RevocationOutcome::SoftFailed { why: "test".into() },
                    Some("revoked") => RevocationOutcome::Revoked {
                        at: 0,
                        reason: None,
                        intermediate: false,
                    },
                    Some("unknown") => RevocationOutcome::Unknown { why: "test".into() },
                    Some("invalid") => RevocationOutcome::Invalid { why: "test".into() },
                    _ => {
                        return Err(bad(
                            "is good, soft_failed, not_checked, revoked, unknown or invalid",
                        ))
                    }
                };
            }
            "posture" => posture = posture_facts(v)?,
            "expect" => expect = Some(expectation(v)?),
            other => {
                return Err((
                    v.at.clone(),
                    format!(
                        "unknown key `{other}` (expected name, cert, request, identity, client, \
                         revocation, tls_version, posture, now, expect)"
                    ),
                ))
            }
        }
    }
    let cert = match cert {
        None => {
            return Err((
                node.at.clone(),
                "a case needs a `cert` (a PEM file or facts)".into(),
            ))
        }
        Some(c) => match &c.value {
            Value::Str(path) => {
                let chain =
                    load_cert(path).map_err(|e| (c.at.clone(), format!("cert {path:?}: {e}")))?;
                CertFacts::of(&chain)
            }
            Value::Table(_) => cert_facts(&c, now)?,
            _ => {
                return Err((
                    c.at.clone(),
                    "`cert` is a PEM file name or a table of facts".into(),
                ))
            }
        },
    };
    let expect = expect.ok_or_else(|| (node.at.clone(), "a case needs an `expect`".to_owned()))?;
    let identity = identity.unwrap_or_else(|| cert.identity().to_owned());
    let attrs: Vec<Attribute<'_>> = request
        .iter()
        .map(|(ty, v)| Attribute { ty: *ty, value: v })
        .collect();
    let first = RequestFacts::of(&attrs, &client, dictionary, &identity);
    let last = RequestFacts::of(&attrs, &client, dictionary, "");
    let detail = revocation.label().to_owned();
    Ok(Case {
        name,
        at: node.at.clone(),
        facts: Facts {
            now,
            cert,
            tls_version,
            first,
            last,
            revocation: RevocationFacts {
                outcome: revocation,
                source: None,
                detail,
            },
            posture,
        },
        expect,
    })
}

/// A request attribute by dictionary name, encoded as a NAS would send it.
///
/// # Errors
/// An unknown name, a vendor attribute, a value that does not fit the type.
pub fn request_attribute(
    dictionary: &Dictionary,
    name: &str,
    value: &str,
) -> Result<(AttrType, Vec<u8>), String> {
    let (def, bytes) = dictionary.encode_value(name, None, value)?;
    if def.vendor != 0 {
        return Err(format!(
            "`{name}` is a vendor attribute: only standard ones can be given"
        ));
    }
    let code = u8::try_from(def.number).map_err(|_| format!("`{name}` has no one-octet type"))?;
    Ok((AttrType::from_code(code), bytes))
}

fn strings(n: &Node) -> Option<Vec<String>> {
    match &n.value {
        Value::Str(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn cert_facts(node: &Node, now: i64) -> Result<CertFacts, CaseError> {
    let mut c = CertFacts {
        not_before: now - 86_400,
        not_after: now + 365 * 86_400,
        ..CertFacts::default()
    };
    let Value::Table(entries) = &node.value else {
        return Ok(c);
    };
    for (key, v) in entries {
        if key == "days_left" {
            match v.value {
                Value::Int(d) => c.not_after = now + d * 86_400 + 3_600,
                _ => return Err((v.at.clone(), "`days_left` is a number".into())),
            }
            continue;
        }
        let list = strings(v).ok_or_else(|| {
            (
                v.at.clone(),
                format!("`{key}` is a string or a list of strings"),
            )
        })?;
        let one = || list.first().cloned().unwrap_or_default();
        match key.as_str() {
            "cn" => c.subject_cn = list,
            "o" => c.subject_o = list,
            "ou" => c.subject_ou = list,
            "subject" => c.subject = one(),
            "issuer" => c.issuer = one(),
            "serial" => c.serial = one().to_ascii_lowercase(),
            "san_dns" => c.san.dns = list,
            "san_email" => c.san.email = list,
            "san_uri" => c.san.uri = list,
            "san_upn" => c.san.upn = list,
            "eku" => c.ekus = list,
            "policy" => c.policies = list,
            other => {
                return Err((
                    v.at.clone(),
                    format!(
                        "unknown certificate fact `{other}` (cn, o, ou, subject, issuer, serial, \
                         san_dns, san_email, san_uri, san_upn, eku, policy, days_left)"
                    ),
                ))
            }
        }
    }
    if c.subject.is_empty() {
        c.subject = c
            .subject_cn
            .first()
            .map(|cn| format!("CN={cn}"))
            .unwrap_or_default();
    }
    c.first_san_name = c.san.dns.first().or(c.san.email.first()).cloned();
    Ok(c)
}

fn posture_facts(node: &Node) -> Result<PostureFacts, CaseError> {
    let Value::Table(sources) = &node.value else {
        return Err((node.at.clone(), "`posture` is a table of sources".into()));
    };
    let mut out = PostureFacts::default();
    for (source, v) in sources {
        let answer = match &v.value {
            Value::Str(s) if s == "unavailable" => PostureAnswer::Unavailable("test".into()),
            Value::Str(s) if s == "unknown_device" => PostureAnswer::UnknownDevice("test".into()),
            Value::Table(facts) => {
                let mut p = Posture::default();
                for (k, f) in facts {
                    let bad = || {
                        (
                            f.at.clone(),
                            format!("posture fact `{k}`: wrong type ({f})"),
                        )
                    };
                    match (k.as_str(), &f.value) {
                        ("compliant", Value::Bool(b)) => p.compliant = Some(*b),
                        ("managed", Value::Bool(b)) => p.managed = Some(*b),
                        #[allow(clippy::cast_precision_loss, reason = "scores are small")]
                        ("risk_score", Value::Int(n)) => p.risk_score = Some(*n as f64),
                        ("risk_score", Value::Float(n)) => p.risk_score = Some(*n),
                        ("os", Value::Str(s)) => p.os = Some(s.clone()),
                        ("os_version", Value::Str(s)) => p.os_version = Some(s.clone()),
                        ("last_seen", Value::Int(n)) => p.last_seen = Some(*n),
                        (k, Value::Str(s)) => p.extra.push((k.to_owned(), s.clone())),
                        _ => return Err(bad()),
                    }
                }
                PostureAnswer::Known(p)
            }
            _ => {
                return Err((
                    v.at.clone(),
                    format!(
                        "posture source `{source}`: a table of facts, \"unavailable\" or \
                         \"unknown_device\""
                    ),
                ))
            }
        };
        out.sources.push(SourcePosture {
            source: source.clone(),
            answer,
        });
    }
    Ok(out)
}

fn expectation(node: &Node) -> Result<Expect, CaseError> {
    let Value::Table(entries) = &node.value else {
        return Err((node.at.clone(), "`expect` is a table".into()));
    };
    let mut e = Expect::default();
    for (key, v) in entries {
        let text = || {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| (v.at.clone(), format!("`expect.{key}` is a string")))
        };
        match key.as_str() {
            "rule" => e.rule = Some(text()?),
            "reject" => {
                e.reject = Some(text()?);
                e.accept = Some(false);
            }
            "accept" => match v.value {
                Value::Bool(b) => e.accept = Some(b),
                _ => return Err((v.at.clone(), "`expect.accept` is true or false".into())),
            },
            "vlan" => {
                e.vlan = Some(match &v.value {
                    Value::Int(n) => n.to_string(),
                    _ => text()?,
                });
                e.accept = Some(true);
            }
            "preset" => {
                e.preset = Some(text()?);
                e.accept = Some(true);
            }
            "attributes" => {
                e.accept = Some(true);
                for a in strings(v).ok_or_else(|| {
                    (
                        v.at.clone(),
                        "`expect.attributes` is a list of strings".to_owned(),
                    )
                })? {
                    e.attributes
                        .push(parse_attribute(&a).map_err(|m| (v.at.clone(), m))?);
                }
            }
            other => {
                return Err((
                    v.at.clone(),
                    format!(
                    "unknown key `expect.{other}` (rule, accept, reject, vlan, preset, attributes)"
                ),
                ))
            }
        }
    }
    // Keys that disagree (`vlan` with `accept = false`, `reject` with `vlan`) would pass or
    // fail by their order: refused.
    let accepting = entries
        .iter()
        .any(|(k, _)| matches!(k.as_str(), "vlan" | "preset" | "attributes"));
    let explicit = entries
        .iter()
        .find(|(k, _)| k == "accept")
        .map(|(_, v)| &v.value);
    if (accepting && (e.reject.is_some() || matches!(explicit, Some(Value::Bool(false)))))
        || (e.reject.is_some() && matches!(explicit, Some(Value::Bool(true))))
    {
        return Err((
            node.at.clone(),
            "`expect` contradicts itself: vlan, preset and attributes expect an accept, \
             reject a reject"
                .into(),
        ));
    }
    if e.rule.is_none() && e.accept.is_none() {
        return Err((
            node.at.clone(),
            "`expect` checks nothing: give rule, accept, reject, vlan, preset or attributes".into(),
        ));
    }
    Ok(e)
}

/// Runs every case against `policy`; the failures, in order.
pub fn run(policy: &Policy, cases: &[Case]) -> Vec<Failure> {
    let mut failures = Vec::new();
    for c in cases {
        let (decision, trace) = evaluate(policy, &c.facts);
        let mut wrong = Vec::new();
        let e = &c.expect;
        if let Some(rule) = &e.rule {
            if &trace.rule != rule {
                wrong.push(format!("expected rule `{rule}`, got `{}`", trace.rule));
            }
        }
        let (accepted, reply, reason) = match &decision {
            Decision::Accept { reply } => (true, reply.as_slice(), None),
            Decision::Reject { reason, .. } => (false, &[][..], Some(reason.as_ref())),
        };
        if let Some(accept) = e.accept {
            if accept != accepted {
                let got = reason.map_or_else(|| "accept".to_owned(), |r| format!("reject ({r})"));
                wrong.push(format!(
                    "expected {}, got {got}",
                    if accept { "accept" } else { "reject" }
                ));
            }
        }
        if let (Some(want), Some(got)) = (&e.reject, reason) {
            if want != got {
                wrong.push(format!("expected reject reason `{want}`, got `{got}`"));
            }
        }
        if let Some(vlan) = &e.vlan {
            if accepted && decision.vlan() != Some(vlan.as_str()) {
                wrong.push(format!(
                    "expected VLAN {vlan}, got {}",
                    decision.vlan().unwrap_or("none")
                ));
            }
        }
        if let Some(preset) = &e.preset {
            if trace.preset.as_ref() != Some(preset) {
                wrong.push(format!(
                    "expected preset `{preset}`, got {}",
                    trace.preset.as_deref().unwrap_or("none")
                ));
            }
        }
        for want in &e.attributes {
            let found = reply.iter().any(|a| {
                a.name.eq_ignore_ascii_case(&want.name)
                    && a.value == want.value
                    && (want.tag.is_none() || a.tag == want.tag)
            });
            if accepted && !found {
                wrong.push(format!("expected attribute {} = {}", want.name, want.value));
            }
        }
        if !wrong.is_empty() {
            failures.push(Failure {
                case: c.name.clone(),
                at: c.at.clone(),
                message: wrong.join("; "),
            });
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn cases(text: &str) -> Result<Vec<Case>, Vec<PolicyError>> {
        let file = PolicyFile {
            name: "t.toml".into(),
            text: text.into(),
        };
        let mut no_files = |_: &str| Err("no files here".to_owned());
        parse(&file, &mut no_files, &Dictionary::builtin().unwrap())
    }

    fn policy(text: &str) -> Policy {
        Policy::compile(
            &[PolicyFile {
                name: "p.toml".into(),
                text: text.into(),
            }],
            Arc::new(Dictionary::builtin().unwrap()),
            jiff::tz::TimeZone::UTC,
        )
        .unwrap()
    }

    #[test]
    fn a_case_without_a_time_is_decided_at_a_fixed_one() {
        let c =
            cases("[[case]]\nname = \"c\"\ncert = { cn = \"a\" }\nexpect = { accept = true }\n")
                .unwrap();
        assert_eq!(c[0].facts.now, DEFAULT_NOW);
        // So a night-time rule cannot make start-up depend on the hour.
        let p = policy(
            "[[rule]]\nname = \"night\"\nwhen = { time = \"22:00-06:00\" }\nreject = \"night\"\n\n\
             [[rule]]\nname = \"default\"\naccept = true\n",
        );
        assert!(run(&p, &c).is_empty());
    }

    #[test]
    fn expected_attributes_fail_a_reject_and_an_empty_expectation_is_refused() {
        let p = policy("[[rule]]\nname = \"default\"\nreject = \"no\"\n");
        let c = cases(
            "[[case]]\nname = \"c\"\ncert = { cn = \"a\" }\n\
             expect = { attributes = [\"Filter-Id = x\"] }\n",
        )
        .unwrap();
        let failures = run(&p, &c);
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0]
                .message
                .contains("expected accept, got reject (no)"),
            "{failures:?}"
        );
        let e = cases("[[case]]\nname = \"c\"\ncert = { cn = \"a\" }\nexpect = {}\n").unwrap_err();
        assert!(e[0].message.contains("checks nothing"), "{e:?}");
        assert_eq!(e[0].at.line, 4);
    }

    #[test]
    fn case_serials_are_compared_as_rules_compare_them() {
        let p = policy(
            "[[rule]]\nname = \"stolen\"\nwhen = { cert.serial = \"8a01\" }\nreject = \"stolen\"\n\n\
             [[rule]]\nname = \"default\"\naccept = true\n",
        );
        let c = cases(
            "[[case]]\nname = \"c\"\ncert = { cn = \"a\", serial = \"00:8A:01\" }\n\
             expect = { reject = \"stolen\" }\n",
        )
        .unwrap();
        assert!(run(&p, &c).is_empty(), "{:?}", run(&p, &c));
    }

    #[test]
    fn contradictory_expectations_are_refused() {
        for expect in [
            "{ vlan = 10, accept = false }",
            "{ reject = \"x\", vlan = 10 }",
        ] {
            let e = cases(&format!(
                "[[case]]\nname = \"c\"\ncert = {{ cn = \"a\" }}\nexpect = {expect}\n"
            ))
            .unwrap_err();
            assert!(e[0].message.contains("contradicts"), "{expect}: {e:?}");
        }
    }
}
