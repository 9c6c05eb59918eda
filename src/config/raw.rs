//! Serde mirror of `config/anchord.toml`. Unknown keys are errors; every default is a named
//! function so the example file and the code agree. Leaf values that are validated later
//! are `Spanned`, so their errors can name the line.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) tls: RawTls,
    #[serde(default)]
    pub(crate) authorization: RawAuthorization,
    #[serde(default)]
    pub(crate) client: Vec<RawClient>,
    /// Spanned: errors about a defaulted key (such as `token`) point at the `[pki]` line.
    pub(crate) pki: Option<Spanned<RawPki>>,
    pub(crate) revocation: Option<RawRevocation>,
    pub(crate) admin: Option<RawAdmin>,
    pub(crate) audit: Option<RawAudit>,
    pub(crate) policy: Option<Spanned<RawPolicy>>,
    pub(crate) posture: Option<RawPosture>,
}

/// `[posture]`: the MDM/EDR sources the policy's `posture.*` facts come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPosture {
    #[serde(default)]
    pub(crate) source: Vec<Spanned<RawSource>>,
}

/// `[[posture.source]]`: one MDM or EDR API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub(crate) name: Spanned<String>,
    pub(crate) url: Spanned<String>,
    pub(crate) identity: Vec<Spanned<RawExtractor>>,
    pub(crate) step: Vec<Spanned<RawStep>>,
    pub(crate) facts: Spanned<RawFacts>,
    #[serde(default)]
    pub(crate) auth: Option<Spanned<RawSourceAuth>>,
    #[serde(default)]
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_posture_timeout_ms")]
    pub(crate) timeout_ms: Spanned<u64>,
    #[serde(default = "default_posture_fresh_secs")]
    pub(crate) fresh_secs: Spanned<u64>,
    #[serde(default = "default_posture_max_stale_secs")]
    pub(crate) max_stale_secs: Spanned<u64>,
    #[serde(default = "default_posture_cache_size")]
    pub(crate) cache_size: Spanned<u64>,
    #[serde(default = "default_posture_rate")]
    pub(crate) rate_per_sec: Spanned<u64>,
    pub(crate) burst: Option<Spanned<u64>>,
    pub(crate) ca_file: Option<Spanned<String>>,
    pub(crate) poll: Option<Spanned<RawPoll>>,
    pub(crate) webhook: Option<Spanned<RawWebhook>>,
}

fn default_posture_timeout_ms() -> Spanned<u64> {
    unspanned(2000)
}
fn default_posture_fresh_secs() -> Spanned<u64> {
    unspanned(60)
}
fn default_posture_max_stale_secs() -> Spanned<u64> {
    unspanned(3600)
}
fn default_posture_cache_size() -> Spanned<u64> {
    unspanned(100_000)
}
fn default_posture_rate() -> Spanned<u64> {
    unspanned(50)
}

/// One way to take the device id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtractor {
    pub(crate) from: Spanned<String>,
    #[serde(default)]
    pub(crate) prefix: String,
    pub(crate) pattern: Spanned<String>,
}

/// One request of a lookup.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub(crate) path: Spanned<String>,
    pub(crate) results: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    pub(crate) matches: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(crate) save: std::collections::BTreeMap<String, Spanned<String>>,
}

/// A boolean fact: a pointer to a JSON boolean, or a pointer and the strings meaning true.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawBoolFact {
    Pointer(String),
    Equals {
        pointer: String,
        equals: RawOneOrMany,
    },
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawOneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[posture.source.facts]`: JSON pointers into the device record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFacts {
    pub(crate) compliant: Option<RawBoolFact>,
    pub(crate) managed: Option<RawBoolFact>,
    pub(crate) risk_score: Option<String>,
    pub(crate) os: Option<String>,
    pub(crate) os_version: Option<String>,
    pub(crate) last_seen: Option<String>,
    #[serde(default)]
    pub(crate) extra: std::collections::BTreeMap<String, String>,
}

/// How requests to a source authenticate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSourceAuth {
    pub(crate) kind: Spanned<String>,
    pub(crate) token_file: Option<Spanned<String>>,
    pub(crate) header: Option<String>,
    pub(crate) key_file: Option<Spanned<String>>,
    pub(crate) token_url: Option<Spanned<String>>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret_file: Option<Spanned<String>>,
    pub(crate) scope: Option<String>,
}

/// `[posture.source.poll]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoll {
    pub(crate) interval_secs: Spanned<u64>,
    pub(crate) path: Spanned<String>,
    pub(crate) results: Spanned<String>,
    pub(crate) id: Spanned<String>,
    pub(crate) next: Option<Spanned<String>>,
    #[serde(default = "default_max_pages")]
    pub(crate) max_pages: Spanned<u64>,
}

fn default_max_pages() -> Spanned<u64> {
    unspanned(100)
}

/// `[posture.source.webhook]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) hmac_secret_file: Option<Spanned<String>>,
    pub(crate) bearer_token_file: Option<Spanned<String>>,
    #[serde(default = "default_webhook_window")]
    pub(crate) window_secs: Spanned<u64>,
}

fn default_webhook_window() -> Spanned<u64> {
    unspanned(300)
}

/// `[policy]`: the admin's rules in policies/.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default = "default_policy_dir")]
    pub(crate) dir: Spanned<String>,
    #[serde(default = "default_timezone")]
    pub(crate) timezone: Spanned<String>,
    #[serde(default = "default_watch")]
    pub(crate) watch: bool,
}

fn default_policy_dir() -> Spanned<String> {
    unspanned("../policies".to_owned())
}
fn default_timezone() -> Spanned<String> {
    unspanned("UTC".to_owned())
}
fn default_watch() -> bool {
    true
}

/// `[admin]`: the admin HTTP listener (`/metrics`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    pub(crate) listen: Spanned<String>,
    /// The bearer token admin commands need (`anchord posture lookup --cache`, ...).
    pub(crate) token_file: Option<Spanned<String>>,
}

fn default_admin_listen() -> Spanned<String> {
    unspanned("127.0.0.1:9812".to_owned())
}

/// `[audit]`: where the JSON audit records go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub(crate) sink: Spanned<String>,
    pub(crate) path: Option<Spanned<String>>,
    #[serde(default = "default_syslog_address")]
    pub(crate) address: Spanned<String>,
    #[serde(default = "default_syslog_facility")]
    pub(crate) facility: Spanned<String>,
}

fn default_syslog_address() -> Spanned<String> {
    unspanned("127.0.0.1:514".to_owned())
}
fn default_syslog_facility() -> Spanned<String> {
    unspanned("authpriv".to_owned())
}

/// `[revocation]`: OCSP for every device certificate before it is told it succeeded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRevocation {
    #[serde(default = "default_revocation_mode")]
    pub(crate) mode: Spanned<String>,
    #[serde(default)]
    pub(crate) responders: Vec<RawResponder>,
    #[serde(default = "default_true")]
    pub(crate) aia_nonce: bool,
    #[serde(default = "default_ocsp_timeout_ms")]
    pub(crate) timeout_ms: Spanned<u64>,
    #[serde(default = "default_cert_id_hash")]
    pub(crate) cert_id_hash: Spanned<String>,
    #[serde(default = "default_method")]
    pub(crate) method: Spanned<String>,
    #[serde(default)]
    pub(crate) soft_fail: bool,
    #[serde(default = "default_skew_secs")]
    pub(crate) skew_secs: Spanned<u64>,
    #[serde(default = "default_max_ttl_secs")]
    pub(crate) max_ttl_secs: Spanned<u64>,
    #[serde(default = "default_negative_ttl_secs")]
    pub(crate) negative_ttl_secs: Spanned<u64>,
    #[serde(default = "default_max_age_without_next_update_secs")]
    pub(crate) max_age_without_next_update_secs: Spanned<u64>,
    #[serde(default = "default_cache_size")]
    pub(crate) cache_size: Spanned<u64>,
    #[serde(default)]
    pub(crate) check_intermediates: bool,
    #[serde(default)]
    pub(crate) crl_files: Vec<Spanned<String>>,
    #[serde(default = "default_true")]
    pub(crate) crl_distribution_points: bool,
    #[serde(default = "default_crl_refresh_secs")]
    pub(crate) crl_refresh_secs: Spanned<u64>,
    #[serde(default = "default_live_recheck_secs")]
    pub(crate) live_recheck_secs: Spanned<u64>,
}

fn default_live_recheck_secs() -> Spanned<u64> {
    unspanned(300)
}

fn default_crl_refresh_secs() -> Spanned<u64> {
    unspanned(300)
}

/// One OCSP responder URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResponder {
    pub(crate) url: Spanned<String>,
    #[serde(default = "default_true")]
    pub(crate) nonce: bool,
}

fn default_revocation_mode() -> Spanned<String> {
    unspanned("ocsp".to_owned())
}
fn default_true() -> bool {
    true
}
fn default_ocsp_timeout_ms() -> Spanned<u64> {
    unspanned(2000)
}
fn default_cert_id_hash() -> Spanned<String> {
    unspanned("sha1".to_owned())
}
fn default_method() -> Spanned<String> {
    unspanned("post".to_owned())
}
fn default_skew_secs() -> Spanned<u64> {
    unspanned(300)
}
fn default_max_ttl_secs() -> Spanned<u64> {
    unspanned(3600)
}
fn default_negative_ttl_secs() -> Spanned<u64> {
    unspanned(10)
}
fn default_max_age_without_next_update_secs() -> Spanned<u64> {
    unspanned(86_400)
}
fn default_cache_size() -> Spanned<u64> {
    unspanned(100_000)
}

/// `[pki]`: the server key and trust anchors live in a PKCS#11 token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPki {
    #[serde(default = "default_module")]
    pub(crate) module: Spanned<String>,
    #[serde(default = "default_token")]
    pub(crate) token: Spanned<String>,
    pub(crate) pin_file: Option<Spanned<String>>,
    #[serde(default = "default_pin_env")]
    pub(crate) pin_env: Spanned<String>,
    #[serde(default = "default_sessions")]
    pub(crate) sessions: Spanned<u64>,
    #[serde(default = "default_sign_timeout_ms")]
    pub(crate) sign_timeout_ms: Spanned<u64>,
    #[serde(default = "default_rotation_check_secs")]
    pub(crate) rotation_check_secs: Spanned<u64>,
    #[serde(default)]
    pub(crate) fallback: Vec<RawToken>,
}

/// A further token holding the same keys, tried when the first fails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToken {
    #[serde(default = "default_module")]
    pub(crate) module: Spanned<String>,
    pub(crate) token: Spanned<String>,
}

fn default_module() -> Spanned<String> {
    unspanned("/usr/lib/softhsm/libsofthsm2.so".to_owned())
}
fn default_token() -> Spanned<String> {
    unspanned("anchord".to_owned())
}
fn default_pin_env() -> Spanned<String> {
    unspanned("ANCHORD_HSM_PIN".to_owned())
}
fn default_sessions() -> Spanned<u64> {
    unspanned(4)
}
fn default_sign_timeout_ms() -> Spanned<u64> {
    unspanned(2000)
}
fn default_rotation_check_secs() -> Spanned<u64> {
    unspanned(30)
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    #[serde(default = "default_listen")]
    pub(crate) listen: Vec<Spanned<String>>,
    #[serde(default = "default_max_sessions")]
    pub(crate) max_sessions: Spanned<u64>,
    pub(crate) max_sessions_per_client: Option<Spanned<u64>>,
    #[serde(default = "default_session_idle_timeout_secs")]
    pub(crate) session_idle_timeout_secs: Spanned<u64>,
    #[serde(default = "default_max_inflight")]
    pub(crate) max_inflight: Spanned<u64>,
    pub(crate) max_inflight_per_client: Option<Spanned<u64>>,
    #[serde(default = "default_max_conversations_per_device")]
    pub(crate) max_conversations_per_device: Spanned<u64>,
    #[serde(default = "default_duplicate_window_secs")]
    pub(crate) duplicate_window_secs: Spanned<u64>,
    #[serde(default = "default_receive_buffer_kib")]
    pub(crate) receive_buffer_kib: Spanned<u64>,
    #[serde(default = "default_duplicate_cache_mib")]
    pub(crate) duplicate_cache_mib: Spanned<u64>,
    /// FreeRADIUS-format dictionary; the shipped one is built in.
    pub(crate) dictionary: Option<Spanned<String>>,
    /// Accounting sockets; default: each `listen` address on its port + 1 (1813).
    pub(crate) accounting_listen: Option<Vec<Spanned<String>>>,
    #[serde(default = "default_live_session_expiry_secs")]
    pub(crate) live_session_expiry_secs: Spanned<u64>,
    #[serde(default = "default_max_live_sessions")]
    pub(crate) max_live_sessions: Spanned<u64>,
    pub(crate) max_live_sessions_per_client: Option<Spanned<u64>>,
    /// Acct-Interim-Interval put in every Access-Accept when accounting listens (0: none).
    #[serde(default = "default_accounting_interim_secs")]
    pub(crate) accounting_interim_secs: Spanned<u64>,
    /// Re-run a changed policy on live sessions after a reload (off by default).
    #[serde(default)]
    pub(crate) reevaluate_live_sessions: bool,
    /// Sessions acted on per second in such a sweep.
    #[serde(default = "default_reevaluate_per_second")]
    pub(crate) reevaluate_per_second: Spanned<u64>,
}

fn default_accounting_interim_secs() -> Spanned<u64> {
    unspanned(600)
}

fn default_reevaluate_per_second() -> Spanned<u64> {
    unspanned(10)
}

fn default_live_session_expiry_secs() -> Spanned<u64> {
    unspanned(1800)
}

fn default_max_live_sessions() -> Spanned<u64> {
    unspanned(200_000)
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_sessions: default_max_sessions(),
            max_sessions_per_client: None,
            session_idle_timeout_secs: default_session_idle_timeout_secs(),
            max_inflight: default_max_inflight(),
            max_inflight_per_client: None,
            max_conversations_per_device: default_max_conversations_per_device(),
            duplicate_window_secs: default_duplicate_window_secs(),
            receive_buffer_kib: default_receive_buffer_kib(),
            duplicate_cache_mib: default_duplicate_cache_mib(),
            dictionary: None,
            accounting_listen: None,
            live_session_expiry_secs: default_live_session_expiry_secs(),
            max_live_sessions: default_max_live_sessions(),
            max_live_sessions_per_client: None,
            accounting_interim_secs: default_accounting_interim_secs(),
            reevaluate_live_sessions: false,
            reevaluate_per_second: default_reevaluate_per_second(),
        }
    }
}

fn default_duplicate_cache_mib() -> Spanned<u64> {
    unspanned(128)
}

fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

fn default_listen() -> Vec<Spanned<String>> {
    vec![
        unspanned("0.0.0.0:1812".to_owned()),
        unspanned("[::]:1812".to_owned()),
    ]
}
fn default_max_sessions() -> Spanned<u64> {
    unspanned(10_000)
}
fn default_session_idle_timeout_secs() -> Spanned<u64> {
    unspanned(30)
}
fn default_max_inflight() -> Spanned<u64> {
    unspanned(1024)
}
fn default_max_conversations_per_device() -> Spanned<u64> {
    // A device has one conversation going; a few more cover a supplicant that restarts
    // before its abandoned attempts idle out.
    unspanned(4)
}
fn default_receive_buffer_kib() -> Spanned<u64> {
    // About 1,800 full-size requests: a second of a heavy flood queued while a burst is
    // worked off, without another NAS's requests being dropped by the kernel.
    unspanned(4096)
}
fn default_duplicate_window_secs() -> Spanned<u64> {
    // NASes retransmit within a few seconds (RFC 5080 §2.2.2); FreeRADIUS keeps replies
    // for 5 s (cleanup_delay). Longer only costs memory.
    unspanned(5)
}

/// `[tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) certificate: Option<Spanned<String>>,
    pub(crate) private_key: Option<Spanned<String>>,
    pub(crate) ca: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_versions")]
    pub(crate) versions: Spanned<Vec<String>>,
    #[serde(default = "default_fragment_size")]
    pub(crate) fragment_size: Spanned<u64>,
    #[serde(default = "default_max_message_size")]
    pub(crate) max_message_size: Spanned<u64>,
    #[serde(default = "default_max_rounds")]
    pub(crate) max_rounds: Spanned<u64>,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            certificate: None,
            private_key: None,
            ca: None,
            versions: default_versions(),
            fragment_size: default_fragment_size(),
            max_message_size: default_max_message_size(),
            max_rounds: default_max_rounds(),
        }
    }
}

fn default_versions() -> Spanned<Vec<String>> {
    unspanned(vec!["1.2".to_owned(), "1.3".to_owned()])
}
fn default_fragment_size() -> Spanned<u64> {
    unspanned(1024)
}
fn default_max_message_size() -> Spanned<u64> {
    unspanned(65_536)
}
fn default_max_rounds() -> Spanned<u64> {
    unspanned(100)
}

/// `[authorization]`: the VLAN for every authenticated device when `[policy]` is not set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthorization {
    pub(crate) vlan: Option<Spanned<String>>,
}

/// `[[client]]`: one NAS or a network of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub(crate) name: Spanned<String>,
    pub(crate) address: Spanned<String>,
    pub(crate) secret: Option<Spanned<String>>,
    pub(crate) secret_file: Option<Spanned<String>>,
    #[serde(default = "default_require_message_authenticator")]
    pub(crate) require_message_authenticator: bool,
    /// Drop Accounting-Requests without Message-Authenticator (off by default: many NASes,
    /// hostapd among them, do not send it there; the Request Authenticator is always checked).
    #[serde(default)]
    pub(crate) accounting_require_message_authenticator: bool,
    /// RFC 5176 toward this NAS: "off" (default), "disconnect" or "coa".
    pub(crate) dynamic_authorization: Option<Spanned<String>>,
    /// The NAS's DAS port (default 3799).
    pub(crate) das_port: Option<Spanned<u64>>,
    /// The NAS's DAS address (default: the address its accounting came from).
    pub(crate) das_address: Option<Spanned<String>>,
    /// The DAS's secret (default: the client's).
    pub(crate) das_secret_file: Option<Spanned<String>>,
    /// With "coa": the attributes the NAS accepts in a CoA-Request.
    pub(crate) coa_attributes: Option<Spanned<Vec<String>>>,
}

fn default_require_message_authenticator() -> bool {
    true
}
