//! The live parts the configuration asks for: the HSM signing pool, the revocation checker
//! (its OCSP and CRL caches), the TLS session settings around them. [`Config`] is settings
//! only; a [`Runtime`] is built from it, and a reload builds a new one that keeps every part
//! whose settings did not change: a SIGHUP that leaves `[pki]` alone keeps the token's
//! logged-in sessions, one that leaves `[revocation]` alone keeps the cached answers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use super::{Config, ConfigError, ConfigErrors, PkiSettings, TlsSettings};
use crate::eap::SessionConfig;
use crate::pki::ca::{CaError, ServerMaterial, ServerToken};
use crate::pki::hsm::{HsmError, SigningPool, TokenRef};
use crate::pki::revocation::Checker;
use crate::policy::Policy;
use crate::posture::Sources;
use crate::tls::hsm_key::{HsmSigningKey, RotatingResolver};
use crate::tls::{self, ServerKey};

/// What the running server uses, built from a [`Config`].
#[derive(Debug, Clone)]
pub struct Runtime {
    /// EAP-TLS settings, shared by every session.
    pub eap: Arc<SessionConfig>,
    /// The token holding the server key and trust anchors, when `[pki]` is set.
    pub pki: Option<Arc<PkiRuntime>>,
    /// Revocation checking, when `[revocation]` is set (and not `mode = "off"`).
    pub revocation: Option<Arc<Checker>>,
    /// The policy decisions are made with.
    pub policy: Arc<Policy>,
    /// The posture sources, when `[[posture.source]]` is set.
    pub posture: Option<Arc<Sources>>,
}

impl Runtime {
    /// Builds the live parts of `config`. With `previous` (the running configuration and
    /// its runtime), a part whose settings are unchanged is kept as it is, not rebuilt.
    /// Blocking (PKCS#11): call it off the reactor.
    ///
    /// # Errors
    /// A token that cannot be opened or holds the wrong keys, a PIN refused, a checker that
    /// cannot be built: each with the file, line and key of the setting.
    pub fn build(
        config: &Config,
        previous: Option<(&Config, &Runtime)>,
    ) -> Result<Self, ConfigErrors> {
        // The policy first: a broken rule is refused before any token is touched.
        let policy = Arc::new(super::policy::load(config)?);
        let running = previous.and_then(|(c, r)| Some((c.pki.as_ref()?, r.pki.as_ref()?)));
        let (pki, root) = match (&config.pki, running) {
            (None, _) => (None, None),
            // Unchanged: keep the logged-in pool, but look at the token again, as a
            // restart would: a CA key put on it since is refused, a new root is used.
            (Some(s), Some((old, pki))) if old == s => {
                let root = pki.recheck(s).map_err(|e| ConfigErrors(vec![e]))?;
                (Some(pki.clone()), Some(root))
            }
            // The running server is logged in to this token: PKCS#11 logins belong to the
            // process, so a login with the new PIN would "succeed" whatever it is, and the
            // wrong PIN would surface only when the sessions are next opened afresh.
            (Some(s), Some((old, _)))
                if old.server.token == s.server.token && old.server.pin != s.server.pin =>
            {
                return Err(ConfigErrors(vec![s.pin_at.error(
                    "the PIN changed: the running server is logged in to this token, so a \
                     reload cannot check a new PIN; restart anchord to use it",
                )]));
            }
            // Two signing pools on one module, each with its own permits, would let one
            // finalise the module (re-initialising after a token failure) under a
            // signature the other has in flight.
            (Some(s), Some((old, _))) if shares_a_module(old, s) => {
                return Err(ConfigErrors(vec![s.token_at.error(
                    "[pki] changed: the running server signs through this PKCS#11 module, and \
                     a second signing pool on it could finalise the module under a signature \
                     in flight; restart anchord to apply the change",
                )]));
            }
            (Some(s), _) => {
                let pki = Arc::new(PkiRuntime::open(s).map_err(|e| ConfigErrors(vec![e]))?);
                let root = pki.root.clone();
                (Some(pki), Some(root))
            }
        };
        let eap = match (&config.tls, &pki) {
            (TlsSettings::Files(eap), _) => eap.clone(),
            (
                TlsSettings::Token {
                    versions,
                    fragment_size,
                    max_message,
                    max_rounds,
                },
                Some(pki),
            ) => {
                let root = root.unwrap_or_else(|| pki.root.clone());
                let tls = tls::server_config_with(
                    ServerKey::Resolver(pki.resolver.clone()),
                    std::slice::from_ref(&root),
                    versions,
                )
                .map_err(|e| {
                    let at = config.pki.as_ref().map(|p| &p.token_at);
                    ConfigErrors(vec![at.map_or_else(
                        || ConfigError {
                            file: config.path.clone(),
                            line: None,
                            key: "tls".into(),
                            message: String::new(),
                        },
                        |p| p.error(""),
                    )])
                    .with_message(format!("the token's certificate or CA refused: {e}"))
                })?;
                Arc::new(SessionConfig {
                    tls: Arc::new(tls),
                    fragment_size: *fragment_size,
                    max_message: *max_message,
                    max_rounds: *max_rounds,
                })
            }
            (TlsSettings::Token { .. }, None) => {
                return Err(ConfigErrors(vec![ConfigError {
                    file: config.path.clone(),
                    line: None,
                    key: "pki".into(),
                    message: "the server key is to come from a token, but [pki] is missing".into(),
                }]))
            }
        };
        let revocation = match (&config.revocation, previous) {
            (None, _) => None,
            (Some(s), Some((c, r)))
                if r.revocation.is_some()
                    && c.revocation
                        .as_ref()
                        .is_some_and(|old| old.settings.same_as(&s.settings)) =>
            {
                r.revocation.clone()
            }
            (Some(s), _) => Some(Arc::new(
                Checker::new(s.settings.clone()).map_err(|e| ConfigErrors(vec![s.at.error(e)]))?,
            )),
        };
        // Unchanged sources are kept, caches and tokens with them.
        let posture = match (&config.posture, previous) {
            (None, _) => None,
            (Some(s), Some((_, r))) if r.posture.as_ref().is_some_and(|p| p.settings == *s) => {
                r.posture.clone()
            }
            (Some(s), _) => Some(Arc::new(Sources::build(s).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    file: config.path.clone(),
                    line: None,
                    key: "posture".into(),
                    message: e,
                }])
            })?)),
        };
        Ok(Self {
            eap,
            pki,
            revocation,
            policy,
            posture,
        })
    }
}

impl Runtime {
    /// Loads the config file and builds its runtime: what `serve` and the demo start with.
    /// Blocking (PKCS#11).
    ///
    /// # Errors
    /// Every error in the file, or the first the runtime met.
    pub fn load(path: &std::path::Path) -> Result<(Config, Self), ConfigErrors> {
        let config = Config::load(path)?;
        let runtime = Self::build(&config, None)?;
        Ok((config, runtime))
    }
}

impl ConfigErrors {
    /// Sets the message of every error (for errors made from a [`super::Place`]).
    fn with_message(mut self, message: String) -> Self {
        for e in &mut self.0 {
            e.message.clone_from(&message);
        }
        self
    }
}

/// The server key in a token, as the running server uses it.
pub struct PkiRuntime {
    /// The server token and its PIN: it holds the server key only (never the CA keys) and
    /// is used through read-only sessions.
    pub server: ServerToken,
    /// Further tokens holding the same keys.
    pub fallbacks: Vec<TokenRef>,
    /// Idle signing sessions kept per token.
    pub sessions: usize,
    /// Deadline for a TLS step that signs on the token.
    pub sign_timeout: Duration,
    /// One permit per pooled session: at most `sessions` signing steps run at once, so each
    /// finds a logged-in session instead of opening (and searching the token on) a new one,
    /// and a hung token ties up at most that many blocking threads.
    pub signing_slots: Arc<tokio::sync::Semaphore>,
    /// Signing slots clients over their share may hold together: one fewer than
    /// `signing_slots` (when there are two or more), so a flood's signatures, which run at
    /// background priority and may be slow to finish on a busy machine, never hold every
    /// slot while other NASes' devices wait.
    pub background_signing: Arc<tokio::sync::Semaphore>,
    /// How often the token is checked for a rotated server key.
    pub rotation_check: Duration,
    /// Hands rustls the current certificate and key.
    pub resolver: Arc<RotatingResolver>,
    /// Label of the server key in use, and its signing pool.
    pub current: std::sync::Mutex<(String, Arc<SigningPool>)>,
    /// The root CA certificate on the token: the trust anchor for devices.
    pub root: CertificateDer<'static>,
}

impl fmt::Debug for PkiRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PkiRuntime")
            .field("token", &self.server.token)
            .finish_non_exhaustive()
    }
}

impl PkiRuntime {
    /// Opens the server token `[pki]` names: refuses one that holds CA private keys, logs
    /// in, finds the newest server key and its certificate chain. Blocking.
    ///
    /// # Errors
    /// The token cannot be opened, holds CA keys, refuses the PIN, or has no server key;
    /// pointing at the setting to fix.
    pub fn open(s: &PkiSettings) -> Result<Self, ConfigError> {
        // The server must not be able to sign device certificates: refuse a token that
        // holds CA keys (an error, not a warning, so that `serve` refuses it too). Checked
        // first, so that a [pki] naming the CA token says so rather than "no server key".
        let loaded = match s.server.ca_private_keys() {
            Ok(ca_keys) if !ca_keys.is_empty() => return Err(ca_keys_error(s, &ca_keys)),
            Ok(_) => Self::load_server_key(&s.server, &s.fallbacks, s.sessions),
            Err(e) => Err(e),
        };
        match loaded {
            Ok((m, pool, key)) => Ok(Self {
                server: s.server.clone(),
                fallbacks: s.fallbacks.clone(),
                sessions: s.sessions,
                sign_timeout: s.sign_timeout,
                signing_slots: Arc::new(tokio::sync::Semaphore::new(s.sessions.max(1))),
                background_signing: Arc::new(tokio::sync::Semaphore::new(
                    s.sessions.saturating_sub(1).max(1),
                )),
                rotation_check: s.rotation_check,
                resolver: Arc::new(RotatingResolver::new(key)),
                current: std::sync::Mutex::new((m.label, pool)),
                root: CertificateDer::from(m.root),
            }),
            // Point at the setting to fix: the PIN for a refused login, else the token.
            Err(e @ CaError::Hsm(HsmError::Login { .. })) => Err(s.pin_at.error(e.to_string())),
            Err(e) => Err(s.token_at.error(e.to_string())),
        }
    }
    /// Looks at the token again for a reload that keeps this runtime: refuses it if it
    /// now holds CA private keys, and returns its root certificate (the trust anchor for
    /// devices), which may have been replaced. Blocking.
    ///
    /// # Errors
    /// The token cannot be read, or holds CA keys.
    pub fn recheck(&self, s: &PkiSettings) -> Result<CertificateDer<'static>, ConfigError> {
        match self.server.ca_private_keys() {
            Ok(ca_keys) if !ca_keys.is_empty() => Err(ca_keys_error(s, &ca_keys)),
            Ok(_) => self
                .server
                .server_material()
                .map(|m| CertificateDer::from(m.root))
                .map_err(|e| s.token_at.error(e.to_string())),
            Err(e) => Err(s.token_at.error(e.to_string())),
        }
    }

    /// Loads the newest server key from the token and makes rustls's view of it.
    ///
    /// # Errors
    /// Token errors.
    pub fn load_server_key(
        server: &ServerToken,
        fallbacks: &[TokenRef],
        sessions: usize,
    ) -> Result<(ServerMaterial, Arc<SigningPool>, Arc<CertifiedKey>), CaError> {
        let m = server.server_material()?;
        let mut tokens = vec![server.token.clone()];
        tokens.extend(fallbacks.iter().cloned());
        let pool = Arc::new(SigningPool::new(
            tokens,
            server.pin.clone(),
            &m.label,
            sessions,
        ));
        let chain = m
            .chain
            .iter()
            .map(|d| CertificateDer::from(d.clone()))
            .collect();
        let key = Arc::new(CertifiedKey::new(
            chain,
            Arc::new(HsmSigningKey::new(pool.clone(), m.alg)),
        ));
        Ok((m, pool, key))
    }

    /// Switches to a newer server key on the token, if there is one. Blocking.
    ///
    /// # Errors
    /// Token errors (the current key stays in use).
    pub fn refresh(&self) -> Result<Option<String>, CaError> {
        let (m, pool, key) = Self::load_server_key(&self.server, &self.fallbacks, self.sessions)?;
        let mut current = self
            .current
            .lock()
            .map_err(|_| CaError::NotInitialised("poisoned".into()))?;
        if current.0 == m.label {
            return Ok(None);
        }
        self.resolver.set(key);
        *current = (m.label.clone(), pool);
        Ok(Some(m.label))
    }

    /// The signing pool of the key in use.
    pub fn pool(&self) -> Option<Arc<SigningPool>> {
        self.current.lock().ok().map(|c| c.1.clone())
    }
}

/// The server must not be able to sign device certificates: a server token holding CA
/// keys is refused.
fn ca_keys_error(s: &PkiSettings, ca_keys: &[String]) -> ConfigError {
    s.token_at.error(format!(
        "token `{}` holds CA private keys ({}): the server must log into a token with only \
         its own key; move the server to a token of its own with `anchord pki rotate-server \
         --token <new>` (README, \"The server key in an HSM\")",
        s.server.token.label,
        ca_keys.join(", ")
    ))
}

/// Whether the two `[pki]` settings use a PKCS#11 module in common.
fn shares_a_module(a: &PkiSettings, b: &PkiSettings) -> bool {
    let modules = |s: &PkiSettings| {
        std::iter::once(s.server.token.module.clone())
            .chain(s.fallbacks.iter().map(|t| t.module.clone()))
            .collect::<Vec<_>>()
    };
    let (a, b) = (modules(a), modules(b));
    a.iter().any(|m| b.contains(m))
}
