//! rustls glue: the server's `ServerConfig` and the client-certificate verifier.
//!
//! Chains are verified by rustls-webpki against the configured CA certificates (dates,
//! signatures, path to an anchor, clientAuth EKU when present); [`RequireClientAuth`]
//! additionally refuses device certificates that carry no EKU at all, since webpki accepts
//! those for any purpose, and records the path it verified for the revocation checks
//! ([`verifier`]). Resumption is off: every authentication runs the full checks.

pub mod hsm_key;
pub mod verifier;

pub use verifier::{RequireClientAuth, VerifiedChain};

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::{Error, ServerConfig, SupportedProtocolVersion};

/// An HTTP client builder for outside services (OCSP responders, posture sources, the
/// admin listener): `timeout` for connecting and for the whole request, no redirects (a
/// URL from a certificate or a source must not send us, or a token, somewhere else), no
/// proxy from the environment; TLS on rustls with the aws-lc-rs provider this crate uses
/// everywhere (installed as the process default once, so reqwest never looks for another).
pub fn http_client(timeout: std::time::Duration) -> reqwest::ClientBuilder {
    // Err means a provider is installed already: the same one, or one a caller chose.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

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
    // RFC 7627: MSK/EMSK are exported from the TLS 1.2 master secret, which without the
    // extended master secret is not bound to the handshake (triple handshake attacks).
    cfg.require_ems = true;
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

pub use crate::pki::facts::CertSummary;

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::process::{Command, Stdio};

    use rustls::pki_types::pem::PemObject;

    use super::*;

    /// Runs one TLS 1.2 handshake of `openssl s_client` (device-ecdsa's certificate) against
    /// our server configuration over loopback TCP, with `options` as OpenSSL's
    /// `system_default` Options line; the server's result.
    fn handshake_with_openssl(options: &str) -> Result<(), Error> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::pki::dev::generate(d, time::OffsetDateTime::now_utc()).unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(d.join("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(d.join("server.key")).unwrap();
        let root = CertificateDer::from_pem_file(d.join("root-ca.pem")).unwrap();
        let cfg = Arc::new(server_config(chain, key, &[root], &[TlsVersion::V1_2]).unwrap());
        std::fs::write(
            d.join("openssl.cnf"),
            format!("openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n[sys]\n{options}\n"),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = Command::new("openssl")
            .current_dir(d)
            .env("OPENSSL_CONF", d.join("openssl.cnf"))
            .args(["s_client", "-connect", &addr.to_string(), "-tls1_2"])
            .args(["-cert", "device-ecdsa.pem", "-key", "device-ecdsa.key"])
            .args(["-cert_chain", "issuing-ca.pem"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        let result = loop {
            if !conn.is_handshaking() {
                break Ok(());
            }
            if conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
                continue;
            }
            let mut buf = [0u8; 4096];
            let n = sock.read(&mut buf).unwrap();
            if n == 0 {
                break Err(Error::General("client closed".into()));
            }
            conn.read_tls(&mut &buf[..n]).unwrap();
            if let Err(e) = conn.process_new_packets() {
                let _ = conn.write_tls(&mut sock);
                break Err(e);
            }
        };
        let _ = sock.flush();
        drop(sock);
        drop(client.stdin.take());
        let _ = client.kill();
        let _ = client.wait();
        result
    }

    #[test]
    fn tls12_peer_without_extended_master_secret_is_refused() {
        assert_eq!(
            handshake_with_openssl("Options = ExtendedMasterSecret"),
            Ok(())
        );
        assert_eq!(
            handshake_with_openssl("Options = -ExtendedMasterSecret"),
            Err(Error::PeerIncompatible(
                rustls::PeerIncompatible::ExtendedMasterSecretExtensionRequired
            ))
        );
    }
}
