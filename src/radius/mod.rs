//! RADIUS wire protocol: packet codec, authenticators and attribute helpers.
//!
//! Pure code: no sockets, no clock, no randomness of its own (callers pass salts in).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Code      |  Identifier   |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Authenticator (16 octets)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Attributes: Type (1) | Length (1, includes these 2) | Value ...
//! ```
//!
//! RFC 2865 §3 (packet), §5 (attributes); RFC 3579 §3.2 (Message-Authenticator);
//! RFC 2548 §2.4 (MS-MPPE keys); RFC 2868/3580 (VLAN tunnel attributes).
#![deny(clippy::indexing_slicing)]

pub mod attr;
pub mod crypto;
pub mod dictionary;
pub mod packet;
pub mod reader;
pub mod reply;
pub mod summary;

pub use attr::AttrType;
pub use crypto::SharedSecret;
pub use packet::{Code, DecodeError, Request, UnverifiedRequest};
pub use reply::{EncodeError, ReplyBuilder};

/// Smallest valid RADIUS packet: the 20-byte header (RFC 2865 §3).
pub const MIN_PACKET: usize = 20;
/// Largest valid RADIUS packet (RFC 2865 §3).
pub const MAX_PACKET: usize = 4096;
/// Largest attribute value: the length octet counts the 2-byte header (RFC 2865 §5).
pub const MAX_ATTR_VALUE: usize = 253;
