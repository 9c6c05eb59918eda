//! Every request that ends an authentication, or is dropped after its Message-Authenticator
//! checked out, ends once: exactly one audit record and one counter, whichever way it
//! ends. Each path is driven for real (eapol_test, a hand-made NAS, a SoftHSM2 token held
//! hung by another process, a dead OCSP responder) and the audit file and `/metrics` are
//! read back.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::admin::{admin_addr, audit_records, get, samples};
use crate::harness::{eapol_test, pki_dir, Server, SECRET};
use crate::hsm::Token;
use crate::replay::{attribute, replies_until, request, socket};

/// `[admin]` on an ephemeral port and `[audit]` into `dir`.
fn observed(dir: &Path) -> String {
    format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nsink = \"file\"\npath = \"{}\"\n",
        dir.join("audit.jsonl").display()
    )
}

/// The (outcome, reason) of every audit record, once there are `n`.
fn ends(dir: &Path, n: usize) -> Vec<(String, String)> {
    let (records, text) = audit_records(&dir.join("audit.jsonl"), |t| t.lines().count() >= n);
    assert_eq!(records.len(), n, "{text}");
    records
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The sum of every sample of `family` whose labels include `label`.
fn count(admin: SocketAddr, family: &str, label: &str) -> f64 {
    samples(&get(admin, "/metrics").2)
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}{{")) && k.contains(label))
        .map(|(_, v)| v)
        .sum()
}

fn pair(outcome: &str, reason: &str) -> (String, String) {
    (outcome.to_owned(), reason.to_owned())
}

/// Starts a conversation from `sock` with an EAP Identity; (State, EAP id) of the
/// EAP-TLS Start that answers it.
fn start_conversation(sock: &std::net::UdpSocket, id: u8) -> (Vec<u8>, u8) {
    sock.send(&request(
        1,
        id,
        &[(79, vec![2, id, 0, 8, 1, b'd', b'e', b'v'])],
        SECRET,
    ))
    .unwrap();
    let reply = replies_until(sock, id).pop().unwrap();
    assert_eq!(reply[0], 11, "Access-Challenge");
    let eap = attribute(&reply, 79).unwrap();
    (attribute(&reply, 24).unwrap(), eap[1])
}

#[test]
fn each_reject_and_discard_path_leaves_one_record_and_one_count() {
    let dir = tempfile::tempdir().unwrap();
    let obs = observed(dir.path());
    // A dead OCSP responder (hard-fail), room for two conversations, a second NAS.
    let s = Server::start_with(|c| {
        format!(
            "{}\n[revocation]\nresponders = [{{ url = \"http://127.0.0.1:9/\" }}]\n\
             timeout_ms = 500\ncrl_distribution_points = false\n{obs}\n\
             [[client]]\nname = \"nas-b\"\naddress = \"127.0.0.2\"\nsecret = \"{SECRET}\"\n",
            c.replace(
                "[server]\n",
                "[server]\nmax_sessions = 2\nmax_sessions_per_client = 2\n"
            )
        )
    });
    let admin = admin_addr(&s);
    let mut want = Vec::new();

    // OCSP hard-fail: the responder is unreachable.
    let out = eapol_test(&s, pki_dir(), "tls13-ecdsa", &[]);
    assert!(out.contains("code=3"), "{out}");
    want.push(pair("reject", "revocation_unknown"));
    assert_eq!(ends(dir.path(), want.len()), want);

    // A device certificate without the clientAuth EKU.
    let out = eapol_test(&s, pki_dir(), "wrong-eku", &[]);
    assert!(out.contains("code=3"), "{out}");
    want.push(pair("reject", "wrong_eku"));
    assert_eq!(ends(dir.path(), want.len()), want);

    // Three conversations in a table of two: the oldest is evicted; its State is unknown.
    let a = socket("127.0.0.1:0", &s);
    let b = socket("127.0.0.2:0", &s);
    let (first, _) = start_conversation(&a, 1);
    let (b1, b1_eap) = start_conversation(&b, 2);
    let (b2, b2_eap) = start_conversation(&b, 3);
    a.send(&request(
        1,
        4,
        &[(79, vec![2, 9, 0, 6, 13, 0]), (24, first)],
        SECRET,
    ))
    .unwrap();
    assert_eq!(replies_until(&a, 4).pop().unwrap()[0], 3);
    want.push(pair("reject", "unknown_state"));
    assert_eq!(ends(dir.path(), want.len()), want);

    // Another NAS presents a live conversation's State: dropped, the conversation left be.
    let ack = vec![2, b1_eap, 0, 6, 13, 0];
    a.send(&request(1, 5, &[(79, ack), (24, b1.clone())], SECRET))
        .unwrap();
    want.push(pair("discard", "state_of_other_client"));
    assert_eq!(ends(dir.path(), want.len()), want);

    // A TLS message announced larger than max_message_size: the reassembly cap.
    let mut huge = vec![2, b2_eap, 0, 0, 13, 0xC0, 0x00, 0x10, 0x00, 0x00];
    huge.extend([0x16; 100]);
    let len = u16::try_from(huge.len()).unwrap().to_be_bytes();
    huge[2..4].copy_from_slice(&len);
    b.send(&request(1, 6, &[(79, huge), (24, b2)], SECRET))
        .unwrap();
    assert_eq!(replies_until(&b, 6).pop().unwrap()[0], 3);
    want.push(pair("reject", "eap_tls_too_large"));
    assert_eq!(ends(dir.path(), want.len()), want);

    // The conversation the other NAS touched still stands: its owner's ACK where TLS data
    // is due is its framing error, not an unknown State.
    let ack = vec![2, b1_eap, 0, 6, 13, 0];
    b.send(&request(1, 7, &[(79, ack), (24, b1)], SECRET))
        .unwrap();
    assert_eq!(replies_until(&b, 7).pop().unwrap()[0], 3);
    want.push(pair("reject", "eap_tls_framing"));
    assert_eq!(ends(dir.path(), want.len()), want);

    for (outcome, reason) in &want {
        let family = if outcome == "discard" {
            "anchord_dropped_total"
        } else {
            "anchord_authentications_total"
        };
        let label = format!("reason=\"{reason}\"");
        assert_eq!(count(admin, family, &label), 1.0, "{family} {label}");
    }
}

#[test]
fn too_many_rounds_leaves_one_record_and_one_count() {
    let dir = tempfile::tempdir().unwrap();
    let obs = observed(dir.path());
    let s = Server::start_with(|c| {
        format!(
            "{}{obs}",
            c.replace("[tls]\n", "[tls]\nmax_rounds = 4\nfragment_size = 64\n")
        )
    });
    let admin = admin_addr(&s);
    let out = eapol_test(&s, pki_dir(), "tls13-ecdsa", &[]);
    assert!(out.contains("code=3"), "{out}");
    assert_eq!(ends(dir.path(), 1), [pair("reject", "too_many_rounds")]);
    let label = "reason=\"too_many_rounds\"";
    assert_eq!(count(admin, "anchord_authentications_total", label), 1.0);
}

/// Holds an exclusive POSIX (fcntl) lock on every file of the token labelled `label`, from
/// another process: SoftHSM2 takes such locks around its object reads, so its next
/// signature blocks, as on a hung token. Released when the child is killed.
fn hang_token(t: &Token, label: &str) -> Child {
    let dir: PathBuf = t.token_dir(label);
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl, glob, sys, time\n\
             held = []\n\
             for p in glob.glob(sys.argv[1] + '/*'):\n\
             \x20   f = open(p, 'r+')\n\
             \x20   fcntl.lockf(f, fcntl.LOCK_EX)\n\
             \x20   held.append(f)\n\
             print(len(held), flush=True)\n\
             time.sleep(600)\n",
        )
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (install: eapol-tests/install-deps.sh)");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held: u32 = line.trim().parse().unwrap();
    assert!(held > 0, "no files in {}", dir.display());
    child
}

#[test]
fn an_hsm_timeout_mid_handshake_leaves_one_record_naming_the_device() {
    let t = Token::new();
    let work = tempfile::tempdir().unwrap();
    t.init_with_device(work.path(), "device-ecdsa");
    let obs = observed(work.path());
    let s = t.serve_with(&format!("sign_timeout_ms = 500\n{obs}"));
    let admin = admin_addr(&s);
    let mut hung = hang_token(&t, "anchord");
    let ok = crate::hsm::eapol(&s, work.path(), "tls13-ecdsa");
    let _ = hung.kill();
    let _ = hung.wait();
    assert!(!ok, "no signature, no success");
    let (records, text) = audit_records(&work.path().join("audit.jsonl"), |t| {
        t.contains("hsm_timeout")
    });
    let ends: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "authentication")
        .collect();
    assert_eq!(ends.len(), 1, "{text}");
    assert_eq!(ends[0]["reason"], "hsm_timeout");
    assert_eq!(ends[0]["identity"], "device-ecdsa");
    let label = "reason=\"hsm_timeout\"";
    assert_eq!(count(admin, "anchord_authentications_total", label), 1.0);
}

#[test]
fn a_request_under_way_at_shutdown_still_ends_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let obs = observed(dir.path());
    // A responder that accepts and never answers: the device waits on it for 1 s.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stall.local_addr().unwrap());
    let mut s = Server::start_with(|c| {
        format!(
            "{c}\n[revocation]\nresponders = [{{ url = \"{url}\" }}]\ntimeout_ms = 1000\n\
             crl_distribution_points = false\n{obs}"
        )
    });
    let port = s.addr.port().to_string();
    let device = std::thread::spawn(move || {
        let conf = crate::harness::repo().join("eapol-tests/tls13-ecdsa.conf");
        Command::new("eapol_test")
            .current_dir(pki_dir())
            .arg("-c")
            .arg(conf)
            .args(["-a", "127.0.0.1", "-p", &port, "-s", SECRET, "-t", "20"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    // The server is waiting on the responder for the device: now it is told to stop.
    let (_held, _) = stall.accept().unwrap();
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    let out = String::from_utf8_lossy(&device.join().unwrap().stdout).into_owned();
    assert!(out.contains("code=3"), "the device got its answer: {out}");
    assert_eq!(ends(dir.path(), 1), [pair("reject", "revocation_unknown")]);
}
