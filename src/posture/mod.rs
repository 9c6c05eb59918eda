//! Live device posture from MDM and EDR APIs (`[[posture.source]]`): a fact source for the
//! policy's `posture.*` facts.
//!
//! Each source is an HTTP(S) JSON API asked about one device: its id is taken from the
//! certificate (or the MAC) by the source's extractors and checked against a pattern before
//! it goes into a URL; the answer counts only when it is exactly one record about that id
//! ([`record`]); answers are cached per source with stale-while-revalidate, one fetch per
//! device at a time, a rate limit and back-off ([`source`]). Sources that cannot push are
//! polled ([`poll`]); sources that can push reach the admin listener's webhook
//! ([`webhook`]). Every change a poll or a push makes is also an [`Event`] for those who
//! act on live sessions.
//!
//! Only the sources the policy reads are asked; a source that fails gives "unavailable"
//! with the reason, never a pass.

pub mod devmdm;
pub mod poll;
pub mod record;
pub mod settings;
pub mod source;
#[cfg(test)]
pub(crate) mod tests;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::pki::facts::CertFacts;
use crate::policy::{PostureAnswer, PostureFacts, PostureReads, SourcePosture};
pub use settings::PostureSettings;
pub use source::{Asker, Lookup, Served, Source, Stats};

/// Events kept for slow listeners before the oldest are dropped.
const EVENT_BACKLOG: usize = 1024;

/// A device's cached posture changed through a poll or a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The source.
    pub source: String,
    /// The device's id at that source.
    pub device: String,
    /// The new answer (`None`: forgotten, the next lookup fetches).
    pub answer: Option<PostureAnswer>,
    /// `webhook` or `poll`.
    pub via: &'static str,
}

/// Every posture source, live: built from [`PostureSettings`], kept across reloads that
/// leave them unchanged (so the caches survive).
#[derive(Debug)]
pub struct Sources {
    /// What they were built from.
    pub settings: PostureSettings,
    sources: Vec<Arc<Source>>,
    /// Their counters.
    pub stats: Stats,
    events: broadcast::Sender<Event>,
    /// Cancelled when these sources are dropped: stops their pollers.
    stop: CancellationToken,
    started: std::sync::Once,
}

impl Drop for Sources {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sources {
    /// Builds the sources (their HTTP clients and caches); opens no connection.
    ///
    /// # Errors
    /// An HTTP client cannot be built.
    pub fn build(settings: &PostureSettings) -> Result<Self, String> {
        let stats = Stats::default();
        let sources = settings
            .sources
            .iter()
            .map(|s| {
                Source::new(s.clone(), stats.clone())
                    .map(Arc::new)
                    .map_err(|e| format!("posture source `{}`: {e}", s.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            settings: settings.clone(),
            sources,
            stats,
            events: broadcast::channel(EVENT_BACKLOG).0,
            stop: CancellationToken::new(),
            started: std::sync::Once::new(),
        })
    }

    /// Starts the pollers (once; later calls do nothing). Needs a tokio runtime.
    pub fn start(&self) {
        self.started.call_once(|| {
            tokio::spawn(log_events(self.events.subscribe(), self.stop.clone()));
            for s in &self.sources {
                if s.settings.poll.is_some() {
                    tokio::spawn(poll::run(
                        Arc::downgrade(s),
                        self.events.clone(),
                        self.stop.clone(),
                    ));
                }
            }
        });
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&Arc<Source>> {
        self.sources.iter().find(|s| s.name() == name)
    }

    /// Every source, in order.
    pub fn all(&self) -> &[Arc<Source>] {
        &self.sources
    }

    /// Listens for posture changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Announces a posture change.
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Whether the policy reads any source.
    pub fn needed(&self, reads: &PostureReads) -> bool {
        self.sources.iter().any(|s| reads.needs(s.name()))
    }

    /// Longest the lookups a policy needs may take: the slowest source's timeout, plus a
    /// margin for the cache.
    pub fn deadline(&self, reads: &PostureReads) -> Duration {
        self.sources
            .iter()
            .filter(|s| reads.needs(s.name()))
            .map(|s| s.settings.timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_millis(250)
    }

    /// Looks the device up at every source the policy reads, at once, on behalf of `asker`.
    pub async fn lookup(
        &self,
        reads: &PostureReads,
        cert: &CertFacts,
        calling_station: Option<&str>,
        asker: Asker,
    ) -> Vec<(String, Lookup)> {
        let asked = self
            .sources
            .iter()
            .filter(|s| reads.needs(s.name()))
            .map(|s| async move {
                let l = s.lookup_as(cert, calling_station, asker).await;
                (s.name().to_owned(), l)
            });
        futures_util::future::join_all(asked).await
    }

    /// Every source the policy reads answered without asking any of them (fresh cached
    /// answers, or no device id), if they all can. Not counted: see [`Sources::count`].
    pub async fn settled(
        &self,
        reads: &PostureReads,
        cert: &CertFacts,
        calling_station: Option<&str>,
    ) -> Option<Vec<(String, Lookup)>> {
        let mut out = Vec::new();
        for s in self.sources.iter().filter(|s| reads.needs(s.name())) {
            out.push((s.name().to_owned(), s.settled(cert, calling_station).await?));
        }
        Some(out)
    }

    /// Counts lookups answered by [`Sources::settled`] (once the rules read them).
    pub fn count(&self, lookups: &[(String, Lookup)]) {
        for (name, l) in lookups {
            if let Some(s) = self.source(name) {
                s.count(l);
            }
        }
    }

    /// The lookups as the policy's facts.
    pub fn facts(lookups: &[(String, Lookup)]) -> PostureFacts {
        PostureFacts {
            sources: lookups
                .iter()
                .map(|(source, l)| SourcePosture {
                    source: source.clone(),
                    answer: l.answer.clone(),
                })
                .collect(),
        }
    }

    /// Lookups saying each source the policy reads had no answer by the deadline.
    pub fn facts_late(&self, reads: &PostureReads) -> Vec<(String, Lookup)> {
        self.sources
            .iter()
            .filter(|s| reads.needs(s.name()))
            .map(|s| {
                (
                    s.name().to_owned(),
                    Lookup {
                        id: None,
                        answer: PostureAnswer::Unavailable(
                            "the posture lookup did not finish by its deadline".into(),
                        ),
                        served: Served::Failed,
                    },
                )
            })
            .collect()
    }
}

/// Logs every posture change (the enforcement of live sessions listens to the same events).
async fn log_events(mut events: broadcast::Receiver<Event>, stop: CancellationToken) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = stop.cancelled() => return,
        };
        match event {
            Ok(e) => tracing::info!(
                posture.source = %e.source,
                device = %crate::logsafe::Escaped(&e.device),
                via = e.via,
                posture = %e.answer.as_ref().map_or_else(|| "forgotten".into(), PostureAnswer::describe),
                "posture changed"
            ),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "posture events came faster than they were logged"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
