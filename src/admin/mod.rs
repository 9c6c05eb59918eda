//! The admin HTTP listener: `GET /metrics` (Prometheus text). Off unless `[admin]` is set;
//! its default address is loopback only. Later issues add the posture webhook and session
//! commands here, behind authentication.
//!
//! Bounded whatever a client does: only GET is routed and no request body is read; at
//! most [`MAX_CONNECTIONS`] connections are served at once (more are closed at once);
//! each serves one request, must send its headers within [`HEADER_TIMEOUT`], and is closed
//! after [`CONNECTION_TIMEOUT`] in all.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
    info!(admin = %addr, "admin listener: GET /metrics");
    let app = Router::new()
        .route("/metrics", get(metrics))
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
