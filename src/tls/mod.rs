//! rustls glue: the server's `ServerConfig` and the client-certificate verifier.
//!
//! Chains are verified by rustls-webpki against the configured CA certificates (dates,
//! signatures, path to an anchor, clientAuth EKU when present); [`RequireClientAuth`]
//! additionally refuses device certificates that carry no EKU at all, since webpki accepts
//! those for any purpose. Resumption is off: every authentication runs the full checks.

pub mod hsm_key;

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DistinguishedName, Error, RootCertStore, ServerConfig,
    SupportedProtocolVersion,
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
    let verifier = Arc::new(RequireClientAuth::new(cas)?);
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

/// A client verifier that also requires the clientAuth EKU to be present, and remembers
/// intermediates it has verified.
///
/// Most devices of a site share one issuing CA, and re-verifying the root's signature on it
/// is one of the three signature checks of every authentication. After a full verification
/// of `[device, X]` where the device was issued by X and X by a configured root, X (same DER)
/// becomes an extra trust anchor for later devices, used only within X's validity period;
/// their own signature, dates and EKU are still checked by webpki, and anything that fails
/// that way is verified again in full (so errors are the full path's). Off when a root carries
/// name constraints, which would otherwise be skipped.
pub struct RequireClientAuth {
    inner: Arc<dyn ClientCertVerifier>,
    roots: RootCertStore,
    root_subjects: Vec<Vec<u8>>,
    fast: Option<std::sync::RwLock<FastPath>>,
    /// Verifications that took the cached-intermediate path.
    pub fast_hits: std::sync::atomic::AtomicU64,
}

/// Verified intermediates and the verifier that trusts them.
#[derive(Default)]
struct FastPath {
    known: Vec<(Vec<u8>, i64, i64)>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// Most intermediates remembered.
const MAX_CACHED_INTERMEDIATES: usize = 64;

impl RequireClientAuth {
    /// A verifier for devices chaining to `cas`.
    ///
    /// # Errors
    /// A CA certificate rustls cannot use.
    pub fn new(cas: &[CertificateDer<'static>]) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        let mut root_subjects = Vec::new();
        let mut constrained = false;
        for ca in cas {
            roots.add(ca.clone())?;
            if let Ok((_, c)) = X509Certificate::from_der(ca) {
                root_subjects.push(c.subject().as_raw().to_vec());
                constrained |= matches!(c.name_constraints(), Ok(Some(_)));
            }
        }
        let inner = WebPkiClientVerifier::builder(Arc::new(roots.clone()))
            .build()
            .map_err(|e| Error::General(format!("client verifier: {e}")))?;
        let fast = (!constrained).then(|| std::sync::RwLock::new(FastPath::default()));
        Ok(Self {
            inner,
            roots,
            root_subjects,
            fast,
            fast_hits: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn cached_verifier(
        &self,
        intermediate: &[u8],
        now: UnixTime,
    ) -> Option<Arc<dyn ClientCertVerifier>> {
        let fast = self.fast.as_ref()?.read().ok()?;
        let now = i64::try_from(now.as_secs()).ok()?;
        fast.known
            .iter()
            .any(|(der, from, until)| {
                der.as_slice() == intermediate && (*from..=*until).contains(&now)
            })
            .then(|| fast.verifier.clone())
            .flatten()
    }

    /// After a full verification succeeded: remember X if the path was device ← X ← root.
    fn remember(&self, end_entity: &[u8], intermediate: &CertificateDer<'_>) {
        let Some(fast) = &self.fast else { return };
        let (Ok((_, ee)), Ok((_, x))) = (
            X509Certificate::from_der(end_entity),
            X509Certificate::from_der(intermediate),
        ) else {
            return;
        };
        let is_ca = matches!(x.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let subject = x.subject().as_raw();
        let issued_by_root = self
            .root_subjects
            .iter()
            .any(|r| r.as_slice() == x.issuer().as_raw());
        let is_root = self.root_subjects.iter().any(|r| r.as_slice() == subject);
        if !is_ca || is_root || !issued_by_root || ee.issuer().as_raw() != subject {
            return;
        }
        let Ok(mut f) = fast.write() else { return };
        if f.known
            .iter()
            .any(|(d, ..)| d.as_slice() == intermediate.as_ref())
            || f.known.len() >= MAX_CACHED_INTERMEDIATES
        {
            return;
        }
        let mut anchors = self.roots.clone();
        if anchors.add(intermediate.clone().into_owned()).is_err() {
            return;
        }
        let Ok(verifier) = WebPkiClientVerifier::builder(Arc::new(anchors)).build() else {
            return;
        };
        let v = x.validity();
        f.known.push((
            intermediate.to_vec(),
            v.not_before.timestamp(),
            v.not_after.timestamp(),
        ));
        f.verifier = Some(verifier);
    }
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
        if !has_client_auth_eku(end_entity) {
            // webpki would accept a certificate without any EKU; devices must carry clientAuth.
            self.inner
                .verify_client_cert(end_entity, intermediates, now)?;
            return Err(Error::InvalidCertificate(CertificateError::InvalidPurpose));
        }
        if let [x] = intermediates {
            if let Some(v) = self.cached_verifier(x, now) {
                if let Ok(ok) = v.verify_client_cert(end_entity, &[], now) {
                    self.fast_hits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(ok);
                }
            }
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let [x] = intermediates {
            self.remember(end_entity, x);
        }
        Ok(verified)
    }

    delegate_handshake_signatures!();
}

/// The handshake-signature methods of a rustls certificate verifier (client or server
/// side), passed on to the wrapped verifier in `self.inner`.
macro_rules! delegate_handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}
pub(crate) use delegate_handshake_signatures;

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

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    fn chain(dir: &std::path::Path, name: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap(),
        ))
    }

    #[test]
    fn verified_intermediate_is_reused_and_never_widens_trust() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let root = CertificateDer::from_pem_file(dir.path().join("root-ca.pem")).unwrap();
        let v = RequireClientAuth::new(&[root]).unwrap();
        let good = chain(dir.path(), "device-ecdsa");
        let rsa = chain(dir.path(), "device-rsa");
        v.verify_client_cert(&good[0], &good[1..], now()).unwrap();
        assert_eq!(
            v.fast_hits.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "first time: full path"
        );
        v.verify_client_cert(&rsa[0], &rsa[1..], now()).unwrap();
        assert_eq!(
            v.fast_hits.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "same issuing CA: cached"
        );

        // Expired and wrong-EKU devices under the cached CA still fail, with the full path's error.
        let expired = chain(dir.path(), "device-expired");
        let e = v
            .verify_client_cert(&expired[0], &expired[1..], now())
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{e:?}"
        );
        let eku = chain(dir.path(), "device-wrong-eku");
        assert!(v.verify_client_cert(&eku[0], &eku[1..], now()).is_err());

        // A rogue CA with the issuing CA's name: its device fails whether it sends the rogue
        // CA or the real (cached) one.
        let rogue_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "anchord dev issuing CA");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "anchord dev");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let rogue = p.self_signed(&rogue_key).unwrap();
        let dev_key = rcgen::KeyPair::generate().unwrap();
        let mut d = rcgen::CertificateParams::new(vec!["evil.test".to_owned()]).unwrap();
        d.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let evil = d.signed_by(&dev_key, &rogue, &rogue_key).unwrap();
        let evil = CertificateDer::from(evil.der().to_vec());
        assert!(v
            .verify_client_cert(&evil, &[CertificateDer::from(rogue.der().to_vec())], now())
            .is_err());
        assert!(v.verify_client_cert(&evil, &good[1..], now()).is_err());
        assert_eq!(
            v.fast_hits.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "no further cache hits"
        );
    }
}
