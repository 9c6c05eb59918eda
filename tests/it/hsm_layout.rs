//! The token layout `anchord pki init` makes: the CA keys on a CA token with its own PIN, the
//! server's TLS key alone on the server token, which the server uses through read-only
//! sessions without ever being given the CA PIN; keys restricted to the mechanisms anchord
//! signs with (and SoftHSM2 enforcing it); `check` refusing a [pki] token holding CA keys.

use std::process::Command;

use crate::harness::{Server, SECRET};
use crate::hsm::{eapol, Token, CA_PIN, MODULE, PIN, SO_PIN};

/// Private key labels on a token as OpenSC's pkcs11-tool lists them, logged in with `pin`.
fn private_keys(t: &Token, label: &str, pin: &str) -> Vec<String> {
    let out = t.pkcs11_tool_on(label, pin, &["--list-objects", "--type", "privkey"]);
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut labels: Vec<String> = text
        .split("Private Key Object")
        .skip(1)
        .map(|o| {
            o.lines()
                .find_map(|l| l.trim().strip_prefix("label:"))
                .unwrap_or_else(|| panic!("{text}"))
                .trim()
                .to_owned()
        })
        .collect();
    labels.sort();
    labels
}

/// The server with exactly these environment variables (plus the test process's own, which
/// holds no anchord PIN: checked).
fn serve_with_server_pin_only(t: &Token) -> Server {
    assert!(std::env::var_os("ANCHORD_CA_PIN").is_none());
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[pki]\ntoken = \"anchord\"\nrotation_check_secs = 1\n\n[authorization]\nvlan = \"100\"\n\n[[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n"
    );
    let conf = t.conf();
    Server::start_config(
        &config,
        &[("SOFTHSM2_CONF", conf.as_str()), ("ANCHORD_HSM_PIN", PIN)],
    )
}

#[test]
fn server_token_holds_only_the_server_key_and_its_pin_opens_nothing_else() {
    let t = Token::new();
    t.ok(&["pki", "init"]);
    // With the server's PIN, the server token shows one private key: the server's.
    assert_eq!(private_keys(&t, "anchord", PIN), ["anchord-server@1"]);
    // The CA keys are on the CA token, behind another PIN.
    assert_eq!(
        private_keys(&t, "ca-anchord", CA_PIN),
        ["anchord-issuing-ca", "anchord-root-ca"]
    );
    let refused = t.pkcs11_tool_on("ca-anchord", PIN, &["--list-objects"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("CKR_PIN_INCORRECT"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The server's chain and trust anchor are public objects on the server token: readable
    // without any login.
    let public = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            "anchord",
            "--list-objects",
        ])
        .env("SOFTHSM2_CONF", t.conf())
        .output()
        .unwrap();
    let public = String::from_utf8_lossy(&public.stdout);
    for label in ["anchord-root-ca", "anchord-issuing-ca", "anchord-server@1"] {
        assert!(
            public.contains(&format!(
                "Certificate Object; type = X.509 cert\n  label:      {label}\n"
            )),
            "{public}"
        );
    }
    assert!(!public.contains("Private Key Object"), "{public}");
}

#[test]
fn server_signs_through_read_only_sessions_without_the_ca_pin() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let s = serve_with_server_pin_only(&t);
    assert!(eapol(&s, work.path(), "tls12-ecdsa"), "TLS 1.2");
    // The access the token reports for the server's signing session (C_GetSessionInfo).
    s.wait_log(&[
        "hsm_session",
        "key=anchord-server@1",
        "token=anchord ",
        "access=\"read-only\"",
    ]);
    assert!(
        !s.log().iter().any(|l| l.contains("read-write")),
        "{:#?}",
        s.log()
    );
    // A rotation made by the CA's custodian (both PINs) reaches the server, which still
    // has only its own.
    let out = t.ok(&["pki", "rotate-server"]);
    assert!(
        out.starts_with(
            "new server key and certificate `anchord-server@2` on server token `anchord`"
        ),
        "{out}"
    );
    s.wait_log(&["server key rotated", "key=anchord-server@2"]);
    assert!(eapol(&s, work.path(), "tls13-ecdsa"), "TLS 1.3");
    s.wait_log(&[
        "hsm_session",
        "key=anchord-server@2",
        "access=\"read-only\"",
    ]);
    s.wait_log(&["hsm_sign", "key=anchord-server@2", "result=\"ok\""]);
    assert_eq!(
        private_keys(&t, "anchord", PIN),
        ["anchord-server@1", "anchord-server@2"]
    );
}

#[test]
fn keys_may_use_only_their_mechanisms_and_the_token_enforces_it() {
    let t = Token::new();
    t.ok(&["pki", "init"]);
    for (label, pin) in [("anchord", PIN), ("ca-anchord", CA_PIN)] {
        let out = t.pkcs11_tool_on(label, pin, &["--list-objects", "--type", "privkey"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let keys = text.matches("Private Key Object").count();
        assert!(keys > 0, "{text}");
        assert_eq!(
            text.matches("  Allowed mechanisms: ECDSA\n").count(),
            keys,
            "{text}"
        );
    }
    let data = t.dir.path().join("data");
    std::fs::write(&data, [0x5A; 32]).unwrap();
    let sig = t.dir.path().join("sig");
    let sign = |mechanism: &str| {
        t.pkcs11_tool(&[
            "--sign",
            "--label",
            "anchord-server@1",
            "--mechanism",
            mechanism,
            "--input-file",
            data.to_str().unwrap(),
            "--output-file",
            sig.to_str().unwrap(),
        ])
    };
    let allowed = sign("ECDSA");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // A mechanism the key was not made for: SoftHSM2 refuses it at C_SignInit.
    let refused = sign("ECDSA-SHA256");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("C_SignInit failed: rv = CKR_MECHANISM_INVALID"),
        "{err}"
    );
    // anchord's own view agrees.
    let status = t.ok(&["pki", "status"]);
    for label in ["anchord-root-ca", "anchord-issuing-ca", "anchord-server@1"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(label) && l.contains("sign only"))
            .unwrap_or_else(|| panic!("{status}"));
        assert!(line.ends_with(" CKM_ECDSA"), "{line}");
    }
}

#[test]
fn rsa_keys_allow_pss_and_pkcs1_for_tls_and_pkcs1_for_certificates() {
    let t = Token::new();
    t.ok(&["pki", "init", "--key-type", "rsa-2048"]);
    let status = t.ok(&["pki", "status"]);
    for (label, allowed) in [
        ("anchord-root-ca", " CKM_SHA256_RSA_PKCS"),
        ("anchord-issuing-ca", " CKM_SHA256_RSA_PKCS"),
        (
            "anchord-server@1",
            " CKM_SHA256_RSA_PKCS,CKM_SHA256_RSA_PKCS_PSS",
        ),
    ] {
        let line = status
            .lines()
            .find(|l| l.starts_with(label) && l.contains("sign only"))
            .unwrap_or_else(|| panic!("{status}"));
        assert!(line.ends_with(allowed), "{line}");
    }
}

#[test]
fn check_and_serve_refuse_a_pki_token_that_holds_ca_keys() {
    let t = Token::new();
    t.ok(&["pki", "init"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("anchord.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[pki]\npin_env = \"ANCHORD_CA_PIN\"\ntoken = \"ca-anchord\"\n\n[[client]]\nname = \"n\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n",
    )
    .unwrap();
    let expected = "anchord.toml:6: pki.token: token `ca-anchord` holds CA private keys \
                    (anchord-issuing-ca, anchord-root-ca): the server must log into a token \
                    with only its own key";
    let out = t.anchord(&["check", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(expected), "{stdout}");
    assert!(stdout.ends_with("\n1 error(s)\n"), "{stdout}");
    let out = t.anchord(&["serve", "--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    // The server token passes.
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[pki]\ntoken = \"anchord\"\n\n[[client]]\nname = \"n\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n",
    )
    .unwrap();
    let out = t.anchord(&["check", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
}

#[test]
fn init_refuses_one_token_for_both_roles() {
    let t = Token::new();
    let out = t.anchord(&["pki", "init", "--ca-token", "anchord"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the CA and the server need separate tokens (both are `anchord`)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rotate_server_moves_the_server_to_a_new_token_signed_by_the_same_ca() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    // A new server token, created by rotate-server (SO PIN in the environment), with its
    // own PIN; the CA token is unchanged.
    let out = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args([
            "pki",
            "rotate-server",
            "--token",
            "radius-2",
            "--pin-env",
            "NEW_SERVER_PIN",
        ])
        .env("SOFTHSM2_CONF", t.conf())
        .env("ANCHORD_CA_PIN", CA_PIN)
        .env("ANCHORD_HSM_SO_PIN", SO_PIN)
        .env("NEW_SERVER_PIN", "2468")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(private_keys(&t, "radius-2", "2468"), ["anchord-server@1"]);
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[pki]\ntoken = \"radius-2\"\npin_env = \"NEW_SERVER_PIN\"\n\n[authorization]\nvlan = \"100\"\n\n[[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n"
    );
    let conf = t.conf();
    let s = Server::start_config(
        &config,
        &[("SOFTHSM2_CONF", conf.as_str()), ("NEW_SERVER_PIN", "2468")],
    );
    // The device issued before the move still authenticates: same CA.
    assert!(eapol(&s, work.path(), "tls12-ecdsa"));
    s.wait_log(&["hsm_sign", "token=radius-2", "result=\"ok\""]);
}

#[test]
fn check_refuses_a_server_token_that_also_holds_a_ca_key() {
    // The shape of a token made before the split: the server key with a CA key beside it.
    let t = Token::new();
    t.ok(&["pki", "init"]);
    t.import_key("anchord-issuing-ca", &[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("anchord.toml");
    std::fs::write(
        &cfg,
        "[pki]\ntoken = \"anchord\"\n\n[[client]]\nname = \"n\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n",
    )
    .unwrap();
    let out = t.anchord(&["check", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "anchord.toml:2: pki.token: token `anchord` holds CA private keys \
             (anchord-issuing-ca): the server must log into a token with only its own key"
        ),
        "{stdout}"
    );
    // With `token` left to its default, the error points at the [pki] line.
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[pki]\nsessions = 2\n\n[[client]]\nname = \"n\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n",
    )
    .unwrap();
    let out = t.anchord(&["check", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("anchord.toml:4: pki.token: token `anchord` holds CA private keys"),
        "{stdout}"
    );
}
