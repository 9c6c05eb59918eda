//! Accounting (RFC 2866) on the wire: a device authenticated by eapol_test gets a Class in
//! its Accept; Accounting-Requests carrying it are verified, written to the audit trail
//! joined to that authentication, and answered; duplicates are answered from the cache;
//! forged ones and codes of the other port get nothing. Authenticators are computed and
//! checked here with RustCrypto's MD5 directly, not with anchord's helpers.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::harness::{eapol_test, last_reply, pki_dir, Server, SECRET};

/// An Accounting-Request: the Request Authenticator is MD5 over the packet with a zero
/// authenticator, then the secret.
pub(crate) fn acct_request(id: u8, attrs: &[(u8, Vec<u8>)], secret: &str) -> Vec<u8> {
    let mut p = vec![4, id, 0, 0];
    p.extend([0u8; 16]);
    for (t, v) in attrs {
        p.push(*t);
        p.push(u8::try_from(v.len() + 2).unwrap());
        p.extend(v);
    }
    let len = u16::try_from(p.len()).unwrap().to_be_bytes();
    p[2..4].copy_from_slice(&len);
    let mut h = Md5::new();
    h.update(&p);
    h.update(secret.as_bytes());
    let auth = h.finalize();
    p[4..20].copy_from_slice(&auth);
    p
}

/// Checks an Accounting-Response to `req`: code, identifier, Response Authenticator.
pub(crate) fn assert_response(req: &[u8], reply: &[u8]) {
    assert_eq!(reply[0], 5, "Accounting-Response");
    assert_eq!(reply[1], req[1], "same identifier");
    let len = usize::from(u16::from_be_bytes([reply[2], reply[3]]));
    assert_eq!(len, reply.len());
    let mut h = Md5::new();
    h.update(&reply[..4]);
    h.update(&req[4..20]);
    h.update(&reply[20..]);
    h.update(SECRET.as_bytes());
    assert_eq!(&h.finalize()[..], &reply[4..20], "Response Authenticator");
}

pub(crate) fn client(to: SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(to).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock
}

pub(crate) fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a reply");
    buf[..n].to_vec()
}

/// The audit lines that contain every needle, waiting up to 10 s for at least `n`.
fn audit_lines(path: &std::path::Path, needles: &[&str], n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<String> = text
            .lines()
            .filter(|l| needles.iter().all(|x| l.contains(x)))
            .map(str::to_owned)
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hex_value(v: &str) -> Vec<u8> {
    hex::decode(
        v.chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>(),
    )
    .unwrap_or_else(|_| panic!("a hex value: {v}"))
}

/// Authenticates device-ecdsa with eapol_test; the Class of its Access-Accept.
pub(crate) fn accepted_class(s: &Server) -> Vec<u8> {
    let out = eapol_test(s, pki_dir(), "tls12-ecdsa", &[]);
    let (code, attrs) = last_reply(&out);
    assert_eq!(code, 2, "Access-Accept: {out}");
    attrs
        .iter()
        .find(|(t, _)| *t == 25)
        .map(|(_, v)| hex_value(v))
        .expect("a Class in the Accept")
}

/// Every Access-Accept tells the NAS how often to send Interim-Updates (RFC 2869 §5.16:
/// `[server] accounting_interim_secs`, default 600), which keep its sessions live here; not
/// when accounting is off.
#[test]
fn an_accept_carries_the_interim_interval_when_accounting_listens() {
    let interim = |s: &Server| {
        let out = eapol_test(s, pki_dir(), "tls12-ecdsa", &[]);
        let (code, attrs) = last_reply(&out);
        assert_eq!(code, 2, "Access-Accept: {out}");
        attrs
            .iter()
            .find(|(t, _)| *t == 85)
            .map(|(_, v)| v.parse::<u32>().unwrap())
    };
    assert_eq!(interim(&Server::start()), Some(600));
    let s = Server::start_with(|c| {
        c.replace("[server]\n", "[server]\naccounting_interim_secs = 300\n")
    });
    assert_eq!(interim(&s), Some(300));
    let s = Server::start_with(|c| c.replace("[server]\n", "[server]\naccounting_listen = []\n"));
    assert_eq!(interim(&s), None);
}

#[test]
fn accounting_joins_the_authentication_through_its_class_and_is_answered_once_stored() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = Server::start_with(|c| {
        format!(
            "{c}\n[audit]\nsink = \"file\"\npath = \"{}\"\n",
            audit.display()
        )
    });
    let class = accepted_class(&s);
    assert!(class.starts_with(b"anc1"), "{class:?}");

    let acct = client(s.accounting_addr());
    let start = acct_request(
        7,
        &[
            (40, 1u32.to_be_bytes().to_vec()),
            (44, b"0123456789ABCDEF".to_vec()),
            (1, b"device-ecdsa".to_vec()),
            (31, b"02-00-00-00-00-01".to_vec()),
            (25, class.clone()),
        ],
        SECRET,
    );
    // Forged (another secret) and altered requests first: never answered.
    acct.send(&acct_request(
        6,
        &[(40, 1u32.to_be_bytes().to_vec())],
        "wrong",
    ))
    .unwrap();
    let mut altered = start.clone();
    *altered.last_mut().unwrap() ^= 1;
    acct.send(&altered).unwrap();
    acct.send(&start).unwrap();
    let reply = recv(&acct);
    assert_response(&start, &reply);
    // Retransmitted: the same answer, one record.
    acct.send(&start).unwrap();
    assert_eq!(recv(&acct), reply);
    let joined = audit_lines(
        &audit,
        &[
            "\"event\":\"accounting\"",
            "\"status\":\"start\"",
            "\"joined\":true",
            "\"session_id\":\"0123456789ABCDEF\"",
            "\"vlan\":\"100\"",
            "\"station\":\"02-00-00-00-00-01\"",
        ],
        1,
    );
    assert_eq!(
        joined.len(),
        1,
        "one record for the request and its retransmission"
    );
    assert!(joined[0].contains("\"serial\":"), "{}", joined[0]);
    s.wait_log(&["bad_request_authenticator"]);

    // Without our Class (or with an altered one): stored, answered, not joined.
    let mut forged_class = class.clone();
    forged_class[10] ^= 1;
    let stop = acct_request(
        8,
        &[
            (40, 2u32.to_be_bytes().to_vec()),
            (44, b"0123456789ABCDEF".to_vec()),
            (25, forged_class),
            (46, 30u32.to_be_bytes().to_vec()),
        ],
        SECRET,
    );
    acct.send(&stop).unwrap();
    assert_response(&stop, &recv(&acct));
    let unjoined = audit_lines(
        &audit,
        &[
            "\"status\":\"stop\"",
            "\"joined\":false",
            "\"session_time\":30",
        ],
        1,
    );
    assert_eq!(unjoined.len(), 1);

    // An Access-Request on the accounting port, or an Accounting-Request on the auth
    // port: dropped (logged as they are dropped, so no answer can still be on its way).
    let mut wrong_port = start.clone();
    wrong_port[0] = 1;
    acct.send(&wrong_port).unwrap();
    let auth = client(s.addr);
    auth.send(&start).unwrap();
    s.wait_log_lines(&["unexpected_code"], 2);
    for sock in [&acct, &auth] {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let e = sock.recv(&mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "no answer to a wrong-port code"
        );
    }
}

/// `anchord sessions CMD --json ARGS` against the running server at `admin`; its JSON.
pub(crate) fn sessions(
    s: &Server,
    admin: &std::net::SocketAddr,
    cmd: &str,
    args: &[&str],
) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args([
            "sessions",
            cmd,
            "--json",
            "--admin",
            &admin.to_string(),
            "--config",
        ])
        .arg(s.config_path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The test server with its admin listener (token in the returned folder's `admin.token`);
/// the admin address.
fn admin_server() -> (Server, std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "it-admin-token\n").unwrap();
    let s = Server::start_with(|c| {
        format!(
            "{c}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token.display()
        )
    });
    let admin = crate::admin::admin_addr(&s);
    (s, admin, dir)
}

/// `anchord sessions list` against the running server: a joined Start shows with its
/// certificate, rule and VLAN; filters by MAC and device; Stop takes it off; Accounting-On
/// ends the NAS's sessions; a wrong token is refused.
#[test]
fn sessions_list_shows_what_accounting_started_and_stop_or_accounting_on_ended() {
    let (s, admin, dir) = admin_server();
    let token = dir.path().join("admin.token");
    let list = |extra: &[&str]| sessions(&s, &admin, "list", extra);
    assert!(list(&[]).is_empty());
    let class = accepted_class(&s);
    let acct = client(s.accounting_addr());
    let send = |id: u8, status: u32, session: &[u8], class: Option<&[u8]>| {
        let mut attrs = vec![
            (40, status.to_be_bytes().to_vec()),
            (44, session.to_vec()),
            (31, b"02:00:00:00:00:01".to_vec()),
            (1, b"device-ecdsa".to_vec()),
        ];
        if let Some(c) = class {
            attrs.push((25, c.to_vec()));
        }
        let req = acct_request(id, &attrs, SECRET);
        acct.send(&req).unwrap();
        assert_response(&req, &recv(&acct));
    };
    send(1, 1, b"AAAA000000000001", Some(&class));
    send(2, 1, b"AAAA000000000002", None);
    let all = list(&[]);
    assert_eq!(all.len(), 2, "{all:?}");
    let joined: Vec<_> = all.iter().filter(|s| s["joined"] == true).collect();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["acct_session_id"], "AAAA000000000001");
    assert_eq!(joined[0]["vlan"], "100");
    assert_eq!(joined[0]["station"], "02-00-00-00-00-01");
    assert!(joined[0]["cert"]["subject"]
        .as_str()
        .unwrap()
        .contains("device-ecdsa"));
    let serial = joined[0]["cert"]["serial"].as_str().unwrap().to_owned();
    // By device (its certificate serial: only the joined one) and by MAC (both).
    assert_eq!(list(&["--device", &serial.to_uppercase()]).len(), 1);
    assert_eq!(list(&["--mac", "0200.0000.0001"]).len(), 2);
    assert!(list(&["--mac", "02-00-00-00-00-02"]).is_empty());
    // Stop ends the one; Accounting-On (the NAS restarted) the rest.
    send(3, 2, b"AAAA000000000001", Some(&class));
    assert_eq!(list(&[]).len(), 1);
    let on = acct_request(4, &[(40, 7u32.to_be_bytes().to_vec())], SECRET);
    acct.send(&on).unwrap();
    assert_response(&on, &recv(&acct));
    assert!(list(&[]).is_empty());
    // Without the token: refused.
    let admin = admin.to_string();
    std::fs::write(&token, "another-token\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args(["sessions", "list", "--admin", &admin, "--config"])
        .arg(s.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Class travels in clear in the Access-Accept: another NAS entry echoing it does not
/// join the device's authentication (its sessions cannot be claimed, nor Disconnects drawn
/// to that NAS); the NAS the device authenticated through does.
#[test]
fn another_nas_echoing_a_devices_class_does_not_join_its_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = Server::start_with(|c| {
        format!(
            "{c}\n[[client]]\nname = \"other-nas\"\naddress = \"127.0.0.2\"\nsecret = \"{SECRET}\"\n\n\
             [audit]\nsink = \"file\"\npath = \"{}\"\n",
            audit.display()
        )
    });
    let class = accepted_class(&s);
    let start = |id: u8, session: &[u8]| {
        acct_request(
            id,
            &[
                (40, 1u32.to_be_bytes().to_vec()),
                (44, session.to_vec()),
                (25, class.clone()),
            ],
            SECRET,
        )
    };
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.connect(s.accounting_addr()).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let claimed = start(1, b"CLAIMED");
    other.send(&claimed).unwrap();
    assert_response(&claimed, &recv(&other));
    let own = client(s.accounting_addr());
    let real = start(2, b"REAL");
    own.send(&real).unwrap();
    assert_response(&real, &recv(&own));
    let lines = audit_lines(&audit, &["\"event\":\"accounting\""], 2);
    let of = |id: &str| lines.iter().find(|l| l.contains(id)).unwrap().clone();
    assert!(of("\"CLAIMED\"").contains("\"joined\":false"), "{lines:?}");
    assert!(of("\"REAL\"").contains("\"joined\":true"), "{lines:?}");
}

/// Status-Server on the accounting port (RFC 5997 §3) gets an Accounting-Response; a
/// proxied Accounting-Request (Proxy-State, no Message-Authenticator: its Request
/// Authenticator covers it) is stored and answered with its Proxy-State echoed.
#[test]
fn status_server_and_proxied_accounting_are_answered_on_the_accounting_port() {
    use hmac::{Hmac, Mac};
    let s = Server::start();
    let acct = client(s.accounting_addr());
    // Status-Server: a random authenticator, Message-Authenticator over the packet.
    let mut status = vec![12, 3, 0, 38];
    status.extend(rand::random::<[u8; 16]>());
    status.extend([80, 18]);
    status.extend([0u8; 16]);
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&status);
    let ma = mac.finalize().into_bytes();
    status[22..38].copy_from_slice(&ma);
    acct.send(&status).unwrap();
    assert_response(&status, &recv(&acct));
    // Proxied accounting.
    let proxied = acct_request(
        4,
        &[
            (40, 3u32.to_be_bytes().to_vec()),
            (44, b"PROXIED".to_vec()),
            (33, b"proxy-hop-1".to_vec()),
        ],
        SECRET,
    );
    acct.send(&proxied).unwrap();
    let reply = recv(&acct);
    assert_response(&proxied, &reply);
    assert!(
        reply.windows(13).any(|w| w == b"\x21\x0dproxy-hop-1"),
        "Proxy-State echoed: {reply:?}"
    );
}

/// Records are ordered by their Event-Timestamp, but one ahead of the server's clock (a NAS
/// clock gone wrong, or a forged record) is taken as of its arrival: it cannot make the
/// session's later Stop look old and freeze it. A replayed Stop older than the
/// session's latest record does not end it.
#[test]
fn a_far_future_event_timestamp_does_not_freeze_a_session_and_an_old_stop_does_not_end_one() {
    let (s, admin, _dir) = admin_server();
    let acct = client(s.accounting_addr());
    let now = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let send = |id: u8, status: u32, session: &[u8], ts: Option<u32>| {
        let mut attrs = vec![
            (40, status.to_be_bytes().to_vec()),
            (44, session.to_vec()),
            (1, b"device-ecdsa".to_vec()),
        ];
        if let Some(t) = ts {
            attrs.push((55, t.to_be_bytes().to_vec()));
        }
        let req = acct_request(id, &attrs, SECRET);
        acct.send(&req).unwrap();
        assert_response(&req, &recv(&acct));
    };
    // Stamped at the end of time, then stopped now (by the server's clock, no timestamp,
    // as some NASes send it): gone.
    send(1, 1, b"FUTURE0000000001", Some(u32::MAX));
    assert_eq!(sessions(&s, &admin, "list", &[]).len(), 1);
    send(2, 2, b"FUTURE0000000001", None);
    assert!(sessions(&s, &admin, "list", &[]).is_empty(), "not frozen");
    // Start, an Interim-Update ten minutes on, then the Stop of the first minute replayed:
    // stored and answered, but the session stays.
    send(3, 1, b"REPLAY0000000001", Some(now - 700));
    send(4, 3, b"REPLAY0000000001", Some(now - 100));
    send(5, 2, b"REPLAY0000000001", Some(now - 640));
    assert_eq!(sessions(&s, &admin, "list", &[]).len(), 1, "an old Stop");
    send(6, 2, b"REPLAY0000000001", Some(now));
    assert!(sessions(&s, &admin, "list", &[]).is_empty());
}
