//! rustls glue: the server's `ServerConfig` and the client-certificate verifier.
//!
//! Chains are verified by rustls-webpki against the configured CA certificates (dates,
//! signatures, path to an anchor, clientAuth EKU when present); [`RequireClientAuth`]
//! additionally refuses device certificates that carry no EKU at all, since webpki accepts
//! those for any purpose. Resumption is off: every authentication runs the full checks.

pub mod hsm_key;

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// TLS versions anchord can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5216).
    V1_2,
    /// TLS 1.3 (RFC 9190).
    V1_3,
}

/// Where the server's certificate and key come from.
pub enum ServerKey {
    /// PEM files: chain and private key.
    Files(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// A resolver whose key lives in an HSM.
    Resolver(Arc<dyn rustls::server::ResolvesServerCert>),
}

/// Builds the server's rustls configuration from files.
///
/// # Errors
/// A CA certificate rustls cannot use, or a key that does not match the certificate.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cas: &[CertificateDer<'static>],
    versions: &[TlsVersion],
) -> Result<ServerConfig, Error> {
    server_config_with(ServerKey::Files(chain, key), cas, versions)
}

/// Builds the server's rustls configuration.
///
/// # Errors
/// A CA certificate rustls cannot use, or a key that does not match the certificate.
pub fn server_config_with(
    key: ServerKey,
    cas: &[CertificateDer<'static>],
    versions: &[TlsVersion],
) -> Result<ServerConfig, Error> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone())?;
    }
    let inner = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| Error::General(format!("client verifier: {e}")))?;
    let verifier = Arc::new(RequireClientAuth { inner });
    let versions: Vec<&'static SupportedProtocolVersion> = versions
        .iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&versions)?
        .with_client_cert_verifier(verifier);
    let mut cfg = match key {
        ServerKey::Files(chain, key) => builder.with_single_cert(chain, key)?,
        ServerKey::Resolver(r) => builder.with_cert_resolver(r),
    };
    // Our order, not the device's: supplicants list AES-256/SHA-384 first, but EAP-TLS moves
    // a few kilobytes, so the handshake hash dominates and SHA-256 (hardware-accelerated on
    // most CPUs) is the cheaper equally safe choice.
    cfg.ignore_client_order = true;
    // No resumption until it is designed: revocation, posture and policy must run on every
    // authentication, and tickets would only add round trips.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(cfg)
}

/// aws-lc-rs with AES-128-GCM/SHA-256 suites preferred over AES-256-GCM/SHA-384 and
/// ChaCha20; all AEAD suites with forward secrecy stay available.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
    let preferred = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let mut p = default_provider();
    p.cipher_suites = preferred.to_vec();
    p
}

/// A client verifier that also requires the clientAuth EKU to be present.
pub struct RequireClientAuth {
    inner: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for RequireClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequireClientAuth")
    }
}

impl ClientCertVerifier for RequireClientAuth {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !has_client_auth_eku(end_entity) {
            return Err(Error::InvalidCertificate(CertificateError::InvalidPurpose));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn has_client_auth_eku(cert: &CertificateDer<'_>) -> bool {
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return false;
    };
    matches!(parsed.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth)
}

/// What logs and the Accept say about a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, hex.
    pub serial: String,
    /// The device identity: subject CN, else the first SAN.
    pub identity: String,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

impl CertSummary {
    /// Summarises a DER certificate; unparsable input gives empty fields.
    pub fn of(der: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let sha256 = hex_lower(&Sha256::digest(der));
        let Ok((_, c)) = X509Certificate::from_der(der) else {
            return Self {
                sha256,
                ..Self::default()
            };
        };
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned);
        let san = c.subject_alternative_name().ok().flatten().and_then(|s| {
            s.value.general_names.iter().find_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(n)
                | x509_parser::extensions::GeneralName::RFC822Name(n) => Some((*n).to_owned()),
                _ => None,
            })
        });
        Self {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            serial: hex_lower(c.raw_serial()),
            identity: cn.or(san).unwrap_or_default(),
            sha256,
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
