//! Starts `anchord serve` on 127.0.0.1:0 with a dev PKI in a temp dir, reads the bound port
//! from its log, keeps its log lines for assertions, and kills it on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) const SECRET: &str = "it-secret";

/// One dev PKI per test binary (key generation is the slow part).
pub(crate) fn pki_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        anchord::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        dir
    })
    .path()
}

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts with the default test config plus `extra` appended to `[server]`/`[tls]`
    /// via `tweak`.
    pub(crate) fn start() -> Self {
        Self::start_with(|c| c)
    }

    pub(crate) fn start_with(tweak: impl FnOnce(String) -> String) -> Self {
        let pki = pki_dir();
        let config = tweak(format!(
            r#"[server]
listen = ["127.0.0.1:0"]

[tls]
certificate = "{pki}/server.pem"
private_key = "{pki}/server.key"
ca = ["{pki}/root-ca.pem"]

[authorization]
vlan = "100"

[[client]]
name = "it-nas"
address = "127.0.0.1"
secret = "{SECRET}"
"#,
            pki = pki.display()
        ));
        Self::start_config(&config, &[])
    }

    /// Starts with exactly this config text and these extra environment variables.
    pub(crate) fn start_config(config: &str, envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchord.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_anchord"))
            .args(["--debug", "serve", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.split("addr=").nth(1) {
                    let _ = tx.send(a.trim().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        Self {
            child,
            addr: addr.parse().unwrap(),
            log,
            _dir: dir,
        }
    }

    /// The first accounting address the server bound.
    pub(crate) fn accounting_addr(&self) -> SocketAddr {
        let line = self.wait_log(&["listening for accounting"]);
        line.split("addr=").nth(1).unwrap().trim().parse().unwrap()
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self._dir.path().join("anchord.toml")
    }

    /// Sends SIGTERM and waits (up to 20 s) for the server to exit; its exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP (reload).
    pub(crate) fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains every needle; returns it.
    pub(crate) fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .log()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} in {:#?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` log lines contain every needle; returns all such lines, in
    /// the order the server wrote them.
    pub(crate) fn wait_log_lines(&self, needles: &[&str], n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines: Vec<String> = self
                .log()
                .into_iter()
                .filter(|l| needles.iter().all(|x| l.contains(x)))
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} log lines with {needles:?} in {:#?}",
                lines.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs eapol_test with an eapol-tests/ scenario from `cwd` (where the certificates are)
/// against `server`; returns its standard output.
pub(crate) fn eapol_test(server: &Server, cwd: &Path, scenario: &str, extra: &[&str]) -> String {
    let conf = repo().join("eapol-tests").join(format!("{scenario}.conf"));
    let port = server.addr.port().to_string();
    let out = Command::new("eapol_test")
        .current_dir(cwd)
        .arg("-c")
        .arg(&conf)
        .args(["-a", "127.0.0.1", "-p", &port, "-s", SECRET, "-t", "20"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("eapol_test runs (install: eapol-tests/install-deps.sh)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `openssl` with `args` in `dir` and insists that it succeeds.
pub(crate) fn openssl<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The code and (type, value) attributes of the last RADIUS message eapol_test got. The
/// value is as eapol_test prints it (hex, or quoted text), or `len=N` for the attributes it
/// prints no value of.
pub(crate) fn last_reply(stdout: &str) -> (u8, Vec<(u8, String)>) {
    let start = stdout.rfind("RADIUS message: code=").expect("a reply");
    let block = &stdout[start..];
    let code = block["RADIUS message: code=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut attrs = Vec::new();
    let mut lines = block.lines().skip(1).peekable();
    while let Some(l) = lines.next() {
        let Some(rest) = l.trim().strip_prefix("Attribute ") else {
            break;
        };
        let ty = rest.split(' ').next().unwrap().parse().unwrap();
        let len = rest.rsplit("length=").next().unwrap().trim();
        let value = match lines.peek().and_then(|n| n.trim().strip_prefix("Value: ")) {
            Some(v) => {
                let v = v.to_owned();
                lines.next();
                v
            }
            None => format!("len={len}"),
        };
        attrs.push((ty, value));
    }
    (code, attrs)
}

/// A dev MDM (Graph-shaped, OAuth2) serving on loopback from a runtime of its own, for as
/// long as this lives: the real HTTP peer posture sources talk to.
pub(crate) struct Mdm {
    pub(crate) mdm: Arc<anchord::posture::devmdm::DevMdm>,
    pub(crate) addr: SocketAddr,
    secret: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Mdm {
    /// Serves the dev devices (both compliant), with OAuth2.
    pub(crate) fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mdm = anchord::posture::devmdm::DevMdm::new(
            anchord::posture::devmdm::dev_devices(),
            Some((
                anchord::posture::devmdm::DEV_CLIENT_ID.to_owned(),
                "mdm-s3cret".to_owned(),
            )),
        );
        let addr = rt
            .block_on(mdm.spawn("127.0.0.1:0".parse().unwrap()))
            .unwrap();
        let secret = tempfile::tempdir().unwrap();
        let file = secret.path().join("mdm.secret");
        std::fs::write(&file, "mdm-s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        Self {
            mdm,
            addr,
            secret,
            _rt: rt,
        }
    }

    /// The `[[posture.source]]` named `name` for it (appended at the end of a config).
    pub(crate) fn source(&self, name: &str) -> String {
        anchord::posture::devmdm::source_toml(
            name,
            self.addr,
            &self.secret.path().join("mdm.secret"),
        )
    }

    /// Sets the compliance state of the device with this Intune id.
    pub(crate) fn set_compliance(&self, id: &str, state: &str) {
        self.mdm.set(|k| {
            for d in &mut k.devices {
                if d["id"] == id {
                    d["complianceState"] = state.into();
                }
            }
        });
    }

    /// Device requests it has served.
    pub(crate) fn requests(&self) -> u64 {
        self.mdm.counts().device_requests
    }
}
