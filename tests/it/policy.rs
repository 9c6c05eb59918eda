//! The shipped example policy (policies/) end to end: eapol_test devices whose certificates
//! differ land in different VLANs with their vendor attributes, an SSID refuses a class of
//! device, the default rule takes the rest; reloads by SIGHUP and by the file watcher; the
//! admin tools (`check`, `policy explain`, `policy test`) on good and broken policies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{eapol_test, last_reply, pki_dir, repo, Mdm, Server, SECRET};

/// A copy of the shipped policies/ (rules and tests) to edit.
fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    for sub in ["", "tests"] {
        for e in std::fs::read_dir(repo().join("policies").join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    dir
}

/// The test server with `[policy]` on `dir` in place of `[authorization]`, and the `mdm`
/// posture source the example policy reads on a dev MDM (kept alive by the caller).
fn start(dir: &Path, watch: bool) -> (Server, Mdm) {
    let mdm = Mdm::start();
    let server = Server::start_with(|c| {
        c.replace(
            "[authorization]\nvlan = \"100\"\n",
            &format!(
                "[policy]\ndir = \"{}\"\ntimezone = \"Europe/Berlin\"\nwatch = {watch}\n",
                dir.display()
            ),
        ) + &mdm.source("mdm")
    });
    (server, mdm)
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// An RFC 2865 §5.26 Vendor-Specific value: vendor, type, length, text.
fn vsa(vendor: u32, ty: u8, text: &str) -> String {
    format!("{vendor:08x}{ty:02x}{:02x}{}", text.len() + 2, hex(text))
}

/// The VLAN (Tunnel-Private-Group-Id, tag 0) of an Accept, and its attributes.
fn accepted(stdout: &str) -> (String, Vec<(u8, String)>) {
    assert!(
        stdout.lines().any(|l| l.trim() == "SUCCESS"),
        "expected SUCCESS:\n{stdout}"
    );
    let (code, attrs) = last_reply(stdout);
    assert_eq!(code, 2, "Access-Accept");
    let vlan = attrs
        .iter()
        .find(|a| a.0 == 81)
        .map(|a| a.1.clone())
        .expect("Tunnel-Private-Group-Id");
    let vlan = String::from_utf8(
        (2..vlan.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&vlan[i..i + 2], 16).unwrap())
            .collect(),
    )
    .unwrap();
    (vlan, attrs)
}

fn rejected(stdout: &str) {
    assert!(
        !stdout.lines().any(|l| l.trim() == "SUCCESS"),
        "expected FAILURE:\n{stdout}"
    );
    assert_eq!(last_reply(stdout).0, 3, "Access-Reject");
}

fn corp(ssid: &str) -> String {
    format!("-N30:s:AA-BB-CC-DD-EE-FF:{ssid}")
}

#[test]
fn the_example_policy_puts_each_device_where_its_certificate_says() {
    let dir = policies_copy();
    let (s, _mdm) = start(dir.path(), false);
    // Staff laptop (OU=Staff, identity = its CN): VLAN 100 with each vendor's role.
    let out = eapol_test(&s, pki_dir(), "tls13-ecdsa", &[&corp("Corp")]);
    let (vlan, attrs) = accepted(&out);
    assert_eq!(vlan, "100");
    let has = |ty: u8, v: &str| attrs.iter().any(|a| a.0 == ty && a.1 == v);
    assert!(
        has(26, &vsa(14823, 1, "staff")),
        "Aruba-User-Role: {attrs:?}"
    );
    assert!(
        has(26, &vsa(14179, 6, "STAFF")),
        "Airespace-ACL-Name: {attrs:?}"
    );
    assert!(
        has(26, &vsa(25053, 1, "staff")),
        "Ruckus-User-Groups: {attrs:?}"
    );
    assert!(has(27, "28800"), "Session-Timeout: {attrs:?}");
    assert!(
        out.contains("MPPE keys OK: 1  mismatch: 0"),
        "the keys still check out"
    );
    // The IoT device (OU=IoT) on the Corp SSID: refused by its rule.
    rejected(&eapol_test(&s, pki_dir(), "tls12-rsa", &[&corp("Corp")]));
    // ... and on its own SSID: VLAN 200 with its filter.
    let (vlan, attrs) = accepted(&eapol_test(&s, pki_dir(), "tls12-rsa", &[&corp("Things")]));
    assert_eq!(vlan, "200");
    assert!(
        attrs.iter().any(|a| a.0 == 11 && a.1 == "len=16"),
        "{attrs:?}"
    );
    assert!(!attrs.iter().any(|a| a.1 == vsa(14823, 1, "staff")));
    // The Staff certificate under another EAP identity: the default rule, quarantine.
    let (vlan, attrs) = accepted(&eapol_test(&s, pki_dir(), "policy-other-identity", &[]));
    assert_eq!(vlan, "999");
    assert!(attrs.iter().any(|a| a.0 == 11 && a.1 == "len=12"));
    assert!(attrs
        .iter()
        .any(|a| a.0 == 26 && a.1 == vsa(9, 1, "url-redirect-acl=QUARANTINE")));
    // Every decision names its rule (and the policy version) in the log.
    let version = {
        let (ok, out) = anchord(&[
            "policy",
            "test",
            "--config",
            tool_config(dir.path()).1.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        out.rsplit("(policy ")
            .next()
            .unwrap()
            .trim()
            .trim_end_matches(')')
            .to_owned()
    };
    for rule in ["staff", "iot-not-on-corp", "iot", "default"] {
        s.wait_log(&[
            "authentication finished",
            &format!("rule=\"{rule}\""),
            &format!("policy=\"{version}\""),
        ]);
    }
    s.wait_log(&["reason=\"iot_not_on_corp\""]);
}

/// Runs the Staff device and returns the VLAN it got, or `None` for a reject.
fn staff_vlan(s: &Server) -> Option<String> {
    let out = eapol_test(s, pki_dir(), "tls13-ecdsa", &[]);
    out.lines()
        .any(|l| l.trim() == "SUCCESS")
        .then(|| accepted(&out).0)
}

/// Moves the staff VLAN to `vlan` in the rules, and (if `test_too`) in the expectations.
fn move_staff(dir: &Path, vlan: u16, test_too: bool) {
    let defs = dir.join("00-definitions.toml");
    let text = std::fs::read_to_string(&defs).unwrap();
    std::fs::write(
        &defs,
        text.replace("staff = 100", &format!("staff = {vlan}")),
    )
    .unwrap();
    if test_too {
        let tests = dir.join("tests/example.toml");
        let text = std::fs::read_to_string(&tests).unwrap();
        let text = text.replace(
            "rule = \"staff\", vlan = \"100\"",
            &format!("rule = \"staff\", vlan = \"{vlan}\""),
        );
        std::fs::write(&tests, text).unwrap();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_sighup_applies_a_valid_policy_and_refuses_one_that_breaks_an_expectation() {
    let dir = policies_copy();
    let (s, _mdm) = start(dir.path(), false);
    assert_eq!(staff_vlan(&s).as_deref(), Some("100"));
    // The rules move staff to VLAN 110, but the expectations still say 100: refused.
    move_staff(dir.path(), 110, false);
    s.hangup();
    s.wait_log(&[
        "reload refused",
        "expectation failed",
        "expected VLAN 100, got 110",
    ]);
    s.wait_log(&["reload refused: keeping the running configuration"]);
    assert_eq!(
        staff_vlan(&s).as_deref(),
        Some("100"),
        "the old policy serves"
    );
    // A broken rule is refused with its file and line.
    let rules = dir.path().join("50-rules.toml");
    let good = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, good.replace("vlan = \"iot\"", "vlan = \"iotx\"")).unwrap();
    s.hangup();
    s.wait_log(&[
        "reload refused",
        "50-rules.toml:",
        "unknown VLAN preset `iotx`",
    ]);
    std::fs::write(&rules, &good).unwrap();
    // Rules and expectations moved together: applied, no restart.
    move_staff(dir.path(), 110, true);
    s.hangup();
    wait_for("the reload", || staff_vlan(&s).as_deref() == Some("110"));
    s.wait_log(&["configuration reloaded", "trigger=\"SIGHUP\""]);
}

#[test]
fn a_change_on_disk_is_picked_up_by_the_watcher_and_a_bad_one_is_refused() {
    let dir = policies_copy();
    let (s, _mdm) = start(dir.path(), true);
    assert_eq!(staff_vlan(&s).as_deref(), Some("100"));
    let rules = dir.path().join("50-rules.toml");
    let good = std::fs::read_to_string(&rules).unwrap();
    // Invalid: refused, the old policy keeps serving.
    std::fs::write(
        &rules,
        good.replace(
            "[[rule]]\nname = \"default\"",
            "[[rule]]\nname = \"default\"\nwhen = { ssid = \"x\" }",
        ),
    )
    .unwrap();
    s.wait_log(&["reload refused", "missing default"]);
    assert_eq!(staff_vlan(&s).as_deref(), Some("100"));
    // Valid: applied without a signal.
    std::fs::write(&rules, &good).unwrap();
    move_staff(dir.path(), 120, true);
    wait_for("the watcher's reload", || {
        staff_vlan(&s).as_deref() == Some("120")
    });
    s.wait_log(&[
        "configuration reloaded",
        "policy or dictionary files changed",
    ]);
}

/// Runs the anchord binary with `args`; whether it succeeded, and its stdout and stderr.
pub(crate) fn anchord(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A config naming only what the policy tools read (no certificates needed).
/// With the `mdm` posture source the example policy reads, on a dev MDM.
fn tool_config(policies: &Path) -> (tempfile::TempDir, PathBuf, Mdm) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anchord.toml");
    let mdm = Mdm::start();
    std::fs::write(
        &path,
        format!(
            "[policy]\ndir = \"{}\"\ntimezone = \"Europe/Berlin\"\n\n[[client]]\nname = \"wlc-campus\"\naddress = \"192.0.2.0/24\"\nsecret = \"{SECRET}\"\n{}",
            policies.display(),
            mdm.source("mdm")
        ),
    )
    .unwrap();
    (dir, path, mdm)
}

#[test]
fn explain_shows_each_rule_tried_and_the_reply_as_it_goes_on_the_wire() {
    let (_d, config, mdm) = tool_config(&repo().join("policies"));
    let cert = pki_dir().join("device-ecdsa.pem");
    let args = [
        "policy",
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--attr",
        "Called-Station-Id=aa-bb-cc-dd-ee-ff:Corp",
        "--live-posture",
    ];
    let (ok, out) = anchord(&args);
    assert!(ok, "{out}");
    for want in [
        "posture: mdm: compliant=true, managed=true, os=Windows",
        "no     iot-not-on-corp (",
        "50-rules.toml:7): the device has \"Staff\"",
        "MATCH  staff (",
        "Access-Accept, VLAN 100",
        "Tunnel-Private-Group-Id:0 = 100          51 06 00 31 30 30",
        "Aruba-User-Role = staff                  1a 0d 00 00 39 e7 01 07 73 74 61 66 66",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (ok, out) = anchord(&json_args);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["outcome"], "accept");
    assert_eq!(v["rule"], "staff");
    assert_eq!(v["vlan"], "100");
    assert_eq!(v["tried"][0]["rule"], "iot-not-on-corp");
    assert!(
        v["posture"][0]["answer"]
            .as_str()
            .unwrap()
            .starts_with("compliant=true"),
        "{v}"
    );
    assert_eq!(v["tried"][0]["failed"]["device_has"], "\"Staff\"");
    assert_eq!(v["reply"][3]["name"], "Aruba-User-Role");
    assert_eq!(
        v["reply"][3]["wire"],
        "1a0d000039e7010773746166 66".replace(' ', "")
    );
    // The MDM now says the laptop is not compliant: asked live, it lands in quarantine.
    mdm.set_compliance(anchord::pki::dev::STAFF_INTUNE_ID, "noncompliant");
    let (ok, out) = anchord(&args);
    assert!(ok, "{out}");
    assert!(out.contains("posture: mdm: compliant=false"), "{out}");
    assert!(out.contains("MATCH  staff-noncompliant ("), "{out}");
    assert!(out.contains("VLAN 999"), "{out}");
    // Without asking the MDM, nothing is known: the unavailable branch, never VLAN 100.
    let (ok, out) = anchord(&args[..args.len() - 1]);
    assert!(ok, "{out}");
    assert!(out.contains("MATCH  staff-posture-unavailable ("), "{out}");
    // The IoT device on Corp: a reject, with its reason.
    let cert = pki_dir().join("device-rsa.pem");
    let mut iot = args.to_vec();
    iot[5] = cert.to_str().unwrap();
    let (ok, out) = anchord(&iot);
    assert!(ok, "{out}");
    assert!(
        out.contains("Access-Reject, reason iot_not_on_corp"),
        "{out}"
    );
}

#[test]
fn policy_test_runs_the_expectations_and_check_refuses_a_broken_policy() {
    let dir = policies_copy();
    let (_d, config, _mdm) = tool_config(dir.path());
    let (ok, out) = anchord(&["policy", "test", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("ok   compliant staff laptop on Corp"), "{out}");
    assert!(out.contains("13 case(s), 0 failed"), "{out}");
    move_staff(dir.path(), 130, false);
    let (ok, out) = anchord(&["policy", "test", "--config", config.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL compliant staff laptop on Corp: expected VLAN 100, got 130"),
        "{out}"
    );
    // `check` loads the whole server config: the shipped example with this policy folder.
    let rules = dir.path().join("50-rules.toml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(
        &rules,
        text.replace(
            "cert.ou = \"IoT\", ssid",
            "cert.ou = { regex = \"(\" }, ssid",
        ),
    )
    .unwrap();
    let s_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir();
    let path = s_dir.path().join("anchord.toml");
    std::fs::write(
        &path,
        format!(
            "[tls]\ncertificate = \"{p}/server.pem\"\nprivate_key = \"{p}/server.key\"\nca = [\"{p}/root-ca.pem\"]\n\n\
             [policy]\ndir = \"{}\"\n\n[[client]]\nname = \"c\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n",
            dir.path().display(),
            p = pki.display()
        ),
    )
    .unwrap();
    let (ok, out) = anchord(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok, "{out}");
    let want = format!(
        "{}:7: rule `iot-not-on-corp`: `cert.ou`: regex \"(\" does not compile",
        rules.display()
    );
    assert!(out.contains(&want), "{want}\nin:\n{out}");
    // With the regex fixed, the rules read the `mdm` posture source, which this config
    // does not have: refused at the line that names it (a misspelt source would read as
    // "unavailable" for every device).
    for f in ["00-definitions.toml", "50-rules.toml"] {
        std::fs::copy(repo().join("policies").join(f), dir.path().join(f)).unwrap();
    }
    let (ok, out) = anchord(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok, "{out}");
    let line = text
        .lines()
        .position(|l| l.contains("posture.mdm.unavailable"))
        .unwrap()
        + 1;
    let want = format!(
        "{}:{line}: rule `staff-posture-unavailable`: `posture.mdm.unavailable = true` reads \
         posture source `mdm`",
        rules.display()
    );
    assert!(out.contains(&want), "{want}\nin:\n{out}");
}

#[test]
fn a_conversation_under_way_at_a_reload_finishes_under_the_policy_it_started_with() {
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use crate::replay::{attribute, socket};

    let dir = policies_copy();
    let (s, _mdm) = start(dir.path(), false);
    // A proxy between eapol_test and the server that holds the conversation's second
    // request (the first with a State) until the policy has been replaced.
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = socket("127.0.0.1:0", &s);
    for sock in [&front, &back] {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    let port = front.local_addr().unwrap().port().to_string();
    let peer: Mutex<Option<SocketAddr>> = Mutex::new(None);
    let held: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    let (released, stop) = (AtomicBool::new(false), AtomicBool::new(false));
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Some(p) = released
                    .load(Ordering::Relaxed)
                    .then(|| held.lock().unwrap().take())
                    .flatten()
                {
                    back.send(&p).unwrap();
                }
                let Ok((n, from)) = front.recv_from(&mut buf) else {
                    continue;
                };
                *peer.lock().unwrap() = Some(from);
                let p = &buf[..n];
                if !released.load(Ordering::Relaxed) && attribute(p, 24).is_some() {
                    // Held (retransmissions of it are dropped while it is).
                    held.lock().unwrap().get_or_insert_with(|| p.to_vec());
                    continue;
                }
                back.send(p).unwrap();
            }
        });
        scope.spawn(|| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = back.recv(&mut buf) {
                    let to = peer.lock().unwrap().unwrap();
                    front.send_to(&buf[..n], to).unwrap();
                }
            }
        });
        scope.spawn(|| {
            wait_for("the conversation to start", || {
                held.lock().unwrap().is_some()
            });
            move_staff(dir.path(), 140, true);
            s.hangup();
            s.wait_log(&["configuration reloaded"]);
            released.store(true, Ordering::Relaxed);
        });
        let out = eapol_test(&s, pki_dir(), "tls13-ecdsa", &["-p", &port]);
        stop.store(true, Ordering::Relaxed);
        out
    });
    let (vlan, _) = accepted(&out);
    assert_eq!(
        vlan, "100",
        "the policy the conversation started with decides"
    );
    assert_eq!(
        staff_vlan(&s).as_deref(),
        Some("140"),
        "new conversations get the new one"
    );
}
