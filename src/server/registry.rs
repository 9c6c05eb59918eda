//! The live-session registry of one node: every session a NAS reported in accounting,
//! joined (through the Class anchord minted, see [`super::class`]) to the authentication
//! that created it.
//!
//! Sessions are keyed by NAS, Acct-Session-Id and the authentication (hostapd reuses an
//! Acct-Session-Id when a MAC re-authenticates within seconds, so the id alone would merge
//! two authentications). An entry ends on Stop, on the NAS's Accounting-On/Off, or when
//! no update came for [`Registry::expiry`]; both tables are bounded, evictions counted.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;

use super::class::AuthId;

/// What anchord decided for one accepted authentication, kept for its sessions.
#[derive(Debug, Clone)]
pub struct Authentication {
    /// The id its Class carries.
    pub id: AuthId,
    /// Unix seconds.
    pub at: i64,
    /// The client (NAS) entry.
    pub nas: String,
    /// The EAP identity.
    pub identity: String,
    /// The device's Calling-Station-Id (normalised), if sent.
    pub station: Option<String>,
    /// Certificate subject, serial (hex) and issuer.
    pub cert_subject: String,
    /// Certificate serial (hex).
    pub cert_serial: String,
    /// Certificate issuer.
    pub cert_issuer: String,
    /// The rule that decided, if a policy did.
    pub rule: Option<String>,
    /// The VLAN given.
    pub vlan: Option<String>,
    /// The reply attributes it was given (a posture change that alters any of them, not
    /// only the VLAN, acts on the session).
    pub reply: Vec<crate::policy::ReplyAttribute>,
    /// The posture audit text at the decision.
    pub posture: String,
    /// The path rustls verified: checked again for revocation while the session lives.
    pub path: crate::tls::VerifiedChain,
    /// The facts it was decided on: a posture change re-runs the policy on them.
    pub facts: Arc<crate::policy::Facts>,
    /// The device's id at each posture source (source, cache key), whether or not the
    /// rules asked: how a posture event finds its sessions.
    pub posture_ids: Vec<(String, String)>,
}

/// A session's key: NAS entry, Acct-Session-Id, and the authentication it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The client (NAS) entry.
    pub nas: String,
    /// Acct-Session-Id as sent.
    pub acct_session_id: String,
    /// The authentication, when the Class opened.
    pub auth: Option<AuthId>,
}

/// One live session.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Its key.
    pub key: SessionKey,
    /// The authentication that created it (`None`: no Class of ours, e.g. from before a
    /// restart).
    pub auth: Option<Arc<Authentication>>,
    /// User-Name in accounting.
    pub user_name: Option<String>,
    /// Calling-Station-Id (normalised).
    pub station: Option<String>,
    /// The address the NAS's accounting came from (where its DAS is, unless configured).
    pub nas_addr: std::net::IpAddr,
    /// NAS-IP-Address / NAS-IPv6-Address as text.
    pub nas_ip: Option<String>,
    /// NAS-Identifier.
    pub nas_identifier: Option<String>,
    /// Unix seconds of the first record seen.
    pub started: i64,
    /// Unix seconds of the latest record.
    pub updated: i64,
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    auths: Cache<AuthId, Arc<Authentication>>,
    sessions: Cache<SessionKey, Arc<LiveSession>>,
    expiry: Duration,
    /// Sessions evicted because the table was full.
    pub evicted: Counter,
}

/// How long an authentication is kept for sessions yet to report (a NAS sends Start within
/// seconds of the Accept; Interim-Updates refresh it).
const AUTH_IDLE: Duration = Duration::from_secs(24 * 3600);

impl Registry {
    /// A registry of at most `max` sessions (and as many authentications), a session
    /// ending `expiry` after its last update.
    pub fn new(max: u64, expiry: Duration) -> Self {
        let evicted = Counter::default();
        let counted = evicted.clone();
        Self {
            auths: Cache::builder()
                .max_capacity(max)
                .time_to_idle(AUTH_IDLE)
                .build(),
            sessions: Cache::builder()
                .max_capacity(max)
                .time_to_idle(expiry)
                .support_invalidation_closures()
                .eviction_listener(move |_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        counted.inc();
                    }
                })
                .build(),
            expiry,
            evicted,
        }
    }

    /// How long a session lives without an update.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Remembers an accepted authentication, without the chain the device presented (the
    /// verified path is kept; a device must not make every authentication of its weigh
    /// what it chose to send).
    pub fn accepted(&self, mut a: Authentication) {
        if !a.facts.cert.chain.is_empty() {
            Arc::make_mut(&mut a.facts).cert.chain = Vec::new();
        }
        self.auths.insert(a.id, Arc::new(a));
    }

    /// The authentication with this id, if kept.
    pub fn authentication(&self, id: &AuthId) -> Option<Arc<Authentication>> {
        self.auths.get(id)
    }

    /// Starts or refreshes a session (Start, Interim-Update).
    pub fn update(&self, mut s: LiveSession) {
        if let Some(old) = self.sessions.get(&s.key) {
            s.started = old.started;
            // Where the DAS is stays where the session began: a record replayed from
            // another address of the same entry must not redirect its Disconnects.
            s.nas_addr = old.nas_addr;
        }
        self.sessions.insert(s.key.clone(), Arc::new(s));
    }

    /// A CoA-ACK: the session (and its authentication, which later records join) has the
    /// new authorization `change`; the next posture change is weighed against it.
    pub fn reauthorized(&self, key: &SessionKey, change: &super::enforce::Change) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let Some(auth) = &session.auth else {
            return;
        };
        let mut auth = (**auth).clone();
        auth.reply.clone_from(&change.reply);
        auth.vlan.clone_from(&change.vlan);
        auth.rule = Some(change.rule.clone());
        auth.facts = change.facts.clone();
        let auth = Arc::new(auth);
        self.auths.insert(auth.id, auth.clone());
        let mut session = (*session).clone();
        session.auth = Some(auth);
        self.sessions.insert(key.clone(), Arc::new(session));
    }

    /// Ends a session (Stop); whether it was live.
    pub fn stop(&self, key: &SessionKey) -> bool {
        self.sessions.remove(key).is_some()
    }

    /// Ends every session the NAS at `addr` of entry `nas` reported (Accounting-On/Off: it
    /// rebooted); other NASes of the same entry (a subnet of access points) keep theirs.
    pub fn clear_nas(&self, nas: &str, addr: std::net::IpAddr) {
        let nas = nas.to_owned();
        // Only errors when invalidation closures are not enabled; they are.
        let _ = self
            .sessions
            .invalidate_entries_if(move |k, v| k.nas == nas && v.nas_addr == addr);
        self.sessions.run_pending_tasks();
    }

    /// Every live session, oldest first.
    pub fn sessions(&self) -> Vec<Arc<LiveSession>> {
        self.sessions.run_pending_tasks();
        let mut all: Vec<_> = self.sessions.iter().map(|(_, v)| v).collect();
        all.sort_by(|a, b| {
            (a.started, &a.key.acct_session_id).cmp(&(b.started, &b.key.acct_session_id))
        });
        all
    }

    /// Live sessions.
    pub fn len(&self) -> u64 {
        self.sessions.run_pending_tasks();
        self.sessions.entry_count()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `s` is the device `d` names: its certificate serial (hex, any case), its EAP
/// identity, or its User-Name.
pub fn is_device(s: &LiveSession, d: &str) -> bool {
    let serial = |a: &Authentication| a.cert_serial.eq_ignore_ascii_case(d);
    s.auth
        .as_deref()
        .is_some_and(|a| serial(a) || a.identity == d)
        || s.user_name.as_deref() == Some(d)
}

/// A session as the admin listener shows it.
pub fn session_json(s: &LiveSession) -> serde_json::Value {
    serde_json::json!({
        "nas": s.key.nas,
        "acct_session_id": s.key.acct_session_id,
        "authentication": s.key.auth.as_ref().map(super::class::id_text),
        "user_name": s.user_name,
        "station": s.station,
        "nas_ip": s.nas_ip,
        "nas_identifier": s.nas_identifier,
        "started": s.started,
        "updated": s.updated,
        "joined": s.auth.is_some(),
        "identity": s.auth.as_ref().map(|a| &a.identity),
        "cert": s.auth.as_ref().map(|a| serde_json::json!({
            "subject": a.cert_subject,
            "serial": a.cert_serial,
            "issuer": a.cert_issuer,
        })),
        "rule": s.auth.as_ref().and_then(|a| a.rule.as_ref()),
        "vlan": s.auth.as_ref().and_then(|a| a.vlan.as_ref()),
        "posture": s.auth.as_ref().map(|a| &a.posture),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(nas: &str, id: &str, auth: Option<AuthId>) -> LiveSession {
        LiveSession {
            key: SessionKey {
                nas: nas.into(),
                acct_session_id: id.into(),
                auth,
            },
            auth: None,
            user_name: None,
            station: None,
            nas_addr: [127, 0, 0, 1].into(),
            nas_ip: None,
            nas_identifier: None,
            started: 100,
            updated: 100,
        }
    }

    #[test]
    fn a_reused_session_id_under_a_new_authentication_is_another_session() {
        let r = Registry::new(100, Duration::from_secs(600));
        r.update(session("ap1", "AAAA", Some([1; 16])));
        r.update(session("ap1", "AAAA", Some([2; 16])));
        r.update(session("ap2", "AAAA", Some([1; 16])));
        assert_eq!(r.len(), 3);
        // An Interim-Update keeps the session's start.
        let mut later = session("ap1", "AAAA", Some([1; 16]));
        later.started = 500;
        later.updated = 500;
        r.update(later);
        let s = r
            .sessions()
            .into_iter()
            .find(|s| s.key.nas == "ap1" && s.key.auth == Some([1; 16]))
            .unwrap();
        assert_eq!((s.started, s.updated), (100, 500));
        // An update from another address of the entry does not move the session's NAS.
        let mut moved = session("ap1", "AAAA", Some([1; 16]));
        moved.nas_addr = [192, 0, 2, 66].into();
        r.update(moved);
        let s = r
            .sessions()
            .into_iter()
            .find(|s| s.key.nas == "ap1" && s.key.auth == Some([1; 16]))
            .unwrap();
        assert_eq!(s.nas_addr, std::net::IpAddr::from([127, 0, 0, 1]));
        assert!(r.stop(&session("ap1", "AAAA", Some([2; 16])).key));
        assert!(
            !r.stop(&session("ap1", "AAAA", Some([2; 16])).key),
            "stopped once"
        );
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn accounting_on_ends_every_session_of_that_nas_only() {
        let r = Registry::new(100, Duration::from_secs(600));
        for i in 0..5 {
            r.update(session("ap1", &format!("S{i}"), None));
        }
        r.update(session("ap2", "S0", None));
        // Another access point of the same client entry (a subnet).
        let mut sibling = session("ap1", "T0", None);
        sibling.nas_addr = [127, 0, 0, 2].into();
        r.update(sibling);
        r.clear_nas("ap1", [127, 0, 0, 1].into());
        let left: Vec<_> = r
            .sessions()
            .iter()
            .map(|s| s.key.acct_session_id.clone())
            .collect();
        assert_eq!(left, ["S0", "T0"]);
    }

    #[test]
    fn an_authentication_is_kept_without_the_chain_the_device_presented() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let pem = |n: &str| {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::from_pem_file(dir.path().join(format!("{n}.pem")))
                .unwrap()
        };
        let path = crate::tls::VerifiedChain::for_test(vec![
            pem("device-ecdsa"),
            pem("issuing-ca"),
            pem("root-ca"),
        ]);
        let mut facts = crate::policy::Facts {
            now: 0,
            cert: crate::pki::facts::CertFacts::of(path.certificates()),
            tls_version: "1.3",
            first: crate::policy::RequestFacts::default(),
            last: crate::policy::RequestFacts::default(),
            revocation: crate::policy::RevocationFacts::not_checked(),
            posture: crate::policy::PostureFacts::default(),
        };
        // A device padding its chain: sent, not kept.
        facts
            .cert
            .chain
            .extend(std::iter::repeat_n(pem("root-ca"), 40));
        let id = [7; 16];
        r_accept(&Registry::new(10, Duration::from_secs(60)), id, facts, path);
    }

    fn r_accept(
        r: &Registry,
        id: AuthId,
        facts: crate::policy::Facts,
        path: crate::tls::VerifiedChain,
    ) {
        r.accepted(Authentication {
            id,
            at: 0,
            nas: "ap1".into(),
            identity: "device-ecdsa".into(),
            station: None,
            cert_subject: String::new(),
            cert_serial: String::new(),
            cert_issuer: String::new(),
            rule: None,
            vlan: None,
            reply: Vec::new(),
            posture: "-".into(),
            facts: Arc::new(facts),
            path,
            posture_ids: Vec::new(),
        });
        let kept = r.authentication(&id).unwrap();
        assert!(kept.facts.cert.chain.is_empty());
        assert_eq!(
            kept.path.certificates().len(),
            3,
            "the verified path is kept"
        );
        assert!(!kept.facts.cert.serial.is_empty(), "and the facts");
    }

    #[test]
    fn the_table_is_bounded_and_evictions_are_counted() {
        let r = Registry::new(10, Duration::from_secs(600));
        for i in 0..50 {
            r.update(session("ap1", &format!("S{i}"), None));
        }
        assert!(r.len() <= 10, "{}", r.len());
        assert!(r.evicted.get() >= 40, "{}", r.evicted.get());
    }
}
