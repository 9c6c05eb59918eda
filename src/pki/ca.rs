//! A two-tier CA whose keys live in PKCS#11 tokens, on two tokens with their own PINs:
//!
//! - the **CA token** holds the root CA and issuing CA keys (and their certificates). Only
//!   `anchord pki` logs into it; the server never gets its PIN. (The root could sit on a
//!   third, offline token; anchord keeps it with the issuing CA so that `pki` stays one step.)
//! - the **server token** holds the RADIUS server's TLS key and nothing else private: the
//!   server certificate and, as public objects, copies of the root and issuing CA
//!   certificates (its chain and the devices' trust anchor). The server logs into it with
//!   read-only sessions, so a compromised server process can sign TLS handshakes but cannot
//!   issue device certificates.
//!
//! Keys are generated on their token (sensitive, non-extractable, sign only, with
//! CKA_ALLOWED_MECHANISMS). Labels: `anchord-root-ca`, `anchord-issuing-ca` on the CA token;
//! `anchord-server@N` for server key version N on the server token (rotation adds N+1 and
//! keeps N, so a running server can switch without a window where certificate and key
//! disagree).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, RemoteKeyPair, SanType, SerialNumber,
    SignatureAlgorithm,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::hsm::{
    self, Access, HsmError, KeyAlgorithm, KeyRole, Pin, PublicKey, SignMode, TokenRef,
};

/// Root CA label.
pub const ROOT: &str = "anchord-root-ca";
/// Issuing CA label.
pub const ISSUING: &str = "anchord-issuing-ca";
/// Prefix of server key/certificate labels; the version follows.
pub const SERVER_PREFIX: &str = "anchord-server@";

/// Errors of CA operations.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A certificate request (CSR) whose self-signature does not verify with the key it
    /// carries: its holder did not prove possession of that key (RFC 2986 §3).
    #[error("certificate request: its signature does not verify with the key it carries")]
    CsrSignature,
    /// A certificate request that is not a well-formed PKCS#10 request in PEM.
    #[error("certificate request: not a PKCS#10 request in PEM: {0}")]
    CsrMalformed(rcgen::Error),
    /// The token already holds a CA.
    #[error("token `{0}` already holds an anchord CA (use `pki rotate-server` or a new token)")]
    AlreadyInitialised(String),
    /// The server token already holds a server key.
    #[error(
        "token `{0}` already holds an anchord server key (use `pki rotate-server` or a new token)"
    )]
    ServerAlreadyInitialised(String),
    /// The token holds no anchord CA.
    #[error("token `{0}` holds no anchord CA: run `anchord pki init` first")]
    NotInitialised(String),
    /// The server token holds no server key.
    #[error("token `{0}` holds no anchord server key: run `anchord pki init`, or `anchord pki rotate-server --token {0}`")]
    NoServerKey(String),
    /// One token named for both roles.
    #[error("the CA and the server need separate tokens (both are `{0}`): the server must not be able to log into the CA keys")]
    SameToken(String),
    /// Writing output files failed.
    #[error("writing {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The CA token (root and issuing CA keys) and its PIN.
#[derive(Debug, Clone)]
pub struct TokenCa {
    /// The token.
    pub token: TokenRef,
    /// User PIN.
    pub pin: Pin,
}

/// The server token (the server's TLS key only) and its PIN: what `[pki]` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerToken {
    /// The token.
    pub token: TokenRef,
    /// User PIN.
    pub pin: Pin,
}

/// rcgen signs through this: the key stays on the token.
struct TokenKey {
    token: TokenRef,
    pin: Pin,
    label: String,
    public: PublicKey,
}

impl TokenKey {
    /// A key pair on `token` as rcgen sees it (public half read from the token).
    fn load(token: &TokenRef, pin: &Pin, label: &str) -> Result<KeyPair, CaError> {
        let s = hsm::login(token, pin, Access::ReadOnly)?;
        let (_, alg) = hsm::find_private_key(&s, label)?;
        let public = hsm::find_public_key(&s, label, alg)?;
        Ok(KeyPair::from_remote(Box::new(Self {
            token: token.clone(),
            pin: pin.clone(),
            label: label.to_owned(),
            public,
        }))?)
    }

    fn rcgen_alg(&self) -> &'static SignatureAlgorithm {
        match self.public.alg {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl RemoteKeyPair for TokenKey {
    fn public_key(&self) -> &[u8] {
        &self.public.raw
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let mode = match self.public.alg {
            KeyAlgorithm::EcdsaP256 => SignMode::EcdsaSha256,
            KeyAlgorithm::Rsa(_) => SignMode::RsaPkcs1Sha256,
        };
        let s = hsm::login(&self.token, &self.pin, Access::ReadOnly)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        let (key, _) =
            hsm::find_private_key(&s, &self.label).map_err(|_| rcgen::Error::RemoteKeyError)?;
        hsm::sign_with(&s, key, mode, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.rcgen_alg()
    }
}

/// A device certificate to issue.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSpec<'a> {
    /// CN, first SAN and file stem.
    pub name: &'a str,
    /// More SANs: DNS names, or URIs (`scheme://...`).
    pub sans: &'a [String],
    /// Subject organizational unit (the department policies tell devices apart by).
    pub ou: Option<&'a str>,
    /// Validity in days from now; zero or less makes an already expired certificate.
    pub days: i64,
    /// OCSP responder for the AIA extension.
    pub ocsp_url: Option<&'a str>,
    /// Device key algorithm.
    pub key: KeyAlgorithm,
    /// serverAuth EKU instead of clientAuth (a wrong certificate, for demos and tests).
    pub server_auth_only: bool,
    /// A PKCS#10 request from the device (PEM): its key is used and no key file is written.
    /// Only the public key is taken from it; names, EKU and validity are anchord's.
    pub csr_pem: Option<&'a str>,
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// True if the CA token itself was created.
    pub ca_token_created: bool,
    /// True if the server token itself was created.
    pub server_token_created: bool,
    /// Labels of the keys made on the CA token.
    pub ca_keys: Vec<String>,
    /// Label of the key made on the server token.
    pub server_key: String,
}

/// One certificate on the token, for `pki status`.
#[derive(Debug, Clone)]
pub struct CertStatus {
    /// Object label.
    pub label: String,
    /// Subject DN.
    pub subject: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Fraction of the lifetime used at `now`.
    pub used: f64,
}

impl CertStatus {
    /// Past 2/3 of its lifetime: time to renew.
    pub fn in_renewal_window(&self) -> bool {
        self.used >= 2.0 / 3.0
    }
}

impl TokenCa {
    fn session(&self, access: Access) -> Result<cryptoki::session::Session, HsmError> {
        hsm::login(&self.token, &self.pin, access)
    }

    fn remote(&self, label: &str) -> Result<KeyPair, CaError> {
        TokenKey::load(&self.token, &self.pin, label)
    }

    /// rcgen's view of a CA stored on the token (re-signed in memory to get an issuer
    /// object; only its name and key are used).
    fn issuer(&self, label: &str) -> Result<(Certificate, KeyPair, Vec<u8>), CaError> {
        let der = hsm::certificate(&self.session(Access::ReadOnly)?, label)?;
        let key = self.remote(label)?;
        let params = CertificateParams::from_ca_cert_der(&CertificateDer::from(der.clone()))?;
        let cert = params.self_signed(&key)?;
        Ok((cert, key, der))
    }

    /// Creates both tokens if absent; builds root CA and issuing CA on the CA token and the
    /// server key on the server token, with the server certificate and copies of the CA
    /// certificates (public objects) on the server token.
    ///
    /// # Errors
    /// Token errors, one token named for both, a CA token that already holds a CA, or a
    /// server token that already holds a server key.
    pub fn init(
        &self,
        server: &ServerToken,
        so_pin: &Pin,
        alg: KeyAlgorithm,
        server_name: &str,
        now: OffsetDateTime,
    ) -> Result<InitReport, CaError> {
        if self.token == server.token {
            return Err(CaError::SameToken(self.token.label.clone()));
        }
        let ca_token_created = hsm::ensure_token(&self.token, so_pin, &self.pin)?;
        let s = self.session(Access::ReadWrite)?;
        if hsm::find_private_key(&s, ROOT).is_ok() {
            return Err(CaError::AlreadyInitialised(self.token.label.clone()));
        }
        let server_token_created = hsm::ensure_token(&server.token, so_pin, &server.pin)?;
        let ss = server.session(Access::ReadWrite)?;
        if !server_versions(&ss)?.is_empty() {
            return Err(CaError::ServerAlreadyInitialised(
                server.token.label.clone(),
            ));
        }

        hsm::generate_key(&s, ROOT, alg, KeyRole::Ca)?;
        let root_key = self.remote(ROOT)?;
        let mut p = ca_params("anchord root CA", now, 7300, None);
        p.serial_number = Some(random_serial());
        let root = p.self_signed(&root_key)?;
        hsm::store_certificate(&s, ROOT, root.der())?;

        hsm::generate_key(&s, ISSUING, alg, KeyRole::Ca)?;
        let issuing_key = self.remote(ISSUING)?;
        let mut p = ca_params("anchord issuing CA", now, 3650, Some(0));
        p.serial_number = Some(random_serial());
        let issuing = p.signed_by(&issuing_key, &root, &root_key)?;
        hsm::store_certificate(&s, ISSUING, issuing.der())?;

        let server_key = self.new_server_key(server, &ss, alg, server_name, now)?;
        Ok(InitReport {
            ca_token_created,
            server_token_created,
            ca_keys: vec![ROOT.to_owned(), ISSUING.to_owned()],
            server_key,
        })
    }

    /// Makes the next server key version on the server token and its certificate, signed by
    /// the issuing CA; refreshes the server token's copies of the CA certificates first.
    fn new_server_key(
        &self,
        server: &ServerToken,
        ss: &cryptoki::session::Session,
        alg: KeyAlgorithm,
        server_name: &str,
        now: OffsetDateTime,
    ) -> Result<String, CaError> {
        let (issuing, issuing_key, issuing_der) =
            self.issuer(ISSUING).map_err(|e| self.not_initialised(e))?;
        let root_der = hsm::certificate(&self.session(Access::ReadOnly)?, ROOT)?;
        hsm::store_certificate(ss, ROOT, &root_der)?;
        hsm::store_certificate(ss, ISSUING, &issuing_der)?;
        let version = server_versions(ss)?.last().copied().unwrap_or(0) + 1;
        let label = format!("{SERVER_PREFIX}{version}");
        hsm::generate_key(ss, &label, alg, KeyRole::TlsServer)?;
        let key = TokenKey::load(&server.token, &server.pin, &label)?;
        let mut p = leaf_params(server_name, now, 730)?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &issuing, &issuing_key)?;
        hsm::store_certificate(ss, &label, cert.der())?;
        Ok(label)
    }

    /// Makes server key version N+1 on the server token with a new certificate from the
    /// issuing CA; a running server switches to it. With `so_pin`, a server token that does
    /// not exist yet is created (how a deployment whose server key shared the CA token moves
    /// the server to a token of its own).
    ///
    /// # Errors
    /// Token errors, or one token named for both.
    pub fn rotate_server(
        &self,
        server: &ServerToken,
        so_pin: Option<&Pin>,
        server_name: &str,
        now: OffsetDateTime,
    ) -> Result<String, CaError> {
        if self.token == server.token {
            return Err(CaError::SameToken(self.token.label.clone()));
        }
        let (_, alg) = hsm::find_private_key(&self.session(Access::ReadOnly)?, ISSUING)
            .map_err(|e| self.not_initialised(e.into()))?;
        if let Some(so) = so_pin {
            hsm::ensure_token(&server.token, so, &server.pin)?;
        }
        let ss = server.session(Access::ReadWrite)?;
        self.new_server_key(server, &ss, alg, server_name, now)
    }

    fn not_initialised(&self, e: CaError) -> CaError {
        match e {
            CaError::Hsm(HsmError::Missing { .. }) => {
                CaError::NotInitialised(self.token.label.clone())
            }
            other => other,
        }
    }

    /// Issues a device certificate (clientAuth EKU, SANs, AIA OCSP URL when given) from the
    /// issuing CA key on the token. The device key is made here (ECDSA P-256, for dev and
    /// demo) and written to `<out>/<name>.key`; the certificate and issuing CA to
    /// `<out>/<name>.pem`. [`TokenCa::issue`] with `csr_pem` signs a device's own key.
    ///
    /// # Errors
    /// Token or file errors.
    pub fn issue_device(
        &self,
        name: &str,
        sans: &[String],
        days: i64,
        ocsp_url: Option<&str>,
        out: &Path,
        now: OffsetDateTime,
    ) -> Result<(PathBuf, PathBuf), CaError> {
        let spec = DeviceSpec {
            name,
            sans,
            ou: None,
            days,
            ocsp_url,
            key: KeyAlgorithm::EcdsaP256,
            server_auth_only: false,
            csr_pem: None,
        };
        self.issue(&spec, out, now)
    }

    /// Issues a device certificate as `spec` says (the demo and tests also make RSA,
    /// expired and wrong-EKU devices this way).
    ///
    /// # Errors
    /// Token or file errors.
    pub fn issue(
        &self,
        spec: &DeviceSpec<'_>,
        out: &Path,
        now: OffsetDateTime,
    ) -> Result<(PathBuf, PathBuf), CaError> {
        let (issuing, issuing_key, issuing_der) =
            self.issuer(ISSUING).map_err(|e| self.not_initialised(e))?;
        let csr = spec
            .csr_pem
            .map(|pem| {
                // rcgen reports a failed self-signature check as `RingUnspecified`.
                rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(|e| match e {
                    rcgen::Error::RingUnspecified => CaError::CsrSignature,
                    other => CaError::CsrMalformed(other),
                })
            })
            .transpose()?;
        let device_key = match (&csr, spec.key) {
            (Some(_), _) => None,
            (None, KeyAlgorithm::EcdsaP256) => {
                Some(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
            }
            (None, KeyAlgorithm::Rsa(_)) => Some(KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?),
        };
        let mut p = leaf_params(spec.name, now, spec.days)?;
        if let Some(ou) = spec.ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        if spec.days <= 0 {
            // Already expired: valid for a month up to `days` ago.
            p.not_before = now + Duration::days(spec.days) - Duration::days(30);
        }
        p.extended_key_usages = vec![if spec.server_auth_only {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let mut names = vec![SanType::DnsName(spec.name.try_into()?)];
        for san in spec.sans {
            // `scheme://...` (e.g. `IntuneDeviceId://{guid}`, what MDM-issued certificates
            // carry for NAC) is a URI SAN; anything else a DNS name.
            names.push(if san.contains("://") {
                SanType::URI(san.as_str().try_into()?)
            } else {
                SanType::DnsName(san.as_str().try_into()?)
            });
        }
        p.subject_alt_names = names;
        if let Some(url) = spec.ocsp_url {
            p.custom_extensions.push(aia_ocsp(url));
        }
        let cert = match (&csr, &device_key) {
            (Some(csr), _) => p.signed_by(&csr.public_key, &issuing, &issuing_key)?,
            (None, Some(key)) => p.signed_by(key, &issuing, &issuing_key)?,
            (None, None) => return Err(CaError::Rcgen(rcgen::Error::RemoteKeyError)),
        };
        let issuing_pem = pem("CERTIFICATE", &issuing_der);
        let cert_path = out.join(format!("{}.pem", spec.name));
        write(&cert_path, &format!("{}{issuing_pem}", cert.pem()), false)?;
        let key_path = out.join(format!("{}.key", spec.name));
        if let Some(key) = device_key {
            write(&key_path, &key.serialize_pem(), true)?;
        }
        Ok((cert_path, key_path))
    }

    /// Every certificate on the CA token with its validity.
    ///
    /// # Errors
    /// Token errors.
    pub fn status(&self, now: OffsetDateTime) -> Result<Vec<CertStatus>, CaError> {
        cert_status(&self.session(Access::ReadOnly)?, now)
    }

    /// Protection attributes of every private key on the CA token.
    ///
    /// # Errors
    /// Token errors.
    pub fn keys(&self) -> Result<Vec<hsm::KeyProtection>, CaError> {
        Ok(hsm::key_protection(&self.session(Access::ReadOnly)?)?)
    }
}

impl ServerToken {
    fn session(&self, access: Access) -> Result<cryptoki::session::Session, HsmError> {
        hsm::login(&self.token, &self.pin, access)
    }

    fn not_initialised(&self, e: HsmError) -> CaError {
        match e {
            HsmError::Missing { .. } => CaError::NotInitialised(self.token.label.clone()),
            other => other.into(),
        }
    }

    /// The newest server key on the token: its label, algorithm and chain (server
    /// certificate, then the issuing CA), plus the root CA certificate (trust anchor). Reads
    /// through a read-only session.
    ///
    /// # Errors
    /// Token errors or no server key.
    pub fn server_material(&self) -> Result<ServerMaterial, CaError> {
        let s = self.session(Access::ReadOnly)?;
        let version = *server_versions(&s)?
            .last()
            .ok_or_else(|| CaError::NoServerKey(self.token.label.clone()))?;
        let label = format!("{SERVER_PREFIX}{version}");
        let (_, alg) = hsm::find_private_key(&s, &label)?;
        let chain = vec![
            hsm::certificate(&s, &label)?,
            hsm::certificate(&s, ISSUING).map_err(|e| self.not_initialised(e))?,
        ];
        let root = hsm::certificate(&s, ROOT).map_err(|e| self.not_initialised(e))?;
        Ok(ServerMaterial {
            label,
            alg,
            chain,
            root,
        })
    }

    /// Labels of the CA private keys this token holds: keys labelled as anchord's CAs, or
    /// whose same-labelled certificate is a CA certificate. A server token must hold none:
    /// with one, the server's login could sign device certificates.
    ///
    /// # Errors
    /// Token errors.
    pub fn ca_private_keys(&self) -> Result<Vec<String>, CaError> {
        let s = self.session(Access::ReadOnly)?;
        let mut out = Vec::new();
        for k in hsm::key_protection(&s)? {
            let is_ca = k.label == ROOT
                || k.label == ISSUING
                || hsm::certificate(&s, &k.label).is_ok_and(|der| {
                    x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, c)| c.is_ca())
                });
            if is_ca {
                out.push(k.label);
            }
        }
        Ok(out)
    }

    /// Every certificate on the server token with its validity.
    ///
    /// # Errors
    /// Token errors.
    pub fn status(&self, now: OffsetDateTime) -> Result<Vec<CertStatus>, CaError> {
        cert_status(&self.session(Access::ReadOnly)?, now)
    }

    /// Protection attributes of every private key on the server token.
    ///
    /// # Errors
    /// Token errors.
    pub fn keys(&self) -> Result<Vec<hsm::KeyProtection>, CaError> {
        Ok(hsm::key_protection(&self.session(Access::ReadOnly)?)?)
    }
}

/// Writes `root-ca.pem` and `issuing-ca.pem` from a token's public certificate objects (the
/// server token's copies, or the CA token's) into `out`. Needs no PIN: certificates are
/// public objects.
///
/// # Errors
/// Token or file errors.
pub fn export_ca(token: &TokenRef, out: &Path) -> Result<Vec<PathBuf>, CaError> {
    let s = hsm::open_public(token)?;
    let mut written = Vec::new();
    for (label, file) in [(ROOT, "root-ca.pem"), (ISSUING, "issuing-ca.pem")] {
        let der = hsm::certificate(&s, label).map_err(|e| match e {
            HsmError::Missing { .. } => CaError::NotInitialised(token.label.clone()),
            other => other.into(),
        })?;
        let path = out.join(file);
        write(&path, &pem("CERTIFICATE", &der), false)?;
        written.push(path);
    }
    Ok(written)
}

fn cert_status(
    s: &cryptoki::session::Session,
    now: OffsetDateTime,
) -> Result<Vec<CertStatus>, CaError> {
    let mut out = Vec::new();
    for label in hsm::certificate_labels(s)? {
        let der = hsm::certificate(s, &label)?;
        let Ok((_, c)) = x509_parser::parse_x509_certificate(&der) else {
            continue;
        };
        let nb = c.validity().not_before.to_datetime();
        let na = c.validity().not_after.to_datetime();
        let life = (na - nb).as_seconds_f64().max(1.0);
        out.push(CertStatus {
            label,
            subject: c.subject().to_string(),
            not_before: nb,
            not_after: na,
            used: ((now - nb).as_seconds_f64() / life).clamp(0.0, 10.0),
        });
    }
    Ok(out)
}

/// What the server needs from the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMaterial {
    /// Server key label (`anchord-server@N`).
    pub label: String,
    /// Its algorithm.
    pub alg: KeyAlgorithm,
    /// Server certificate then issuing CA, DER.
    pub chain: Vec<Vec<u8>>,
    /// Root CA, DER: the trust anchor for devices.
    pub root: Vec<u8>,
}

/// Server key versions on the token whose key and certificate both exist, ascending.
fn server_versions(s: &cryptoki::session::Session) -> Result<Vec<u32>, HsmError> {
    let mut v: Vec<u32> = hsm::certificate_labels(s)?
        .iter()
        .filter_map(|l| l.strip_prefix(SERVER_PREFIX)?.parse().ok())
        .filter(|n| hsm::find_private_key(s, &format!("{SERVER_PREFIX}{n}")).is_ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

fn ca_params(cn: &str, now: OffsetDateTime, days: i64, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "anchord");
    p.is_ca = IsCa::Ca(path_len.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(days);
    p
}

fn leaf_params(
    cn: &str,
    now: OffsetDateTime,
    days: i64,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(vec![cn.to_owned()])?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "anchord");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(days);
    p.serial_number = Some(random_serial());
    Ok(p)
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7F; // positive
    SerialNumber::from(b.to_vec())
}

/// Authority Information Access with one OCSP responder URL (RFC 5280 §4.2.2.1).
pub fn aia_ocsp(url: &str) -> CustomExtension {
    const AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
    let der = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                        1, 3, 6, 1, 5, 5, 7, 48, 1,
                    ]));
                w.next()
                    .write_tagged_implicit(yasna::Tag::context(6), |w| w.write_ia5_string(url));
            });
        });
    });
    CustomExtension::from_oid_content(AIA, der)
}

fn pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, text).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(used: f64) -> CertStatus {
        let now = OffsetDateTime::UNIX_EPOCH;
        CertStatus {
            label: "x".into(),
            subject: String::new(),
            not_before: now,
            not_after: now,
            used,
        }
    }

    #[test]
    fn renewal_window_starts_at_two_thirds_of_the_lifetime() {
        assert!(!status(0.5).in_renewal_window());
        assert!(!status(0.66).in_renewal_window());
        assert!(status(0.67).in_renewal_window());
        assert!(status(1.2).in_renewal_window());
    }

    #[test]
    fn aia_extension_carries_the_ocsp_url() {
        let ext = aia_ocsp("http://ocsp.test/");
        let der = ext.content();
        assert!(der.windows(17).any(|w| w == b"http://ocsp.test/"));
        // id-ad-ocsp 1.3.6.1.5.5.7.48.1
        assert!(der
            .windows(10)
            .any(|w| w == [0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]));
    }
}
