//! PKCS#11 tokens (cryptoki; SoftHSM2 by default): the CA keys and the RADIUS server's TLS
//! key live here and never leave. They live on separate tokens with separate PINs (see
//! `pki::ca`): the server logs into a token that holds only its own key, with read-only
//! sessions ([`Access::ReadOnly`]), so the network-facing process can sign TLS handshakes and
//! nothing else. [`login`] opens a session and logs in; [`SigningPool`] keeps a few logged-in
//! sessions for signing off the async reactor, recovers from a token that went away (new
//! sessions, new login) and fails over to the next configured token holding a key with the
//! same label.
//!
//! Every key is generated sensitive, never extractable, sign only, and with
//! CKA_ALLOWED_MECHANISMS listing exactly the mechanisms anchord signs with
//! ([`allowed_mechanisms`]); SoftHSM2 2.6 enforces that list (another mechanism fails
//! C_SignInit with CKR_MECHANISM_INVALID).
//!
//! Every signature is counted and logged as an audit event (key label, mechanism, result,
//! duration; never data or PIN).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use zeroize::Zeroizing;

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the CKA_EC_PARAMS of our EC keys.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// Errors from a token.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {path}: {cause}")]
    Module {
        /// Module path.
        path: PathBuf,
        /// Cause.
        cause: cryptoki::error::Error,
    },
    /// No token with that label in any slot.
    #[error("no token labelled `{0}` (is the token present and initialised?)")]
    NoToken(String),
    /// Login refused.
    #[error("login to token `{token}` failed: {cause} (wrong PIN?)")]
    Login {
        /// Token label.
        token: String,
        /// Cause.
        cause: cryptoki::error::Error,
    },
    /// A key or certificate is missing.
    #[error("no {what} labelled `{label}` on the token")]
    Missing {
        /// "private key" or "certificate".
        what: &'static str,
        /// Label.
        label: String,
    },
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {op}: {cause}")]
    Call {
        /// What we were doing.
        op: &'static str,
        /// Cause.
        cause: cryptoki::error::Error,
    },
    /// Every configured token failed.
    #[error("no token could sign with `{0}`")]
    Unavailable(String),
    /// Something about the key is not what anchord can use.
    #[error("{0}")]
    Unsupported(String),
}

fn call(op: &'static str) -> impl FnOnce(cryptoki::error::Error) -> HsmError {
    move |cause| HsmError::Call { op, cause }
}

/// A PIN read from a file or the environment; wiped on drop, never printed.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps PIN text (trailing newlines removed).
    pub fn new(mut text: String) -> Self {
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        Self(Zeroizing::new(text))
    }

    fn auth(&self) -> AuthPin {
        AuthPin::new(self.0.as_str().into())
    }
}

/// Constant-time, so comparing a reloaded PIN with the running one says nothing about it
/// through timing.
impl PartialEq for Pin {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Pin {}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Where a token is: module path and token label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    /// PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// Token label.
    pub label: String,
}

/// Key algorithms anchord generates on tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 (default).
    EcdsaP256,
    /// RSA with a modulus of this many bits (2048 or 3072).
    Rsa(u32),
}

/// A loaded module. PKCS#11 allows one initialisation per process, so modules are shared.
pub fn module(path: &Path) -> Result<Arc<Pkcs11>, HsmError> {
    static LOADED: Mutex<Vec<(PathBuf, Arc<Pkcs11>)>> = Mutex::new(Vec::new());
    let mut loaded = LOADED
        .lock()
        .map_err(|_| HsmError::Unsupported("module table poisoned".into()))?;
    if let Some((_, m)) = loaded.iter().find(|(p, _)| p == path) {
        return Ok(m.clone());
    }
    let err = |cause| HsmError::Module {
        path: path.to_path_buf(),
        cause,
    };
    let p = Pkcs11::new(path).map_err(err)?;
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(err)?;
    let p = Arc::new(p);
    loaded.push((path.to_path_buf(), p.clone()));
    Ok(p)
}

/// When each module was last re-initialised.
static LAST_REINIT: Mutex<Vec<(PathBuf, Instant)>> = Mutex::new(Vec::new());

/// Modules a failed signature asked to re-initialise; see [`take_reinit_requests`].
static REINIT_WANTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Asks for `path` to be re-initialised by whoever can do it safely (the server, holding
/// every signing permit). Blocking signers call this instead of [`reinitialize`].
pub fn request_reinit(path: &Path) {
    let mut wanted = REINIT_WANTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !wanted.iter().any(|p| p == path) {
        wanted.push(path.to_path_buf());
    }
}

/// The modules asked for since the last call, emptying the list.
pub fn take_reinit_requests() -> Vec<PathBuf> {
    std::mem::take(
        &mut *REINIT_WANTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Finalises and re-initialises a module so that it scans its slots again: how a token that
/// was removed (or a module that failed) comes back without restarting the server. Every
/// session of this process on the module becomes invalid. At most once a second per module.
///
/// The caller must make sure no other thread uses the module meanwhile (the server holds
/// every signing permit: `server::reinitialize_modules`).
///
/// # Errors
/// The module cannot be re-initialised.
pub fn reinitialize(path: &Path, now: Instant) -> Result<bool, HsmError> {
    {
        let mut last = LAST_REINIT
            .lock()
            .map_err(|_| HsmError::Unsupported("reinit table poisoned".into()))?;
        match last.iter_mut().find(|(p, _)| p == path) {
            Some((_, at))
                if now.saturating_duration_since(*at) < std::time::Duration::from_secs(1) =>
            {
                return Ok(false)
            }
            Some((_, at)) => *at = now,
            None => last.push((path.to_path_buf(), now)),
        }
    }
    let m = module(path)?;
    // C_Finalize fails if the module was never initialised; either way initialise afresh.
    let _ = Pkcs11::clone(&m).finalize();
    m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|cause| HsmError::Module {
            path: path.to_path_buf(),
            cause,
        })?;
    Ok(true)
}

/// Finds the slot holding the token labelled `label`.
///
/// # Errors
/// No such token.
pub fn find_slot(p: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    for slot in p.get_slots_with_token().map_err(call("list slots"))? {
        if let Ok(info) = p.get_token_info(slot) {
            if info.label().trim_end() == label {
                return Ok(slot);
            }
        }
    }
    Err(HsmError::NoToken(label.to_owned()))
}

/// Creates and initialises a token in a free slot (SoftHSM2 always offers one) unless a
/// token with that label exists. Returns true when it was created.
///
/// # Errors
/// No free slot, or the module refuses.
pub fn ensure_token(t: &TokenRef, so_pin: &Pin, user_pin: &Pin) -> Result<bool, HsmError> {
    let p = module(&t.module)?;
    if find_slot(&p, &t.label).is_ok() {
        return Ok(false);
    }
    let free = p
        .get_slots_with_token()
        .map_err(call("list slots"))?
        .into_iter()
        .find(|s| p.get_token_info(*s).is_ok_and(|i| !i.token_initialized()))
        .ok_or_else(|| HsmError::Unsupported("no free slot to create the token in".into()))?;
    p.init_token(free, &so_pin.auth(), &t.label)
        .map_err(call("init token"))?;
    let slot = find_slot(&p, &t.label)?;
    let s = p.open_rw_session(slot).map_err(call("open session"))?;
    s.login(UserType::So, Some(&so_pin.auth()))
        .map_err(|cause| HsmError::Login {
            token: t.label.clone(),
            cause,
        })?;
    s.init_pin(&user_pin.auth())
        .map_err(call("init user PIN"))?;
    s.logout().map_err(call("logout"))?;
    Ok(true)
}

/// What a session may do to the token's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Use keys (sign) and read objects; the token refuses to create, change or destroy
    /// objects through it (CKF_RW_SESSION off). What the server uses.
    ReadOnly,
    /// Also create keys and store certificates: `anchord pki` only.
    ReadWrite,
}

/// Opens a user session on a token and logs in.
///
/// # Errors
/// Missing token or wrong PIN.
pub fn login(t: &TokenRef, pin: &Pin, access: Access) -> Result<Session, HsmError> {
    let p = module(&t.module)?;
    let slot = find_slot(&p, &t.label)?;
    let s = match access {
        Access::ReadOnly => p.open_ro_session(slot),
        Access::ReadWrite => p.open_rw_session(slot),
    }
    .map_err(call("open session"))?;
    match s.login(UserType::User, Some(&pin.auth())) {
        Ok(()) => Ok(s),
        // Another session of this process already logged the token in.
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(s)
        }
        Err(cause) => Err(HsmError::Login {
            token: t.label.clone(),
            cause,
        }),
    }
}

/// Opens a read-only session without logging in: it sees the token's public objects only
/// (the certificates), never a private key.
///
/// # Errors
/// Missing token.
pub fn open_public(t: &TokenRef) -> Result<Session, HsmError> {
    let p = module(&t.module)?;
    let slot = find_slot(&p, &t.label)?;
    p.open_ro_session(slot).map_err(call("open session"))
}

/// Whether the token lets this session change its objects (C_GetSessionInfo's
/// CKF_RW_SESSION).
///
/// # Errors
/// The token fails.
pub fn session_access(s: &Session) -> Result<Access, HsmError> {
    let info = s.get_session_info().map_err(call("session info"))?;
    Ok(if info.read_write() {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    })
}

/// What a key signs: the mechanisms it may use depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// A CA key: certificates, through rcgen (ECDSA with SHA-256, or RSASSA-PKCS1-v1_5 with
    /// SHA-256).
    Ca,
    /// The server's TLS key: handshakes (ECDSA with SHA-256; RSA: PSS for TLS 1.3 and
    /// PKCS#1 v1.5 for TLS 1.2 peers that offer nothing else).
    TlsServer,
}

/// The CKA_ALLOWED_MECHANISMS of a key: exactly the mechanisms [`sign_with`] uses for it
/// (ECDSA is computed over a SHA-256 digest made here, so plain CKM_ECDSA).
pub fn allowed_mechanisms(alg: KeyAlgorithm, role: KeyRole) -> Vec<MechanismType> {
    match (alg, role) {
        (KeyAlgorithm::EcdsaP256, _) => vec![MechanismType::ECDSA],
        (KeyAlgorithm::Rsa(_), KeyRole::Ca) => vec![MechanismType::SHA256_RSA_PKCS],
        (KeyAlgorithm::Rsa(_), KeyRole::TlsServer) => vec![
            MechanismType::SHA256_RSA_PKCS_PSS,
            MechanismType::SHA256_RSA_PKCS,
        ],
    }
}

/// Generates a key pair on the token: the private key is sensitive, never extractable, may
/// only sign (no decrypt, unwrap or derive) and only with [`allowed_mechanisms`]. Returns the
/// public key in the raw form rcgen wants (EC point, or PKCS#1 RSAPublicKey).
///
/// # Errors
/// The token refuses.
pub fn generate_key(
    s: &Session,
    label: &str,
    alg: KeyAlgorithm,
    role: KeyRole,
) -> Result<PublicKey, HsmError> {
    let id = label.as_bytes().to_vec();
    let common_priv = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::AllowedMechanisms(allowed_mechanisms(alg, role)),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let (mech, private) = match alg {
        KeyAlgorithm::EcdsaP256 => {
            public.push(Attribute::EcParams(P256_PARAMS.to_vec()));
            (Mechanism::EccKeyPairGen, common_priv)
        }
        KeyAlgorithm::Rsa(bits) => {
            public.push(Attribute::ModulusBits(u64::from(bits).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            (Mechanism::RsaPkcsKeyPairGen, common_priv)
        }
    };
    let (pub_handle, _) = s
        .generate_key_pair(&mech, &public, &private)
        .map_err(call("generate key pair"))?;
    public_key(s, pub_handle, alg)
}

/// How a private key on the token is protected, as the token reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProtection {
    /// Label.
    pub label: String,
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: bool,
    /// Usable for anything but signing (decrypt, unwrap, derive).
    pub other_uses: bool,
    /// The token handed out CKA_VALUE (the private key itself) when asked.
    pub value_readable: bool,
    /// CKA_ALLOWED_MECHANISMS as names (e.g. `CKM_ECDSA`), sorted; empty: the key is not
    /// restricted.
    pub allowed: Vec<String>,
}

/// Every private key on the token with its protection attributes; also asks for each key's
/// CKA_VALUE to show that the token refuses it.
///
/// # Errors
/// The token fails.
pub fn key_protection(s: &Session) -> Result<Vec<KeyProtection>, HsmError> {
    let mut out = Vec::new();
    for h in s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .map_err(call("list keys"))?
    {
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::Label,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Decrypt,
                    AttributeType::Unwrap,
                    AttributeType::Derive,
                    AttributeType::AllowedMechanisms,
                ],
            )
            .map_err(call("read key attributes"))?;
        let mut k = KeyProtection {
            label: String::new(),
            sensitive: false,
            extractable: true,
            never_extractable: false,
            other_uses: false,
            value_readable: false,
            allowed: Vec::new(),
        };
        for a in attrs {
            match a {
                Attribute::Label(l) => k.label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Sensitive(b) => k.sensitive = b,
                Attribute::Extractable(b) => k.extractable = b,
                Attribute::NeverExtractable(b) => k.never_extractable = b,
                Attribute::Decrypt(b) | Attribute::Unwrap(b) | Attribute::Derive(b) => {
                    k.other_uses |= b
                }
                Attribute::AllowedMechanisms(m) => {
                    // Sorted: tokens keep the list in an order of their own.
                    k.allowed = m.iter().map(ToString::to_string).collect();
                    k.allowed.sort();
                }
                _ => {}
            }
        }
        let value = s.get_attributes(h, &[AttributeType::Value, AttributeType::PrivateExponent]);
        k.value_readable = matches!(value, Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(x) | Attribute::PrivateExponent(x) if !x.is_empty())));
        out.push(k);
    }
    out.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(out)
}

/// A public key read from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Algorithm.
    pub alg: KeyAlgorithm,
    /// EC point (04|x|y) or PKCS#1 RSAPublicKey DER.
    pub raw: Vec<u8>,
}

fn public_key(s: &Session, h: ObjectHandle, alg: KeyAlgorithm) -> Result<PublicKey, HsmError> {
    match alg {
        KeyAlgorithm::EcdsaP256 => {
            let attrs = s
                .get_attributes(h, &[AttributeType::EcPoint])
                .map_err(call("read EC point"))?;
            let Some(Attribute::EcPoint(point)) = attrs.into_iter().next() else {
                return Err(HsmError::Unsupported(
                    "EC public key without CKA_EC_POINT".into(),
                ));
            };
            // CKA_EC_POINT is a DER OCTET STRING wrapping the point (04 41 04|x|y).
            let raw = match point.as_slice() {
                [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
                _ => point,
            };
            Ok(PublicKey { alg, raw })
        }
        KeyAlgorithm::Rsa(_) => {
            let attrs = s
                .get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])
                .map_err(call("read RSA public key"))?;
            let (mut n, mut e) = (Vec::new(), Vec::new());
            for a in attrs {
                match a {
                    Attribute::Modulus(m) => n = m,
                    Attribute::PublicExponent(x) => e = x,
                    _ => {}
                }
            }
            let raw = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_bigint_bytes(&n, true);
                    w.next().write_bigint_bytes(&e, true);
                })
            });
            Ok(PublicKey { alg, raw })
        }
    }
}

/// Finds a private key by label and tells its algorithm.
///
/// # Errors
/// No such key.
pub fn find_private_key(
    s: &Session,
    label: &str,
) -> Result<(ObjectHandle, KeyAlgorithm), HsmError> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(call("find key"))?;
    let h = *found.first().ok_or_else(|| HsmError::Missing {
        what: "private key",
        label: label.to_owned(),
    })?;
    let attrs = s
        .get_attributes(h, &[AttributeType::KeyType, AttributeType::ModulusBits])
        .map_err(call("read key type"))?;
    let mut alg = None;
    let mut bits = 2048;
    for a in attrs {
        match a {
            Attribute::KeyType(k) if k == KeyType::EC => alg = Some(KeyAlgorithm::EcdsaP256),
            Attribute::KeyType(k) if k == KeyType::RSA => alg = alg.or(Some(KeyAlgorithm::Rsa(0))),
            Attribute::ModulusBits(b) => bits = u32::try_from(u64::from(b)).unwrap_or(2048),
            _ => {}
        }
    }
    match alg {
        Some(KeyAlgorithm::Rsa(_)) => Ok((h, KeyAlgorithm::Rsa(bits))),
        Some(a) => Ok((h, a)),
        None => Err(HsmError::Unsupported(format!(
            "key `{label}` is neither EC nor RSA"
        ))),
    }
}

/// The public half of a labelled key pair.
///
/// # Errors
/// No such key.
pub fn find_public_key(s: &Session, label: &str, alg: KeyAlgorithm) -> Result<PublicKey, HsmError> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(call("find public key"))?;
    let h = *found.first().ok_or_else(|| HsmError::Missing {
        what: "public key",
        label: label.to_owned(),
    })?;
    public_key(s, h, alg)
}

/// Stores a certificate object (X.509, DER) under a label, replacing one with that label.
///
/// # Errors
/// The token refuses.
pub fn store_certificate(s: &Session, label: &str, der: &[u8]) -> Result<(), HsmError> {
    for old in s
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(call("find certificate"))?
    {
        s.destroy_object(old)
            .map_err(call("remove old certificate"))?;
    }
    let subject = x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().as_raw().to_vec())
        .map_err(|e| HsmError::Unsupported(format!("certificate does not parse: {e}")))?;
    s.create_object(&[
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
        Attribute::Subject(subject),
        Attribute::Value(der.to_vec()),
    ])
    .map_err(call("store certificate"))?;
    Ok(())
}

/// Reads the certificate stored under a label.
///
/// # Errors
/// No such certificate.
pub fn certificate(s: &Session, label: &str) -> Result<Vec<u8>, HsmError> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(call("find certificate"))?;
    let h = *found.first().ok_or_else(|| HsmError::Missing {
        what: "certificate",
        label: label.to_owned(),
    })?;
    match s
        .get_attributes(h, &[AttributeType::Value])
        .map_err(call("read certificate"))?
        .into_iter()
        .next()
    {
        Some(Attribute::Value(v)) => Ok(v),
        _ => Err(HsmError::Missing {
            what: "certificate",
            label: label.to_owned(),
        }),
    }
}

/// Labels of every certificate object on the token.
///
/// # Errors
/// The token refuses.
pub fn certificate_labels(s: &Session) -> Result<Vec<String>, HsmError> {
    let mut out = Vec::new();
    for h in s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .map_err(call("list certificates"))?
    {
        if let Some(Attribute::Label(l)) = s
            .get_attributes(h, &[AttributeType::Label])
            .map_err(call("read label"))?
            .into_iter()
            .next()
        {
            out.push(String::from_utf8_lossy(&l).into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// How a signature is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMode {
    /// ECDSA P-256 over SHA-256; returns DER (r, s).
    EcdsaSha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    RsaPssSha256,
}

impl SignMode {
    fn name(self) -> &'static str {
        match self {
            Self::EcdsaSha256 => "CKM_ECDSA(SHA-256)",
            Self::RsaPkcs1Sha256 => "CKM_SHA256_RSA_PKCS",
            Self::RsaPssSha256 => "CKM_SHA256_RSA_PKCS_PSS",
        }
    }
}

/// Signs on one session.
///
/// # Errors
/// The token refuses or is gone.
pub fn sign_with(
    s: &Session,
    key: ObjectHandle,
    mode: SignMode,
    message: &[u8],
) -> Result<Vec<u8>, HsmError> {
    match mode {
        SignMode::EcdsaSha256 => {
            let digest = Sha256::digest(message);
            let raw = s
                .sign(&Mechanism::Ecdsa, key, &digest)
                .map_err(call("sign"))?;
            ecdsa_der(&raw)
        }
        SignMode::RsaPkcs1Sha256 => s
            .sign(&Mechanism::Sha256RsaPkcs, key, message)
            .map_err(call("sign")),
        SignMode::RsaPssSha256 => {
            let params = PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len: 32u64.into(),
            };
            s.sign(&Mechanism::Sha256RsaPkcsPss(params), key, message)
                .map_err(call("sign"))
        }
    }
}

/// PKCS#11 returns ECDSA signatures as r|s; TLS and X.509 want DER SEQUENCE { r, s }.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, HsmError> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(HsmError::Unsupported(format!(
            "ECDSA signature of {} bytes",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_bigint_bytes(r, true);
            w.next().write_bigint_bytes(s, true);
        })
    }))
}

/// Signature counters and latency, for metrics and tests.
#[derive(Debug)]
pub struct SignStats {
    /// Signatures made.
    pub ok: Counter,
    /// Signatures that failed on every token.
    pub failed: Counter,
    /// Seconds each attempt on a token took (C_SignInit + C_Sign), failures included.
    pub latency: Histogram,
}

impl Default for SignStats {
    fn default() -> Self {
        Self {
            ok: Counter::default(),
            failed: Counter::default(),
            // 10 µs to ~10 s.
            latency: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
        }
    }
}

impl SignStats {
    /// Puts these counters in a metrics registry (under the caller's prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "signatures",
            "Signatures the server key made",
            self.ok.clone(),
        );
        r.register(
            "signature_failures",
            "Signatures that failed on every token",
            self.failed.clone(),
        );
        r.register_with_unit(
            "signature_duration",
            "One signing attempt on a token (C_SignInit + C_Sign)",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}

struct Slotted {
    token: TokenRef,
    /// Logged-in sessions, each with the key handle found on it (token object handles are
    /// valid across the sessions of one login, but looking them up again costs the token a
    /// search of its objects, so each session remembers its own).
    idle: Mutex<Vec<(Session, ObjectHandle)>>,
}

/// Logged-in sessions on one or more tokens for signing with one key label. Blocking: call
/// it from a blocking thread, never from the async reactor.
pub struct SigningPool {
    tokens: Vec<Slotted>,
    pin: Pin,
    label: String,
    max_idle: usize,
    /// Counters.
    pub stats: SignStats,
}

impl fmt::Debug for SigningPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningPool")
            .field("label", &self.label)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl SigningPool {
    /// A pool for `label` over `tokens` (tried in order).
    pub fn new(tokens: Vec<TokenRef>, pin: Pin, label: &str, max_idle: usize) -> Self {
        Self {
            tokens: tokens
                .into_iter()
                .map(|token| Slotted {
                    token,
                    idle: Mutex::new(Vec::new()),
                })
                .collect(),
            pin,
            label: label.to_owned(),
            max_idle: max_idle.max(1),
            stats: SignStats::default(),
        }
    }

    /// Closes the idle sessions (before a re-initialisation invalidates them).
    pub fn close_idle(&self) {
        for t in &self.tokens {
            if let Ok(mut idle) = t.idle.lock() {
                idle.clear();
            }
        }
    }

    /// Key label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Signs `message`, trying each token in order; a session that fails is dropped (a token
    /// that comes back gets new sessions and a new login on the next call).
    ///
    /// # Errors
    /// No token could sign.
    pub fn sign(&self, mode: SignMode, message: &[u8], now: Instant) -> Result<Vec<u8>, HsmError> {
        let mut last = None;
        for t in &self.tokens {
            let pooled = t.idle.lock().ok().and_then(|mut v| v.pop());
            let (session, key) = match pooled {
                Some(p) => p,
                None => match login(&t.token, &self.pin, Access::ReadOnly).and_then(|s| {
                    let (key, _) = find_private_key(&s, &self.label)?;
                    let access = session_access(&s)?;
                    Ok((s, key, access))
                }) {
                    Ok((s, key, access)) => {
                        // As the token reports it (C_GetSessionInfo), not as we asked.
                        let access = match access {
                            Access::ReadOnly => "read-only",
                            Access::ReadWrite => "read-write",
                        };
                        info!(target: "audit", event = "hsm_session", key = %self.label, token = %t.token.label, access, "HSM signing session opened");
                        (s, key)
                    }
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                },
            };
            let result = sign_with(&session, key, mode, message);
            let took = crate::clock::now().saturating_duration_since(now);
            self.stats.latency.observe(took.as_secs_f64());
            let micros = took.as_micros();
            match result {
                Ok(sig) => {
                    self.stats.ok.inc();
                    info!(target: "audit", event = "hsm_sign", key = %self.label, token = %t.token.label, mechanism = mode.name(), result = "ok", duration_us = micros as u64, "HSM signature");
                    if let Ok(mut idle) = t.idle.lock() {
                        if idle.len() < self.max_idle {
                            idle.push((session, key));
                        }
                    }
                    return Ok(sig);
                }
                Err(e) => {
                    warn!(target: "audit", event = "hsm_sign", key = %self.label, token = %t.token.label, mechanism = mode.name(), result = "error", error = %e, duration_us = micros as u64, "HSM signature failed");
                    last = Some(e);
                }
            }
        }
        self.stats.failed.inc();
        // No token could sign. Unless the PIN is wrong (a restart with the right one is
        // needed), drop our sessions and re-initialise the modules so that a token that
        // comes back is found again; this request still fails closed.
        // Not here: other threads may be signing on the module, and C_Finalize under their
        // C_Sign is undefined. The server does it once it holds every signing permit.
        if !matches!(last, Some(HsmError::Login { .. })) {
            for t in &self.tokens {
                self.close_idle();
                request_reinit(&t.token.module);
            }
        }
        Err(last.unwrap_or_else(|| HsmError::Unavailable(self.label.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_allowed_exactly_the_mechanisms_sign_with_uses() {
        assert_eq!(
            allowed_mechanisms(KeyAlgorithm::EcdsaP256, KeyRole::Ca),
            [MechanismType::ECDSA]
        );
        assert_eq!(
            allowed_mechanisms(KeyAlgorithm::EcdsaP256, KeyRole::TlsServer),
            [MechanismType::ECDSA]
        );
        // rcgen signs certificates with PKCS#1 v1.5 only.
        assert_eq!(
            allowed_mechanisms(KeyAlgorithm::Rsa(3072), KeyRole::Ca),
            [MechanismType::SHA256_RSA_PKCS]
        );
        // TLS 1.3 needs PSS; TLS 1.2 peers may offer only PKCS#1 v1.5.
        assert_eq!(
            allowed_mechanisms(KeyAlgorithm::Rsa(2048), KeyRole::TlsServer),
            [
                MechanismType::SHA256_RSA_PKCS_PSS,
                MechanismType::SHA256_RSA_PKCS
            ]
        );
        // Each SignMode's mechanism is in the list of the keys that use it.
        for (mode, alg, role) in [
            (SignMode::EcdsaSha256, KeyAlgorithm::EcdsaP256, KeyRole::Ca),
            (
                SignMode::EcdsaSha256,
                KeyAlgorithm::EcdsaP256,
                KeyRole::TlsServer,
            ),
            (
                SignMode::RsaPkcs1Sha256,
                KeyAlgorithm::Rsa(2048),
                KeyRole::Ca,
            ),
            (
                SignMode::RsaPkcs1Sha256,
                KeyAlgorithm::Rsa(2048),
                KeyRole::TlsServer,
            ),
            (
                SignMode::RsaPssSha256,
                KeyAlgorithm::Rsa(2048),
                KeyRole::TlsServer,
            ),
        ] {
            let mech = match mode {
                SignMode::EcdsaSha256 => MechanismType::ECDSA,
                SignMode::RsaPkcs1Sha256 => MechanismType::SHA256_RSA_PKCS,
                SignMode::RsaPssSha256 => MechanismType::SHA256_RSA_PKCS_PSS,
            };
            assert!(allowed_mechanisms(alg, role).contains(&mech), "{mode:?}");
        }
    }

    #[test]
    fn a_signer_that_finds_no_token_asks_for_reinitialisation_instead_of_finalising() {
        let module = PathBuf::from("/nonexistent/anchord-test-pkcs11.so");
        let pool = SigningPool::new(
            vec![TokenRef {
                module: module.clone(),
                label: "t".into(),
            }],
            Pin::new("1234".into()),
            "k",
            1,
        );
        let e = pool
            .sign(SignMode::EcdsaSha256, b"m", crate::clock::now())
            .unwrap_err();
        assert!(
            matches!(e, HsmError::Module { ref path, .. } if *path == module),
            "{e:?}"
        );
        // Left for the server, which re-initialises holding every signing permit; and not
        // re-initialised here (that would have stamped the once-a-second limit).
        assert!(take_reinit_requests().contains(&module));
        assert!(REINIT_WANTED.lock().unwrap().iter().all(|p| *p != module));
        let last = LAST_REINIT.lock().unwrap();
        assert!(last.iter().all(|(p, _)| *p != module));
    }
}
