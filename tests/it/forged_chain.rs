//! Devices that send certificates chosen to mislead the checks after the handshake, end to
//! end with eapol_test: revocation must be asked about (and answers verified with) the CA
//! whose key signed the device's certificate, and a remembered intermediate must never vouch
//! for a device it did not issue.

use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SerialNumber};

use crate::harness::{eapol_test, pki_dir, Server, SECRET};
use crate::responder::Responder;
use crate::revocation::issuing_ca;

/// A server with the dev root as its CA and `revocation` as its [revocation] table (none if
/// `None`).
fn server(revocation: Option<&str>) -> Server {
    let pki = pki_dir();
    let revocation = revocation
        .map(|r| format!("[revocation]\ntimeout_ms = 1000\n{r}\n"))
        .unwrap_or_default();
    Server::start_config(
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[tls]\ncertificate = \"{p}/server.pem\"\nprivate_key = \"{p}/server.key\"\nca = [\"{p}/root-ca.pem\"]\n\n{revocation}[authorization]\nvlan = \"100\"\n\n[[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n",
            p = pki.display()
        ),
        &[],
    )
}

/// A self-made CA with exactly the dev issuing CA's name, and its key: trusted by no one.
fn fake_issuing_ca() -> (rcgen::Certificate, KeyPair) {
    let pem = std::fs::read_to_string(pki_dir().join("issuing-ca.pem")).unwrap();
    let mut p = CertificateParams::from_ca_cert_pem(&pem).unwrap();
    p.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}

/// Authenticates with `chain_pem` (device first, then whatever it sends) and `key_pem` as
/// the tls12-ecdsa scenario's device; true on Accept.
fn auth(s: &Server, chain_pem: &str, key_pem: &str, scenario: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        pki_dir().join("root-ca.pem"),
        dir.path().join("root-ca.pem"),
    )
    .unwrap();
    std::fs::write(dir.path().join("device-ecdsa.pem"), chain_pem).unwrap();
    std::fs::write(dir.path().join("device-ecdsa.key"), key_pem).unwrap();
    eapol_test(s, dir.path(), scenario, &[])
        .lines()
        .any(|l| l.trim() == "SUCCESS")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(pki_dir().join(name)).unwrap()
}

/// The PEM of the first certificate in a dev PKI file (the device without its chain).
fn leaf_pem(name: &str) -> String {
    let all = read(name);
    let end = all.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    all[..end].to_owned()
}

#[test]
fn revoked_device_sending_a_fake_issuer_is_rejected_even_under_soft_fail() {
    // The real OpenSSL responder, signing with the real issuing CA, on the device's AIA URL.
    let r = Responder::start(pki_dir(), "issuing-ca");
    let (ca_pem, ca, ca_key) = issuing_ca();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["stolen.test".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "stolen");
    p.serial_number = Some(SerialNumber::from(vec![0x10, 0x30])); // revoked in the index
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.custom_extensions.push(anchord::pki::ca::aia_ocsp(&r.url));
    let leaf = p.signed_by(&key, &ca, &ca_key).unwrap();
    let (fake, _) = fake_issuing_ca();
    let s = server(Some("soft_fail = true"));
    let chain = format!("{}{}{ca_pem}", leaf.pem(), fake.pem());
    assert!(
        !auth(&s, &chain, &key.serialize_pem(), "tls12-ecdsa"),
        "a revoked device is never accepted"
    );
    s.wait_log(&[
        "outcome=\"reject\"",
        "reason=\"revoked\"",
        "cert.subject=CN=stolen",
        "revoked at 1704067200 (KeyCompromise) (ocsp)",
    ]);
    assert_eq!(r.count(), 1, "the real responder was asked");
}

#[test]
fn good_answer_signed_by_a_fake_issuer_is_rejected_with_its_reason() {
    // Whoever answers the (plain HTTP) responder URL signs "good" with the fake CA's key,
    // naming the issuing CA (same name) as the responder.
    let (fake, fake_key) = fake_issuing_ca();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("issuing-ca.pem"),
        format!("{}{}", fake.pem(), read("issuing-ca.pem")),
    )
    .unwrap();
    std::fs::write(dir.path().join("fake.pem"), fake.pem()).unwrap();
    std::fs::write(dir.path().join("fake.key"), fake_key.serialize_pem()).unwrap();
    let r = Responder::start(dir.path(), "fake");
    let s = server(Some(&format!("responders = [{{ url = \"{}\" }}]", r.url)));
    // device-ecdsa is "good" in the responder's index.
    let chain = format!(
        "{}{}{}",
        leaf_pem("device-ecdsa.pem"),
        fake.pem(),
        read("issuing-ca.pem")
    );
    assert!(!auth(&s, &chain, &read("device-ecdsa.key"), "tls13-ecdsa"));
    s.wait_log(&[
        "outcome=\"reject\"",
        "reason=\"revocation_invalid\"",
        "invalid answer",
        "bad response signature",
    ]);
    s.wait_log(&[
        "alert=\"ocsp_answer_invalid\"",
        "kind=\"ocsp_bad_signature\"",
    ]);
    assert_eq!(r.count(), 1);

    // Soft-fail does not cover a forged answer either.
    let soft = server(Some(&format!(
        "soft_fail = true\nresponders = [{{ url = \"{}\" }}]",
        r.url
    )));
    assert!(!auth(
        &soft,
        &chain,
        &read("device-ecdsa.key"),
        "tls12-ecdsa"
    ));
    soft.wait_log(&["outcome=\"reject\"", "reason=\"revocation_invalid\""]);
}

/// A CA under the dev root, valid until `until`.
fn intermediate(cn: &str, until: time::OffsetDateTime) -> (rcgen::Certificate, KeyPair) {
    let root_pem = read("root-ca.pem");
    let root_key = KeyPair::from_pem(&read("root-ca.key")).unwrap();
    let root = CertificateParams::from_ca_cert_pem(&root_pem)
        .unwrap()
        .self_signed(&root_key)
        .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    p.not_after = until;
    let cert = p.signed_by(&key, &root, &root_key).unwrap();
    (cert, key)
}

fn device_under(cn: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![format!("{cn}.test")]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, ca, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn device_cannot_borrow_a_cached_intermediate_once_its_own_has_expired() {
    let now = time::OffsetDateTime::now_utc();
    let (xa, xa_key) = intermediate("X_a", now + time::Duration::days(365));
    let expiry = now + time::Duration::seconds(8);
    let (xb, xb_key) = intermediate("X_b", expiry);
    let (a, a_key) = device_under("device-a", &xa, &xa_key);
    let (b, b_key) = device_under("device-b", &xb, &xb_key);
    let s = server(None);
    assert!(auth(&s, &format!("{a}{}", xa.pem()), &a_key, "tls12-ecdsa"));
    assert!(auth(&s, &format!("{b}{}", xb.pem()), &b_key, "tls12-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "cert.subject=CN=device-b"]);
    // Past X_b's notAfter (second granularity, plus a margin for the clock).
    let wait = (expiry - time::OffsetDateTime::now_utc()).whole_milliseconds() + 1500;
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(u64::try_from(wait).unwrap()));
    }
    assert!(!auth(
        &s,
        &format!("{b}{}", xb.pem()),
        &b_key,
        "tls12-ecdsa"
    ));
    s.wait_log(&["reason=\"certificate_expired\""]);
    assert!(
        !auth(&s, &format!("{b}{}", xa.pem()), &b_key, "tls12-ecdsa"),
        "X_a never issued device-b"
    );
    s.wait_log(&["reason=\"unknown_ca\""]);
    // device-a still goes through its (cached) X_a.
    assert!(auth(&s, &format!("{a}{}", xa.pem()), &a_key, "tls13-ecdsa"));
}
