//! EAP packet codec (RFC 3748 §4).
//!
//! ```text
//!  0                   1                   2                   3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Code      |  Identifier   |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |  Type-Data ... (Request and Response only)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-
//! ```

use thiserror::Error;

use crate::radius::reader::Reader;

/// EAP type Identity (RFC 3748 §5.1).
pub const TYPE_IDENTITY: u8 = 0x01;
/// EAP type Nak (RFC 3748 §5.3.1).
pub const TYPE_NAK: u8 = 0x03;
/// EAP type EAP-TLS (RFC 5216).
pub const TYPE_TLS: u8 = 0x0D;

/// EAP codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EapCode {
    /// Request (1).
    Request,
    /// Response (2).
    Response,
    /// Success (3).
    Success,
    /// Failure (4).
    Failure,
}

impl EapCode {
    fn number(self) -> u8 {
        match self {
            Self::Request => 0x01,
            Self::Response => 0x02,
            Self::Success => 0x03,
            Self::Failure => 0x04,
        }
    }
}

/// Errors decoding or handling EAP. All of them end the conversation: a malformed or
/// unexpected EAP packet is answered with nothing ([`EapError::is_discard`]) or with
/// EAP-Failure.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EapError {
    /// Shorter than its header or its Length field.
    #[error("EAP packet truncated")]
    Truncated,
    /// Unknown code.
    #[error("EAP code {0} unknown")]
    UnknownCode(u8),
    /// A Request or Response without a Type.
    #[error("EAP request/response without a type")]
    MissingType,
    /// The peer sent something other than a Response.
    #[error("EAP code from peer is not Response")]
    NotResponse,
    /// Identifier does not match the outstanding request.
    #[error("EAP identifier {got} does not match outstanding {expected}")]
    UnexpectedIdentifier {
        /// What we sent.
        expected: u8,
        /// What arrived.
        got: u8,
    },
    /// The peer answered with a method we did not ask for.
    #[error("unexpected EAP type {0}")]
    UnexpectedType(u8),
    /// The peer refused EAP-TLS.
    #[error("peer refused EAP-TLS (Nak)")]
    Nak,
    /// EAP-TLS framing fault.
    #[error("EAP-TLS framing: {0}")]
    Framing(&'static str),
    /// A reassembled TLS message larger than the configured cap.
    #[error("TLS message of {0} bytes exceeds the reassembly cap")]
    TooLarge(usize),
    /// Too many round trips.
    #[error("too many round trips")]
    TooManyRounds,
    /// The TLS handshake failed.
    #[error("TLS: {detail}")]
    Tls {
        /// Stable reason label (`certificate_expired`, `unknown_ca`, ...).
        reason: &'static str,
        /// rustls's description.
        detail: String,
    },
    /// Event not valid in the current state.
    #[error("unexpected event in state {0}")]
    UnexpectedEvent(&'static str),
}

impl EapError {
    /// True where the packet is dropped without answer and the session kept as it was
    /// (a stale or mismatched Identifier, RFC 3748 §4.1). Every other error ends the
    /// session with EAP-Failure.
    pub fn is_discard(&self) -> bool {
        matches!(self, Self::UnexpectedIdentifier { .. })
    }

    /// Stable reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated | Self::UnknownCode(_) | Self::MissingType | Self::NotResponse => {
                "eap_malformed"
            }
            Self::UnexpectedIdentifier { .. } => "eap_identifier_mismatch",
            Self::UnexpectedType(_) => "eap_unexpected_type",
            Self::Nak => "eap_nak",
            Self::Framing(_) => "eap_tls_framing",
            Self::TooLarge(_) => "eap_tls_too_large",
            Self::TooManyRounds => "too_many_rounds",
            Self::Tls { reason, .. } => reason,
            Self::UnexpectedEvent(_) => "internal",
        }
    }
}

/// One EAP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EapPacket {
    /// Code.
    pub code: EapCode,
    /// Identifier.
    pub identifier: u8,
    /// Type, for Request and Response.
    pub ty: Option<u8>,
    /// Type-Data.
    pub data: Vec<u8>,
}

impl EapPacket {
    /// A Request of a type.
    pub fn request(identifier: u8, ty: u8, data: Vec<u8>) -> Self {
        Self {
            code: EapCode::Request,
            identifier,
            ty: Some(ty),
            data,
        }
    }

    /// Success or Failure with an identifier.
    pub fn outcome(code: EapCode, identifier: u8) -> Self {
        Self {
            code,
            identifier,
            ty: None,
            data: Vec::new(),
        }
    }

    /// Decodes; octets beyond the Length field are link padding and ignored (RFC 3748 §4).
    ///
    /// # Errors
    /// Truncated, unknown code, or a Request/Response without a type.
    pub fn decode(bytes: &[u8]) -> Result<Self, EapError> {
        let mut r = Reader::new(bytes);
        let code = r.u8().ok_or(EapError::Truncated)?;
        let identifier = r.u8().ok_or(EapError::Truncated)?;
        let len = usize::from(r.u16().ok_or(EapError::Truncated)?);
        let body_len = len.checked_sub(4).ok_or(EapError::Truncated)?;
        let mut body = Reader::new(r.take(body_len).ok_or(EapError::Truncated)?);
        let code = match code {
            0x01 => EapCode::Request,
            0x02 => EapCode::Response,
            0x03 => EapCode::Success,
            0x04 => EapCode::Failure,
            other => return Err(EapError::UnknownCode(other)),
        };
        let ty = match code {
            EapCode::Request | EapCode::Response => Some(body.u8().ok_or(EapError::MissingType)?),
            EapCode::Success | EapCode::Failure => None,
        };
        Ok(Self {
            code,
            identifier,
            ty,
            data: body.rest().to_vec(),
        })
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = 4 + usize::from(self.ty.is_some()) + self.data.len();
        out.extend([self.code.number(), self.identifier]);
        // Callers keep EAP packets far below 64 KiB (fragment size is capped in config).
        out.extend(u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        out.extend(self.ty);
        out.extend_from_slice(&self.data);
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(5 + self.data.len());
        self.encode(&mut v);
        v
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use super::*;

    #[test]
    fn identity_response_round_trips() {
        let bytes = [2, 7, 0, 9, 1, b'd', b'e', b'v', b'1'];
        let p = EapPacket::decode(&bytes).unwrap();
        assert_eq!(p.code, EapCode::Response);
        assert_eq!(p.identifier, 7);
        assert_eq!(p.ty, Some(TYPE_IDENTITY));
        assert_eq!(p.data, b"dev1");
        assert_eq!(p.to_bytes(), bytes);
    }

    #[test]
    fn success_has_no_type() {
        let p = EapPacket::outcome(EapCode::Success, 9);
        assert_eq!(p.to_bytes(), [3, 9, 0, 4]);
        assert_eq!(EapPacket::decode(&[3, 9, 0, 4]).unwrap(), p);
    }

    #[test]
    fn ignores_padding_and_rejects_truncation() {
        let p = EapPacket::decode(&[2, 1, 0, 5, 13, 0xEE, 0xEE]).unwrap();
        assert!(p.data.is_empty());
        assert_eq!(
            EapPacket::decode(&[2, 1, 0, 9, 13]).unwrap_err(),
            EapError::Truncated
        );
        assert_eq!(
            EapPacket::decode(&[2, 1, 0, 3]).unwrap_err(),
            EapError::Truncated
        );
        assert_eq!(
            EapPacket::decode(&[2, 1, 0, 4]).unwrap_err(),
            EapError::MissingType
        );
        assert_eq!(
            EapPacket::decode(&[9, 1, 0, 4]).unwrap_err(),
            EapError::UnknownCode(9)
        );
    }

    #[test]
    fn decode_encode_round_trips_on_random_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xEA9);
        for _ in 0..20_000 {
            let mut bytes: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
            if bytes.len() >= 4 && rng.gen_bool(0.7) {
                bytes[0] = rng.gen_range(1..=4);
                let len = u16::try_from(rng.gen_range(4..=bytes.len())).unwrap();
                bytes[2..4].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = EapPacket::decode(&bytes) {
                let again = EapPacket::decode(&p.to_bytes()).unwrap();
                assert_eq!(again, p);
                let _ = crate::eap::tls::TlsFrame::decode(&p.data);
            }
        }
    }
}
