//! The audit trail: one JSON object per line for every finished request and every event
//! logged with `target: "audit"` (HSM sessions and signatures), written to the `[audit]`
//! sink: a file (reopened on SIGHUP, for logrotate), standard output, or syslog (RFC 5424
//! over UDP, one record per datagram).
//!
//! Writing happens on one thread of its own behind a bounded queue, so a slow disk or a
//! dead collector never holds up an authentication; records that do not fit are dropped
//! and counted (`anchord_audit_dropped_total`). Peer-supplied text (identities, certificate
//! names) is escaped by the JSON encoder, so it cannot forge a record. Records carry no
//! secret, key, PIN, MSK or EAP payload: they are built from the fields below only.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Map, Value};
use tracing::field::{Field, Visit};
use tracing::{warn, Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use super::AuditRecord;
use crate::clock;
use crate::config::AuditSink;

/// Records waiting to be written; past it they are dropped and counted.
pub const QUEUE: usize = 16_384;

/// Largest syslog datagram sent: the default limit of rsyslog and syslog-ng (RFC 5426 §3.2
/// asks receivers for at least 2048 octets and allows more). Records are a few hundred
/// bytes; one longer than this is sent as its outcome alone, marked `"truncated": true`.
const MAX_SYSLOG: usize = 8192;

/// Most characters of one peer-supplied field kept in a record (certificate names can be
/// long; a record must stay one datagram).
const MAX_FIELD: usize = 512;

/// Syslog severity (RFC 5424 §6.2.1): informational.
const INFORMATIONAL: u8 = 6;

enum Message {
    Line(String, &'static str),
    /// A line whose writer answers once it is written (true) or failed (false).
    Acked(String, &'static str, tokio::sync::oneshot::Sender<bool>),
    Reopen,
}

/// A running audit sink: a queue to its writer thread.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: SyncSender<Message>,
    sink: AuditSink,
    /// Records dropped because the queue was full or the writer is gone.
    pub dropped: Counter,
    /// Set by [`Audit::reopen`]; the writer reopens before its next write, so a reopen is
    /// never lost to a full queue.
    reopen: Arc<AtomicBool>,
    /// The writer thread, joined by [`close`] once it has written what was queued.
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl Audit {
    /// Opens the sink and starts its writer thread.
    ///
    /// # Errors
    /// The file cannot be opened for appending, or the syslog socket cannot be made.
    pub fn start(sink: &AuditSink) -> io::Result<Self> {
        let out = Output::open(sink)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        let writer = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_all(out, &rx, &flag))?;
        Ok(Self {
            tx,
            sink: sink.clone(),
            dropped: Counter::default(),
            reopen,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// The sink this writes to.
    pub fn sink(&self) -> &AuditSink {
        &self.sink
    }

    /// Queues one JSON line; `kind` is its syslog MSGID.
    fn send(&self, line: String, kind: &'static str) {
        match self.tx.try_send(Message::Line(line, kind)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Queues one JSON line and answers once the sink has it: `None` when the queue is
    /// full or the writer gone (counted as dropped).
    pub fn send_acked(
        &self,
        line: String,
        kind: &'static str,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let (done, written) = tokio::sync::oneshot::channel();
        match self.tx.try_send(Message::Acked(line, kind, done)) {
            Ok(()) => Some(written),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
                None
            }
        }
    }

    /// Queues one JSON line (an event of its own); `kind` is its syslog MSGID.
    pub fn line(&self, line: String, kind: &'static str) {
        self.send(line, kind);
    }

    /// Writes one finished request.
    pub fn record(&self, r: &AuditRecord) {
        self.send(record_json(r, &timestamp()), "authentication");
    }

    /// Closes and reopens the file (after logrotate moved it) before the next record;
    /// other sinks ignore it.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
        // Wakes an idle writer; when the queue is full the flag is seen anyway.
        let _ = self.tx.try_send(Message::Reopen);
    }
}

/// Where a sink is installed: the process has one ([`install`], [`current`], [`close`]).
#[derive(Debug, Default)]
struct Slot(RwLock<Option<Audit>>);

impl Slot {
    const fn new() -> Self {
        Self(RwLock::new(None))
    }

    fn install(&self, audit: Audit) {
        if let Ok(mut c) = self.0.write() {
            *c = Some(audit);
        }
    }

    fn current(&self) -> Option<Audit> {
        self.0.read().ok().and_then(|c| c.clone())
    }

    fn close(&self) {
        let audit = self.0.write().ok().and_then(|mut c| c.take());
        if let Some(audit) = audit {
            let writer = audit.writer.lock().ok().and_then(|mut w| w.take());
            // The queue ends once the last sender is gone; the writer drains it, then stops.
            drop(audit);
            if let Some(w) = writer {
                let _ = w.join();
            }
        }
    }
}

/// The process's audit sink, for the `target: "audit"` events of modules that cannot be
/// handed one (the HSM pool).
static CURRENT: Slot = Slot::new();

/// Stops the process's sink once everything queued is written (at shutdown), so no
/// record is lost to the exit.
pub fn close() {
    CURRENT.close();
}

/// Makes `audit` the process's sink (`serve` does, once).
pub fn install(audit: Audit) {
    CURRENT.install(audit);
}

/// The process's sink, if one is installed.
pub fn current() -> Option<Audit> {
    CURRENT.current()
}

/// One finished request as a JSON object.
pub fn record_json(r: &AuditRecord, time: &str) -> String {
    let cert = |v: &str| (!v.is_empty()).then(|| capped(v));
    json!({
        "time": time,
        "event": "authentication",
        "outcome": r.outcome,
        "reason": r.reason,
        "nas": r.nas,
        "nas_addr": r.nas_addr.to_string(),
        "identity": capped(&r.identity),
        "cert": {
            "subject": cert(&r.cert_subject),
            "serial": cert(&r.cert_serial),
            "issuer": cert(&r.cert_issuer),
        },
        "tls": (!r.tls_version.is_empty()).then_some(r.tls_version),
        "rounds": r.rounds,
        "duration_ms": u64::try_from(r.duration_ms).unwrap_or(u64::MAX),
        "vlan": r.vlan,
        "revocation": capped(&r.revocation),
        "posture": capped(&r.posture),
        "policy": r.policy.as_ref().map(|p| json!({
            "version": p.version,
            "rule": p.rule,
            "preset": p.preset,
        })),
    })
    .to_string()
}

/// At most [`MAX_FIELD`] characters of `v`, cut on a character boundary.
fn capped(v: &str) -> String {
    match v.char_indices().nth(MAX_FIELD) {
        Some((at, _)) => format!("{}…", v.get(..at).unwrap_or_default()),
        None => v.to_owned(),
    }
}

/// UTC with microseconds: RFC 3339, and within RFC 5424's six fractional digits.
/// Now, as audit records write it.
pub fn now_text() -> String {
    timestamp()
}

fn timestamp() -> String {
    let t = clock::utc_now();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A record too long for one syslog datagram, cut to what says how it ended.
fn outcome_only(line: &str) -> String {
    let mut short = Map::new();
    if let Ok(Value::Object(full)) = serde_json::from_str::<Value>(line) {
        for key in ["time", "event", "outcome", "reason", "nas", "result", "key"] {
            if let Some(v) = full.get(key) {
                short.insert(key.into(), v.clone());
            }
        }
    }
    short.insert("truncated".into(), Value::Bool(true));
    Value::Object(short).to_string()
}

/// A tracing layer that copies every `target: "audit"` event into the installed sink as
/// a JSON object of its fields.
#[derive(Debug, Default)]
pub struct AuditLayer;

impl<S: Subscriber> Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "audit" {
            return;
        }
        let Some(audit) = current() else { return };
        let mut fields = Fields(Map::new());
        fields.0.insert("time".into(), Value::String(timestamp()));
        event.record(&mut fields);
        let kind = match fields.0.get("event").and_then(Value::as_str) {
            Some("hsm_sign") => "hsm_sign",
            Some("hsm_session") => "hsm_session",
            _ => "audit",
        };
        audit.send(Value::Object(fields.0).to_string(), kind);
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.to_owned()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

enum Output {
    File {
        path: PathBuf,
        file: File,
    },
    Stdout,
    Syslog {
        socket: UdpSocket,
        to: SocketAddr,
        facility: u8,
        host: String,
    },
}

impl Output {
    fn open(sink: &AuditSink) -> io::Result<Self> {
        Ok(match sink {
            AuditSink::File(path) => Self::File {
                file: append(path)?,
                path: path.clone(),
            },
            AuditSink::Stdout => Self::Stdout,
            AuditSink::Syslog { address, facility } => {
                let local: SocketAddr = if address.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                Self::Syslog {
                    socket: UdpSocket::bind(local)?,
                    to: *address,
                    facility: *facility,
                    host: hostname(),
                }
            }
        })
    }

    /// Writes the batch's lines: to a file or stdout in one write, to syslog one datagram
    /// each. An error fails the whole batch (its acknowledged records are answered as not
    /// stored, and their NASes retransmit).
    fn write_batch(&mut self, batch: &[Message]) -> io::Result<()> {
        let lines = batch.iter().filter_map(|m| match m {
            Message::Line(line, kind) | Message::Acked(line, kind, _) => Some((line, *kind)),
            Message::Reopen => None,
        });
        match self {
            Self::File { file, .. } => file.write_all(&joined(lines)),
            Self::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&joined(lines))?;
                out.flush()
            }
            Self::Syslog {
                socket,
                to,
                facility,
                host,
            } => {
                let pid = std::process::id();
                let mut result = Ok(());
                for (line, kind) in lines {
                    let mut message = syslog_message(*facility, host, pid, kind, line);
                    if message.len() > MAX_SYSLOG {
                        message = syslog_message(*facility, host, pid, kind, &outcome_only(line));
                    }
                    if let Err(e) = socket.send_to(message.as_bytes(), *to) {
                        result = Err(e);
                    }
                }
                result
            }
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Self::File { path, file } = self {
            *file = append(path)?;
        }
        Ok(())
    }
}

/// The lines, each ended by a newline, in one buffer.
fn joined<'a>(lines: impl Iterator<Item = (&'a String, &'static str)>) -> Vec<u8> {
    let mut buf = Vec::new();
    for (line, _) in lines {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    buf
}

/// Opens for appending, creating it readable by its owner only (records name devices).
/// A file that exists already keeps its mode (logrotate's `create` may have set one on
/// purpose), with a warning when anyone may read it.
fn append(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("audit file {}: {e}", path.display())))?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        warn!(
            file = %path.display(),
            mode = format!("{mode:04o}"),
            "the audit file is readable by everyone: it names devices and NASes; chmod o-r it (or fix logrotate's `create` mode)"
        );
    }
    Ok(file)
}

/// An RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`.
fn syslog_message(facility: u8, host: &str, pid: u32, kind: &str, json: &str) -> String {
    let pri = u16::from(facility) * 8 + u16::from(INFORMATIONAL);
    format!(
        "<{pri}>1 {} {host} anchord {pid} {kind} - {json}",
        timestamp()
    )
}

/// The host's name for the syslog header: printable ASCII without spaces, at most 255
/// characters (RFC 5424 §6.2.4), or `-`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        "-".into()
    } else {
        name.to_owned()
    }
}

/// Most queued records written together (one `write` to a file).
const BATCH: usize = 256;

fn write_all(mut out: Output, rx: &Receiver<Message>, reopen: &AtomicBool) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(BATCH);
    // What is queued while one batch is written goes out in the next: under load a record
    // costs a share of one system call and one wake-up, not one each.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // Woken by the first record: let the threads that queue records run on before
        // draining (nothing is waited for when no other thread is runnable), so a busy
        // server's records come in fewer, larger batches and fewer wake-ups.
        std::thread::yield_now();
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let result = if reopen.swap(false, Ordering::SeqCst) {
            out.reopen()
        } else {
            Ok(())
        }
        .and_then(|()| out.write_batch(&batch));
        let written = result.is_ok();
        for message in batch.drain(..) {
            if let Message::Acked(_, _, done) = message {
                let _ = done.send(written);
            }
        }
        // One warning per run of failures, not one per record.
        match result {
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "audit sink failed: records are being lost");
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(identity: &str) -> AuditRecord {
        AuditRecord {
            outcome: "accept",
            reason: "ok".into(),
            nas: "wlc".into(),
            nas_addr: "192.0.2.1:1812".parse().unwrap(),
            identity: identity.into(),
            cert_subject: "CN=laptop-1".into(),
            cert_serial: "01ab".into(),
            cert_issuer: "CN=Issuing CA".into(),
            tls_version: "1.3",
            rounds: 5,
            duration_ms: 12,
            vlan: Some("100".into()),
            revocation: "good (ocsp)".into(),
            posture: "-".into(),
            policy: Some(super::super::PolicyMark {
                version: "0123456789ab".into(),
                rule: "staff".into(),
                preset: None,
            }),
        }
    }

    #[test]
    fn a_record_is_one_json_line_and_peer_text_cannot_break_it() {
        let line = record_json(
            &record("evil\n{\"outcome\":\"accept\"}\r"),
            "2026-12-03T00:00:00Z",
        );
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["identity"], "evil\n{\"outcome\":\"accept\"}\r");
        assert_eq!(v["outcome"], "accept");
        assert_eq!(v["cert"]["serial"], "01ab");
        assert_eq!(v["vlan"], "100");
        assert_eq!(v["policy"]["version"], "0123456789ab");
        assert_eq!(v["policy"]["rule"], "staff");
        assert_eq!(v["tls"], "1.3");
        assert_eq!(v["time"], "2026-12-03T00:00:00Z");
    }

    #[test]
    fn the_file_sink_appends_and_reopens_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::start(&AuditSink::File(path.clone())).unwrap();
        audit.record(&record("one"));
        wait_for(|| {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("one")
        });
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        audit.reopen();
        audit.record(&record("two"));
        wait_for(|| {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("two")
        });
        let rotated = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap();
        assert!(rotated.contains("\"one\"") && !rotated.contains("\"two\""));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_audit_file_others_may_read_is_kept_with_a_warning() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Writer(sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            append(&path).unwrap();
        });
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("readable by everyone") && text.contains("0644"),
            "{text}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the admin's mode is kept");
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl Write for Writer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_syslog_sink_sends_rfc5424_datagrams() {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let audit = Audit::start(&AuditSink::Syslog {
            address: collector.local_addr().unwrap(),
            facility: 10,
        })
        .unwrap();
        audit.record(&record("laptop"));
        let mut buf = [0u8; 4096];
        let n = collector.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        // authpriv (10) * 8 + informational (6) = 86; version 1.
        assert!(text.starts_with("<86>1 "), "{text}");
        let parts: Vec<&str> = text.splitn(8, ' ').collect();
        assert_eq!(parts[3], "anchord");
        assert_eq!(parts[4], std::process::id().to_string());
        assert_eq!(parts[5], "authentication");
        assert_eq!(parts[6], "-");
        let v: Value = serde_json::from_str(parts[7]).unwrap();
        assert_eq!(v["identity"], "laptop");
    }

    #[test]
    fn long_peer_fields_are_capped_and_an_oversized_record_keeps_its_outcome() {
        let mut r = record(&"\u{1}".repeat(253));
        r.cert_subject = "CN=".to_owned() + &"é".repeat(5000);
        let line = record_json(&r, "t");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["cert"]["subject"].as_str().unwrap().chars().count(),
            MAX_FIELD + 1
        );
        let message = syslog_message(10, &"h".repeat(255), 1, "authentication", &line);
        assert!(message.len() <= MAX_SYSLOG, "{}", message.len());
        // Past any cap (a huge event): its outcome alone, still JSON.
        let huge = json!({"time": "t", "event": "authentication", "outcome": "reject",
                          "reason": "revoked", "nas": "wlc", "x": "y".repeat(20_000)})
        .to_string();
        let short: Value = serde_json::from_str(&outcome_only(&huge)).unwrap();
        assert_eq!(short["outcome"], "reject");
        assert_eq!(short["reason"], "revoked");
        assert_eq!(short["truncated"], true);
        assert!(short.get("x").is_none());
    }

    #[test]
    fn timestamps_have_six_fractional_digits_as_rfc_5424_allows() {
        let t = timestamp();
        let (_, frac) = t.split_once('.').unwrap();
        assert_eq!(frac.len(), 7, "{t}");
        assert!(frac.ends_with('Z') && frac[..6].bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn a_reopen_asked_for_while_the_queue_is_full_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let out = Output::open(&AuditSink::File(path.clone())).unwrap();
        let (tx, rx) = mpsc::sync_channel(1);
        let audit = Audit {
            tx,
            sink: AuditSink::File(path.clone()),
            dropped: Counter::default(),
            reopen: Arc::default(),
            writer: Arc::default(),
        };
        audit.record(&record("queued"));
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        audit.reopen(); // the queue is full: its wake-up message is dropped
        let flag = audit.reopen.clone();
        drop(audit);
        write_all(out, &rx, &flag);
        assert!(std::fs::read_to_string(&path).unwrap().contains("queued"));
    }

    #[test]
    fn closing_writes_everything_queued_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // A slot of its own: the process's is shared with other tests.
        let slot = Slot::new();
        slot.install(Audit::start(&AuditSink::File(path.clone())).unwrap());
        let audit = slot.current().unwrap();
        for i in 0..1000 {
            audit.record(&record(&format!("device-{i}")));
        }
        drop(audit);
        slot.close();
        assert!(slot.current().is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, rx) = mpsc::sync_channel(1);
        let audit = Audit {
            tx,
            sink: AuditSink::Stdout,
            dropped: Counter::default(),
            reopen: Arc::default(),
            writer: Arc::default(),
        };
        audit.record(&record("a"));
        audit.record(&record("b"));
        audit.record(&record("c"));
        assert_eq!(audit.dropped.get(), 2);
        drop(rx);
        audit.record(&record("d"));
        assert_eq!(audit.dropped.get(), 3);
    }

    /// Polls for up to ten seconds (the writer is another thread).
    fn wait_for(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("timed out");
    }
}
