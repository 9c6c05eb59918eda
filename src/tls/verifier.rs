//! The client-certificate verifier: rustls-webpki path building, plus a record of the exact
//! path it verified.
//!
//! Revocation must be checked against the CA whose key signed the device's certificate, not
//! against a certificate the device merely sent with the right name: a device may send
//! `[leaf, a self-made CA named like the issuing CA, the real issuing CA]`, webpki skips the
//! fake candidate, and anything that picked "the first certificate with the issuer's name"
//! would ask the responder about (and verify its answer with) the attacker's key. So the
//! verifier keeps the path webpki built — device, each CA whose key verified the one below,
//! the trust anchor — and hands it to the EAP session right after the handshake step that ran
//! it ([`take_verified`]).
//!
//! rustls calls the verifier synchronously inside `ServerConnection::process_new_packets`,
//! on the thread that drives the connection, and its result type carries no data. The path is
//! therefore left in a thread-local slot that the same synchronous call clears before it
//! feeds the connection ([`forget_verified`]) and takes afterwards; nothing else runs on that
//! thread in between, and the taken path must start with the device's certificate.
//!
//! Verified intermediates are remembered: most devices of a site share one issuing CA, and
//! re-verifying the root's signature on it is one of the three signature checks of every
//! authentication. After a full verification of a path `device ← X ← root`, X (same DER)
//! becomes a trust anchor of its own, used only when the device presents exactly X, only while
//! X is within its validity period (checked on every use), and only if X's key verifies the
//! device's signature (X is then the sole anchor webpki may use). Off when a configured root
//! carries name constraints or does not parse.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DistinguishedName, Error, OtherError, RootCertStore};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most certificates a device may send besides its own. Real chains have one or two
/// intermediates; webpki's own path limit is six, and every extra certificate is parsing and
/// possibly signature work an unauthenticated peer makes us do.
pub const MAX_PRESENTED_INTERMEDIATES: usize = 8;

/// Most intermediates remembered for the fast path.
const MAX_CACHED_INTERMEDIATES: usize = 64;

/// The certification path webpki verified for a device: its certificate first, then each CA
/// whose key verified the certificate before it, the trust anchor last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    certs: Vec<CertificateDer<'static>>,
}

impl VerifiedChain {
    /// A path as if verified (unit tests of what uses one).
    #[cfg(test)]
    pub(crate) fn for_test(certs: Vec<CertificateDer<'static>>) -> Self {
        Self { certs }
    }

    /// The device's certificate.
    pub fn end_entity(&self) -> &[u8] {
        self.certs.first().map_or(&[], |c| c.as_ref())
    }

    /// The whole path, device first, trust anchor last.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// Each certificate below the trust anchor with the certificate that issued it (whose key
    /// verified its signature): the device first, then each intermediate CA.
    pub fn issued(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.certs
            .windows(2)
            .filter_map(|w| Some((w.first()?.as_ref(), w.get(1)?.as_ref())))
    }
}

thread_local! {
    /// The path of the last successful verification on this thread (see the module docs).
    static LAST_VERIFIED: RefCell<Option<VerifiedChain>> = const { RefCell::new(None) };
}

/// Forgets any path left on this thread: call before feeding a connection its peer's data.
pub fn forget_verified() {
    LAST_VERIFIED.with(|v| v.borrow_mut().take());
}

/// The path verified on this thread since [`forget_verified`], if any. The caller checks
/// that it starts with its peer's certificate.
pub fn take_verified() -> Option<VerifiedChain> {
    LAST_VERIFIED.with(|v| v.borrow_mut().take())
}

fn record(chain: VerifiedChain) {
    LAST_VERIFIED.with(|v| *v.borrow_mut() = Some(chain));
}

/// A client verifier that requires the clientAuth EKU, records the verified path, and
/// remembers intermediates it has verified (see the module docs).
pub struct RequireClientAuth {
    /// rustls's own verifier: handshake signatures and the CA names sent to the peer.
    inner: Arc<dyn ClientCertVerifier>,
    /// The configured CAs, as webpki anchors and as DER, index for index.
    anchors: Vec<TrustAnchor<'static>>,
    anchor_ders: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
    fast: Option<RwLock<Vec<Intermediate>>>,
    /// Verifications that took the cached-intermediate path.
    pub fast_hits: AtomicU64,
}

/// An intermediate verified in full under a configured root.
struct Intermediate {
    der: CertificateDer<'static>,
    /// X as the only anchor of a fast verification.
    anchor: TrustAnchor<'static>,
    not_before: i64,
    not_after: i64,
    /// The rest of the verified path: X, then the root.
    above: Vec<CertificateDer<'static>>,
}

impl RequireClientAuth {
    /// A verifier for devices chaining to `cas`.
    ///
    /// # Errors
    /// A CA certificate rustls cannot use.
    pub fn new(cas: &[CertificateDer<'static>]) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        let mut anchors = Vec::with_capacity(cas.len());
        let mut constrained = false;
        for ca in cas {
            roots.add(ca.clone())?;
            let anchor = webpki::anchor_from_trusted_cert(ca)
                .map_err(|e| Error::General(format!("CA certificate: {e}")))?
                .to_owned();
            anchors.push(anchor);
            // A root we cannot read counts as name-constrained: the fast path, which skips
            // the root's constraints, stays off.
            constrained |= !matches!(
                X509Certificate::from_der(ca),
                Ok((_, c)) if matches!(c.name_constraints(), Ok(None))
            );
        }
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let algorithms = provider.signature_verification_algorithms;
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider))
                .build()
                .map_err(|e| Error::General(format!("client verifier: {e}")))?;
        Ok(Self {
            inner,
            anchors,
            anchor_ders: cas.to_vec(),
            algorithms,
            fast: (!constrained).then(|| RwLock::new(Vec::new())),
            fast_hits: AtomicU64::new(0),
        })
    }

    /// Verifies `end_entity` against `intermediate`'s remembered anchor alone, if the device
    /// presented exactly that intermediate and it is within its validity period now.
    fn verify_fast(
        &self,
        end_entity: &webpki::EndEntityCert<'_>,
        intermediate: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Option<VerifiedChain> {
        let fast = self.fast.as_ref()?;
        let secs = i64::try_from(now.as_secs()).ok()?;
        let mut expired = false;
        let found = {
            let known = fast.read().ok()?;
            let x = known.iter().find(|x| x.der == *intermediate)?;
            if (x.not_before..=x.not_after).contains(&secs) {
                let anchors = [x.anchor.clone()];
                end_entity
                    .verify_for_usage(
                        self.algorithms.all,
                        &anchors,
                        &[],
                        now,
                        webpki::KeyUsage::client_auth(),
                        None,
                        None,
                    )
                    .ok()
                    .map(|_| x.above.clone())
            } else {
                expired = secs > x.not_after;
                None
            }
        };
        if expired {
            if let Ok(mut known) = fast.write() {
                known.retain(|x| secs <= x.not_after);
            }
        }
        let above = found?;
        let mut certs = Vec::with_capacity(above.len() + 1);
        certs.push(CertificateDer::from(end_entity_der(end_entity)));
        certs.extend(above);
        Some(VerifiedChain { certs })
    }

    /// The full webpki verification against the configured roots.
    fn verify_full(
        &self,
        end_entity: &webpki::EndEntityCert<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedChain, Error> {
        let path = end_entity
            .verify_for_usage(
                self.algorithms.all,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(path_error)?;
        let anchor = self
            .anchors
            .iter()
            .position(|a| std::ptr::eq(a, path.anchor()))
            .and_then(|i| self.anchor_ders.get(i))
            .ok_or_else(|| Error::General("verified path ends at an unknown anchor".into()))?;
        let mut certs = vec![CertificateDer::from(end_entity_der(end_entity))];
        certs.extend(
            path.intermediate_certificates()
                .map(|c| c.der().into_owned()),
        );
        certs.push(anchor.clone());
        Ok(VerifiedChain { certs })
    }

    /// After a full verification: remember X if the path was device ← X ← root.
    fn remember(&self, chain: &VerifiedChain) {
        let Some(fast) = &self.fast else { return };
        let [_, x, root] = chain.certificates() else {
            return;
        };
        let Ok((_, parsed)) = X509Certificate::from_der(x) else {
            return;
        };
        let Ok(anchor) = webpki::anchor_from_trusted_cert(x) else {
            return;
        };
        let v = parsed.validity();
        let entry = Intermediate {
            der: x.clone(),
            anchor: anchor.to_owned(),
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
            above: vec![x.clone(), root.clone()],
        };
        let Ok(mut known) = fast.write() else { return };
        if known.len() < MAX_CACHED_INTERMEDIATES && !known.iter().any(|k| k.der == *x) {
            known.push(entry);
        }
    }

    /// Intermediates remembered for the fast path now.
    pub fn cached_intermediates(&self) -> usize {
        self.fast
            .as_ref()
            .and_then(|f| f.read().ok().map(|k| k.len()))
            .unwrap_or(0)
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
        if intermediates.len() > MAX_PRESENTED_INTERMEDIATES {
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(TooManyCertificates(intermediates.len()))),
            )));
        }
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(path_error)?;
        if !has_client_auth_eku(end_entity) {
            // webpki accepts a certificate without any EKU; devices must carry clientAuth.
            // The full check first, so a certificate that fails for another reason says so.
            self.verify_full(&ee, intermediates, now)?;
            return Err(Error::InvalidCertificate(CertificateError::InvalidPurpose));
        }
        if let [x] = intermediates {
            if let Some(chain) = self.verify_fast(&ee, x, now) {
                self.fast_hits.fetch_add(1, Ordering::Relaxed);
                record(chain);
                return Ok(ClientCertVerified::assertion());
            }
        }
        let chain = self.verify_full(&ee, intermediates, now)?;
        self.remember(&chain);
        record(chain);
        Ok(ClientCertVerified::assertion())
    }

    super::delegate_handshake_signatures!();
}

/// The device sent more certificates than [`MAX_PRESENTED_INTERMEDIATES`].
#[derive(Debug)]
struct TooManyCertificates(usize);

impl fmt::Display for TooManyCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} certificates besides the device's (at most {MAX_PRESENTED_INTERMEDIATES})",
            self.0
        )
    }
}

impl std::error::Error for TooManyCertificates {}

fn end_entity_der(ee: &webpki::EndEntityCert<'_>) -> Vec<u8> {
    // EndEntityCert derefs to the parsed certificate, which keeps its DER.
    ee.der().to_vec()
}

fn has_client_auth_eku(cert: &CertificateDer<'_>) -> bool {
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return false;
    };
    matches!(parsed.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth)
}

/// rustls's view of a path-building error, so reasons read the same as before
/// (`certificate_expired`, `unknown_ca`, `wrong_eku`, ...).
fn path_error(e: webpki::Error) -> Error {
    use webpki::Error as W;
    let c = match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        #[allow(deprecated)]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            CertificateError::InvalidPurpose
        }
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    Error::InvalidCertificate(c)
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

    /// A CA with the given name signed by `parent` (or self-signed), valid from `from` to
    /// `until` (Unix seconds).
    fn ca(
        cn: &str,
        parent: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
        from: i64,
        until: i64,
    ) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        let cert = match parent {
            Some((pc, pk)) => p.signed_by(&key, pc, pk).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        (cert, key)
    }

    fn device(
        cn: &str,
        issuer: &rcgen::Certificate,
        issuer_key: &rcgen::KeyPair,
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![format!("{cn}.test")]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(t - 3600).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(t + 86_400).unwrap();
        CertificateDer::from(
            p.signed_by(&key, issuer, issuer_key)
                .unwrap()
                .der()
                .to_vec(),
        )
    }

    fn der(c: &rcgen::Certificate) -> CertificateDer<'static> {
        CertificateDer::from(c.der().to_vec())
    }

    fn at(secs: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(secs).unwrap()))
    }

    #[test]
    fn records_the_path_webpki_verified_not_a_same_named_certificate_the_device_sent() {
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let (root, root_key) = ca("root", None, t - 3600, t + 86_400 * 365);
        let (issuing, issuing_key) = ca("issuing", Some((&root, &root_key)), t - 3600, t + 86_400);
        // Same name as the issuing CA, another key: its own root, trusted by no one.
        let (fake, _) = ca("issuing", None, t - 3600, t + 86_400);
        let leaf = device("dev", &issuing, &issuing_key);
        let v = RequireClientAuth::new(&[der(&root)]).unwrap();
        forget_verified();
        v.verify_client_cert(&leaf, &[der(&fake), der(&issuing)], at(t))
            .unwrap();
        let path = take_verified().expect("a path is recorded");
        assert_eq!(
            path.certificates(),
            &[leaf.clone(), der(&issuing), der(&root)][..],
            "the fake CA the device sent is not on the path"
        );
        let issued: Vec<_> = path.issued().collect();
        assert_eq!(issued.len(), 2);
        assert_eq!(issued[0], (leaf.as_ref(), der(&issuing).as_ref()));
        assert_eq!(take_verified(), None, "taken once");

        // The verified issuing CA was remembered: the fast path records the same path.
        v.verify_client_cert(&leaf, &[der(&issuing)], at(t))
            .unwrap();
        assert_eq!(v.fast_hits.load(Ordering::Relaxed), 1);
        assert_eq!(take_verified().unwrap(), path);

        // A failed verification records nothing.
        let stranger = device("stranger", &fake, &ca("x", None, t - 1, t + 1).1);
        assert!(v
            .verify_client_cert(&stranger, &[der(&fake)], at(t))
            .is_err());
        assert_eq!(take_verified(), None);
    }

    #[test]
    fn cached_intermediate_is_never_used_for_a_device_it_did_not_issue() {
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let (root, root_key) = ca("root", None, t - 3600, t + 86_400 * 365);
        let (xa, xa_key) = ca("X_a", Some((&root, &root_key)), t - 3600, t + 86_400 * 365);
        let (xb, xb_key) = ca("X_b", Some((&root, &root_key)), t - 3600, t + 60);
        let a = device("A", &xa, &xa_key);
        let b = device("B", &xb, &xb_key);
        let v = RequireClientAuth::new(&[der(&root)]).unwrap();
        v.verify_client_cert(&a, &[der(&xa)], at(t)).unwrap();
        v.verify_client_cert(&b, &[der(&xb)], at(t)).unwrap();
        assert_eq!(v.cached_intermediates(), 2, "both cached");

        // X_b has expired: B is refused with either intermediate.
        let later = at(t + 120);
        let e = v.verify_client_cert(&b, &[der(&xb)], later).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{e:?}"
        );
        let e = v.verify_client_cert(&b, &[der(&xa)], later).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "X_a never issued B"
        );
        assert_eq!(v.cached_intermediates(), 1, "the expired X_b is dropped");
        // A still goes through the cached X_a.
        let hits = v.fast_hits.load(Ordering::Relaxed);
        v.verify_client_cert(&a, &[der(&xa)], later).unwrap();
        assert_eq!(v.fast_hits.load(Ordering::Relaxed), hits + 1);
    }

    #[test]
    fn refuses_more_intermediates_than_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let root = CertificateDer::from_pem_file(dir.path().join("root-ca.pem")).unwrap();
        let v = RequireClientAuth::new(&[root]).unwrap();
        let good = chain(dir.path(), "device-ecdsa");
        let mut many = vec![good[1].clone(); MAX_PRESENTED_INTERMEDIATES];
        v.verify_client_cert(&good[0], &many, now())
            .expect("at the cap");
        many.push(good[1].clone());
        let e = v.verify_client_cert(&good[0], &many, now()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidCertificate(CertificateError::Other(o)) if o.to_string().contains("at most 8")),
            "{e:?}"
        );
    }

    #[test]
    fn a_root_with_name_constraints_turns_the_fast_path_off() {
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "root");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("test".into())],
            excluded_subtrees: vec![],
        });
        let root = p.self_signed(&key).unwrap();
        let (x, x_key) = ca("X", Some((&root, &key)), t - 3600, t + 86_400);
        let leaf = device("dev", &x, &x_key);
        let v = RequireClientAuth::new(&[der(&root)]).unwrap();
        v.verify_client_cert(&leaf, &[der(&x)], at(t)).unwrap();
        v.verify_client_cert(&leaf, &[der(&x)], at(t)).unwrap();
        assert_eq!(v.cached_intermediates(), 0);
        assert_eq!(v.fast_hits.load(Ordering::Relaxed), 0);
    }
}
