//! hostapd (Debian `hostapd` 2.10) as a real NAS: `driver=wired` on one end of a veth
//! pair, wpa_supplicant `-Dwired` on the other end inside a network namespace this test
//! makes; accounting and its Dynamic Authorization Server pointed at anchord on loopback.
//! Needs root (CI runs as root) and the packages `eapol-tests/install-deps.sh` installs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::accounting::{self, sessions};
use crate::harness::{pki_dir, Server, SECRET};

/// Runs `cmd args` and insists that it succeeds; its standard output.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (install: eapol-tests/install-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A veth pair (the NAS's end here, the device's in a namespace), hostapd on the one and
/// wpa_supplicant on the other; all taken down when dropped.
struct Lab {
    ns: String,
    nas_if: String,
    dir: tempfile::TempDir,
    hostapd: Child,
    supplicant: Child,
    /// The device's MAC.
    mac: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.supplicant.kill();
        let _ = self.hostapd.kill();
        let _ = self.supplicant.wait();
        let _ = self.hostapd.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.nas_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

impl Lab {
    fn start(server: &Server, das_port: u16) -> Self {
        assert_eq!(
            run("id", &["-u"]).trim(),
            "0",
            "the hostapd tests need root (network namespaces, veth)"
        );
        let tag: u32 = rand::random::<u32>() % 100_000;
        let (ns, nas_if, dev_if) = (
            format!("anc-ns-{tag}"),
            format!("anc-n{tag}"),
            format!("anc-d{tag}"),
        );
        run("ip", &["netns", "add", &ns]);
        run(
            "ip",
            &[
                "link", "add", &nas_if, "type", "veth", "peer", "name", &dev_if,
            ],
        );
        run("ip", &["link", "set", &dev_if, "netns", &ns]);
        run("ip", &["link", "set", &nas_if, "up"]);
        run(
            "ip",
            &["netns", "exec", &ns, "ip", "link", "set", &dev_if, "up"],
        );
        let mac = run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "cat",
                &format!("/sys/class/net/{dev_if}/address"),
            ],
        )
        .trim()
        .to_owned();
        let dir = tempfile::tempdir().unwrap();
        let acct = server.accounting_addr();
        let hostapd_conf = dir.path().join("hostapd.conf");
        std::fs::write(
            &hostapd_conf,
            format!(
                "interface={nas_if}\ndriver=wired\nieee8021x=1\neap_server=0\neapol_version=2\n\
                 ctrl_interface={ctrl}\nlogger_stdout=-1\nlogger_stdout_level=1\n\
                 own_ip_addr=127.0.0.1\nnas_identifier=anchord-it\n\
                 auth_server_addr=127.0.0.1\nauth_server_port={auth}\n\
                 auth_server_shared_secret={SECRET}\n\
                 acct_server_addr=127.0.0.1\nacct_server_port={acct}\n\
                 acct_server_shared_secret={SECRET}\nradius_acct_interim_interval=60\n\
                 radius_das_port={das_port}\nradius_das_client=127.0.0.1 {SECRET}\n\
                 radius_das_require_event_timestamp=1\n\
                 radius_das_require_message_authenticator=1\n",
                ctrl = dir.path().join("hostapd").display(),
                auth = server.addr.port(),
                acct = acct.port(),
            ),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let hostapd = Command::new("hostapd")
            .arg("-dd")
            .arg(&hostapd_conf)
            .stdout(log("hostapd.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("hostapd (install: eapol-tests/install-deps.sh)");
        let pki = pki_dir();
        let supplicant_conf = dir.path().join("wpa.conf");
        std::fs::write(
            &supplicant_conf,
            format!(
                "ctrl_interface={ctrl}\nap_scan=0\nnetwork={{\n  key_mgmt=IEEE8021X\n  eap=TLS\n  \
                 identity=\"device-ecdsa\"\n  ca_cert=\"{pki}/root-ca.pem\"\n  \
                 client_cert=\"{pki}/device-ecdsa.pem\"\n  private_key=\"{pki}/device-ecdsa.key\"\n  \
                 eapol_flags=0\n}}\n",
                ctrl = dir.path().join("wpa").display(),
                pki = pki.display(),
            ),
        )
        .unwrap();
        let supplicant = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "wpa_supplicant",
                "-Dwired",
                "-i",
                &dev_if,
                "-dd",
                "-c",
            ])
            .arg(&supplicant_conf)
            .stdout(log("wpa.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("wpa_supplicant (install: eapol-tests/install-deps.sh)");
        Self {
            ns,
            nas_if,
            dir,
            hostapd,
            supplicant,
            mac,
        }
    }

    fn hostapd_ctrl(&self) -> PathBuf {
        self.dir.path().join("hostapd")
    }

    /// hostapd's view of the device: `hostapd_cli sta MAC`.
    fn station(&self) -> String {
        let ctrl = self.hostapd_ctrl();
        let out = Command::new("hostapd_cli")
            .arg("-p")
            .arg(&ctrl)
            .args(["sta", &self.mac])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        let tail = |t: String| t.lines().rev().take(40).collect::<Vec<_>>().join("\n");
        format!(
            "hostapd:\n{}\nwpa_supplicant:\n{}",
            tail(read("hostapd.log")),
            tail(read("wpa.log"))
        )
    }

    /// Waits up to `secs` for `done` to hold of the station's state.
    fn wait_station(&self, secs: u64, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let sta = self.station();
            if done(&sta) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: station {sta}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `wpa_cli reauthenticate` on the device.
    fn reauthenticate(&self) {
        run(
            "wpa_cli",
            &[
                "-p",
                &self.dir.path().join("wpa").display().to_string(),
                "reauthenticate",
            ],
        );
    }
}

pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_sessions(
    s: &Server,
    admin: &SocketAddr,
    lab: &Lab,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = sessions(s, admin, "list", &[]);
        if done(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {list:?}\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The test server with its client's DAS on a free port, the admin listener with a token,
/// and `extra` appended; the admin address, the DAS port, the token's folder.
fn nas_server(extra: &str) -> (Server, SocketAddr, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "it-admin-token\n").unwrap();
    let das_port = free_udp_port();
    let s = Server::start_with(|c| {
        format!(
            "{c}dynamic_authorization = \"disconnect\"\ndas_port = {das_port}\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{extra}",
            token.display()
        )
    });
    let admin = crate::admin::admin_addr(&s);
    (s, admin, das_port, dir)
}

fn authorized(sta: &str) -> bool {
    sta.contains("[AUTHORIZED]")
}

#[test]
fn hostapd_accounts_the_session_and_an_admin_disconnect_unauthorizes_the_port() {
    let (s, admin, das_port, _dir) = nas_server("");
    let lab = Lab::start(&s, das_port);
    // wpa_supplicant waits ~2 s before its EAPOL-Start.
    lab.wait_station(40, "the device is authorized", authorized);
    // 1. hostapd's Accounting-Start: the session, joined to its certificate and VLAN.
    let list = wait_sessions(&s, &admin, &lab, "Accounting-Start", |l| l.len() == 1);
    let session = &list[0];
    assert_eq!(session["joined"], true, "{session}");
    assert_eq!(session["vlan"], "100");
    assert_eq!(session["user_name"], "device-ecdsa");
    assert_eq!(session["nas_identifier"], "anchord-it");
    assert!(session["cert"]["subject"]
        .as_str()
        .unwrap()
        .contains("device-ecdsa"));
    let mac = session["station"].as_str().unwrap().to_owned();
    assert_eq!(mac.to_lowercase().replace('-', ":"), lab.mac);

    // 2. An admin disconnect: hostapd ACKs and unauthorizes the port; its Accounting-Stop
    // (or the ACK) takes the session off.
    let done = sessions(&s, &admin, "disconnect", &["--mac", &mac]);
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["answer"], "ack", "{done:?}\n{}", lab.logs());
    lab.wait_station(10, "the port is unauthorized", |sta| !authorized(sta));
    wait_sessions(&s, &admin, &lab, "the session ended", <[_]>::is_empty);

    // 3. The device authenticates again: a new session. A Disconnect for a session hostapd
    // does not have (reported by accounting, then lost by the NAS) gets NAK 503 and leaves
    // the registry consistent: that one gone, the real one kept.
    lab.reauthenticate();
    lab.wait_station(30, "re-authorized", authorized);
    wait_sessions(&s, &admin, &lab, "a new session", |l| l.len() == 1);
    let acct = accounting::client(s.accounting_addr());
    let ghost = accounting::acct_request(
        1,
        &[
            (40, 1u32.to_be_bytes().to_vec()),
            (44, b"FFFFFFFFFFFFFFFF".to_vec()),
            (1, b"ghost".to_vec()),
            (31, b"02-00-00-00-00-99".to_vec()),
        ],
        SECRET,
    );
    acct.send(&ghost).unwrap();
    accounting::assert_response(&ghost, &accounting::recv(&acct));
    assert_eq!(sessions(&s, &admin, "list", &[]).len(), 2);
    let done = sessions(&s, &admin, "disconnect", &["--mac", "02-00-00-00-00-99"]);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["answer"], "nak 503", "{done:?}\n{}", lab.logs());
    let left = sessions(&s, &admin, "list", &[]);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["user_name"], "device-ecdsa");
    assert!(authorized(&lab.station()));
}

/// The seed's point: an MDM pushes that the device is no longer compliant; anchord re-runs
/// the policy on the session's facts, sends hostapd a Disconnect-Request, hostapd
/// unauthorizes the port, and the device's next authentication lands in quarantine. The NAS
/// is configured for CoA, but the quarantine preset's attributes (a role, a redirect ACL)
/// are not all ones it takes in a CoA-Request, and the staff role set would have to be
/// removed: a CoA cannot carry that change, so it is a Disconnect.
#[test]
fn a_posture_change_disconnects_the_device_and_it_comes_back_in_quarantine() {
    use anchord::pki::dev::STAFF_INTUNE_ID;
    let mdm = crate::harness::Mdm::start();
    let das_port = free_udp_port();
    let (s, admin, _hook) = crate::posture::start_with_nas(
        &mdm,
        |t| t,
        &format!("dynamic_authorization = \"coa\"\ndas_port = {das_port}\n"),
    );
    let lab = Lab::start(&s, das_port);
    lab.wait_station(40, "the device is authorized", authorized);
    let list = wait_sessions(&s, &admin, &lab, "Accounting-Start", |l| l.len() == 1);
    assert_eq!(list[0]["vlan"], "100", "compliant: the production VLAN");
    let record = serde_json::json!({
        "id": STAFF_INTUNE_ID, "complianceState": "noncompliant", "managementState": "managed"
    });
    let body = serde_json::json!({ "device": STAFF_INTUNE_ID, "record": record }).to_string();
    let headers = crate::posture::signed("hook-s3cret", crate::posture::now(), body.as_bytes());
    assert_eq!(
        crate::posture::post_event(admin, &headers, body.as_bytes()),
        202
    );
    s.wait_log(&[
        "posture change turns a live session's decision",
        "vlan=Some(\"999\")",
    ]);
    lab.wait_station(10, "the port is unauthorized", |sta| !authorized(sta));
    s.wait_log(&["a CoA-Request cannot carry this change"]);
    s.wait_log(&["session disconnected", "trigger=\"posture\""]);
    // Re-authenticated: quarantined, by the rule for non-compliant staff.
    lab.reauthenticate();
    lab.wait_station(30, "re-authorized", authorized);
    let list = wait_sessions(&s, &admin, &lab, "the new session", |l| {
        l.len() == 1 && l[0]["vlan"] == "999"
    });
    assert_eq!(list[0]["rule"], "staff-noncompliant");
}

/// A certificate revoked while its device is connected: the next check of live sessions
/// (`live_recheck_secs`, through an OCSP cache of one second) finds it revoked, anchord
/// disconnects the session, and the device's re-authentication is rejected.
#[test]
fn a_certificate_revoked_while_connected_is_disconnected_and_then_rejected() {
    let responder = crate::responder::Responder::start(pki_dir(), "issuing-ca");
    let (s, admin, das_port, _dir) = nas_server(&format!(
        "\n[revocation]\nresponders = [{{ url = \"{}\" }}]\nmax_ttl_secs = 1\n\
         live_recheck_secs = 1\n",
        responder.url
    ));
    let lab = Lab::start(&s, das_port);
    lab.wait_station(40, "the device is authorized", authorized);
    wait_sessions(&s, &admin, &lab, "Accounting-Start", |l| l.len() == 1);
    s.wait_log(&["outcome=\"accept\"", "revocation=good"]);
    responder.revoke_device_ecdsa();
    s.wait_log(&["a live session's certificate is revoked"]);
    lab.wait_station(10, "the port is unauthorized", |sta| !authorized(sta));
    s.wait_log(&["session disconnected", "trigger=\"revocation\""]);
    wait_sessions(&s, &admin, &lab, "the session ended", <[_]>::is_empty);
    lab.reauthenticate();
    s.wait_log(&[
        "outcome=\"reject\"",
        "reason=\"revoked\"",
        "identity=device-ecdsa",
    ]);
    assert!(!authorized(&lab.station()));
}

/// A reload that changes the policy leaves live sessions alone unless `[server]
/// reevaluate_live_sessions` is on; with it, the new policy is re-run on each live session's
/// facts, the session whose VLAN changes is disconnected, and the device comes back in the
/// new VLAN.
#[test]
fn a_reloaded_policy_acts_on_live_sessions_only_when_asked_to() {
    let (s, admin, das_port, _dir) = nas_server("");
    let lab = Lab::start(&s, das_port);
    lab.wait_station(40, "the device is authorized", authorized);
    wait_sessions(&s, &admin, &lab, "Accounting-Start", |l| {
        l.len() == 1 && l[0]["vlan"] == "100"
    });
    // Off (the default): the policy changes, the live session keeps its VLAN.
    crate::reload::reload(&s, 1, |c| c.replace("vlan = \"100\"", "vlan = \"200\""));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !s.log()
            .iter()
            .any(|l| l.contains("the reloaded policy turns")),
        "acted without reevaluate_live_sessions"
    );
    assert!(authorized(&lab.station()));
    assert_eq!(sessions(&s, &admin, "list", &[]).len(), 1);
    // On: VLAN 300 now; the session (given 100) is disconnected, the device comes back in 300.
    crate::reload::reload(&s, 2, |c| {
        c.replace("vlan = \"200\"", "vlan = \"300\"")
            .replace("[server]\n", "[server]\nreevaluate_live_sessions = true\n")
    });
    s.wait_log(&[
        "the reloaded policy turns a live session's decision",
        "vlan=Some(\"300\")",
    ]);
    lab.wait_station(10, "the port is unauthorized", |sta| !authorized(sta));
    s.wait_log(&["session disconnected", "trigger=\"policy\""]);
    s.wait_log(&["live sessions re-evaluated after a reload", "changed=1"]);
    lab.reauthenticate();
    lab.wait_station(30, "re-authorized", authorized);
    wait_sessions(&s, &admin, &lab, "the new session, in VLAN 300", |l| {
        l.len() == 1 && l[0]["vlan"] == "300"
    });
}
