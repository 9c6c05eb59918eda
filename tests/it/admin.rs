//! The admin listener's `/metrics` and the JSON audit sink, after real eapol_test runs:
//! the counts match what happened, and no secret or key reaches either.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{eapol_test, pki_dir, Server, SECRET};

/// Starts the test server with the admin listener and a file audit sink in `dir`.
fn start(dir: &std::path::Path) -> (Server, SocketAddr) {
    let audit = dir.join("audit.jsonl");
    let s = Server::start_with(|c| {
        format!(
            "{c}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nsink = \"file\"\npath = \"{}\"\n",
            audit.display()
        )
    });
    let admin = admin_addr(&s);
    (s, admin)
}

/// The admin listener's address, from the server's log.
pub(crate) fn admin_addr(s: &Server) -> SocketAddr {
    let line = s.wait_log(&["admin listener"]);
    line.split("admin=")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// The audit file's records once `done` holds for its text (the writer is a thread of
/// its own); its text too.
pub(crate) fn audit_records(
    path: &std::path::Path,
    done: impl Fn(&str) -> bool,
) -> (Vec<serde_json::Value>, String) {
    let mut text = String::new();
    for _ in 0..500 {
        text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (records, text)
}

/// GET `path` over plain HTTP/1.1; (status line, content type, body).
pub(crate) fn get(admin: SocketAddr, path: &str) -> (String, String, String) {
    let mut c = TcpStream::connect(admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, ctype, body.to_owned())
}

/// Every sample of the exposition, `name{labels}` -> value.
pub(crate) fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// RADIUS replies eapol_test received.
fn rounds(eapol_out: &str) -> f64 {
    let n = eapol_out.matches("Received RADIUS message").count();
    f64::from(u32::try_from(n).unwrap())
}

#[test]
fn metrics_and_the_audit_file_count_what_eapol_test_did_and_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (s, admin) = start(dir.path());
    let accept = eapol_test(&s, pki_dir(), "tls13-ecdsa", &[]);
    assert!(accept.lines().any(|l| l.trim() == "SUCCESS"), "{accept}");
    let reject = eapol_test(&s, pki_dir(), "wrong-eku", &[]);
    assert!(reject.contains("code=3"), "{reject}");
    s.wait_log(&["outcome=\"reject\"", "reason=\"wrong_eku\""]);

    let (status, ctype, body) = get(admin, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let m = samples(&body);
    let at = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{body}"))
    };
    assert_eq!(
        at(r#"anchord_authentications_total{outcome="accept",reason="ok",tls="1.3"}"#),
        1.0
    );
    assert_eq!(
        at(r#"anchord_authentications_total{outcome="reject",reason="wrong_eku",tls="none"}"#),
        1.0
    );
    let requests = rounds(&accept) + rounds(&reject);
    assert!(requests >= 6.0, "{requests}");
    assert_eq!(
        at(r#"anchord_requests_total{code="access_request",client="it-nas"}"#),
        requests,
        "one per request eapol_test got an answer to"
    );
    assert_eq!(
        at(r#"anchord_authentication_duration_seconds_count{outcome="accept"}"#),
        1.0
    );
    assert_eq!(
        at(r#"anchord_authentication_round_trips_count{outcome="accept"}"#),
        1.0
    );
    assert!(
        at(r#"anchord_authentication_round_trips_sum{outcome="accept"}"#) >= 4.0,
        "an EAP-TLS 1.3 authentication takes at least four round trips"
    );
    assert_eq!(at("anchord_sessions"), 0.0, "both conversations ended");
    assert_eq!(
        at(&format!(
            r#"anchord_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(
        !m.keys().any(|k| k.starts_with("anchord_dropped_total")),
        "nothing was dropped:\n{body}"
    );
    let (status, _, _) = get(admin, "/nothing-here");
    assert!(status.contains(" 404 "), "{status}");

    // One JSON record per authentication, in order, with what an admin needs.
    let (records, text) =
        audit_records(&dir.path().join("audit.jsonl"), |t| t.lines().count() >= 2);
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0]["event"], "authentication");
    assert_eq!(records[0]["outcome"], "accept");
    assert_eq!(records[0]["vlan"], "100");
    assert_eq!(records[0]["tls"], "1.3");
    assert_eq!(records[0]["nas"], "it-nas");
    assert!(
        records[0]["cert"]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("CN=")),
        "{text}"
    );
    assert_eq!(records[1]["outcome"], "reject");
    assert_eq!(records[1]["reason"], "wrong_eku");
    // No shared secret, and none of the key material eapol_test derived.
    assert!(!text.contains(SECRET) && !body.contains(SECRET));
    for key in ["MSK", "EMSK", "PMK"] {
        for line in accept
            .lines()
            .filter(|l| l.contains(key) && l.contains("hexdump"))
        {
            if let Some((_, hex)) = line.split_once("): ") {
                let compact: String = hex.split_whitespace().collect();
                assert!(compact.len() >= 32, "{line}");
                assert!(!text.contains(&compact) && !body.contains(&compact));
            }
        }
    }
}

#[test]
fn the_audit_file_is_reopened_on_sighup_for_logrotate() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = start(dir.path());
    let path = dir.path().join("audit.jsonl");
    let out = eapol_test(&s, pki_dir(), "tls12-ecdsa", &[]);
    assert!(out.lines().any(|l| l.trim() == "SUCCESS"), "{out}");
    let wait_lines = |p: &std::path::Path, n: usize| {
        for _ in 0..500 {
            if std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
                >= n
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} has fewer than {n} lines", p.display());
    };
    wait_lines(&path, 1);
    // logrotate's default: move the file, then signal.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    s.hangup();
    s.wait_log(&["configuration reloaded"]);
    let out = eapol_test(&s, pki_dir(), "tls13-ecdsa", &[]);
    assert!(out.lines().any(|l| l.trim() == "SUCCESS"), "{out}");
    audit_records(&path, |t| t.lines().count() >= 1);
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("\"tls\":\"1.2\""), "{old}");
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(new.contains("\"tls\":\"1.3\""), "{new}");
}

#[test]
fn hsm_signatures_reach_the_audit_stream_and_the_metrics() {
    let t = crate::hsm::Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let audit = work.path().join("audit.jsonl");
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[pki]\n\n[authorization]\nvlan = \"100\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nsink = \"file\"\npath = \"{}\"\n\n\
         [[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n",
        audit.display()
    );
    let envs = t.envs();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start_config(&config, &envs);
    let admin = admin_addr(&s);
    assert!(crate::hsm::eapol(&s, work.path(), "tls13-ecdsa"));
    let (records, text) = audit_records(&audit, |t| t.contains("\"event\":\"authentication\""));
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    // The session opened for the signature, the signature, then the authentication.
    assert_eq!(
        events,
        ["hsm_session", "hsm_sign", "authentication"],
        "{text}"
    );
    assert_eq!(records[1]["result"], "ok");
    assert_eq!(records[1]["key"], "anchord-server@1");
    assert!(records[1]["duration_us"].is_u64(), "{text}");
    assert!(!text.contains(SECRET) && !text.to_ascii_lowercase().contains("pin"));

    let m = samples(&get(admin, "/metrics").2);
    assert_eq!(m.get("anchord_hsm_signatures_total"), Some(&1.0), "{m:#?}");
    assert_eq!(
        m.get("anchord_hsm_signature_duration_seconds_count"),
        Some(&1.0)
    );
    assert_eq!(m.get("anchord_hsm_signature_failures_total"), Some(&0.0));
}

#[test]
fn idle_connections_are_capped_and_timed_out_and_scrapes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, admin) = start(dir.path());
    // Twice the cap of connections that never send a request.
    let idle: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(admin).unwrap())
        .collect();
    // Each is closed by the server: at once past the cap, within the header timeout else.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // EOF, or the 408 hyper answers a header timeout with, then EOF.
        let mut got = Vec::new();
        match c.read_to_end(&mut got) {
            Ok(_) => assert!(got.is_empty() || got.starts_with(b"HTTP/1.1 408")),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    let (status, _, body) = get(admin, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("anchord_build_info"));
}
