//! MSK and EMSK checked against another TLS implementation. anchord derives them with
//! `derive_keys` over rustls's exporter; here a rustls server with anchord's configuration
//! serves `openssl s_client` over loopback TCP and OpenSSL's numbers are the reference:
//! - TLS 1.2 (RFC 5216 §2.3): OpenSSL's own exporter, `-keymatexport "client EAP encryption"`.
//! - TLS 1.3 (RFC 9190 §2.3): the label is EXPORTER_EAP_TLS_Key_Material with the one-byte
//!   context 0x0D, which s_client cannot pass. s_client logs the exporter secret
//!   (`-keylogfile`) and Python's hmac/hashlib compute RFC 8446 §7.5 from it. The same Python
//!   code first reproduces s_client's own export without a context, so it is checked too.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anchord::eap::session::derive_keys;
use anchord::tls::{server_config, TlsVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::harness::pki_dir;

const TLS12_LABEL: &str = "client EAP encryption";
const TLS13_LABEL: &str = "EXPORTER_EAP_TLS_Key_Material";

/// anchord's server configuration (dev PKI: server key, root CA for device certificates).
fn server(version: TlsVersion) -> Arc<rustls::ServerConfig> {
    let pki = pki_dir();
    let chain: Vec<_> = CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let root = CertificateDer::from_pem_file(pki.join("root-ca.pem")).unwrap();
    Arc::new(server_config(chain, key, &[root], &[version]).unwrap())
}

/// Starts `openssl s_client` as device-ecdsa against `port`, with `args`.
fn s_client(port: u16, args: &[&str]) -> Child {
    let pki = pki_dir();
    Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(pki.join("device-ecdsa.pem"))
        .arg("-key")
        .arg(pki.join("device-ecdsa.key"))
        .arg("-cert_chain")
        .arg(pki.join("issuing-ca.pem"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Accepts one connection, completes the handshake (the device certificate verified by
/// anchord's verifier) and returns anchord's MSK || EMSK for it.
fn serve_one(listener: &TcpListener, cfg: Arc<rustls::ServerConfig>) -> Vec<u8> {
    let (mut tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut conn = rustls::ServerConnection::new(cfg).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    // Flush what the server still owes (TLS 1.3 tickets), so s_client sees a finished
    // handshake before its stdin closes.
    while conn.wants_write() {
        conn.write_tls(&mut tcp).unwrap();
    }
    let keys = derive_keys(conn.protocol_version(), |out, label, ctx| {
        conn.export_keying_material(out, label, ctx).map(|_| ())
    })
    .unwrap();
    let mut block = keys.msk.to_vec();
    block.extend_from_slice(&keys.emsk[..]);
    block
}

/// Ends s_client (closes its stdin) and returns its standard output.
fn finish(mut child: Child) -> String {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("Verify return code") || text.contains("Protocol"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The "Keying material:" hex s_client prints for `-keymatexport`.
fn keying_material(s_client_out: &str, label: &str) -> Vec<u8> {
    let mut lines = s_client_out.lines();
    lines
        .find(|l| l.trim() == format!("Label: '{label}'"))
        .unwrap_or_else(|| panic!("no export for {label}: {s_client_out}"));
    let hex_line = lines
        .find_map(|l| l.trim().strip_prefix("Keying material: "))
        .unwrap_or_else(|| panic!("{s_client_out}"));
    hex::decode(hex_line.trim()).unwrap()
}

#[test]
fn tls12_msk_and_emsk_match_openssls_exporter() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = s_client(
        port,
        &[
            "-tls1_2",
            "-keymatexport",
            TLS12_LABEL,
            "-keymatexportlen",
            "128",
        ],
    );
    let ours = serve_one(&listener, server(TlsVersion::V1_2));
    let text = finish(child);
    assert!(text.contains("Protocol  : TLSv1.2"), "{text}");
    let theirs = keying_material(&text, TLS12_LABEL);
    assert_eq!(theirs.len(), 128);
    assert_eq!(hex::encode(&ours), hex::encode(&theirs), "MSK || EMSK");
}

/// RFC 8446 §7.5 TLS-Exporter over SHA-256, in Python's standard library (not rustls):
/// HKDF-Expand-Label(Derive-Secret(secret, label, ""), "exporter", Hash(context), length).
const EXPORTER_PY: &str = r#"
import hashlib, hmac, sys
secret, label, context, length = bytes.fromhex(sys.argv[1]), sys.argv[2].encode(), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
H = hashlib.sha256
def expand(prk, info, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), H).digest()
        out, i = out + t, i + 1
    return out[:n]
def expand_label(secret, label, ctx, n):
    full = b"tls13 " + label
    info = n.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(ctx)]) + ctx
    return expand(secret, info, n)
derived = expand_label(secret, label, H(b"").digest(), H().digest_size)
print(expand_label(derived, b"exporter", H(context).digest(), length).hex())
"#;

fn python_exporter(secret: &[u8], label: &str, context: &[u8], len: usize) -> Vec<u8> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(EXPORTER_PY)
        .arg(hex::encode(secret))
        .arg(label)
        .arg(hex::encode(context))
        .arg(len.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hex::decode(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

/// The EXPORTER_SECRET line of an NSS key log.
fn exporter_secret(keylog: &Path) -> Vec<u8> {
    let file = std::fs::File::open(keylog).unwrap();
    let line = BufReader::new(file)
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("EXPORTER_SECRET "))
        .unwrap_or_else(|| panic!("no EXPORTER_SECRET in {}", keylog.display()));
    hex::decode(line.split(' ').nth(2).unwrap()).unwrap()
}

#[test]
fn tls13_msk_and_emsk_match_rfc8446_exporter_from_openssls_secret() {
    let dir = tempfile::tempdir().unwrap();
    let keylog = dir.path().join("keys.log");
    let keylog_s = keylog.display().to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // SHA-256 suite, so the hash below is known; OpenSSL's own export (no context) checks
    // the Python code.
    let child = s_client(
        port,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_GCM_SHA256",
            "-keylogfile",
            &keylog_s,
            "-keymatexport",
            TLS13_LABEL,
            "-keymatexportlen",
            "128",
        ],
    );
    let ours = serve_one(&listener, server(TlsVersion::V1_3));
    let text = finish(child);
    assert!(
        text.contains("TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256"),
        "{text}"
    );
    let secret = exporter_secret(&keylog);
    assert_eq!(secret.len(), 32);
    assert_eq!(
        hex::encode(python_exporter(&secret, TLS13_LABEL, &[], 128)),
        hex::encode(keying_material(&text, TLS13_LABEL)),
        "the Python exporter reproduces OpenSSL's (empty context)"
    );
    // RFC 9190 §2.3: Key_Material = TLS-Exporter("EXPORTER_EAP_TLS_Key_Material", 0x0D, 128).
    let reference = python_exporter(&secret, TLS13_LABEL, &[0x0D], 128);
    assert_eq!(hex::encode(&ours), hex::encode(&reference), "MSK || EMSK");
}
