//! What a posture source is, as validated settings: where to ask, how to take the device's
//! id from its certificate, the lookup's steps, how the answer maps to posture facts, and
//! the source's auth, timing, cache, rate, polling and webhook settings. Built by
//! [`crate::config`] from `[[posture.source]]`; nothing here opens a socket.

use std::fmt;
use std::time::Duration;

use regex::Regex;
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

/// Every posture source, in the configured order (the order the policy sees them in).
#[derive(Debug, Clone, PartialEq)]
pub struct PostureSettings {
    /// The sources.
    pub sources: Vec<SourceSettings>,
}

/// One posture source (an MDM or EDR API).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Its name: the policy's `posture.<name>.<fact>`, a metric label.
    pub name: String,
    /// Scheme, host and port (and a path prefix) every request goes to.
    pub base: Url,
    /// How the device's id is taken, first that yields one wins.
    pub identity: Vec<Extractor>,
    /// The lookup: one request, or several where one id leads to another.
    pub steps: Vec<Step>,
    /// How the device's record maps to posture facts.
    pub facts: FactMap,
    /// How requests authenticate.
    pub auth: Auth,
    /// Extra request headers (e.g. `Accept`), as written.
    pub headers: Vec<(String, String)>,
    /// Longest a lookup may take, token fetch and every step included.
    pub timeout: Duration,
    /// An answer this young is used as it is.
    pub fresh: Duration,
    /// An answer older than `fresh` and this young is used while a refresh runs in the
    /// background; older, it is not used.
    pub max_stale: Duration,
    /// Devices kept in the cache.
    pub cache_size: u64,
    /// Requests per second the source may receive from this server, sustained.
    pub rate: f64,
    /// Requests that may be sent at once after a quiet spell.
    pub burst: f64,
    /// Trust anchors for HTTPS (`ca_file`, else the system's bundle).
    pub roots: Vec<CertificateDer<'static>>,
    /// The background job fetching the source's non-compliant set, for sources that
    /// cannot push.
    pub poll: Option<Poll>,
    /// The webhook through which the source pushes changes.
    pub webhook: Option<Webhook>,
}

/// Where the device id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFrom {
    /// A SAN URI, with its prefix (e.g. `IntuneDeviceId://`) taken off.
    SanUri,
    /// A SAN dNSName.
    SanDns,
    /// A SAN UPN (Microsoft otherName).
    SanUpn,
    /// The subject CN.
    Cn,
    /// The certificate's serial (lowercase hex).
    Serial,
    /// Calling-Station-Id (`AA-BB-CC-DD-EE-FF`).
    CallingStation,
}

impl IdFrom {
    /// The name used in config and `posture lookup`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::SanUri => "san_uri",
            Self::SanDns => "san_dns",
            Self::SanUpn => "san_upn",
            Self::Cn => "cn",
            Self::Serial => "serial",
            Self::CallingStation => "calling_station",
        }
    }
}

/// One way to take the device's id: the value, its prefix stripped (values without the
/// prefix are skipped), then checked against the whole-value pattern before it may go into
/// a URL.
#[derive(Debug, Clone)]
pub struct Extractor {
    /// Where from.
    pub from: IdFrom,
    /// The prefix the value must start with, taken off (ASCII case ignored).
    pub prefix: String,
    /// The pattern the id must match in full.
    pub pattern: Regex,
    /// The pattern is a case-insensitive format (`guid`, `hex`, `mac`): ids differing only
    /// in ASCII case are one device.
    pub fold_case: bool,
}

impl PartialEq for Extractor {
    fn eq(&self, other: &Self) -> bool {
        self.from == other.from
            && self.fold_case == other.fold_case
            && self.prefix == other.prefix
            && self.pattern.as_str() == other.pattern.as_str()
    }
}

impl SourceSettings {
    /// Whether every id this source takes is of a case-insensitive format, so ids are
    /// compared with ASCII case ignored (else exactly).
    pub fn fold_case(&self) -> bool {
        !self.identity.is_empty() && self.identity.iter().all(|e| e.fold_case)
    }
}

/// Named id patterns (`pattern = "guid"`); anything else is a regular expression.
pub const PATTERNS: [(&str, &str); 4] = [
    (
        "guid",
        "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    ),
    ("hex", "[0-9A-Fa-f]{1,64}"),
    ("mac", "[0-9A-F]{2}(-[0-9A-F]{2}){5}"),
    ("serial", "[A-Za-z0-9-]{1,64}"),
];

/// A URL path (and query) with `{name}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// An unclosed `{`, an empty or odd placeholder name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (before, after) = rest.split_at(open);
            if !before.is_empty() {
                parts.push(Part::Text(before.to_owned()));
            }
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{text}`: a `{{` without its `}}`"))?;
            let name = after.get(1..close).unwrap_or_default();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`{text}`: `{{{name}}}` is not a placeholder (letters, digits, _)"
                ));
            }
            parts.push(Part::Var(name.to_owned()));
            rest = after.get(close + 1..).unwrap_or_default();
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The placeholders used.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text with each placeholder replaced by `value(name)` passed through `encode`;
    /// `None` when a placeholder has no value.
    pub fn fill(
        &self,
        value: impl Fn(&str) -> Option<String>,
        encode: impl Fn(&str) -> String,
    ) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&encode(&value(v)?)),
            }
        }
        Some(out)
    }
}

/// One request of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Path and query after the base URL; placeholders are the device `{id}` and values
    /// saved by earlier steps, percent-encoded.
    pub path: Template,
    /// For list endpoints: the JSON pointer of the array of results, which must hold
    /// exactly one element (zero or several: unknown device).
    pub results: Option<String>,
    /// Fields of the record (JSON pointers) that must equal these values: how the answer
    /// is proved to be about the device asked for.
    pub matches: Vec<(String, Template)>,
    /// Values taken from the record for later steps: `(name, pointer)`.
    pub save: Vec<(String, String)>,
}

/// A boolean fact: a JSON boolean, or a string compared (ASCII case ignored) with the
/// values that mean true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoolFact {
    /// Where in the record.
    pub pointer: String,
    /// Values meaning true (for a string field); empty: the field is a JSON boolean.
    pub equals: Vec<String>,
}

/// How a device record maps to posture facts: JSON pointers into the last step's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactMap {
    /// `compliant`.
    pub compliant: Option<BoolFact>,
    /// `managed`.
    pub managed: Option<BoolFact>,
    /// `risk_score`: a number, or a string holding one.
    pub risk_score: Option<String>,
    /// `os`.
    pub os: Option<String>,
    /// `os_version`.
    pub os_version: Option<String>,
    /// Last check-in: an RFC 3339 time or Unix seconds.
    pub last_seen: Option<String>,
    /// Further facts by name.
    pub extra: Vec<(String, String)>,
}

/// A secret read from a file; never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Zeroizing<String>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// How requests to a source authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// None.
    None,
    /// `Authorization: Bearer <token>`, the token from a file.
    Bearer(Secret),
    /// A header carrying a key from a file.
    ApiKey {
        /// The header (e.g. `X-API-Key`).
        header: String,
        /// The key.
        key: Secret,
    },
    /// OAuth2 client credentials (RFC 6749 §4.4): a token fetched, cached, refreshed
    /// before it expires and after a 401.
    OAuth2 {
        /// The token endpoint.
        token_url: Url,
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
        /// The scope asked for, if any (Graph: `https://graph.microsoft.com/.default`).
        scope: Option<String>,
    },
}

impl Auth {
    /// The name used in config and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bearer(_) => "bearer",
            Self::ApiKey { .. } => "api_key",
            Self::OAuth2 { .. } => "oauth2",
        }
    }
}

/// Polling a source's non-compliant set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// How often.
    pub interval: Duration,
    /// Path and query of the list (no placeholders).
    pub path: Template,
    /// Pointer of the array of device records in each page.
    pub results: String,
    /// Pointer of the id in each record: the id the identity extractors yield.
    pub id: String,
    /// Pointer of the next page's URL (e.g. `/@odata.nextLink`), followed only on the
    /// source's own origin.
    pub next: Option<String>,
    /// Most pages read per poll.
    pub max_pages: u32,
}

/// How the source's webhook events are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    /// `X-Anchord-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">` with
    /// `X-Anchord-Timestamp: <unix seconds>`.
    Hmac(Secret),
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// The source's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Authentication.
    pub auth: WebhookAuth,
    /// How far an event's timestamp may be from now.
    pub window: Duration,
}
