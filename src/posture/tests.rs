//! Sources against the dev MDM, a real HTTP server on loopback: caching, shared fetches,
//! OAuth2 tokens, back-off, identity safety.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::devmdm::DevMdm;
use super::settings::{
    Auth, BoolFact, Extractor, FactMap, IdFrom, Secret, SourceSettings, Step, Template,
};
use super::source::{Served, Source, Stats};
use crate::pki::facts::CertFacts;
use crate::policy::PostureAnswer;

pub(crate) const ID: &str = "0f6a2c1e-8f61-4a55-b0a9-2c7b3c1b7d10";
const OTHER: &str = "11111111-2222-3333-4444-555555555555";

fn devices() -> Vec<Value> {
    vec![
        json!({"id": ID, "serialNumber": "SN1", "complianceState": "compliant",
               "operatingSystem": "Windows", "lastSyncDateTime": "2026-01-07T12:00:00Z"}),
        json!({"id": OTHER, "serialNumber": "SN2", "complianceState": "noncompliant"}),
    ]
}

pub(crate) fn settings(addr: std::net::SocketAddr, oauth: bool) -> SourceSettings {
    SourceSettings {
        name: "mdm".into(),
        base: format!("http://{addr}").parse().unwrap(),
        identity: vec![Extractor {
            from: IdFrom::SanUri,
            prefix: "IntuneDeviceId://".into(),
            pattern: Regex::new(&format!("^(?:{})$", super::settings::PATTERNS[0].1)).unwrap(),
            fold_case: true,
        }],
        steps: vec![Step {
            path: Template::parse("/v1.0/deviceManagement/managedDevices/{id}").unwrap(),
            results: None,
            matches: vec![("/id".into(), Template::parse("{id}").unwrap())],
            save: Vec::new(),
        }],
        facts: FactMap {
            compliant: Some(BoolFact {
                pointer: "/complianceState".into(),
                equals: vec!["compliant".into()],
            }),
            os: Some("/operatingSystem".into()),
            ..FactMap::default()
        },
        auth: if oauth {
            Auth::OAuth2 {
                token_url: format!("http://{addr}/oauth2/token").parse().unwrap(),
                client_id: "anchord".into(),
                client_secret: Secret(Zeroizing::new("s3cret".into())),
                scope: None,
            }
        } else {
            Auth::None
        },
        headers: Vec::new(),
        timeout: Duration::from_millis(1500),
        fresh: Duration::from_secs(60),
        max_stale: Duration::from_secs(3600),
        cache_size: 1000,
        rate: 1000.0,
        burst: 1000.0,
        roots: Vec::new(),
        poll: None,
        webhook: None,
    }
}

pub(crate) async fn start(oauth: bool) -> (Arc<DevMdm>, std::net::SocketAddr) {
    let client = oauth.then(|| ("anchord".to_owned(), "s3cret".to_owned()));
    let mdm = DevMdm::new(devices(), client);
    let addr = mdm.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (mdm, addr)
}

/// A lookup of ID against a dev MDM that answers after `delay`, 100 ms under way.
async fn fetch_under_way(
    delay: Duration,
) -> (
    Arc<DevMdm>,
    Arc<Source>,
    tokio::task::JoinHandle<super::Lookup>,
) {
    let (mdm, addr) = start(false).await;
    mdm.set(|k| k.delay = delay);
    let s = source(settings(addr, false));
    let task = {
        let s = s.clone();
        tokio::spawn(async move { s.lookup(&cert(ID), None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    (mdm, s, task)
}

/// A source keyed by the certificate's serial (case-sensitive ids), looked up through the
/// list endpoint filtered by serial number.
fn by_serial_list(addr: std::net::SocketAddr) -> SourceSettings {
    let mut st = settings(addr, false);
    st.identity[0] = by_serial("[A-Za-z0-9]+");
    st.steps[0] = Step {
        path: Template::parse(
            "/v1.0/deviceManagement/managedDevices?$filter=serialNumber eq '{id}'",
        )
        .unwrap(),
        results: Some("/value".into()),
        matches: vec![("/serialNumber".into(), Template::parse("{id}").unwrap())],
        save: Vec::new(),
    };
    st
}

/// Ids from the certificate's serial, matching `pattern`.
fn by_serial(pattern: &str) -> Extractor {
    Extractor {
        from: IdFrom::Serial,
        prefix: String::new(),
        pattern: Regex::new(&format!("^(?:{pattern})$")).unwrap(),
        fold_case: false,
    }
}

pub(crate) fn cert(id: &str) -> CertFacts {
    let mut c = CertFacts::default();
    c.san.uri = vec![format!("IntuneDeviceId://{id}")];
    c
}

fn source(s: SourceSettings) -> Arc<Source> {
    Arc::new(Source::new(s, Stats::default()).unwrap())
}

fn compliant(l: &super::Lookup) -> Option<bool> {
    match &l.answer {
        PostureAnswer::Known(p) => p.compliant,
        _ => None,
    }
}

#[tokio::test]
async fn a_fresh_answer_is_served_from_the_cache_without_a_request() {
    let (mdm, addr) = start(false).await;
    let s = source(settings(addr, false));
    let first = s.lookup(&cert(ID), None).await;
    assert_eq!(first.served, Served::Fetched);
    assert_eq!(compliant(&first), Some(true));
    let second = s.lookup(&cert(ID), None).await;
    assert_eq!(second.served, Served::Fresh);
    assert_eq!(compliant(&second), Some(true));
    assert_eq!(mdm.counts().device_requests, 1);
}

#[tokio::test]
async fn past_its_fresh_time_the_answer_is_served_and_refreshed_once_in_the_background() {
    let (mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.fresh = Duration::from_millis(200);
    let s = source(st);
    s.lookup(&cert(ID), None).await;
    // The device turns non-compliant at the source.
    mdm.set(|k| k.devices[0]["complianceState"] = json!("noncompliant"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stale = [
        s.lookup(&cert(ID), None).await,
        s.lookup(&cert(ID), None).await,
    ];
    for l in &stale {
        assert_eq!(l.served, Served::Stale);
        assert_eq!(compliant(l), Some(true), "the stale answer is used");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(mdm.counts().device_requests, 2, "one background refresh");
    let after = s.lookup(&cert(ID), None).await;
    assert_eq!(after.served, Served::Fresh);
    assert_eq!(compliant(&after), Some(false));
}

#[tokio::test]
async fn only_a_fresh_cached_answer_or_a_missing_id_settles_without_asking_the_source() {
    let (mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.fresh = Duration::from_millis(200);
    let s = source(st);
    assert!(s.settled(&cert(ID), None).await.is_none(), "nothing cached");
    let no_id = s.settled(&CertFacts::default(), None).await.unwrap();
    assert_eq!(no_id.served, Served::NoId);
    assert!(matches!(no_id.answer, PostureAnswer::UnknownDevice(_)));
    s.lookup(&cert(ID), None).await;
    let fresh = s.settled(&cert(ID), None).await.unwrap();
    assert_eq!(fresh.served, Served::Fresh);
    assert_eq!(compliant(&fresh), Some(true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.settled(&cert(ID), None).await.is_none(),
        "stale is not settled"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        mdm.counts().device_requests,
        1,
        "settling never asks the source"
    );
}

#[tokio::test]
async fn concurrent_lookups_of_one_device_share_one_request() {
    let (mdm, addr) = start(false).await;
    mdm.set(|k| k.delay = Duration::from_millis(200));
    let s = source(settings(addr, false));
    let c = cert(ID);
    let all = futures_util::future::join_all((0..20).map(|_| s.lookup(&c, None))).await;
    assert!(all.iter().all(|l| compliant(l) == Some(true)));
    assert_eq!(mdm.counts().device_requests, 1);
}

#[tokio::test]
async fn a_missing_device_and_a_certificate_without_an_id_are_unknown_devices() {
    let (mdm, addr) = start(false).await;
    let s = source(settings(addr, false));
    let l = s
        .lookup(&cert("22222222-2222-3333-4444-555555555555"), None)
        .await;
    assert!(matches!(l.answer, PostureAnswer::UnknownDevice(_)), "{l:?}");
    assert_eq!(mdm.counts().device_requests, 1);
    // No id in the certificate at all.
    let l = s.lookup(&CertFacts::default(), None).await;
    assert_eq!(l.served, Served::NoId);
    assert!(matches!(l.answer, PostureAnswer::UnknownDevice(_)));
}

#[tokio::test]
async fn a_list_that_ignores_its_filter_never_gives_the_first_devices_posture() {
    let (mdm, addr) = start(false).await;
    let s = source(by_serial_list(addr));
    let c = CertFacts {
        serial: "SN2".into(),
        ..CertFacts::default()
    };
    let l = s.lookup(&c, None).await;
    assert_eq!(
        compliant(&l),
        Some(false),
        "the filter works: SN2's own record"
    );
    s.forget("SN2", crate::clock::now()).await;
    mdm.set(|k| k.ignore_filter = true);
    let l = s.lookup(&c, None).await;
    assert!(
        matches!(&l.answer, PostureAnswer::UnknownDevice(why) if why.contains("2 results")),
        "{l:?}"
    );
}

#[tokio::test]
async fn an_oauth2_token_is_fetched_once_reused_and_refreshed_after_a_401() {
    let (mdm, addr) = start(true).await;
    let s = source(settings(addr, true));
    s.lookup(&cert(ID), None).await;
    s.forget(ID, crate::clock::now()).await;
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(true));
    assert_eq!(mdm.counts().tokens, 1, "the token is reused");
    // The source stops honouring the token: one 401, one new token, the lookup succeeds.
    mdm.set(|k| k.revoke_tokens = true);
    s.forget(ID, crate::clock::now()).await;
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(true), "{l:?}");
    let c = mdm.counts();
    assert_eq!((c.tokens, c.unauthorized), (2, 1));
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_before_it_expires() {
    let (mdm, addr) = start(true).await;
    // One second of life (refreshed early by a tenth of it, rounded down: none).
    mdm.set(|k| k.token_ttl = 1);
    let s = source(settings(addr, true));
    s.lookup(&cert(ID), None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.forget(ID, crate::clock::now()).await;
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(true));
    let c = mdm.counts();
    assert_eq!(c.tokens, 2, "a new token once the first expired");
    assert_eq!(c.unauthorized, 0, "never sent after expiry");
}

#[tokio::test]
async fn a_429_backs_the_source_off_for_its_retry_after_and_the_cache_still_serves() {
    let (mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.fresh = Duration::ZERO;
    let s = source(st);
    s.lookup(&cert(ID), None).await;
    mdm.set(|k| {
        k.status = Some(429);
        k.retry_after = Some("2".into());
    });
    // Stale: served from the cache; the background refresh meets the 429.
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!((l.served, compliant(&l)), (Served::Stale, Some(true)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mdm.counts().device_requests, 2);
    assert!(s.backed_off().is_some_and(|d| d > Duration::from_secs(1)));
    // Backed off: no request, cached facts still used; another device has none cached.
    for _ in 0..3 {
        assert_eq!(compliant(&s.lookup(&cert(ID), None).await), Some(true));
    }
    let l = s.lookup(&cert(OTHER), None).await;
    assert!(matches!(&l.answer, PostureAnswer::Unavailable(why) if why.contains("rate limited")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        mdm.counts().device_requests,
        2,
        "not called before Retry-After"
    );
    mdm.set(|k| k.status = None);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let l = s.lookup(&cert(OTHER), None).await;
    assert_eq!(compliant(&l), Some(false));
}

#[tokio::test]
async fn a_source_down_slow_or_speaking_garbage_is_unavailable_within_its_timeout() {
    let (mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.timeout = Duration::from_millis(300);
    let s = source(st);
    mdm.set(|k| k.garbage = true);
    let l = s.lookup(&cert(ID), None).await;
    assert!(matches!(&l.answer, PostureAnswer::Unavailable(w) if w.contains("not JSON")));
    mdm.set(|k| {
        k.garbage = false;
        k.devices[0]["complianceState"] = json!({"odd": 1});
    });
    let l = s.lookup(&cert(ID), None).await;
    assert!(matches!(&l.answer, PostureAnswer::Unavailable(w) if w.contains("complianceState")));
    mdm.set(|k| k.delay = Duration::from_secs(5));
    let started = crate::clock::now();
    let l = s.lookup(&cert(ID), None).await;
    assert!(matches!(&l.answer, PostureAnswer::Unavailable(_)));
    assert!(started.elapsed() < Duration::from_secs(2));
    // Nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let s = source(settings(dead, false));
    let l = s.lookup(&cert(ID), None).await;
    assert!(
        matches!(&l.answer, PostureAnswer::Unavailable(w) if w.contains("reach")),
        "{l:?}"
    );
}

#[tokio::test]
async fn a_poll_caches_the_non_compliant_set_and_refetches_a_device_that_left_it() {
    use super::settings::Poll;
    let (mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.poll = Some(Poll {
        interval: Duration::from_millis(300),
        path: Template::parse(
            "/v1.0/deviceManagement/managedDevices?$filter=complianceState eq 'noncompliant'",
        )
        .unwrap(),
        results: "/value".into(),
        id: "/id".into(),
        next: None,
        max_pages: 10,
    });
    let s = source(st);
    let (tx, mut events) = tokio::sync::broadcast::channel(16);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(super::poll::run(Arc::downgrade(&s), tx, stop.clone()));
    // The first poll lists OTHER (non-compliant) and caches it: no lookup request needed.
    let e = events.recv().await.unwrap();
    assert_eq!(
        (e.source.as_str(), e.device.as_str(), e.via),
        ("mdm", OTHER, "poll")
    );
    let l = s.lookup(&cert(OTHER), None).await;
    assert_eq!((l.served, compliant(&l)), (Served::Fresh, Some(false)));
    assert_eq!(mdm.counts().by_device.get(OTHER), None);
    // It is fixed at the source: the next poll no longer lists it, so it is fetched again
    // and its cached answer updated.
    mdm.set(|k| k.devices[1]["complianceState"] = json!("compliant"));
    let e = events.recv().await.unwrap();
    assert_eq!(e.device, OTHER);
    assert!(matches!(e.answer, Some(PostureAnswer::Known(p)) if p.compliant == Some(true)));
    assert_eq!(mdm.counts().by_device.get(OTHER), Some(&1));
    let l = s.lookup(&cert(OTHER), None).await;
    assert_eq!((l.served, compliant(&l)), (Served::Fresh, Some(true)));
    // A poll whose list ignores the filter still caches each device's own record.
    mdm.set(|k| {
        k.ignore_filter = true;
        k.devices[0]["complianceState"] = json!("noncompliant");
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(false));
    let l = s.lookup(&cert(OTHER), None).await;
    assert_eq!(compliant(&l), Some(true));
    // Dropping the source stops its poller.
    stop.cancel();
    task.await.unwrap();
}

// Review findings, each a test first.

#[tokio::test]
async fn a_webhook_push_during_a_fetch_is_not_overwritten_by_the_older_fetch() {
    let (mdm, addr) = start(false).await;
    mdm.set(|k| k.delay = Duration::from_millis(500));
    let s = source(settings(addr, false));
    let fetching = {
        let s = s.clone();
        tokio::spawn(async move { s.lookup(&cert(ID), None).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The MDM pushes "non-compliant" while the (older) read is on its way.
    let pushed = super::record::posture_of(
        &s.settings.facts,
        &json!({"id": ID, "complianceState": "noncompliant"}),
    )
    .unwrap();
    s.push(
        ID,
        super::source::Answer::Known(pushed),
        crate::clock::now(),
    )
    .await;
    fetching.await.unwrap();
    let (answer, _) = s.cached(ID).await.unwrap();
    assert!(
        matches!(answer, super::source::Answer::Known(p) if p.compliant == Some(false)),
        "the push is newer than the fetch"
    );
}

fn known(s: &Source, state: &str) -> super::source::Answer {
    super::source::Answer::Known(
        super::record::posture_of(&s.settings.facts, &json!({"complianceState": state})).unwrap(),
    )
}

#[tokio::test]
async fn an_event_older_than_the_one_applied_does_not_undo_it() {
    let (_mdm, addr) = start(false).await;
    let s = source(settings(addr, false));
    let now = crate::clock::unix_now();
    assert!(s.push_event(ID, Some(known(&s, "noncompliant")), now).await);
    // Held back on the way and delivered late: sent before the one applied.
    assert!(
        !s.push_event(ID, Some(known(&s, "compliant")), now - 5)
            .await
    );
    let (answer, _) = s.cached(ID).await.unwrap();
    assert!(matches!(answer, super::source::Answer::Known(p) if p.compliant == Some(false)));
}

#[tokio::test]
async fn an_event_stamped_by_a_source_clock_behind_ours_still_applies() {
    let (_mdm, addr) = start(false).await;
    let s = source(settings(addr, false));
    s.lookup(&cert(ID), None).await;
    // The source's clock is 30 s behind: its event still replaces the fetched answer.
    let sent = crate::clock::unix_now() - 30;
    assert!(
        s.push_event(ID, Some(known(&s, "noncompliant")), sent)
            .await
    );
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(false));
}

#[tokio::test]
async fn ids_differing_only_in_case_share_one_cache_entry() {
    let (mdm, addr) = start(false).await;
    let s = source(settings(addr, false));
    s.lookup(&cert(ID), None).await;
    let upper = ID.to_ascii_uppercase();
    let sent = crate::clock::unix_now();
    assert!(s.push_event(&upper, Some(known(&s, "x")), sent).await);
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(false), "the update reached the device");
    assert_eq!(mdm.counts().device_requests, 1);
}

#[tokio::test]
async fn ids_of_a_case_sensitive_format_are_different_devices() {
    let (mdm, addr) = start(false).await;
    let s = source(by_serial_list(addr));
    let sent = crate::clock::unix_now();
    assert!(
        s.push_event("sn2", Some(known(&s, "compliant")), sent)
            .await
    );
    let c = CertFacts {
        serial: "SN2".into(),
        ..CertFacts::default()
    };
    let l = s.lookup(&c, None).await;
    assert_eq!((l.served, compliant(&l)), (Served::Fetched, Some(false)));
    assert_eq!(mdm.counts().device_requests, 1);
}

#[tokio::test]
async fn an_answer_fetched_before_the_device_was_forgotten_is_not_served() {
    let (_mdm, s, fetching) = fetch_under_way(Duration::from_millis(400)).await;
    s.forget(ID, crate::clock::now()).await;
    let l = fetching.await.unwrap();
    assert!(
        matches!(l.answer, PostureAnswer::Unavailable(_)),
        "the fetch read the source before the change: {l:?}"
    );
}

#[tokio::test]
async fn a_stale_answer_asked_for_before_the_key_is_proved_is_refreshed_within_its_share() {
    let (mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.fresh = Duration::ZERO;
    st.rate = 0.001;
    st.burst = 4.0;
    let s = source(st);
    s.lookup(&cert(ID), None).await;
    s.lookup(&cert(OTHER), None).await;
    // Two tokens left, no more than half the bucket: an unproven asker may not spend one.
    let l = s
        .lookup_as(&cert(ID), None, super::source::Asker::Unproven)
        .await;
    assert_eq!(l.served, Served::Stale);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mdm.counts().device_requests, 2);
}

#[tokio::test]
async fn a_lookup_given_up_mid_fetch_leaves_nothing_behind() {
    let (_mdm, s, task) = fetch_under_way(Duration::from_millis(300)).await;
    task.abort();
    let _ = task.await;
    assert_eq!(s.fetches_in_flight(), 0);
}

#[tokio::test]
async fn unproven_lookups_over_their_share_are_not_counted_as_source_errors() {
    let (_mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.rate = 1.0;
    st.burst = 1.0;
    let s = source(st);
    let l = s
        .lookup_as(&cert(ID), None, super::source::Asker::Unproven)
        .await;
    assert_eq!(l.served, Served::Failed);
    let errors = s
        .stats()
        .errors
        .get_or_create(&super::source::SourceLabels {
            source: "mdm".into(),
            kind: "rate_limited",
        })
        .get();
    assert_eq!(errors, 0);
}

#[tokio::test]
async fn a_token_endpoint_claiming_an_endless_lifetime_cannot_crash_a_lookup() {
    let (mdm, addr) = start(true).await;
    mdm.set(|k| k.token_ttl = u64::MAX);
    let s = source(settings(addr, true));
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(true), "{l:?}");
}

#[tokio::test]
async fn lookups_before_the_device_proved_its_key_cannot_spend_the_whole_rate() {
    let (mdm, addr) = start(false).await;
    let mut st = settings(addr, false);
    st.identity[0] = by_serial("[0-9a-f]+");
    st.rate = 0.001;
    st.burst = 4.0;
    let s = source(st);
    let serial = |n: u32| CertFacts {
        serial: format!("{n:x}"),
        ..CertFacts::default()
    };
    // A copied certificate replayed with a new id each time (or many certificates): early
    // lookups get at most half the bucket.
    for n in 0..4 {
        s.lookup_as(&serial(n), None, super::source::Asker::Unproven)
            .await;
    }
    assert_eq!(mdm.counts().device_requests, 2);
    // An authenticated device still gets its lookup.
    let l = s
        .lookup_as(&serial(99), None, super::source::Asker::Proven)
        .await;
    assert_ne!(l.served, Served::Failed, "{l:?}");
    assert_eq!(mdm.counts().device_requests, 3);
}

#[tokio::test]
async fn a_poll_never_holds_more_records_than_the_cache() {
    use super::settings::Poll;
    let (mdm, addr) = start(false).await;
    mdm.set(|k| k.ignore_filter = true);
    let mut st = settings(addr, false);
    st.cache_size = 1;
    st.poll = Some(Poll {
        interval: Duration::from_secs(60),
        path: Template::parse("/v1.0/deviceManagement/managedDevices").unwrap(),
        results: "/value".into(),
        id: "/id".into(),
        next: None,
        max_pages: 10,
    });
    let s = source(st);
    assert!(matches!(
        super::poll::list(&s).await,
        Err(super::source::FetchError::Shape(why)) if why.contains("more than")
    ));
}

/// The dev MDM over HTTPS with a certificate for 127.0.0.1 from a CA of its own; the
/// address and that CA.
async fn start_tls() -> (Arc<DevMdm>, std::net::SocketAddr, CertificateDer<'static>) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let (ca, leaf, key) = crate::pki::dev::ca_and_leaf("127.0.0.1");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf)],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let mdm = DevMdm::new(devices(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = mdm.clone().router();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    (mdm, addr, CertificateDer::from(ca))
}

#[tokio::test]
async fn https_sources_are_trusted_by_their_configured_ca_only() {
    let (mdm, addr, ca) = start_tls().await;
    let mut st = settings(addr, false);
    st.base = format!("https://{addr}").parse().unwrap();
    st.roots = vec![ca];
    let s = source(st.clone());
    let l = s.lookup(&cert(ID), None).await;
    assert_eq!(compliant(&l), Some(true), "{l:?}");
    // Another CA (here: none): the source is not trusted, and never asked in clear.
    st.roots = Vec::new();
    let s = source(st);
    let l = s.lookup(&cert(ID), None).await;
    assert!(
        matches!(&l.answer, PostureAnswer::Unavailable(w) if w.contains("reach")),
        "{l:?}"
    );
    assert_eq!(mdm.counts().device_requests, 1);
}

#[tokio::test]
async fn a_503_without_retry_after_backs_off_doubling_from_a_second() {
    let (mdm, addr) = start(false).await;
    mdm.set(|k| k.status = Some(503));
    let s = source(settings(addr, false));
    let l = s.lookup(&cert(ID), None).await;
    assert!(matches!(&l.answer, PostureAnswer::Unavailable(w) if w.contains("HTTP 503")));
    let first = s.backed_off().unwrap();
    assert!(first <= Duration::from_secs(1) && first > Duration::from_millis(800));
    // Not asked again while backed off.
    s.lookup(&cert(OTHER), None).await;
    assert_eq!(mdm.counts().device_requests, 1);
    tokio::time::sleep(first + Duration::from_millis(50)).await;
    s.lookup(&cert(OTHER), None).await;
    assert_eq!(mdm.counts().device_requests, 2);
    let second = s.backed_off().unwrap();
    assert!(second > Duration::from_millis(1800), "doubled: {second:?}");
}
