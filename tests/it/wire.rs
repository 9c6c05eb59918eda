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

    /// Every reply that arrives within `wait`.
    fn replies(&self, wait: Duration) -> Vec<Vec<u8>> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
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
    let again = c.exchange(&req);
    assert_eq!(first, again, "same bytes, same State: not processed twice");
    // A new request (new authenticator) is new work: a fresh State.
    let fresh = c.exchange(&request(1, 3, &[(79, EAP_IDENTITY.to_vec())], SECRET, true));
    assert_ne!(first[20..], fresh[20..]);
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
    c.send(&status_server(2));
    let replies = c.replies(Duration::from_millis(500));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0][1], 2, "only the good request is answered");
    s.wait_log(&["datagram dropped", "bad_message_authenticator"]);
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
    // With the per-client switch off, a non-EAP request without it is still answered.
    c.send(&request(1, 2, &[(1, b"pap-user".to_vec())], SECRET, false));
    let replies = c.replies(Duration::from_millis(500));
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0][1], 2);
    assert_eq!(
        replies[0][0], 3,
        "non-EAP is rejected: only EAP-TLS is offered"
    );
    s.wait_log(&["datagram dropped", "missing_message_authenticator"]);
}

#[test]
fn message_authenticator_is_required_by_default() {
    let s = Server::start();
    let c = Client::new(&s);
    c.send(&request(1, 1, &[(1, b"pap-user".to_vec())], SECRET, false));
    c.send(&status_server(2));
    let replies = c.replies(Duration::from_millis(500));
    assert_eq!(replies.iter().map(|r| r[1]).collect::<Vec<_>>(), vec![2]);
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
    for bad in [
        &[0xFFu8; 10][..],
        &truncated,
        &overflowing,
        &huge,
        &bad_length,
        &reply_code,
    ] {
        c.send(bad);
    }
    c.send(&status_server(202));
    let replies = c.replies(Duration::from_millis(700));
    assert_eq!(replies.iter().map(|r| r[1]).collect::<Vec<_>>(), vec![202]);
    for reason in [
        "too_short",
        "truncated",
        "attribute_overflow",
        "bad_length",
        "unexpected_code",
    ] {
        s.wait_log(&["datagram dropped", reason]);
    }
}

#[test]
fn unknown_client_gets_no_answer() {
    let s =
        Server::start_with(|c| c.replace("address = \"127.0.0.1\"", "address = \"127.0.0.2/32\""));
    let c = Client::new(&s);
    c.send(&status_server(1));
    assert!(c.replies(Duration::from_millis(500)).is_empty());
    s.wait_log(&["unknown client"]);
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
        states.push(attrs.iter().find(|a| a.0 == 24).unwrap().1.clone());
        eap_ids.push(attrs.iter().find(|a| a.0 == 79).unwrap().1[1]);
    }
    // The newest conversation is alive: an ACK where TLS data is due is a framing error.
    let ack = |eap_id: u8| vec![2, eap_id, 0, 6, 13, 0];
    let newest = request(
        1,
        100,
        &[(79, ack(eap_ids[49])), (24, states[49].clone())],
        SECRET,
        true,
    );
    assert_eq!(c.exchange(&newest)[0], 3);
    s.wait_log(&["reason=\"eap_tls_framing\""]);
    // The oldest was evicted.
    let oldest = request(
        1,
        101,
        &[(79, ack(eap_ids[0])), (24, states[0].clone())],
        SECRET,
        true,
    );
    assert_eq!(c.exchange(&oldest)[0], 3);
    s.wait_log(&["reason=\"unknown_state\""]);
}

#[test]
fn debug_log_summarises_packets_without_payloads() {
    let s = Server::start();
    let c = Client::new(&s);
    let req = request(
        1,
        1,
        &[
            (1, b"dev".to_vec()),
            (12, vec![0, 0, 5, 0]),
            (79, eap_identity(1)),
        ],
        SECRET,
        true,
    );
    c.exchange(&req);
    let line = s.wait_log(&[
        "request",
        "User-Name=\"dev\"",
        "Framed-MTU=1280",
        "EAP-Message(len=8)",
        "Message-Authenticator(len=16)",
    ]);
    assert!(!line.contains(SECRET));
    s.wait_log(&["reply", "code=11", "State(len=16)"]);
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
