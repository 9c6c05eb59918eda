//! Certificates and keys. [`dev`] makes the development/test PKI; the HSM-held CA and
//! OCSP land here in later issues.

pub mod ca;
pub mod crl;
pub mod dev;
pub mod facts;
pub mod hsm;
pub mod ocsp;
pub mod revocation;
pub mod status;
