//! SIGHUP swaps only what changed: a reload that leaves `[revocation]` alone keeps the OCSP
//! cache (a cached device is answered without asking the responder again), one that
//! changes it starts afresh; a reload that leaves `[pki]` alone keeps the token's logged-in
//! signing sessions. Each reload changes the VLAN, to show that it was taken.

use crate::harness::Server;
use crate::hsm::Token;
use crate::revocation::{auth, responder, responders, server};

/// Rewrites the running server's config file with `edit` and sends SIGHUP; waits until
/// the reload was taken (the `n`th "configuration reloaded" line).
pub(crate) fn reload(s: &Server, n: usize, edit: impl FnOnce(String) -> String) {
    let path = s.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let new = edit(text.clone());
    assert_ne!(new, text, "the edit changes the file");
    std::fs::write(&path, new).unwrap();
    s.hangup();
    s.wait_log_lines(&["configuration reloaded"], n);
}

#[test]
fn a_reload_that_leaves_revocation_alone_keeps_the_ocsp_cache() {
    let r = responder("ocsp-responder");
    let s = server(&responders(&[&r.url]));
    assert!(auth(&s, "device-ecdsa", "tls13-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "revocation=good (ocsp)"]);
    assert_eq!(r.count(), 1);

    reload(&s, 1, |c| c.replace("vlan = \"100\"", "vlan = \"200\""));
    assert!(auth(&s, "device-ecdsa", "tls13-ecdsa"));
    s.wait_log(&[
        "outcome=\"accept\"",
        "vlan=\"200\"",
        "revocation=good (cache)",
    ]);
    assert_eq!(r.count(), 1, "no new request to the responder");

    // Changing [revocation] builds a new checker: its cache starts empty.
    reload(&s, 2, |c| {
        c.replace("vlan = \"200\"", "vlan = \"300\"")
            .replace("timeout_ms = 1000", "timeout_ms = 1500")
    });
    assert!(auth(&s, "device-ecdsa", "tls13-ecdsa"));
    s.wait_log(&[
        "outcome=\"accept\"",
        "vlan=\"300\"",
        "revocation=good (ocsp)",
    ]);
    assert_eq!(r.count(), 2);
}

#[test]
fn a_reload_that_leaves_pki_alone_keeps_the_tokens_signing_sessions() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let s = t.serve();
    let opened = || {
        s.log()
            .iter()
            .filter(|l| l.contains("HSM signing session opened"))
            .count()
    };
    assert!(crate::hsm::eapol(&s, work.path(), "tls13-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "vlan=\"100\""]);
    assert_eq!(opened(), 1);

    reload(&s, 1, |c| c.replace("vlan = \"100\"", "vlan = \"200\""));
    assert!(crate::hsm::eapol(&s, work.path(), "tls13-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "vlan=\"200\""]);
    assert_eq!(opened(), 1, "the pooled session signed again: no new login");

    // Changing [pki] on the same module needs a restart: a second pool with its own
    // permits could finalise the module under the first one's signature.
    let path = s.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("vlan = \"200\"", "vlan = \"300\"")
            .replace("rotation_check_secs = 1", "rotation_check_secs = 2"),
    )
    .unwrap();
    s.hangup();
    s.wait_log(&[
        "reload refused",
        "pki.token",
        "restart anchord to apply the change",
    ]);
    assert!(crate::hsm::eapol(&s, work.path(), "tls13-ecdsa"));
    let accepts = s.wait_log_lines(&["outcome=\"accept\"", "vlan=\"200\""], 2);
    assert_eq!(accepts.len(), 2, "the running configuration stays");
    assert_eq!(opened(), 1);
}

#[test]
fn a_crl_replaced_before_a_sighup_counts_at_once_though_revocation_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let crl = crate::revocation::write_crl(dir.path(), &["1030"]);
    // Refreshed hourly: only the SIGHUP can make the new file count within the test.
    let s = server(&format!(
        "mode = \"crl\"\ncrl_files = [\"{}\"]\ncrl_refresh_secs = 3600\n",
        crl.display()
    ));
    assert!(auth(&s, "device-ecdsa", "tls13-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "revocation=good (crl)"]);
    // The CA revokes device-ecdsa (serial 1014) too; the admin reloads.
    crate::revocation::write_crl(dir.path(), &["1030", "1014"]);
    reload(&s, 1, |c| c.replace("vlan = \"100\"", "vlan = \"200\""));
    assert!(!auth(&s, "device-ecdsa", "tls13-ecdsa"));
    s.wait_log(&["reason=\"revoked\"", "identity=device-ecdsa"]);
}

#[test]
fn a_changed_pin_is_refused_by_a_reload_that_cannot_check_it() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let pin = work.path().join("hsm.pin");
    std::fs::write(&pin, format!("{}\n", crate::hsm::PIN)).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = t.serve_with(&format!("pin_file = \"{}\"\n", pin.display()));
    assert!(crate::hsm::eapol(&s, work.path(), "tls13-ecdsa"));
    // A wrong PIN: PKCS#11 would report the token already logged in, whatever the PIN.
    std::fs::write(&pin, "0000\n").unwrap();
    s.hangup();
    let refused = s.wait_log(&["reload refused", "pki.pin_file", "the PIN changed"]);
    assert!(!refused.contains("0000"), "{refused}");
    s.wait_log(&["reload refused: keeping the running configuration"]);
    assert!(
        crate::hsm::eapol(&s, work.path(), "tls13-ecdsa"),
        "still serving"
    );
}

#[test]
fn a_reload_that_keeps_the_pool_still_refuses_a_token_now_holding_a_ca_key() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let s = t.serve();
    assert!(crate::hsm::eapol(&s, work.path(), "tls13-ecdsa"));
    // Someone puts a CA key on the server token; the admin reloads for a VLAN change.
    t.import_key("anchord-issuing-ca", &[]);
    let path = s.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("vlan = \"100\"", "vlan = \"200\"")).unwrap();
    s.hangup();
    s.wait_log(&[
        "reload refused",
        "holds CA private keys (anchord-issuing-ca)",
    ]);
}
