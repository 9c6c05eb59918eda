//! The README's demo, both ways: `anchord demo` with the server key in files and on a
//! SoftHSM2 token (what demo.sh runs). Every device must get its expected answer.

use std::process::{Command, Stdio};

fn demo(hsm: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchord"));
    cmd.args(["demo", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null());
    if hsm {
        let tokens = dir.path().join("softhsm/tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm/softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\n",
                tokens.display()
            ),
        )
        .unwrap();
        cmd.arg("--hsm")
            .env("SOFTHSM2_CONF", &conf)
            .env("ANCHORD_HSM_PIN", "demo-pin")
            .env("ANCHORD_CA_PIN", "demo-ca-pin")
            .env("ANCHORD_HSM_SO_PIN", "demo-so-pin");
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn assert_table(text: &str) {
    assert!(
        text.contains("every device got the expected answer"),
        "{text}"
    );
    for (scenario, result, reason) in [
        ("tls12-ecdsa", "accept", "ok"),
        ("tls13-ecdsa", "accept", "ok"),
        ("expired", "reject", "certificate_expired"),
        ("wrong-eku", "reject", "wrong_eku"),
        ("unknown-ca", "reject", "unknown_ca"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[3], result, "{line}");
        assert_eq!(cols.last().copied(), Some(reason), "{line}");
    }
    // The example policy decides: VLAN and rule per device.
    for (scenario, vlan, rule) in [
        ("tls13-ecdsa", "100", "staff"),
        ("tls12-rsa", "200", "iot"),
        ("policy-other-identity", "999", "default"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{scenario} ")))
            .unwrap_or_else(|| panic!("{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[5], cols[7]), (vlan, rule), "{line}");
    }
}

#[test]
fn demo_with_file_keys_gives_every_device_its_answer() {
    assert_table(&demo(false));
}

#[test]
fn demo_on_the_hsm_path_gives_every_device_its_answer() {
    let text = demo(true);
    // Two tokens: the server's holds its key and nothing else, as its own login sees it.
    assert!(
        text.contains("CA token: `ca-anchord-demo` (root and issuing CA keys;"),
        "{text}"
    );
    assert!(
        text.contains("server token: `anchord-demo` (server key only: private keys seen with the server's PIN: anchord-server@1; read-only sessions)"),
        "{text}"
    );
    assert_table(&text);
}
