//! Compiled rules: the conditions a rule tests (a [`Field`] of the facts and a
//! [`Matcher`]), what it does ([`Action`]), and first-match evaluation. Built by
//! [`super::load`] from the admin's files; nothing here reads a file or a clock.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use regex::Regex;

use super::facts::{Facts, Posture};
use super::ReplyAttribute;

/// Where something was written: `file:line`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The file, as named to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The kind of value a field has, which decides the matchers it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, possibly several values (any of them may match).
    Text,
    /// A number.
    Number,
    /// True or false.
    Bool,
    /// The time of day (`"08:00-18:00"`).
    TimeOfDay,
    /// The day of the week (`["mon-fri"]`).
    Weekday,
}

/// A posture fact, per source or across sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostureFact {
    /// `compliant`.
    Compliant,
    /// `managed`.
    Managed,
    /// `risk_score`.
    RiskScore,
    /// `os`.
    Os,
    /// `os_version`.
    OsVersion,
    /// `last_seen_age`: seconds since the last check-in.
    LastSeenAge,
    /// `unavailable`: no answer from the source (or from any), an unknown device included.
    Unavailable,
    /// `unknown_device`: the source (or any) answered, and does not know this device (no
    /// id could be taken from the certificate, or no single record for it).
    UnknownDevice,
    /// `extra.<name>`.
    Extra(String),
}

/// One fact a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `cert.cn`.
    CertCn,
    /// `cert.o`.
    CertO,
    /// `cert.ou`.
    CertOu,
    /// `cert.subject` (the whole DN).
    CertSubject,
    /// `cert.issuer` (the whole DN).
    CertIssuer,
    /// `cert.serial` (lowercase hex).
    CertSerial,
    /// `cert.san_dns`.
    CertSanDns,
    /// `cert.san_email`.
    CertSanEmail,
    /// `cert.san_uri`.
    CertSanUri,
    /// `cert.san_upn`.
    CertSanUpn,
    /// `cert.san_ip`.
    CertSanIp,
    /// `cert.policy` (certificate policy OIDs).
    CertPolicy,
    /// `cert.eku` (extended key usage OIDs).
    CertEku,
    /// `cert.days_left` (whole days to notAfter).
    CertDaysLeft,
    /// `client` (the `[[client]]` name).
    Client,
    /// `nas_ip` (NAS-IP-Address or NAS-IPv6-Address).
    NasIp,
    /// `nas_identifier`.
    NasIdentifier,
    /// `called_station` (Called-Station-Id as sent).
    CalledStation,
    /// `ssid` (from Called-Station-Id).
    Ssid,
    /// `calling_station` (the device MAC, any notation).
    CallingStation,
    /// `nas_port_type` (number or VALUE name).
    NasPortType,
    /// `nas_port_id`.
    NasPortId,
    /// `attr.<Name>`: any request attribute the dictionary names.
    Attribute(String),
    /// `identity`: the EAP identity.
    Identity,
    /// `identity_matches_cert`: the EAP identity is the certificate's CN or a SAN.
    IdentityMatchesCert,
    /// `revocation`: `good`, `soft_failed` or `not_checked`.
    Revocation,
    /// `tls_version`: `1.2` or `1.3`.
    TlsVersion,
    /// `time`: time of day in the policy's time zone.
    Time,
    /// `days`: day of the week in the policy's time zone.
    Days,
    /// `posture.<fact>` or `posture.<source>.<fact>`.
    Posture {
        /// The source, or any.
        source: Option<String>,
        /// The fact.
        fact: PostureFact,
    },
}

/// The names of the fields a policy may test, for error messages.
pub const FIELD_NAMES: &str = "cert.cn, cert.o, cert.ou, cert.subject, cert.issuer, cert.serial, \
     cert.san_dns, cert.san_email, cert.san_uri, cert.san_upn, cert.san_ip, cert.policy, \
     cert.eku, cert.days_left, client, nas_ip, nas_identifier, called_station, ssid, \
     calling_station, nas_port_type, nas_port_id, attr.<Dictionary-Name>, identity, \
     identity_matches_cert, revocation, tls_version, time, days, posture.<fact>, \
     posture.<source>.<fact>";

impl Field {
    /// The field a dotted path names (`cert.ou`, `attr.Aruba-Essid-Name`), or `None`.
    pub fn parse(path: &str) -> Option<Self> {
        Some(match path {
            "cert.cn" => Self::CertCn,
            "cert.o" => Self::CertO,
            "cert.ou" => Self::CertOu,
            "cert.subject" => Self::CertSubject,
            "cert.issuer" => Self::CertIssuer,
            "cert.serial" => Self::CertSerial,
            "cert.san_dns" => Self::CertSanDns,
            "cert.san_email" => Self::CertSanEmail,
            "cert.san_uri" => Self::CertSanUri,
            "cert.san_upn" => Self::CertSanUpn,
            "cert.san_ip" => Self::CertSanIp,
            "cert.policy" => Self::CertPolicy,
            "cert.eku" => Self::CertEku,
            "cert.days_left" => Self::CertDaysLeft,
            "client" => Self::Client,
            "nas_ip" => Self::NasIp,
            "nas_identifier" => Self::NasIdentifier,
            "called_station" => Self::CalledStation,
            "ssid" => Self::Ssid,
            "calling_station" => Self::CallingStation,
            "nas_port_type" => Self::NasPortType,
            "nas_port_id" => Self::NasPortId,
            "identity" => Self::Identity,
            "identity_matches_cert" => Self::IdentityMatchesCert,
            "revocation" => Self::Revocation,
            "tls_version" => Self::TlsVersion,
            "time" => Self::Time,
            "days" => Self::Days,
            _ => {
                if let Some(name) = path.strip_prefix("attr.").filter(|n| !n.is_empty()) {
                    return Some(Self::Attribute(name.to_owned()));
                }
                let rest = path.strip_prefix("posture.")?;
                let (source, fact) = match rest.split_once('.') {
                    Some(("extra", name)) => (None, format!("extra.{name}")),
                    Some((source, fact)) => (Some(source.to_owned()), fact.to_owned()),
                    None => (None, rest.to_owned()),
                };
                let fact = match fact.as_str() {
                    "compliant" => PostureFact::Compliant,
                    "managed" => PostureFact::Managed,
                    "risk_score" => PostureFact::RiskScore,
                    "os" => PostureFact::Os,
                    "os_version" => PostureFact::OsVersion,
                    "last_seen_age" => PostureFact::LastSeenAge,
                    "unavailable" => PostureFact::Unavailable,
                    "unknown_device" => PostureFact::UnknownDevice,
                    other => PostureFact::Extra(
                        other
                            .strip_prefix("extra.")
                            .filter(|n| !n.is_empty())?
                            .to_owned(),
                    ),
                };
                Self::Posture { source, fact }
            }
        })
    }

    /// What kind of value the field has.
    pub fn kind(&self) -> Kind {
        match self {
            Self::CertDaysLeft => Kind::Number,
            Self::IdentityMatchesCert => Kind::Bool,
            Self::Time => Kind::TimeOfDay,
            Self::Days => Kind::Weekday,
            Self::Posture { fact, .. } => match fact {
                PostureFact::Compliant
                | PostureFact::Managed
                | PostureFact::Unavailable
                | PostureFact::UnknownDevice => Kind::Bool,
                PostureFact::RiskScore | PostureFact::LastSeenAge => Kind::Number,
                PostureFact::Os | PostureFact::OsVersion | PostureFact::Extra(_) => Kind::Text,
            },
            _ => Kind::Text,
        }
    }

    /// Calls `f` with each text value of the field until it returns true; true if one did.
    fn any_text(&self, facts: &Facts, f: &mut dyn FnMut(&str) -> bool) -> bool {
        let many = |v: &[String], f: &mut dyn FnMut(&str) -> bool| v.iter().any(|s| f(s));
        let one = |v: Option<&str>, f: &mut dyn FnMut(&str) -> bool| v.is_some_and(f);
        let (cert, req) = (&facts.cert, &facts.first);
        match self {
            Self::CertCn => many(&cert.subject_cn, f),
            Self::CertO => many(&cert.subject_o, f),
            Self::CertOu => many(&cert.subject_ou, f),
            Self::CertSubject => f(&cert.subject),
            Self::CertIssuer => f(&cert.issuer),
            Self::CertSerial => f(&serial_key(&cert.serial)),
            Self::CertSanDns => many(&cert.san.dns, f),
            Self::CertSanEmail => many(&cert.san.email, f),
            Self::CertSanUri => many(&cert.san.uri, f),
            Self::CertSanUpn => many(&cert.san.upn, f),
            Self::CertSanIp => cert.san.ip.iter().any(|ip| f(&ip.to_string())),
            Self::CertPolicy => many(&cert.policies, f),
            Self::CertEku => many(&cert.ekus, f),
            Self::Client => f(&req.client),
            Self::NasIp => {
                req.nas_ip.is_some_and(|ip| f(&ip.to_string()))
                    || req.nas_ipv6.is_some_and(|ip| f(&ip.to_string()))
            }
            Self::NasIdentifier => one(req.nas_identifier.as_deref(), f),
            Self::CalledStation => one(req.called_station.as_deref(), f),
            Self::Ssid => one(req.ssid.as_deref(), f),
            Self::CallingStation => one(req.calling_station.as_deref(), f),
            Self::NasPortType => {
                req.nas_port_type.is_some_and(|n| f(&n.to_string()))
                    || one(req.attribute("NAS-Port-Type"), f)
            }
            Self::NasPortId => one(req.nas_port_id.as_deref(), f),
            Self::Attribute(name) => req
                .attributes
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .any(|(_, v)| f(v)),
            Self::Identity => f(&req.eap_identity),
            Self::Revocation => f(facts.revocation.outcome.label()),
            Self::TlsVersion => f(facts.tls_version),
            Self::Posture { source, fact } => {
                let text = |p: &Posture| -> Option<String> {
                    match fact {
                        PostureFact::Os => p.os.clone(),
                        PostureFact::OsVersion => p.os_version.clone(),
                        PostureFact::Extra(name) => p
                            .extra
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.clone()),
                        _ => None,
                    }
                };
                facts
                    .posture
                    .known(source.as_deref(), text)
                    .is_some_and(|v| f(&v))
            }
            Self::CertDaysLeft | Self::IdentityMatchesCert | Self::Time | Self::Days => false,
        }
    }

    fn number(&self, facts: &Facts) -> Option<f64> {
        match self {
            #[allow(
                clippy::cast_precision_loss,
                reason = "days to expiry are far below 2^52"
            )]
            Self::CertDaysLeft => Some(
                facts
                    .cert
                    .not_after
                    .saturating_sub(facts.now)
                    .div_euclid(86_400) as f64,
            ),
            Self::Posture { source, fact } => match fact {
                PostureFact::RiskScore => facts.posture.known(source.as_deref(), |p| p.risk_score),
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "ages in seconds are far below 2^52"
                )]
                PostureFact::LastSeenAge => facts
                    .posture
                    .known(source.as_deref(), |p| p.last_seen)
                    .map(|t| facts.now.saturating_sub(t) as f64),
                _ => None,
            },
            _ => None,
        }
    }

    fn boolean(&self, facts: &Facts) -> Option<bool> {
        match self {
            Self::IdentityMatchesCert => Some(identity_matches(facts)),
            Self::Posture { source, fact } => match fact {
                PostureFact::Compliant => facts.posture.known(source.as_deref(), |p| p.compliant),
                PostureFact::Managed => facts.posture.known(source.as_deref(), |p| p.managed),
                PostureFact::Unavailable => Some(facts.posture.unavailable(source.as_deref())),
                PostureFact::UnknownDevice => Some(facts.posture.unknown_device(source.as_deref())),
                _ => None,
            },
            _ => None,
        }
    }

    /// What the facts say for this field, for `explain`: `["Staff", "Lab"]`, `absent`.
    pub fn describe(&self, facts: &Facts, zone: &TimeZone) -> String {
        match self.kind() {
            Kind::Text => {
                let mut values = Vec::new();
                self.any_text(facts, &mut |v| {
                    values.push(format!("{v:?}"));
                    false
                });
                match values.len() {
                    0 => "absent".into(),
                    1 => values.swap_remove(0),
                    _ => format!("[{}]", values.join(", ")),
                }
            }
            Kind::Number => self
                .number(facts)
                .map_or_else(|| "absent".into(), |n| n.to_string()),
            Kind::Bool => self
                .boolean(facts)
                .map_or_else(|| "absent".into(), |b| b.to_string()),
            Kind::TimeOfDay | Kind::Weekday => {
                let local = local_time(facts.now, zone);
                format!(
                    "{} {:02}:{:02} ({})",
                    DAYS.get(usize::from(local.weekday)).copied().unwrap_or("?"),
                    local.minute / 60,
                    local.minute % 60,
                    zone.iana_name().unwrap_or("UTC")
                )
            }
        }
    }
}

/// Whether the EAP identity names the certificate: its CN, a DNS, email or UPN SAN,
/// ASCII case ignored (DNS names and mail domains are case-insensitive); a Windows machine
/// identity `host/<name>` counts by its `<name>`.
fn identity_matches(facts: &Facts) -> bool {
    let names = |id: &str| {
        let c = &facts.cert;
        !id.is_empty()
            && c.subject_cn
                .iter()
                .chain(&c.san.dns)
                .chain(&c.san.email)
                .chain(&c.san.upn)
                .any(|n| n.eq_ignore_ascii_case(id))
    };
    let id = facts.first.eap_identity.as_str();
    names(id) || id.strip_prefix("host/").is_some_and(names)
}

/// Day names, Monday first (jiff's `to_monday_zero_offset`).
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

struct Local {
    minute: u16,
    weekday: u8,
}

fn local_time(now: i64, zone: &TimeZone) -> Local {
    let Ok(ts) = Timestamp::from_second(now) else {
        return Local {
            minute: 0,
            weekday: 0,
        };
    };
    let dt = ts.to_zoned(zone.clone()).datetime();
    Local {
        minute: u16::try_from(dt.hour()).unwrap_or(0) * 60
            + u16::try_from(dt.minute()).unwrap_or(0),
        weekday: u8::try_from(dt.weekday().to_monday_zero_offset()).unwrap_or(0),
    }
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `lt`.
    Less,
    /// `le`.
    LessOrEqual,
    /// `gt`.
    Greater,
    /// `ge`.
    GreaterOrEqual,
}

/// One test; a [`Matcher`] holds when all of its tests hold.
#[derive(Debug, Clone)]
pub enum Test {
    /// Any value equals any of these (ASCII case ignored).
    Equals(Vec<String>),
    /// Any value starts with any of these (ASCII case ignored).
    Prefix(Vec<String>),
    /// Any value ends with any of these (ASCII case ignored).
    Suffix(Vec<String>),
    /// Any value matches any of these globs (`*` any run, `?` one character, the whole
    /// value, ASCII case ignored).
    Glob(Vec<String>),
    /// Any value matches any of these regexes (as written: anchor and `(?i)` as needed).
    Regex(Vec<Regex>),
    /// The numeric value (of a number field, or any text value read as a number) compares.
    Number(Compare, f64),
    /// A number field equals one of these.
    NumberIs(Vec<f64>),
    /// A true/false field is this.
    Is(bool),
    /// The field has (true) or lacks (false) a value.
    Present(bool),
    /// The local time of day is within one of these `[start, end)` minute ranges (an end
    /// before the start runs past midnight).
    Between(Vec<(u16, u16)>),
    /// The local weekday (bit 0 = Monday) is in this set.
    Days(u8),
    /// The inner matcher does not hold.
    Not(Box<Matcher>),
}

/// Tests on one field, all of which must hold.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The tests.
    pub tests: Vec<Test>,
}

impl Matcher {
    fn holds(&self, field: &Field, facts: &Facts, zone: &TimeZone) -> bool {
        self.tests.iter().all(|t| test(t, field, facts, zone))
    }
}

fn test(t: &Test, field: &Field, facts: &Facts, zone: &TimeZone) -> bool {
    let texts = |f: &mut dyn FnMut(&str) -> bool| field.any_text(facts, f);
    match t {
        Test::Equals(want) => texts(&mut |v| want.iter().any(|w| w.eq_ignore_ascii_case(v))),
        Test::Prefix(want) => texts(&mut |v| want.iter().any(|w| starts_with(v, w))),
        Test::Suffix(want) => texts(&mut |v| want.iter().any(|w| ends_with(v, w))),
        Test::Glob(globs) => texts(&mut |v| globs.iter().any(|g| glob_matches(g, v))),
        Test::Regex(res) => texts(&mut |v| res.iter().any(|r| r.is_match(v))),
        Test::Number(cmp, n) => match field.kind() {
            Kind::Number => field.number(facts).is_some_and(|v| compare(*cmp, v, *n)),
            _ => texts(&mut |v| v.trim().parse::<f64>().is_ok_and(|v| compare(*cmp, v, *n))),
        },
        Test::NumberIs(want) => field
            .number(facts)
            .is_some_and(|v| want.iter().any(|w| (v - w).abs() < f64::EPSILON)),
        Test::Is(b) => field.boolean(facts) == Some(*b),
        Test::Present(b) => {
            let present = match field.kind() {
                Kind::Text => texts(&mut |_| true),
                Kind::Number => field.number(facts).is_some(),
                Kind::Bool => field.boolean(facts).is_some(),
                Kind::TimeOfDay | Kind::Weekday => true,
            };
            present == *b
        }
        Test::Between(ranges) => {
            let m = local_time(facts.now, zone).minute;
            ranges.iter().any(|&(start, end)| {
                if start <= end {
                    (start..end).contains(&m)
                } else {
                    m >= start || m < end
                }
            })
        }
        Test::Days(mask) => mask & (1 << local_time(facts.now, zone).weekday) != 0,
        Test::Not(inner) => !inner.holds(field, facts, zone),
    }
}

/// Whether `glob` matches all of `text`: `*` any run of characters (newlines included), `?`
/// one character, anything else itself with ASCII case ignored. Backtracks only to the
/// last `*`, so it takes at most len(glob) × len(text) steps.
fn glob_matches(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(&c) if c == '?' || t.get(ti).is_some_and(|x| x.eq_ignore_ascii_case(&c)) => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g.get(gi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// A serial's hex digits: no `0x`, `:`, spaces or dashes, lowercase.
pub fn serial_digits(s: &str) -> String {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    s.chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A certificate serial as a number in hex, as compared: [`serial_digits`] without leading
/// zeros (DER's `00` sign octet, `openssl x509 -text`'s short `0xa01`), `0` for zero.
pub fn serial_key(s: &str) -> String {
    let hex = serial_digits(s);
    match hex.trim_start_matches('0') {
        "" => "0".into(),
        n => n.to_owned(),
    }
}

fn starts_with(v: &str, prefix: &str) -> bool {
    v.len() >= prefix.len()
        && v.is_char_boundary(prefix.len())
        && v[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn ends_with(v: &str, suffix: &str) -> bool {
    let Some(at) = v.len().checked_sub(suffix.len()) else {
        return false;
    };
    v.is_char_boundary(at) && v[at..].eq_ignore_ascii_case(suffix)
}

fn compare(cmp: Compare, v: f64, n: f64) -> bool {
    match cmp {
        Compare::Less => v < n,
        Compare::LessOrEqual => v <= n,
        Compare::Greater => v > n,
        Compare::GreaterOrEqual => v >= n,
    }
}

/// One condition of a rule: a field and its matcher, with the text the admin wrote.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The field.
    pub field: Field,
    /// The tests.
    pub matcher: Matcher,
    /// As written, e.g. `cert.ou = ["Staff", "Faculty"]`.
    pub text: String,
    /// Where.
    pub at: Place,
    /// The same for every condition of the policy written alike (same fact, same test):
    /// one decision tests each only once.
    pub id: usize,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Access-Accept with these attributes (VLAN, preset, sets, the rule's own, in that
    /// order, already checked against the dictionary).
    Accept {
        /// The reply attributes.
        reply: Vec<ReplyAttribute>,
        /// The preset the rule used, if any (e.g. `quarantine`).
        preset: Option<String>,
    },
    /// Access-Reject with this reason.
    Reject(String),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name (unique in the policy).
    pub name: String,
    /// Where it starts.
    pub at: Place,
    /// Its conditions, all of which must hold; none: it matches every device.
    pub conditions: Vec<Condition>,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// The first condition that does not hold, or `None` when the rule matches. `memo`
    /// (one slot per distinct condition, 0 when not yet tested) keeps each condition's
    /// outcome for the rules after this one.
    pub fn first_failed(&self, facts: &Facts, zone: &TimeZone, memo: &mut [u8]) -> Option<usize> {
        self.conditions.iter().position(|c| {
            let holds = match memo.get(c.id).copied() {
                Some(1) => false,
                Some(2) => true,
                _ => {
                    let holds = c.matcher.holds(&c.field, facts, zone);
                    if let Some(slot) = memo.get_mut(c.id) {
                        *slot = 1 + u8::from(holds);
                    }
                    holds
                }
            };
            !holds
        })
    }
}

/// Writes `rule`'s conditions and what the facts said for each, for `explain`.
pub fn describe_failure(rule: &Rule, failed: usize, facts: &Facts, zone: &TimeZone) -> String {
    let mut out = String::new();
    if let Some(c) = rule.conditions.get(failed) {
        let _ = write!(
            out,
            "{} ({}): the device has {}",
            c.text,
            c.at,
            c.field.describe(facts, zone)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::cases::request_attribute;
    use crate::policy::facts::{
        CertFacts, PostureAnswer, PostureFacts, RequestFacts, RevocationFacts, RevocationOutcome,
        SourcePosture,
    };
    use crate::policy::{evaluate, Policy, PolicyFile};
    use crate::radius::dictionary::Dictionary;
    use crate::radius::packet::Attribute;

    /// Wednesday 2 December 2026, 10:00 UTC.
    const NOW: i64 = 1_796_205_600;

    fn dict() -> Arc<Dictionary> {
        Arc::new(Dictionary::builtin().unwrap())
    }

    fn facts() -> Facts {
        let dict = dict();
        let pairs = [
            ("NAS-IP-Address", "192.0.2.10"),
            ("NAS-Identifier", "wlc-1"),
            ("Called-Station-Id", "AA-BB-CC-DD-EE-FF:Corp"),
            ("Calling-Station-Id", "02:00:00:00:00:01"),
            ("NAS-Port-Type", "Wireless-802.11"),
            ("NAS-Port-Id", "ap-17"),
        ];
        let encoded: Vec<_> = pairs
            .iter()
            .map(|(n, v)| request_attribute(&dict, n, v).unwrap())
            .collect();
        let attrs: Vec<Attribute<'_>> = encoded
            .iter()
            .map(|(ty, v)| Attribute { ty: *ty, value: v })
            .collect();
        let mut cert = CertFacts {
            subject: "CN=laptop-1, OU=Staff, O=Example".into(),
            subject_cn: vec!["laptop-1".into()],
            subject_o: vec!["Example".into()],
            subject_ou: vec!["Staff".into(), "Lab".into()],
            issuer: "CN=Issuing CA, O=Example".into(),
            serial: "1a2b".into(),
            ekus: vec!["1.3.6.1.5.5.7.3.2".into()],
            policies: vec!["1.3.6.1.4.1.99999.1".into()],
            not_before: NOW - 86_400,
            not_after: NOW + 10 * 86_400 + 60,
            ..CertFacts::default()
        };
        cert.san.dns = vec!["laptop-1.corp.example.com".into()];
        cert.san.email = vec!["alice@example.com".into()];
        cert.san.uri = vec!["IntuneDeviceId://5f2b1c3e-0000-4000-8000-000000000001".into()];
        cert.san.upn = vec!["alice@corp.example.com".into()];
        cert.san.ip = vec!["10.1.2.3".parse().unwrap()];
        Facts {
            now: NOW,
            cert,
            tls_version: "1.3",
            first: RequestFacts::of(&attrs, "wlc-campus", &dict, "laptop-1"),
            last: RequestFacts::of(&attrs, "wlc-campus", &dict, ""),
            revocation: RevocationFacts {
                outcome: RevocationOutcome::Good,
                source: None,
                detail: "good (ocsp)".into(),
            },
            posture: PostureFacts {
                sources: vec![
                    SourcePosture {
                        source: "intune".into(),
                        answer: PostureAnswer::Known(Posture {
                            compliant: Some(true),
                            managed: Some(true),
                            risk_score: Some(35.0),
                            os: Some("Windows".into()),
                            os_version: Some("10.0.22631".into()),
                            last_seen: Some(NOW - 600),
                            extra: vec![("encryption".into(), "on".into())],
                        }),
                    },
                    SourcePosture {
                        source: "edr".into(),
                        answer: PostureAnswer::Unavailable("timeout".into()),
                    },
                ],
            },
        }
    }

    fn compile(text: &str, zone: &str) -> Result<Policy, Vec<crate::policy::PolicyError>> {
        Policy::compile(
            &[PolicyFile {
                name: "p.toml".into(),
                text: text.into(),
            }],
            dict(),
            TimeZone::get(zone).unwrap(),
        )
    }

    /// Whether a rule with `when` matches `facts` (time conditions read `zone`).
    fn matches_in(when: &str, facts: &Facts, zone: &str) -> bool {
        let text = format!(
            "[[rule]]\nname = \"r\"\nwhen = {{ {when} }}\naccept = true\n\n\
             [[rule]]\nname = \"default\"\nreject = \"no\"\n"
        );
        let policy = compile(&text, zone).unwrap_or_else(|e| panic!("{when}: {e:?}"));
        evaluate(&policy, facts).1.rule == "r"
    }

    fn matches(when: &str, facts: &Facts) -> bool {
        matches_in(when, facts, "UTC")
    }

    #[test]
    fn every_matcher_matches_what_it_should_and_nothing_else() {
        let f = facts();
        let table: &[(&str, bool)] = &[
            // Certificate facts: exact (ASCII case ignored), any-of, every value.
            (r#"cert.cn = "laptop-1""#, true),
            (r#"cert.cn = "LAPTOP-1""#, true),
            (r#"cert.cn = "laptop-2""#, false),
            (r#"cert.ou = ["Sales", "Lab"]"#, true),
            (r#"cert.ou = ["Sales", "Guests"]"#, false),
            (r#"cert.o = "Example""#, true),
            (r#"cert.subject = "CN=laptop-1, OU=Staff, O=Example""#, true),
            (r#"cert.issuer = "CN=Issuing CA, O=Example""#, true),
            (r#"cert.serial = "1A:2B""#, true),
            (r#"cert.serial = "0x1a2c""#, false),
            (r#"cert.san_dns = { suffix = ".corp.example.com" }"#, true),
            (r#"cert.san_dns = { suffix = ".lab.example.com" }"#, false),
            (r#"cert.san_dns = { prefix = "LAPTOP-" }"#, true),
            (
                r#"cert.san_dns = { glob = "laptop-?.*.example.com" }"#,
                true,
            ),
            (r#"cert.san_dns = { glob = "laptop-??.*" }"#, false),
            (r#"cert.san_dns = { regex = '^laptop-\d+\.corp\.' }"#, true),
            (r#"cert.san_dns = { regex = '^printer-' }"#, false),
            (r#"cert.san_email = "alice@example.com""#, true),
            (r#"cert.san_uri = { prefix = "IntuneDeviceId://" }"#, true),
            (r#"cert.san_upn = { suffix = "@corp.example.com" }"#, true),
            (r#"cert.san_ip = "10.1.2.3""#, true),
            (r#"cert.policy = "1.3.6.1.4.1.99999.1""#, true),
            (r#"cert.eku = "clientAuth""#, true),
            (r#"cert.eku = "serverAuth""#, false),
            (r#"cert.days_left = { lt = 30 }"#, true),
            (r#"cert.days_left = { gt = 30 }"#, false),
            (r#"cert.days_left = { ge = 10, le = 10 }"#, true),
            (r#"cert.days_left = 10"#, true),
            // Negation and presence.
            (r#"cert.ou = { not = "Guests" }"#, true),
            (r#"cert.ou = { not = ["Staff", "Guests"] }"#, false),
            (r#"cert.ou = { not = { prefix = "St" } }"#, false),
            (r#"cert.ou = { present = true }"#, true),
            (r#"nas_identifier = { present = false }"#, false),
            // Request facts.
            (r#"client = "wlc-campus""#, true),
            (r#"nas_ip = "192.0.2.10""#, true),
            (r#"nas_identifier = "wlc-1""#, true),
            (r#"called_station = { prefix = "aa-bb-cc" }"#, true),
            (r#"ssid = "Corp""#, true),
            (r#"ssid = "Guest""#, false),
            (r#"calling_station = "0200.0000.0001""#, true),
            (r#"calling_station = "02:00:00:00:00:02""#, false),
            (r#"nas_port_type = "Wireless-802.11""#, true),
            (r#"nas_port_type = 19"#, true),
            (r#"nas_port_type = "Ethernet""#, false),
            (r#"nas_port_id = "ap-17""#, true),
            (r#"attr.NAS-Identifier = "wlc-1""#, true),
            (r#"attr."NAS-Port-Type" = "Wireless-802.11""#, true),
            (r#"attr.Framed-MTU = { present = true }"#, false),
            // Identity and its binding to the certificate.
            (r#"identity = "laptop-1""#, true),
            ("identity_matches_cert = true", true),
            ("identity_matches_cert = false", false),
            // Revocation and TLS.
            (r#"revocation = "good""#, true),
            (r#"revocation = "soft_failed""#, false),
            (r#"tls_version = "1.3""#, true),
            (r#"tls_version = ["1.2"]"#, false),
            // Time (10:00 UTC on a Wednesday).
            (r#"time = "08:00-18:00""#, true),
            (r#"time = "18:00-08:00""#, false),
            (r#"time = ["06:00-07:00", "09:59-10:01"]"#, true),
            (r#"days = "mon-fri""#, true),
            (r#"days = ["sat", "sun"]"#, false),
            (r#"days = "fri-wed""#, true),
            // Posture: across sources, per source, unavailable.
            ("posture.compliant = true", true),
            ("posture.intune.compliant = true", true),
            ("posture.managed = false", false),
            ("posture.risk_score = { lt = 50 }", true),
            ("posture.risk_score = { ge = 50 }", false),
            (r#"posture.os = "windows""#, true),
            (r#"posture.os_version = { prefix = "10.0." }"#, true),
            ("posture.last_seen_age = { lt = 3600 }", true),
            (r#"posture.extra.encryption = "on""#, true),
            ("posture.unavailable = false", true),
            ("posture.edr.unavailable = true", true),
            ("posture.edr.compliant = true", false),
            ("posture.edr.compliant = { not = true }", true),
            // Several conditions: all must hold.
            (r#"cert.ou = "Staff", ssid = "Corp""#, true),
            (r#"cert.ou = "Staff", ssid = "Guest""#, false),
            (r#"cert = { ou = "Staff", cn = "laptop-1" }"#, true),
        ];
        for (when, want) in table {
            assert_eq!(matches(when, &f), *want, "{when}");
        }
    }

    #[test]
    fn absent_facts_match_no_positive_test_and_every_negation() {
        let mut f = facts();
        f.first.ssid = None;
        f.posture = PostureFacts::default();
        assert!(!matches(r#"ssid = "Corp""#, &f));
        assert!(matches(r#"ssid = { not = "Corp" }"#, &f));
        assert!(matches("ssid = { present = false }", &f));
        assert!(!matches("posture.compliant = true", &f));
        assert!(!matches("posture.compliant = false", &f));
        assert!(matches("posture.unavailable = true", &f));
    }

    #[test]
    fn time_conditions_read_the_configured_time_zone() {
        let f = facts();
        // 10:00 UTC is 19:00 in Tokyo and 05:00 in New York.
        assert!(matches_in(r#"time = "18:00-20:00""#, &f, "Asia/Tokyo"));
        assert!(!matches_in(r#"time = "08:00-18:00""#, &f, "Asia/Tokyo"));
        assert!(matches_in(
            r#"time = "22:00-06:00""#,
            &f,
            "America/New_York"
        ));
        // 23:30 UTC on Wednesday is Thursday in Tokyo.
        let mut late = facts();
        late.now = NOW + 13 * 3600 + 1800;
        assert!(matches_in(r#"days = "thu""#, &late, "Asia/Tokyo"));
        assert!(matches_in(r#"days = "wed""#, &late, "UTC"));
    }

    #[test]
    fn a_windows_machine_identity_binds_by_its_host_name() {
        let mut f = facts();
        f.first.eap_identity = "host/laptop-1.corp.example.com".into();
        assert!(matches("identity_matches_cert = true", &f));
        f.first.eap_identity = "host/printer-9".into();
        assert!(matches("identity_matches_cert = false", &f));
        f.first.eap_identity = String::new();
        assert!(matches("identity_matches_cert = false", &f));
    }

    #[test]
    fn a_vendor_attribute_and_non_ascii_text_in_the_request_are_facts() {
        let mut f = facts();
        let mut essid = 14823u32.to_be_bytes().to_vec();
        essid.extend([5, 6]);
        essid.extend(b"Corp");
        let attrs = [
            Attribute {
                ty: crate::radius::AttrType::VendorSpecific,
                value: &essid,
            },
            Attribute {
                ty: crate::radius::AttrType::NasIdentifier,
                value: "Caf\u{e9}-wlc".as_bytes(),
            },
        ];
        f.first = RequestFacts::of(&attrs, "wlc", &dict(), "laptop-1");
        assert!(matches(r#"attr.Aruba-Essid-Name = "Corp""#, &f));
        assert!(!matches(r#"attr.Aruba-Essid-Name = { not = "Corp" }"#, &f));
        assert!(matches("attr.NAS-Identifier = \"Caf\u{e9}-wlc\"", &f));
        assert!(matches("nas_identifier = \"Caf\u{e9}-wlc\"", &f));
    }

    #[test]
    fn mac_patterns_match_in_any_notation_and_serials_without_their_sign_byte() {
        let mut f = facts();
        assert!(matches(r#"calling_station = { prefix = "02:00:00" }"#, &f));
        assert!(matches(r#"calling_station = { prefix = "0200.00" }"#, &f));
        assert!(!matches(
            r#"calling_station = { not = { prefix = "02:00:00" } }"#,
            &f
        ));
        assert!(matches(r#"calling_station = { suffix = "00:01" }"#, &f));
        // A serial whose top bit is set has a 00 sign byte in DER; tools print it without.
        f.cert.serial = "008a01".into();
        assert!(matches(r#"cert.serial = "8A:01""#, &f));
        assert!(matches(r#"cert.serial = "0X8A01""#, &f));
        assert!(matches(r#"cert.serial = "00:8a:01""#, &f));
        assert!(!matches(r#"cert.serial = "8a""#, &f));
    }

    #[test]
    fn globs_fold_ascii_case_only_and_stars_cross_newlines() {
        let mut f = facts();
        f.cert.subject_ou = vec!["\u{17f}taff".into()];
        assert!(!matches(r#"cert.ou = { glob = "staff*" }"#, &f));
        f.cert.subject_ou = vec!["STAFF-lab".into()];
        assert!(matches(r#"cert.ou = { glob = "staff*" }"#, &f));
        f.cert.subject_cn = vec!["a\n-guest".into()];
        assert!(matches(r#"cert.cn = { glob = "*-guest" }"#, &f));
        assert!(matches(r#"cert.cn = { glob = "a?-guest" }"#, &f));
    }

    #[test]
    fn identity_binding_ignores_ascii_case() {
        let mut f = facts();
        f.first.eap_identity = "host/LAPTOP-1.corp.example.com".into();
        assert!(matches("identity_matches_cert = true", &f));
        f.first.eap_identity = "Alice@Example.com".into();
        assert!(matches("identity_matches_cert = true", &f));
    }

    #[test]
    fn dn_facts_take_only_exact_matches_so_an_escaped_comma_cannot_forge_an_rdn() {
        for when in [
            r#"cert.subject = { suffix = ", OU=Staff, O=Example" }"#,
            r#"cert.subject = { regex = 'OU=Staff' }"#,
            r#"cert.issuer = { glob = "*O=Example" }"#,
            r#"cert.issuer = { prefix = "CN=" }"#,
        ] {
            let text = format!(
                "[[rule]]\nname = \"r\"\nwhen = {{ {when} }}\naccept = true\n\n\
                 [[rule]]\nname = \"default\"\nreject = \"no\"\n"
            );
            let e = compile(&text, "UTC").unwrap_err();
            assert!(
                e.iter()
                    .any(|e| e.message.contains("takes whole names only")),
                "{when}: {e:?}"
            );
        }
    }

    #[test]
    fn a_request_with_more_facts_than_are_kept_is_refused_by_rules_on_attributes() {
        let mut f = facts();
        let mut vsas: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                let mut v = 14823u32.to_be_bytes().to_vec();
                v.extend([10, 3, b'x']);
                v
            })
            .collect();
        let mut last = 14823u32.to_be_bytes().to_vec();
        last.extend([5, 7]);
        last.extend(b"Guest");
        vsas.push(last);
        let attrs: Vec<Attribute<'_>> = vsas
            .iter()
            .map(|v| Attribute {
                ty: crate::radius::AttrType::VendorSpecific,
                value: v,
            })
            .collect();
        f.first = RequestFacts::of(&attrs, "wlc", &dict(), "laptop-1");
        assert!(f.first.incomplete);
        let text =
            "[[rule]]\nname = \"guest\"\nwhen = { attr.Aruba-Essid-Name = { not = \"Corp\" } }\n\
                    accept = true\n\n[[rule]]\nname = \"default\"\naccept = true\n";
        let policy = compile(text, "UTC").unwrap();
        let (d, _) = evaluate(&policy, &f);
        assert!(
            matches!(&d, crate::policy::Decision::Reject { reason, .. } if reason == "request_attributes_incomplete"),
            "{d:?}"
        );
        // Rules that read no request attribute by name are not affected.
        let policy = compile("[[rule]]\nname = \"default\"\naccept = true\n", "UTC").unwrap();
        assert!(matches!(
            evaluate(&policy, &f).0,
            crate::policy::Decision::Accept { .. }
        ));
    }

    #[test]
    fn serials_compare_as_numbers_in_hex() {
        let mut f = facts();
        f.cert.serial = "0a01".into();
        assert!(matches(r#"cert.serial = "0xa01""#, &f));
        assert!(matches(r#"cert.serial = "A01""#, &f));
        assert!(matches(r#"cert.serial = ["ffff", "0A:01"]"#, &f));
        assert!(!matches(r#"cert.serial = { not = "a01" }"#, &f));
    }

    #[test]
    fn calling_station_regexes_ignore_case_and_may_use_any_regex_syntax() {
        let f = facts();
        assert!(matches(
            r#"calling_station = { regex = '^02-00-00-.*' }"#,
            &f
        ));
        assert!(matches(r#"calling_station = { regex = '^02-00' }"#, &f));
        assert!(matches(r#"calling_station = { glob = "02-00-*" }"#, &f));
    }

    #[test]
    fn a_condition_shared_by_rules_is_tested_once_and_decides_alike_for_each() {
        let f = facts();
        let text = "[[rule]]\nname = \"a\"\nwhen = { cert.ou = \"Staff\", ssid = \"Guest\" }\naccept = true\n\n\
                    [[rule]]\nname = \"b\"\nwhen = { cert = { ou = \"Staff\" }, ssid = \"Corp\" }\naccept = true\n\n\
                    [[rule]]\nname = \"default\"\nreject = \"no\"\n";
        let policy = compile(text, "UTC").unwrap();
        let ids: Vec<usize> = policy
            .rules()
            .iter()
            .flat_map(|r| r.conditions.iter().map(|c| c.id))
            .collect();
        assert_eq!(ids, [0, 1, 0, 2], "cert.ou = \"Staff\" is one test");
        let (_, t) = evaluate(&policy, &f);
        assert_eq!(t.rule, "b");
        assert_eq!(t.tried, [(0, 1)]);
    }
}
