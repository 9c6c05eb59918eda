//! Smoke test of the load generator against the real server: a couple of seconds of load,
//! every authentication verified by `anchord bench`, zero errors allowed.

use std::path::Path;
use std::process::Command;

use crate::harness::{pki_dir, Server, SECRET};

/// Runs `anchord bench --json` as device-ecdsa of the shared dev PKI.
fn run_bench(server: &Server, secret: &str, args: &[&str]) -> (bool, serde_json::Value) {
    run_bench_from(pki_dir(), server, secret, args)
}

/// Runs `anchord bench --json` as device-ecdsa of the PKI in `pki`; returns whether it
/// succeeded and its report.
pub(crate) fn run_bench_from(
    pki: &Path,
    server: &Server,
    secret: &str,
    args: &[&str],
) -> (bool, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchord"));
    cmd.args(["bench", "--server", &server.addr.to_string()])
        .arg("--cert")
        .arg(pki.join("device-ecdsa.pem"))
        .arg("--key")
        .arg(pki.join("device-ecdsa.key"))
        .arg("--ca")
        .arg(pki.join("root-ca.pem"));
    report(cmd, secret, args)
}

/// Runs the `anchord bench` command `cmd` with `--secret secret --json` and `args`;
/// whether it succeeded and its report.
fn report(mut cmd: Command, secret: &str, args: &[&str]) -> (bool, serde_json::Value) {
    let out = cmd
        .args(["--secret", secret, "--json"])
        .args(args)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--expect-vlan", "100"];
    all.extend_from_slice(args);
    let (ok, report) = run_bench(server, SECRET, &all);
    assert!(ok, "{report}");
    report
}

// How many authentications fit in a run depends on the machine and its load; these tests
// assert only that some completed and that every one of them was right: no errors, the
// expected exchanges per authentication, and the server's own record of each.
#[test]
fn load_generator_completes_verified_authentications_without_errors() {
    let s = Server::start();
    for tls in ["1.2", "1.3"] {
        let r = bench(
            &s,
            &["--tls", tls, "--concurrency", "4", "--duration", "1.5"],
        );
        let completed = r["completed"].as_u64().unwrap();
        assert!(completed >= 1, "{r}");
        assert_eq!(r["errors"].as_object().unwrap().len(), 0, "{r}");
        assert!(r["round_trips"].as_u64().unwrap() >= 5 * completed, "{r}");
        // Each completed authentication is an Access-Accept the server logged, in the
        // version asked for (more may be logged: conversations cut off by the end of the run).
        let tls_field = format!("tls=\"{tls}\"");
        s.wait_log_lines(&["outcome=\"accept\"", &tls_field], completed as usize);
        if tls == "1.2" {
            assert!(
                !s.log().iter().any(|l| l.contains("tls=\"1.3\"")),
                "a TLS 1.2 run negotiated 1.3"
            );
        }
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
    let completed = r["completed"].as_u64().unwrap();
    assert!(completed >= 1, "{r}");
    assert_eq!(r["errors"].as_object().unwrap().len(), 0, "{r}");
    assert!(r["round_trips"].as_u64().unwrap() >= 10 * completed, "{r}");
}

#[test]
fn load_generator_counts_a_wrong_vlan_as_an_error() {
    let s = Server::start_with(|c| c.replace("vlan = \"100\"", "vlan = \"999\""));
    let (ok, r) = run_bench(
        &s,
        SECRET,
        &[
            "--expect-vlan",
            "100",
            "--concurrency",
            "2",
            "--duration",
            "0.5",
        ],
    );
    assert!(!ok);
    assert_eq!(r["completed"], 0, "{r}");
    assert!(r["errors"]["vlan_mismatch"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn load_generator_counts_a_wrong_secret_as_an_error() {
    let s = Server::start();
    let (ok, r) = run_bench(
        &s,
        "wrong",
        &[
            "--concurrency",
            "1",
            "--duration",
            "0.2",
            "--timeout-ms",
            "200",
            "--retries",
            "1",
        ],
    );
    assert!(!ok);
    assert_eq!(r["completed"], 0, "{r}");
    assert!(r["errors"]["timeout"].as_u64().unwrap() > 0, "{r}");
    assert!(r["retransmissions"].as_u64().unwrap() > 0, "{r}");
}

/// Runs `anchord bench --accounting --json` against the server's accounting port.
fn run_accounting_bench(server: &Server, secret: &str, args: &[&str]) -> (bool, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchord"));
    cmd.args(["bench", "--accounting", "--server"])
        .arg(server.accounting_addr().to_string());
    report(cmd, secret, args)
}

#[test]
fn accounting_load_generator_completes_verified_sessions_and_counts_a_wrong_secret() {
    let s = Server::start();
    for args in [
        &["--concurrency", "4", "--duration", "1"][..],
        &["--rate", "50", "--duration", "1", "--interims", "0"][..],
    ] {
        let (ok, r) = run_accounting_bench(&s, SECRET, args);
        assert!(ok, "{r}");
        assert_eq!(r["errors"].as_object().unwrap().len(), 0, "{r}");
        // Each session ran to its Stop, every record answered and verified.
        let sessions = r["sessions"].as_u64().unwrap();
        let interims = if args.contains(&"0") { 0 } else { 2 };
        assert!(sessions >= 1, "{r}");
        assert_eq!(
            r["records"].as_u64().unwrap(),
            (2 + interims) * sessions,
            "{r}"
        );
        assert_eq!(r["by_status"]["start"].as_u64(), Some(sessions), "{r}");
        assert_eq!(r["by_status"]["stop"].as_u64(), Some(sessions), "{r}");
    }
    // The server drops a request whose authenticator does not verify: no answer, retransmitted.
    let (ok, r) = run_accounting_bench(
        &s,
        "wrong",
        &[
            "--concurrency",
            "1",
            "--duration",
            "0.2",
            "--timeout-ms",
            "200",
            "--retries",
            "1",
        ],
    );
    assert!(!ok);
    assert_eq!(r["records"], 0, "{r}");
    assert!(r["errors"]["timeout"].as_u64().unwrap() > 0, "{r}");
    assert!(r["retransmissions"].as_u64().unwrap() > 0, "{r}");
}
