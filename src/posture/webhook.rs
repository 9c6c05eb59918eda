//! Posture events pushed by a source (`POST /v1/posture/events/{source}` on the admin
//! listener): authenticated, fresh, not replayed, bounded; each replaces one device's
//! cached answer at once and is announced as an [`super::Event`].
//!
//! Authentication (per source, `[posture.source.webhook]`):
//! - HMAC: `X-Anchord-Timestamp: <unix seconds>` and
//!   `X-Anchord-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`;
//! - bearer: `Authorization: Bearer <token>` and `X-Anchord-Timestamp` (weaker: nothing
//!   covers the body or the timestamp, so whoever sees one event can send others; prefer
//!   HMAC, and TLS or a trusted path to the admin listener).
//!
//! The timestamp must be within the source's window of now; an HMAC signature already seen
//! within the window is a replay (across reloads too). An event older than the answer the
//! cache holds for the device does not replace it, so events held back on the way cannot
//! undo newer ones. Body (JSON, at most [`MAX_BODY`] bytes):
//! `{"device": "<id>", "record": { ...the source's own device record... }}` replaces the
//! device's answer (its facts read with the source's mapping; the record's id fields are
//! checked like a lookup's); `{"device": "<id>", "record": null}` forgets it, so the next
//! authentication fetches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::record::{self, StepOutcome};
use super::settings::{Secret, Step, Webhook, WebhookAuth};
use super::source::Answer;

/// Largest event body.
pub const MAX_BODY: usize = 64 * 1024;
/// Signatures remembered against replay, per source.
const MAX_SEEN: usize = 100_000;

/// Why an event was refused: a metrics label and the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such source, or it takes no webhook.
    UnknownSource,
    /// Missing or wrong signature or token.
    BadAuth,
    /// No timestamp, or one outside the window.
    Stale,
    /// A signature seen before.
    Replay,
    /// Over [`MAX_BODY`].
    TooLarge,
    /// Not the JSON described above, or a record about another device.
    BadBody,
}

impl Refusal {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::BadAuth => "bad_auth",
            Self::Stale => "stale",
            Self::Replay => "replay",
            Self::TooLarge => "too_large",
            Self::BadBody => "bad_body",
        }
    }

    /// The HTTP status answered.
    pub fn status(self) -> u16 {
        match self {
            Self::UnknownSource => 404,
            Self::BadAuth | Self::Stale => 401,
            Self::Replay => 409,
            Self::TooLarge => 413,
            Self::BadBody => 400,
        }
    }
}

/// What the event asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The device's id at the source.
    pub device: String,
    /// Its new answer; `None`: forget it.
    pub answer: Option<Answer>,
    /// When the source sent it (Unix seconds): an event older than the answer the cache
    /// holds does not replace it, so events held back on the way cannot undo newer ones.
    pub sent: i64,
}

/// The HMAC signatures seen recently, per source, oldest first.
#[derive(Debug, Default)]
pub struct Seen {
    recent: Mutex<VecDeque<(i64, [u8; 32])>>,
}

/// Every source's recent signatures, by source name, for the life of the process: a
/// reload that rebuilds a source keeps what it has seen, so an event cannot be replayed
/// across it.
static SEEN: std::sync::LazyLock<Mutex<std::collections::HashMap<String, Arc<Seen>>>> =
    std::sync::LazyLock::new(Mutex::default);

impl Seen {
    /// The signatures seen for the source named `name` (shared by every build of it).
    pub fn for_source(name: &str) -> Arc<Self> {
        match SEEN.lock() {
            Ok(mut all) => all.entry(name.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Records `sig` at `now`; false when it was seen within `window` seconds.
    fn first_time(&self, sig: [u8; 32], now: i64, window: i64) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        while recent
            .front()
            .is_some_and(|(t, _)| *t < now.saturating_sub(window.saturating_mul(2)))
            || recent.len() >= MAX_SEEN
        {
            recent.pop_front();
        }
        if recent.iter().any(|(_, s)| *s == sig) {
            return false;
        }
        recent.push_back((now, sig));
        true
    }
}

/// The request's parts the check reads.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    /// `X-Anchord-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-Anchord-Signature`.
    pub signature: Option<&'a str>,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
}

/// Checks an event and reads what it asks for.
///
/// # Errors
/// The [`Refusal`].
#[allow(
    clippy::too_many_arguments,
    reason = "the source's settings it reads, then the request: each a plain value"
)]
pub fn check(
    hook: &Webhook,
    last_step: &Step,
    facts: &super::settings::FactMap,
    seen: &Seen,
    fold_case: bool,
    headers: Headers<'_>,
    body: &[u8],
    now: i64,
) -> Result<Change, Refusal> {
    if body.len() > MAX_BODY {
        return Err(Refusal::TooLarge);
    }
    let stamp = headers.timestamp.ok_or(Refusal::Stale)?;
    let at: i64 = stamp.trim().parse().map_err(|_| Refusal::Stale)?;
    let window = i64::try_from(hook.window.as_secs()).unwrap_or(i64::MAX);
    if at.abs_diff(now) > window.unsigned_abs() {
        return Err(Refusal::Stale);
    }
    match &hook.auth {
        WebhookAuth::Hmac(secret) => {
            let hex = headers
                .signature
                .and_then(|s| s.trim().strip_prefix("sha256="))
                .ok_or(Refusal::BadAuth)?;
            let given = decode_hex(hex).ok_or(Refusal::BadAuth)?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .map_err(|_| Refusal::BadAuth)?;
            mac.update(stamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&given).map_err(|_| Refusal::BadAuth)?;
            let sig: [u8; 32] = given.try_into().map_err(|_| Refusal::BadAuth)?;
            if !seen.first_time(sig, now, window) {
                return Err(Refusal::Replay);
            }
        }
        WebhookAuth::Bearer(token) => {
            if !bearer_matches(headers.authorization, token) {
                return Err(Refusal::BadAuth);
            }
        }
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| Refusal::BadBody)?;
    let device = v
        .get("device")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty() && d.len() <= record::MAX_ID)
        .ok_or(Refusal::BadBody)?
        .to_owned();
    let answer = match v.get("record") {
        Some(Value::Null) => None,
        Some(r @ Value::Object(_)) => {
            // The record must be the device's, checked like a lookup's last step (fields
            // matched against values saved from earlier steps cannot be checked here and
            // are skipped; the device id ones are).
            let only_id = Step {
                matches: last_step
                    .matches
                    .iter()
                    .filter(|(_, t)| t.vars().all(|v| v == "id"))
                    .cloned()
                    .collect(),
                results: None,
                ..last_step.clone()
            };
            let id = device.clone();
            let vars = move |n: &str| (n == "id").then(|| id.clone());
            match record::record_of(&only_id, r, &vars, fold_case) {
                Ok(StepOutcome::Record(r)) => Some(Answer::Known(
                    record::posture_of(facts, r).map_err(|_| Refusal::BadBody)?,
                )),
                _ => return Err(Refusal::BadBody),
            }
        }
        _ => return Err(Refusal::BadBody),
    };
    Ok(Change {
        device,
        answer,
        sent: at,
    })
}

/// Whether an `Authorization` header value is `Bearer <token>`; compared as SHA-256
/// digests, so in constant time whatever the lengths.
pub fn bearer_matches(authorization: Option<&str>, token: &Secret) -> bool {
    let Some(given) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
        return false;
    };
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(token.expose().as_bytes());
    bool::from(a.ct_eq(&b))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The signature header value for `body` at `timestamp` (for senders and tests).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut out = String::from("sha256=");
    for b in mac.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use zeroize::Zeroizing;

    use super::*;
    use crate::posture::settings::{BoolFact, FactMap, Template};

    fn hook(auth: WebhookAuth) -> Webhook {
        Webhook {
            auth,
            window: Duration::from_secs(300),
        }
    }

    fn step() -> Step {
        Step {
            path: Template::parse("/devices/{id}").unwrap(),
            results: None,
            matches: vec![("/id".into(), Template::parse("{id}").unwrap())],
            save: Vec::new(),
        }
    }

    fn facts() -> FactMap {
        FactMap {
            compliant: Some(BoolFact {
                pointer: "/compliant".into(),
                equals: Vec::new(),
            }),
            ..FactMap::default()
        }
    }

    fn secret(s: &str) -> Secret {
        Secret(Zeroizing::new(s.into()))
    }

    fn headers<'a>(ts: &'a str, sig: &'a str) -> Headers<'a> {
        Headers {
            timestamp: Some(ts),
            signature: Some(sig),
            authorization: None,
        }
    }

    #[test]
    fn a_signed_fresh_event_is_taken_once() {
        let h = hook(WebhookAuth::Hmac(secret("k")));
        let seen = Seen::default();
        let body = br#"{"device":"d1","record":{"id":"d1","compliant":false}}"#;
        let sig = sign("k", "1000", body);
        let run = || {
            check(
                &h,
                &step(),
                &facts(),
                &seen,
                true,
                headers("1000", &sig),
                body,
                1010,
            )
        };
        let c = run().unwrap();
        assert_eq!(c.device, "d1");
        assert!(matches!(c.answer, Some(Answer::Known(p)) if p.compliant == Some(false)));
        assert_eq!(run(), Err(Refusal::Replay));
    }

    #[test]
    fn bad_signatures_old_events_and_other_devices_records_are_refused() {
        let h = hook(WebhookAuth::Hmac(secret("k")));
        let seen = Seen::default();
        let body = br#"{"device":"d1","record":{"id":"d1","compliant":true}}"#;
        let wrong = sign("other", "1000", body);
        let r = |hd, b: &[u8], now| check(&h, &step(), &facts(), &seen, true, hd, b, now);
        assert_eq!(
            r(headers("1000", &wrong), body, 1000),
            Err(Refusal::BadAuth)
        );
        assert_eq!(
            r(headers("1000", "sha256=zz"), body, 1000),
            Err(Refusal::BadAuth)
        );
        let sig = sign("k", "1000", body);
        assert_eq!(r(headers("1000", &sig), body, 1400), Err(Refusal::Stale));
        assert_eq!(r(headers("x", &sig), body, 1000), Err(Refusal::Stale));
        // Signed over another timestamp than the one sent.
        assert_eq!(r(headers("1001", &sig), body, 1000), Err(Refusal::BadAuth));
        let other = br#"{"device":"d1","record":{"id":"d2","compliant":true}}"#;
        let sig = sign("k", "1000", other);
        assert_eq!(r(headers("1000", &sig), other, 1000), Err(Refusal::BadBody));
        let big = vec![b' '; MAX_BODY + 1];
        let sig = sign("k", "1000", &big);
        assert_eq!(r(headers("1000", &sig), &big, 1000), Err(Refusal::TooLarge));
    }

    #[test]
    fn a_bearer_event_needs_the_token_and_a_fresh_timestamp() {
        let h = hook(WebhookAuth::Bearer(secret("t0k")));
        let seen = Seen::default();
        let body = br#"{"device":"d1","record":null}"#;
        let with = |a| Headers {
            timestamp: Some("1000"),
            signature: None,
            authorization: a,
        };
        let c = check(
            &h,
            &step(),
            &facts(),
            &seen,
            true,
            with(Some("Bearer t0k")),
            body,
            1000,
        );
        assert_eq!(
            c,
            Ok(Change {
                device: "d1".into(),
                answer: None,
                sent: 1000,
            })
        );
        for a in [None, Some("Bearer t0"), Some("t0k")] {
            assert_eq!(
                check(&h, &step(), &facts(), &seen, true, with(a), body, 1000),
                Err(Refusal::BadAuth)
            );
        }
    }

    #[test]
    fn a_signature_seen_by_a_source_is_a_replay_for_its_successor_after_a_reload() {
        let h = hook(WebhookAuth::Hmac(secret("k")));
        let body = br#"{"device":"d9","record":null}"#;
        let sig = sign("k", "5000", body);
        let before = Seen::for_source("reloaded-source");
        assert!(check(
            &h,
            &step(),
            &facts(),
            &before,
            true,
            headers("5000", &sig),
            body,
            5000
        )
        .is_ok());
        // The configuration was reloaded: the source is built anew, under the same name.
        let after = Seen::for_source("reloaded-source");
        assert_eq!(
            check(
                &h,
                &step(),
                &facts(),
                &after,
                true,
                headers("5000", &sig),
                body,
                5001
            ),
            Err(Refusal::Replay)
        );
    }
}
