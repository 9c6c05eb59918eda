//! Configuration: `config/anchord.toml` parsed into [`raw`] types, then validated into
//! [`Config`]. Every error names the file, the line and the key; [`Config::load`] reports
//! all of them at once.

pub mod policy;
mod posture;
mod raw;
mod runtime;

pub use runtime::{PkiRuntime, Runtime};

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use crate::eap::SessionConfig;
use crate::pki::ca::ServerToken;
use crate::pki::crl::CrlStore;
use crate::pki::hsm::{Pin, TokenRef};
use crate::pki::ocsp::IdHash;
use crate::pki::revocation::{Method, Responder, Settings};
use crate::radius::dictionary::Dictionary;
use crate::radius::SharedSecret;
use crate::tls::{self, ServerKey, TlsVersion};

/// Largest fragment: keeps an Access-Challenge well under 4096 bytes.
pub const MAX_FRAGMENT_SIZE: u64 = 3000;
/// Smallest fragment an admin may configure.
pub const MIN_FRAGMENT_SIZE: u64 = 64;

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Key path such as `client[0].address`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A RADIUS client (NAS) entry.
#[derive(Debug, Clone)]
pub struct Client {
    /// Admin's name for it, used in logs.
    pub name: String,
    /// Address or network it sends from.
    pub network: IpNet,
    /// Shared secret.
    pub secret: SharedSecret,
    /// Drop Access-Requests without Message-Authenticator (BlastRADIUS).
    pub require_message_authenticator: bool,
    /// Drop Accounting-Requests without Message-Authenticator.
    pub accounting_require_message_authenticator: bool,
    /// Dynamic authorization (RFC 5176) toward this NAS, if on.
    pub das: Option<DasSettings>,
}

/// What anchord may ask a NAS's Dynamic Authorization Server (RFC 5176).
#[derive(Debug, Clone)]
pub struct DasSettings {
    /// CoA-Request with new attributes where it can; else Disconnect-Request only.
    pub coa: bool,
    /// With `coa`: the attributes (dictionary names) the NAS accepts in a CoA-Request. A
    /// change that needs any other, or would remove one the session has, is a Disconnect.
    pub coa_attributes: Vec<String>,
    /// The DAS address, if not the address the NAS's accounting came from.
    pub address: Option<std::net::IpAddr>,
    /// Its port.
    pub port: u16,
    /// Its secret (the client's unless `das_secret_file` is set).
    pub secret: SharedSecret,
}

impl Client {
    /// A client named `name` on loopback (unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            network: IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
            secret: SharedSecret::new(b"s".to_vec()),
            require_message_authenticator: true,
            accounting_require_message_authenticator: false,
            das: None,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Sockets to listen on.
    pub listen: Vec<SocketAddr>,
    /// Accounting sockets (RFC 2866); empty: no accounting listener.
    pub accounting_listen: Vec<SocketAddr>,
    /// A live session with no accounting update for this long is gone (2-3 times the
    /// NAS's interim interval).
    pub live_session_expiry: Duration,
    /// Most live sessions kept; the least recently updated are evicted beyond it.
    pub max_live_sessions: u64,
    /// Most live sessions one client (NAS entry) may have kept; its new ones beyond it are
    /// stored (audit) and answered but not kept. Defaults to half the table with several
    /// clients, the whole with one.
    pub max_live_sessions_per_client: u64,
    /// Acct-Interim-Interval (RFC 2869 §5.16) in every Access-Accept whose decision does not
    /// set one, when accounting listens: how often NASes send Interim-Updates, which keep
    /// live sessions from expiring. `None`: not sent.
    pub accounting_interim: Option<u32>,
    /// After a reload that changes the policy, re-run it on every live session's facts and
    /// act (CoA or Disconnect) on those whose outcome changes.
    pub reevaluate_live_sessions: bool,
    /// At most this many sessions acted on per second in that sweep.
    pub reevaluate_per_second: u32,
    /// Most EAP sessions kept at once; the least recently used is evicted beyond it.
    pub max_sessions: u64,
    /// Most EAP sessions one client (NAS entry) may hold, if set; new conversations beyond
    /// it are rejected, so one NAS cannot crowd out the others. Defaults to half the table
    /// when more than one client is configured; unset (one client): only the table's own
    /// bound applies (least recently used evicted).
    pub max_sessions_per_client: Option<u64>,
    /// Most conversations one device (Calling-Station-Id, per client) may have going; a new
    /// one beyond it is rejected.
    pub max_conversations_per_device: u64,
    /// An EAP session unused for this long is dropped.
    pub session_idle_timeout: Duration,
    /// Most requests processed concurrently; beyond it datagrams are dropped and counted.
    pub max_inflight: usize,
    /// Most of those from one client, if set (default: half, when more than one client is
    /// configured), so one NAS's flood cannot take every slot.
    pub max_inflight_per_client: Option<usize>,
    /// How long a reply is kept for retransmissions (RFC 5080 §2.2.2).
    pub duplicate_window: Duration,
    /// Bytes the replies kept for retransmissions may weigh in all. Read at start.
    pub duplicate_cache: usize,
    /// Bytes of datagrams each listening socket may hold unread (SO_RCVBUF; the kernel caps
    /// it at `net.core.rmem_max`). Read when the sockets are bound.
    pub receive_buffer: usize,
    /// EAP-TLS settings.
    pub tls: TlsSettings,
    /// VLAN for accepted devices, if any.
    pub vlan: Option<String>,
    /// Clients, most specific network first.
    pub clients: Vec<Client>,
    /// Clients whose secret is written inline (dev/demo only; warned at startup).
    pub inline_secrets: Vec<String>,
    /// Problems that do not stop the server, e.g. a secret file others may read; logged at
    /// startup and reload, reported by `check`.
    pub warnings: Vec<ConfigError>,
    /// Attribute names for logs.
    pub dictionary: Arc<Dictionary>,
    /// The dictionary file `server.dictionary` names (the built-in one when `None`).
    pub dictionary_path: Option<PathBuf>,
    /// The token holding the server key and trust anchors, when `[pki]` is set.
    pub pki: Option<PkiSettings>,
    /// Revocation checking, when `[revocation]` is set (and not `mode = "off"`).
    pub revocation: Option<RevocationSettings>,
    /// The admin HTTP listener (`/metrics`), when `[admin]` is set. Read at start.
    pub admin: Option<SocketAddr>,
    /// The bearer token the admin listener's commands need (`[admin] token_file`); without
    /// one they are off. Re-read at reload.
    pub admin_token: Option<crate::posture::settings::Secret>,
    /// Where audit records go, when `[audit]` is set.
    pub audit: Option<AuditSink>,
    /// The admin's policy files, when `[policy]` is set (else `vlan` for every device).
    pub policy: Option<PolicySettings>,
    /// The posture sources, when `[[posture.source]]` is set.
    pub posture: Option<crate::posture::PostureSettings>,
}

/// `[policy]`: where the rules are and the time zone they read.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The folder of `*.toml` rule files (loaded in name order); `tests/` in it holds the
    /// expectations.
    pub dir: PathBuf,
    /// The time zone of `time` and `days` conditions.
    pub zone: jiff::tz::TimeZone,
    /// Reload when a policy or dictionary file changes on disk.
    pub watch: bool,
    /// Where `[policy]` is written.
    pub at: Place,
}

/// Where audit records are written, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Appended to a file, reopened on SIGHUP (for logrotate).
    File(PathBuf),
    /// Standard output.
    Stdout,
    /// Syslog (RFC 5424) over UDP, one datagram per record.
    Syslog {
        /// The collector.
        address: SocketAddr,
        /// Facility code (RFC 5424 §6.2.1), e.g. 10 for authpriv.
        facility: u8,
    },
}

/// Syslog facility names and codes (RFC 5424 §6.2.1) that an audit trail may use.
const FACILITIES: &[(&str, u8)] = &[
    ("auth", 4),
    ("authpriv", 10),
    ("daemon", 3),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Where a setting is written, to point errors found later (opening a token) at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    file: PathBuf,
    line: Option<usize>,
    key: String,
}

impl Place {
    /// An error about the setting here.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            key: self.key.clone(),
            message: message.into(),
        }
    }
}

/// `[tls]`: how EAP-TLS sessions run.
#[derive(Debug, Clone)]
pub enum TlsSettings {
    /// The server key and trust anchors from files: the session settings, built.
    Files(Arc<SessionConfig>),
    /// The server key and trust anchors in the `[pki]` token: the runtime builds the
    /// session settings around them with these.
    Token {
        /// Versions offered.
        versions: Vec<TlsVersion>,
        /// Most TLS bytes in one EAP-TLS request.
        fragment_size: usize,
        /// Cap on one reassembled TLS message.
        max_message: usize,
        /// Cap on round trips.
        max_rounds: u32,
    },
}

/// `[pki]` as written: which token holds the server key and how to use it. Reading it
/// touches no token; the runtime opens it.
#[derive(Debug, Clone)]
pub struct PkiSettings {
    /// The server token and its PIN.
    pub server: ServerToken,
    /// Further tokens holding the same keys.
    pub fallbacks: Vec<TokenRef>,
    /// Signing sessions per token.
    pub sessions: usize,
    /// Deadline for a TLS step that signs.
    pub sign_timeout: Duration,
    /// How often the token is checked for a rotated server key.
    pub rotation_check: Duration,
    /// Where errors about the token and about the PIN point.
    pub(crate) token_at: Place,
    pub(crate) pin_at: Place,
}

impl PartialEq for PkiSettings {
    /// The same token, PIN and use: where errors would point does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.server == other.server
            && self.fallbacks == other.fallbacks
            && self.sessions == other.sessions
            && self.sign_timeout == other.sign_timeout
            && self.rotation_check == other.rotation_check
    }
}

/// `[revocation]` as written.
#[derive(Debug, Clone)]
pub struct RevocationSettings {
    /// What the checker is built from.
    pub settings: Settings,
    /// Where errors building it point.
    pub(crate) at: Place,
}

struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

/// A config file's text.
fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })
}

impl<'a> Ctx<'a> {
    /// A context for the config text `text` read from `file`.
    fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            dir: file.parent().unwrap_or(Path::new(".")),
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The text as the raw serde mirror; a syntax error or unknown key with its line.
    fn raw(&self) -> Result<raw::RawConfig, ConfigErrors> {
        toml::from_str(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ConfigErrors(vec![ConfigError {
                file: self.file.to_path_buf(),
                line: self.line_of(span.start..span.start + 1),
                key: String::new(),
                message: e.message().to_owned(),
            }])
        })
    }
}

impl Ctx<'_> {
    fn line_of(&self, span: Range<usize>) -> Option<usize> {
        let before = self.text.get(..span.start)?;
        (span.end > 0).then(|| before.matches('\n').count() + 1)
    }

    fn err(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let line = self.line_of(span);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Reads a file holding a secret, noting a warning when group or others may read it.
    /// The secret in file `f` without its trailing newline; an error at `key` (and `None`)
    /// when it cannot be read.
    fn secret_file(&mut self, f: &Spanned<String>, key: &str) -> Option<Vec<u8>> {
        match self.read_secret(f, key) {
            Ok(mut bytes) => {
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Some(bytes)
            }
            Err(e) => {
                let path = self.path(f.get_ref());
                self.err(
                    f.span(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn read_secret(&mut self, f: &Spanned<String>, key: &str) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.path(f.get_ref());
        let bytes = std::fs::read(&path)?;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            let line = self.line_of(f.span());
            self.warnings.push(ConfigError {
                file: self.file.to_path_buf(),
                line,
                key: key.to_owned(),
                message: format!(
                    "{} is readable by group or others (mode {mode:04o}): chmod 600 it",
                    path.display()
                ),
            });
        }
        Ok(bytes)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn place(&self, span: Range<usize>, key: impl Into<String>) -> Place {
        Place {
            file: self.file.to_path_buf(),
            line: self.line_of(span),
            key: key.into(),
        }
    }

    fn bounded(&mut self, v: &Spanned<u64>, key: &str, range: Range<u64>) -> u64 {
        let value = *v.get_ref();
        if !range.contains(&value) {
            self.err(
                v.span(),
                key,
                format!("{value} is outside {}..{}", range.start, range.end),
            );
        }
        value.clamp(range.start, range.end.saturating_sub(1))
    }
}

impl Config {
    /// Loads and validates a config file; relative paths in it are relative to its folder.
    ///
    /// # Errors
    /// Every problem found, each with file, line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::load_reporting(path).0
    }

    /// Like [`Self::load`], and also hands back the warnings, found even when the config
    /// has errors (for `check`, which reports everything at once).
    pub fn load_reporting(path: &Path) -> (Result<Self, ConfigErrors>, Vec<ConfigError>) {
        match read_text(path) {
            Ok(text) => Self::parse_reporting(path, &text),
            Err(e) => (Err(e), Vec::new()),
        }
    }

    /// Validates config text as if read from `path`.
    ///
    /// # Errors
    /// Every problem found, each with file, line and key.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        Self::parse_reporting(path, text).0
    }

    fn parse_reporting(path: &Path, text: &str) -> (Result<Self, ConfigErrors>, Vec<ConfigError>) {
        let mut ctx = Ctx::new(path, text);
        let raw = match ctx.raw() {
            Ok(r) => r,
            Err(e) => return (Err(e), Vec::new()),
        };
        let cfg = validate(&mut ctx, raw);
        let warnings = ctx.warnings;
        match cfg {
            Some(mut c) if ctx.errors.is_empty() => {
                c.warnings.clone_from(&warnings);
                (Ok(c), warnings)
            }
            _ => (Err(ConfigErrors(ctx.errors)), warnings),
        }
    }
}

/// What the policy tools (`anchord policy explain`, `policy test`) need of a config: its
/// dictionary, `[policy]`, the `[authorization]` VLAN and the client names. The rest of
/// the file (certificates, secrets) is not looked at, so the tools run on an admin's
/// workstation without the server's key material.
#[derive(Debug, Clone)]
pub struct PolicyPart {
    /// The dictionary.
    pub dictionary: Arc<Dictionary>,
    /// `[policy]`, if set.
    pub policy: Option<PolicySettings>,
    /// `[authorization] vlan`.
    pub vlan: Option<String>,
    /// The `[[client]]` names, in order.
    pub clients: Vec<String>,
    /// The posture sources (`anchord posture lookup`, `policy explain --live-posture`).
    pub posture: Option<crate::posture::PostureSettings>,
}

impl PolicyPart {
    /// Reads the policy-related part of the config at `path`.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or its dictionary or `[policy]` is wrong.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = read_text(path)?;
        let mut ctx = Ctx::new(path, &text);
        let raw = ctx.raw()?;
        let dictionary = load_dictionary(&mut ctx, raw.server.dictionary.as_ref());
        let policy = policy_settings(&mut ctx, &raw);
        let posture = raw
            .posture
            .as_ref()
            .and_then(|p| posture::posture_settings(&mut ctx, p))
            .filter(|p| !p.sources.is_empty());
        match dictionary {
            Some(d) if ctx.errors.is_empty() => Ok(Self {
                dictionary: Arc::new(d),
                policy,
                posture,
                vlan: raw.authorization.vlan.map(|v| v.into_inner()),
                clients: raw
                    .client
                    .into_iter()
                    .map(|c| c.name.into_inner())
                    .collect(),
            }),
            _ => Err(ConfigErrors(ctx.errors)),
        }
    }
}

/// What a NAS with `dynamic_authorization = "coa"` accepts in a CoA-Request unless
/// `coa_attributes` says: the VLAN (RFC 3580 §3.31), Filter-Id and Session-Timeout.
const DEFAULT_COA_ATTRIBUTES: [&str; 5] = [
    "Tunnel-Type",
    "Tunnel-Medium-Type",
    "Tunnel-Private-Group-Id",
    "Filter-Id",
    "Session-Timeout",
];

/// A client's `dynamic_authorization` settings, if on; errors into `ctx`.
fn client_das(
    ctx: &mut Ctx<'_>,
    c: &raw::RawClient,
    key: &dyn Fn(&str) -> String,
    secret: &[u8],
    dictionary: Option<&Dictionary>,
) -> Option<DasSettings> {
    let coa = match c
        .dynamic_authorization
        .as_ref()
        .map(|m| (m, m.get_ref().as_str()))
    {
        None | Some((_, "off")) => return None,
        Some((_, "disconnect")) => false,
        Some((_, "coa")) => true,
        Some((m, other)) => {
            ctx.err(
                m.span(),
                key("dynamic_authorization"),
                format!("`{other}`: one of \"off\", \"disconnect\", \"coa\""),
            );
            return None;
        }
    };
    let port = match &c.das_port {
        Some(p) => u16::try_from(ctx.bounded(p, &key("das_port"), 1..65_536)).unwrap_or(3799),
        None => 3799,
    };
    let address = match &c.das_address {
        None => None,
        Some(a) => match a.get_ref().parse::<std::net::IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                ctx.err(
                    a.span(),
                    key("das_address"),
                    format!("`{}` is not an IP address", a.get_ref()),
                );
                return None;
            }
        },
    };
    let secret = match &c.das_secret_file {
        None => secret.to_vec(),
        Some(f) => {
            let bytes = ctx.secret_file(f, &key("das_secret_file"))?;
            if bytes.is_empty() {
                ctx.err(f.span(), key("das_secret_file"), "the DAS secret is empty");
                return None;
            }
            bytes
        }
    };
    let coa_attributes = match &c.coa_attributes {
        None => DEFAULT_COA_ATTRIBUTES
            .iter()
            .map(|a| (*a).to_owned())
            .collect(),
        Some(list) => {
            let mut names = Vec::new();
            for name in list.get_ref() {
                match dictionary.map(|d| d.by_name(name)) {
                    Some(None) => ctx.err(
                        list.span(),
                        key("coa_attributes"),
                        format!("`{name}` is not in the dictionary"),
                    ),
                    Some(Some(def)) if def.encrypt != 0 => ctx.err(
                        list.span(),
                        key("coa_attributes"),
                        format!(
                            "`{name}` is hidden (encrypt={}): it cannot be sent in a CoA-Request",
                            def.encrypt
                        ),
                    ),
                    _ => names.push(name.clone()),
                }
            }
            names
        }
    };
    if !coa && c.coa_attributes.is_some() {
        if let Some(list) = &c.coa_attributes {
            ctx.err(
                list.span(),
                key("coa_attributes"),
                "only with dynamic_authorization = \"coa\"",
            );
        }
    }
    Some(DasSettings {
        coa,
        coa_attributes,
        address,
        port,
        secret: SharedSecret::new(secret),
    })
}

/// The socket addresses in `list` (`key[i]` in errors; `port` in the IPv6 example).
fn addresses(ctx: &mut Ctx<'_>, list: &[Spanned<String>], key: &str, port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (i, l) in list.iter().enumerate() {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => out.push(a),
            Err(_) => ctx.err(
                l.span(),
                format!("{key}[{i}]"),
                format!(
                    "`{}` is not an address:port (IPv6 as [::1]:{port})",
                    l.get_ref()
                ),
            ),
        }
    }
    out
}

fn validate(ctx: &mut Ctx<'_>, raw: raw::RawConfig) -> Option<Config> {
    let s = &raw.server;
    let listen = addresses(ctx, &s.listen, "server.listen", 1812);
    if listen.is_empty() && ctx.errors.is_empty() {
        ctx.err(0..0, "server.listen", "at least one address is needed");
    }
    let accounting_listen = match &s.accounting_listen {
        // Each auth address on the next port (1812 -> 1813); port 0 (tests) stays 0.
        None => listen
            .iter()
            .map(|a| {
                let mut a = *a;
                if a.port() != 0 {
                    a.set_port(a.port().saturating_add(1));
                }
                a
            })
            .collect(),
        Some(list) => addresses(ctx, list, "server.accounting_listen", 1813),
    };
    let live_session_expiry = ctx.bounded(
        &s.live_session_expiry_secs,
        "server.live_session_expiry_secs",
        60..604_801,
    );
    let max_live_sessions = ctx.bounded(
        &s.max_live_sessions,
        "server.max_live_sessions",
        1..100_000_001,
    );
    let interim = ctx.bounded(
        &s.accounting_interim_secs,
        "server.accounting_interim_secs",
        0..86_401,
    );
    if interim != 0 && interim < 60 {
        // RFC 2869 §5.16: not smaller than 60 seconds.
        ctx.err(
            s.accounting_interim_secs.span(),
            "server.accounting_interim_secs",
            format!("{interim}: 0 (not sent) or at least 60 seconds (RFC 2869 §5.16)"),
        );
    } else if interim != 0 && live_session_expiry < 2 * interim {
        ctx.err(
            s.live_session_expiry_secs.span(),
            "server.live_session_expiry_secs",
            format!(
                "{live_session_expiry} is less than twice accounting_interim_secs ({interim}): \
                 live sessions would expire between their Interim-Updates"
            ),
        );
    }
    let accounting_interim = (interim != 0 && !accounting_listen.is_empty())
        .then(|| u32::try_from(interim).unwrap_or(600));
    let reevaluate_per_second = u32::try_from(ctx.bounded(
        &s.reevaluate_per_second,
        "server.reevaluate_per_second",
        1..10_001,
    ))
    .unwrap_or(10);
    let max_sessions = ctx.bounded(&s.max_sessions, "server.max_sessions", 1..10_000_001);
    let max_sessions_per_client = s
        .max_sessions_per_client
        .as_ref()
        .map(|v| ctx.bounded(v, "server.max_sessions_per_client", 1..max_sessions + 1));
    let idle = ctx.bounded(
        &s.session_idle_timeout_secs,
        "server.session_idle_timeout_secs",
        1..3601,
    );
    let max_inflight = ctx.bounded(&s.max_inflight, "server.max_inflight", 1..65_537);
    let max_inflight_per_client = s
        .max_inflight_per_client
        .as_ref()
        .map(|v| ctx.bounded(v, "server.max_inflight_per_client", 1..max_inflight + 1));
    let max_conversations_per_device = ctx.bounded(
        &s.max_conversations_per_device,
        "server.max_conversations_per_device",
        1..10_001,
    );
    let receive_buffer_kib = ctx.bounded(
        &s.receive_buffer_kib,
        "server.receive_buffer_kib",
        64..262_145,
    );
    let dup = ctx.bounded(
        &s.duplicate_window_secs,
        "server.duplicate_window_secs",
        1..301,
    );
    let dup_mib = ctx.bounded(
        &s.duplicate_cache_mib,
        "server.duplicate_cache_mib",
        1..65_537,
    );

    let admin = raw.admin.as_ref().and_then(|a| admin_settings(ctx, a));
    let admin_token = raw
        .admin
        .as_ref()
        .and_then(|a| a.token_file.as_ref())
        .map(|f| {
            if admin.is_some_and(|a| !a.ip().is_loopback()) {
                let line = ctx.line_of(f.span());
                ctx.warnings.push(ConfigError {
                    file: ctx.file.to_path_buf(),
                    line,
                    key: "admin.token_file".into(),
                    message: "the admin token travels in plain HTTP to a listener others can \
                              reach: keep [admin] listen on loopback (or tunnel it)"
                        .into(),
                });
            }
            posture::secret(ctx, f, "admin.token_file")
        });
    let audit = raw.audit.as_ref().and_then(|a| audit_settings(ctx, a));
    let pki = raw.pki.as_ref().and_then(|p| pki_settings(ctx, p));
    let tls = tls_settings(ctx, &raw.tls, raw.pki.as_ref().map(Spanned::get_ref));
    let revocation = raw
        .revocation
        .as_ref()
        .and_then(|r| revocation_settings(ctx, r));
    let dictionary = load_dictionary(ctx, s.dictionary.as_ref());

    let policy = policy_settings(ctx, &raw);
    let posture = raw
        .posture
        .as_ref()
        .and_then(|p| posture::posture_settings(ctx, p))
        .filter(|p| !p.sources.is_empty());
    if admin.is_none()
        && posture
            .as_ref()
            .is_some_and(|p| p.sources.iter().any(|s| s.webhook.is_some()))
    {
        ctx.warnings.push(ConfigError {
            file: ctx.file.to_path_buf(),
            line: None,
            key: "admin".into(),
            message: "a posture source takes webhook events, but [admin] is not set: no \
                      listener receives them"
                .into(),
        });
    }

    let vlan = raw.authorization.vlan.as_ref().map(|v| {
        let text = v.get_ref().trim().to_owned();
        if text.is_empty() || text.len() > 252 {
            ctx.err(
                v.span(),
                "authorization.vlan",
                "a VLAN id or name of 1..=252 characters",
            );
        }
        text
    });

    let mut clients = Vec::new();
    let mut inline_secrets = Vec::new();
    // Conversations and per-client counts are bound to the client entry and logs name it:
    // two entries under one name would share them.
    let mut names: std::collections::HashMap<&str, Range<usize>> = std::collections::HashMap::new();
    for (i, c) in raw.client.iter().enumerate() {
        let key = |k: &str| format!("client[{i}].{k}");
        let name = c.name.get_ref();
        if let Some(first) = names.get(name.as_str()) {
            let first_line = ctx.line_of(first.clone()).unwrap_or(0);
            ctx.err(
                c.name.span(),
                key("name"),
                format!("duplicate client name `{name}` (first used at line {first_line}): names must be unique"),
            );
        } else {
            names.insert(name, c.name.span());
        }
        let network = match parse_network(c.address.get_ref()) {
            Some(n) => n,
            None => {
                ctx.err(
                    c.address.span(),
                    key("address"),
                    format!("`{}` is not an IP address or CIDR", c.address.get_ref()),
                );
                continue;
            }
        };
        let secret = match (&c.secret, &c.secret_file) {
            (Some(s), None) => {
                inline_secrets.push(c.name.get_ref().clone());
                Some((s.span(), s.get_ref().as_bytes().to_vec()))
            }
            (None, Some(f)) => ctx
                .secret_file(f, &key("secret_file"))
                .map(|bytes| (f.span(), bytes)),
            (Some(s), Some(_)) => {
                ctx.err(
                    s.span(),
                    key("secret"),
                    "set either secret or secret_file, not both",
                );
                None
            }
            (None, None) => {
                ctx.err(
                    c.address.span(),
                    key("secret_file"),
                    "a shared secret is required (secret_file, or secret for dev)",
                );
                None
            }
        };
        let Some((span, secret)) = secret else {
            continue;
        };
        if secret.is_empty() {
            ctx.err(span, key("secret"), "the shared secret is empty");
            continue;
        }
        let das = client_das(ctx, c, &key, &secret, dictionary.as_ref());
        clients.push(Client {
            name: c.name.get_ref().clone(),
            network,
            das,
            secret: SharedSecret::new(secret),
            require_message_authenticator: c.require_message_authenticator,
            accounting_require_message_authenticator: c.accounting_require_message_authenticator,
        });
    }
    if raw.client.is_empty() {
        ctx.err(
            0..0,
            "client",
            "no [[client]] defined: every request would be dropped",
        );
    }
    // Most specific network first, so a host entry wins over its subnet.
    clients.sort_by_key(|c| std::cmp::Reverse(c.network.prefix_len()));
    // With several NASes, none may take more than half of the session table or of the
    // in-flight slots unless the admin says otherwise: a flood of unauthenticated devices
    // behind one NAS then leaves room for the others.
    let shared = clients.len() > 1;
    let max_sessions_per_client =
        max_sessions_per_client.or_else(|| shared.then_some((max_sessions / 2).max(1)));
    let max_live_sessions_per_client = match &s.max_live_sessions_per_client {
        Some(v) => ctx.bounded(
            v,
            "server.max_live_sessions_per_client",
            1..max_live_sessions + 1,
        ),
        None if shared => (max_live_sessions / 2).max(1),
        None => max_live_sessions,
    };
    let max_inflight_per_client = max_inflight_per_client
        .or_else(|| shared.then_some((max_inflight / 2).max(1)))
        .and_then(|n| usize::try_from(n).ok());

    Some(Config {
        path: ctx.file.to_path_buf(),
        listen,
        accounting_listen,
        live_session_expiry: Duration::from_secs(live_session_expiry),
        max_live_sessions,
        max_live_sessions_per_client,
        accounting_interim,
        reevaluate_live_sessions: s.reevaluate_live_sessions,
        reevaluate_per_second,
        max_sessions,
        max_sessions_per_client,
        max_conversations_per_device,
        session_idle_timeout: Duration::from_secs(idle),
        max_inflight: usize::try_from(max_inflight).unwrap_or(1024),
        max_inflight_per_client,
        duplicate_window: Duration::from_secs(dup),
        duplicate_cache: usize::try_from(dup_mib << 20).unwrap_or(128 << 20),
        receive_buffer: usize::try_from(receive_buffer_kib * 1024).unwrap_or(4 << 20),
        tls: tls?,
        vlan,
        clients,
        inline_secrets,
        warnings: Vec::new(),
        dictionary: Arc::new(dictionary?),
        dictionary_path: s.dictionary.as_ref().map(|p| ctx.path(p.get_ref())),
        pki,
        revocation,
        admin,
        admin_token,
        audit,
        policy,
        posture,
    })
}

fn policy_settings(ctx: &mut Ctx<'_>, raw: &raw::RawConfig) -> Option<PolicySettings> {
    raw.policy.as_ref().and_then(|p| {
        let span = p.span();
        let p = p.get_ref();
        let zone = match jiff::tz::TimeZone::get(p.timezone.get_ref()) {
            Ok(z) => z,
            Err(e) => {
                ctx.err(
                    p.timezone.span(),
                    "policy.timezone",
                    format!("not a time zone (an IANA name like Europe/Berlin, or UTC): {e}"),
                );
                return None;
            }
        };
        if let Some(v) = &raw.authorization.vlan {
            ctx.err(
                v.span(),
                "authorization.vlan",
                "[policy] is set, so its rules give each device its VLAN: remove \
                 [authorization] vlan (or [policy], to give every device this VLAN)",
            );
        }
        Some(PolicySettings {
            dir: ctx.path(p.dir.get_ref()),
            zone,
            watch: p.watch,
            at: ctx.place(span, "policy"),
        })
    })
}

fn admin_settings(ctx: &mut Ctx<'_>, a: &raw::RawAdmin) -> Option<SocketAddr> {
    let Ok(addr) = a.listen.get_ref().parse::<SocketAddr>() else {
        ctx.err(
            a.listen.span(),
            "admin.listen",
            format!(
                "`{}` is not an address:port (e.g. 127.0.0.1:9812)",
                a.listen.get_ref()
            ),
        );
        return None;
    };
    if !addr.ip().is_loopback() {
        let line = ctx.line_of(a.listen.span());
        ctx.warnings.push(ConfigError {
            file: ctx.file.to_path_buf(),
            line,
            key: "admin.listen".into(),
            message: format!(
                "{addr} is not a loopback address: anyone who can reach it reads the metrics \
                 (client names, counts); keep it on 127.0.0.1 or firewall it"
            ),
        });
    }
    Some(addr)
}

fn audit_settings(ctx: &mut Ctx<'_>, a: &raw::RawAudit) -> Option<AuditSink> {
    match a.sink.get_ref().as_str() {
        "stdout" => Some(AuditSink::Stdout),
        "file" => {
            let Some(path) = &a.path else {
                ctx.err(
                    a.sink.span(),
                    "audit.path",
                    "sink = \"file\" needs path = \"...\" (the file records are appended to)",
                );
                return None;
            };
            Some(AuditSink::File(ctx.path(path.get_ref())))
        }
        "syslog" => {
            let Ok(address) = a.address.get_ref().parse::<SocketAddr>() else {
                ctx.err(
                    a.address.span(),
                    "audit.address",
                    format!(
                        "`{}` is not an address:port (e.g. 127.0.0.1:514)",
                        a.address.get_ref()
                    ),
                );
                return None;
            };
            let Some(&(_, facility)) = FACILITIES
                .iter()
                .find(|(name, _)| name == a.facility.get_ref())
            else {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                ctx.err(
                    a.facility.span(),
                    "audit.facility",
                    format!(
                        "`{}` is not one of {}",
                        a.facility.get_ref(),
                        names.join(", ")
                    ),
                );
                return None;
            };
            Some(AuditSink::Syslog { address, facility })
        }
        other => {
            ctx.err(
                a.sink.span(),
                "audit.sink",
                format!("`{other}` is not one of file, stdout, syslog"),
            );
            None
        }
    }
}

fn revocation_settings(ctx: &mut Ctx<'_>, r: &raw::RawRevocation) -> Option<RevocationSettings> {
    let timeout = ctx.bounded(&r.timeout_ms, "revocation.timeout_ms", 50..60_001);
    let skew = ctx.bounded(&r.skew_secs, "revocation.skew_secs", 0..3601);
    let max_ttl = ctx.bounded(&r.max_ttl_secs, "revocation.max_ttl_secs", 1..604_801);
    let negative = ctx.bounded(
        &r.negative_ttl_secs,
        "revocation.negative_ttl_secs",
        1..3601,
    );
    let cache_size = ctx.bounded(&r.cache_size, "revocation.cache_size", 1..10_000_001);
    let max_age = ctx.bounded(
        &r.max_age_without_next_update_secs,
        "revocation.max_age_without_next_update_secs",
        1..31_536_001,
    );
    let hash = match r.cert_id_hash.get_ref().as_str() {
        "sha1" => IdHash::Sha1,
        "sha256" => IdHash::Sha256,
        other => {
            ctx.err(
                r.cert_id_hash.span(),
                "revocation.cert_id_hash",
                format!("`{other}`: use \"sha1\" or \"sha256\""),
            );
            IdHash::Sha1
        }
    };
    let method = match r.method.get_ref().as_str() {
        "post" => Method::Post,
        "get" => Method::Get,
        other => {
            ctx.err(
                r.method.span(),
                "revocation.method",
                format!("`{other}`: use \"post\" or \"get\""),
            );
            Method::Post
        }
    };
    let mut responders = Vec::new();
    for (i, resp) in r.responders.iter().enumerate() {
        let url = resp.url.get_ref();
        if !url.starts_with("http://") {
            ctx.err(
                resp.url.span(),
                format!("revocation.responders[{i}].url"),
                format!("`{url}`: OCSP responders are http:// URLs"),
            );
        }
        responders.push(Responder {
            url: url.clone(),
            nonce: resp.nonce,
        });
    }
    let ocsp = match r.mode.get_ref().as_str() {
        "off" => return None,
        "ocsp" => true,
        "crl" => false,
        other => {
            ctx.err(
                r.mode.span(),
                "revocation.mode",
                format!("`{other}`: use \"ocsp\", \"crl\" or \"off\""),
            );
            return None;
        }
    };
    let crl_refresh = ctx.bounded(
        &r.crl_refresh_secs,
        "revocation.crl_refresh_secs",
        1..86_401,
    );
    let live_recheck = ctx.bounded(
        &r.live_recheck_secs,
        "revocation.live_recheck_secs",
        0..86_401,
    );
    let files: Vec<PathBuf> = r.crl_files.iter().map(|f| ctx.path(f.get_ref())).collect();
    let crls = if files.is_empty() {
        if !ocsp && !r.crl_distribution_points {
            ctx.err(
                r.mode.span(),
                "revocation.crl_files",
                "mode = \"crl\" needs CRL files or crl_distribution_points = true",
            );
        }
        None
    } else {
        match CrlStore::new(files) {
            Ok(store) => Some(Arc::new(store)),
            Err(errors) => {
                let span = r.crl_files.first().map_or(0..0, Spanned::span);
                for e in errors {
                    ctx.err(span.clone(), "revocation.crl_files", e);
                }
                None
            }
        }
    };
    let settings = Settings {
        responders,
        aia_nonce: r.aia_nonce,
        timeout: Duration::from_millis(timeout),
        hash,
        method,
        soft_fail: r.soft_fail,
        skew: Duration::from_secs(skew),
        max_age: Duration::from_secs(max_age),
        max_ttl: Duration::from_secs(max_ttl),
        negative_ttl: Duration::from_secs(negative),
        cache_size,
        ocsp,
        check_intermediates: r.check_intermediates,
        crls,
        crl_refresh: Duration::from_secs(crl_refresh),
        live_recheck: Duration::from_secs(live_recheck),
        crl_distribution_points: r.crl_distribution_points,
    };
    Some(RevocationSettings {
        settings,
        at: ctx.place(r.mode.span(), "revocation"),
    })
}

fn load_dictionary(ctx: &mut Ctx<'_>, path: Option<&Spanned<String>>) -> Option<Dictionary> {
    let (result, span) = match path {
        None => (Dictionary::builtin(), 0..0),
        Some(p) => {
            let root = ctx.path(p.get_ref());
            let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = root.to_string_lossy().into_owned();
            let result = Dictionary::parse(&name, &mut |f| {
                std::fs::read_to_string(dir.join(f)).map_err(|e| format!("cannot read: {e}"))
            });
            (result, p.span())
        }
    };
    match result {
        Ok(d) => Some(d),
        Err(errors) => {
            for e in errors {
                ctx.err(span.clone(), "server.dictionary", e.to_string());
            }
            None
        }
    }
}

fn parse_network(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn pki_settings(ctx: &mut Ctx<'_>, table: &Spanned<raw::RawPki>) -> Option<PkiSettings> {
    let p = table.get_ref();
    // A defaulted `token` has no place in the file: point at the table instead.
    let token_span = match p.token.span() {
        s if s.end > 0 => s,
        _ => table.span(),
    };
    let sessions = ctx.bounded(&p.sessions, "pki.sessions", 1..65);
    let sign_timeout = ctx.bounded(&p.sign_timeout_ms, "pki.sign_timeout_ms", 50..60_001);
    let rotation = ctx.bounded(&p.rotation_check_secs, "pki.rotation_check_secs", 1..86_401);
    let pin = match &p.pin_file {
        Some(f) => match ctx
            .read_secret(f, "pki.pin_file")
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
        {
            Ok(t) => Pin::new(t),
            Err(e) => {
                ctx.err(
                    f.span(),
                    "pki.pin_file",
                    format!("cannot read {}: {e}", ctx.path(f.get_ref()).display()),
                );
                return None;
            }
        },
        None => match std::env::var(p.pin_env.get_ref()) {
            Ok(v) => Pin::new(v),
            Err(_) => {
                ctx.err(
                    p.pin_env.span(),
                    "pki.pin_env",
                    format!(
                        "no PIN: set pin_file or the environment variable {}",
                        p.pin_env.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    let token = |m: &Spanned<String>, t: &Spanned<String>| TokenRef {
        module: PathBuf::from(m.get_ref()),
        label: t.get_ref().clone(),
    };
    let server = ServerToken {
        token: token(&p.module, &p.token),
        pin,
    };
    let fallbacks: Vec<TokenRef> = p
        .fallback
        .iter()
        .map(|f| token(&f.module, &f.token))
        .collect();
    let (pin_span, pin_key) = match &p.pin_file {
        Some(f) => (f.span(), "pki.pin_file"),
        None => (p.pin_env.span(), "pki.pin_env"),
    };
    Some(PkiSettings {
        token_at: ctx.place(token_span, "pki.token"),
        pin_at: ctx.place(pin_span, pin_key),
        server,
        fallbacks,
        sessions: usize::try_from(sessions).unwrap_or(4),
        sign_timeout: Duration::from_millis(sign_timeout),
        rotation_check: Duration::from_secs(rotation),
    })
}

fn tls_settings(
    ctx: &mut Ctx<'_>,
    t: &raw::RawTls,
    raw_pki: Option<&raw::RawPki>,
) -> Option<TlsSettings> {
    let fragment_size = ctx.bounded(
        &t.fragment_size,
        "tls.fragment_size",
        MIN_FRAGMENT_SIZE..MAX_FRAGMENT_SIZE + 1,
    );
    let max_message = ctx.bounded(&t.max_message_size, "tls.max_message_size", 4096..1_048_577);
    let max_rounds = ctx.bounded(&t.max_rounds, "tls.max_rounds", 4..1001);
    let mut versions = Vec::new();
    for v in t.versions.get_ref() {
        match v.as_str() {
            "1.2" => versions.push(TlsVersion::V1_2),
            "1.3" => versions.push(TlsVersion::V1_3),
            other => ctx.err(
                t.versions.span(),
                "tls.versions",
                format!("`{other}` is not a TLS version (\"1.2\", \"1.3\")"),
            ),
        }
    }
    if versions.is_empty() {
        ctx.err(
            t.versions.span(),
            "tls.versions",
            "at least one TLS version is needed",
        );
    }
    let (key, cas) = if raw_pki.is_some() {
        for (set, span, key) in [
            (t.certificate.as_ref().map(Spanned::span), "tls.certificate"),
            (t.private_key.as_ref().map(Spanned::span), "tls.private_key"),
            (t.ca.as_ref().map(Spanned::span), "tls.ca"),
        ]
        .map(|(s, k)| (s.is_some(), s.unwrap_or(0..0), k))
        {
            if set {
                ctx.err(span, key, "with [pki] the server key, its certificate and the trust anchors come from the token: remove this");
            }
        }
        if versions.is_empty() {
            return None;
        }
        return Some(TlsSettings::Token {
            versions,
            fragment_size: usize::try_from(fragment_size).unwrap_or(1024),
            max_message: usize::try_from(max_message).unwrap_or(65_536),
            max_rounds: u32::try_from(max_rounds).unwrap_or(100),
        });
    } else {
        let missing = |ctx: &mut Ctx<'_>, key: &str| {
            ctx.err(0..0, key, "required (or configure [pki] to use a token)")
        };
        let chain = match &t.certificate {
            Some(c) => load_certs(ctx, c, "tls.certificate"),
            None => {
                missing(ctx, "tls.certificate");
                None
            }
        };
        let key = match &t.private_key {
            Some(k) => match PrivateKeyDer::from_pem_file(ctx.path(k.get_ref())) {
                Ok(k) => Some(k),
                Err(e) => {
                    ctx.err(
                        k.span(),
                        "tls.private_key",
                        format!("{}: {e}", ctx.path(k.get_ref()).display()),
                    );
                    None
                }
            },
            None => {
                missing(ctx, "tls.private_key");
                None
            }
        };
        let mut cas = Vec::new();
        match &t.ca {
            Some(ca) if !ca.get_ref().is_empty() => {
                for p in ca.get_ref() {
                    let spanned = Spanned::new(ca.span(), p.clone());
                    cas.extend(load_certs(ctx, &spanned, "tls.ca").unwrap_or_default());
                }
            }
            Some(ca) => ctx.err(
                ca.span(),
                "tls.ca",
                "at least one CA file is needed to verify devices",
            ),
            None => missing(ctx, "tls.ca"),
        }
        (ServerKey::Files(chain?, key?), cas)
    };
    if versions.is_empty() || cas.is_empty() {
        return None;
    }
    let span = t.certificate.as_ref().map_or(0..0, Spanned::span);
    match tls::server_config_with(key, &cas, &versions) {
        Ok(tls) => Some(TlsSettings::Files(Arc::new(SessionConfig {
            tls: Arc::new(tls),
            fragment_size: usize::try_from(fragment_size).unwrap_or(1024),
            max_message: usize::try_from(max_message).unwrap_or(65_536),
            max_rounds: u32::try_from(max_rounds).unwrap_or(100),
        }))),
        Err(e) => {
            ctx.err(span, "tls", format!("certificate, key or CA refused: {e}"));
            None
        }
    }
}

fn load_certs(
    ctx: &mut Ctx<'_>,
    p: &Spanned<String>,
    key: &str,
) -> Option<Vec<CertificateDer<'static>>> {
    let path = ctx.path(p.get_ref());
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(&path).and_then(Iterator::collect);
    match certs {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            ctx.err(
                p.span(),
                key,
                format!("{}: no certificate in the file", path.display()),
            );
            None
        }
        Err(e) => {
            ctx.err(p.span(), key, format!("{}: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config with `extra` appended, in a folder holding a dev PKI.
    /// The base test config (the dev PKI, one client: nine lines) followed by `extra`; the
    /// folder holds the dev PKI and any secret file written there.
    pub(super) fn parse(extra: &str) -> (Result<Config, ConfigErrors>, Vec<ConfigError>) {
        use std::sync::OnceLock;
        static PKI: OnceLock<tempfile::TempDir> = OnceLock::new();
        let dir = PKI.get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            crate::pki::dev::generate(d.path(), time::OffsetDateTime::now_utc()).unwrap();
            d
        });
        let text = format!(
            "[tls]\ncertificate = \"server.pem\"\nprivate_key = \"server.key\"\n\
             ca = [\"root-ca.pem\"]\n\n[[client]]\nname = \"nas\"\naddress = \"127.0.0.1\"\n\
             secret = \"s\"\n{extra}"
        );
        Config::parse_reporting(&dir.path().join("anchord.toml"), &text)
    }

    pub(super) fn errors(extra: &str) -> Vec<(Option<usize>, String, String)> {
        match parse(extra).0 {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.into_iter()
                    .map(|e| (e.line, e.key, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn the_interim_interval_is_at_least_a_minute_and_live_sessions_outlast_two() {
        let c = parse("").0.unwrap();
        assert_eq!(c.accounting_interim, Some(600));
        let c = parse("[server]\naccounting_interim_secs = 0\n").0.unwrap();
        assert_eq!(c.accounting_interim, None);
        let c = parse("[server]\naccounting_listen = []\n").0.unwrap();
        assert_eq!(c.accounting_interim, None, "no accounting, no interim");
        let e = errors("[server]\naccounting_interim_secs = 30\n");
        assert_eq!(
            (e[0].0, e[0].1.as_str()),
            (Some(11), "server.accounting_interim_secs")
        );
        let e =
            errors("[server]\naccounting_interim_secs = 1200\nlive_session_expiry_secs = 1800\n");
        assert_eq!(
            (e[0].0, e[0].1.as_str()),
            (Some(12), "server.live_session_expiry_secs")
        );
        assert!(e[0].2.contains("less than twice"), "{e:?}");
    }

    #[test]
    fn a_das_needs_a_secret_and_coa_attributes_must_be_sendable() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("das.secret");
        std::fs::write(&empty, "\n").unwrap();
        let errs = errors(&format!(
            "dynamic_authorization = \"disconnect\"\ndas_secret_file = \"{}\"\n",
            empty.display()
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].1, "client[0].das_secret_file");
        assert_eq!(errs[0].2, "the DAS secret is empty");
        let c = parse("dynamic_authorization = \"coa\"\n").0.unwrap();
        let das = c.clients[0].das.as_ref().unwrap();
        assert!(das.coa);
        assert!(das
            .coa_attributes
            .contains(&"Tunnel-Private-Group-Id".to_owned()));
        let errs = errors(
            "dynamic_authorization = \"coa\"\ncoa_attributes = [\"Filter-Id\", \"Tunnel-Password\", \"Nope\"]\n",
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].0, Some(11));
        assert_eq!(errs[0].1, "client[0].coa_attributes");
        assert!(
            errs[0].2.contains("`Tunnel-Password` is hidden"),
            "{errs:?}"
        );
        assert!(
            errs[1].2.contains("`Nope` is not in the dictionary"),
            "{errs:?}"
        );
        let errs =
            errors("dynamic_authorization = \"disconnect\"\ncoa_attributes = [\"Filter-Id\"]\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].2.contains("only with"), "{errs:?}");
        let c = parse("dynamic_authorization = \"disconnect\"\ndas_port = 3799\n")
            .0
            .unwrap();
        let das = c.clients[0].das.as_ref().unwrap();
        assert_eq!((das.port, das.address), (3799, None));
    }

    #[test]
    fn accounting_listens_on_the_next_port_of_each_listen_address_unless_told() {
        let c = parse("").0.unwrap();
        let want: Vec<SocketAddr> = vec![
            "0.0.0.0:1813".parse().unwrap(),
            "[::]:1813".parse().unwrap(),
        ];
        assert_eq!(c.accounting_listen, want);
        let c = parse("[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:11812\"]\n")
            .0
            .unwrap();
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:11813".parse().unwrap(),
        ];
        assert_eq!(c.accounting_listen, want);
        let c = parse("[server]\naccounting_listen = []\n").0.unwrap();
        assert!(c.accounting_listen.is_empty());
        assert_eq!(
            errors("[server]\naccounting_listen = [\"1813\"]\n"),
            vec![(
                Some(11),
                "server.accounting_listen[0]".to_owned(),
                "`1813` is not an address:port (IPv6 as [::1]:1813)".to_owned()
            )]
        );
    }

    #[test]
    fn admin_and_audit_are_off_unless_asked_for() {
        let c = parse("").0.unwrap();
        assert_eq!(c.admin, None);
        assert_eq!(c.audit, None);
    }

    #[test]
    fn the_admin_listener_defaults_to_loopback() {
        let (c, warnings) = parse("[admin]\n");
        assert_eq!(c.unwrap().admin, Some("127.0.0.1:9812".parse().unwrap()));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_admin_listener_off_loopback_is_taken_with_a_warning_naming_its_line() {
        let (c, warnings) = parse("[admin]\nlisten = \"0.0.0.0:9812\"\n");
        assert_eq!(c.unwrap().admin, Some("0.0.0.0:9812".parse().unwrap()));
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].key, "admin.listen");
        assert_eq!(warnings[0].line, Some(11));
        assert!(warnings[0].message.contains("not a loopback"));
    }

    #[test]
    fn a_bad_admin_address_is_refused_with_its_line() {
        assert_eq!(
            errors("[admin]\nlisten = \"localhost\"\n"),
            [(
                Some(11),
                "admin.listen".to_owned(),
                "`localhost` is not an address:port (e.g. 127.0.0.1:9812)".to_owned()
            )]
        );
    }

    #[test]
    fn audit_sinks_parse_with_relative_paths_and_named_facilities() {
        let c = parse("[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\n")
            .0
            .unwrap();
        let Some(AuditSink::File(path)) = c.audit else {
            panic!("{:?}", c.audit)
        };
        assert!(
            path.is_absolute() && path.ends_with("audit.jsonl"),
            "{path:?}"
        );
        let c = parse("[audit]\nsink = \"stdout\"\n").0.unwrap();
        assert_eq!(c.audit, Some(AuditSink::Stdout));
        let c = parse("[audit]\nsink = \"syslog\"\nfacility = \"local3\"\n")
            .0
            .unwrap();
        assert_eq!(
            c.audit,
            Some(AuditSink::Syslog {
                address: "127.0.0.1:514".parse().unwrap(),
                facility: 19
            })
        );
    }

    #[test]
    fn bad_audit_settings_are_refused_with_key_and_line() {
        let e = errors("[audit]\nsink = \"journal\"\n");
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].0, e[0].1.as_str()), (Some(11), "audit.sink"));
        let e = errors("[audit]\nsink = \"file\"\n");
        assert_eq!((e[0].0, e[0].1.as_str()), (Some(11), "audit.path"));
        let e = errors("[audit]\nsink = \"syslog\"\nfacility = \"kern\"\n");
        assert_eq!((e[0].0, e[0].1.as_str()), (Some(12), "audit.facility"));
        assert!(e[0].2.contains("authpriv"), "{}", e[0].2);
        let e = errors("[audit]\nsink = \"syslog\"\naddress = \"collector\"\n");
        assert_eq!((e[0].0, e[0].1.as_str()), (Some(12), "audit.address"));
        let e = errors("[audit]\nsink = \"stdout\"\nformat = \"cef\"\n");
        assert_eq!(e.len(), 1, "unknown keys are errors: {e:?}");
        assert_eq!(e[0].0, Some(12));
    }

    /// A config with `[pki]` naming a module that does not exist, in a fresh folder.
    fn pki_config(dir: &Path) -> Result<Config, ConfigErrors> {
        if !dir.join("hsm.pin").exists() {
            std::fs::write(dir.join("hsm.pin"), "1234\n").unwrap();
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.join("hsm.pin"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let text = "[pki]\nmodule = \"/nonexistent/libpkcs11.so\"\ntoken = \"anchord\"\n\
                    pin_file = \"hsm.pin\"\n\n[[client]]\nname = \"nas\"\n\
                    address = \"127.0.0.1\"\nsecret = \"s\"\n";
        Config::parse(&dir.join("anchord.toml"), text)
    }

    #[test]
    fn reading_a_config_touches_no_token_and_the_runtime_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        // Parsing succeeds: the module is only opened by the runtime.
        let config = pki_config(dir.path()).unwrap();
        let pki = config.pki.as_ref().unwrap();
        assert_eq!(pki.server.token.label, "anchord");
        assert!(matches!(config.tls, TlsSettings::Token { .. }));
        let errors = Runtime::build(&config, None).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].key, "pki.token");
        assert_eq!(errors.0[0].line, Some(3));
    }

    #[test]
    fn unchanged_pki_settings_compare_equal_and_a_changed_pin_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = pki_config(dir.path()).unwrap().pki.unwrap();
        let b = pki_config(dir.path()).unwrap().pki.unwrap();
        assert_eq!(a, b);
        std::fs::write(dir.path().join("hsm.pin"), "4321\n").unwrap();
        let c = pki_config(dir.path()).unwrap().pki.unwrap();
        assert_ne!(a, c, "a new PIN opens the token afresh");
    }

    #[test]
    fn revocation_settings_are_the_same_only_when_every_setting_is() {
        let r = |extra: &str| {
            parse(&format!("[revocation]\nmode = \"ocsp\"\n{extra}"))
                .0
                .unwrap()
                .revocation
                .unwrap()
                .settings
        };
        assert!(r("").same_as(&r("")));
        assert!(!r("").same_as(&r("soft_fail = true\n")));
        assert!(!r("").same_as(&r("timeout_ms = 900\n")));
        assert!(!r("").same_as(&r("responders = [{ url = \"http://127.0.0.1:9/\" }]\n")));
    }
}
