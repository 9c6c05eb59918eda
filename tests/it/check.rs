//! `anchord check` on the shipped example and on broken configs: every error reported,
//! each with file, line and key, exit status 1.

use std::path::Path;
use std::process::Command;

use crate::harness::{pki_dir, repo};

/// Copies the shipped example into a temp dir with the PKI and secret files it names.
fn example_setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("config/anchord.toml"))
        .unwrap()
        .replace(
            "dir = \"../policies\"",
            &format!("dir = \"{}\"", repo().join("policies").display()),
        )
        .replace(
            "dictionary = \"../dictionaries/dictionary\"",
            &format!(
                "dictionary = \"{}\"",
                repo().join("dictionaries/dictionary").display()
            ),
        );
    assert!(
        text.contains(&repo().join("policies").display().to_string()),
        "the example's [policy] names ../policies"
    );
    std::fs::create_dir(dir.path().join("pki")).unwrap();
    for f in ["server.pem", "server.key", "root-ca.pem"] {
        std::fs::copy(pki_dir().join(f), dir.path().join("pki").join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    for f in [
        "wlc-campus.secret",
        "lab-switch.secret",
        "intune-client.secret",
    ] {
        let path = dir.path().join("secrets").join(f);
        std::fs::write(&path, "s3cret\n").unwrap();
        // As an admin keeps them (others' read access is warned about, secrets.rs).
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    (dir, text)
}

fn check(dir: &Path, text: &str) -> (bool, String) {
    let path = dir.join("anchord.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn shipped_example_config_is_valid() {
    let (dir, text) = example_setup();
    let (ok, out) = check(dir.path(), &text);
    assert!(ok, "{out}");
    assert!(out.contains("OK (2 client(s)"), "{out}");
}

#[test]
fn unknown_key_in_every_table_is_refused_with_its_line() {
    for table in ["[server]", "[tls]", "[policy]", "[[client]]"] {
        let (dir, text) = example_setup();
        let broken = text.replacen(
            &format!("{table}\n"),
            &format!("{table}\nbogus_key = 1\n"),
            1,
        );
        assert_ne!(broken, text);
        let (ok, out) = check(dir.path(), &broken);
        assert!(!ok, "{table}: {out}");
        let line = line_of(&broken, "bogus_key");
        assert!(
            out.contains(&format!("anchord.toml:{line}")),
            "{table}: {out}"
        );
        assert!(out.contains("unknown field `bogus_key`"), "{out}");
    }
}

#[test]
fn every_bad_value_is_reported_at_once_with_file_line_and_key() {
    let (dir, text) = example_setup();
    let broken = text
        .replace("\"0.0.0.0:1812\"", "\"0.0.0.0\"")
        .replace("\"192.0.2.0/24\"", "\"192.0.2.300/24\"")
        .replace("fragment_size = 1024", "fragment_size = 9000")
        .replace("receive_buffer_kib = 4096", "receive_buffer_kib = 16")
        .replace("secrets/lab-switch.secret", "secrets/missing.secret");
    let (ok, out) = check(dir.path(), &broken);
    assert!(!ok);
    let expect = [
        (line_of(&broken, "listen = "), "server.listen[0]"),
        (line_of(&broken, "192.0.2.300"), "client[0].address"),
        (
            line_of(&broken, "fragment_size = 9000"),
            "tls.fragment_size",
        ),
        (
            line_of(&broken, "receive_buffer_kib = 16"),
            "server.receive_buffer_kib",
        ),
        (line_of(&broken, "missing.secret"), "client[1].secret_file"),
    ];
    for (line, key) in expect {
        assert!(
            out.contains(&format!("anchord.toml:{line}: {key}:")),
            "{key} at {line}:\n{out}"
        );
    }
    assert!(out.contains("5 error(s)"), "{out}");
}

#[test]
fn missing_certificate_file_is_named() {
    let (dir, text) = example_setup();
    let broken = text.replace("pki/server.pem", "pki/nope.pem");
    let (ok, out) = check(dir.path(), &broken);
    assert!(!ok);
    let line = line_of(&broken, "certificate = \"pki/nope.pem\"");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            format!(
                "{d}/anchord.toml:{line}: tls.certificate: {d}/pki/nope.pem: I/O error: No such file or directory (os error 2)",
                d = dir.path().display()
            ),
            "1 error(s)".to_owned(),
        ],
        "{out}"
    );
}

#[test]
fn key_that_does_not_match_the_certificate_is_refused() {
    let (dir, text) = example_setup();
    std::fs::copy(
        pki_dir().join("device-ecdsa.key"),
        dir.path().join("pki/other.key"),
    )
    .unwrap();
    let broken = text.replace("pki/server.key", "pki/other.key");
    let (ok, out) = check(dir.path(), &broken);
    assert!(!ok, "{out}");
    // Reported at the certificate line: rustls compares the two when building the config.
    let line = line_of(&broken, "certificate = \"pki/server.pem\"");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            format!(
                "{}:{line}: tls: certificate, key or CA refused: keys may not be consistent: KeyMismatch",
                dir.path().join("anchord.toml").display()
            ),
            "1 error(s)".to_owned(),
        ],
        "{out}"
    );
}

#[test]
fn shipped_dictionaries_load_from_disk_and_broken_ones_are_refused_with_their_line() {
    // The example names the shipped dictionary folder (example_setup points it here).
    let (dir, text) = example_setup();
    let shipped = repo().join("dictionaries/dictionary");
    let named = format!("dictionary = \"{}\"", shipped.display());
    assert!(text.contains(&named), "{text}");
    let (ok, out) = check(dir.path(), &text);
    assert!(ok, "{out}");

    std::fs::write(
        dir.path().join("site.dict"),
        "# site\nATTRIBUTE Site-Thing 250 integer\nATTRIBUTE Broken 251 nonsense\n",
    )
    .unwrap();
    let broken = text.replace(&named, "dictionary = \"site.dict\"");
    let (ok, out) = check(dir.path(), &broken);
    assert!(!ok);
    let line = line_of(&broken, "dictionary = ");
    assert!(
        out.contains(&format!("anchord.toml:{line}: server.dictionary:")),
        "{out}"
    );
    assert!(
        out.contains("site.dict:3: unknown type `nonsense`"),
        "{out}"
    );
}
