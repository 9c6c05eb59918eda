//! anchord: a RADIUS server for EAP-TLS (802.1X) device authentication.
//!
//! # Layout
//! - [`radius`]: pure RADIUS codec, authenticators, Message-Authenticator, MPPE keys.
//! - [`eap`]: pure EAP / EAP-TLS codec and the per-device state machine (sans-IO).
//! - [`tls`]: rustls glue: server config, client-certificate verifier, certificate summaries.
//! - [`pki`]: certificates and keys: dev PKI, HSM-held CA and server key, OCSP and CRLs.
//! - [`policy`]: pure: the admin's rules (loaded, linted, tested against expectations) and the
//!   decision from typed facts (`evaluate`), with its trace.
//! - [`posture`]: live device posture from MDM/EDR HTTP APIs (ids from the certificate,
//!   exactly-one-record identity safety, cache with stale-while-revalidate, OAuth2, rate
//!   limits, polling, the webhook's checks) and the dev MDM the demo and tests talk to.
//! - [`config`]: `config/*.toml` into validated types, errors with file, line and key.
//! - [`clock`]: the one module that reads the clock (everything else asks it or is passed `now`).
//! - [`logsafe`]: peer-supplied text escaped for one log line.
//! - [`server`]: tokio UDP loop, client table, duplicate cache, session table, checks.
//! - [`admin`]: the admin HTTP listener (`/metrics`, the posture webhook).
//! - [`bench`]: the load generator behind `anchord bench`.
//! - [`cli`]: the `anchord` command (serve, check, demo, pki, policy, posture, bench).
//!
//! Request flow: `server` recv → `radius` verify + decode → duplicate check → session
//! lookup → `eap::Session::handle` → facts gathered (certificate, requests, revocation and
//! posture from their sources, started as soon as the certificate is verified) →
//! `policy::evaluate` → reply built from the decision (`server::reply`) → `radius` encode →
//! send → the end counted and audited once (`server::ending`).

pub mod admin;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod eap;
pub mod logsafe;
pub mod pki;
pub mod policy;
pub mod posture;
pub mod radius;
pub mod server;
pub mod tls;
