#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test helpers fail loudly by design and wait on a real subprocess by the wall clock"
)]
//! Integration tests: the real `anchord` binary on loopback, driven by eapol_test and by a
//! hand-made RADIUS client for wire-level cases.

mod bench;
mod check;
mod demo;
mod eapol;
mod harness;
mod hsm;
mod keys;
mod ocsp;
mod responder;
mod revocation;
mod wire;
