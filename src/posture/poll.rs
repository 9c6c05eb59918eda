//! Polling a source that cannot push (Intune has no device change notifications): on an
//! interval, fetch the source's non-compliant set and put each device's record in the
//! cache; a device that left the set since the last poll is fetched again (or forgotten
//! when that fails), so its cached non-compliance does not outlive the fact.
//!
//! Each record in the list stands for itself: its facts are read from it and it is cached
//! under its own id field. A list that ignores its filter and returns every device is
//! still read correctly, device by device; it only costs more.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::record;
use super::source::{Answer, Asker, FetchError, Got, Source, Stats};
use super::Event;

/// Polls the source until it is dropped (a reload replaced it) or `stop` is cancelled.
pub async fn run(source: Weak<Source>, events: broadcast::Sender<Event>, stop: CancellationToken) {
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let Some(s) = source.upgrade() else { return };
        let Some(poll) = s.settings.poll.clone() else {
            return;
        };
        let started = crate::clock::now();
        match tokio::time::timeout(poll.interval, list(&s)).await {
            Ok(Ok(records)) => {
                listed = apply(&s, records, started, &listed, &events).await;
            }
            Ok(Err(e)) => {
                Stats::count(&s.stats().errors, s.name(), e.kind());
                warn!(posture.source = %s.name(), error = %e, "posture poll failed; the cache keeps what it had");
            }
            Err(_) => {
                warn!(posture.source = %s.name(), "posture poll did not finish within its interval");
            }
        }
        drop(s);
        tokio::select! {
            () = tokio::time::sleep(poll.interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Every record the list gives, as `(id, answer)`, across its pages: at most the source's
/// cache size (more could not be kept anyway, and would only evict the devices in use).
///
/// # Errors
/// A page could not be fetched or does not hold the array; a next link off the source's
/// origin; more records than the cache holds.
pub async fn list(s: &Source) -> Result<Vec<(String, Answer)>, FetchError> {
    let Some(poll) = &s.settings.poll else {
        return Ok(Vec::new());
    };
    let path = poll
        .path
        .fill(|_| None, str::to_owned)
        .ok_or_else(|| FetchError::Shape("the poll path has a placeholder".into()))?;
    let mut url = s.url(&path)?;
    let mut out = Vec::new();
    for _ in 0..poll.max_pages {
        let Got::Body(page) = s.get(url.clone()).await? else {
            return Err(FetchError::Status(404));
        };
        let Some(Value::Array(items)) = page.pointer(&poll.results) else {
            return Err(FetchError::Shape(format!("no array at {}", poll.results)));
        };
        for item in items {
            let Some(id) = item
                .pointer(&poll.id)
                .and_then(record::scalar)
                .filter(|id| !id.is_empty() && id.len() <= record::MAX_ID)
            else {
                Stats::count(&s.stats().errors, s.name(), "shape");
                continue;
            };
            match record::posture_of(&s.settings.facts, item) {
                Ok(p) => out.push((id, Answer::Known(p))),
                Err(_) => Stats::count(&s.stats().errors, s.name(), "shape"),
            }
            if u64::try_from(out.len()).unwrap_or(u64::MAX) > s.settings.cache_size {
                return Err(FetchError::Shape(format!(
                    "the list holds more than cache_size = {} devices",
                    s.settings.cache_size
                )));
            }
        }
        let Some(next) = poll
            .next
            .as_ref()
            .and_then(|p| page.pointer(p))
            .and_then(Value::as_str)
        else {
            return Ok(out);
        };
        let next = reqwest::Url::parse(next)
            .map_err(|_| FetchError::Shape("the next page's link is not a URL".into()))?;
        if !s.same_origin(&next) {
            // Following it would hand the source's credentials to another host.
            return Err(FetchError::Shape(
                "the next page's link leaves the source's origin".into(),
            ));
        }
        url = next;
    }
    Ok(out)
}

/// Caches what the poll that started at `as_of` found (unless newer answers arrived
/// meanwhile) and refreshes the devices that left the list; returns the ids listed now.
async fn apply(
    s: &Arc<Source>,
    records: Vec<(String, Answer)>,
    as_of: std::time::Instant,
    before: &HashSet<String>,
    events: &broadcast::Sender<Event>,
) -> HashSet<String> {
    let mut now = HashSet::new();
    for (id, answer) in records {
        let changed = s.cached(&id).await.map(|(a, _)| a) != Some(answer.clone());
        if !s.push(&id, answer.clone(), as_of).await {
            // An event or a fetch newer than this poll's list holds the device.
            now.insert(id);
            continue;
        }
        Stats::count(&s.stats().polled, s.name(), "listed");
        if changed {
            let _ = events.send(Event {
                source: s.name().to_owned(),
                device: id.clone(),
                answer: Some(answer.facts()),
                via: "poll",
            });
        }
        now.insert(id);
    }
    let left: Vec<&String> = before.difference(&now).collect();
    if !left.is_empty() {
        info!(posture.source = %s.name(), devices = left.len(), "devices left the polled set: fetching them again");
    }
    for id in left {
        let started = crate::clock::now();
        let answer = match s.fetch_within(id, Asker::Proven).await {
            Ok(a) => {
                if !s.push(id, a.clone(), started).await {
                    continue;
                }
                Some(a.facts())
            }
            Err(_) => {
                s.forget(id, started).await;
                None
            }
        };
        Stats::count(&s.stats().polled, s.name(), "left");
        let _ = events.send(Event {
            source: s.name().to_owned(),
            device: id.clone(),
            answer,
            via: "poll",
        });
    }
    now
}
