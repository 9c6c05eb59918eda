//! Requests from one client that touch another client's conversation, duplicate client
//! names, and malformed attribute layouts, with a hand-made RADIUS client (and eapol_test
//! through a small UDP relay where a whole conversation must still complete).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::Md5;

use crate::harness::{eapol_test, pki_dir, Server, SECRET};

/// Builds a signed request; Message-Authenticator goes last, computed over the packet.
pub(crate) fn request(code: u8, id: u8, attrs: &[(u8, Vec<u8>)], secret: &str) -> Vec<u8> {
    let mut p = vec![code, id, 0, 0];
    p.extend(rand::random::<[u8; 16]>());
    for (t, v) in attrs {
        p.push(*t);
        p.push(u8::try_from(v.len() + 2).unwrap());
        p.extend(v);
    }
    let at = p.len() + 2;
    p.extend([80, 18]);
    p.extend([0; 16]);
    let len = u16::try_from(p.len()).unwrap().to_be_bytes();
    p[2..4].copy_from_slice(&len);
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&p);
    let ma = mac.finalize().into_bytes();
    p[at..at + 16].copy_from_slice(&ma);
    p
}

/// Attributes of a reply (not authenticated here; tests/it/wire.rs covers that).
pub(crate) fn attributes(reply: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut attrs = Vec::new();
    let mut rest = &reply[20..];
    while !rest.is_empty() {
        let len = usize::from(rest[1]);
        attrs.push((rest[0], rest[2..len].to_vec()));
        rest = &rest[len..];
    }
    attrs
}

pub(crate) fn attribute(reply: &[u8], ty: u8) -> Option<Vec<u8>> {
    attributes(reply)
        .into_iter()
        .find(|a| a.0 == ty)
        .map(|a| a.1)
}

/// A UDP socket on `local` talking to the server.
pub(crate) fn socket(local: &str, server: &Server) -> UdpSocket {
    let sock = UdpSocket::bind(local).unwrap();
    sock.connect(server.addr).unwrap();
    sock
}

/// Every datagram until one with Identifier `until` arrives (10 s at most).
pub(crate) fn replies_until(sock: &UdpSocket, until: u8) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("a reply within 10 s");
        out.push(buf[..n].to_vec());
        if buf[1] == until {
            return out;
        }
    }
}

fn identity_response(eap_id: u8) -> Vec<u8> {
    vec![2, eap_id, 0, 8, 1, b'd', b'e', b'v']
}

/// An EAP-TLS ACK (no data): where the server waits for TLS data, a framing error.
fn tls_ack(eap_id: u8) -> Vec<u8> {
    vec![2, eap_id, 0, 6, 13, 0]
}

/// The test config plus a second client entry, `nas-b` on 127.0.0.2, same secret.
fn two_clients() -> Server {
    Server::start_with(|c| {
        format!(
            "{c}\n[[client]]\nname = \"nas-b\"\naddress = \"127.0.0.2\"\nsecret = \"{SECRET}\"\n"
        )
    })
}

/// Replays `state` from client `nas-b`, checks that it gets no answer and that the drop
/// reason is logged.
fn replay_from_other_client(s: &Server, b: &UdpSocket, state: &[u8], eap_id: u8, id: u8) {
    b.send(&request(
        1,
        id,
        &[(79, tls_ack(eap_id)), (24, state.to_vec())],
        SECRET,
    ))
    .unwrap();
    s.wait_log(&[
        "request dropped",
        "reason=\"state_of_other_client\"",
        "nas=nas-b",
    ]);
    // Whatever the replay caused would be answered before this Status-Server is.
    b.send(&request(12, id.wrapping_add(1), &[], SECRET))
        .unwrap();
    let got = replies_until(b, id.wrapping_add(1));
    assert_eq!(
        got.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(),
        vec![(2, id.wrapping_add(1))],
        "the replayed State got no answer"
    );
}

#[test]
fn state_replayed_by_another_client_is_dropped_and_the_conversation_continues() {
    let s = two_clients();
    let a = socket("127.0.0.1:0", &s);
    let b = socket("127.0.0.2:0", &s);
    a.send(&request(1, 1, &[(79, identity_response(1))], SECRET))
        .unwrap();
    let challenge = replies_until(&a, 1).pop().unwrap();
    assert_eq!(challenge[0], 11);
    let state = attribute(&challenge, 24).unwrap();
    let eap_id = attribute(&challenge, 79).unwrap()[1];

    replay_from_other_client(&s, &b, &state, eap_id, 50);

    // The conversation is still there for its own client: an ACK where the ClientHello is
    // due is its framing error (an unknown State would be `unknown_state`).
    a.send(&request(
        1,
        2,
        &[(79, tls_ack(eap_id)), (24, state.clone())],
        SECRET,
    ))
    .unwrap();
    let reply = replies_until(&a, 2).pop().unwrap();
    assert_eq!(reply[0], 3);
    s.wait_log(&["reason=\"eap_tls_framing\"", "nas=it-nas"]);
    assert!(
        !s.log().iter().any(|l| l.contains("unknown_state")),
        "{:#?}",
        s.log()
    );
}

/// Relays eapol_test's datagrams to the server from 127.0.0.1 (so the server sees client
/// `it-nas`), and before forwarding the first Access-Challenge runs `hook` with it.
fn relay_with_hook(s: &Server, hook: impl FnOnce(&[u8]) + Send) -> String {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = socket("127.0.0.1:0", s);
    for sock in [&front, &back] {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    let port = front.local_addr().unwrap().port().to_string();
    let peer: Mutex<Option<SocketAddr>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *peer.lock().unwrap() = Some(from);
                    back.send(&buf[..n]).unwrap();
                }
            }
        });
        scope.spawn(|| {
            let mut hook = Some(hook);
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = back.recv(&mut buf) {
                    let reply = &buf[..n];
                    if reply[0] == 11 && attribute(reply, 24).is_some() {
                        if let Some(h) = hook.take() {
                            h(reply);
                        }
                    }
                    let to = peer.lock().unwrap().unwrap();
                    front.send_to(reply, to).unwrap();
                }
            }
        });
        let out = eapol_test(s, pki_dir(), "tls13-ecdsa", &["-p", &port]);
        stop.store(true, Ordering::Relaxed);
        out
    })
}

#[test]
fn another_clients_replay_does_not_stop_a_real_device() {
    let s = two_clients();
    let b = socket("127.0.0.2:0", &s);
    let out = relay_with_hook(&s, |challenge| {
        let state = attribute(challenge, 24).unwrap();
        let eap_id = attribute(challenge, 79).unwrap()[1];
        replay_from_other_client(&s, &b, &state, eap_id, 90);
    });
    assert!(out.lines().any(|l| l.trim() == "SUCCESS"), "{out}");
    s.wait_log(&["outcome=\"accept\"", "identity=device-ecdsa", "nas=it-nas"]);
}

#[test]
fn duplicate_client_names_are_refused_by_check_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_dir();
    let text = format!(
        r#"[server]
listen = ["127.0.0.1:0"]

[tls]
certificate = "{pki}/server.pem"
private_key = "{pki}/server.key"
ca = ["{pki}/root-ca.pem"]

[[client]]
name = "edge"
address = "127.0.0.1"
secret = "one"

[[client]]
name = "edge"
address = "127.0.0.2"
secret = "two"
"#,
        pki = pki.display()
    );
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "name = \"edge\"")
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 2);
    let path = dir.path().join("anchord.toml");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            format!(
                "{}:{}: client[1].name: duplicate client name `edge` (first used at line {}): \
                 names must be unique",
                path.display(),
                lines[1],
                lines[0]
            )
            .as_str(),
            "1 error(s)",
        ]
    );
}

#[test]
fn second_state_or_split_eap_message_is_dropped_with_its_reason() {
    let s = Server::start();
    let a = socket("127.0.0.1:0", &s);
    a.send(&request(1, 1, &[(79, identity_response(1))], SECRET))
        .unwrap();
    let challenge = replies_until(&a, 1).pop().unwrap();
    let state = attribute(&challenge, 24).unwrap();
    let eap_id = attribute(&challenge, 79).unwrap()[1];
    // Both carry the live State: processed, either would end the conversation.
    a.send(&request(
        1,
        2,
        &[
            (24, state.clone()),
            (79, tls_ack(eap_id)),
            (24, state.clone()),
        ],
        SECRET,
    ))
    .unwrap();
    let ack = tls_ack(eap_id);
    a.send(&request(
        1,
        3,
        &[
            (79, ack[..3].to_vec()),
            (24, state.clone()),
            (79, ack[3..].to_vec()),
        ],
        SECRET,
    ))
    .unwrap();
    a.send(&request(12, 4, &[], SECRET)).unwrap();
    let got = replies_until(&a, 4);
    assert_eq!(
        got.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(),
        vec![(2, 4)]
    );
    s.wait_log(&["datagram dropped", "reason=\"duplicate_state\""]);
    s.wait_log(&["datagram dropped", "reason=\"split_eap_message\""]);
    // The conversation was not touched: its framing error, not unknown_state.
    a.send(&request(
        1,
        5,
        &[(79, tls_ack(eap_id)), (24, state)],
        SECRET,
    ))
    .unwrap();
    assert_eq!(replies_until(&a, 5).pop().unwrap()[0], 3);
    s.wait_log(&["reason=\"eap_tls_framing\""]);
}
