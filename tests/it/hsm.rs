//! The HSM path with a real SoftHSM2 token per test (its own SOFTHSM2_CONF in a temp dir):
//! keys made on the token and never extractable (checked with OpenSC's pkcs11-tool too),
//! eapol_test with the server key on the token for TLS 1.2 and 1.3, issued devices,
//! foreign CAs, wrong PIN, key rotation, and a token that disappears and comes back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{eapol_test, pki_dir, Server, SECRET};

pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The server token's PIN (what `[pki]` is given).
pub(crate) const PIN: &str = "1234";
/// The CA token's PIN: never given to the server.
pub(crate) const CA_PIN: &str = "4321";
pub(crate) const SO_PIN: &str = "5678";

pub(crate) struct Token {
    pub(crate) dir: tempfile::TempDir,
}

impl Token {
    /// An empty SoftHSM2 token directory; `anchord pki init` creates the token in it.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    pub(crate) fn conf(&self) -> String {
        self.dir.path().join("softhsm2.conf").display().to_string()
    }

    pub(crate) fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf()),
            ("ANCHORD_HSM_PIN", PIN.into()),
            ("ANCHORD_CA_PIN", CA_PIN.into()),
            ("ANCHORD_HSM_SO_PIN", SO_PIN.into()),
        ]
    }

    pub(crate) fn anchord(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_anchord"))
            .args(args)
            .envs(self.envs())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.anchord(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pki init`, then a device issued from the token and the CA exported, in `out`.
    pub(crate) fn init_with_device(&self, out: &Path, device: &str) {
        self.ok(&["pki", "init"]);
        let out_s = out.display().to_string();
        self.ok(&["pki", "issue", "--device", device, "--out", &out_s]);
        self.ok(&["pki", "export-ca", "--out", &out_s]);
    }

    /// OpenSC's pkcs11-tool, logged in to the server token.
    pub(crate) fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.pkcs11_tool_on("anchord", PIN, args)
    }

    /// OpenSC's pkcs11-tool, logged in to the token labelled `label`.
    pub(crate) fn pkcs11_tool_on(&self, label: &str, pin: &str, args: &[&str]) -> Output {
        Command::new("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                label,
                "--login",
                "--pin",
                pin,
            ])
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap()
    }

    /// Writes device-ecdsa's private key onto the server token under `label`, with
    /// pkcs11-tool's `extra` attribute options (as an admin or an old layout might have).
    pub(crate) fn import_key(&self, label: &str, extra: &[&str]) {
        let der = self.dir.path().join(format!("{label}.der"));
        let conv = Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(pki_dir().join("device-ecdsa.key"))
            .args(["-outform", "DER", "-out"])
            .arg(&der)
            .status()
            .unwrap();
        assert!(conv.success());
        let mut args = vec![
            "--write-object",
            der.to_str().unwrap(),
            "--type",
            "privkey",
            "--label",
            label,
        ];
        args.extend_from_slice(extra);
        let import = self.pkcs11_tool(&args);
        assert!(
            import.status.success(),
            "{}",
            String::from_utf8_lossy(&import.stderr)
        );
    }

    pub(crate) fn tokens_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// SoftHSM2's folder of the token labelled `label`.
    pub(crate) fn token_dir(&self, label: &str) -> PathBuf {
        std::fs::read_dir(self.tokens_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|d| {
                // The label attribute: its length (32, as a 64-bit number), then the label
                // padded with spaces to 32 bytes.
                let mut field = vec![0, 0, 0, 0, 0, 0, 0, 0x20];
                field.extend_from_slice(format!("{label:<32}").as_bytes());
                let obj = std::fs::read(d.join("token.object")).unwrap_or_default();
                obj.windows(field.len()).any(|w| w == field)
            })
            .unwrap_or_else(|| panic!("no token folder for `{label}`"))
    }

    pub(crate) fn serve(&self) -> Server {
        self.serve_with("rotation_check_secs = 1\n")
    }

    /// Serves with the server key on this token; `pki` is the body of the [pki] table.
    pub(crate) fn serve_with(&self, pki: &str) -> Server {
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[pki]\n{pki}\n[authorization]\nvlan = \"100\"\n\n[[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n"
        );
        let envs = self.envs();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start_config(&config, &envs)
    }
}

/// Runs an eapol-tests scenario from `dir`; true on SUCCESS with eapol_test's MPPE check passing.
pub(crate) fn eapol(server: &Server, dir: &Path, scenario: &str) -> bool {
    let text = eapol_test(server, dir, scenario, &[]);
    let success = text.lines().any(|l| l.trim() == "SUCCESS");
    assert!(
        !success || text.contains("MPPE keys OK: 1  mismatch: 0"),
        "MPPE check"
    );
    success
}

#[test]
fn init_makes_sensitive_never_extractable_sign_only_keys() {
    let t = Token::new();
    let out = t.ok(&["pki", "init"]);
    assert!(
        out.contains("made on CA token `ca-anchord` (keys sensitive, non-extractable, sign only): anchord-root-ca, anchord-issuing-ca\n"),
        "{out}"
    );
    assert!(
        out.contains("made on server token `anchord` (server key only; CA certificates as public objects): anchord-server@1\n"),
        "{out}"
    );
    // OpenSC's view of both tokens, independent of anchord's code.
    let mut listing = String::new();
    for (label, pin) in [("ca-anchord", CA_PIN), ("anchord", PIN)] {
        let out = t.pkcs11_tool_on(label, pin, &["--list-objects", "--type", "privkey"]);
        assert!(out.status.success(), "{label}");
        listing += &String::from_utf8_lossy(&out.stdout);
    }
    assert_eq!(
        listing.matches("Private Key Object; EC").count(),
        3,
        "{listing}"
    );
    assert_eq!(
        listing.matches("Usage:      sign\n").count(),
        3,
        "{listing}"
    );
    assert_eq!(
        listing
            .matches("sensitive, always sensitive, never extractable, local")
            .count(),
        3,
        "{listing}"
    );
    // anchord asks the token for each key's value; the token must refuse.
    let status = t.ok(&["pki", "status"]);
    for label in ["anchord-root-ca", "anchord-issuing-ca", "anchord-server@1"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(label) && l.contains("sign only"))
            .unwrap_or_else(|| panic!("{status}"));
        assert!(
            line.contains("yes") && line.contains("never") && line.contains("refused by the token"),
            "{line}"
        );
    }
    // A second init refuses rather than replacing the CA.
    let again = t.anchord(&["pki", "init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds an anchord CA"));
}

#[test]
fn status_flags_an_extractable_key() {
    let t = Token::new();
    t.ok(&["pki", "init"]);
    // Import a key the way a careless admin might: extractable and not sensitive.
    t.import_key("weak-key", &["--extractable", "--usage-decrypt"]);
    let status = t.ok(&["pki", "status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("weak-key"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        line.contains("YES") && line.contains("SIGN+OTHER"),
        "{line}"
    );
}

#[test]
fn eapol_test_passes_tls12_and_tls13_with_the_server_key_on_the_token() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let s = t.serve();
    assert!(eapol(&s, work.path(), "tls12-ecdsa"), "TLS 1.2");
    s.wait_log(&[
        "outcome=\"accept\"",
        "tls=\"1.2\"",
        "cert.issuer=CN=anchord issuing CA",
    ]);
    assert!(eapol(&s, work.path(), "tls13-ecdsa"), "TLS 1.3");
    s.wait_log(&["outcome=\"accept\"", "tls=\"1.3\""]);
    s.wait_log(&[
        "hsm_sign",
        "key=anchord-server@1",
        "result=\"ok\"",
        "duration_us=",
    ]);
}

#[test]
fn device_from_a_ca_not_on_the_token_is_rejected() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "unused");
    // The file-based dev PKI's device: its CA is not on the token.
    for ext in ["pem", "key"] {
        std::fs::copy(
            pki_dir().join(format!("device-ecdsa.{ext}")),
            work.path().join(format!("device-unknown-ca.{ext}")),
        )
        .unwrap();
    }
    let s = t.serve();
    assert!(!eapol(&s, work.path(), "unknown-ca"));
    s.wait_log(&["outcome=\"reject\"", "reason=\"unknown_ca\""]);
}

#[test]
fn wrong_pin_and_missing_token_are_refused_by_check_and_serve() {
    let t = Token::new();
    t.ok(&["pki", "init"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("anchord.toml");
    let cfg_s = cfg.display().to_string();
    std::fs::write(dir.path().join("pin"), "9999\n").unwrap();
    std::fs::set_permissions(
        dir.path().join("pin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let text = "[pki]\npin_file = \"pin\"\n\n[[client]]\nname = \"n\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n";
    let cases = [
        (
            text.to_owned(),
            format!("{cfg_s}:2: pki.pin_file: login to token `anchord` failed: "),
            "(wrong PIN?)",
        ),
        (
            text.replace("[pki]\n", "[pki]\ntoken = \"nope\"\n"),
            format!("{cfg_s}:2: pki.token: no token labelled `nope` "),
            "(is the token present and initialised?)",
        ),
    ];
    for (config, at, hint) in cases {
        std::fs::write(&cfg, &config).unwrap();
        let out = t.anchord(&["check", "--config", &cfg_s]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert!(
            lines[0].starts_with(&at) && lines[0].ends_with(hint),
            "{stdout}"
        );
        assert_eq!(lines[1], "1 error(s)");
        // `serve` refuses to start the same way: the error with file and line, exit 1.
        let (code, stderr) = serve_until_exit(&t, &cfg);
        assert_eq!(code, Some(1), "{stderr}");
        let line = format!("anchord: {at}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&line) && l.ends_with(hint)),
            "{stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

/// Runs `anchord serve` with `cfg`, expecting it to exit by itself within 30 s; returns its
/// exit code and standard error.
fn serve_until_exit(t: &Token, cfg: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args(["serve", "--config"])
        .arg(cfg)
        .envs(t.envs())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve kept running with a config it cannot use");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn rotated_server_key_is_picked_up_without_restart() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let s = t.serve();
    assert!(eapol(&s, work.path(), "tls12-ecdsa"));
    let out = t.ok(&["pki", "rotate-server"]);
    assert!(out.contains("anchord-server@2"), "{out}");
    s.wait_log(&["server key rotated", "key=anchord-server@2"]);
    assert!(eapol(&s, work.path(), "tls13-ecdsa"));
    s.wait_log(&["hsm_sign", "key=anchord-server@2", "result=\"ok\""]);
}

#[test]
fn token_that_disappears_fails_closed_and_is_found_again() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let s = t.serve();
    assert!(eapol(&s, work.path(), "tls12-ecdsa"));
    let away = t.dir.path().join("tokens.away");
    std::fs::rename(t.tokens_dir(), &away).unwrap();
    assert!(
        !eapol(&s, work.path(), "tls12-ecdsa"),
        "no signature, no Accept"
    );
    s.wait_log(&["hsm_sign", "result=\"error\""]);
    s.wait_log(&["outcome=\"reject\"", "reason=\"hsm_unavailable\""]);
    std::fs::rename(&away, t.tokens_dir()).unwrap();
    // The server finds the token again by itself (module re-initialised), within seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !eapol(&s, work.path(), "tls12-ecdsa") {
        assert!(
            Instant::now() < deadline,
            "token came back but authentications still fail"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    s.wait_log(&["re-initialised"]);
}

/// Clones a SoftHSM2 token under another label and serial: what an HSM cluster's replica is,
/// the same keys on another token.
fn clone_token(t: &Token, from: &str, to: &str) {
    assert_eq!(from.len(), to.len(), "labels are patched in place");
    let src = t.token_dir(from);
    let dst = t.tokens_dir().join("replica");
    std::fs::create_dir(&dst).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
    }
    let obj = dst.join("token.object");
    let mut bytes = std::fs::read(&obj).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap();
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    // The serial: 16 hex digits; SoftHSM2 refuses two tokens with one serial.
    let serial = bytes
        .windows(16)
        .position(|w| w.iter().all(u8::is_ascii_hexdigit))
        .unwrap();
    bytes[serial + 15] = if bytes[serial + 15] == b'0' {
        b'1'
    } else {
        b'0'
    };
    std::fs::write(&obj, bytes).unwrap();
}

#[test]
fn signing_fails_over_to_the_next_token_with_the_same_key() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().display().to_string();
    t.ok(&["pki", "init", "--token", "anchord-a"]);
    // Devices come from the CA token, whichever server token the server uses.
    t.ok(&["pki", "issue", "--device", "device-ecdsa", "--out", &out]);
    t.ok(&["pki", "export-ca", "--token", "anchord-a", "--out", &out]);
    clone_token(&t, "anchord-a", "anchord-b");
    let s = t.serve_with("token = \"anchord-a\"\nfallback = [{ token = \"anchord-b\" }]\n");
    assert!(eapol(&s, work.path(), "tls12-ecdsa"));
    s.wait_log(&["hsm_sign", "token=anchord-a", "result=\"ok\""]);
    // Token a goes away; the replica signs, and no device is turned away for it.
    std::fs::remove_dir_all(t.token_dir("anchord-a")).unwrap();
    assert!(
        eapol(&s, work.path(), "tls13-ecdsa"),
        "the replica must sign"
    );
    s.wait_log(&["hsm_sign", "token=anchord-b", "result=\"ok\""]);
}

#[test]
fn rsa_keys_on_the_token_sign_tls_with_pss() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().display().to_string();
    t.ok(&["pki", "init", "--key-type", "rsa-2048"]);
    t.ok(&["pki", "issue", "--device", "device-ecdsa", "--out", &out]);
    t.ok(&["pki", "export-ca", "--out", &out]);
    let s = t.serve();
    assert!(eapol(&s, work.path(), "tls12-ecdsa"), "TLS 1.2");
    assert!(eapol(&s, work.path(), "tls13-ecdsa"), "TLS 1.3");
    s.wait_log(&["hsm_sign", "CKM_SHA256_RSA_PKCS_PSS", "result=\"ok\""]);
}

#[test]
fn device_with_its_own_key_is_issued_from_its_request_and_authenticates() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().display().to_string();
    t.ok(&["pki", "init"]);
    t.ok(&["pki", "export-ca", "--out", &out]);
    // The device makes its key and request; the key never reaches anchord.
    let req = Command::new("openssl")
        .current_dir(work.path())
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-keyout",
            "device-ecdsa.key",
            "-subj",
            "/CN=whatever",
            "-out",
            "device.csr",
        ])
        .output()
        .unwrap();
    assert!(req.status.success());
    let key_before = std::fs::read(work.path().join("device-ecdsa.key")).unwrap();
    let csr = work.path().join("device.csr").display().to_string();
    t.ok(&[
        "pki",
        "issue",
        "--device",
        "device-ecdsa",
        "--csr",
        &csr,
        "--out",
        &out,
    ]);
    assert_eq!(
        std::fs::read(work.path().join("device-ecdsa.key")).unwrap(),
        key_before,
        "key untouched"
    );
    let s = t.serve();
    assert!(eapol(&s, work.path(), "tls12-ecdsa"));
    s.wait_log(&["outcome=\"accept\"", "identity=device-ecdsa"]);
    // A request whose signature does not match its key is refused. The DER ends with the
    // signature BIT STRING, whose last byte is the last byte of ECDSA's `s`: flipping it keeps
    // the encoding valid and breaks only the signature (OpenSSL agrees, below).
    let bad = work.path().join("bad.csr");
    std::fs::write(&bad, flip_last_der_byte(&work.path().join("device.csr"))).unwrap();
    let verify = Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("self-signature verify failure"),
        "{verify:?}"
    );
    let bad = bad.display().to_string();
    let refused = t.anchord(&[
        "pki", "issue", "--device", "x", "--csr", &bad, "--out", &out,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(CSR_SIGNATURE_ERROR), "{stderr}");
    assert!(!work.path().join("x.pem").exists());
}

/// What `pki issue --csr` says about a request whose self-signature does not verify.
const CSR_SIGNATURE_ERROR: &str =
    "anchord: certificate request: its signature does not verify with the key it carries";

/// Decodes a PEM file, flips the last byte of its DER and encodes it again (64-column lines).
fn flip_last_der_byte(pem_path: &Path) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = std::fs::read_to_string(pem_path).unwrap();
    let mut lines = text.lines();
    let (begin, body): (&str, Vec<&str>) = (
        lines.next().unwrap(),
        lines
            .clone()
            .take_while(|l| !l.starts_with("-----"))
            .collect(),
    );
    let end = lines.find(|l| l.starts_with("-----END")).unwrap();
    let mut der = b64.decode(body.concat()).unwrap();
    *der.last_mut().unwrap() ^= 0x01;
    let encoded = b64.encode(&der);
    let mut out = format!("{begin}\n");
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(end);
    out.push('\n');
    out
}

#[test]
fn concurrent_signing_steps_share_the_configured_sessions() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let s = t.serve_with("sessions = 2\n");
    // Sixteen devices at once: many ClientHello steps want to sign at the same time.
    let (ok, report) = crate::bench::run_bench_from(
        work.path(),
        &s,
        SECRET,
        &[
            "--tls",
            "1.2",
            "--concurrency",
            "16",
            "--duration",
            "2",
            "--expect-vlan",
            "100",
        ],
    );
    assert!(ok, "{report}");
    assert!(report["completed"].as_u64().unwrap() >= 16, "{report}");
    assert_eq!(report["errors"].as_object().unwrap().len(), 0, "{report}");
    // Every signature went through one of the two pooled sessions: none was opened beyond.
    let opened = s
        .log()
        .iter()
        .filter(|l| l.contains("HSM signing session opened"))
        .count();
    assert!((1..=2).contains(&opened), "{opened} sessions opened");
}
