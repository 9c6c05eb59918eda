//! RADIUS on the wire, with a hand-made client: authenticators, Message-Authenticator
//! rules, duplicates and malformed datagrams. Replies are checked with RustCrypto's MD5 and
//! HMAC directly, not with anchord's own helpers.

use std::net::UdpSocket;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

use crate::harness::{Server, SECRET};

const EAP_IDENTITY: &[u8] = &[2, 0x21, 0, 8, 1, b'd', b'e', b'v'];

/// Builds a request; Message-Authenticator (when asked) goes last, computed over the packet.
fn request(code: u8, id: u8, attrs: &[(u8, Vec<u8>)], secret: &str, with_ma: bool) -> Vec<u8> {
    let mut p = vec![code, id, 0, 0];
    p.extend(rand::random::<[u8; 16]>());
    for (t, v) in attrs {
        p.push(*t);
        p.push(u8::try_from(v.len() + 2).unwrap());
        p.extend(v);
    }
    let at = p.len() + 2;
    if with_ma {
        p.extend([80, 18]);
        p.extend([0; 16]);
    }
    let len = u16::try_from(p.len()).unwrap().to_be_bytes();
    p[2..4].copy_from_slice(&len);
    if with_ma {
        let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&p);
        let ma = mac.finalize().into_bytes();
        p[at..at + 16].copy_from_slice(&ma);
    }
    p
}

struct Client {
    sock: UdpSocket,
}

impl Client {
    fn new(server: &Server) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server.addr).unwrap();
        Self { sock }
    }

    fn send(&self, p: &[u8]) {
        self.sock.send(p).unwrap();
    }

    /// Insists that no datagram is waiting. Called once the server has logged the drop of
    /// every bad request and answered a later good one, so a reply to a bad request would be
    /// here already: no quiet window to guess.
    fn assert_nothing_queued(&self) {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let r = self.sock.recv(&mut buf);
        self.sock.set_nonblocking(false).unwrap();
        match r {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            Ok(n) => panic!("unexpected reply {:?}", &buf[..n]),
        }
    }

    fn exchange(&self, p: &[u8]) -> Vec<u8> {
        self.send(p);
        self.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).expect("a reply");
        buf[..n].to_vec()
    }
}

/// Checks Response Authenticator and Message-Authenticator (first attribute) of a reply.
fn assert_authentic(reply: &[u8], request: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(reply[1], request[1], "identifier echoed");
    assert_eq!(
        usize::from(u16::from_be_bytes([reply[2], reply[3]])),
        reply.len()
    );
    let mut check = reply.to_vec();
    check[4..20].copy_from_slice(&request[4..20]);
    let mut h = Md5::new();
    h.update(&check);
    h.update(SECRET.as_bytes());
    assert_eq!(&h.finalize()[..], &reply[4..20], "Response Authenticator");
    assert_eq!(
        &reply[20..22],
        &[80, 18],
        "Message-Authenticator is the first attribute"
    );
    let ma = check[22..38].to_vec();
    check[22..38].fill(0);
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&check);
    assert_eq!(
        mac.finalize().into_bytes().to_vec(),
        ma,
        "Message-Authenticator"
    );
    let mut attrs = Vec::new();
    let mut rest = &reply[20..];
    while !rest.is_empty() {
        let len = usize::from(rest[1]);
        attrs.push((rest[0], rest[2..len].to_vec()));
        rest = &rest[len..];
    }
    attrs
}

/// The first value of attribute `ty`.
fn attr(attrs: &[(u8, Vec<u8>)], ty: u8) -> Vec<u8> {
    attrs.iter().find(|a| a.0 == ty).unwrap().1.clone()
}

/// The `reason="..."` of each log line, in order.
fn reasons(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let rest = l.split("reason=\"").nth(1).unwrap();
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

fn status_server(id: u8) -> Vec<u8> {
    request(12, id, &[], SECRET, true)
}

#[test]
fn status_server_is_answered_with_an_authentic_accept() {
    let s = Server::start();
    let c = Client::new(&s);
    let req = status_server(5);
    let reply = c.exchange(&req);
    assert_eq!(reply[0], 2);
    assert_authentic(&reply, &req);
}

#[test]
fn eap_identity_gets_a_tls_start_challenge_with_state() {
    let s = Server::start();
    let c = Client::new(&s);
    let req = request(
        1,
        9,
        &[(1, b"dev".to_vec()), (79, EAP_IDENTITY.to_vec())],
        SECRET,
        true,
    );
    let reply = c.exchange(&req);
    assert_eq!(reply[0], 11, "Access-Challenge");
    let attrs = assert_authentic(&reply, &req);
    let eap = &attrs.iter().find(|a| a.0 == 79).unwrap().1;
    assert_eq!(eap[0], 1, "EAP-Request");
    assert_eq!(eap[4], 13, "EAP-TLS");
    assert_eq!(eap[5], 0x20, "Start flag only");
    let state = &attrs.iter().find(|a| a.0 == 24).unwrap().1;
    assert_eq!(state.len(), 16);
}

#[test]
fn retransmission_gets_the_identical_cached_reply() {
    let s = Server::start();
    let c = Client::new(&s);
    let req = request(1, 3, &[(79, EAP_IDENTITY.to_vec())], SECRET, true);
    let first = c.exchange(&req);
    let first_state = attr(&assert_authentic(&first, &req), 24);
    let again = c.exchange(&req);
    assert_eq!(first, again, "same bytes, same State: not processed twice");
    // A new request (new authenticator) is new work: a fresh State.
    let req2 = request(1, 3, &[(79, EAP_IDENTITY.to_vec())], SECRET, true);
    let fresh = c.exchange(&req2);
    let fresh_state = attr(&assert_authentic(&fresh, &req2), 24);
    assert_eq!((first_state.len(), fresh_state.len()), (16, 16));
    assert_ne!(first_state, fresh_state);
    // Two conversations started, not three: the retransmission only resent the reply. The
    // second challenge line is written after everything logged for the retransmission.
    let challenges = s.wait_log_lines(&["challenge", "round="], 2);
    assert_eq!(challenges.len(), 2, "{challenges:#?}");
    s.wait_log(&["retransmission", "cached reply resent"]);
}

#[test]
fn wrong_shared_secret_gets_no_answer() {
    let s = Server::start();
    let c = Client::new(&s);
    c.send(&request(
        1,
        1,
        &[(79, EAP_IDENTITY.to_vec())],
        "not-the-secret",
        true,
    ));
    s.wait_log(&["datagram dropped", "reason=\"bad_message_authenticator\""]);
    let good = status_server(2);
    assert_authentic(&c.exchange(&good), &good);
    c.assert_nothing_queued();
}

#[test]
fn eap_without_message_authenticator_gets_no_answer() {
    let s = Server::start_with(|c| {
        c.replace(
            "secret = ",
            "require_message_authenticator = false\nsecret = ",
        )
    });
    let c = Client::new(&s);
    c.send(&request(
        1,
        1,
        &[(79, EAP_IDENTITY.to_vec())],
        SECRET,
        false,
    ));
    s.wait_log(&[
        "datagram dropped",
        "reason=\"missing_message_authenticator\"",
    ]);
    // With the per-client switch off, a non-EAP request without it is still answered.
    let reply = c.exchange(&request(1, 2, &[(1, b"pap-user".to_vec())], SECRET, false));
    assert_eq!(reply[1], 2);
    assert_eq!(reply[0], 3, "non-EAP is rejected: only EAP-TLS is offered");
    s.wait_log(&["reason=\"no_eap\""]);
    c.assert_nothing_queued();
}

#[test]
fn message_authenticator_is_required_by_default() {
    let s = Server::start();
    let c = Client::new(&s);
    c.send(&request(1, 1, &[(1, b"pap-user".to_vec())], SECRET, false));
    s.wait_log(&[
        "datagram dropped",
        "reason=\"missing_message_authenticator\"",
    ]);
    let good = status_server(2);
    assert_authentic(&c.exchange(&good), &good);
    c.assert_nothing_queued();
}

#[test]
fn status_server_without_message_authenticator_gets_no_answer() {
    // RFC 5997 §3: Message-Authenticator is mandatory on Status-Server, whatever the
    // per-client switch says.
    let s = Server::start_with(|c| {
        c.replace(
            "secret = ",
            "require_message_authenticator = false\nsecret = ",
        )
    });
    let c = Client::new(&s);
    c.send(&request(12, 1, &[], SECRET, false));
    let drop = s.wait_log(&["datagram dropped"]);
    assert_eq!(reasons(&[drop]), vec!["missing_message_authenticator"]);
    let good = status_server(2);
    assert_authentic(&c.exchange(&good), &good);
    c.assert_nothing_queued();
}

#[test]
fn malformed_datagrams_get_no_answer_and_the_next_request_is_served() {
    let s = Server::start();
    let c = Client::new(&s);
    let good = status_server(200);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 5);
    let mut overflowing = good.clone();
    overflowing[21] = 200; // attribute length runs past the packet
    let mut huge = status_server(201);
    huge.resize(5000, 0);
    huge[2..4].copy_from_slice(&5000u16.to_be_bytes()); // Length over 4096
    let bad_length = {
        let mut b = good.clone();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        b
    };
    let mut reply_code = status_server(203);
    reply_code[0] = 2; // an Access-Accept sent to the server
    let bad = [
        &[0xFFu8; 10][..],
        &truncated,
        &overflowing,
        &huge,
        &bad_length,
        &reply_code,
    ];
    for b in bad {
        c.send(b);
    }
    // Datagrams are handled concurrently: compare the reasons as a sorted list.
    let mut got = reasons(&s.wait_log_lines(&["datagram dropped"], bad.len()));
    got.sort();
    assert_eq!(
        got,
        vec![
            "attribute_overflow",
            "bad_length",
            "bad_length",
            "too_short",
            "truncated",
            "unexpected_code"
        ]
    );
    let good = status_server(202);
    assert_authentic(&c.exchange(&good), &good);
    c.assert_nothing_queued();
}

#[test]
fn unknown_client_gets_no_answer() {
    let s =
        Server::start_with(|c| c.replace("address = \"127.0.0.1\"", "address = \"127.0.0.2/32\""));
    let c = Client::new(&s);
    c.send(&status_server(1));
    // Logged before the datagram is even parsed; nothing is sent after it.
    s.wait_log(&["datagram from unknown client dropped"]);
    c.assert_nothing_queued();
}

#[test]
fn unknown_state_is_rejected_with_eap_failure() {
    let s = Server::start();
    let c = Client::new(&s);
    let eap_tls_ack = vec![2, 0x22, 0, 6, 13, 0];
    let req = request(
        1,
        4,
        &[(79, eap_tls_ack), (24, vec![0xAB; 16])],
        SECRET,
        true,
    );
    let reply = c.exchange(&req);
    assert_eq!(reply[0], 3);
    let attrs = assert_authentic(&reply, &req);
    assert_eq!(
        attrs.iter().find(|a| a.0 == 79).unwrap().1,
        vec![4, 0x22, 0, 4]
    );
    s.wait_log(&["reason=\"unknown_state\""]);
}

#[test]
fn proxy_state_is_echoed_in_order() {
    let s = Server::start();
    let c = Client::new(&s);
    let req = request(
        12,
        8,
        &[(33, b"one".to_vec()), (33, b"two".to_vec())],
        SECRET,
        true,
    );
    let reply = c.exchange(&req);
    let attrs = assert_authentic(&reply, &req);
    let ps: Vec<_> = attrs
        .iter()
        .filter(|a| a.0 == 33)
        .map(|a| a.1.clone())
        .collect();
    assert_eq!(ps, vec![b"one".to_vec(), b"two".to_vec()]);
}

fn eap_identity(id: u8) -> Vec<u8> {
    vec![2, id, 0, 8, 1, b'd', b'e', b'v']
}

#[test]
fn session_table_is_bounded_and_the_oldest_conversation_is_evicted() {
    let s = Server::start_with(|c| c.replace("[server]\n", "[server]\nmax_sessions = 5\n"));
    let c = Client::new(&s);
    let mut states = Vec::new();
    let mut eap_ids = Vec::new();
    for i in 0..50u8 {
        let req = request(1, i, &[(79, eap_identity(i))], SECRET, true);
        let attrs = assert_authentic(&c.exchange(&req), &req);
        states.push(attr(&attrs, 24));
        eap_ids.push(attr(&attrs, 79)[1]);
    }
    // Probe every conversation, newest first, with an ACK where TLS data is due: a live one
    // fails with a framing error, an evicted one is an unknown State. Probes are sequential
    // and each reject is logged (rate-limited per reason: the first 10 in 10 s) before its
    // reply, so the log holds the reasons in order.
    for i in (0..50u8).rev() {
        let ack = vec![2, eap_ids[usize::from(i)], 0, 6, 13, 0];
        let probe = request(
            1,
            100 + i,
            &[(79, ack), (24, states[usize::from(i)].clone())],
            SECRET,
            true,
        );
        assert_eq!(c.exchange(&probe)[0], 3);
    }
    // Ten unknown-State lines (the limiter's share) come after every framing line there is.
    let got = reasons(&s.wait_log_lines(&["outcome=\"reject\""], 15));
    let mut want = vec!["eap_tls_framing"; 5];
    want.extend(["unknown_state"; 10]);
    assert_eq!(
        got, want,
        "exactly the 5 newest conversations survive (a sixth framing line would come before \
         the unknown States)"
    );
}

/// Every way the log could print `bytes`: hex (either case, with or without separators),
/// Rust's `{:?}` and `{:02x?}` of a byte slice, base64, the raw bytes and their escaped forms.
fn printed_forms(bytes: &[u8]) -> Vec<String> {
    use base64::Engine;
    let hex = hex::encode(bytes);
    let pairs: Vec<&str> = (0..hex.len()).step_by(2).map(|i| &hex[i..i + 2]).collect();
    let raw = String::from_utf8_lossy(bytes).into_owned();
    let mut forms = vec![
        hex.clone(),
        hex.to_uppercase(),
        pairs.join(":"),
        pairs.join(":").to_uppercase(),
        pairs.join(" "),
        format!("{bytes:?}"),
        format!("{bytes:02x?}"),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        format!("{raw:?}").trim_matches('"').to_owned(),
        bytes.escape_ascii().to_string(),
        raw,
    ];
    // An 8-byte prefix in hex is a leak as well (a truncated State is still most of one).
    if bytes.len() > 8 {
        forms.push(hex[..16].to_owned());
    }
    forms
}

#[test]
fn debug_log_summarises_packets_without_payloads() {
    let s = Server::start();
    let c = Client::new(&s);
    let eap = eap_identity(1);
    let req = request(
        1,
        1,
        &[
            (1, b"dev".to_vec()),
            (12, vec![0, 0, 5, 0]),
            (79, eap.clone()),
        ],
        SECRET,
        true,
    );
    let reply = c.exchange(&req);
    let attrs = assert_authentic(&reply, &req);
    let (state, reply_eap) = (attr(&attrs, 24), attr(&attrs, 79));
    s.wait_log(&[
        "request",
        "User-Name=\"dev\"",
        "Framed-MTU=1280",
        "EAP-Message(len=8)",
        "Message-Authenticator(len=16)",
    ]);
    s.wait_log(&["reply", "code=11", "State(len=16)"]);
    // A second round carries the State back (an ACK where TLS data is due: rejected).
    let ack = vec![2, reply_eap[1], 0, 6, 13, 0];
    let req2 = request(
        1,
        2,
        &[(79, ack.clone()), (24, state.clone())],
        SECRET,
        true,
    );
    let reply2 = c.exchange(&req2);
    assert_authentic(&reply2, &req2);
    s.wait_log(&["request", "radius.id=2", "State(len=16)"]);
    s.wait_log(&["reply", "code=3"]);
    let secrets = [
        ("request EAP-Message", eap),
        (
            "request Message-Authenticator",
            req[req.len() - 16..].to_vec(),
        ),
        ("reply Message-Authenticator", reply[22..38].to_vec()),
        ("reply EAP-Message", reply_eap),
        ("State", state),
        ("second request EAP-Message", ack),
        (
            "second request Message-Authenticator",
            req2[req2.len() - 16..].to_vec(),
        ),
        (
            "second reply Message-Authenticator",
            reply2[22..38].to_vec(),
        ),
        ("shared secret", SECRET.as_bytes().to_vec()),
    ];
    let log = s.log().join("\n");
    for (what, bytes) in &secrets {
        for form in printed_forms(bytes) {
            assert!(!log.contains(&form), "{what} printed as {form:?} in\n{log}");
        }
    }
}

#[test]
fn ipv6_clients_are_served() {
    let s = Server::start_with(|c| {
        c.replace("\"127.0.0.1:0\"", "\"[::1]:0\"")
            .replace("address = \"127.0.0.1\"", "address = \"::1/128\"")
    });
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.connect(s.addr).unwrap();
    let c = Client { sock };
    let req = status_server(7);
    let reply = c.exchange(&req);
    assert_eq!(reply[0], 2);
    assert_authentic(&reply, &req);
}

#[test]
fn one_client_cannot_hold_more_than_its_share_of_sessions() {
    let s =
        Server::start_with(|c| c.replace("[server]\n", "[server]\nmax_sessions_per_client = 3\n"));
    let c = Client::new(&s);
    let start = |id: u8| {
        let req = request(1, id, &[(79, eap_identity(id))], SECRET, true);
        let reply = c.exchange(&req);
        let attrs = assert_authentic(&reply, &req);
        (reply[0], attrs)
    };
    let mut open = Vec::new();
    for id in 0..3 {
        let (code, attrs) = start(id);
        assert_eq!(code, 11);
        open.push(attrs);
    }
    assert_eq!(start(3).0, 3, "a fourth conversation is refused");
    s.wait_log(&["reason=\"too_many_sessions\""]);
    // One conversation ends (an ACK where TLS data is due fails it): room for a new one.
    let state = open[0].iter().find(|a| a.0 == 24).unwrap().1.clone();
    let eap_id = open[0].iter().find(|a| a.0 == 79).unwrap().1[1];
    let end = request(
        1,
        50,
        &[(79, vec![2, eap_id, 0, 6, 13, 0]), (24, state)],
        SECRET,
        true,
    );
    assert_eq!(c.exchange(&end)[0], 3);
    assert_eq!(start(4).0, 11, "the freed slot is usable");
}
