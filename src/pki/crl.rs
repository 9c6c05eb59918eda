//! Certificate revocation lists from files (RFC 5280 §5): the source when OCSP is not
//! configured, and the fallback when every OCSP responder is unreachable. Files are re-read
//! in the background ([`CrlStore::reload`]), so a new CRL takes effect without a restart.
//! A CRL counts only if its issuer's signature verifies and its nextUpdate has not passed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::revocation::State;

/// One parsed CRL; its signature is verified when first used against an issuer.
pub struct Crl {
    path: PathBuf,
    der: Vec<u8>,
    issuer: Vec<u8>,
    revoked: HashMap<Vec<u8>, (i64, Option<String>)>,
    next_update: Option<i64>,
    /// SHA-256 of the issuer key this CRL's signature was verified with.
    verified_with: Mutex<Option<[u8; 32]>>,
}

/// The CRLs in a set of files.
pub struct CrlStore {
    files: Vec<PathBuf>,
    loaded: RwLock<Vec<Arc<Crl>>>,
}

impl std::fmt::Debug for CrlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CrlStore {
    /// A store over `files` (PEM or DER), loaded now.
    ///
    /// # Errors
    /// Every file that cannot be read or parsed.
    pub fn new(files: Vec<PathBuf>) -> Result<Self, Vec<String>> {
        let store = Self {
            files,
            loaded: RwLock::new(Vec::new()),
        };
        let errors = store.reload();
        if errors.is_empty() {
            Ok(store)
        } else {
            Err(errors)
        }
    }

    /// Re-reads every file. A file that fails keeps its previous CRL. Blocking.
    pub fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let old = self.loaded.read().map(|l| l.clone()).unwrap_or_default();
        let mut fresh = Vec::new();
        for path in &self.files {
            match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| parse(path, &bytes))
            {
                Ok(l) => {
                    // Keep the verification cache when the file did not change.
                    let same = old.iter().find(|o| o.path == *path && o.der == l.der);
                    fresh.push(same.cloned().unwrap_or_else(|| Arc::new(l)));
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    fresh.extend(old.iter().filter(|o| o.path == *path).cloned());
                }
            }
        }
        if let Ok(mut l) = self.loaded.write() {
            *l = fresh;
        }
        errors
    }

    /// The CRLs loaded now.
    pub fn crls(&self) -> Vec<Arc<Crl>> {
        self.loaded.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// What the CRLs say about `cert` (issued by `issuer`, both DER) at `now`: `None` when
    /// no current, correctly signed CRL of that issuer is loaded.
    pub fn lookup(&self, cert: &[u8], issuer: &[u8], now: i64, skew: i64) -> Option<State> {
        let (_, c) = X509Certificate::from_der(cert).ok()?;
        let (_, i) = X509Certificate::from_der(issuer).ok()?;
        self.crls()
            .iter()
            .find_map(|l| l.state_of(&c, &i, now, skew))
    }
}

impl Crl {
    /// Parses a CRL (PEM or DER) read from `source` (a path or URL, for messages).
    ///
    /// # Errors
    /// Not a CRL.
    pub fn parse(source: &str, bytes: &[u8]) -> Result<Self, String> {
        parse(std::path::Path::new(source), bytes)
    }

    /// What this CRL says about `cert` (issued by `issuer`): `None` unless it is that
    /// issuer's CRL, current at `now` (with `skew`), and its signature verifies.
    pub fn state_of(
        &self,
        cert: &X509Certificate<'_>,
        issuer: &X509Certificate<'_>,
        now: i64,
        skew: i64,
    ) -> Option<State> {
        let key_hash: [u8; 32] = Sha256::digest(issuer.public_key().raw).into();
        let current = self.issuer == cert.issuer().as_raw()
            && self.next_update.is_none_or(|n| n >= now - skew);
        if !current || !verified(self, issuer, key_hash) {
            return None;
        }
        Some(match self.revoked.get(cert.raw_serial()) {
            Some((at, reason)) => State::Revoked {
                at: *at,
                reason: reason.clone(),
            },
            None => State::Good,
        })
    }

    /// nextUpdate, Unix seconds.
    pub fn next_update(&self) -> Option<i64> {
        self.next_update
    }
}

fn verified(l: &Crl, issuer: &X509Certificate<'_>, key_hash: [u8; 32]) -> bool {
    if let Ok(v) = l.verified_with.lock() {
        if *v == Some(key_hash) {
            return true;
        }
    }
    let ok = CertificateRevocationList::from_der(&l.der)
        .is_ok_and(|(_, crl)| crl.verify_signature(issuer.public_key()).is_ok());
    if ok {
        if let Ok(mut v) = l.verified_with.lock() {
            *v = Some(key_hash);
        }
    }
    ok
}

fn parse(path: &std::path::Path, bytes: &[u8]) -> Result<Crl, String> {
    let der = match pem::parse(bytes) {
        Ok(p) if p.tag() == "X509 CRL" => p.into_contents(),
        Ok(p) => return Err(format!("PEM block `{}` is not an X509 CRL", p.tag())),
        Err(_) => bytes.to_vec(),
    };
    let (_, crl) =
        CertificateRevocationList::from_der(&der).map_err(|e| format!("not a CRL: {e}"))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| {
            let reason = r.reason_code().map(|(_, code)| format!("{code}"));
            (
                r.raw_serial().to_vec(),
                (r.revocation_date.timestamp(), reason),
            )
        })
        .collect();
    Ok(Crl {
        path: path.to_path_buf(),
        issuer: crl.issuer().as_raw().to_vec(),
        revoked,
        next_update: crl.next_update().map(|t| t.timestamp()),
        verified_with: Mutex::new(None),
        der: der.clone(),
    })
}
