//! One NAS, or one device, cannot take the server from the others: the per-device limit on
//! conversations, the per-client share of the session table and of requests in flight, and
//! background priority for a client over its share of processor time. (What that is worth
//! to the other NAS's latency is measured by `bench/compare.sh flood`.)

use std::time::Duration;

use crate::harness::{pki_dir, Server, SECRET};
use crate::replay::{request, socket};

/// A server with two client entries, it-nas on 127.0.0.1 and nas-b on 127.0.0.2, and `extra`
/// in [server] (and `tail` appended).
fn two_nas_server(extra: &str, tail: &str) -> Server {
    let p = pki_dir().display().to_string();
    Server::start_config(
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n[tls]\ncertificate = \"{p}/server.pem\"\nprivate_key = \"{p}/server.key\"\nca = [\"{p}/root-ca.pem\"]\n\n[authorization]\nvlan = \"100\"\n\n[[client]]\nname = \"it-nas\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n\n[[client]]\nname = \"nas-b\"\naddress = \"127.0.0.2\"\nsecret = \"{SECRET}\"\n{tail}"
        ),
        &[],
    )
}

/// Sends an EAP-Response/Identity (a new conversation) with this Calling-Station-Id, if
/// any; returns the reply's code.
fn start(sock: &std::net::UdpSocket, id: u8, station: Option<&str>) -> u8 {
    let mut attrs = vec![(79u8, vec![2, id, 0, 8, 1, b'd', b'e', b'v'])];
    if let Some(s) = station {
        attrs.push((31, s.as_bytes().to_vec()));
    }
    sock.send(&request(1, id, &attrs, SECRET)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).unwrap();
        if buf[1] == id {
            return buf[..n][0];
        }
    }
}

#[test]
fn a_device_may_have_only_a_few_conversations_going() {
    let s = Server::start();
    let sock = socket("127.0.0.1:0", &s);
    // The same MAC in four notations: one device, four conversations (the default cap).
    for (id, mac) in [
        "02:00:00:00:00:0a",
        "02-00-00-00-00-0A",
        "0200.0000.000a",
        "02000000000A",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            start(&sock, u8::try_from(id).unwrap(), Some(mac)),
            11,
            "{mac}"
        );
    }
    assert_eq!(start(&sock, 10, Some("02:00:00:00:00:0A")), 3, "a fifth");
    s.wait_log(&["reason=\"too_many_device_conversations\"", "nas=it-nas"]);
    assert_eq!(
        start(&sock, 11, Some("02:00:00:00:00:0b")),
        11,
        "another device"
    );
    assert_eq!(
        start(&sock, 12, None),
        11,
        "no Calling-Station-Id: no device cap"
    );
}

#[test]
fn with_several_clients_each_holds_at_most_half_the_session_table_by_default() {
    let s = two_nas_server("max_sessions = 4\n", "");
    let a = socket("127.0.0.1:0", &s);
    let b = socket("127.0.0.2:0", &s);
    assert_eq!(start(&a, 1, Some("02-00-00-00-01-01")), 11);
    assert_eq!(start(&a, 2, Some("02-00-00-00-01-02")), 11);
    assert_eq!(
        start(&a, 3, Some("02-00-00-00-01-03")),
        3,
        "a third for it-nas"
    );
    s.wait_log(&["reason=\"too_many_sessions\"", "nas=it-nas"]);
    assert_eq!(start(&b, 1, Some("02-00-00-00-02-01")), 11);
    assert_eq!(
        start(&b, 2, Some("02-00-00-00-02-02")),
        11,
        "nas-b has its half"
    );
}

#[test]
fn a_client_at_its_in_flight_cap_is_dropped_while_others_are_served() {
    // A responder that accepts and never answers keeps it-nas's one device waiting.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stall.local_addr().unwrap());
    let s = std::sync::Arc::new(two_nas_server(
        "max_inflight_per_client = 1\n",
        &format!("\n[revocation]\ntimeout_ms = 5000\nresponders = [{{ url = \"{url}\" }}]\n"),
    ));
    let waiting = {
        let s = s.clone();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            for f in ["root-ca.pem", "device-ecdsa.pem", "device-ecdsa.key"] {
                std::fs::copy(pki_dir().join(f), dir.path().join(f)).unwrap();
            }
            crate::harness::eapol_test(&s, dir.path(), "tls12-ecdsa", &[])
        })
    };
    let (_held, _) = stall.accept().unwrap();
    // it-nas's one request in flight is the device's: its Status-Server is dropped...
    let a = socket("127.0.0.1:0", &s);
    a.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let status = |id| request(12, id, &[(32, b"probe".to_vec())], SECRET);
    a.send(&status(7)).unwrap();
    s.wait_log(&["reason=\"client_overloaded\"", "nas=it-nas"]);
    let mut buf = [0u8; 4096];
    assert!(a.recv(&mut buf).is_err(), "no answer while at the cap");
    // ...while nas-b is answered at once.
    let b = socket("127.0.0.2:0", &s);
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.send(&status(8)).unwrap();
    let n = b.recv(&mut buf).expect("nas-b is served");
    assert_eq!((buf[0], buf[1], n >= 20), (2, 8, true));
    // Once the device's request is over, it-nas is served again.
    let out = waiting.join().unwrap();
    assert!(!out.lines().any(|l| l.trim() == "SUCCESS"));
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    a.send(&status(9)).unwrap();
    let n = a.recv(&mut buf).expect("it-nas is served again");
    assert_eq!((buf[0], buf[1], n >= 20), (2, 9, true));
}

#[test]
fn a_client_flooding_handshakes_runs_in_the_background_while_another_is_served() {
    let s = std::sync::Arc::new(two_nas_server("", ""));
    let bench = |args: &'static [&'static str]| {
        let s = s.clone();
        std::thread::spawn(move || crate::bench::run_bench_from(pki_dir(), &s, SECRET, args))
    };
    // nas-b: a steady trickle of full authentications, every one verified.
    let good = bench(&[
        "--bind",
        "127.0.0.2",
        "--tls",
        "1.3",
        "--rate",
        "20",
        "--duration",
        "5",
        "--expect-vlan",
        "100",
    ]);
    // it-nas: a flood of half-open handshakes, each a key exchange and a signature.
    let flood = bench(&[
        "--bind",
        "127.0.0.1",
        "--tls",
        "1.3",
        "--rate",
        "1500",
        "--abandon",
        "--timeout-ms",
        "500",
        "--retries",
        "0",
        "--duration",
        "5",
    ]);
    s.wait_log(&["nas=it-nas", "over its share"]);
    let (ok, report) = good.join().unwrap();
    assert!(ok, "{report}");
    assert!(report["completed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let _ = flood.join().unwrap();
    let log = s.log();
    assert!(
        !log.iter()
            .any(|l| l.contains("nas=nas-b") && l.contains("over its share")),
        "the light client stays at normal priority"
    );
}
