//! OCSP in the server, end to end: eapol_test devices against anchord with a real OpenSSL
//! OCSP responder on loopback. Good → Accept, revoked → Reject (TLS 1.2 and 1.3), unknown
//! and unreachable → Reject under hard-fail and Accept under soft-fail, untrusted signers →
//! Reject, the cache answers a second authentication, a dead first responder is skipped.

use std::path::Path;

use crate::harness::{eapol_test, pki_dir, Server, SECRET};
use crate::responder::Responder;

/// A server checking revocation with `revocation` as the body of its [revocation] table.
pub(crate) fn server(revocation: &str) -> Server {
    let pki = pki_dir();
    let timeout = if revocation.contains("timeout_ms") {
        ""
    } else {
        "timeout_ms = 1000\n"
    };
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[tls]\ncertificate = \"{p}/server.pem\"\nprivate_key = \"{p}/server.key\"\nca = [\"{p}/root-ca.pem\"]\n\n[revocation]\n{timeout}{revocation}\n[authorization]\nvlan = \"100\"\n\n[[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n",
        p = pki.display()
    );
    Server::start_config(&config, &[])
}

pub(crate) fn responders(urls: &[&str]) -> String {
    let list: Vec<String> = urls
        .iter()
        .map(|u| format!("{{ url = \"{u}\" }}"))
        .collect();
    format!("responders = [{}]\n", list.join(", "))
}

/// Authenticates `device` from the dev PKI with the tls12/tls13 scenario; true on Accept.
pub(crate) fn auth(s: &Server, device: &str, scenario: &str) -> bool {
    let dir = device_dir(pki_dir(), device, "device-ecdsa");
    let out = eapol_test(s, dir.path(), scenario, &[]);
    out.lines().any(|l| l.trim() == "SUCCESS")
}

/// A folder for eapol_test: the dev root CA, and device `name`'s certificate and key from
/// `devices` under the file names `as_name` a scenario expects.
fn device_dir(devices: &Path, name: &str, as_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        pki_dir().join("root-ca.pem"),
        dir.path().join("root-ca.pem"),
    )
    .unwrap();
    for ext in ["pem", "key"] {
        std::fs::copy(
            devices.join(format!("{name}.{ext}")),
            dir.path().join(format!("{as_name}.{ext}")),
        )
        .unwrap();
    }
    dir
}

pub(crate) fn responder(signer: &str) -> Responder {
    Responder::start(Path::new(pki_dir()), signer)
}

#[test]
fn good_device_is_accepted_and_revoked_device_rejected() {
    let r = responder("issuing-ca");
    let s = server(&responders(&[&r.url]));
    assert!(auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
    for (scenario, tls) in [
        ("tls12-ecdsa", "tls=\"1.2\""),
        ("tls13-ecdsa", "tls=\"1.3\""),
    ] {
        assert!(!auth(&s, "device-revoked", scenario), "{scenario}");
        // Each reject on its own line, with its TLS version.
        s.wait_log(&[
            "outcome=\"reject\"",
            "reason=\"revoked\"",
            tls,
            "revoked at 1704067200 (KeyCompromise)",
        ]);
    }
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
fn responses_from_untrusted_signers_are_rejected_even_under_soft_fail() {
    for signer in ["ocsp-noeku", "device-ecdsa"] {
        let r = responder(signer);
        for soft in ["", "soft_fail = true\n"] {
            let s = server(&format!("{soft}{}", responders(&[&r.url])));
            assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"), "{signer}");
            s.wait_log(&[
                "reason=\"revocation_invalid\"",
                "not signed by the issuer or an authorised responder",
            ]);
        }
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
pub(crate) fn write_crl(dir: &Path, serials: &[&str]) -> std::path::PathBuf {
    write_ca_crl(dir, "issuing-ca", serials)
}

/// The same for the CA whose certificate and key are `<ca>.pem` / `<ca>.key`.
fn write_ca_crl(dir: &Path, ca: &str, serials: &[&str]) -> std::path::PathBuf {
    write_ca_crl_with(dir, ca, serials, &[], "")
}

/// The same with extra `openssl ca` arguments and extra config text (e.g. a `[crlext]`
/// section for `-crlexts crlext`).
fn write_ca_crl_with(
    dir: &Path,
    ca: &str,
    serials: &[&str],
    args: &[&str],
    cnf: &str,
) -> std::path::PathBuf {
    let pki = pki_dir();
    let index: String = serials
        .iter()
        .map(|s| format!("R\t301231235959Z\t240101000000Z,keyCompromise\t{s}\tunknown\t/CN=x\n"))
        .collect();
    std::fs::write(dir.join("index.txt"), index).unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        format!("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n{cnf}"),
    )
    .unwrap();
    let (key, cert) = (pki.join(format!("{ca}.key")), pki.join(format!("{ca}.pem")));
    let (key, cert) = (key.to_str().unwrap(), cert.to_str().unwrap());
    let mut all = vec![
        "ca", "-gencrl", "-batch", "-config", "ca.cnf", "-out", "crl.new", "-keyfile", key,
        "-cert", cert,
    ];
    all.extend_from_slice(args);
    crate::harness::openssl(dir, &all);
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
    // The audit line says the CRL stood in for OCSP (fresh to its nextUpdate, not by nonce).
    s.wait_log(&[
        "outcome=\"accept\"",
        "revocation=good (crl, OCSP gave no answer)",
    ]);
    assert!(!auth(&s, "device-revoked", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revoked\"", "(crl, OCSP gave no answer)"]);
}

#[test]
fn crl_whose_signature_does_not_verify_is_rejected_even_under_soft_fail() {
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
    for soft in ["", "soft_fail = true\n"] {
        let s = server(&format!(
            "{soft}mode = \"crl\"\ncrl_files = [\"{}\"]\n",
            forged.display()
        ));
        assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"), "{soft}");
        s.wait_log(&[
            "reason=\"revocation_invalid\"",
            "forged.der names the issuer but is not signed by its key",
        ]);
        s.wait_log(&["alert=\"crl_signature_invalid\""]);
    }
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
    // An answer that does not echo our nonce may be a replay, or a responder that never
    // echoes: no answer (an attacker able to replay one could as well drop it).
    with_nonce.wait_log(&["reason=\"revocation_unknown\"", "nonce not echoed"]);
    let without = server(&format!(
        "responders = [{{ url = \"{}\", nonce = false }}]\n",
        r.url
    ));
    assert!(auth(&without, "device-ecdsa", "tls12-ecdsa"));
    without.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
}

#[test]
fn a_signed_revoked_answer_counts_even_without_the_nonce_or_past_its_next_update() {
    let r = responder("issuing-ca");
    // A fixed answer without our nonce, whose nextUpdate (one minute) has passed by the time
    // it is served: neither makes "revoked" soft-failable.
    r.fixed(pki_dir(), "device-revoked", "issuing-ca", &["-nmin", "1"]);
    std::thread::sleep(std::time::Duration::from_secs(62));
    let s = server(&format!(
        "soft_fail = true\nskew_secs = 0\ncrl_distribution_points = false\n{}",
        responders(&[&r.url])
    ));
    assert!(!auth(&s, "device-revoked", "tls12-ecdsa"));
    s.wait_log(&[
        "reason=\"revoked\"",
        "revoked at 1704067200 (KeyCompromise) (ocsp)",
    ]);
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
    // Once the server has connected to the responder (so the device is waiting on it), the
    // server answers others at once.
    let (_held, _) = stall.accept().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(s.addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
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

/// Authenticates the device `name` whose certificate and key are in `devices`; true on Accept.
fn auth_files(s: &Server, devices: &Path, name: &str) -> bool {
    let dir = device_dir(devices, name, "device-ecdsa");
    eapol_test(s, dir.path(), "tls12-ecdsa", &[])
        .lines()
        .any(|l| l.trim() == "SUCCESS")
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
    let auth_dev = |name: &str| auth_files(&s, devices.path(), name);
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
    // A device of the same issuer without a distribution point: the issuer's complete CRL,
    // current and verified, covers it too.
    assert!(auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&[
        "outcome=\"accept\"",
        "identity=device-ecdsa",
        "revocation=good (crl)",
    ]);
    // With no CRL seen at all, there is nothing to go on: hard-fail.
    let fresh = server("mode = \"crl\"\n");
    assert!(!auth(&fresh, "device-ecdsa", "tls12-ecdsa"));
    fresh.wait_log(&["reason=\"revocation_unknown\"", "no current CRL"]);
}

#[test]
fn an_older_crl_put_back_does_not_hide_a_revocation_seen_in_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let crl = write_crl(dir.path(), &["1030"]);
    let s = server(&format!(
        "soft_fail = true\nmode = \"crl\"\ncrl_files = [\"{}\"]\ncrl_refresh_secs = 1\ncrl_distribution_points = false\n",
        crl.display()
    ));
    assert!(!auth(&s, "device-revoked", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revoked\"", "cert.subject=CN=device-revoked"]);
    // An hour older, still current, listing nothing: what a replay of last week's CRL is.
    let (last, next) = (openssl_time(-3600), openssl_time(86_400));
    write_ca_crl_with(
        dir.path(),
        "issuing-ca",
        &[],
        &["-crl_lastupdate", &last, "-crl_nextupdate", &next],
        "",
    );
    std::thread::sleep(std::time::Duration::from_secs(3)); // re-read every second
    assert!(!auth(&s, "device-revoked", "tls13-ecdsa"));
    s.wait_log(&[
        "reason=\"revoked\"",
        "tls=\"1.3\"",
        "cert.subject=CN=device-revoked",
    ]);
}

#[test]
fn another_issuers_crl_at_a_distribution_point_is_kept_only_briefly() {
    let work = tempfile::tempdir().unwrap();
    let issuing = tempfile::tempdir().unwrap();
    let real = write_crl(issuing.path(), &["41"]);
    // The root's CRL: signed and current, but not the device's issuer's.
    let other = write_ca_crl(work.path(), "root-ca", &[]);
    let served = work.path().join("served.crl");
    std::fs::copy(&other, &served).unwrap();
    let (url, _) = serve_file(served.clone());
    let devices = tempfile::tempdir().unwrap();
    device_with_cdp(devices.path(), "cdp-revoked", 0x41, &url);
    let s = server("mode = \"crl\"\nnegative_ttl_secs = 2\ncrl_refresh_secs = 300\n");
    assert!(!auth_files(&s, devices.path(), "cdp-revoked"));
    s.wait_log(&[
        "reason=\"revocation_unknown\"",
        "cert.subject=CN=cdp-revoked",
    ]);
    std::fs::copy(&real, &served).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(!auth_files(&s, devices.path(), "cdp-revoked"));
    s.wait_log(&["reason=\"revoked\"", "cert.subject=CN=cdp-revoked", "(crl)"]);
}

#[test]
fn forged_crl_at_a_distribution_point_is_rejected_and_not_kept() {
    let work = tempfile::tempdir().unwrap();
    let real = write_crl(work.path(), &["41"]);
    let real_der = pem::parse(std::fs::read(&real).unwrap())
        .unwrap()
        .into_contents();
    let mut forged = real_der.clone();
    let last = forged.len() - 3;
    forged[last] ^= 0x55;
    let served = work.path().join("served.crl");
    std::fs::write(&served, &forged).unwrap();
    let (url, count) = serve_file(served.clone());
    let devices = tempfile::tempdir().unwrap();
    device_with_cdp(devices.path(), "cdp-good", 0x40, &url);
    let s = server("mode = \"crl\"\nsoft_fail = true\nnegative_ttl_secs = 5\n");
    let auth_dev = || auth_files(&s, devices.path(), "cdp-good");
    assert!(!auth_dev(), "a forged CRL is never soft-failed");
    s.wait_log(&[
        "reason=\"revocation_invalid\"",
        "/issuing.crl names the issuer but is not signed by its key",
    ]);
    s.wait_log(&["alert=\"crl_signature_invalid\""]);
    assert!(!auth_dev());
    assert_eq!(
        count.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the forged answer is remembered, not fetched on every authentication"
    );
    // The real CRL comes back: once the forged one's short life ends, it is used.
    std::fs::write(&served, &real_der).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5500));
    assert!(auth_dev());
    s.wait_log(&[
        "outcome=\"accept\"",
        "cert.subject=CN=cdp-good",
        "revocation=good (crl)",
    ]);
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
pub(crate) fn issuing_ca() -> (String, rcgen::Certificate, rcgen::KeyPair) {
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

/// `openssl ca` time format, `YYYYMMDDHHMMSSZ`, `offset` seconds from now.
fn openssl_time(offset: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[test]
fn stale_crl_counts_as_no_crl() {
    let dir = tempfile::tempdir().unwrap();
    let (last, next) = (openssl_time(-7200), openssl_time(-3600));
    let crl = write_ca_crl_with(
        dir.path(),
        "issuing-ca",
        &[],
        &["-crl_lastupdate", &last, "-crl_nextupdate", &next],
        "",
    );
    let s = server(&format!(
        "mode = \"crl\"\nskew_secs = 60\ncrl_files = [\"{}\"]\n",
        crl.display()
    ));
    assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revocation_unknown\"", "no current CRL"]);
}

#[test]
fn partial_crls_are_refused_with_the_reason() {
    for (ext, what) in [
        ("deltaCRL = critical, DER:02:01:01", "deltaCRLIndicator"),
        (
            "issuingDistributionPoint = critical, @idp\n[idp]\nfullname = URI:http://crl.example/1.crl\nonlysomereasons = keyCompromise",
            "issuingDistributionPoint",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let crl = write_ca_crl_with(
            dir.path(),
            "issuing-ca",
            &["1014"],
            &["-crlexts", "crlext"],
            &format!("[crlext]\n{ext}\n"),
        );
        let config = dir.path().join("anchord.toml");
        let pki = pki_dir();
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[tls]\ncertificate = \"{p}/server.pem\"\nprivate_key = \"{p}/server.key\"\nca = [\"{p}/root-ca.pem\"]\n\n[revocation]\nmode = \"crl\"\ncrl_files = [\"{}\"]\n\n[[client]]\nname = \"n\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n",
                crl.display(),
                p = pki.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anchord"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains(&format!("anchord.toml:11: revocation.crl_files: {}", crl.display()))
                && text.contains(what)
                && text.contains("not used"),
            "{text}"
        );
    }
}

#[test]
fn ocsp_answer_past_its_next_update_is_no_answer() {
    let r = responder("issuing-ca");
    // One fixed answer, nextUpdate one minute after it is made, served once it has passed.
    r.fixed(pki_dir(), "device-ecdsa", "issuing-ca", &["-nmin", "1"]);
    std::thread::sleep(std::time::Duration::from_secs(62));
    let s = server(&format!(
        "skew_secs = 0\nresponders = [{{ url = \"{}\", nonce = false }}]\n",
        r.url
    ));
    assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revocation_unknown\"", "stale response"]);
}

#[test]
fn ocsp_answer_without_next_update_or_nonce_counts_only_while_recent() {
    let r = responder("issuing-ca");
    r.fixed(pki_dir(), "device-ecdsa", "issuing-ca", &[]);
    let config = |age: u64| {
        format!(
            "skew_secs = 0\nmax_age_without_next_update_secs = {age}\nresponders = [{{ url = \"{}\", nonce = false }}]\n",
            r.url
        )
    };
    let fresh = server(&config(3600));
    assert!(auth(&fresh, "device-ecdsa", "tls12-ecdsa"));
    fresh.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let strict = server(&config(1));
    assert!(!auth(&strict, "device-ecdsa", "tls12-ecdsa"));
    strict.wait_log(&[
        "reason=\"revocation_unknown\"",
        "no nextUpdate, thisUpdate older",
    ]);
}

/// An HTTP server on loopback that answers every request with `head` and then, if `endless`,
/// an endless chunked body; counts connections.
fn serve_raw(
    head: String,
    endless: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let head = head.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let mut w = conn;
                if w.write_all(head.as_bytes()).is_err() || !endless {
                    return;
                }
                let chunk = format!("4000\r\n{}\r\n", "0".repeat(0x4000));
                while w.write_all(chunk.as_bytes()).is_ok() {}
            });
        }
    });
    (url, count)
}

#[test]
fn responder_redirects_are_not_followed() {
    let real = responder("issuing-ca");
    let (url, count) = serve_raw(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            real.url
        ),
        false,
    );
    let s = server(&responders(&[&url]));
    assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"));
    s.wait_log(&["reason=\"revocation_unknown\"", "HTTP 302"]);
    assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(real.count(), 0, "the redirect target was never asked");
}

#[test]
fn oversized_responses_are_refused_as_they_arrive() {
    // Announced too large: refused before the body is read.
    let (big, _) = serve_raw(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 100000000\r\n\r\n"
            .to_owned(),
        false,
    );
    // Chunked and endless: refused at the cap, not read until the timeout.
    let (endless, _) = serve_raw(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_owned(),
        true,
    );
    for url in [big, endless] {
        let s = server(&format!("timeout_ms = 20000\n{}", responders(&[&url])));
        let started = std::time::Instant::now();
        assert!(!auth(&s, "device-ecdsa", "tls12-ecdsa"));
        // Real answers are a few kilobytes: this is no OCSP answer, and never soft-failed.
        s.wait_log(&["reason=\"revocation_invalid\"", "body over 65536 bytes"]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "refused at the cap, not after the 20 s timeout"
        );
    }
}

#[test]
fn revocation_starts_while_the_device_is_still_sending_its_flight() {
    // The device sends its TLS flight in 200-byte fragments: its Certificate is verified
    // rounds before its Finished arrives, and the responder is asked from then on.
    let r = responder("ocsp-responder");
    let s = server(&responders(&[&r.url]));
    // fragment-200 names device-rsa's files: give it device-ecdsa's, which the responder
    // knows.
    let dir = device_dir(pki_dir(), "device-ecdsa", "device-rsa");
    let out = eapol_test(&s, dir.path(), "fragment-200", &[]);
    assert!(
        out.lines().any(|l| l.trim() == "SUCCESS"),
        "{:#?}",
        s.log()
            .iter()
            .filter(|l| l.contains("finished") || l.contains("mid-flight"))
            .collect::<Vec<_>>()
    );
    let early = s.wait_log(&["device certificate verified mid-flight"]);
    // The answer fetched early is the one the decision used: fetched for this
    // authentication (not "cache"), once.
    s.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
    assert_eq!(r.count(), 1);
    // The check started before the device's last fragment: requests came after it.
    let log = s.log();
    let at = log.iter().position(|l| *l == early).unwrap();
    assert!(
        log[at..].iter().any(|l| l.contains("challenge")),
        "the handshake went on after the check started"
    );
}
