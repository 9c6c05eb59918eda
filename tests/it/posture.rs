//! Live posture end to end: eapol_test devices decided by the shipped example policy with
//! the `mdm` source served by the dev MDM (a real HTTP server on loopback with an OAuth2
//! token endpoint): compliant, non-compliant, source failing, a list that ignores its
//! filter; the cache (no request within the TTL, one shared request for concurrent
//! authentications, one background refresh past the TTL); the webhook (a signed event
//! changes the next decision; forged, old and oversize events are refused and counted).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anchord::pki::dev::STAFF_INTUNE_ID;

use crate::admin::{admin_addr, get, samples};
use crate::harness::{eapol_test, last_reply, pki_dir, repo, Mdm, Server};

/// The server with the shipped policies, the `mdm` source on `mdm` (its source table
/// edited by `tweak`) and the admin listener.
fn start(mdm: &Mdm, tweak: impl Fn(String) -> String) -> (Server, SocketAddr, tempfile::TempDir) {
    start_with_nas(mdm, tweak, "")
}

/// [`start`], with `nas` appended to the `[[client]]` table.
pub(crate) fn start_with_nas(
    mdm: &Mdm,
    tweak: impl Fn(String) -> String,
    nas: &str,
) -> (Server, SocketAddr, tempfile::TempDir) {
    start_with_policies(mdm, tweak, nas, &repo().join("policies"))
}

/// [`start_with_nas`], with the policy files in `policies`.
pub(crate) fn start_with_policies(
    mdm: &Mdm,
    tweak: impl Fn(String) -> String,
    nas: &str,
    policies: &std::path::Path,
) -> (Server, SocketAddr, tempfile::TempDir) {
    let hook = tempfile::tempdir().unwrap();
    let secret = hook.path().join("hook.secret");
    std::fs::write(&secret, "hook-s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let token = hook.path().join("admin.token");
    std::fs::write(&token, "admin-t0ken\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let source = tweak(mdm.source("mdm"));
    let s = Server::start_with(|c| {
        format!(
            "{}{nas}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{source}\n[posture.source.webhook]\nhmac_secret_file = \"{}\"\n",
            c.replace(
                "[authorization]\nvlan = \"100\"\n",
                &format!("[policy]\ndir = \"{}\"\n", policies.display()),
            ),
            token.display(),
            secret.display()
        )
    });
    let admin = admin_addr(&s);
    (s, admin, hook)
}

/// A dev MDM that answers after `delay`, and the server with `settings` in place of the
/// source's `timeout_ms = 2000` line.
fn slow(delay: Duration, settings: &str) -> (Mdm, Server, tempfile::TempDir) {
    let mdm = Mdm::start();
    mdm.mdm.set(|k| k.delay = delay);
    let (s, _admin, hook) = start(&mdm, |t| t.replace("timeout_ms = 2000", settings));
    (mdm, s, hook)
}

/// The VLAN an eapol_test run was given (`None`: rejected).
fn vlan(out: &str) -> Option<String> {
    if !out.lines().any(|l| l.trim() == "SUCCESS") {
        return None;
    }
    let (_, attrs) = last_reply(out);
    let hex = &attrs.iter().find(|a| a.0 == 81)?.1;
    let bytes: Vec<u8> = (2..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    Some(String::from_utf8(bytes).unwrap())
}

/// The Staff laptop authenticates (TLS 1.3); its VLAN.
fn staff(s: &Server) -> Option<String> {
    vlan(&eapol_test(s, pki_dir(), "tls13-ecdsa", &[]))
}

/// The `n`th (1-based) "authentication finished" line.
fn finished(s: &Server, n: usize) -> String {
    s.wait_log_lines(&["authentication finished"], n)
        .swap_remove(n - 1)
}

/// POSTs a posture event; the status code.
pub(crate) fn post_event(admin: SocketAddr, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut c = TcpStream::connect(admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "POST /v1/posture/events/mdm HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes()).unwrap();
    let _ = c.write_all(body);
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub(crate) fn signed(secret: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = ts.to_string();
    let sig = anchord::posture::webhook::sign(secret, &ts, body);
    vec![("X-Anchord-Timestamp", ts), ("X-Anchord-Signature", sig)]
}

pub(crate) fn now() -> i64 {
    anchord::clock::unix_now()
}

#[test]
fn compliance_decides_the_vlan_from_the_cache_and_a_signed_event_changes_it() {
    let mdm = Mdm::start();
    let (s, admin, _hook) = start(&mdm, |t| t);
    // Compliant: the production VLAN, fetched once (one token).
    assert_eq!(staff(&s).as_deref(), Some("100"));
    let line = finished(&s, 1);
    assert!(line.contains("rule=\"staff\""), "{line}");
    assert!(
        line.contains("posture=mdm (fetched, san_uri): compliant=true, managed=true, os=Windows"),
        "{line}"
    );
    assert_eq!(mdm.requests(), 1);
    // Within the TTL: from the cache, no request.
    assert_eq!(staff(&s).as_deref(), Some("100"));
    assert!(finished(&s, 2).contains("posture=mdm (fresh, san_uri)"));
    assert_eq!(mdm.requests(), 1, "answered from the cache");
    assert_eq!(mdm.mdm.counts().tokens, 1);
    // What the server's cache holds for the laptop, asked over the admin listener with its
    // token; and what the MDM says when asked directly.
    let (pem, cfg) = (pki_dir().join("device-ecdsa.pem"), s.config_path());
    let (pem, cfg) = (pem.to_str().unwrap(), cfg.to_str().unwrap());
    let lookup = |extra: &[&str]| {
        let mut args = vec!["posture", "lookup", "--config", cfg, "--cert", pem];
        args.extend_from_slice(extra);
        let (ok, out) = crate::policy::anchord(&args);
        assert!(ok, "{out}");
        out
    };
    let admin_arg = admin.to_string();
    let cached = lookup(&["--cache", "--admin", &admin_arg]);
    assert!(
        cached.contains(&format!(
            "mdm: device {STAFF_INTUNE_ID} from san_uri; cached, fresh"
        )) && cached.contains("compliant=true"),
        "{cached}"
    );
    let live = lookup(&[]);
    assert!(
        live.contains("mdm: device")
            && live.contains("; fetched")
            && live.contains("compliant=true"),
        "{live}"
    );
    assert_eq!(mdm.requests(), 2, "the live lookup asked the MDM");
    // The admin command without the token: refused.
    let pem = std::fs::read(pem).unwrap();
    let mut c = TcpStream::connect(admin).unwrap();
    write!(
        c,
        "POST /v1/posture/cache HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer nope\r\nContent-Length: {}\r\n\r\n",
        pem.len()
    )
    .unwrap();
    c.write_all(&pem).unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");

    // The MDM pushes that the laptop is no longer compliant.
    let record = serde_json::json!({
        "id": STAFF_INTUNE_ID, "complianceState": "noncompliant", "managementState": "managed"
    });
    let body = serde_json::json!({ "device": STAFF_INTUNE_ID, "record": record }).to_string();
    // Forged, old, replayed or oversize events change nothing and are counted.
    let compliant_body = serde_json::json!({
        "device": STAFF_INTUNE_ID,
        "record": { "id": STAFF_INTUNE_ID, "complianceState": "compliant" },
    })
    .to_string();
    assert_eq!(
        post_event(
            admin,
            &signed("wrong", now(), body.as_bytes()),
            body.as_bytes()
        ),
        401
    );
    assert_eq!(
        post_event(
            admin,
            &signed("hook-s3cret", now() - 3600, body.as_bytes()),
            body.as_bytes()
        ),
        401
    );
    let big = vec![b' '; 70 * 1024];
    assert_eq!(
        post_event(admin, &signed("hook-s3cret", now(), &big), &big),
        413
    );
    assert_eq!(
        staff(&s).as_deref(),
        Some("100"),
        "refused events change nothing"
    );
    // The real one: accepted, and the next authentication is quarantined without asking.
    let good = signed("hook-s3cret", now(), body.as_bytes());
    assert_eq!(post_event(admin, &good, body.as_bytes()), 202);
    s.wait_log(&["posture changed", "via=\"webhook\"", "compliant=false"]);
    assert_eq!(staff(&s).as_deref(), Some("999"));
    let line = finished(&s, 4);
    assert!(line.contains("rule=\"staff-noncompliant\""), "{line}");
    assert_eq!(mdm.requests(), 2, "the pushed answer is used as it is");
    // The same signed event again is a replay; a compliant one signed with the wrong key
    // does not undo the change.
    assert_eq!(post_event(admin, &good, body.as_bytes()), 409);
    assert_eq!(
        post_event(
            admin,
            &signed("nope", now(), compliant_body.as_bytes()),
            compliant_body.as_bytes()
        ),
        401
    );
    assert_eq!(staff(&s).as_deref(), Some("999"));
    let (_, _, metrics) = get(admin, "/metrics");
    let m = samples(&metrics);
    let count = |kind: &str| {
        m.get(&format!(
            "anchord_posture_webhook_events_total{{source=\"mdm\",kind=\"{kind}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(count("accepted"), 1.0, "{metrics}");
    assert_eq!(count("bad_auth"), 2.0, "{metrics}");
    assert_eq!(count("stale"), 1.0);
    assert_eq!(count("too_large"), 1.0);
    assert_eq!(count("replay"), 1.0);
    let fresh = m
        .get("anchord_posture_lookups_total{source=\"mdm\",kind=\"fresh\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(fresh >= 3.0, "{metrics}");
    assert_eq!(
        m.get("anchord_posture_token_refreshes_total{source=\"mdm\",kind=\"fetched\"}"),
        Some(&1.0)
    );
}

/// The Staff laptop lands in quarantine by the policy's unavailable branch, the `n`th
/// authentication, its log line saying `why`.
fn unavailable_branch(s: &Server, n: usize, why: &str) {
    assert_eq!(staff(s).as_deref(), Some("999"));
    let line = finished(s, n);
    assert!(
        line.contains("rule=\"staff-posture-unavailable\""),
        "{line}"
    );
    assert!(line.contains(why), "{line}");
}

/// The source looked up through the list endpoint filtered by the device id.
fn by_filter(source: String) -> String {
    source.replace(
        "path = \"/v1.0/deviceManagement/managedDevices/{id}\"",
        "path = \"/v1.0/deviceManagement/managedDevices?$filter=id eq '{id}'\"\nresults = \"/value\"",
    )
}

#[test]
fn a_failing_source_or_a_list_that_ignores_its_filter_never_reaches_the_production_vlan() {
    let mdm = Mdm::start();
    // The MDM answers with an error: the unavailable branch, with the reason audited.
    mdm.mdm.set(|k| k.status = Some(500));
    let (s, _admin, _hook) = start(&mdm, |t| t);
    unavailable_branch(&s, 1, "unavailable: HTTP 500");
    // Garbage instead of JSON.
    mdm.mdm.set(|k| {
        k.status = None;
        k.garbage = true;
    });
    assert_eq!(staff(&s).as_deref(), Some("999"));
    assert!(finished(&s, 2).contains("unavailable: unreadable answer: not JSON"));
    drop(s);

    // A source looked up through a filtered list, which returns every device: "unknown
    // device", not the first device's (compliant) posture.
    mdm.mdm.set(|k| {
        k.garbage = false;
        k.ignore_filter = true;
    });
    let (s, _admin, _hook) = start(&mdm, by_filter);
    unavailable_branch(&s, 1, "unknown device: 2 results");
    // With the filter honoured, the same lookup finds the laptop.
    mdm.mdm.set(|k| k.ignore_filter = false);
    drop(s);
    let (s, _admin, _hook) = start(&mdm, by_filter);
    assert_eq!(staff(&s).as_deref(), Some("100"));
}

#[test]
fn concurrent_authentications_share_one_request_and_a_stale_answer_is_refreshed_once() {
    let (mdm, s, _hook) = slow(
        Duration::from_millis(400),
        "timeout_ms = 2000\nfresh_secs = 2",
    );
    let vlans: Vec<Option<String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..3).map(|_| scope.spawn(|| staff(&s))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(
        vlans.iter().all(|v| v.as_deref() == Some("100")),
        "{vlans:?}"
    );
    assert_eq!(mdm.requests(), 1, "one request for three authentications");
    // Past the fresh time: answered from the cache at once, refreshed once behind it.
    mdm.mdm.set(|k| k.delay = Duration::ZERO);
    mdm.set_compliance(STAFF_INTUNE_ID, "noncompliant");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(staff(&s).as_deref(), Some("100"), "the stale answer");
    assert!(finished(&s, 4).contains("posture=mdm (stale, san_uri)"));
    for _ in 0..100 {
        if mdm.requests() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(mdm.requests(), 2, "one background refresh");
    assert_eq!(staff(&s).as_deref(), Some("999"), "the refreshed answer");
    assert!(finished(&s, 5).contains("posture=mdm (fresh, san_uri): compliant=false"));
    assert_eq!(mdm.requests(), 2);
}

#[test]
fn a_stalled_source_delays_only_the_devices_whose_rules_read_it() {
    let (_mdm, s, _hook) = slow(Duration::from_secs(10), "timeout_ms = 1500");
    // The IoT device on its own SSID: no rule on its way to `iot` reads posture, so its
    // decision does not wait for the stalled MDM.
    let out = eapol_test(
        &s,
        pki_dir(),
        "tls12-rsa",
        &["-N30:s:AA-BB-CC-DD-EE-FF:Things"],
    );
    assert_eq!(vlan(&out).as_deref(), Some("200"));
    let line = finished(&s, 1);
    assert!(
        line.contains("rule=\"iot\"") && line.contains("posture=- "),
        "{line}"
    );
    let took: u64 = line
        .split("duration_ms=")
        .nth(1)
        .and_then(|d| d.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(took < 1500, "waited for the MDM: {line}");
    // The Staff laptop's rules do: it waits for the source's timeout, no longer, and lands
    // in the unavailable branch.
    unavailable_branch(&s, 2, "unavailable: no answer within 1.5s");
}
