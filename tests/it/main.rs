#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test helpers fail loudly by design and wait on a real subprocess by the wall clock"
)]
//! Integration tests: the real `anchord` binary on loopback, driven by eapol_test and by a
//! hand-made RADIUS client for wire-level cases.

mod accounting;
mod admin;
mod bench;
mod check;
mod coa;
mod crl;
mod demo;
mod eapol;
mod endings;
mod fairness;
mod forged_chain;
mod harness;
mod hostapd;
mod hsm;
mod hsm_layout;
mod inprogress;
mod keys;
mod logsafe;
mod ocsp;
mod policy;
mod posture;
mod reload;
mod replay;
mod responder;
mod revocation;
mod secrets;
mod wire;
