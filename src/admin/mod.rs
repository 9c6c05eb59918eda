//! The admin HTTP listener: `GET /metrics` (Prometheus text). Off unless `[admin]` is set;
//! its default address is loopback only. Later issues add the posture webhook and session
//! commands here, behind authentication.
//!
//! Only GET is routed and a request body is never read. The listener is for the host's own
//! scraper (loopback by default; `check` warns about any other address).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::server::Shared;

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
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    info!(admin = %addr, "admin listener: GET /metrics");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = &result {
        warn!(admin = %addr, error = %e, "admin listener failed");
    }
    result
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, METRICS_TYPE)], shared.metrics_text())
}
