//! How the load generator checks the server's certificate.
//!
//! A real device verifies the server's chain on every authentication; a load generator that
//! does so spends two or three signature verifications per authentication on its one core
//! and, against a fast server, measures itself. [`RememberingVerifier`] verifies a chain in
//! full the first time it sees it and then remembers it (same certificates, same name) for
//! the run. Every handshake's own signature (ServerKeyExchange or CertificateVerify) is
//! still verified, so each authentication still proves the server holds the key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::Error;
use sha2::{Digest, Sha256};

/// Chains remembered at most (a server has one or two).
const MAX_REMEMBERED: usize = 8;

/// Full verification on first sight, then remembered for the run.
#[derive(Debug)]
pub struct RememberingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Vec<[u8; 32]>>,
    full_checks: AtomicU64,
}

impl RememberingVerifier {
    /// Wraps a full verifier.
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self {
            inner,
            seen: Mutex::default(),
            full_checks: AtomicU64::new(0),
        }
    }

    /// Full chain verifications done so far.
    pub fn full_checks(&self) -> u64 {
        self.full_checks.load(Ordering::Relaxed)
    }
}

fn chain_key(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    name: &ServerName<'_>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    for c in std::iter::once(end_entity).chain(intermediates) {
        h.update(u32::try_from(c.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(c.as_ref());
    }
    h.update(name.to_str().as_bytes());
    h.finalize().into()
}

impl ServerCertVerifier for RememberingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let key = chain_key(end_entity, intermediates, server_name);
        if self.seen.lock().is_ok_and(|s| s.contains(&key)) {
            return Ok(ServerCertVerified::assertion());
        }
        self.full_checks.fetch_add(1, Ordering::Relaxed);
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Ok(mut s) = self.seen.lock() {
            if s.len() < MAX_REMEMBERED {
                s.push(key);
            }
        }
        Ok(ok)
    }

    crate::tls::delegate_handshake_signatures!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::RootCertStore;

    fn chain(dir: &std::path::Path, stem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(dir.join(format!("{stem}.pem")))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_good_chain_is_checked_once_and_a_bad_one_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        crate::pki::dev::generate(dir.path(), now).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.path().join("root-ca.pem")).unwrap())
            .unwrap();
        let full = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let v = RememberingVerifier::new(full);
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now.unix_timestamp()).unwrap(),
        ));
        let name = ServerName::try_from("radius.anchord.test").unwrap();
        let server = chain(dir.path(), "server");
        for _ in 0..3 {
            v.verify_server_cert(&server[0], &server[1..], &name, &[], at)
                .unwrap();
        }
        assert_eq!(v.full_checks(), 1);

        // Another name for the same chain is a different question.
        let other = ServerName::try_from("other.anchord.test").unwrap();
        for n in 2..4 {
            assert!(v
                .verify_server_cert(&server[0], &server[1..], &other, &[], at)
                .is_err());
            assert_eq!(v.full_checks(), n);
        }
        // A chain from a CA we do not trust fails every time.
        let rogue = chain(dir.path(), "device-unknown-ca");
        for n in 4..6 {
            assert!(v
                .verify_server_cert(&rogue[0], &rogue[1..], &name, &[], at)
                .is_err());
            assert_eq!(v.full_checks(), n);
        }
    }
}
