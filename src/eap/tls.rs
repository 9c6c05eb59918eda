//! EAP-TLS framing (RFC 5216 §3.1): flags, optional TLS Message Length, data.
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Flags     |      TLS Message Length (4, only with L)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     TLS Data...
//! Flags: L (0x80) length included, M (0x40) more fragments, S (0x20) start.
//! ```

use super::packet::EapError;
use crate::radius::reader::Reader;

/// Length-included flag.
pub const FLAG_L: u8 = 0x80;
/// More-fragments flag.
pub const FLAG_M: u8 = 0x40;
/// Start flag.
pub const FLAG_S: u8 = 0x20;

/// One EAP-TLS message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFrame<'a> {
    /// Flag octet.
    pub flags: u8,
    /// TLS Message Length, when L is set.
    pub total: Option<u32>,
    /// TLS data in this fragment.
    pub data: &'a [u8],
}

impl<'a> TlsFrame<'a> {
    /// Decodes the Type-Data of an EAP-TLS packet.
    ///
    /// # Errors
    /// Missing flags, or L set without four length octets.
    pub fn decode(type_data: &'a [u8]) -> Result<Self, EapError> {
        let mut r = Reader::new(type_data);
        let flags = r.u8().ok_or(EapError::Framing("missing flags"))?;
        let total = if flags & FLAG_L != 0 {
            Some(r.u32().ok_or(EapError::Framing("L flag without length"))?)
        } else {
            None
        };
        Ok(Self {
            flags,
            total,
            data: r.rest(),
        })
    }

    /// True when M is set.
    pub fn more(&self) -> bool {
        self.flags & FLAG_M != 0
    }

    /// An acknowledgement: no data and no L/M/S flags.
    pub fn is_ack(&self) -> bool {
        self.data.is_empty() && self.flags & (FLAG_L | FLAG_M | FLAG_S) == 0
    }
}

/// Encodes Type-Data with flags, optional total length and data.
pub fn encode(flags: u8, total: Option<u32>, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len());
    v.push(flags | if total.is_some() { FLAG_L } else { 0 });
    if let Some(t) = total {
        v.extend(t.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use super::*;

    #[test]
    fn decodes_first_fragment_with_length() {
        let f = TlsFrame::decode(&[0xC0, 0, 0, 0x10, 0, 0xAA, 0xBB]).unwrap();
        assert_eq!(f.total, Some(4096));
        assert!(f.more());
        assert_eq!(f.data, &[0xAA, 0xBB]);
    }

    #[test]
    fn ack_is_empty_without_flags() {
        assert!(TlsFrame::decode(&[0x00]).unwrap().is_ack());
        assert!(!TlsFrame::decode(&[0x40]).unwrap().is_ack());
        assert!(!TlsFrame::decode(&[0x00, 1]).unwrap().is_ack());
    }

    #[test]
    fn rejects_truncated_length_and_missing_flags() {
        assert_eq!(
            TlsFrame::decode(&[]).unwrap_err(),
            EapError::Framing("missing flags")
        );
        assert_eq!(
            TlsFrame::decode(&[0x80, 0, 0]).unwrap_err(),
            EapError::Framing("L flag without length")
        );
    }

    #[test]
    fn encode_sets_l_only_with_length() {
        assert_eq!(encode(FLAG_M, Some(3), &[1]), vec![0xC0, 0, 0, 0, 3, 1]);
        assert_eq!(encode(0, None, &[]), vec![0]);
    }
}
