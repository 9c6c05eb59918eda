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

use super::status::State;

/// One parsed CRL; its signature is verified when first used against an issuer.
pub struct Crl {
    path: PathBuf,
    der: Vec<u8>,
    issuer: Vec<u8>,
    revoked: HashMap<Vec<u8>, (i64, Option<String>)>,
    this_update: i64,
    next_update: Option<i64>,
    /// The authorityKeyIdentifier's keyIdentifier, if any: which of several same-named CA
    /// keys signed it (a CA re-keys under its old name, RFC 5280 §5.2.1).
    aki: Option<Vec<u8>>,
    /// SHA-256 of the issuer keys this CRL's signature was checked with, and whether it
    /// verified: checked once per key, whatever the outcome.
    verified_with: Mutex<Vec<([u8; 32], bool)>>,
}

/// Issuer keys whose signature check outcome a CRL keeps.
const KEYS_REMEMBERED: usize = 4;

/// Why a CRL says nothing about a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silent {
    /// Another issuer's list.
    OtherIssuer,
    /// The issuer's list, but not current: stale, from the future, or without nextUpdate
    /// and older than allowed.
    NotCurrent,
    /// Names the issuer and is current, but the issuer's key did not sign it: forged, or
    /// a broken file. Never read as "no CRL".
    BadSignature,
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
    /// The files it reads.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

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
}

impl Crl {
    /// Parses a CRL (PEM or DER) read from `source` (a path or URL, for messages).
    ///
    /// # Errors
    /// Not a CRL.
    pub fn parse(source: &str, bytes: &[u8]) -> Result<Self, String> {
        parse(std::path::Path::new(source), bytes)
    }

    /// What this CRL says about `cert` (issued by `issuer`): an answer only if it is that
    /// issuer's CRL, current at `now` (with `skew`: thisUpdate not in the future, nextUpdate
    /// not passed, or without nextUpdate thisUpdate at most `max_age` seconds old), and its
    /// signature verifies with the issuer's key.
    ///
    /// # Errors
    /// Why the CRL says nothing about `cert`.
    pub fn state_of(
        &self,
        cert: &X509Certificate<'_>,
        issuer: &X509Certificate<'_>,
        now: i64,
        skew: i64,
        max_age: i64,
    ) -> Result<State, Silent> {
        if self.issuer != cert.issuer().as_raw() || !self.names(issuer) {
            return Err(Silent::OtherIssuer);
        }
        let fresh = match self.next_update {
            Some(next) => next >= now.saturating_sub(skew),
            None => now.saturating_sub(self.this_update) <= max_age.saturating_add(skew),
        };
        if !fresh || self.this_update > now.saturating_add(skew) {
            return Err(Silent::NotCurrent);
        }
        if !self.signed_by(issuer) {
            return Err(Silent::BadSignature);
        }
        Ok(match self.revoked.get(cert.raw_serial()) {
            Some((at, reason)) => State::Revoked {
                at: *at,
                reason: reason.clone(),
            },
            None => State::Good,
        })
    }

    /// True if `issuer` is the CA this CRL names as its issuer (by name, and by key
    /// identifier where both carry one).
    pub fn names(&self, issuer: &X509Certificate<'_>) -> bool {
        self.issuer == issuer.subject().as_raw() && self.same_key_id(issuer)
    }

    /// True if `issuer` names this CRL's issuer and its key signed the CRL (checked once
    /// per key; the outcome is kept).
    pub fn signed_by(&self, issuer: &X509Certificate<'_>) -> bool {
        if !self.names(issuer) {
            return false;
        }
        let key_hash: [u8; 32] = Sha256::digest(issuer.public_key().raw).into();
        if let Ok(v) = self.verified_with.lock() {
            if let Some((_, ok)) = v.iter().find(|(k, _)| *k == key_hash) {
                return *ok;
            }
        }
        let ok = CertificateRevocationList::from_der(&self.der).is_ok_and(|(_, crl)| {
            crl.signature_algorithm.algorithm == crl.tbs_cert_list.signature.algorithm
                && super::ocsp::verify_signature(
                    &crl.signature_algorithm.algorithm.to_id_string(),
                    issuer.public_key(),
                    crl.tbs_cert_list.as_ref(),
                    crl.signature_value.data.as_ref(),
                )
                .is_ok()
        });
        if let Ok(mut v) = self.verified_with.lock() {
            if v.len() >= KEYS_REMEMBERED {
                v.remove(0);
            }
            v.push((key_hash, ok));
        }
        ok
    }

    /// False when both this CRL's authorityKeyIdentifier and the issuer's
    /// subjectKeyIdentifier are present and differ: the CRL is another key's of that name.
    fn same_key_id(&self, issuer: &X509Certificate<'_>) -> bool {
        use x509_parser::extensions::ParsedExtension;
        let ski = issuer
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
                _ => None,
            });
        match (&self.aki, ski) {
            (Some(aki), Some(ski)) => aki.as_slice() == ski,
            _ => true,
        }
    }

    /// thisUpdate, Unix seconds.
    pub fn this_update(&self) -> i64 {
        self.this_update
    }

    /// Where this CRL came from (file or URL), for messages.
    pub fn source(&self) -> String {
        self.path.display().to_string()
    }

    /// nextUpdate, Unix seconds.
    pub fn next_update(&self) -> Option<i64> {
        self.next_update
    }

    /// Roughly the memory this CRL holds, in bytes (for the fetched-CRL cache's bound).
    pub fn weight(&self) -> usize {
        // Each revoked entry: serial bytes, the time, a reason, and the map's own overhead.
        const PER_ENTRY: usize = 96;
        self.der
            .len()
            .saturating_add(self.revoked.len().saturating_mul(PER_ENTRY))
    }
}

/// CRL extensions (RFC 5280 §5.2) that do not change what the list covers.
const CRL_EXTENSIONS_UNDERSTOOD: [&str; 4] = [
    "2.5.29.20", // cRLNumber
    "2.5.29.35", // authorityKeyIdentifier
    "2.5.29.18", // issuerAltName
    "2.5.29.46", // freshestCRL (points at deltas; the complete CRL stands alone)
];
/// Entry extensions (RFC 5280 §5.3) that do not change which certificate an entry names.
const ENTRY_EXTENSIONS_UNDERSTOOD: [&str; 2] = [
    "2.5.29.21", // reasonCode
    "2.5.29.24", // invalidityDate
];

/// Refuses a CRL that is only part of the picture: a delta CRL (deltaCRLIndicator), one
/// whose scope is limited or indirect (issuingDistributionPoint, certificateIssuer entries),
/// or one with any other extension marked critical. Read as complete, such a list could miss
/// revoked certificates; refused, it counts as no CRL (revocation unknown).
fn check_scope(crl: &CertificateRevocationList<'_>) -> Result<(), String> {
    for e in crl.extensions() {
        let oid = e.oid.to_id_string();
        let name = match oid.as_str() {
            "2.5.29.27" => Some("deltaCRLIndicator (a delta CRL)"),
            "2.5.29.28" => Some("issuingDistributionPoint (a partitioned or indirect CRL)"),
            o if CRL_EXTENSIONS_UNDERSTOOD.contains(&o) => None,
            _ if e.critical => Some("an unsupported critical extension"),
            _ => None,
        };
        if let Some(name) = name {
            return Err(format!("CRL has {name} ({oid}): not used"));
        }
    }
    for r in crl.iter_revoked_certificates() {
        for e in r.extensions() {
            let oid = e.oid.to_id_string();
            if oid == "2.5.29.29" {
                return Err(format!(
                    "CRL entry has certificateIssuer ({oid}, an indirect CRL): not used"
                ));
            }
            if e.critical && !ENTRY_EXTENSIONS_UNDERSTOOD.contains(&oid.as_str()) {
                return Err(format!(
                    "CRL entry has an unsupported critical extension ({oid}): not used"
                ));
            }
        }
    }
    Ok(())
}

fn parse(path: &std::path::Path, bytes: &[u8]) -> Result<Crl, String> {
    let der = match pem::parse(bytes) {
        Ok(p) if p.tag() == "X509 CRL" => p.into_contents(),
        Ok(p) => return Err(format!("PEM block `{}` is not an X509 CRL", p.tag())),
        Err(_) => bytes.to_vec(),
    };
    let (_, crl) =
        CertificateRevocationList::from_der(&der).map_err(|e| format!("not a CRL: {e}"))?;
    check_scope(&crl)?;
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
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        aki: crl
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            }),
        verified_with: Mutex::new(Vec::new()),
        der: der.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a device it issued, as DER.
    fn pair() -> (Vec<u8>, Vec<u8>) {
        let (ca, dev, _) = crate::pki::dev::ca_and_leaf("d.test");
        (ca, dev)
    }

    /// A CRL of `issuer` with these dates, its signature taken as verified.
    fn crl(issuer: &X509Certificate<'_>, this_update: i64, next_update: Option<i64>) -> Crl {
        Crl {
            path: PathBuf::from("test.crl"),
            der: Vec::new(),
            issuer: issuer.subject().as_raw().to_vec(),
            revoked: HashMap::new(),
            this_update,
            next_update,
            aki: None,
            verified_with: Mutex::new(vec![(Sha256::digest(issuer.public_key().raw).into(), true)]),
        }
    }

    #[test]
    fn is_current_only_between_this_update_and_next_update() {
        let (ca, dev) = pair();
        let (_, ca) = X509Certificate::from_der(&ca).unwrap();
        let (_, dev) = X509Certificate::from_der(&dev).unwrap();
        let now = 1_800_000_000;
        let state = |c: &Crl| c.state_of(&dev, &ca, now, 60, 86_400);
        assert_eq!(state(&crl(&ca, now - 10, Some(now + 10))), Ok(State::Good));
        assert_eq!(
            state(&crl(&ca, now - 100, Some(now - 30))),
            Ok(State::Good),
            "skew"
        );
        assert_eq!(
            state(&crl(&ca, now - 100, Some(now - 61))),
            Err(Silent::NotCurrent),
            "stale"
        );
        assert_eq!(
            state(&crl(&ca, now + 61, Some(now + 100))),
            Err(Silent::NotCurrent),
            "from the future"
        );
    }

    #[test]
    fn without_next_update_is_current_only_while_recent() {
        let (ca, dev) = pair();
        let (_, ca) = X509Certificate::from_der(&ca).unwrap();
        let (_, dev) = X509Certificate::from_der(&dev).unwrap();
        let now = 1_800_000_000;
        let state = |c: &Crl| c.state_of(&dev, &ca, now, 0, 3600);
        assert_eq!(state(&crl(&ca, now - 3600, None)), Ok(State::Good));
        assert_eq!(
            state(&crl(&ca, now - 3601, None)),
            Err(Silent::NotCurrent),
            "never current forever"
        );
    }

    #[test]
    fn refuses_a_crl_limited_by_an_issuing_distribution_point() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "ca");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = p.self_signed(&ca_key).unwrap();
        let params = |idp| rcgen::CertificateRevocationListParams {
            this_update: time::OffsetDateTime::now_utc(),
            next_update: time::OffsetDateTime::now_utc() + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: idp,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let whole = params(None).signed_by(&ca, &ca_key).unwrap();
        assert!(Crl::parse("whole", whole.der()).is_ok());
        let partial = params(Some(rcgen::CrlIssuingDistributionPoint {
            distribution_point: rcgen::CrlDistributionPoint {
                uris: vec!["http://crl.example/users.crl".to_owned()],
            },
            scope: Some(rcgen::CrlScope::UserCertsOnly),
        }))
        .signed_by(&ca, &ca_key)
        .unwrap();
        let e = Crl::parse("partial", partial.der()).err().unwrap();
        assert!(e.contains("issuingDistributionPoint"), "{e}");
    }
}
