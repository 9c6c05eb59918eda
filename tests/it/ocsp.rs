//! OCSP request building and response verification against OpenSSL's own responder
//! (`openssl ocsp -index … -reqin … -respout …`, run offline on the files): good, revoked,
//! unknown, issuer-signed and delegated responders (by name and by key hash), a responder
//! without id-kp-OCSPSigning, a foreign signer, stale and future responses, nonces,
//! CertID mismatches, SHA-256 CertIDs and tampered signatures.

use std::path::Path;

use anchord::pki::ocsp::{self, IdHash, OcspError, Signer, Status};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    now: i64,
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn issue(
    pki: &Pki,
    issuer: &Ca,
    name: &str,
    serial: u16,
    eku: Vec<ExtendedKeyUsagePurpose>,
    days: i64,
) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![format!("{name}.test")]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.serial_number = Some(SerialNumber::from(serial.to_be_bytes().to_vec()));
    p.extended_key_usages = eku;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(days);
    let cert = p.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
    std::fs::write(pki.dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(
        pki.dir.path().join(format!("{name}.key")),
        key.serialize_pem(),
    )
    .unwrap();
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki {
        dir,
        ca: ca("issuing CA"),
        now: OffsetDateTime::now_utc().unix_timestamp(),
    };
    let d = pki.dir.path();
    std::fs::write(d.join("ca.pem"), pki.ca.cert.pem()).unwrap();
    std::fs::write(d.join("ca.key"), pki.ca.key.serialize_pem()).unwrap();
    issue(
        &pki,
        &pki.ca,
        "good",
        0x1001,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        365,
    );
    issue(
        &pki,
        &pki.ca,
        "revoked",
        0x1002,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        365,
    );
    issue(
        &pki,
        &pki.ca,
        "stranger",
        0x1003,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        365,
    );
    issue(
        &pki,
        &pki.ca,
        "responder",
        0x2001,
        vec![ExtendedKeyUsagePurpose::OcspSigning],
        30,
    );
    issue(
        &pki,
        &pki.ca,
        "no-eku-responder",
        0x2002,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        30,
    );
    let other = ca("other CA");
    std::fs::write(d.join("other.pem"), other.cert.pem()).unwrap();
    std::fs::write(d.join("other.key"), other.key.serialize_pem()).unwrap();
    // OpenSSL's CA database: good is valid, revoked was revoked for key compromise; the
    // stranger is not listed at all.
    std::fs::write(
        d.join("index.txt"),
        "V\t301231235959Z\t\t1001\tunknown\t/CN=good\nR\t301231235959Z\t240101000000Z,keyCompromise\t1002\tunknown\t/CN=revoked\n",
    )
    .unwrap();
    pki
}

fn der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).unwrap();
    pem::parse(pem).unwrap().into_contents()
}

impl Pki {
    fn cert(&self, name: &str) -> Vec<u8> {
        der(&self.dir.path().join(format!("{name}.pem")))
    }

    /// Runs OpenSSL's responder on one request; `signer` is the stem of the signing
    /// certificate and key.
    fn respond(&self, req: &[u8], signer: &str, extra: &[&str]) -> Vec<u8> {
        let d = self.dir.path();
        std::fs::write(d.join("req.der"), req).unwrap();
        let (rs, rk) = (format!("{signer}.pem"), format!("{signer}.key"));
        let mut args = vec![
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-reqin",
            "req.der",
        ];
        args.extend([
            "-respout", "resp.der", "-rsigner", &rs, "-rkey", &rk, "-ndays", "1",
        ]);
        args.extend_from_slice(extra);
        crate::harness::openssl(d, &args);
        std::fs::read(d.join("resp.der")).unwrap()
    }

    fn check(&self, cert: &str, signer: &str, extra: &[&str]) -> Result<ocsp::Answer, OcspError> {
        let q = ocsp::query(
            &self.cert(cert),
            &self.cert("ca"),
            IdHash::Sha1,
            Some(rand::random()),
        )
        .unwrap();
        let resp = self.respond(&q.der, signer, extra);
        ocsp::verify(&resp, &q, &self.cert("ca"), self.now, 300, 86_400)
    }
}

#[test]
fn issuer_signed_answers_good_revoked_and_unknown() {
    let p = pki();
    let good = p.check("good", "ca", &[]).unwrap();
    assert_eq!(good.status, Status::Good);
    assert_eq!(good.signer, Signer::Issuer);
    assert!(good.next_update.unwrap() > p.now);
    let revoked = p.check("revoked", "ca", &[]).unwrap();
    assert_eq!(
        revoked.status,
        Status::Revoked {
            at: 1_704_067_200,
            reason: Some("KeyCompromise".into())
        }
    );
    assert_eq!(
        p.check("stranger", "ca", &[]).unwrap().status,
        Status::Unknown
    );
}

#[test]
fn delegated_responder_with_ocsp_signing_is_accepted_by_name_and_by_key() {
    let p = pki();
    let a = p.check("good", "responder", &[]).unwrap();
    assert_eq!((a.status, a.signer), (Status::Good, Signer::Delegated));
    let b = p.check("revoked", "responder", &["-resp_key_id"]).unwrap();
    assert!(matches!(b.status, Status::Revoked { .. }));
    assert_eq!(b.signer, Signer::Delegated);
}

#[test]
fn responder_without_ocsp_signing_or_from_another_ca_is_refused() {
    let p = pki();
    assert!(matches!(
        p.check("good", "no-eku-responder", &[]),
        Err(OcspError::UntrustedSigner(_))
    ));
    assert!(matches!(
        p.check("good", "other", &[]),
        Err(OcspError::UntrustedSigner(_))
    ));
    // Issuer named, but no responder certificate: signed by another key entirely.
    let q = ocsp::query(&p.cert("good"), &p.cert("ca"), IdHash::Sha1, None).unwrap();
    let resp = p.respond(&q.der, "responder", &["-resp_no_certs"]);
    assert!(matches!(
        ocsp::verify(&resp, &q, &p.cert("ca"), p.now, 300, 86_400),
        Err(OcspError::UntrustedSigner(_))
    ));
}

#[test]
fn stale_and_future_responses_are_refused() {
    let p = pki();
    let q = ocsp::query(&p.cert("good"), &p.cert("ca"), IdHash::Sha1, None).unwrap();
    let resp = p.respond(&q.der, "ca", &[]);
    let ca = p.cert("ca");
    assert!(ocsp::verify(&resp, &q, &ca, p.now, 300, 86_400).is_ok());
    assert_eq!(
        ocsp::verify(&resp, &q, &ca, p.now + 3 * 86_400, 300, 86_400),
        Err(OcspError::Stale)
    );
    assert_eq!(
        ocsp::verify(&resp, &q, &ca, p.now - 3_600, 300, 86_400),
        Err(OcspError::NotYetValid)
    );
}

#[test]
fn nonce_must_be_echoed_and_cert_id_must_match() {
    let p = pki();
    let ca = p.cert("ca");
    let with_nonce = ocsp::query(&p.cert("good"), &ca, IdHash::Sha1, Some([7; 16])).unwrap();
    let resp = p.respond(&with_nonce.der, "ca", &[]);
    assert!(ocsp::verify(&resp, &with_nonce, &ca, p.now, 300, 86_400).is_ok());
    let other_nonce = ocsp::query(&p.cert("good"), &ca, IdHash::Sha1, Some([8; 16])).unwrap();
    assert_eq!(
        ocsp::verify(&resp, &other_nonce, &ca, p.now, 300, 86_400),
        Err(OcspError::NonceMismatch)
    );
    assert!(
        OcspError::NonceMismatch.is_hostile(),
        "an answer to another request"
    );
    // A responder that does not echo (no nonce asked, none given) fails a query that sent
    // one: no answer (such responders exist), not an attack.
    let without = ocsp::query(&p.cert("good"), &ca, IdHash::Sha1, None).unwrap();
    let resp = p.respond(&without.der, "ca", &[]);
    assert!(ocsp::verify(&resp, &without, &ca, p.now, 300, 86_400).is_ok());
    assert_eq!(
        ocsp::verify(&resp, &with_nonce, &ca, p.now, 300, 86_400),
        Err(OcspError::NonceMissing)
    );
    assert!(!OcspError::NonceMissing.is_hostile());
    let other_cert = ocsp::query(&p.cert("revoked"), &ca, IdHash::Sha1, None).unwrap();
    assert_eq!(
        ocsp::verify(&resp, &other_cert, &ca, p.now, 300, 86_400),
        Err(OcspError::CertIdMismatch)
    );
}

#[test]
fn sha256_cert_ids_work_and_tampering_is_caught() {
    let p = pki();
    let ca = p.cert("ca");
    let q = ocsp::query(&p.cert("revoked"), &ca, IdHash::Sha256, None).unwrap();
    let resp = p.respond(&q.der, "ca", &[]);
    assert!(matches!(
        ocsp::verify(&resp, &q, &ca, p.now, 300, 86_400)
            .unwrap()
            .status,
        Status::Revoked { .. }
    ));
    // Turn "revoked" into something else by flipping a byte inside the signed data.
    let resp = tamper_revocation_time(&resp);
    assert_eq!(
        ocsp::verify(&resp, &q, &ca, p.now, 300, 86_400),
        Err(OcspError::BadSignature)
    );
}

/// A copy of a "revoked" response with its (signed) revocation time changed: 2024 → 2025.
fn tamper_revocation_time(resp: &[u8]) -> Vec<u8> {
    let mut out = resp.to_vec();
    let at = out
        .windows(15)
        .position(|w| w == b"20240101000000Z")
        .unwrap();
    out[at + 3] = b'5';
    out
}

/// Re-signs an OpenSSL response with the CA's key after `edit` changed its signed data.
fn resign(p: &Pki, resp: &[u8], edit: impl FnOnce(&mut x509_ocsp::BasicOcspResponse)) -> Vec<u8> {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use der::{Decode, Encode};
    let mut outer = x509_ocsp::OcspResponse::from_der(resp).unwrap();
    let bytes = outer.response_bytes.as_mut().unwrap();
    let mut basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    edit(&mut basic);
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &p.ca.key.serialize_der())
        .unwrap();
    let tbs = basic.tbs_response_data.to_der().unwrap();
    let sig = key
        .sign(&aws_lc_rs::rand::SystemRandom::new(), &tbs)
        .unwrap();
    basic.signature = der::asn1::BitString::from_bytes(sig.as_ref()).unwrap();
    bytes.response = der::asn1::OctetString::new(basic.to_der().unwrap()).unwrap();
    outer.to_der().unwrap()
}

/// A critical extension of an OID nobody knows.
fn unknown_critical() -> x509_cert::ext::Extension {
    x509_cert::ext::Extension {
        extn_id: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55555.1"),
        critical: true,
        extn_value: der::asn1::OctetString::new(vec![5, 0]).unwrap(),
    }
}

#[test]
fn unknown_critical_extensions_make_a_good_answer_no_answer() {
    let p = pki();
    let ca = p.cert("ca");
    let q = ocsp::query(&p.cert("good"), &ca, IdHash::Sha1, Some([9; 16])).unwrap();
    let resp = p.respond(&q.der, "ca", &[]);
    // Re-signing alone changes nothing: the helper is sound.
    let same = resign(&p, &resp, |_| {});
    assert_eq!(
        ocsp::verify(&same, &q, &ca, p.now, 300, 86_400)
            .unwrap()
            .status,
        Status::Good
    );
    let in_response = resign(&p, &resp, |b| {
        b.tbs_response_data
            .response_extensions
            .get_or_insert_with(Vec::new)
            .push(unknown_critical());
    });
    let in_single = resign(&p, &resp, |b| {
        b.tbs_response_data.responses[0]
            .single_extensions
            .get_or_insert_with(Vec::new)
            .push(unknown_critical());
    });
    for r in [in_response, in_single] {
        let e = ocsp::verify(&r, &q, &ca, p.now, 300, 86_400).unwrap_err();
        assert_eq!(
            e,
            OcspError::UnsupportedCritical("1.3.6.1.4.1.55555.1".to_owned())
        );
        assert!(
            !e.is_hostile(),
            "signed by the responder: unknown, not forged"
        );
    }
    // Not critical: ignored, as RFC 5280 says.
    let lenient = resign(&p, &resp, |b| {
        let mut e = unknown_critical();
        e.critical = false;
        b.tbs_response_data.responses[0].single_extensions = Some(vec![e]);
    });
    assert!(ocsp::verify(&lenient, &q, &ca, p.now, 300, 86_400).is_ok());
}

#[test]
fn a_signed_revoked_answer_stands_without_nonce_when_stale_or_with_unknown_extensions() {
    let p = pki();
    let ca = p.cert("ca");
    let without = ocsp::query(&p.cert("revoked"), &ca, IdHash::Sha1, None).unwrap();
    let resp = p.respond(&without.der, "ca", &[]);
    let with_nonce = ocsp::query(&p.cert("revoked"), &ca, IdHash::Sha1, Some([4; 16])).unwrap();
    let revoked = |r: Result<ocsp::Answer, OcspError>| {
        matches!(
            r,
            Ok(ocsp::Answer {
                status: Status::Revoked { .. },
                ..
            })
        )
    };
    assert!(
        revoked(ocsp::verify(&resp, &with_nonce, &ca, p.now, 300, 86_400)),
        "no nonce"
    );
    assert!(
        revoked(ocsp::verify(
            &resp,
            &without,
            &ca,
            p.now + 3 * 86_400,
            300,
            86_400
        )),
        "stale"
    );
    let odd = resign(&p, &resp, |b| {
        b.tbs_response_data.responses[0].single_extensions = Some(vec![unknown_critical()]);
    });
    assert!(
        revoked(ocsp::verify(&odd, &without, &ca, p.now, 300, 86_400)),
        "extension"
    );
    // Still about this certificate and signed by the CA only: anything else is refused.
    let tampered = tamper_revocation_time(&resp);
    assert_eq!(
        ocsp::verify(&tampered, &without, &ca, p.now, 300, 86_400),
        Err(OcspError::BadSignature)
    );
    let good = ocsp::query(&p.cert("good"), &ca, IdHash::Sha1, None).unwrap();
    assert_eq!(
        ocsp::verify(&resp, &good, &ca, p.now, 300, 86_400),
        Err(OcspError::CertIdMismatch)
    );
    // A good answer without the nonce stays no answer.
    let g = p.respond(&good.der, "ca", &[]);
    let good_nonce = ocsp::query(&p.cert("good"), &ca, IdHash::Sha1, Some([4; 16])).unwrap();
    assert_eq!(
        ocsp::verify(&g, &good_nonce, &ca, p.now, 300, 86_400),
        Err(OcspError::NonceMissing)
    );
}
