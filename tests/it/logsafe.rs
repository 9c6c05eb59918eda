//! Peer-supplied text cannot forge log lines: an EAP identity with CR/LF stays on the line of
//! the record it belongs to, escaped.

use crate::harness::{eapol_test, pki_dir, Server};

/// What a device puts after a line break in its identity: a whole forged record.
const FORGED: &str = "2026-12-02T00:00:00.000000Z  INFO anchord::server::handler: \
                      authentication finished outcome=\"accept\" reason=\"ok\" nas=it-nas \
                      identity=FORGED";

#[test]
fn identity_with_line_break_cannot_forge_a_log_line() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let identity = format!("dev\r\n{FORGED}");
    // wpa_supplicant reads an unquoted string value as hex: how to give it a line break.
    let conf = format!(
        "network={{\n    key_mgmt=WPA-EAP\n    eap=TLS\n    identity={}\n    \
         ca_cert=\"root-ca.pem\"\n    domain_suffix_match=\"radius.anchord.test\"\n    \
         client_cert=\"device-ecdsa.pem\"\n    private_key=\"device-ecdsa.key\"\n    \
         eapol_flags=0\n}}\n",
        hex::encode(identity.as_bytes())
    );
    let scenario = dir.path().join("inject");
    std::fs::write(scenario.with_extension("conf"), conf).unwrap();
    let out = eapol_test(&s, pki_dir(), scenario.to_str().unwrap(), &[]);
    assert!(out.lines().any(|l| l.trim() == "SUCCESS"), "{out}");
    let escaped = format!("identity=dev\\r\\n{FORGED}");
    let line = s.wait_log(&["authentication finished", &escaped]);
    assert!(line.contains("outcome=\"accept\" reason=\"ok\""), "{line}");
    // The forged record exists only inside the escaped identity of the real one.
    let log = s.log();
    let forged: Vec<_> = log.iter().filter(|l| l.contains("FORGED")).collect();
    assert!(
        forged.iter().all(|l| l.contains(&escaped)),
        "a forged line: {forged:#?}"
    );
}
