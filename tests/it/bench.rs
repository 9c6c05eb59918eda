//! Smoke test of the load generator against the real server: a couple of seconds of load,
//! every authentication verified by `anchord bench`, zero errors allowed.

use std::process::Command;

use crate::harness::{pki_dir, Server, SECRET};

fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let pki = pki_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args([
            "bench",
            "--server",
            &server.addr.to_string(),
            "--secret",
            SECRET,
        ])
        .arg("--cert")
        .arg(pki.join("device-ecdsa.pem"))
        .arg("--key")
        .arg(pki.join("device-ecdsa.key"))
        .arg("--ca")
        .arg(pki.join("root-ca.pem"))
        .args(["--expect-vlan", "100", "--json"])
        .args(args)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report}");
    report
}

#[test]
fn load_generator_completes_verified_authentications_without_errors() {
    let s = Server::start();
    for tls in ["1.2", "1.3"] {
        let r = bench(
            &s,
            &["--tls", tls, "--concurrency", "4", "--duration", "1.5"],
        );
        assert!(r["completed"].as_u64().unwrap() >= 10, "{r}");
        assert_eq!(r["errors"].as_object().unwrap().len(), 0, "{r}");
        assert!(r["round_trips"].as_u64().unwrap() >= 5 * r["completed"].as_u64().unwrap());
    }
    // Small fragments both ways, and open loop.
    let r = bench(
        &s,
        &[
            "--fragment-size",
            "200",
            "--framed-mtu",
            "300",
            "--rate",
            "20",
            "--duration",
            "1",
        ],
    );
    assert!(r["completed"].as_u64().unwrap() >= 10, "{r}");
    assert!(
        r["round_trips"].as_u64().unwrap() >= 10 * r["completed"].as_u64().unwrap(),
        "{r}"
    );
}

#[test]
fn load_generator_counts_a_wrong_vlan_as_an_error() {
    let s = Server::start_with(|c| c.replace("vlan = \"100\"", "vlan = \"999\""));
    let pki = pki_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args(["bench", "--server", &s.addr.to_string(), "--secret", SECRET])
        .arg("--cert")
        .arg(pki.join("device-ecdsa.pem"))
        .arg("--key")
        .arg(pki.join("device-ecdsa.key"))
        .arg("--ca")
        .arg(pki.join("root-ca.pem"))
        .args([
            "--expect-vlan",
            "100",
            "--json",
            "--concurrency",
            "2",
            "--duration",
            "0.5",
        ])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert_eq!(r["completed"], 0, "{r}");
    assert!(r["errors"]["vlan_mismatch"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn load_generator_counts_a_wrong_secret_as_an_error() {
    let s = Server::start();
    let pki = pki_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_anchord"))
        .args([
            "bench",
            "--server",
            &s.addr.to_string(),
            "--secret",
            "wrong",
        ])
        .arg("--cert")
        .arg(pki.join("device-ecdsa.pem"))
        .arg("--key")
        .arg(pki.join("device-ecdsa.key"))
        .arg("--ca")
        .arg(pki.join("root-ca.pem"))
        .args([
            "--json",
            "--concurrency",
            "1",
            "--duration",
            "0.2",
            "--timeout-ms",
            "200",
            "--retries",
            "1",
        ])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert_eq!(r["completed"], 0, "{r}");
    assert!(r["errors"]["timeout"].as_u64().unwrap() > 0, "{r}");
    assert!(r["retransmissions"].as_u64().unwrap() > 0, "{r}");
}
