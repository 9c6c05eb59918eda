//! The admin HTTP listener: `GET /metrics` (Prometheus text),
//! `POST /v1/posture/events/{source}` (posture pushed by an MDM/EDR, authenticated per
//! source: see [`crate::posture::webhook`]) and the admin commands, which need the bearer
//! token of `[admin] token_file` (off without one): `POST /v1/posture/cache` (a device
//! certificate in PEM; what each posture source's cache holds for it). Off unless `[admin]`
//! is set; its default address is loopback only.
//!
//! Bounded whatever a client does: a request body is read only on the webhook route and
//! only up to [`crate::posture::webhook::MAX_BODY`] bytes; at
//! most [`MAX_CONNECTIONS`] connections are served at once (more are closed at once);
//! each serves one request, must send its headers within [`HEADER_TIMEOUT`], and is closed
//! after [`CONNECTION_TIMEOUT`] in all.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::clock;
use crate::logsafe::Escaped;
use crate::pki::facts::CertFacts;
use crate::posture::webhook::{self, Refusal};
use crate::posture::{Event, Stats};
use crate::radius::attr::station_id;
use crate::server::Shared;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The content type of the Prometheus text exposition prometheus-client writes.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the admin listener.
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))
}

/// Serves the admin routes until `shutdown` is cancelled.
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    info!(admin = %addr, "admin listener: GET /metrics, POST /v1/posture/events/{{source}}");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/posture/events/{source}", post(posture_event))
        .route("/v1/posture/cache", post(posture_cache))
        .route("/v1/sessions", get(sessions))
        .route("/v1/sessions/disconnect", post(sessions_disconnect))
        .with_state(shared);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: not the listener's end.
                    warn!(admin = %addr, error = %e, "admin listener could not accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(admin = %addr, "admin connection closed: {MAX_CONNECTIONS} already open");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, METRICS_TYPE)], shared.metrics_text())
}

/// A posture event pushed by a source: checked, applied to the source's cache, announced.
async fn posture_event(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let live = shared.live();
    let source = live
        .runtime
        .posture
        .as_ref()
        .and_then(|p| Some((p, p.source(&name)?)))
        .filter(|(_, s)| s.settings.webhook.is_some());
    let refuse = |stats: Option<&Stats>, label: &str, why: Refusal| {
        if let Some(stats) = stats {
            Stats::count(&stats.webhook, label, why.label());
        }
        debug!(posture.source = %Escaped(&name), refused = why.label(), "posture event refused");
        let status = StatusCode::from_u16(why.status()).unwrap_or(StatusCode::BAD_REQUEST);
        (status, format!("refused: {}\n", why.label())).into_response()
    };
    let Some((sources, source)) = source else {
        // Counted under a fixed label: the name in the URL is the caller's text.
        return refuse(
            live.runtime.posture.as_ref().map(|p| &p.stats),
            "-",
            Refusal::UnknownSource,
        );
    };
    let stats = Some(&sources.stats);
    let Ok(body) = axum::body::to_bytes(body, webhook::MAX_BODY).await else {
        return refuse(stats, source.name(), Refusal::TooLarge);
    };
    let (Some(hook), Some(last)) = (&source.settings.webhook, source.settings.steps.last()) else {
        return refuse(stats, source.name(), Refusal::UnknownSource);
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let parts = webhook::Headers {
        timestamp: header("x-anchord-timestamp"),
        signature: header("x-anchord-signature"),
        authorization: header("authorization"),
    };
    let checked = webhook::check(
        hook,
        last,
        &source.settings.facts,
        &source.seen,
        source.settings.fold_case(),
        parts,
        &body,
        clock::unix_now(),
    );
    let change = match checked {
        Ok(c) => c,
        Err(why) => return refuse(stats, source.name(), why),
    };
    if !source
        .push_event(&change.device, change.answer.clone(), change.sent)
        .await
    {
        // Authentic, but the source sent a later event for the device already.
        Stats::count(&sources.stats.webhook, source.name(), "superseded");
        return (StatusCode::ACCEPTED, "superseded by a later event\n").into_response();
    }
    Stats::count(&sources.stats.webhook, source.name(), "accepted");
    sources.emit(Event {
        source: source.name().to_owned(),
        device: change.device,
        answer: change.answer.map(|a| a.facts()),
        via: "webhook",
    });
    (StatusCode::ACCEPTED, "accepted\n").into_response()
}

/// The refusal of an admin command whose request lacks the admin token (`[admin]
/// token_file`, compared in constant time); `None` when it carries it.
fn refusal(config: &crate::config::Config, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &config.admin_token else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "admin commands are off: set [admin] token_file\n",
            )
                .into_response(),
        );
    };
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    (!webhook::bearer_matches(authorization, token))
        .then(|| (StatusCode::UNAUTHORIZED, "refused: bad_auth\n").into_response())
}

/// A JSON array as the answer.
fn json_list(list: Vec<serde_json::Value>) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(list).to_string(),
    )
        .into_response()
}

/// The live sessions (`anchord sessions list`), those of one device (`device=`: its
/// certificate serial in hex, its EAP identity or its User-Name) or one MAC (`mac=`, any
/// common notation) if asked.
async fn sessions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(refused) = refusal(&shared.live().config, &headers) {
        return refused;
    }
    let list: Vec<_> = matching(&shared, &uri)
        .into_iter()
        .map(|s| crate::server::registry::session_json(&s))
        .collect();
    json_list(list)
}

/// The `device=` and `mac=` of `uri`'s query (the last of each; empty ones count as absent).
fn filters(uri: &axum::http::Uri) -> (Option<String>, Option<String>) {
    let (mut device, mut mac) = (None, None);
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        let v = (!v.is_empty()).then(|| v.into_owned());
        match &*k {
            "device" => device = v,
            "mac" => mac = v.map(|m| station_id(m.as_bytes())),
            _ => {}
        }
    }
    (device, mac)
}

/// The live sessions `uri`'s query names (`device=`, `mac=`; every session without).
fn matching(
    shared: &Shared,
    uri: &axum::http::Uri,
) -> Vec<Arc<crate::server::registry::LiveSession>> {
    let (device, mac) = filters(uri);
    shared
        .registry
        .sessions()
        .into_iter()
        .filter(|s| {
            device
                .as_deref()
                .is_none_or(|d| crate::server::registry::is_device(s, d))
        })
        .filter(|s| mac.is_none() || s.station == mac)
        .collect()
}

/// Disconnects the live sessions of a device or a MAC (`anchord sessions disconnect`);
/// refuses without one of them, so no slip disconnects every session.
async fn sessions_disconnect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(refused) = refusal(&shared.live().config, &headers) {
        return refused;
    }
    if filters(&uri) == (None, None) {
        return (StatusCode::BAD_REQUEST, "name a device= or a mac=\n").into_response();
    }
    // Each on a task of its own: a request cut short (the client gone, the connection's
    // time up) still has every Disconnect finished, applied and audited.
    let tasks: Vec<_> = matching(&shared, &uri)
        .into_iter()
        .map(|s| {
            let shared = shared.clone();
            tokio::spawn(
                async move { crate::server::enforce::disconnect(&shared, s, "admin").await },
            )
        })
        .collect();
    let done: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    json_list(done)
}

/// What each posture source's cache holds for the device whose certificate (PEM) is the
/// body (`X-Calling-Station-Id` for sources keyed by MAC): `anchord posture lookup --cache`.
async fn posture_cache(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let live = shared.live();
    if let Some(refused) = refusal(&live.config, &headers) {
        return refused;
    }
    let Ok(body) = axum::body::to_bytes(body, webhook::MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "refused: too_large\n").into_response();
    };
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&body)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return (StatusCode::BAD_REQUEST, "the body is a PEM certificate\n").into_response();
    }
    let cert = CertFacts::of(&chain);
    let station = headers
        .get("x-calling-station-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| station_id(v.as_bytes()));
    let mut out = Vec::new();
    for source in live.runtime.posture.iter().flat_map(|p| p.all()) {
        let id = source.device_id(&cert, station.as_deref());
        let cached = match &id {
            Some(id) => source.cached(&id.id).await,
            None => None,
        };
        out.push(serde_json::json!({
            "source": source.name(),
            "id": id.as_ref().map(|i| &i.id),
            "id_from": id.as_ref().map(|i| i.from),
            "cached": cached.map(|(answer, age)| serde_json::json!({
                "answer": answer.facts().describe(),
                "age_secs": age.as_secs(),
                "state": if age <= source.settings.fresh {
                    "fresh"
                } else if age <= source.settings.max_stale {
                    "stale"
                } else {
                    "expired"
                },
            })),
        }));
    }
    json_list(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disconnect_guard_and_the_filter_read_the_query_alike() {
        let f = |q: &str| filters(&format!("/v1/sessions/disconnect?{q}").parse().unwrap());
        // An empty last value does not turn a named device into "every device".
        assert_eq!(f("device=alice&device="), (None, None));
        assert_eq!(f("device=&mac="), (None, None));
        assert_eq!(f("device=alice"), (Some("alice".into()), None));
        assert_eq!(
            f("mac=02%3A00%3A00%3A00%3A00%3A01"),
            (None, Some("02-00-00-00-00-01".into()))
        );
    }
}
