//! OCSP in the server, end to end: eapol_test devices against anchord with a real OpenSSL
//! OCSP responder on loopback. Good → Accept, revoked → Reject (TLS 1.2 and 1.3), unknown
//! and unreachable → Reject under hard-fail and Accept under soft-fail, untrusted signers →
//! Reject, the cache answers a second authentication, a dead first responder is skipped.

use std::path::Path;

use crate::harness::{eapol_test, pki_dir, Server, SECRET};
use crate::responder::Responder;

/// A server checking revocation with `revocation` as the body of its [revocation] table.
fn server(revocation: &str) -> Server {
    let pki = pki_dir();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[tls]\ncertificate = \"{p}/server.pem\"\nprivate_key = \"{p}/server.key\"\nca = [\"{p}/root-ca.pem\"]\n\n[revocation]\ntimeout_ms = 1000\n{revocation}\n[authorization]\nvlan = \"100\"\n\n[[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n",
        p = pki.display()
    );
    Server::start_config(&config, &[])
}

fn responders(urls: &[&str]) -> String {
    let list: Vec<String> = urls
        .iter()
        .map(|u| format!("{{ url = \"{u}\" }}"))
        .collect();
    format!("responders = [{}]\n", list.join(", "))
}

/// Authenticates `device` from the dev PKI with the tls12/tls13 scenario; true on Accept.
fn auth(s: &Server, device: &str, scenario: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_dir();
    std::fs::copy(pki.join("root-ca.pem"), dir.path().join("root-ca.pem")).unwrap();
    for ext in ["pem", "key"] {
        std::fs::copy(
            pki.join(format!("{device}.{ext}")),
            dir.path().join(format!("device-ecdsa.{ext}")),
        )
        .unwrap();
    }
    let out = eapol_test(s, dir.path(), scenario, &[]);
    out.lines().any(|l| l.trim() == "SUCCESS")
}

fn responder(signer: &str) -> Responder {
    Responder::start(Path::new(pki_dir()), signer)
}

#[test]
fn good_device_is_accepted_and_revoked_device_rejected() {
    let r = responder("issuing-ca");
    let s = server(&responders(&[&r.url]));
    assert!(auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
    for scenario in ["tls12-ecdsa", "tls13-ecdsa"] {
        assert!(!auth(&s, "device-revoked", scenario), "{scenario}");
    }
    s.wait_log(&[
        "outcome=\"reject\"",
        "reason=\"revoked\"",
        "revoked at 1704067200 (KeyCompromise)",
    ]);
}

#[test]
fn second_authentication_is_answered_from_the_cache() {
    let r = responder("ocsp-responder");
    let s = server(&responders(&[&r.url]));
    assert!(auth(&s, "device-ecdsa", "tls12-ecdsa"));
    assert!(auth(&s, "device-ecdsa", "tls13-ecdsa"));
    assert_eq!(r.count(), 1, "one request for two authentications");
    s.wait_log(&["outcome=\"accept\"", "revocation=good (cache)"]);
}

#[test]
fn unknown_certificate_is_rejected_under_hard_fail_and_accepted_under_soft_fail() {
    let r = responder("issuing-ca");
    let hard = server(&responders(&[&r.url]));
    assert!(!auth(&hard, "device-rsa", "tls12-ecdsa"));
    hard.wait_log(&["reason=\"revocation_unknown\"", "revocation=unknown (ocsp)"]);
    let soft = server(&format!("soft_fail = true\n{}", responders(&[&r.url])));
    assert!(auth(&soft, "device-rsa", "tls12-ecdsa"));
    soft.wait_log(&[
        "outcome=\"accept\"",
        "revocation=soft-failed: unknown (ocsp)",
    ]);
}

#[test]
fn unreachable_responder_is_rejected_under_hard_fail_and_accepted_under_soft_fail() {
    let dead = "http://127.0.0.1:9"; // discard port: nothing listens
    let hard = server(&responders(&[dead]));
    assert!(!auth(&hard, "device-ecdsa", "tls12-ecdsa"));
    hard.wait_log(&["reason=\"revocation_unknown\"", "no answer"]);
    let soft = server(&format!("soft_fail = true\n{}", responders(&[dead])));
    assert!(auth(&soft, "device-ecdsa", "tls12-ecdsa"));
    soft.wait_log(&["outcome=\"accept\"", "soft-failed: no answer"]);
}

#[test]
fn responses_from_untrusted_signers_are_no_answer() {
    for signer in ["ocsp-noeku", "device-ecdsa"] {
        let r = responder(signer);
        let s = server(&responders(&[&r.url]));
        assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"), "{signer}");
        s.wait_log(&[
            "reason=\"revocation_unknown\"",
            "not signed by the issuer or an authorised responder",
        ]);
    }
}

#[test]
fn dead_first_responder_is_skipped_for_the_next() {
    let r = responder("ocsp-responder");
    let s = server(&responders(&["http://127.0.0.1:9", &r.url]));
    assert!(auth(&s, "device-ecdsa", "tls12-ecdsa"));
    assert_eq!(r.count(), 1);
    s.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
}

/// Writes `crl.pem` into `dir`: the issuing CA's CRL (made by `openssl ca -gencrl`) listing
/// the given serials as revoked for key compromise.
fn write_crl(dir: &Path, serials: &[&str]) -> std::path::PathBuf {
    write_ca_crl(dir, "issuing-ca", serials)
}

/// The same for the CA whose certificate and key are `<ca>.pem` / `<ca>.key`.
fn write_ca_crl(dir: &Path, ca: &str, serials: &[&str]) -> std::path::PathBuf {
    let pki = pki_dir();
    let index: String = serials
        .iter()
        .map(|s| format!("R\t301231235959Z\t240101000000Z,keyCompromise\t{s}\tunknown\t/CN=x\n"))
        .collect();
    std::fs::write(dir.join("index.txt"), index).unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n",
    )
    .unwrap();
    let (key, cert) = (pki.join(format!("{ca}.key")), pki.join(format!("{ca}.pem")));
    let (key, cert) = (key.to_str().unwrap(), cert.to_str().unwrap());
    crate::harness::openssl(
        dir,
        &[
            "ca", "-gencrl", "-batch", "-config", "ca.cnf", "-out", "crl.new", "-keyfile", key,
            "-cert", cert,
        ],
    );
    // Replace atomically, as an admin's tooling would.
    std::fs::rename(dir.join("crl.new"), dir.join("crl.pem")).unwrap();
    dir.join("crl.pem")
}

#[test]
fn crl_rejects_a_revoked_device_without_ocsp_and_a_new_crl_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let crl = write_crl(dir.path(), &["1030"]);
    let s = server(&format!(
        "mode = \"crl\"\ncrl_files = [\"{}\"]\ncrl_refresh_secs = 1\n",
        crl.display()
    ));
    assert!(!auth(&s, "device-revoked", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revoked\"", "(crl)"]);
    assert!(auth(&s, "device-ecdsa", "tls13-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "revocation=good (crl)"]);
    // The CA revokes device-ecdsa too: the new file is read without a restart.
    write_crl(dir.path(), &["1030", "1014"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while auth(&s, "device-ecdsa", "tls12-ecdsa") {
        assert!(
            std::time::Instant::now() < deadline,
            "new CRL not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    s.wait_log(&["reason=\"revoked\"", "identity=device-ecdsa"]);
}

#[test]
fn crl_is_the_fallback_when_no_responder_answers() {
    let dir = tempfile::tempdir().unwrap();
    let crl = write_crl(dir.path(), &["1030"]);
    let s = server(&format!(
        "{}crl_files = [\"{}\"]\n",
        responders(&["http://127.0.0.1:9"]),
        crl.display()
    ));
    assert!(auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "revocation=good (crl)"]);
    assert!(!auth(&s, "device-revoked", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revoked\"", "(crl)"]);
}

#[test]
fn crl_whose_signature_does_not_verify_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let crl = write_crl(dir.path(), &[]);
    // Flip one byte of the signature (the DER ends with it).
    let mut der = pem::parse(std::fs::read(&crl).unwrap())
        .unwrap()
        .into_contents();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let forged = dir.path().join("forged.der");
    std::fs::write(&forged, der).unwrap();
    let s = server(&format!(
        "mode = \"crl\"\ncrl_files = [\"{}\"]\n",
        forged.display()
    ));
    assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revocation_unknown\"", "no current CRL"]);
}

#[test]
fn get_requests_per_rfc_5019_work() {
    let r = responder("ocsp-responder");
    let s = server(&format!("method = \"get\"\n{}", responders(&[&r.url])));
    assert!(auth(&s, "device-ecdsa", "tls12-ecdsa"));
    assert!(r.saw_get());
    s.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
}

#[test]
fn nonce_can_be_switched_off_for_a_responder_that_does_not_echo_it() {
    let r = responder("issuing-ca");
    r.ignore_nonces(pki_dir(), "device-ecdsa", "issuing-ca");
    let with_nonce = server(&responders(&[&r.url]));
    assert!(!auth(&with_nonce, "device-ecdsa", "tls12-ecdsa"));
    with_nonce.wait_log(&["reason=\"revocation_unknown\"", "nonce not echoed"]);
    let without = server(&format!(
        "responders = [{{ url = \"{}\", nonce = false }}]\n",
        r.url
    ));
    assert!(auth(&without, "device-ecdsa", "tls12-ecdsa"));
    without.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
}

#[test]
fn stalled_responder_delays_only_the_device_that_needs_it() {
    // Accepts connections and never answers.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stall.local_addr().unwrap());
    let s = std::sync::Arc::new(server(&responders(&[&url])));
    let waiting = {
        let s = s.clone();
        std::thread::spawn(move || auth(&s, "device-ecdsa", "tls12-ecdsa"))
    };
    // While that device waits on the responder, the server answers others at once.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(s.addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut b = anchord::radius::ReplyBuilder::new(anchord::radius::Code::StatusServer, 9);
    b.push(anchord::radius::AttrType::NasIdentifier, b"probe")
        .unwrap();
    let secret = anchord::radius::SharedSecret::new(SECRET.as_bytes().to_vec());
    let req = b.finish_request(&secret, &[3; 16]).unwrap();
    sock.send(&req).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("answered while a revocation check is pending");
    assert_eq!(buf[0], 2);
    assert!(n >= 20);
    // The waiting device is rejected after the 1 s responder timeout (hard-fail).
    assert!(!waiting.join().unwrap());
    s.wait_log(&["reason=\"revocation_unknown\""]);
    drop(stall);
}

#[test]
fn intermediates_are_checked_when_asked() {
    let issuing = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let leaf_crl = write_crl(issuing.path(), &[]);
    // The root revokes the issuing CA (serial 02).
    let root_crl = write_ca_crl(root.path(), "root-ca", &["02"]);
    let crls = format!(
        "mode = \"crl\"\ncrl_files = [\"{}\", \"{}\"]\n",
        leaf_crl.display(),
        root_crl.display()
    );
    let checked = server(&format!("check_intermediates = true\n{crls}"));
    assert!(!auth(&checked, "device-ecdsa", "tls12-ecdsa"));
    checked.wait_log(&[
        "reason=\"intermediate_revoked\"",
        "intermediate CN=anchord dev issuing CA",
    ]);
    let unchecked = server(&crls);
    assert!(auth(&unchecked, "device-ecdsa", "tls12-ecdsa"));
    unchecked.wait_log(&["outcome=\"accept\"", "revocation=good (crl)"]);
    let fine = write_ca_crl(root.path(), "root-ca", &[]);
    let ok = server(&format!(
        "check_intermediates = true\nmode = \"crl\"\ncrl_files = [\"{}\", \"{}\"]\n",
        leaf_crl.display(),
        fine.display()
    ));
    assert!(auth(&ok, "device-ecdsa", "tls12-ecdsa"));
    ok.wait_log(&[
        "outcome=\"accept\"",
        "revocation=good (crl); intermediate CN=anchord dev issuing CA",
    ]);
}

/// Serves one file over HTTP GET on loopback; counts requests.
fn serve_file(
    path: std::path::PathBuf,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/issuing.crl", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = std::fs::read(&path).unwrap();
            let mut w = conn;
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = w.write_all(&body);
        }
    });
    (url, count)
}

/// Issues a device certificate from the dev PKI's issuing CA with a CRL distribution point.
fn device_with_cdp(dir: &Path, name: &str, serial: u8, cdp: &str) {
    use rcgen::{
        CertificateParams, CrlDistributionPoint, DnType, ExtendedKeyUsagePurpose, KeyPair,
        SerialNumber,
    };
    let (ca_pem, ca, ca_key) = issuing_ca();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![format!("{name}.test")]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.serial_number = Some(SerialNumber::from(vec![serial]));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![cdp.to_owned()],
    }];
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(
        dir.join(format!("{name}.pem")),
        format!("{}{ca_pem}", cert.pem()),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn crl_distribution_point_is_fetched_once_and_used() {
    let work = tempfile::tempdir().unwrap();
    let crl = write_crl(work.path(), &["41"]);
    let (url, count) = serve_file(crl);
    let devices = tempfile::tempdir().unwrap();
    device_with_cdp(devices.path(), "cdp-good", 0x40, &url);
    device_with_cdp(devices.path(), "cdp-revoked", 0x41, &url);
    let s = server("mode = \"crl\"\n");
    let auth_dev = |name: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            pki_dir().join("root-ca.pem"),
            dir.path().join("root-ca.pem"),
        )
        .unwrap();
        for ext in ["pem", "key"] {
            std::fs::copy(
                devices.path().join(format!("{name}.{ext}")),
                dir.path().join(format!("device-ecdsa.{ext}")),
            )
            .unwrap();
        }
        eapol_test(&s, dir.path(), "tls12-ecdsa", &[])
            .lines()
            .any(|l| l.trim() == "SUCCESS")
    };
    assert!(!auth_dev("cdp-revoked"));
    s.wait_log(&["reason=\"revoked\"", "cert.subject=CN=cdp-revoked", "(crl)"]);
    assert!(auth_dev("cdp-good"));
    s.wait_log(&[
        "outcome=\"accept\"",
        "cert.subject=CN=cdp-good",
        "revocation=good (crl)",
    ]);
    assert!(!auth_dev("cdp-revoked"));
    assert_eq!(
        count.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the CRL is fetched once"
    );
    // Without a distribution point (and no files), there is nothing to go on: hard-fail.
    assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revocation_unknown\"", "no current CRL"]);
}

#[test]
fn responder_from_the_certificate_aia_is_used_when_none_is_configured() {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
    let r = responder("issuing-ca");
    let pki = pki_dir();
    let (ca_pem, ca, ca_key) = issuing_ca();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["aia-dev.test".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "aia-dev");
    p.serial_number = Some(SerialNumber::from(vec![0x10, 0x30])); // revoked in the responder's index
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.custom_extensions.push(anchord::pki::ca::aia_ocsp(&r.url));
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.join("root-ca.pem"), dir.path().join("root-ca.pem")).unwrap();
    std::fs::write(
        dir.path().join("device-ecdsa.pem"),
        format!("{}{ca_pem}", cert.pem()),
    )
    .unwrap();
    std::fs::write(dir.path().join("device-ecdsa.key"), key.serialize_pem()).unwrap();
    let s = server("");
    let out = eapol_test(&s, dir.path(), "tls13-ecdsa", &[]);
    assert!(!out.lines().any(|l| l.trim() == "SUCCESS"));
    assert_eq!(r.count(), 1, "the AIA responder was asked");
    s.wait_log(&["reason=\"revoked\"", "cert.subject=CN=aia-dev", "(ocsp)"]);
}

/// The dev PKI's issuing CA as rcgen can sign with: its PEM, certificate and key.
fn issuing_ca() -> (String, rcgen::Certificate, rcgen::KeyPair) {
    let pki = pki_dir();
    let pem = std::fs::read_to_string(pki.join("issuing-ca.pem")).unwrap();
    let key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("issuing-ca.key")).unwrap())
            .unwrap();
    let cert = rcgen::CertificateParams::from_ca_cert_pem(&pem)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (pem, cert, key)
}
