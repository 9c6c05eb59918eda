//! A development MDM: a small HTTP server shaped like Microsoft Graph's Intune device API,
//! with an OAuth2 client-credentials token endpoint. The demo and the benchmark serve their
//! devices' posture from it, and the tests drive it as the real peer a posture source
//! talks to (counting requests, failing on demand). Not for production.
//!
//! Routes:
//! - `POST /oauth2/token` (form: `grant_type=client_credentials`, `client_id`,
//!   `client_secret`) → `{"access_token", "token_type": "Bearer", "expires_in"}`;
//! - `GET /v1.0/deviceManagement/managedDevices/{id}` → the device record, or 404;
//! - `GET /v1.0/deviceManagement/managedDevices?$filter=...` → `{"value": [...]}`, filtered
//!   by `complianceState eq '<state>'` or `serialNumber eq '<serial>'` (or not at all, when
//!   told to ignore filters, as real list endpoints are known to do).
//!
//! With a client secret set, device routes need a bearer token it issued and that has not
//! expired.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::clock;

/// The server's devices and behaviour, changed by tests while it runs.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Device records (Graph `managedDevice` shape: `id`, `serialNumber`,
    /// `complianceState`, ...).
    pub devices: Vec<Value>,
    /// Answer every device route with this status (e.g. 429, 503, 500).
    pub status: Option<u16>,
    /// With `status`: a Retry-After header.
    pub retry_after: Option<String>,
    /// Wait this long before answering device routes.
    pub delay: Duration,
    /// Answer with a body that is not JSON.
    pub garbage: bool,
    /// List routes return every device whatever the filter.
    pub ignore_filter: bool,
    /// Lifetime of new tokens, in seconds.
    pub token_ttl: u64,
    /// Refuse every token issued so far (as after a key rotation).
    pub revoke_tokens: bool,
}

/// What the server saw.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Requests to device routes (lookups and lists).
    pub device_requests: u64,
    /// Device requests by id (direct GETs).
    pub by_device: HashMap<String, u64>,
    /// Tokens issued.
    pub tokens: u64,
    /// Requests refused with 401.
    pub unauthorized: u64,
}

/// A dev MDM's state.
#[derive(Debug)]
pub struct DevMdm {
    /// Behaviour.
    pub knobs: Mutex<Knobs>,
    /// Counters.
    pub counts: Mutex<Counts>,
    client: Option<(String, String)>,
    tokens: Mutex<Vec<(String, Instant, bool)>>,
}

impl DevMdm {
    /// A server with `devices`; with `client` (`(id, secret)`), device routes need a
    /// token from the token endpoint.
    pub fn new(devices: Vec<Value>, client: Option<(String, String)>) -> Arc<Self> {
        Arc::new(Self {
            knobs: Mutex::new(Knobs {
                devices,
                token_ttl: 3600,
                ..Knobs::default()
            }),
            counts: Mutex::new(Counts::default()),
            client,
            tokens: Mutex::new(Vec::new()),
        })
    }

    /// Changes its behaviour.
    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        if let Ok(mut k) = self.knobs.lock() {
            f(&mut k);
            if k.revoke_tokens {
                k.revoke_tokens = false;
                if let Ok(mut t) = self.tokens.lock() {
                    for tok in t.iter_mut() {
                        tok.2 = false;
                    }
                }
            }
        }
    }

    /// What it saw so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Serves on `listener` until the task is dropped.
    ///
    /// # Errors
    /// The listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Its routes, to serve some other way (over TLS in tests).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/oauth2/token", post(token))
            .route("/v1.0/deviceManagement/managedDevices", get(list))
            .route("/v1.0/deviceManagement/managedDevices/{id}", get(device))
            .with_state(self)
    }

    /// Binds `addr` and serves in the background on the current runtime; the address.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn spawn(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tokio::spawn(Arc::clone(self).serve(listener));
        Ok(local)
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        if self.client.is_none() {
            return true;
        }
        let Some(given) = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let now = clock::now();
        self.tokens
            .lock()
            .map(|t| {
                t.iter()
                    .any(|(tok, until, valid)| tok == given && *valid && now < *until)
            })
            .unwrap_or(false)
    }

    /// Common gate of the device routes: counting, auth, forced failures, delay.
    async fn gate(&self, headers: &HeaderMap, id: Option<&str>) -> Option<Response> {
        let (status, retry_after, delay, garbage) = {
            let k = self.knobs.lock().ok()?;
            (k.status, k.retry_after.clone(), k.delay, k.garbage)
        };
        if let Ok(mut c) = self.counts.lock() {
            c.device_requests += 1;
            if let Some(id) = id {
                *c.by_device.entry(id.to_owned()).or_default() += 1;
            }
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !self.authorised(headers) {
            if let Ok(mut c) = self.counts.lock() {
                c.unauthorized += 1;
            }
            return Some((StatusCode::UNAUTHORIZED, "invalid token").into_response());
        }
        if let Some(s) = status {
            let code = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (code, "forced failure").into_response();
            if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                r.headers_mut().insert("retry-after", v);
            }
            return Some(r);
        }
        if garbage {
            return Some((StatusCode::OK, "<html>not json</html>").into_response());
        }
        None
    }
}

async fn token(State(mdm): State<Arc<DevMdm>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && mdm.client.as_ref().is_some_and(|(id, secret)| {
            form.get("client_id") == Some(id) && form.get("client_secret") == Some(secret)
        });
    if !ok {
        return json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client"}),
        );
    }
    let ttl = mdm.knobs.lock().map(|k| k.token_ttl).unwrap_or(3600);
    let n = mdm
        .counts
        .lock()
        .map(|mut c| {
            c.tokens += 1;
            c.tokens
        })
        .unwrap_or(0);
    let value = format!("dev-token-{n}-{:016x}", rand::random::<u64>());
    if let Ok(mut t) = mdm.tokens.lock() {
        let until = clock::now()
            .checked_add(Duration::from_secs(ttl))
            .unwrap_or_else(|| clock::now() + Duration::from_secs(86_400 * 365));
        t.push((value.clone(), until, true));
    }
    json_reply(
        StatusCode::OK,
        &json!({"access_token": value, "token_type": "Bearer", "expires_in": ttl}),
    )
}

async fn device(
    State(mdm): State<Arc<DevMdm>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = mdm.gate(&headers, Some(&id)).await {
        return r;
    }
    let found = mdm.knobs.lock().ok().and_then(|k| {
        k.devices
            .iter()
            .find(|d| d.get("id").and_then(Value::as_str) == Some(id.as_str()))
            .cloned()
    });
    match found {
        Some(d) => json_reply(StatusCode::OK, &d),
        None => json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "ResourceNotFound"}}),
        ),
    }
}

async fn list(
    State(mdm): State<Arc<DevMdm>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = mdm.gate(&headers, None).await {
        return r;
    }
    let filter = query
        .as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<HashMap<_, _>>()
        })
        .and_then(|q| q.get("$filter").cloned());
    let Ok(k) = mdm.knobs.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let wanted = |d: &Value| -> bool {
        if k.ignore_filter {
            return true;
        }
        let Some(f) = &filter else { return true };
        let Some((field, value)) = f.split_once(" eq ") else {
            return true;
        };
        let value = value.trim().trim_matches('\'');
        d.get(field.trim()).and_then(Value::as_str) == Some(value)
    };
    let value: Vec<Value> = k.devices.iter().filter(|d| wanted(d)).cloned().collect();
    json_reply(StatusCode::OK, &json!({ "value": value }))
}

fn json_reply(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The dev devices' records (the dev PKI's Staff laptop and IoT sensor, by the Intune
/// device ids their certificates carry), both compliant.
pub fn dev_devices() -> Vec<Value> {
    use crate::pki::dev::{IOT_INTUNE_ID, STAFF_INTUNE_ID};
    vec![
        json!({
            "id": STAFF_INTUNE_ID,
            "deviceName": "device-ecdsa",
            "serialNumber": "DEV-STAFF-1",
            "complianceState": "compliant",
            "managementState": "managed",
            "operatingSystem": "Windows",
            "osVersion": "10.0.26100.2605",
            "lastSyncDateTime": "2026-12-01T08:00:00Z",
            "isEncrypted": true,
        }),
        json!({
            "id": IOT_INTUNE_ID,
            "deviceName": "device-rsa",
            "serialNumber": "DEV-IOT-1",
            "complianceState": "compliant",
            "managementState": "managed",
            "operatingSystem": "Linux",
            "osVersion": "6.1",
            "lastSyncDateTime": "2026-12-01T08:00:00Z",
            "isEncrypted": false,
        }),
    ]
}

/// The dev MDM's OAuth2 client id.
pub const DEV_CLIENT_ID: &str = "anchord-dev";

/// A `[[posture.source]]` named `name` for a dev MDM at `addr`, shaped like the shipped
/// Intune example: OAuth2 with the secret in `secret_file`, the device id from the SAN URI.
pub fn source_toml(name: &str, addr: SocketAddr, secret_file: &std::path::Path) -> String {
    format!(
        r#"
[[posture.source]]
name = "{name}"
url = "http://{addr}"
identity = [{{ from = "san_uri", prefix = "IntuneDeviceId://", pattern = "guid" }}]
auth = {{ kind = "oauth2", token_url = "http://{addr}/oauth2/token", client_id = "{DEV_CLIENT_ID}", client_secret_file = "{secret}" }}
timeout_ms = 2000

[[posture.source.step]]
path = "/v1.0/deviceManagement/managedDevices/{{id}}"
match = {{ "/id" = "{{id}}" }}

[posture.source.facts]
compliant = {{ pointer = "/complianceState", equals = "compliant" }}
managed = {{ pointer = "/managementState", equals = "managed" }}
os = "/operatingSystem"
os_version = "/osVersion"
last_seen = "/lastSyncDateTime"
extra = {{ encrypted = "/isEncrypted" }}
"#,
        secret = secret_file.display()
    )
}
