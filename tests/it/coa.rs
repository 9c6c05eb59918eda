//! CoA (RFC 5176) with a real Dynamic Authorization Server: FreeRADIUS 3.2 (Debian) as the
//! NAS's DAS (`tests/peers/freeradius-das.sh`), which verifies each request's Request
//! Authenticator and Message-Authenticator with the shared secret, logs it in a detail
//! file and answers CoA-ACK (or CoA-NAK 503 for a session it calls gone). The device is
//! authenticated by eapol_test; its session is reported by accounting with the Class of
//! its Accept; the dev MDM's webhook changes its posture. (hostapd's DAS does Disconnect
//! only: see hostapd.rs.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anchord::pki::dev::STAFF_INTUNE_ID;

use crate::accounting::{accepted_class, acct_request, assert_response, client, recv, sessions};
use crate::admin::{get, samples};
use crate::harness::{repo, Mdm, Server, SECRET};
use crate::hostapd::free_udp_port;
use crate::posture::{now, post_event, signed, start_with_policies};

/// FreeRADIUS listening for CoA and Disconnect requests on 127.0.0.1; stopped when dropped.
struct FreeradiusDas {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl FreeradiusDas {
    fn start(secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let child = Command::new(repo().join("tests/peers/freeradius-das.sh"))
            .arg(dir.path())
            .arg(port.to_string())
            .arg(secret)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let das = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !das.log().contains("Ready to process requests") {
            assert!(
                Instant::now() < deadline,
                "FreeRADIUS did not start (eapol-tests/install-deps.sh installs it): {}",
                das.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        das
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("radius.log")).unwrap_or_default()
    }

    /// The requests it took, as its detail file lists them.
    fn detail(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("das.detail")).unwrap_or_default()
    }
}

impl Drop for FreeradiusDas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The NAS reports a session of the device (its Accept's `class`) started: an
/// Accounting-Start, answered.
fn session_started(s: &Server, id: u8, session: &[u8], class: &[u8]) {
    let acct = client(s.accounting_addr());
    let start = acct_request(
        id,
        &[
            (40, 1u32.to_be_bytes().to_vec()),
            (44, session.to_vec()),
            (1, b"device-ecdsa".to_vec()),
            (31, b"02-00-00-00-00-01".to_vec()),
            (4, vec![127, 0, 0, 1]),
            (25, class.to_vec()),
        ],
        SECRET,
    );
    acct.send(&start).unwrap();
    assert_response(&start, &recv(&acct));
}

/// Policy files that decide on the VLAN alone: 999 for a device the MDM calls
/// non-compliant, 100 otherwise. A CoA can carry the change either way.
fn vlan_only_policy(dir: &Path) {
    std::fs::write(
        dir.join("rules.toml"),
        "[[rule]]\nname = \"noncompliant\"\nwhen = { posture.mdm.compliant = { not = true } }\n\
         vlan = 999\n\n[[rule]]\nname = \"compliant\"\nvlan = 100\n",
    )
    .unwrap();
}

/// The dev MDM, and the server with the VLAN-only policy, the `mdm` source and its webhook,
/// and CoA to a DAS on 127.0.0.1:`das_port`; its admin address; keep the rest alive.
fn coa_server(das_port: u16) -> (Mdm, Server, std::net::SocketAddr, [tempfile::TempDir; 2]) {
    let mdm = Mdm::start();
    let policies = tempfile::tempdir().unwrap();
    vlan_only_policy(policies.path());
    let (s, admin, hook) = start_with_policies(
        &mdm,
        |t| t,
        &format!(
            "dynamic_authorization = \"coa\"\ndas_address = \"127.0.0.1\"\ndas_port = {das_port}\n"
        ),
        policies.path(),
    );
    (mdm, s, admin, [policies, hook])
}

/// The MDM's signed webhook event saying whether the staff laptop is compliant.
fn posture_event(admin: std::net::SocketAddr, compliant: bool) {
    let state = if compliant {
        "compliant"
    } else {
        "noncompliant"
    };
    let record = serde_json::json!({
        "id": STAFF_INTUNE_ID, "complianceState": state, "managementState": "managed"
    });
    let body = serde_json::json!({ "device": STAFF_INTUNE_ID, "record": record }).to_string();
    let headers = signed("hook-s3cret", now(), body.as_bytes());
    assert_eq!(post_event(admin, &headers, body.as_bytes()), 202);
}

/// A posture change a CoA can carry: the session gets the quarantine VLAN by CoA-Request
/// (FreeRADIUS verifies it and records its attributes), the CoA-ACK updates the registry,
/// and the way back to compliant is a CoA too (the registry kept the new decision and its
/// facts). A second session of the same authentication that the DAS says is gone (CoA-NAK
/// 503) is removed, not disconnected.
#[test]
fn a_posture_change_is_a_coa_that_the_das_acknowledges_and_the_registry_follows() {
    let das = FreeradiusDas::start(SECRET);
    let (_mdm, s, admin, _dirs) = coa_server(das.port);
    // The laptop authenticates (compliant: VLAN 100); its NAS reports two sessions with
    // its Class.
    let class = accepted_class(&s);
    for (id, session) in [(1u8, &b"0123456789ABCDEF"[..]), (2, b"GONE000000000001")] {
        session_started(&s, id, session, &class);
    }
    let list = sessions(&s, &admin, "list", &[]);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list
        .iter()
        .all(|l| l["vlan"] == "100" && l["joined"] == true));

    // Non-compliant: a CoA-Request with VLAN 999 for each session.
    posture_event(admin, false);
    s.wait_log(&["session re-authorized (CoA)", "vlan=Some(\"999\")"]);
    s.wait_log(&[
        "the NAS does not know the session (CoA-NAK 503)",
        "GONE000000000001",
    ]);
    let list = sessions(&s, &admin, "list", &[]);
    assert_eq!(
        list.len(),
        1,
        "the session the DAS does not know is gone: {list:?}"
    );
    assert_eq!(list[0]["acct_session_id"], "0123456789ABCDEF");
    assert_eq!(list[0]["vlan"], "999");
    assert_eq!(list[0]["rule"], "noncompliant");
    // What FreeRADIUS took: a verified CoA-Request naming the session, with the new VLAN.
    let detail = das.detail();
    assert!(
        detail.contains("Acct-Session-Id = \"0123456789ABCDEF\""),
        "{detail}"
    );
    assert!(
        detail.contains("Tunnel-Private-Group-Id:0 = \"999\""),
        "{detail}"
    );
    assert!(detail.contains("Tunnel-Type:0 = VLAN"), "{detail}");
    assert!(
        detail.contains("Calling-Station-Id = \"02-00-00-00-00-01\""),
        "{detail}"
    );
    assert!(detail.contains("Event-Timestamp"), "{detail}");
    // No Disconnect was needed.
    assert!(
        !s.log().iter().any(|l| l.contains("session disconnected")),
        "a CoA-ACK is not followed by a Disconnect"
    );

    // Compliant again: back to 100, again by CoA (the registry holds the 999 decision).
    posture_event(admin, true);
    s.wait_log_lines(&["session re-authorized (CoA)"], 2);
    let list = sessions(&s, &admin, "list", &[]);
    assert_eq!(list[0]["vlan"], "100", "{list:?}");
    assert_eq!(list[0]["rule"], "compliant");
    let (_, _, body) = get(admin, "/metrics");
    let m = samples(&body);
    assert_eq!(
        m.get("anchord_dynamic_authorization_requests_total{action=\"coa\",answer=\"ack\"}"),
        Some(&2.0),
        "{body}"
    );
    assert_eq!(
        m.get("anchord_dynamic_authorization_requests_total{action=\"coa\",answer=\"nak\"}"),
        Some(&1.0),
        "{body}"
    );
    assert_eq!(m.get("anchord_live_sessions"), Some(&1.0), "{body}");
    assert_eq!(m.get("anchord_dynamic_authorization_backlog"), Some(&0.0));
}

/// With the wrong secret the DAS's answers never verify and it drops the requests (its
/// Request Authenticator check): anchord gives up on the CoA after its tries and falls
/// back to a Disconnect-Request, which gets no answer either; the session stays (a NAS
/// that did not confirm is not assumed to have acted).
#[test]
fn a_das_with_another_secret_never_confirms_and_the_session_stays() {
    let das = FreeradiusDas::start("another-secret");
    let (_mdm, s, admin, _dirs) = coa_server(das.port);
    let class = accepted_class(&s);
    session_started(&s, 1, b"0123456789ABCDEF", &class);
    posture_event(admin, false);
    s.wait_log(&["CoA-Request not acknowledged", "answer=no answer"]);
    s.wait_log(&["Disconnect-Request not acknowledged", "answer=no answer"]);
    let list = sessions(&s, &admin, "list", &[]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["vlan"], "100", "unconfirmed: unchanged");
    assert!(das.detail().is_empty(), "FreeRADIUS took none of them");
}

/// A Dynamic Authorization Server that answers every CoA-Request with a CoA-ACK after
/// `delay` (under anchord's first retransmission, 1 s), recording the VLAN each asked for
/// (the race a slow NAS opens).
fn slow_das(delay: Duration) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use anchord::radius::packet::{parse_attributes, Code};
    use anchord::radius::reply::ReplyBuilder;
    use anchord::radius::SharedSecret;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let req = buf[..n].to_vec();
            let vlan = parse_attributes(&req[20..])
                .unwrap()
                .iter()
                .find(|a| a.ty.code() == 81)
                .map(|a| String::from_utf8_lossy(&a.value[1..]).into_owned())
                .unwrap_or_default();
            log.lock().unwrap().push(vlan);
            let sock = sock.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let auth: [u8; 16] = req[4..20].try_into().unwrap();
                let ack = ReplyBuilder::new(Code::CoaAck, req[1])
                    .finish(&SharedSecret::new(SECRET.as_bytes().to_vec()), &auth)
                    .unwrap();
                sock.send_to(&ack, from).unwrap();
            });
        }
    });
    (port, seen)
}

/// The device turns non-compliant, then compliant again while the NAS is still
/// acknowledging the quarantine CoA: once that ACK is in, anchord looks again with the
/// current answer and moves the session back (a CoA to VLAN 100), instead of leaving it
/// where the older event put it.
#[test]
fn a_posture_change_during_a_coa_is_not_lost() {
    let (port, seen) = slow_das(Duration::from_millis(800));
    let (_mdm, s, admin, _dirs) = coa_server(port);
    let class = accepted_class(&s);
    session_started(&s, 1, b"0123456789ABCDEF", &class);
    posture_event(admin, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no CoA");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The quarantine CoA is unanswered for now: the device is compliant again.
    posture_event(admin, true);
    s.wait_log_lines(&["session re-authorized (CoA)"], 2);
    assert_eq!(*seen.lock().unwrap(), ["999", "100"]);
    let list = sessions(&s, &admin, "list", &[]);
    assert_eq!(list[0]["vlan"], "100", "{list:?}");
    assert_eq!(list[0]["rule"], "compliant");
}

/// A reload that turns re-evaluation off stops the sweep an earlier reload started: the
/// session whose turn had not come is left alone, and the one acted on is not looked at
/// again for that sweep.
#[test]
fn a_reload_that_turns_reevaluation_off_stops_the_running_sweep() {
    let (port, seen) = slow_das(Duration::from_millis(800));
    let s = Server::start_with(|c| {
        format!(
            "{}dynamic_authorization = \"coa\"\ndas_address = \"127.0.0.1\"\ndas_port = {port}\n",
            c.replace(
                "[server]\n",
                "[server]\nreevaluate_live_sessions = true\nreevaluate_per_second = 1\n"
            )
        )
    });
    let class = accepted_class(&s);
    for (id, session) in [(1u8, &b"AAAA000000000001"[..]), (2, b"AAAA000000000002")] {
        session_started(&s, id, session, &class);
    }
    // VLAN 200: the sweep sends the first session its CoA at once, the second a second later.
    crate::reload::reload(&s, 1, |c| c.replace("vlan = \"100\"", "vlan = \"200\""));
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no CoA");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stop: back to 100, re-evaluation off.
    crate::reload::reload(&s, 2, |c| {
        c.replace("vlan = \"200\"", "vlan = \"100\"").replace(
            "reevaluate_live_sessions = true",
            "reevaluate_live_sessions = false",
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(*seen.lock().unwrap(), ["200"], "nothing after the stop");
}
