//! Reads the admin's policy files (TOML, documented in `policies/README.md`) into
//! compiled [`Rule`]s, and lints them: every error names `file:line` and the rule. The
//! files' text comes from the caller (this module does no I/O).
//!
//! ```toml
//! [vlans]
//! staff = 100
//!
//! [sets.aruba-staff]
//! attributes = ["Aruba-User-Role = staff"]
//!
//! [[rule]]
//! name = "staff"
//! when = { cert.ou = "Staff", ssid = "Corp" }
//! vlan = "staff"
//! sets = ["aruba-staff"]
//!
//! [[rule]]
//! name = "default"
//! reject = "not_enrolled"
//! ```

use std::collections::BTreeMap;
use std::fmt;

use regex::RegexBuilder;

use super::rules::{
    serial_digits, serial_key, Action, Compare, Condition, Field, Kind, Matcher, Place, Rule, Test,
    DAYS, FIELD_NAMES,
};
use super::ReplyAttribute;
use crate::radius::attr::station_id;
use crate::radius::dictionary::{DataType, Dictionary};
use crate::radius::summary::is_fact;

/// Largest compiled regex (bytes of automaton): a policy cannot make a matcher that eats
/// memory or time.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Octets a rule's reply attributes may take: a RADIUS packet holds 4096, and every Accept
/// also carries its header, User-Name, MS-MPPE keys, EAP-Success and Message-Authenticator.
const MAX_REPLY_ATTRIBUTES: usize = 3500;

/// Longest reject reason: it is a metric label and an audit field.
const MAX_REASON: usize = 64;

/// Rule names the server's own decisions carry (the checks before any rule).
const RESERVED_RULES: [&str; 3] = ["identity", "revocation", "no_rule"];

/// Reasons the server gives itself: its checks before any rule, protocol and TLS
/// failures, overload, faults. A policy's refusal must not read as one of them.
const RESERVED_REASONS: &[&str] = &[
    "ok",
    "internal",
    "no_identity",
    "revoked",
    "intermediate_revoked",
    "revocation_invalid",
    "revocation_unknown",
    "no_rule_matched",
    "certificate_names_incomplete",
    "request_attributes_incomplete",
    "unknown_ca",
    "wrong_eku",
    "certificate_expired",
    "certificate_not_yet_valid",
    "bad_certificate",
    "bad_certificate_signature",
    "no_client_certificate",
    "peer_alert",
    "tls_error",
    "tls_incompatible",
    "hsm_timeout",
    "hsm_unavailable",
    "server_busy",
    "too_many_sessions",
    "too_many_device_conversations",
    "too_many_rounds",
    "unknown_state",
    "eap_identifier_mismatch",
    "eap_malformed",
    "eap_nak",
    "eap_tls_framing",
    "eap_tls_too_large",
    "eap_unexpected_type",
    "no_eap",
];

/// The matcher operators a condition's table may hold.
const OPERATORS: [&str; 11] = [
    "eq", "prefix", "suffix", "glob", "regex", "not", "present", "lt", "le", "gt", "ge",
];

/// One policy file's name (as shown in errors) and text.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// Shown in errors, e.g. `policies/10-staff.toml`.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// A policy error with its place and rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Where.
    pub at: Place,
    /// The rule it is about, if any.
    pub rule: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "{}: rule `{rule}`: {}", self.at, self.message),
            None => write!(f, "{}: {}", self.at, self.message),
        }
    }
}

/// A TOML value with the line it is on.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) at: Place,
    pub(crate) value: Value,
}

/// A TOML value, tables in written order.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<(String, Node)>),
}

impl Node {
    pub(crate) fn kind(&self) -> &'static str {
        match self.value {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "true or false",
            Value::Datetime(_) => "a date",
            Value::Array(_) => "a list",
            Value::Table(_) => "a table",
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Table(t) => t.iter().find(|(k, _)| k == key).map(|(_, n)| n),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Datetime(d) => f.write_str(d),
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, n) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n}")?;
                }
                f.write_str("]")
            }
            Value::Table(t) => {
                f.write_str("{ ")?;
                for (i, (k, n)) in t.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} = {n}")?;
                }
                f.write_str(" }")
            }
        }
    }
}

/// Parses one TOML file into a [`Node`] tree with lines.
///
/// # Errors
/// The TOML syntax error, with its line.
pub(crate) fn parse_toml(name: &str, text: &str) -> Result<Node, PolicyError> {
    let lines = Lines::new(name, text);
    let doc = toml_edit::ImDocument::parse(text).map_err(|e| PolicyError {
        at: lines.place(e.span().map(|s| s.start)),
        rule: None,
        message: format!(
            "not valid TOML: {}",
            e.message().lines().next().unwrap_or("syntax error")
        ),
    })?;
    Ok(lines.table(doc.as_table(), lines.place(Some(0))))
}

struct Lines<'a> {
    name: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(name: &'a str, text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { name, starts }
    }

    fn place(&self, offset: Option<usize>) -> Place {
        let line = offset.map_or(1, |o| self.starts.partition_point(|&s| s <= o).max(1));
        Place {
            file: self.name.to_owned(),
            line,
        }
    }

    fn at(&self, span: Option<std::ops::Range<usize>>, parent: &Place) -> Place {
        match span {
            Some(s) => self.place(Some(s.start)),
            None => parent.clone(),
        }
    }

    fn table(&self, t: &toml_edit::Table, at: Place) -> Node {
        let mut entries = Vec::new();
        for (k, item) in t.iter() {
            let key_at = self.at(t.key(k).and_then(toml_edit::Key::span), &at);
            if let Some(n) = self.item(item, key_at) {
                entries.push((k.to_owned(), n));
            }
        }
        Node {
            at,
            value: Value::Table(entries),
        }
    }

    fn item(&self, item: &toml_edit::Item, at: Place) -> Option<Node> {
        Some(match item {
            toml_edit::Item::None => return None,
            toml_edit::Item::Value(v) => self.value(v, at),
            toml_edit::Item::Table(t) => {
                let at = self.at(t.span(), &at);
                self.table(t, at)
            }
            toml_edit::Item::ArrayOfTables(a) => Node {
                value: Value::Array(
                    a.iter()
                        .map(|t| {
                            let at = self.at(t.span(), &at);
                            self.table(t, at)
                        })
                        .collect(),
                ),
                at,
            },
        })
    }

    fn value(&self, v: &toml_edit::Value, at: Place) -> Node {
        use toml_edit::Value as V;
        let value = match v {
            V::String(s) => Value::Str(s.value().clone()),
            V::Integer(n) => Value::Int(*n.value()),
            V::Float(n) => Value::Float(*n.value()),
            V::Boolean(b) => Value::Bool(*b.value()),
            V::Datetime(d) => Value::Datetime(d.value().to_string()),
            V::Array(a) => Value::Array(
                a.iter()
                    .map(|v| {
                        let at = self.at(v.span(), &at);
                        self.value(v, at)
                    })
                    .collect(),
            ),
            V::InlineTable(t) => Value::Table(
                t.iter()
                    .map(|(k, v)| {
                        let key_at = self.at(t.key(k).and_then(toml_edit::Key::span), &at);
                        (k.to_owned(), self.value(v, key_at))
                    })
                    .collect(),
            ),
        };
        Node { at, value }
    }
}

/// The compiled rules, and the names defined beside them.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// The rules, in order (files by name, then as written).
    pub rules: Vec<Rule>,
    /// Distinct conditions (each condition's `id` is below this).
    pub distinct: usize,
}

struct Preset {
    vlan: Option<Node>,
    sets: Vec<Node>,
    attributes: Vec<Node>,
}

struct Compiler<'d> {
    dictionary: &'d Dictionary,
    errors: Vec<PolicyError>,
    vlans: BTreeMap<String, (String, Place)>,
    sets: BTreeMap<String, (Vec<Node>, Place)>,
    presets: BTreeMap<String, (Preset, Place)>,
    rule: Option<String>,
}

/// Compiles and lints `files` (already in load order) against `dictionary`.
///
/// # Errors
/// Every error found, each with file:line and the rule's name.
pub fn compile(
    files: &[PolicyFile],
    dictionary: &Dictionary,
) -> Result<Compiled, Vec<PolicyError>> {
    let mut c = Compiler {
        dictionary,
        errors: Vec::new(),
        vlans: BTreeMap::new(),
        sets: BTreeMap::new(),
        presets: BTreeMap::new(),
        rule: None,
    };
    let mut roots = Vec::new();
    for f in files {
        match parse_toml(&f.name, &f.text) {
            Ok(root) => roots.push(root),
            Err(e) => c.errors.push(e),
        }
    }
    // Names first, from every file, so a rule may use a set defined in a later file.
    for root in &roots {
        c.definitions(root);
    }
    let mut rules = Vec::new();
    for root in &roots {
        if let Some(list) = root.get("rule") {
            match &list.value {
                Value::Array(items) => {
                    for item in items {
                        if let Some(r) = c.rule(item) {
                            rules.push(r);
                        }
                    }
                }
                _ => c.error(
                    &list.at,
                    format!("`rule` must be [[rule]] tables, not {}", list.kind()),
                ),
            }
        }
    }
    c.rule = None;
    c.lint(&rules, files);
    // Conditions written alike are one test: numbered by their text (the fact's path and
    // the value as written, which decide the test).
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for cond in rules.iter_mut().flat_map(|r| r.conditions.iter_mut()) {
        let next = ids.len();
        cond.id = *ids.entry(cond.text.clone()).or_insert(next);
    }
    if c.errors.is_empty() {
        Ok(Compiled {
            rules,
            distinct: ids.len(),
        })
    } else {
        Err(c.errors)
    }
}

impl Compiler<'_> {
    fn error(&mut self, at: &Place, message: impl Into<String>) {
        self.errors.push(PolicyError {
            at: at.clone(),
            rule: self.rule.clone(),
            message: message.into(),
        });
    }

    fn table<'n>(&mut self, node: &'n Node, what: &str) -> &'n [(String, Node)] {
        match &node.value {
            Value::Table(t) => t,
            _ => {
                self.error(
                    &node.at,
                    format!("{what} must be a table, not {}", node.kind()),
                );
                &[]
            }
        }
    }

    fn strings<'n>(&mut self, node: &'n Node, what: &str) -> Vec<&'n Node> {
        match &node.value {
            Value::Array(items) => items
                .iter()
                .filter(|n| {
                    let ok = matches!(n.value, Value::Str(_));
                    if !ok {
                        self.error(&n.at, format!("{what}: each entry must be a string"));
                    }
                    ok
                })
                .collect(),
            _ => {
                self.error(
                    &node.at,
                    format!("{what} must be a list of strings, not {}", node.kind()),
                );
                Vec::new()
            }
        }
    }

    fn definitions(&mut self, root: &Node) {
        for (key, node) in self.table(root, "a policy file") {
            match key.as_str() {
                "rule" => {}
                "vlans" => {
                    for (name, v) in self.table(node, "[vlans]") {
                        let value = match &v.value {
                            Value::Int(n) if (1..=4094).contains(n) => n.to_string(),
                            Value::Str(s) if !s.is_empty() && s.len() <= 253 => s.clone(),
                            _ => {
                                self.error(
                                    &v.at,
                                    format!(
                                        "VLAN `{name}` must be an ID 1..=4094 or a VLAN name \
                                         (1..=253 bytes), not {v}"
                                    ),
                                );
                                continue;
                            }
                        };
                        self.define_vlan(name, value, &v.at);
                    }
                }
                "sets" => {
                    for (name, v) in self.table(node, "[sets]") {
                        let attrs = match v.get("attributes") {
                            Some(a) => self.strings(a, "attributes").into_iter().cloned().collect(),
                            None => {
                                self.error(&v.at, format!("set `{name}` has no `attributes`"));
                                Vec::new()
                            }
                        };
                        for (k, n) in self.table(v, "a set") {
                            if k != "attributes" && k != "description" {
                                self.error(&n.at, format!("unknown key `{k}` in set `{name}` (expected attributes, description)"));
                            }
                        }
                        if let Some((_, first)) = self.sets.get(name) {
                            let first = first.clone();
                            self.error(&v.at, format!("set `{name}` is defined twice (first at {first})"));
                        } else {
                            self.sets.insert(name.clone(), (attrs, v.at.clone()));
                        }
                    }
                }
                "presets" => {
                    for (name, v) in self.table(node, "[presets]") {
                        let mut preset = Preset {
                            vlan: None,
                            sets: Vec::new(),
                            attributes: Vec::new(),
                        };
                        for (k, n) in self.table(v, "a preset") {
                            match k.as_str() {
                                "vlan" => preset.vlan = Some(n.clone()),
                                "sets" => preset.sets = self.strings(n, "sets").into_iter().cloned().collect(),
                                "attributes" => preset.attributes = self.strings(n, "attributes").into_iter().cloned().collect(),
                                "description" => {}
                                _ => self.error(&n.at, format!("unknown key `{k}` in preset `{name}` (expected vlan, sets, attributes, description)")),
                            }
                        }
                        if let Some((_, first)) = self.presets.get(name) {
                            let first = first.clone();
                            self.error(&v.at, format!("preset `{name}` is defined twice (first at {first})"));
                        } else {
                            self.presets.insert(name.clone(), (preset, v.at.clone()));
                        }
                    }
                }
                other => self.error(
                    &node.at,
                    format!("unknown key `{other}` (expected [vlans], [sets.<name>], [presets.<name>], [[rule]])"),
                ),
            }
        }
    }

    fn define_vlan(&mut self, name: &str, value: String, at: &Place) {
        if let Some((_, first)) = self.vlans.get(name) {
            let first = first.clone();
            self.error(
                at,
                format!("VLAN `{name}` is defined twice (first at {first})"),
            );
        } else {
            self.vlans.insert(name.to_owned(), (value, at.clone()));
        }
    }

    fn rule(&mut self, node: &Node) -> Option<Rule> {
        let name = node.get("name").and_then(Node::as_str).map(str::to_owned);
        self.rule.clone_from(&name);
        let Some(name) = name else {
            self.error(&node.at, "a rule needs a `name` (a string)");
            return None;
        };
        if !valid_label(&name) {
            self.error(&node.at, "a rule name is 1..=64 of A-Z a-z 0-9 _ . - :");
        }
        if RESERVED_RULES.contains(&name.as_str()) {
            self.error(
                &node.at,
                format!(
                    "`{name}` is a name anchord gives its own checks ({}): choose another",
                    RESERVED_RULES.join(", ")
                ),
            );
        }
        let mut conditions = Vec::new();
        let (mut vlan, mut preset, mut sets, mut attributes) = (None, None, Vec::new(), Vec::new());
        let (mut reject, mut accept) = (None, None);
        for (key, n) in self.table(node, "a rule") {
            match key.as_str() {
                "name" | "description" => {}
                "when" => {
                    let entries = self.table(n, "`when`").to_vec();
                    for (k, v) in &entries {
                        self.conditions(k, v, &mut conditions);
                    }
                }
                "vlan" => vlan = Some(n.clone()),
                "preset" => preset = Some(n.clone()),
                "sets" => sets = self.strings(n, "sets").into_iter().cloned().collect(),
                "attributes" => {
                    attributes = self.strings(n, "attributes").into_iter().cloned().collect();
                }
                "reject" => reject = Some(n.clone()),
                "accept" => accept = Some(n.clone()),
                other => self.error(
                    &n.at,
                    format!(
                        "unknown key `{other}` (expected name, description, when, and one \
                         action: vlan / preset / sets / attributes / accept = true, or \
                         reject = \"reason\")"
                    ),
                ),
            }
        }
        let accepting =
            vlan.is_some() || preset.is_some() || !sets.is_empty() || !attributes.is_empty();
        let action = match (reject, accept) {
            (Some(r), _) if accepting => {
                self.error(
                    &r.at,
                    "`reject` cannot go with vlan, preset, sets or attributes",
                );
                return None;
            }
            (Some(r), Some(a)) => {
                let _ = r;
                self.error(&a.at, "`reject` and `accept` in one rule");
                return None;
            }
            (Some(r), None) => match r.as_str() {
                Some(reason) if RESERVED_REASONS.contains(&reason) => {
                    self.error(
                        &r.at,
                        format!(
                            "`{reason}` is a reason anchord gives itself ({}): choose another, so \
                             the audit trail tells the policy's refusals from its own",
                            RESERVED_REASONS.join(", ")
                        ),
                    );
                    return None;
                }
                Some(reason) if valid_label(reason) => Action::Reject(reason.to_owned()),
                _ => {
                    self.error(
                        &r.at,
                        format!(
                            "`reject` is the reason: 1..={MAX_REASON} of A-Z a-z 0-9 _ . - : \
                             (it is a metric label and audited), not {r}"
                        ),
                    );
                    return None;
                }
            },
            (None, accept) => {
                if let Some(a) = &accept {
                    if !matches!(a.value, Value::Bool(true)) {
                        self.error(&a.at, "`accept` can only be `true`");
                    }
                }
                if !accepting && accept.is_none() {
                    self.error(
                        &node.at,
                        "the rule does nothing: give vlan, preset, sets or attributes, \
                         `accept = true`, or `reject = \"reason\"`",
                    );
                    return None;
                }
                let preset_name = preset.as_ref().and_then(|p| p.as_str().map(str::to_owned));
                let reply = self.reply(vlan.as_ref(), preset.as_ref(), &sets, &attributes);
                Action::Accept {
                    reply,
                    preset: preset_name,
                }
            }
        };
        Some(Rule {
            name,
            at: node.at.clone(),
            conditions,
            action,
        })
    }

    /// The reply of an accepting rule: the VLAN's tunnel attributes, then the preset's
    /// attributes, then the rule's sets and attributes; each later layer replaces the
    /// attributes of the same name from the layers before it.
    fn reply(
        &mut self,
        vlan: Option<&Node>,
        preset: Option<&Node>,
        sets: &[Node],
        attributes: &[Node],
    ) -> Vec<ReplyAttribute> {
        let mut layers: Vec<Vec<ReplyAttribute>> = Vec::new();
        let mut vlan = vlan.cloned();
        if let Some(p) = preset {
            match p.as_str().and_then(|name| self.presets.get(name)) {
                Some((found, _)) => {
                    let (pv, ps, pa) = (
                        found.vlan.clone(),
                        found.sets.clone(),
                        found.attributes.clone(),
                    );
                    if vlan.is_none() {
                        vlan = pv;
                    }
                    for s in &ps {
                        layers.push(self.set(s));
                    }
                    layers.push(self.attributes(&pa));
                }
                None => {
                    let known = self.presets.keys().cloned().collect::<Vec<_>>().join(", ");
                    self.error(
                        &p.at,
                        format!("unknown preset {p} (defined: {})", or_none(&known)),
                    );
                }
            }
        }
        if let Some(v) = vlan {
            if let Some(id) = self.vlan(&v) {
                // RFC 3580 §3.31: VLAN assignment on RFC 2868 tunnel attributes, tag 0.
                layers.insert(
                    0,
                    vec![
                        ReplyAttribute::new("Tunnel-Type", Some(0), "VLAN"),
                        ReplyAttribute::new("Tunnel-Medium-Type", Some(0), "IEEE-802"),
                        ReplyAttribute::new("Tunnel-Private-Group-Id", Some(0), &id),
                    ],
                );
            }
        }
        for s in sets {
            layers.push(self.set(s));
        }
        layers.push(self.attributes(attributes));
        let mut reply: Vec<ReplyAttribute> = Vec::new();
        for layer in layers {
            reply.retain(|a| !layer.iter().any(|b| b.name.eq_ignore_ascii_case(&a.name)));
            reply.extend(layer);
        }
        // The Accept also carries User-Name, the MS-MPPE keys, EAP-Success and
        // Message-Authenticator (at most about 400 octets) within RADIUS's 4096.
        let total: usize = reply
            .iter()
            .filter_map(|a| self.dictionary.encode(&a.name, a.tag, &a.value).ok())
            .map(|(def, b)| {
                let (t, l) = self.dictionary.vendor_format(def.vendor);
                // Hidden values grow: to 16-octet blocks (RFC 2865 §5.2), plus a salt and a
                // length octet (RFC 2868 §3.5).
                let value = match def.encrypt {
                    1 => b.len().div_ceil(16).max(1) * 16,
                    2 => {
                        let tag = usize::from(def.has_tag);
                        tag + 2 + (b.len() - tag.min(b.len()) + 1).div_ceil(16) * 16
                    }
                    _ => b.len(),
                };
                let header = if def.vendor == 0 {
                    2
                } else {
                    2 + 4 + usize::from(t) + usize::from(l)
                };
                value + header
            })
            .sum();
        if total > MAX_REPLY_ATTRIBUTES {
            let at = attributes
                .first()
                .or(sets.first())
                .or(preset)
                .map(|n| n.at.clone());
            if let Some(at) = at {
                self.error(
                    &at,
                    format!(
                        "the reply's attributes take {total} octets: at most {MAX_REPLY_ATTRIBUTES} \
                         fit beside what every Accept carries"
                    ),
                );
            }
        }
        reply
    }

    fn vlan(&mut self, v: &Node) -> Option<String> {
        match &v.value {
            Value::Int(n) if (1..=4094).contains(n) => Some(n.to_string()),
            Value::Str(s) if s.parse::<u16>().is_ok_and(|n| (1..=4094).contains(&n)) => {
                Some(s.clone())
            }
            Value::Str(s) => match self.vlans.get(s) {
                Some((id, _)) => Some(id.clone()),
                None => {
                    let known = self.vlans.keys().cloned().collect::<Vec<_>>().join(", ");
                    self.error(
                        &v.at,
                        format!(
                            "unknown VLAN preset `{s}`: name a VLAN in [vlans] (defined: {}) \
                             or give an ID 1..=4094",
                            or_none(&known)
                        ),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    &v.at,
                    format!("`vlan` is a [vlans] name or an ID 1..=4094, not {v}"),
                );
                None
            }
        }
    }

    fn set(&mut self, s: &Node) -> Vec<ReplyAttribute> {
        match s.as_str().and_then(|name| self.sets.get(name)) {
            Some((attrs, _)) => {
                let attrs = attrs.clone();
                self.attributes(&attrs)
            }
            None => {
                let known = self.sets.keys().cloned().collect::<Vec<_>>().join(", ");
                self.error(
                    &s.at,
                    format!("unknown set {s} (defined: {})", or_none(&known)),
                );
                Vec::new()
            }
        }
    }

    fn attributes(&mut self, list: &[Node]) -> Vec<ReplyAttribute> {
        let mut out = Vec::new();
        for n in list {
            let Some(text) = n.as_str() else { continue };
            match parse_attribute(text).and_then(|a| self.fits(a)) {
                Ok(a) => out.push(a),
                Err(e) => self.error(&n.at, e),
            }
        }
        out
    }

    /// An attribute the reply can carry: known, of its type, with a tag only where the
    /// dictionary has one, not empty, and short enough for one attribute (253 bytes; 128 for
    /// a User-Password style value, 239 for a Tunnel-Password style one with its tag).
    fn fits(&self, a: ReplyAttribute) -> Result<ReplyAttribute, String> {
        let (def, bytes) = self.dictionary.encode(&a.name, a.tag, &a.value)?;
        let name = &def.name;
        if a.tag.is_some() && !def.has_tag {
            return Err(format!(
                "`{name}` takes no tag (`{name}:N` is for RFC 2868 attributes)"
            ));
        }
        if bytes.len() <= usize::from(def.has_tag && def.data_type == DataType::String) {
            return Err(format!("`{name}`: an empty value"));
        }
        // A vendor attribute also carries the vendor (4 octets) and its own type and
        // length fields inside the Vendor-Specific.
        let (t, l) = self.dictionary.vendor_format(def.vendor);
        let room = if def.vendor == 0 {
            253
        } else {
            253 - 4 - usize::from(t) - usize::from(l)
        };
        let limit = match def.encrypt {
            1 => 128.min(room),
            2 => 239.min(room),
            _ => room,
        };
        if bytes.len() > limit {
            return Err(format!(
                "`{name}`: {} bytes, at most {limit} fit",
                bytes.len()
            ));
        }
        Ok(a)
    }

    fn conditions(&mut self, key: &str, node: &Node, out: &mut Vec<Condition>) {
        // A table is a matcher when its keys are operators, else a group of fields
        // (`cert = { ou = "Staff" }` is `cert.ou = "Staff"`).
        if let Value::Table(entries) = &node.value {
            let ops = entries
                .iter()
                .filter(|(k, _)| OPERATORS.contains(&k.as_str()))
                .count();
            if entries.is_empty() {
                self.error(&node.at, format!("`{key}`: an empty table"));
                return;
            }
            if ops == 0 {
                for (k, v) in entries {
                    self.conditions(&format!("{key}.{k}"), v, out);
                }
                return;
            }
            if ops != entries.len() {
                self.error(
                    &node.at,
                    format!(
                        "`{key}` mixes matcher operators ({}) with other keys",
                        OPERATORS.join(", ")
                    ),
                );
                return;
            }
        }
        let Some(field) = Field::parse(key) else {
            self.error(
                &node.at,
                format!("unknown fact `{key}` (facts: {FIELD_NAMES})"),
            );
            return;
        };
        if let Field::Attribute(name) = &field {
            match self.dictionary.by_name(name) {
                None => {
                    self.error(&node.at, format!("no attribute `{name}` in the dictionary"));
                    return;
                }
                Some(def) if !is_fact(def) => {
                    self.error(
                        &node.at,
                        format!(
                            "`attr.{name}` is never a fact: secrets, EAP payloads, State, \
                             Message-Authenticator and octets are not matched on"
                        ),
                    );
                    return;
                }
                Some(_) => {}
            }
        }
        if let Some(matcher) = self.matcher(&field, key, node) {
            out.push(Condition {
                field,
                matcher,
                text: format!("{key} = {node}"),
                at: node.at.clone(),
                id: 0,
            });
        }
    }

    fn matcher(&mut self, field: &Field, key: &str, node: &Node) -> Option<Matcher> {
        let tests = match &node.value {
            Value::Table(ops) => {
                let mut tests = Vec::new();
                for (op, v) in ops {
                    tests.push(self.operator(field, key, op, v)?);
                }
                if tests.is_empty() {
                    self.error(&node.at, format!("`{key}`: an empty matcher"));
                    return None;
                }
                tests
            }
            _ => vec![self.operator(field, key, "eq", node)?],
        };
        Some(Matcher { tests })
    }

    /// One operator's test; `eq` is also the bare value (`ssid = "Corp"`).
    fn operator(&mut self, field: &Field, key: &str, op: &str, v: &Node) -> Option<Test> {
        let kind = field.kind();
        let wrong = |c: &mut Self, what: &str| {
            c.error(&v.at, format!("`{key}` {what}, not {v}"));
            None
        };
        match (op, kind) {
            ("not", _) => {
                let inner = self.matcher(field, key, v)?;
                Some(Test::Not(Box::new(inner)))
            }
            ("present", _) => match v.value {
                Value::Bool(b) => Some(Test::Present(b)),
                _ => wrong(self, "`present` takes true or false"),
            },
            ("lt" | "le" | "gt" | "ge", Kind::Text | Kind::Number) => {
                let cmp = match op {
                    "lt" => Compare::Less,
                    "le" => Compare::LessOrEqual,
                    "gt" => Compare::Greater,
                    _ => Compare::GreaterOrEqual,
                };
                match v.value {
                    #[allow(clippy::cast_precision_loss, reason = "policy numbers are small")]
                    Value::Int(n) => Some(Test::Number(cmp, n as f64)),
                    Value::Float(n) => Some(Test::Number(cmp, n)),
                    _ => wrong(self, "compares with a number"),
                }
            }
            ("eq", Kind::Number) => {
                let nums: Option<Vec<f64>> = one_or_many(v)
                    .iter()
                    .map(|n| match n.value {
                        #[allow(clippy::cast_precision_loss, reason = "policy numbers are small")]
                        Value::Int(i) => Some(i as f64),
                        Value::Float(f) => Some(f),
                        _ => None,
                    })
                    .collect();
                match nums {
                    Some(n) if !n.is_empty() => Some(Test::NumberIs(n)),
                    _ => wrong(
                        self,
                        "is a number: give a number, a list of them, or lt/le/gt/ge",
                    ),
                }
            }
            ("eq", Kind::Bool) => match v.value {
                Value::Bool(b) => Some(Test::Is(b)),
                _ => wrong(self, "is true or false"),
            },
            ("eq", _) if matches!(&v.value, Value::Array(a) if a.is_empty()) => {
                wrong(self, "needs at least one value")
            }
            ("eq", Kind::TimeOfDay) => {
                let mut ranges = Vec::new();
                for n in one_or_many(v) {
                    match n.as_str().and_then(time_range) {
                        Some(r) => ranges.push(r),
                        None => return wrong(self, "is a time range \"HH:MM-HH:MM\" (or a list)"),
                    }
                }
                Some(Test::Between(ranges))
            }
            ("eq", Kind::Weekday) => {
                let mut mask = 0u8;
                for n in one_or_many(v) {
                    match n.as_str().and_then(day_range) {
                        Some(m) => mask |= m,
                        None => {
                            return wrong(
                                self,
                                "is days: \"mon\"..\"sun\" or a range like \"mon-fri\" (or a list)",
                            )
                        }
                    }
                }
                Some(Test::Days(mask))
            }
            ("prefix" | "suffix" | "glob" | "regex", Kind::Text)
                if matches!(field, Field::CertSerial) =>
            {
                wrong(
                    self,
                    &format!(
                        "takes whole serials only (eq, lists, not), compared as hex numbers: \
                         a {op} on digits would not mean what it says"
                    ),
                )
            }
            ("eq", Kind::Text)
                if matches!(field, Field::CertSerial)
                    && one_or_many(v)
                        .iter()
                        .any(|n| !matches!(n.value, Value::Str(_))) =>
            {
                wrong(
                    self,
                    "is a quoted string of hex digits (\"0A01\"): unquoted, TOML reads 0xa01 as \
                     the number 2561",
                )
            }
            ("prefix" | "suffix" | "glob" | "regex", Kind::Text)
                if matches!(field, Field::CertSubject | Field::CertIssuer) =>
            {
                wrong(
                    self,
                    &format!(
                        "takes whole names only (eq): a {op} could match across an escaped \
                         `\\,` inside a device-chosen value; match parts with cert.cn, cert.o, \
                         cert.ou"
                    ),
                )
            }
            ("eq" | "prefix" | "suffix" | "glob" | "regex", Kind::Text) => {
                let mut texts = Vec::new();
                for n in one_or_many(v) {
                    match &n.value {
                        Value::Str(s) => texts.push((s.clone(), n.at.clone())),
                        Value::Int(i) if op == "eq" => texts.push((i.to_string(), n.at.clone())),
                        _ => {
                            return wrong(
                                self,
                                &format!("`{op}` takes a string or a list of strings"),
                            )
                        }
                    }
                }
                if texts.is_empty() {
                    return wrong(self, "needs at least one value");
                }
                let texts: Vec<(String, Place)> = texts
                    .into_iter()
                    .map(|(t, at)| (self.normalise(field, key, op, t, &at), at))
                    .collect();
                let plain = || texts.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
                Some(match op {
                    "eq" => Test::Equals(plain()),
                    "prefix" => Test::Prefix(plain()),
                    "suffix" => Test::Suffix(plain()),
                    "glob" => Test::Glob(plain()),
                    _ => {
                        let mut res = Vec::new();
                        for (t, at) in &texts {
                            // MACs are uppercase in the facts; a pattern need not be.
                            let case = matches!(field, Field::CallingStation);
                            match RegexBuilder::new(t)
                                .case_insensitive(case)
                                .size_limit(REGEX_SIZE_LIMIT)
                                .build()
                            {
                                Ok(r) => res.push(r),
                                Err(e) => {
                                    let first = e.to_string();
                                    let why = first.lines().last().unwrap_or("invalid");
                                    self.error(
                                        at,
                                        format!("`{key}`: {op} {t:?} does not compile: {why}"),
                                    );
                                    return None;
                                }
                            }
                        }
                        Test::Regex(res)
                    }
                })
            }
            (op, _) if OPERATORS.contains(&op) => {
                wrong(self, &format!("does not take `{op}` (a {kind:?} fact)"))
            }
            (op, _) => wrong(self, &format!("has no operator `{op}`")),
        }
    }

    /// Puts a policy's value in the form the facts have: MACs as `AA-BB-CC-DD-EE-FF`,
    /// serials as lowercase hex without separators, EKU names as OIDs; and refuses a value
    /// the fact never has (a revocation outcome the policy never sees, a TLS version).
    fn normalise(&mut self, field: &Field, key: &str, op: &str, t: String, at: &Place) -> String {
        match (field, op) {
            (Field::CallingStation, "eq") => station_id(t.as_bytes()),
            (Field::CallingStation, "prefix" | "suffix") => match mac_part(&t) {
                Some(m) => m,
                None => {
                    self.error(
                        at,
                        format!(
                            "`{key}`: {op} {t:?} is not whole octets of a MAC address \
                             (e.g. \"02:00:00\")"
                        ),
                    );
                    t
                }
            },
            (Field::CallingStation, "glob") if t.contains([':', '.']) => {
                self.error(
                    at,
                    format!(
                        "`{key}` is written AA-BB-CC-DD-EE-FF (uppercase, dashes) whatever the \
                         NAS sent: write the {op} in that form, not {t:?}"
                    ),
                );
                t
            }
            (Field::CallingStation, "regex") if t.contains(':') => {
                self.error(
                    at,
                    format!(
                        "`{key}` is written AA-BB-CC-DD-EE-FF (uppercase, dashes) whatever the \
                         NAS sent: write the {op} in that form, not {t:?}"
                    ),
                );
                t
            }
            (Field::CertSerial, "eq" | "prefix" | "suffix") => {
                let hex = serial_digits(&t);
                if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    self.error(
                        at,
                        format!(
                            "`{key}` is hex, as `openssl x509 -serial` prints it (8A01, \
                             8a:01, 0x8A01), not {t:?}"
                        ),
                    );
                }
                // A suffix keeps its zeros; a whole serial or a prefix is a number.
                if op == "suffix" {
                    hex
                } else {
                    serial_key(&t)
                }
            }
            (Field::NasIp | Field::CertSanIp, "eq") => match t.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => {
                    self.error(
                        at,
                        format!("`{key}` is an IP address (one or a list), not {t:?}"),
                    );
                    t
                }
            },
            (Field::CertEku, "eq") => eku_oid(&t).map_or(t, str::to_owned),
            (Field::Revocation, "eq") => {
                if !matches!(t.as_str(), "good" | "soft_failed" | "not_checked") {
                    self.error(
                        at,
                        format!(
                            "`{key}` is good, soft_failed or not_checked, not {t:?} (revoked, \
                             unknown and invalid are refused before any rule)"
                        ),
                    );
                }
                t
            }
            (Field::TlsVersion, "eq") => {
                if !matches!(t.as_str(), "1.2" | "1.3") {
                    self.error(at, format!("`{key}` is \"1.2\" or \"1.3\", not {t:?}"));
                }
                t
            }
            _ => t,
        }
    }

    fn lint(&mut self, rules: &[Rule], files: &[PolicyFile]) {
        let Some(last) = rules.last() else {
            let at = files.first().map_or_else(Place::default, |f| Place {
                file: f.name.clone(),
                line: 1,
            });
            self.error(
                &at,
                "no rules: a policy needs at least its default rule (a last [[rule]] without `when`)",
            );
            return;
        };
        if !last.conditions.is_empty() {
            self.rule = Some(last.name.clone());
            self.error(
                &last.at,
                "missing default: the last rule has conditions, so some devices would match no \
                 rule; add a last [[rule]] without `when` (the default)",
            );
        }
        let mut names: BTreeMap<&str, &Place> = BTreeMap::new();
        for (i, r) in rules.iter().enumerate() {
            self.rule = Some(r.name.clone());
            if let Some(first) = names.insert(&r.name, &r.at) {
                let first = first.clone();
                self.error(
                    &r.at,
                    format!("a second rule of this name (first at {first})"),
                );
            }
            // An earlier rule whose conditions are all among this one's matches every
            // device this one would: this one can never match.
            let shadow = rules.iter().take(i).find(|e| {
                e.conditions
                    .iter()
                    .all(|c| r.conditions.iter().any(|d| d.text == c.text))
            });
            if let Some(e) = shadow {
                let why = if e.conditions.is_empty() {
                    "matches every device"
                } else {
                    "tests a subset of this rule's conditions"
                };
                self.error(
                    &r.at,
                    format!(
                        "can never match: rule `{}` ({}) before it {why}",
                        e.name, e.at
                    ),
                );
            }
        }
    }
}

fn one_or_many(v: &Node) -> Vec<&Node> {
    match &v.value {
        Value::Array(items) => items.iter().collect(),
        _ => vec![v],
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

/// A rule name or reject reason: a short label, safe as a metric label and in logs.
fn valid_label(s: &str) -> bool {
    (1..=MAX_REASON).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'))
}

/// `Name = value` or `Name:tag = value`; the value may be in double quotes.
///
/// # Errors
/// No `=`, an empty name, a tag that is not a number.
pub fn parse_attribute(text: &str) -> Result<ReplyAttribute, String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not `Name = value`"))?;
    let (name, value) = (name.trim(), value.trim());
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) => (
            n.trim(),
            Some(
                t.trim()
                    .parse::<u8>()
                    .map_err(|_| format!("{text:?}: the tag after `:` is a number 0..=31"))?,
            ),
        ),
        None => (name, None),
    };
    if name.is_empty() {
        return Err(format!("{text:?} has no attribute name"));
    }
    Ok(ReplyAttribute::new(name, tag, value))
}

/// Whole octets of a MAC address in any notation (`02:00:00`, `0200.00`, `02-00-00`) in
/// the form Calling-Station-Id facts have (`02-00-00`), or `None`.
fn mac_part(t: &str) -> Option<String> {
    let hex: Vec<char> = t.chars().filter(char::is_ascii_hexdigit).collect();
    let only_mac = t
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '-' | '.'));
    if !only_mac || hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 12 {
        return None;
    }
    Some(
        hex.chunks(2)
            .map(|p| p.iter().map(char::to_ascii_uppercase).collect::<String>())
            .collect::<Vec<_>>()
            .join("-"),
    )
}

/// `"HH:MM-HH:MM"` as minutes of the day.
fn time_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
    };
    Some((minutes(a)?, minutes(b)?))
}

/// `"mon"` or `"mon-fri"` (wrapping: `"fri-mon"`) as a weekday mask, Monday bit 0.
fn day_range(s: &str) -> Option<u8> {
    let day = |d: &str| DAYS.iter().position(|n| n.eq_ignore_ascii_case(d.trim()));
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (day(a)?, day(b)?),
        None => (day(s)?, day(s)?),
    };
    let mut mask = 0u8;
    let mut d = a;
    loop {
        mask |= 1 << d;
        if d == b {
            break;
        }
        d = (d + 1) % 7;
    }
    Some(mask)
}

/// OIDs of the extended key usages admins name (RFC 5280 §4.2.1.12).
fn eku_oid(name: &str) -> Option<&'static str> {
    Some(match name {
        "serverAuth" => "1.3.6.1.5.5.7.3.1",
        "clientAuth" => "1.3.6.1.5.5.7.3.2",
        "codeSigning" => "1.3.6.1.5.5.7.3.3",
        "emailProtection" => "1.3.6.1.5.5.7.3.4",
        "timeStamping" => "1.3.6.1.5.5.7.3.8",
        "OCSPSigning" => "1.3.6.1.5.5.7.3.9",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jiff::tz::TimeZone;

    use super::*;
    use crate::policy::{Action, Policy};

    fn files(texts: &[&str]) -> Vec<PolicyFile> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| PolicyFile {
                name: format!("{i}.toml"),
                text: (*t).to_owned(),
            })
            .collect()
    }

    fn compile_all(texts: &[&str]) -> Result<Policy, Vec<PolicyError>> {
        Policy::compile(
            &files(texts),
            Arc::new(Dictionary::builtin().unwrap()),
            TimeZone::UTC,
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match compile_all(&[text]) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    const DEFAULT: &str = "\n[[rule]]\nname = \"default\"\nreject = \"no\"\n";

    #[test]
    fn each_mistake_is_refused_with_its_file_line_and_rule() {
        let table: &[(&str, &str)] = &[
            (
                "[[rule]]\nname = \"a\"\nwhen = { cert.department = \"x\" }\naccept = true\n",
                "0.toml:3: rule `a`: unknown fact `cert.department`",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { attr.No-Such-Attribute = \"x\" }\naccept = true\n",
                "0.toml:3: rule `a`: no attribute `No-Such-Attribute` in the dictionary",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Session-Timeout = soon\"]\n",
                "0.toml:3: rule `a`: `soon` is not a number or a VALUE name (attribute `Session-Timeout`)",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Not-An-Attribute = 1\"]\n",
                "0.toml:3: rule `a`: no attribute `Not-An-Attribute` in the dictionary",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"EAP-Message = 0x01\"]\n",
                "0.toml:3: rule `a`: `EAP-Message` is written by the server, not by a policy",
            ),
            (
                "[[rule]]\nname = \"a\"\nvlan = \"staf\"\n",
                "0.toml:3: rule `a`: unknown VLAN preset `staf`",
            ),
            (
                "[[rule]]\nname = \"a\"\nvlan = 5000\n",
                "0.toml:3: rule `a`: `vlan` is a [vlans] name or an ID 1..=4094",
            ),
            (
                "[[rule]]\nname = \"a\"\npreset = \"quarantine\"\n",
                "0.toml:3: rule `a`: unknown preset \"quarantine\" (defined: none)",
            ),
            (
                "[[rule]]\nname = \"a\"\nsets = [\"aruba\"]\n",
                "0.toml:3: rule `a`: unknown set \"aruba\"",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { cert.cn = { regex = \"(unclosed\" } }\naccept = true\n",
                "0.toml:3: rule `a`: `cert.cn`: regex \"(unclosed\" does not compile",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { cert.days_left = \"soon\" }\naccept = true\n",
                "0.toml:3: rule `a`: `cert.days_left` is a number",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { time = \"8-18\" }\naccept = true\n",
                "0.toml:3: rule `a`: `time` is a time range",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { days = \"weekdays\" }\naccept = true\n",
                "0.toml:3: rule `a`: `days` is days",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { revocation = \"revoked\" }\naccept = true\n",
                "0.toml:3: rule `a`: `revocation` is good, soft_failed or not_checked",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { ssid = { matches = \"x\" } }\naccept = true\n",
                "0.toml:3: rule `a`: unknown fact `ssid.matches`",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { ssid = { prefix = \"x\", y = 1 } }\naccept = true\n",
                "0.toml:3: rule `a`: `ssid` mixes matcher operators",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { ssid = \"x\" }\n",
                "0.toml:1: rule `a`: the rule does nothing",
            ),
            (
                "[[rule]]\nname = \"a\"\nreject = \"x\"\nvlan = 10\n",
                "0.toml:3: rule `a`: `reject` cannot go with vlan",
            ),
            (
                "[[rule]]\nname = \"a\"\nreject = \"not a label!\"\n",
                "0.toml:3: rule `a`: `reject` is the reason",
            ),
            (
                "[[rule]]\nwhen = { ssid = \"x\" }\naccept = true\n",
                "0.toml:1: a rule needs a `name`",
            ),
            (
                "[[rule]]\nname = \"a\"\naccept = true\nvlans = 3\n",
                "0.toml:4: rule `a`: unknown key `vlans`",
            ),
            ("[vlan]\nstaff = 100\n", "0.toml:1: unknown key `vlan`"),
            (
                "[vlans]\nstaff = 0\n",
                "0.toml:2: VLAN `staff` must be an ID 1..=4094",
            ),
            ("[[rule]\nname = \"a\"\n", "0.toml:1: not valid TOML"),
            (
                "[[rule]]\nname = \"a\"\nwhen = { attr.Message-Authenticator = { present = true } }\naccept = true\n",
                "0.toml:3: rule `a`: `attr.Message-Authenticator` is never a fact",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { attr.User-Password = \"x\" }\naccept = true\n",
                "0.toml:3: rule `a`: `attr.User-Password` is never a fact",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { attr.Class = \"x\" }\naccept = true\n",
                "0.toml:3: rule `a`: `attr.Class` is never a fact",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"MS-MPPE-Send-Key = 0x0000\"]\n",
                "0.toml:3: rule `a`: `MS-MPPE-Send-Key` is written by the server",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Vendor-Specific = staff\"]\n",
                "0.toml:3: rule `a`: `Vendor-Specific` is written by the server",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { time = [] }\naccept = true\n",
                "0.toml:3: rule `a`: `time` needs at least one value",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { cert.ou = [] }\naccept = true\n",
                "0.toml:3: rule `a`: `cert.ou` needs at least one value",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Filter-Id = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]\n",
                "0.toml:3: rule `a`: `Filter-Id`: 273 bytes, at most 253 fit",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Filter-Id:3 = staff\"]\n",
                "0.toml:3: rule `a`: `Filter-Id` takes no tag",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Filter-Id = \\\"\\\"\"]\n",
                "0.toml:3: rule `a`: `Filter-Id`: an empty value",
            ),
            (
                "[[rule]]\nname = \"a\"\nreject = \"revoked\"\n",
                "0.toml:3: rule `a`: `revoked` is a reason anchord gives itself",
            ),
            (
                "[[rule]]\nname = \"revocation\"\naccept = true\n",
                "0.toml:1: rule `revocation`: `revocation` is a name anchord gives its own checks",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { nas_ip = \"192.0.2.0/24\" }\naccept = true\n",
                "0.toml:3: rule `a`: `nas_ip` is an IP address",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { calling_station = { regex = \"^02:00\" } }\naccept = true\n",
                "0.toml:3: rule `a`: `calling_station` is written AA-BB-CC-DD-EE-FF",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { cert.serial = \"serial-1\" }\naccept = true\n",
                "0.toml:3: rule `a`: `cert.serial` is hex",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { cert.serial = 0xa01 }\naccept = true\n",
                "0.toml:3: rule `a`: `cert.serial` is a quoted string of hex digits",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { cert.serial = { prefix = \"01\" } }\naccept = true\n",
                "0.toml:3: rule `a`: `cert.serial` takes whole serials only",
            ),
            (
                "[[rule]]\nname = \"a\"\nreject = \"no_eap\"\n",
                "0.toml:3: rule `a`: `no_eap` is a reason anchord gives itself",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Class = 0x\"]\n",
                "0.toml:3: rule `a`: `Class`: an empty value",
            ),
            (
                "[[rule]]\nname = \"a\"\nattributes = [\"Aruba-User-Role = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n",
                "0.toml:3: rule `a`: `Aruba-User-Role`: 250 bytes, at most 247 fit",
            ),
            (
                "[[rule]]\nname = \"a\"\nreject = \"internal\"\n",
                "0.toml:3: rule `a`: `internal` is a reason anchord gives itself",
            ),
            (
                "[[rule]]\nname = \"a\"\nwhen = { calling_station = { glob = \"0200.00*\" } }\naccept = true\n",
                "0.toml:3: rule `a`: `calling_station` is written AA-BB-CC-DD-EE-FF",
            ),
        ];
        for (text, want) in table {
            let text = format!("{text}{DEFAULT}");
            let got = errors(&text);
            assert!(
                got.iter().any(|e| e.starts_with(want)),
                "{text}\nwant: {want}\ngot: {got:#?}"
            );
        }
    }

    #[test]
    fn rules_that_can_never_match_and_a_missing_default_are_refused() {
        let got = errors(
            "[[rule]]\nname = \"all\"\naccept = true\n\n\
             [[rule]]\nname = \"staff\"\nwhen = { cert.ou = \"Staff\" }\nvlan = 10\n",
        );
        assert!(
            got.iter().any(|e| e.starts_with(
                "0.toml:5: rule `staff`: can never match: rule `all` (0.toml:1) before it matches every device"
            )),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|e| e.starts_with("0.toml:5: rule `staff`: missing default")),
            "{got:#?}"
        );
        let got = errors(&format!(
            "[[rule]]\nname = \"corp\"\nwhen = {{ ssid = \"Corp\" }}\nvlan = 10\n\n\
             [[rule]]\nname = \"corp-staff\"\nwhen = {{ cert.ou = \"Staff\", ssid = \"Corp\" }}\nvlan = 20\n{DEFAULT}"
        ));
        assert!(
            got.iter().any(|e| e.starts_with(
                "0.toml:6: rule `corp-staff`: can never match: rule `corp` (0.toml:1) before it tests a subset"
            )),
            "{got:#?}"
        );
        let got = errors("[vlans]\nstaff = 10\n");
        assert!(got.iter().any(|e| e.contains("no rules")), "{got:#?}");
        let got = errors(
            "[[rule]]\nname = \"a\"\naccept = true\n\n[[rule]]\nname = \"a\"\nreject = \"x\"\n",
        );
        assert!(
            got.iter()
                .any(|e| e.contains("a second rule of this name (first at 0.toml:1)")),
            "{got:#?}"
        );
    }

    #[test]
    fn actions_build_the_reply_from_vlans_presets_sets_and_the_rules_own_attributes() {
        let policy = compile_all(&[
            "[vlans]\nstaff = 100\nguest = \"GUEST-VLAN\"\nquarantine = 999\n\n\
             [sets.staff-role]\nattributes = [\"Filter-Id = staff\", \"Session-Timeout = 3600\"]\n\n\
             [presets.quarantine]\nvlan = \"quarantine\"\nattributes = [\"Filter-Id = quarantine\", \"Reply-Message = \\\"Please update\\\"\"]\n",
            "[[rule]]\nname = \"staff\"\nwhen = { cert.ou = \"Staff\" }\nvlan = \"staff\"\nsets = [\"staff-role\"]\nattributes = [\"Session-Timeout = 28800\", \"Class = staff\", \"Class = laptop\"]\n\n\
             [[rule]]\nname = \"guest\"\nwhen = { cert.ou = \"Guest\" }\nvlan = \"guest\"\n\n\
             [[rule]]\nname = \"numbered\"\nwhen = { cert.ou = \"Lab\" }\nvlan = 42\nattributes = [\"Tunnel-Private-Group-Id:1 = 43\"]\n\n\
             [[rule]]\nname = \"default\"\npreset = \"quarantine\"\nattributes = [\"Session-Timeout = 300\"]\n",
        ])
        .unwrap();
        let reply = |rule: &str| -> Vec<String> {
            let r = policy.rules().iter().find(|r| r.name == rule).unwrap();
            match &r.action {
                Action::Accept { reply, .. } => reply
                    .iter()
                    .map(|a| match a.tag {
                        Some(t) => format!("{}:{t}={}", a.name, a.value),
                        None => format!("{}={}", a.name, a.value),
                    })
                    .collect(),
                Action::Reject(r) => vec![format!("reject {r}")],
            }
        };
        assert_eq!(
            reply("staff"),
            [
                "Tunnel-Type:0=VLAN",
                "Tunnel-Medium-Type:0=IEEE-802",
                "Tunnel-Private-Group-Id:0=100",
                "Filter-Id=staff",
                "Session-Timeout=28800",
                "Class=staff",
                "Class=laptop"
            ]
        );
        assert_eq!(reply("guest")[2], "Tunnel-Private-Group-Id:0=GUEST-VLAN");
        // The rule's own attribute replaces the VLAN's Tunnel-Private-Group-Id.
        assert_eq!(
            reply("numbered"),
            [
                "Tunnel-Type:0=VLAN",
                "Tunnel-Medium-Type:0=IEEE-802",
                "Tunnel-Private-Group-Id:1=43"
            ]
        );
        assert_eq!(
            reply("default"),
            [
                "Tunnel-Type:0=VLAN",
                "Tunnel-Medium-Type:0=IEEE-802",
                "Tunnel-Private-Group-Id:0=999",
                "Filter-Id=quarantine",
                "Reply-Message=Please update",
                "Session-Timeout=300"
            ]
        );
        let default = policy.rules().last().unwrap();
        assert!(
            matches!(&default.action, Action::Accept { preset: Some(p), .. } if p == "quarantine")
        );
    }

    #[test]
    fn the_version_changes_with_any_file_and_not_otherwise() {
        let a = compile_all(&["[[rule]]\nname = \"d\"\naccept = true\n"]).unwrap();
        let b = compile_all(&["[[rule]]\nname = \"d\"\naccept = true\n"]).unwrap();
        let c = compile_all(&["[[rule]]\nname = \"d\"\naccept = true\n# edited\n"]).unwrap();
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert_eq!(a.version().len(), 12);
    }

    #[test]
    fn attribute_text_reads_names_tags_and_quoted_values() {
        let a = parse_attribute("Cisco-AVPair = url-redirect-acl=QUARANTINE").unwrap();
        assert_eq!(
            (a.name.as_str(), a.tag, a.value.as_str()),
            ("Cisco-AVPair", None, "url-redirect-acl=QUARANTINE")
        );
        let a = parse_attribute("Tunnel-Private-Group-Id:2 = \"20\"").unwrap();
        assert_eq!(
            (a.name.as_str(), a.tag, a.value.as_str()),
            ("Tunnel-Private-Group-Id", Some(2), "20")
        );
        assert!(parse_attribute("Filter-Id").is_err());
        assert!(parse_attribute(" = x").is_err());
        assert!(parse_attribute("Filter-Id:x = y").is_err());
    }

    #[test]
    fn an_empty_policy_names_no_place_of_its_own() {
        let e = compile_all(&[]).unwrap_err();
        assert!(e.iter().any(|e| e.message.contains("no rules")), "{e:?}");
    }

    #[test]
    fn the_version_follows_the_dictionary_too() {
        let files = files(&["[[rule]]\nname = \"d\"\naccept = true\n"]);
        let a = Policy::compile(
            &files,
            Arc::new(Dictionary::builtin().unwrap()),
            TimeZone::UTC,
        )
        .unwrap();
        let small =
            Dictionary::parse("d", &mut |_| Ok("ATTRIBUTE Filter-Id 11 string\n".into())).unwrap();
        let b = Policy::compile(&files, Arc::new(small), TimeZone::UTC).unwrap();
        assert_ne!(a.version(), b.version());
    }

    #[test]
    fn hidden_attributes_count_at_their_size_on_the_wire() {
        let many = vec!["\"Tunnel-Password:1 = a\""; 190].join(", ");
        let got = errors(&format!(
            "[[rule]]\nname = \"a\"\nattributes = [{many}]\n{DEFAULT}"
        ));
        assert!(
            got.iter()
                .any(|e| e.contains("the reply's attributes take")),
            "{got:#?}"
        );
    }
}
