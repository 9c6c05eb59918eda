//! The tokio layer: UDP sockets, the client table, duplicate cache, session table, and one
//! task per datagram under a concurrency cap. No protocol logic lives here beyond the
//! order of checks (STYLE §2.5); a bad datagram is counted and dropped, never fatal.

pub mod accounting;
pub mod audit;
pub mod checks;
pub mod class;
pub mod clients;
pub mod das;
pub mod dedup;
mod ending;
pub mod enforce;
pub mod facts;
pub mod fairness;
pub mod fifo;
mod handler;
pub mod loglimit;
pub mod metrics;
pub mod registry;
pub mod reply;
pub mod sessions;
pub mod watch;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::clock;
use crate::config::{Config, ConfigErrors, PkiRuntime, Runtime};
use crate::radius::packet::parse_attributes;
use crate::radius::packet::DecodeError;
use crate::radius::summary::summarize;
use crate::radius::{Code, UnverifiedRequest};
use clients::ClientTable;
use dedup::{Begin, Dedup, RequestKey};
use fairness::Shares;
use loglimit::LogLimiter;
use metrics::Metrics;
use sessions::SessionTable;

/// Receive buffer: one byte more than the largest RADIUS packet, to tell "too long" apart.
const RECV_BUFFER: usize = crate::radius::MAX_PACKET + 1;

/// One finished authentication, for the audit trail and the demo table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// "accept" or "reject".
    pub outcome: &'static str,
    /// Stable reason label, or the reason an admin's policy gave.
    pub reason: crate::eap::Reason,
    /// Client name.
    pub nas: String,
    /// Client address.
    pub nas_addr: SocketAddr,
    /// EAP identity.
    pub identity: String,
    /// Certificate subject.
    pub cert_subject: String,
    /// Certificate serial (hex).
    pub cert_serial: String,
    /// Certificate issuer.
    pub cert_issuer: String,
    /// "1.2", "1.3" or "" if the handshake did not get that far.
    pub tls_version: &'static str,
    /// EAP requests sent.
    pub rounds: u32,
    /// From the first request to the answer.
    pub duration_ms: u128,
    /// VLAN given with an Accept.
    pub vlan: Option<String>,
    /// Revocation result: `good (ocsp)`, `revoked at … (cache)`, `soft-failed: …`, `off`.
    pub revocation: String,
    /// What each posture source answered: `mdm (fresh, san_uri): compliant=true`, `-`.
    pub posture: String,
    /// The policy that decided, once one did: its version, rule and preset.
    pub policy: Option<PolicyMark>,
}

/// Which policy, rule and preset decided, for the audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyMark {
    /// The policy's version (hash of its files), or `builtin`.
    pub version: String,
    /// The rule that decided.
    pub rule: String,
    /// The preset it used (e.g. `quarantine`).
    pub preset: Option<String>,
}

/// The part of the configuration a reload replaces.
pub(crate) struct Live {
    pub(crate) config: Arc<Config>,
    pub(crate) runtime: Arc<Runtime>,
    clients: ClientTable,
}

impl Live {
    fn new(config: Arc<Config>, runtime: Arc<Runtime>) -> Arc<Self> {
        // Pollers of new sources start now (kept sources' already run).
        if let Some(posture) = &runtime.posture {
            posture.start();
        }
        Arc::new(Self {
            clients: ClientTable::new(config.clients.clone()),
            config,
            runtime,
        })
    }
}

/// State shared by every request task.
pub struct Shared {
    live: RwLock<Arc<Live>>,
    dedup: Dedup,
    pub(crate) sessions: SessionTable,
    /// Limits repeated per-request reject lines in the log.
    log_limit: LogLimiter,
    /// Each client's share of requests in flight and of TLS steps.
    pub(crate) shares: Shares,
    /// Counters.
    pub metrics: Metrics,
    audit: Option<mpsc::UnboundedSender<AuditRecord>>,
    /// Mints and opens the Class of every Access-Accept.
    pub(crate) class_key: class::ClassKey,
    /// Live sessions, from accounting.
    pub registry: registry::Registry,
    /// The caps on Disconnect/CoA requests in flight.
    pub(crate) enforcer: enforce::Enforcer,
    /// Held through a reload: SIGHUP and the file watcher never build two runtimes at
    /// once (the one finishing last, perhaps from older files, would win).
    reloading: std::sync::Mutex<()>,
}

/// Asks for `bytes` of receive buffer on a listening socket, so a burst from one NAS
/// queues instead of the kernel dropping every NAS's datagrams; says so when the kernel
/// grants less (Linux caps it at `net.core.rmem_max`; it reports twice what it grants).
fn set_receive_buffer(s: &Socket, addr: SocketAddr, bytes: usize) {
    if let Err(e) = s.set_recv_buffer_size(bytes) {
        warn!(socket = %addr, error = %e, "could not set the socket's receive buffer");
        return;
    }
    match s.recv_buffer_size().map(granted) {
        Ok(got) if got < bytes => warn!(
            socket = %addr,
            asked_kib = bytes / 1024,
            granted_kib = got / 1024,
            "the kernel capped the receive buffer (server.receive_buffer_kib); raise net.core.rmem_max"
        ),
        Ok(got) => debug!(socket = %addr, granted_kib = got / 1024, "receive buffer"),
        Err(e) => debug!(socket = %addr, error = %e, "receive buffer size unknown"),
    }
}

/// The receive buffer granted, from what the kernel reports: Linux reports twice what it
/// grants (the other half is its bookkeeping), other systems what they grant.
fn granted(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    sockets: Vec<Arc<UdpSocket>>,
    accounting: Vec<Arc<UdpSocket>>,
}

/// What a listening socket takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Access-Request and Status-Server.
    Auth,
    /// Accounting-Request.
    Accounting,
}

/// Binds one UDP socket; IPv6 ones are v6-only so `0.0.0.0` and `[::]` can share a port.
fn bind_udp(addr: SocketAddr, receive_buffer: usize) -> io::Result<Arc<UdpSocket>> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    set_receive_buffer(&s, addr, receive_buffer);
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    Ok(Arc::new(UdpSocket::from_std(s.into())?))
}

impl Server {
    /// Binds every listen address. IPv6 sockets are v6-only so `0.0.0.0` and `[::]` can
    /// share a port.
    ///
    /// # Errors
    /// A socket that cannot be bound.
    pub fn bind(
        config: Arc<Config>,
        runtime: Arc<Runtime>,
        audit: Option<mpsc::UnboundedSender<AuditRecord>>,
    ) -> io::Result<Self> {
        let sockets = config
            .listen
            .iter()
            .map(|a| bind_udp(*a, config.receive_buffer))
            .collect::<io::Result<Vec<_>>>()?;
        let accounting = config
            .accounting_listen
            .iter()
            .map(|a| bind_udp(*a, config.receive_buffer))
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            live: RwLock::new(Live::new(config.clone(), runtime)),
            dedup: Dedup::new(config.duplicate_cache, config.duplicate_window),
            sessions: SessionTable::new(config.max_sessions, config.session_idle_timeout),
            log_limit: LogLimiter::default(),
            shares: Shares::default(),
            metrics: Metrics::default(),
            audit,
            class_key: class::ClassKey::random(),
            enforcer: enforce::Enforcer::default(),
            registry: registry::Registry::new(
                config.max_live_sessions,
                config.max_live_sessions_per_client,
                config.live_session_expiry,
            ),
            reloading: std::sync::Mutex::new(()),
        });
        Ok(Self {
            shared,
            sockets,
            accounting,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// The accounting addresses actually bound (port 0 resolved).
    pub fn accounting_addrs(&self) -> Vec<SocketAddr> {
        self.accounting
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// State shared with request tasks (counters, for tests and reports).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` is cancelled or a socket dies.
    ///
    /// # Errors
    /// A socket error other than a per-datagram one.
    pub async fn serve(self, shutdown: CancellationToken) -> io::Result<()> {
        fairness::set_foreground(tokio::runtime::Handle::current());
        let config = self.shared.live().config.clone();
        warn_inline_secrets(&config);
        let inflight = Arc::new(Semaphore::new(config.max_inflight));
        let mut loops = JoinSet::new();
        let all = (self.sockets.into_iter().map(|s| (s, Role::Auth)))
            .chain(self.accounting.into_iter().map(|s| (s, Role::Accounting)));
        for (sock, role) in all {
            match role {
                Role::Auth => info!(addr = %sock.local_addr()?, "listening"),
                Role::Accounting => info!(addr = %sock.local_addr()?, "listening for accounting"),
            }
            loops.spawn(recv_loop(
                sock,
                role,
                self.shared.clone(),
                inflight.clone(),
                shutdown.clone(),
            ));
        }
        let watcher = tokio::spawn(watch_rotation(self.shared.clone(), shutdown.clone()));
        let crl_watcher = tokio::spawn(watch_crls(self.shared.clone(), shutdown.clone()));
        let posture_watcher = tokio::spawn(enforce::watch_posture(
            self.shared.clone(),
            shutdown.clone(),
        ));
        let revocation_watcher = tokio::spawn(enforce::watch_revocation(
            self.shared.clone(),
            shutdown.clone(),
        ));
        let mut result = Ok(());
        while let Some(r) = loops.join_next().await {
            if let Ok(Err(e)) = r {
                shutdown.cancel();
                result = Err(e);
            }
        }
        watcher.abort();
        crl_watcher.abort();
        posture_watcher.abort();
        revocation_watcher.abort();
        info!("stopped");
        result
    }
}

/// Re-reads CRL files every `crl_refresh_secs`, so a new CRL takes effect without a restart.
async fn watch_crls(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let crls = shared
            .live()
            .runtime
            .revocation
            .as_ref()
            .and_then(|r| r.crls());
        let wait = crls
            .as_ref()
            .map_or(Duration::from_secs(5), |(_, every)| *every);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        if let Some((store, _)) = crls {
            if let Ok(errors) = tokio::task::spawn_blocking(move || store.reload()).await {
                for e in errors {
                    warn!(error = %e, "CRL not reloaded; keeping the previous one");
                }
            }
        }
    }
}

/// Checks the token for a rotated server key (`anchord pki rotate-server`) and switches to
/// it; handshakes already under way keep the key they started with.
async fn watch_rotation(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let Some(pki) = shared.live().runtime.pki.clone() else {
            // No token now; a reload may add one.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                () = shutdown.cancelled() => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pki.rotation_check) => {}
            () = shutdown.cancelled() => return,
        }
        let check = pki.clone();
        match tokio::task::spawn_blocking(move || check.refresh()).await {
            Ok(Ok(Some(label))) => info!(key = %label, "server key rotated: new handshakes use it"),
            // A signature that failed after its deadline asked for a re-initialisation
            // that no request has picked up.
            Ok(Ok(None)) => {
                let modules = crate::pki::hsm::take_reinit_requests();
                if !modules.is_empty() {
                    reinitialize_modules(pki.clone(), modules).await;
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "checking the token for a rotated server key failed; keeping the current key");
                // The token may be gone: re-initialise the module so that it is found again
                // as soon as it is back, before the next device needs a signature.
                let mut modules = vec![pki.server.token.module.clone()];
                modules.extend(crate::pki::hsm::take_reinit_requests());
                reinitialize_modules(pki.clone(), modules).await;
            }
            Err(e) => warn!(error = %e, "rotation check task failed"),
        }
    }
}

/// Re-initialises PKCS#11 modules (`hsm::reinitialize`) once no signature is in flight:
/// every signing permit is taken first, so C_Finalize never runs under another thread's
/// C_Sign, and signing steps that arrive meanwhile wait behind it (the semaphore is fair).
/// Gives up, logging why, if the permits are not all free within the signing deadline (a
/// hung token holds its permit; finalising under it is what this avoids).
pub(crate) async fn reinitialize_modules(pki: Arc<PkiRuntime>, mut modules: Vec<PathBuf>) {
    modules.sort();
    modules.dedup();
    let permits = u32::try_from(pki.sessions.max(1)).unwrap_or(u32::MAX);
    let pool = pki.pool();
    let work = move || {
        // Idle sessions die with the module; close them while it is still alive.
        if let Some(p) = pool {
            p.close_idle();
        }
        modules
            .into_iter()
            .map(|m| (crate::pki::hsm::reinitialize(&m, clock::now()), m))
            .collect::<Vec<_>>()
    };
    match with_every_permit(&pki.signing_slots, permits, pki.sign_timeout, work).await {
        None => warn!(
            "PKCS#11 module not re-initialised: signatures still in flight after the signing deadline"
        ),
        Some(results) => {
            for (result, module) in results {
                match result {
                    Ok(true) => {
                        warn!(module = %module.display(), "PKCS#11 module re-initialised to find the token again");
                    }
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "PKCS#11 module re-initialisation failed"),
                }
            }
        }
    }
}

/// Runs blocking `work` while holding `permits` permits of `slots` (all of them, for the
/// callers here); `None` if they are not all free within `wait`.
async fn with_every_permit<T: Send + 'static>(
    slots: &Arc<Semaphore>,
    permits: u32,
    wait: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let all = tokio::time::timeout(wait, slots.clone().acquire_many_owned(permits))
        .await
        .ok()?
        .ok()?;
    tokio::task::spawn_blocking(move || {
        let result = work();
        drop(all);
        result
    })
    .await
    .ok()
}

impl Shared {
    /// Every metric in the Prometheus text format, for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let live = self.live();
        let levels = metrics::Levels {
            sessions: self.sessions.len(),
            duplicate_bytes: u64::try_from(self.dedup.bytes()).unwrap_or(u64::MAX),
            not_cached: u64::try_from(self.dedup.over_budget()).unwrap_or(u64::MAX),
            live_sessions: self.registry.len(),
            live_sessions_evicted: self.registry.evicted.get(),
            live_sessions_refused: self.registry.refused.get(),
            das_queued: self.enforcer.backlog().0,
            das_in_flight: self.enforcer.backlog().1,
        };
        self.metrics.render(&live.runtime, &levels)
    }

    pub(crate) fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the config file. On any error the running configuration stays as it was;
    /// on success new requests use the new clients, certificates, CAs and VLAN, while
    /// conversations already under way finish with the settings they started with.
    /// Listen addresses and table sizes need a restart.
    ///
    /// # Errors
    /// Every error in the new file.
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = self.live();
        let loaded = Config::load(&running.config.path).and_then(|config| {
            let runtime = Runtime::build(&config, Some((&running.config, &running.runtime)))?;
            Ok((config, runtime))
        });
        self.metrics.reload(loaded.is_ok());
        let (config, runtime) = loaded?;
        let config = Arc::new(config);
        warn_inline_secrets(&config);
        for setting in restart_only_changes(&running.config, &config) {
            warn!(
                setting,
                "this setting changed but is read at start: restart anchord to apply it"
            );
        }
        // A kept checker keeps its CRLs too: read their files now, so a CRL replaced
        // before the SIGHUP counts from it, not from the next scheduled refresh.
        if let Some((store, _)) = runtime.revocation.as_ref().and_then(|r| r.crls()) {
            for e in store.reload() {
                warn!(error = %e, "CRL not reloaded; keeping the previous one");
            }
        }
        let live = Live::new(config, Arc::new(runtime));
        match self.live.write() {
            Ok(mut l) => *l = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
        Ok(())
    }
}

/// Reloads the configuration (and with it the policy and dictionary) off the reactor, as
/// SIGHUP and the file watcher do, and logs the outcome: on success the policy version in
/// force, else every error and that the running configuration stays.
pub async fn reload_logged(shared: Arc<Shared>, trigger: &'static str) {
    let target = shared.clone();
    // Loading may talk to an HSM (PKCS#11 blocks): off the reactor.
    let Ok(result) = tokio::task::spawn_blocking(move || target.reload()).await else {
        return;
    };
    match result {
        Ok(()) => {
            let live = shared.live();
            let policy = live.runtime.policy.version();
            info!(trigger, policy, "configuration reloaded");
            // The built-in policy's version does not change with its VLAN: every reload is
            // re-evaluated; sessions whose outcome stays are left alone.
            // Every reload starts a sweep number: one still running (or what it queued)
            // stops, even when this reload turned re-evaluation off.
            let sweep = shared.enforcer.new_sweep();
            if live.config.reevaluate_live_sessions {
                tokio::spawn(enforce::on_reload(
                    shared.clone(),
                    sweep,
                    live.config.reevaluate_per_second,
                ));
            }
        }
        Err(errors) => {
            for e in &errors.0 {
                warn!(trigger, error = %e, "reload refused");
            }
            warn!(trigger, "reload refused: keeping the running configuration");
        }
    }
}

/// Settings a reload takes but does not apply (sockets, table sizes, listeners, sinks),
/// where `new` differs from `running`.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("server.listen", running.listen != new.listen),
        (
            "server.max_sessions",
            running.max_sessions != new.max_sessions,
        ),
        (
            "server.session_idle_timeout_secs",
            running.session_idle_timeout != new.session_idle_timeout,
        ),
        (
            "server.max_inflight",
            running.max_inflight != new.max_inflight,
        ),
        (
            "server.duplicate_window_secs",
            running.duplicate_window != new.duplicate_window,
        ),
        (
            "server.duplicate_cache_mib",
            running.duplicate_cache != new.duplicate_cache,
        ),
        (
            "server.receive_buffer_kib",
            running.receive_buffer != new.receive_buffer,
        ),
        (
            "server.accounting_listen",
            running.accounting_listen != new.accounting_listen,
        ),
        (
            "server.live_session_expiry_secs",
            running.live_session_expiry != new.live_session_expiry,
        ),
        (
            "server.max_live_sessions",
            running.max_live_sessions != new.max_live_sessions,
        ),
        ("admin.listen", running.admin != new.admin),
        ("audit", running.audit != new.audit),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

fn warn_inline_secrets(config: &Config) {
    for name in &config.inline_secrets {
        warn!(client = %name, "shared secret is inline in the config: use secret_file outside dev/demo");
    }
    for w in &config.warnings {
        warn!(warning = %w, "configuration warning");
    }
}

async fn recv_loop(
    sock: Arc<UdpSocket>,
    role: Role,
    shared: Arc<Shared>,
    inflight: Arc<Semaphore>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        while tasks.try_join_next().is_some() {}
        let (len, src) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => continue,
                Err(e) => return Err(e),
            },
            () = shutdown.cancelled() => break,
        };
        let live = shared.live();
        let Some(client) = live.clients.lookup(src.ip()) else {
            shared.metrics.dropped("unknown_client");
            debug!(%src, "datagram from unknown client dropped");
            continue;
        };
        let share = shared.shares.of(&client.name);
        let Some(counted) = share.enter(live.config.max_inflight_per_client) else {
            shared.metrics.dropped("client_overloaded");
            debug!(nas = %client.name, reason = "client_overloaded", "datagram dropped: this client has max_inflight_per_client requests in flight");
            continue;
        };
        let over = share.over() && fairness::background().is_some();
        // Each direction has its own log-limit key, so a suppressed "over" line can never
        // hide the "back within" line that follows it (or the other way round).
        let change = if over { "background" } else { "foreground" };
        if share.mark_background(over) && ending::log_allowed(&shared, change, &client.name) {
            if over {
                info!(nas = %client.name, "this client is over its share of the server's processor time: its requests run at background priority");
            } else {
                info!(nas = %client.name, "this client is back within its share: its requests run at normal priority");
            }
        }
        drop(live);
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            shared.metrics.dropped("overloaded");
            continue;
        };
        let datagram = buf.get(..len).unwrap_or_default().to_vec();
        let (task_shared, sock) = (shared.clone(), sock.clone());
        let span = tracing::debug_span!("request", %src);
        let request = fairness::charged(share, async move {
            let authentic = handle_datagram(&task_shared, &sock, role, src, &datagram).await;
            drop((permit, counted));
            authentic
        })
        .instrument(span);
        // A client over its share of step time is served by the background runtime, all of
        // its request and not only its TLS steps, so a flood's packets do not delay the
        // other clients' either (see `fairness`).
        match fairness::background().filter(|_| over) {
            Some(background) => {
                shared.metrics.in_background();
                tasks.spawn_on(request, background)
            }
            None => tasks.spawn(request),
        };
    }
    // Requests under way get a moment to finish, so their ends are answered and recorded;
    // what is still running after it is cut short (a hung token, a stalled responder).
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        warn!(
            requests = tasks.len(),
            "shutting down with requests still in flight: they get no answer and no record"
        );
    }
    tasks.shutdown().await;
    Ok(())
}

/// Handles one datagram; true when it was an authentic request of its client (only those
/// are charged to the client's share: a forged source address must not spend it).
async fn handle_datagram(
    shared: &Arc<Shared>,
    sock: &UdpSocket,
    role: Role,
    src: SocketAddr,
    datagram: &[u8],
) -> bool {
    let live = shared.live();
    let Some(client) = live.clients.lookup(src.ip()) else {
        return false;
    };
    // Each port takes its own codes only (RFC 2866 §3: accounting on its own port).
    let req = match UnverifiedRequest::parse(datagram).and_then(|u| match (role, u.code()) {
        (Role::Accounting, Code::AccountingRequest) => u.verify(
            &client.secret,
            client.accounting_require_message_authenticator,
        ),
        // RFC 5997 §3: Status-Server on the accounting port (Message-Authenticator always
        // required) is answered with an Accounting-Response.
        (Role::Accounting, Code::StatusServer) => u.verify(&client.secret, true),
        (Role::Auth, Code::AccessRequest | Code::StatusServer) => {
            u.verify(&client.secret, client.require_message_authenticator)
        }
        (_, other) => Err(DecodeError::UnexpectedCode(other.number())),
    }) {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.dropped(e.reason());
            debug!(nas = %client.name, reason = e.reason(), error = %e, "datagram dropped");
            return false;
        }
    };
    let code = match req.code {
        Code::StatusServer => "status_server",
        Code::AccountingRequest => "accounting_request",
        _ => "access_request",
    };
    if role == Role::Auth {
        shared.metrics.request(code, &client.name);
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let attrs = summarize(req.attributes(), &live.config.dictionary);
        debug!(nas = %client.name, radius.id = req.identifier, code = ?req.code, len = datagram.len(), %attrs, "request");
    }
    let key = RequestKey {
        src,
        code: req.code.number(),
        identifier: req.identifier,
        authenticator: req.authenticator,
    };
    let pending = match shared.dedup.begin(key) {
        Begin::New(pending) => pending,
        Begin::InProgress => {
            shared.metrics.duplicate("in_progress");
            debug!(nas = %client.name, radius.id = req.identifier, "retransmission while in progress: dropped");
            return true;
        }
        Begin::Replay(reply) => {
            shared.metrics.duplicate("resent");
            debug!(nas = %client.name, radius.id = req.identifier, "retransmission: cached reply resent");
            send(sock, src, &reply).await;
            return true;
        }
    };
    let reply = match role {
        Role::Auth => {
            handler::process(shared, &live.config, &live.runtime, client, src, &req).await
        }
        Role::Accounting if req.code == Code::StatusServer => accounting::response(client, &req),
        Role::Accounting => accounting::process(shared, client, src, &req).await,
    };
    match reply {
        Some(reply) => {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let attrs = reply
                    .get(crate::radius::MIN_PACKET..)
                    .and_then(|a| parse_attributes(a).ok())
                    .map(|a| summarize(&a, &live.config.dictionary))
                    .unwrap_or_default();
                let code = reply.first().copied().unwrap_or(0);
                debug!(nas = %client.name, radius.id = req.identifier, code, len = reply.len(), %attrs, "reply");
            }
            // Exact-size copy: the builder's buffer has spare capacity the cache would keep.
            let reply: Arc<[u8]> = Arc::from(reply);
            pending.answered(reply.clone());
            send(sock, src, &reply).await;
        }
        // No reply: the ticket is dropped, so a retransmission is processed afresh.
        None => drop(pending),
    }
    true
}

async fn send(sock: &UdpSocket, dst: SocketAddr, bytes: &[u8]) {
    if let Err(e) = sock.send_to(bytes, dst).await {
        warn!(%dst, error = %e, "send failed");
    }
}

/// How long requests under way may still run once shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn a_reload_names_each_setting_it_cannot_apply() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let config = |server: &str| {
            let text = format!(
                "[server]\n{server}\n[tls]\ncertificate = \"server.pem\"\n\
                 private_key = \"server.key\"\nca = [\"root-ca.pem\"]\n\n[[client]]\n\
                 name = \"nas\"\naddress = \"127.0.0.1\"\nsecret = \"s\"\n"
            );
            Config::parse(&dir.path().join("anchord.toml"), &text).unwrap()
        };
        let running = config("listen = [\"127.0.0.1:1812\"]\n");
        assert!(restart_only_changes(&running, &running).is_empty());
        let new =
            config("listen = [\"127.0.0.1:1813\"]\nmax_sessions = 5\nduplicate_cache_mib = 64\n");
        assert_eq!(
            restart_only_changes(&running, &new),
            [
                "server.listen",
                "server.max_sessions",
                "server.duplicate_cache_mib",
                // Derived from listen (the next port).
                "server.accounting_listen"
            ]
        );
    }

    #[test]
    fn listening_sockets_get_the_configured_receive_buffer() {
        let asked = 96 * 1024;
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let before = s.recv_buffer_size().unwrap();
        set_receive_buffer(&s, "127.0.0.1:0".parse().unwrap(), asked);
        let got = granted(s.recv_buffer_size().unwrap());
        // 96 KiB is under every default rmem_max.
        assert!(got >= asked && got != granted(before), "{before} -> {got}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_receive_buffer_capped_below_the_ask_is_seen_as_capped() {
        // Asked 256 KiB under rmem_max = 208 KiB: Linux reports 416 KiB, twice the grant.
        let reported = 2 * 212_992;
        assert!(granted(reported) < 256 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn reinitialisation_waits_for_the_signature_in_flight() {
        let slots = Arc::new(Semaphore::new(2));
        let signing = slots.clone().acquire_owned().await.unwrap();
        let finalized = Arc::new(AtomicBool::new(false));
        let task = {
            let (slots, finalized) = (slots.clone(), finalized.clone());
            tokio::spawn(async move {
                with_every_permit(&slots, 2, Duration::from_secs(5), move || {
                    finalized.store(true, Ordering::SeqCst);
                    "reinitialised"
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !finalized.load(Ordering::SeqCst),
            "not while a signature runs"
        );
        // A new signing step queues behind it instead of starting on the module.
        assert!(slots.clone().try_acquire_owned().is_err());
        drop(signing);
        assert_eq!(task.await.unwrap(), Some("reinitialised"));
        assert!(finalized.load(Ordering::SeqCst));
        assert_eq!(slots.available_permits(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn reinitialisation_gives_up_when_a_signature_never_ends() {
        let slots = Arc::new(Semaphore::new(2));
        let _hung = slots.clone().acquire_owned().await.unwrap();
        let finalized = Arc::new(AtomicBool::new(false));
        let flag = finalized.clone();
        let r = with_every_permit(&slots, 2, Duration::from_secs(5), move || {
            flag.store(true, Ordering::SeqCst);
        })
        .await;
        assert_eq!(r, None);
        assert!(!finalized.load(Ordering::SeqCst));
        assert_eq!(
            slots.available_permits(),
            1,
            "nothing kept from the attempt"
        );
    }
}
