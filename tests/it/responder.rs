//! A real OCSP responder on loopback: OpenSSL's (`openssl ocsp -index … -reqin -respout`)
//! behind a minimal HTTP/1.1 front that binds 127.0.0.1 only (`openssl ocsp -port` listens
//! on every interface). Counts the requests it answers; stops on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) struct Responder {
    pub(crate) url: String,
    pub(crate) requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Responder {
    /// Serves answers for the dev PKI in `pki` (issuing CA database: device-ecdsa good,
    /// device-revoked revoked for key compromise, everything else unknown), signed with the
    /// certificate and key named `signer` (`issuing-ca`, `ocsp-responder`, …).
    pub(crate) fn start(pki: &Path, signer: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        for f in [
            "issuing-ca.pem".to_owned(),
            format!("{signer}.pem"),
            format!("{signer}.key"),
        ] {
            std::fs::copy(pki.join(&f), d.join(&f)).unwrap();
        }
        std::fs::write(
            d.join("index.txt"),
            "V\t301231235959Z\t\t1014\tunknown\t/CN=device-ecdsa\nR\t301231235959Z\t240101000000Z,keyCompromise\t1030\tunknown\t/CN=device-revoked\n",
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt, signer) = (requests.clone(), stop.clone(), signer.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    let n = count.fetch_add(1, Ordering::Relaxed);
                    let _ = serve(conn, &d, &signer, n);
                }
            }
        });
        Self {
            url: format!("http://{addr}"),
            requests,
            stop,
            addr,
            _dir: dir,
        }
    }

    /// From now on answer every request with one fixed response about `device`, made from a
    /// request without a nonce: a responder that does not echo nonces (as Microsoft's may).
    pub(crate) fn ignore_nonces(&self, pki: &Path, device: &str, signer: &str) {
        self.fixed(pki, device, signer, &["-ndays", "1"]);
    }

    /// The same with `validity` as the responder's validity options: `["-nmin", "1"]` for a
    /// nextUpdate one minute after it is made, `[]` for none at all.
    pub(crate) fn fixed(&self, pki: &Path, device: &str, signer: &str, validity: &[&str]) {
        let d = self._dir.path();
        let run = |args: &[&str]| crate::harness::openssl(d, args);
        let cert = pki.join(format!("{device}.pem")).display().to_string();
        run(&[
            "ocsp",
            "-issuer",
            "issuing-ca.pem",
            "-cert",
            &cert,
            "-no_nonce",
            "-reqout",
            "fixed-req.der",
        ]);
        let (rs, rk) = (format!("{signer}.pem"), format!("{signer}.key"));
        let mut args = vec![
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "issuing-ca.pem",
            "-rsigner",
            &rs,
            "-rkey",
            &rk,
            "-reqin",
            "fixed-req.der",
            "-respout",
            "fixed-response.new",
        ];
        args.extend_from_slice(validity);
        run(&args);
        std::fs::rename(d.join("fixed-response.new"), d.join("fixed-response.der")).unwrap();
    }

    /// From now on, answer that device-ecdsa (serial 1014) was revoked (key compromise).
    pub(crate) fn revoke_device_ecdsa(&self) {
        std::fs::write(
            self._dir.path().join("index.txt"),
            "R\t301231235959Z\t250101000000Z,keyCompromise\t1014\tunknown\t/CN=device-ecdsa\n",
        )
        .unwrap();
    }

    /// True if the last request came as an RFC 5019 GET.
    pub(crate) fn saw_get(&self) -> bool {
        self._dir.path().join("last-method").exists()
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, dir: &PathBuf, signer: &str, n: usize) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut len = 0;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    // RFC 5019 GET: the DER request, base64 and URL-escaped, is the last path segment.
    if let Some(path) = request_line
        .strip_prefix("GET ")
        .and_then(|r| r.split(' ').next())
    {
        use base64::Engine;
        let b64 = path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=");
        body = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        std::fs::write(dir.join("last-method"), "GET")?;
    }
    if let Ok(fixed) = std::fs::read(dir.join("fixed-response.der")) {
        // A responder that ignores the request's nonce: always the same answer.
        return reply(conn, true, &fixed);
    }
    let req = dir.join(format!("req{n}.der"));
    let resp = dir.join(format!("resp{n}.der"));
    std::fs::write(&req, &body)?;
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(["ocsp", "-index", "index.txt", "-CA", "issuing-ca.pem"])
        .args([
            "-rsigner",
            &format!("{signer}.pem"),
            "-rkey",
            &format!("{signer}.key"),
            "-ndays",
            "1",
        ])
        .arg("-reqin")
        .arg(&req)
        .arg("-respout")
        .arg(&resp)
        .output()?
        .status
        .success();
    let out = if ok {
        std::fs::read(&resp)?
    } else {
        Vec::new()
    };
    reply(conn, ok, &out)
}

fn reply(conn: TcpStream, ok: bool, out: &[u8]) -> std::io::Result<()> {
    let mut w = conn;
    let status = if ok {
        "200 OK"
    } else {
        "500 Internal Server Error"
    };
    write!(w, "HTTP/1.1 {status}\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", out.len())?;
    w.write_all(out)
}
