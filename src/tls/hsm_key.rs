//! rustls signing through a PKCS#11 token: the server's TLS private key never leaves it.
//!
//! [`HsmSigningKey`] implements rustls's `SigningKey` over a [`SigningPool`]; ECDSA comes
//! back from PKCS#11 as raw r|s and is DER-encoded there. [`RotatingResolver`] hands rustls
//! the current certificate and key and can be swapped while handshakes are in flight: each
//! handshake keeps the `CertifiedKey` it started with.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::clock;
use crate::pki::hsm::{KeyAlgorithm, SignMode, SigningPool};

/// A private key held by a token.
pub struct HsmSigningKey {
    pool: Arc<SigningPool>,
    alg: KeyAlgorithm,
}

impl HsmSigningKey {
    /// A key of algorithm `alg` reached through `pool`.
    pub fn new(pool: Arc<SigningPool>, alg: KeyAlgorithm) -> Self {
        Self { pool, alg }
    }
}

impl fmt::Debug for HsmSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HsmSigningKey({}, {:?})", self.pool.label(), self.alg)
    }
}

impl SigningKey for HsmSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let choice = match self.alg {
            KeyAlgorithm::EcdsaP256 => offered
                .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
                .then_some((
                    SignatureScheme::ECDSA_NISTP256_SHA256,
                    SignMode::EcdsaSha256,
                )),
            // TLS 1.3 only offers PSS for RSA; TLS 1.2 peers may only know PKCS#1.
            KeyAlgorithm::Rsa(_) => {
                if offered.contains(&SignatureScheme::RSA_PSS_SHA256) {
                    Some((SignatureScheme::RSA_PSS_SHA256, SignMode::RsaPssSha256))
                } else if offered.contains(&SignatureScheme::RSA_PKCS1_SHA256) {
                    Some((SignatureScheme::RSA_PKCS1_SHA256, SignMode::RsaPkcs1Sha256))
                } else {
                    None
                }
            }
        };
        let (scheme, mode) = choice?;
        Some(Box::new(HsmSigner {
            pool: self.pool.clone(),
            scheme,
            mode,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.alg {
            KeyAlgorithm::EcdsaP256 => SignatureAlgorithm::ECDSA,
            KeyAlgorithm::Rsa(_) => SignatureAlgorithm::RSA,
        }
    }
}

struct HsmSigner {
    pool: Arc<SigningPool>,
    scheme: SignatureScheme,
    mode: SignMode,
}

impl fmt::Debug for HsmSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HsmSigner({:?})", self.scheme)
    }
}

impl Signer for HsmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // Fails closed: without a signature from the token there is no handshake.
        self.pool
            .sign(self.mode, message, clock::now())
            .map_err(|e| rustls::Error::Other(rustls::OtherError(Arc::new(e))))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// The server certificate and key, swappable at run time (key rotation).
pub struct RotatingResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl RotatingResolver {
    /// Starts with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// Replaces the certificate and key for new handshakes.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut c) => *c = key,
            Err(p) => *p.into_inner() = key,
        }
    }

    /// The current certificate and key.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl fmt::Debug for RotatingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotatingResolver")
    }
}

impl ResolvesServerCert for RotatingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
