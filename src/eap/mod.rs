//! EAP (RFC 3748) and EAP-TLS (RFC 5216, RFC 9190), sans-IO.
//!
//! [`packet`] is the EAP codec, [`tls`] the EAP-TLS flags/length framing and
//! [`session`] the per-device state machine that drives a rustls `ServerConnection` with
//! bytes in and bytes out. No sockets, clocks or RNG constructors live here: the server
//! hands in events (responses, check verdicts) and carries out the returned actions.
#![deny(clippy::indexing_slicing)]

pub mod packet;
pub mod session;
pub mod tls;

pub use packet::{EapCode, EapError, EapPacket};
pub use session::{
    Action, Event, Keys, Outcome, PeerInfo, Reason, Session, SessionConfig, Verdict,
};
