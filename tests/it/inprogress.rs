//! A request that takes longer than the duplicate window (here: a revocation responder that
//! never answers) is answered once: the NAS's retransmissions, late ones and ones under a new
//! Identifier alike, are dropped while it is processed, never rejected.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::Md5;

use crate::harness::{eapol_test, pki_dir, Server, SECRET};
use crate::replay::{attribute, socket};

/// `p` under a new Identifier and Request Authenticator, Message-Authenticator recomputed:
/// what a NAS sends when it gives up on an Identifier and tries again.
fn resigned(p: &[u8], identifier: u8) -> Vec<u8> {
    let mut p = p.to_vec();
    p[1] = identifier;
    p[4..20].copy_from_slice(&rand::random::<[u8; 16]>());
    let mut at = 20;
    while p[at] != 80 {
        at += usize::from(p[at + 1]);
    }
    p[at + 2..at + 18].fill(0);
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&p);
    let ma = mac.finalize().into_bytes();
    p[at + 2..at + 18].copy_from_slice(&ma);
    p
}

/// Waits (at most 20 s) for the server to connect to the stalled responder.
fn wait_for_connection(stall: &TcpListener) -> std::net::TcpStream {
    stall.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((conn, _)) = stall.accept() {
            return conn;
        }
        assert!(
            Instant::now() < deadline,
            "the server never asked the responder"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn slow_request_is_answered_once_and_its_copies_are_dropped_not_rejected() {
    // Accepts connections and never answers: the revocation check waits its full timeout
    // (4 s), longer than the 1 s duplicate window and than eapol_test's first retransmission
    // (3 s). Soft-fail then accepts the device.
    let stall = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stall.local_addr().unwrap());
    let s = Server::start_with(|c| {
        c.replace("[server]\n", "[server]\nduplicate_window_secs = 1\n")
            .replace(
                "[authorization]\n",
                &format!(
                    "[revocation]\ntimeout_ms = 4000\nsoft_fail = true\n\
                     responders = [{{ url = \"{url}\" }}]\n\n[authorization]\n"
                ),
            )
    });
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = socket("127.0.0.1:0", &s);
    for sock in [&front, &back] {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    let port = front.local_addr().unwrap().port().to_string();
    let peer: Mutex<Option<SocketAddr>> = Mutex::new(None);
    let last_with_state: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    let copy_ids: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    let copy_replies: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        // eapol_test -> server, remembering the last request that continues a conversation.
        scope.spawn(|| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *peer.lock().unwrap() = Some(from);
                    let p = &buf[..n];
                    if attribute(p, 24).is_some() {
                        *last_with_state.lock().unwrap() = Some(p.to_vec());
                    }
                    back.send(p).unwrap();
                }
            }
        });
        // server -> eapol_test; answers to our own copies are kept back and recorded.
        scope.spawn(|| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = back.recv(&mut buf) {
                    if copy_ids.lock().unwrap().contains(&buf[1]) {
                        copy_replies.lock().unwrap().push(buf[1]);
                        continue;
                    }
                    let to = peer.lock().unwrap().unwrap();
                    front.send_to(&buf[..n], to).unwrap();
                }
            }
        });
        // Once the server waits on the responder, the request it works on is the last one
        // with a State: send it again under a new Identifier.
        let checker = scope.spawn(|| {
            let conn = wait_for_connection(&stall);
            let p = last_with_state.lock().unwrap().clone().unwrap();
            let id = p[1] ^ 0x80;
            copy_ids.lock().unwrap().push(id);
            back.send(&resigned(&p, id)).unwrap();
            s.wait_log(&["request dropped", "reason=\"state_in_use\""]);
            conn
        });
        let out = eapol_test(&s, pki_dir(), "tls12-ecdsa", &["-p", &port]);
        stop.store(true, Ordering::Relaxed);
        drop(checker.join().unwrap());
        out
    });
    assert!(
        out.contains("Resending RADIUS message"),
        "eapol_test retransmitted while the request was in progress: {out}"
    );
    assert!(out.lines().any(|l| l.trim() == "SUCCESS"), "{out}");
    s.wait_log(&["retransmission while in progress: dropped"]);
    s.wait_log(&["outcome=\"accept\"", "revocation=soft-failed"]);
    assert_eq!(*copy_replies.lock().unwrap(), Vec::<u8>::new());
    let log = s.log();
    assert!(!log.iter().any(|l| l.contains("unknown_state")), "{log:#?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("authentication finished"))
            .count(),
        1,
        "{log:#?}"
    );
}
