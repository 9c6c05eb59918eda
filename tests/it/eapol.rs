//! eapol_test (wpa_supplicant's 802.1X client) against the real server, one scenario from
//! eapol-tests/ each. Asserts the outcome, the reply attributes and that eapol_test's own
//! MS-MPPE key check passed.

use std::process::{Command, Stdio};

use crate::harness::{eapol_test, last_reply, pki_dir, repo, Server, SECRET};

struct EapolRun {
    stdout: String,
}

impl EapolRun {
    fn success(&self) -> bool {
        self.stdout.lines().any(|l| l.trim() == "SUCCESS")
    }

    fn mppe_ok(&self) -> bool {
        self.stdout.contains("MPPE keys OK: 1  mismatch: 0")
    }

    /// Attributes of the last RADIUS message received, as (type, value) pairs.
    fn last_reply(&self) -> (u8, Vec<(u8, String)>) {
        last_reply(&self.stdout)
    }

    fn rounds(&self) -> usize {
        self.stdout.matches("Received RADIUS message").count()
    }
}

fn eapol(server: &Server, scenario: &str, extra: &[&str]) -> EapolRun {
    EapolRun {
        stdout: eapol_test(server, pki_dir(), scenario, extra),
    }
}

fn assert_accept_with_vlan(run: &EapolRun) {
    assert_accept(run, "00313030");
}

fn assert_accept(run: &EapolRun, vlan_hex: &str) {
    assert!(run.success(), "expected SUCCESS:\n{}", run.stdout);
    assert!(run.mppe_ok(), "eapol_test's MPPE key check must pass");
    let (code, attrs) = run.last_reply();
    assert_eq!(code, 2, "Access-Accept");
    assert_eq!(attrs[0].0, 80, "Message-Authenticator first");
    let val = |t: u8| attrs.iter().find(|a| a.0 == t).map(|a| a.1.clone());
    assert_eq!(
        val(64).as_deref(),
        Some("0000000d"),
        "Tunnel-Type VLAN, tag 0"
    );
    assert_eq!(
        val(65).as_deref(),
        Some("00000006"),
        "Tunnel-Medium-Type IEEE-802"
    );
    assert_eq!(
        val(81).as_deref(),
        Some(vlan_hex),
        "Tunnel-Private-Group-Id"
    );
    assert_eq!(
        attrs
            .iter()
            .filter(|a| a.0 == 26 && a.1.starts_with("00000137"))
            .count(),
        2,
        "two MS-MPPE keys"
    );
}

fn assert_reject(run: &EapolRun) {
    assert!(!run.success(), "expected FAILURE:\n{}", run.stdout);
    let (code, attrs) = run.last_reply();
    assert_eq!(code, 3, "Access-Reject");
    assert_eq!(attrs[0].0, 80, "Message-Authenticator first");
    assert!(
        attrs.iter().any(|a| a.0 == 79 && a.1.starts_with("04")),
        "EAP-Failure"
    );
}

#[test]
fn tls12_ecdsa_device_is_accepted_with_vlan_and_keys() {
    let s = Server::start();
    let run = eapol(&s, "tls12-ecdsa", &[]);
    assert_accept_with_vlan(&run);
    s.wait_log(&[
        "outcome=\"accept\"",
        "tls=\"1.2\"",
        "cert.serial=",
        "identity=device-ecdsa",
    ]);
}

#[test]
fn tls12_rsa_device_is_accepted() {
    let s = Server::start();
    let run = eapol(&s, "tls12-rsa", &[]);
    assert_accept_with_vlan(&run);
    s.wait_log(&["outcome=\"accept\"", "tls=\"1.2\"", "identity=device-rsa"]);
}

#[test]
fn tls13_device_is_accepted() {
    let s = Server::start();
    let run = eapol(&s, "tls13-ecdsa", &[]);
    assert_accept_with_vlan(&run);
    s.wait_log(&["outcome=\"accept\"", "tls=\"1.3\""]);
}

#[test]
fn tls13_only_server_accepts_tls13_device() {
    let s = Server::start_with(|c| c.replace("[tls]\n", "[tls]\nversions = [\"1.3\"]\n"));
    let run = eapol(&s, "tls13-ecdsa", &[]);
    assert_accept_with_vlan(&run);
    s.wait_log(&["outcome=\"accept\"", "tls=\"1.3\""]);
}

#[test]
fn small_client_and_server_fragments_still_authenticate() {
    let s = Server::start();
    // Framed-MTU 200 makes the server fragment at 190 bytes; the client fragments at 200.
    let run = eapol(&s, "fragment-200", &["-N12:d:200"]);
    assert_accept_with_vlan(&run);
    assert!(
        run.rounds() >= 12,
        "small fragments mean many round trips, got {}",
        run.rounds()
    );
    s.wait_log(&["outcome=\"accept\""]);
}

#[test]
fn small_configured_server_fragment_size_is_honoured() {
    let s = Server::start_with(|c| c.replace("[tls]\n", "[tls]\nfragment_size = 100\n"));
    let run = eapol(&s, "tls12-ecdsa", &[]);
    assert_accept_with_vlan(&run);
    // Every EAP-Message the server sent fits a 100-byte fragment plus 10 header bytes.
    let biggest = run
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Attribute 79 (EAP-Message) length="))
        .map(|n| n.parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert!(biggest >= 100, "client flights are not limited");
    let server_sent: Vec<usize> = run
        .stdout
        .split("Received RADIUS message")
        .skip(1)
        .filter_map(|b| {
            b.lines()
                .find_map(|l| l.trim().strip_prefix("Attribute 79 (EAP-Message) length="))
        })
        .map(|n| n.parse::<usize>().unwrap())
        .collect();
    assert!(
        server_sent.iter().all(|n| *n <= 2 + 110),
        "server EAP-Messages: {server_sent:?}"
    );
    assert!(
        server_sent.len() >= 8,
        "many small server fragments: {server_sent:?}"
    );
}

#[test]
fn unknown_ca_is_rejected() {
    let s = Server::start();
    assert_reject(&eapol(&s, "unknown-ca", &[]));
    s.wait_log(&["outcome=\"reject\"", "reason=\"unknown_ca\""]);
}

#[test]
fn expired_certificate_is_rejected() {
    let s = Server::start();
    assert_reject(&eapol(&s, "expired", &[]));
    s.wait_log(&["outcome=\"reject\"", "reason=\"certificate_expired\""]);
}

#[test]
fn wrong_eku_is_rejected() {
    let s = Server::start();
    assert_reject(&eapol(&s, "wrong-eku", &[]));
    s.wait_log(&["outcome=\"reject\"", "reason=\"wrong_eku\""]);
}

/// Runs eapol-tests/run.sh against `server` with certificates from `certs`.
fn run_script(server: &Server, certs: &std::path::Path) -> std::process::Output {
    Command::new(repo().join("eapol-tests/run.sh"))
        .args(["127.0.0.1", &server.addr.port().to_string(), SECRET])
        .arg(certs)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The (verdict, scenario, got) columns of run.sh's report lines.
fn verdicts(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter(|l| l.contains(" expect="))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].to_owned(), f[3].to_owned())
        })
        .collect()
}

#[test]
fn runner_script_reports_every_scenario() {
    let s = Server::start();
    let out = run_script(&s, pki_dir());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runner failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<_> = verdicts(&text)
        .into_iter()
        .map(|(v, name, got)| format!("{v} {name} {got}"))
        .collect();
    assert_eq!(
        got,
        [
            "PASS expired got=reject",
            "PASS fragment-200 got=accept",
            "PASS policy-other-identity got=accept",
            "PASS tls12-ecdsa got=accept",
            "PASS tls12-rsa got=accept",
            "PASS tls13-ecdsa got=accept",
            "PASS unknown-ca got=reject",
            "PASS wrong-eku got=reject",
        ],
        "{text}"
    );
    assert!(text.contains("8 passed, 0 failed, 0 errors"), "{text}");
}

#[test]
fn runner_script_reports_a_run_without_an_outcome_as_an_error() {
    // A certificate directory that does not exist: eapol_test never runs. That is no
    // Access-Reject, so no scenario may pass, the reject ones included.
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(&s, &dir.path().join("missing"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let got = verdicts(&text);
    assert_eq!(got.len(), 8, "{text}");
    for (verdict, name, result) in &got {
        assert_eq!(
            (verdict.as_str(), result.as_str()),
            ("ERROR", "got=error"),
            "{name}: {text}"
        );
    }
    assert!(text.contains("0 passed, 0 failed, 8 errors"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expired: eapol_test exit status "),
        "{stderr}"
    );
}

#[test]
fn sighup_reload_refuses_a_broken_config_and_applies_a_good_one() {
    let s = Server::start();
    let good = std::fs::read_to_string(s.config_path()).unwrap();
    assert_accept_with_vlan(&eapol(&s, "tls12-ecdsa", &[]));

    std::fs::write(s.config_path(), good.replace("vlan = \"100\"", "vlan = ")).unwrap();
    s.hangup();
    let line = s.wait_log(&["reload refused", "anchord.toml:"]);
    let broken_line = good.lines().position(|l| l.starts_with("vlan")).unwrap() + 1;
    assert!(
        line.contains(&format!("anchord.toml:{broken_line}")),
        "{line}"
    );
    s.wait_log(&["keeping the running configuration"]);
    assert_accept_with_vlan(&eapol(&s, "tls12-ecdsa", &[]));

    std::fs::write(
        s.config_path(),
        good.replace("vlan = \"100\"", "vlan = \"200\""),
    )
    .unwrap();
    s.hangup();
    s.wait_log(&["configuration reloaded"]);
    assert_accept(&eapol(&s, "tls12-ecdsa", &[]), "00323030");
}

#[test]
fn tls12_only_device_is_rejected_by_a_tls13_only_server() {
    let s = Server::start_with(|c| c.replace("[tls]\n", "[tls]\nversions = [\"1.3\"]\n"));
    assert_reject(&eapol(&s, "tls12-ecdsa", &[]));
    let line = s.wait_log(&["outcome=\"reject\"", "reason=\"tls_incompatible\""]);
    assert!(line.contains("identity=device-ecdsa"), "{line}");
    // A TLS 1.2 ClientHello has no supported_versions extension: rustls says exactly that.
    assert!(
        line.contains("detail=\"TLS: peer is incompatible: SupportedVersionsExtensionRequired\""),
        "{line}"
    );
    assert!(!s.log().iter().any(|l| l.contains("outcome=\"accept\"")));
}

#[test]
fn device_certificate_not_yet_valid_is_rejected() {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    // From the dev issuing CA, valid from tomorrow: everything else about it is right.
    let pki = pki_dir();
    let ca_pem = std::fs::read_to_string(pki.join("issuing-ca.pem")).unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(pki.join("issuing-ca.key")).unwrap()).unwrap();
    let ca = CertificateParams::from_ca_cert_pem(&ca_pem)
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["device-future.test".to_owned()]).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "device-future");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(1);
    p.not_after = now + time::Duration::days(365);
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.join("root-ca.pem"), dir.path().join("root-ca.pem")).unwrap();
    std::fs::write(
        dir.path().join("device-ecdsa.pem"),
        format!("{}{ca_pem}", cert.pem()),
    )
    .unwrap();
    std::fs::write(dir.path().join("device-ecdsa.key"), key.serialize_pem()).unwrap();
    let s = Server::start();
    let run = EapolRun {
        stdout: eapol_test(&s, dir.path(), "tls12-ecdsa", &[]),
    };
    assert_reject(&run);
    s.wait_log(&[
        "outcome=\"reject\"",
        "reason=\"certificate_not_yet_valid\"",
        "identity=device-ecdsa",
    ]);
}
