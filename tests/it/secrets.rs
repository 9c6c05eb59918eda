//! Files holding secrets (shared secrets, the token PIN) that group or others may read are
//! reported by `anchord check` and warned about when the server starts.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use crate::harness::{pki_dir, Server};

fn secret_file(dir: &Path, name: &str, mode: u32) {
    let path = dir.join(name);
    std::fs::write(&path, "s3cret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn config(listen: &str) -> String {
    format!(
        r#"[server]
listen = ["{listen}"]

[tls]
certificate = "{pki}/server.pem"
private_key = "{pki}/server.key"
ca = ["{pki}/root-ca.pem"]

[[client]]
name = "tight"
address = "127.0.0.1"
secret_file = "tight.secret"

[[client]]
name = "loose"
address = "127.0.0.2"
secret_file = "loose.secret"
"#,
        pki = pki_dir().display()
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn check(path: &Path) -> (Option<i32>, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn check_reports_a_secret_file_others_can_read_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "tight.secret", 0o600);
    secret_file(dir.path(), "loose.secret", 0o644);
    let text = config("127.0.0.1:0");
    let path = dir.path().join("anchord.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, lines) = check(&path);
    assert_eq!(code, Some(0), "a warning, not an error: {lines:#?}");
    assert_eq!(
        lines,
        vec![
            format!(
                "warning: {}:{}: client[1].secret_file: {} is readable by group or others \
                 (mode 0644): chmod 600 it",
                path.display(),
                line_of(&text, "loose.secret"),
                dir.path().join("loose.secret").display()
            ),
            format!("{}: OK (2 client(s), listen 127.0.0.1:0)", path.display()),
            "no [policy]: every device gets [authorization] vlan".to_owned(),
        ]
    );
}

#[test]
fn check_reports_a_group_readable_pin_file_even_when_the_token_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "pin", 0o640);
    let text = "[pki]\npin_file = \"pin\"\ntoken = \"no-such-token\"\n\n[[client]]\nname = \"n\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n";
    let path = dir.path().join("anchord.toml");
    std::fs::write(&path, text).unwrap();
    let (code, lines) = check(&path);
    assert_eq!(code, Some(1), "{lines:#?}");
    assert_eq!(
        lines.first().unwrap(),
        &format!(
            "warning: {}:2: pki.pin_file: {} is readable by group or others (mode 0640): \
             chmod 600 it",
            path.display(),
            dir.path().join("pin").display()
        )
    );
}

#[test]
fn server_warns_at_startup_about_a_readable_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "tight.secret", 0o600);
    secret_file(dir.path(), "loose.secret", 0o604);
    // Paths in the config are relative to its folder, which start_config chooses: absolute.
    let text = config("127.0.0.1:0")
        .replace(
            "\"tight.secret\"",
            &format!("\"{}\"", dir.path().join("tight.secret").display()),
        )
        .replace(
            "\"loose.secret\"",
            &format!("\"{}\"", dir.path().join("loose.secret").display()),
        );
    let s = Server::start_config(&text, &[]);
    let line = s.wait_log(&["WARN", "configuration warning", "client[1].secret_file"]);
    assert!(line.contains("(mode 0604): chmod 600 it"), "{line}");
    assert!(
        !s.log().iter().any(|l| l.contains("tight.secret")),
        "{:#?}",
        s.log()
    );
}
