//! The live-session registry of one node: every session a NAS reported in accounting,
//! joined (through the Class anchord minted, see [`super::class`]) to the authentication
//! that created it.
//!
//! Sessions are keyed by NAS, Acct-Session-Id and the authentication (hostapd reuses an
//! Acct-Session-Id when a MAC re-authenticates within seconds, so the id alone would merge
//! two authentications). An entry ends on Stop, on the NAS's Accounting-On/Off, or when
//! no update came for [`Registry::expiry`]; both tables are bounded, evictions counted.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Unix seconds at the NAS of the latest record applied (its Event-Timestamp, else
    /// when it arrived less its Acct-Delay-Time): an older record (late, or replayed) does
    /// not undo a newer one.
    pub event_time: i64,
    /// Set by the registry: which insert of this key this is (0 before it is kept).
    pub generation: u64,
}

/// Keys of live sessions by something of theirs, each with the generation of the entry
/// that put it there: a late removal notice for an entry since replaced leaves its
/// successor indexed.
#[derive(Debug)]
struct Index<K>(Mutex<HashMap<K, HashMap<SessionKey, u64>>>);

impl<K: Hash + Eq> Default for Index<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq> Index<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, HashMap<SessionKey, u64>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, k: K, key: &SessionKey, generation: u64) {
        self.lock()
            .entry(k)
            .or_default()
            .insert(key.clone(), generation);
    }

    fn remove(&self, k: &K, key: &SessionKey, generation: u64) {
        let mut m = self.lock();
        if let Some(keys) = m.get_mut(k) {
            if keys.get(key) == Some(&generation) {
                keys.remove(key);
            }
            if keys.is_empty() {
                m.remove(k);
            }
        }
    }

    fn keys(&self, k: &K) -> Vec<SessionKey> {
        self.lock()
            .get(k)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn count(&self, k: &K) -> usize {
        self.lock().get(k).map_or(0, HashMap::len)
    }
}

/// The registry's indexes: sessions by NAS entry (for its cap) and by posture device id.
#[derive(Debug, Default)]
struct Indexes {
    by_nas: Index<String>,
    by_posture: Index<(String, String)>,
}

impl Indexes {
    fn remember(&self, s: &LiveSession) {
        self.by_nas.add(s.key.nas.clone(), &s.key, s.generation);
        for id in s.auth.iter().flat_map(|a| a.posture_ids.iter()) {
            self.by_posture.add(id.clone(), &s.key, s.generation);
        }
    }

    fn forget(&self, s: &LiveSession) {
        self.by_nas.remove(&s.key.nas, &s.key, s.generation);
        for id in s.auth.iter().flat_map(|a| a.posture_ids.iter()) {
            self.by_posture.remove(id, &s.key, s.generation);
        }
    }
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    auths: Cache<AuthId, Arc<Authentication>>,
    sessions: Cache<SessionKey, Arc<LiveSession>>,
    indexes: Arc<Indexes>,
    generations: AtomicU64,
    writes: Mutex<()>,
    per_nas: usize,
    expiry: Duration,
    /// Sessions evicted because the table was full.
    pub evicted: Counter,
    /// New sessions not kept because their NAS entry had its share of the table.
    pub refused: Counter,
}

/// How long an authentication is kept for sessions yet to report (a NAS sends Start within
/// seconds of the Accept; Interim-Updates refresh it).
const AUTH_IDLE: Duration = Duration::from_secs(24 * 3600);

impl Registry {
    /// A registry of at most `max` sessions (and as many authentications), at most
    /// `per_nas` of them from one NAS entry, a session ending `expiry` after its last update.
    pub fn new(max: u64, per_nas: u64, expiry: Duration) -> Self {
        let evicted = Counter::default();
        let counted = evicted.clone();
        let indexes = Arc::new(Indexes::default());
        let forget = indexes.clone();
        Self {
            auths: Cache::builder()
                .max_capacity(max)
                .time_to_idle(AUTH_IDLE)
                .build(),
            sessions: Cache::builder()
                .max_capacity(max)
                .time_to_idle(expiry)
                .support_invalidation_closures()
                .eviction_listener(move |_, session: Arc<LiveSession>, cause| {
                    use moka::notification::RemovalCause;
                    if cause == RemovalCause::Size {
                        counted.inc();
                    }
                    // A replaced entry's successor holds its index entries.
                    if cause != RemovalCause::Replaced {
                        forget.forget(&session);
                    }
                })
                .build(),
            indexes,
            generations: AtomicU64::new(1),
            writes: Mutex::new(()),
            per_nas: usize::try_from(per_nas).unwrap_or(usize::MAX),
            expiry,
            evicted,
            refused: Counter::default(),
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

    /// Starts or refreshes a session (Start, Interim-Update); false when it is a new
    /// session of a NAS entry that has its share of the table already (counted in
    /// `refused`: one NAS cannot crowd out the others' sessions).
    pub fn update(&self, mut s: LiveSession) -> bool {
        let _one_writer = self.writing();
        match self.sessions.get(&s.key) {
            Some(old) if s.event_time < old.event_time => return true,
            Some(old) => {
                s.started = old.started;
                // Where the DAS is stays where the session began: a record replayed from
                // another address of the same entry must not redirect its Disconnects.
                s.nas_addr = old.nas_addr;
                // What the session has is what it was given: its Accept, or a CoA since
                // (which no other session of the same authentication got).
                s.auth.clone_from(&old.auth);
            }
            None if self.indexes.by_nas.count(&s.key.nas) >= self.per_nas => {
                self.refused.inc();
                return false;
            }
            None => {}
        }
        self.insert(s);
        true
    }

    /// Serialises the registry's read-modify-write steps, so an update and a CoA's
    /// [`Registry::reauthorized`] of one session cannot undo each other, and each index
    /// entry carries the generation of the entry the table holds.
    fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `s` under a new generation, indexed (with [`Registry::writing`] held).
    fn insert(&self, mut s: LiveSession) {
        s.generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.indexes.remember(&s);
        self.sessions.insert(s.key.clone(), Arc::new(s));
    }

    /// The live session with this key.
    pub fn get(&self, key: &SessionKey) -> Option<Arc<LiveSession>> {
        self.sessions.get(key)
    }

    /// The live sessions of the device whose id at posture source `source` is `key` (its
    /// cache key there).
    pub fn by_posture(&self, source: &str, key: &str) -> Vec<Arc<LiveSession>> {
        self.indexes
            .by_posture
            .keys(&(source.to_owned(), key.to_owned()))
            .iter()
            .filter_map(|k| self.sessions.get(k))
            .collect()
    }

    /// A CoA-ACK: the session has the new authorization `change`; the next change is weighed
    /// against it.
    pub fn reauthorized(&self, key: &SessionKey, change: &super::enforce::Change) {
        let _one_writer = self.writing();
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let Some(auth) = &session.auth else {
            return;
        };
        // This session's own copy: another session of the same authentication (the device
        // roamed) keeps what its NAS gave it.
        let mut auth = (**auth).clone();
        auth.reply.clone_from(&change.reply);
        auth.vlan.clone_from(&change.vlan);
        auth.rule = Some(change.rule.clone());
        auth.facts = change.facts.clone();
        let mut session = (*session).clone();
        session.auth = Some(Arc::new(auth));
        self.insert(session);
    }

    /// Ends a session on its Stop from the NAS, unless the session has a record newer than
    /// `event_time` (a late or replayed Stop); whether it ended.
    pub fn stop_reported(&self, key: &SessionKey, event_time: i64) -> bool {
        let _one_writer = self.writing();
        match self.sessions.get(key) {
            Some(s) if s.event_time > event_time => false,
            Some(_) => self.sessions.remove(key).is_some(),
            None => false,
        }
    }

    /// Ends a session (Stop); whether it was live.
    pub fn stop(&self, key: &SessionKey) -> bool {
        let _one_writer = self.writing();
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

/// Whether `s` is the device `d` names. A joined session: by its certificate serial (hex,
/// any case), its EAP identity, or its id at a posture source; what the device controls in
/// accounting (User-Name) is not looked at, so no device can pass for another there. A
/// session without our Class (from before a restart): by its User-Name, the only name it
/// has.
pub fn is_device(s: &LiveSession, d: &str) -> bool {
    match s.auth.as_deref() {
        Some(a) => {
            a.cert_serial.eq_ignore_ascii_case(d)
                || a.identity == d
                || a.posture_ids
                    .iter()
                    .any(|(_, id)| id.eq_ignore_ascii_case(d))
        }
        None => s.user_name.as_deref() == Some(d),
    }
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
            event_time: 100,
            generation: 0,
        }
    }

    #[test]
    fn a_reused_session_id_under_a_new_authentication_is_another_session() {
        let r = Registry::new(100, 100, Duration::from_secs(600));
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
        let r = Registry::new(100, 100, Duration::from_secs(600));
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
        r_accept(
            &Registry::new(10, 10, Duration::from_secs(60)),
            id,
            facts,
            path,
        );
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
        let r = Registry::new(10, 10, Duration::from_secs(600));
        // Five NAS entries of ten sessions each: each within its own share, the table full.
        for i in 0..50 {
            r.update(session(&format!("ap{}", i % 5), &format!("S{i}"), None));
        }
        assert!(r.len() <= 10, "{}", r.len());
        assert!(r.evicted.get() >= 40, "{}", r.evicted.get());
    }

    #[test]
    fn one_nas_entry_gets_its_share_of_the_table_and_no_more() {
        let r = Registry::new(100, 3, Duration::from_secs(600));
        for i in 0..5 {
            r.update(session("ap1", &format!("S{i}"), None));
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.refused.get(), 2);
        // The others' sessions are still taken; an update of a kept one too.
        assert!(r.update(session("ap2", "S0", None)));
        assert!(r.update(session("ap1", "S0", None)));
        // A Stop makes room.
        assert!(r.stop(&session("ap1", "S1", None).key));
        assert!(r.update(session("ap1", "S9", None)));
        assert!(!r.update(session("ap1", "S10", None)));
    }

    /// A session of `id` joined to an authentication of device-ecdsa (serial 1014) with
    /// these posture ids.
    fn joined(id: &str, ids: &[(&str, &str)]) -> LiveSession {
        let mut s = session("ap1", id, Some([1; 16]));
        s.auth = Some(Arc::new(Authentication {
            id: [1; 16],
            at: 0,
            nas: "ap1".into(),
            identity: "device-ecdsa".into(),
            station: None,
            cert_subject: String::new(),
            cert_serial: "1014".into(),
            cert_issuer: String::new(),
            rule: None,
            vlan: None,
            reply: Vec::new(),
            posture: "-".into(),
            facts: Arc::new(crate::policy::Facts {
                now: 0,
                cert: crate::pki::facts::CertFacts::default(),
                tls_version: "1.3",
                first: crate::policy::RequestFacts::default(),
                last: crate::policy::RequestFacts::default(),
                revocation: crate::policy::RevocationFacts::not_checked(),
                posture: crate::policy::PostureFacts::default(),
            }),
            path: crate::tls::VerifiedChain::for_test(Vec::new()),
            posture_ids: ids
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }));
        s
    }

    #[test]
    fn a_joined_session_is_found_by_what_was_verified_not_by_its_user_name() {
        let mut s = joined("S1", &[("mdm", "0f6a2c1e")]);
        s.user_name = Some("ceo-laptop".into());
        assert!(is_device(&s, "1014"));
        assert!(is_device(&s, "device-ecdsa"));
        assert!(is_device(&s, "0F6A2C1E"));
        assert!(
            !is_device(&s, "ceo-laptop"),
            "the User-Name a device sent is not who it is"
        );
        let mut unjoined = session("ap1", "S2", None);
        unjoined.user_name = Some("ceo-laptop".into());
        assert!(
            is_device(&unjoined, "ceo-laptop"),
            "without a Class it is the only name"
        );
    }

    #[test]
    fn sessions_are_found_by_posture_id_until_they_end() {
        let r = Registry::new(100, 100, Duration::from_secs(600));
        r.update(joined("S1", &[("mdm", "dev-1"), ("edr", "host-1")]));
        r.update(joined("S2", &[("mdm", "dev-2")]));
        let found = |src: &str, id: &str| -> Vec<String> {
            r.by_posture(src, id)
                .iter()
                .map(|s| s.key.acct_session_id.clone())
                .collect()
        };
        assert_eq!(found("mdm", "dev-1"), ["S1"]);
        assert_eq!(found("edr", "host-1"), ["S1"]);
        assert!(found("edr", "dev-1").is_empty(), "ids are per source");
        // An Interim-Update replaces the entry: still found.
        r.update(joined("S1", &[("mdm", "dev-1"), ("edr", "host-1")]));
        r.sessions();
        assert_eq!(found("mdm", "dev-1"), ["S1"]);
        // Stopped: gone from the index too.
        assert!(r.stop(&joined("S1", &[]).key));
        r.sessions();
        assert!(found("mdm", "dev-1").is_empty());
        assert_eq!(found("mdm", "dev-2"), ["S2"]);
    }

    #[test]
    fn a_late_or_replayed_record_does_not_undo_a_newer_one() {
        let r = Registry::new(100, 100, Duration::from_secs(600));
        let at = |t: i64| {
            let mut s = session("ap1", "S1", None);
            s.event_time = t;
            s
        };
        r.update(at(100));
        r.update(at(700));
        // The Stop of the session's first minutes, replayed (or late): ignored.
        assert!(!r.stop_reported(&at(0).key, 160));
        assert_eq!(r.len(), 1);
        // An older Interim-Update does not move it back either.
        r.update(at(400));
        assert_eq!(r.sessions()[0].event_time, 700);
        assert!(r.stop_reported(&at(0).key, 900));
        assert!(r.is_empty());
    }

    fn change(vlan: &str) -> super::super::enforce::Change {
        super::super::enforce::Change {
            reply: vec![crate::policy::ReplyAttribute {
                name: "Tunnel-Private-Group-Id".into(),
                tag: Some(0),
                value: vlan.into(),
            }],
            vlan: Some(vlan.into()),
            rule: "r".into(),
            facts: joined("X", &[]).auth.unwrap().facts.clone(),
        }
    }

    #[test]
    fn a_coa_is_the_sessions_own_and_accounting_does_not_roll_it_back() {
        let r = Registry::new(100, 100, Duration::from_secs(600));
        // Two sessions of one authentication (the device roamed).
        r.update(joined("S1", &[]));
        r.update(joined("S2", &[]));
        r.reauthorized(&joined("S1", &[]).key, &change("999"));
        // Interim-Updates carry the authentication as it was accepted.
        let mut interim = joined("S1", &[]);
        interim.event_time = 200;
        r.update(interim);
        let mut other = joined("S2", &[]);
        other.event_time = 200;
        r.update(other);
        let vlan = |id: &str| {
            r.sessions()
                .into_iter()
                .find(|s| s.key.acct_session_id == id)
                .and_then(|s| s.auth.as_ref().and_then(|a| a.vlan.clone()))
        };
        assert_eq!(
            vlan("S1").as_deref(),
            Some("999"),
            "kept across the Interim"
        );
        assert_eq!(vlan("S2"), None, "the other session was not changed");
    }

    #[test]
    fn concurrent_updates_and_coas_leave_the_indexes_matching_the_table() {
        let r = Arc::new(Registry::new(1000, 1000, Duration::from_secs(600)));
        let ids = [("mdm", "dev-1")];
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let mut s = joined("S1", &ids);
                        s.event_time = i;
                        if (i + t) % 3 == 0 {
                            r.reauthorized(&s.key, &change("999"));
                        } else {
                            r.update(s);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(r.by_posture("mdm", "dev-1").len(), 1);
        assert!(r.stop(&joined("S1", &ids).key));
        r.sessions();
        assert!(r.by_posture("mdm", "dev-1").is_empty());
        assert_eq!(
            r.indexes.by_nas.count(&"ap1".to_owned()),
            0,
            "its share is free again"
        );
        assert_eq!(
            r.indexes.by_posture.count(&("mdm".into(), "dev-1".into())),
            0
        );
    }
}
