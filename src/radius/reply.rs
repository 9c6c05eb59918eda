//! Reply encoding: Message-Authenticator first, then the Response Authenticator
//! (RFC 2865 §3, RFC 3579 §3.2, BlastRADIUS hardening).
//!
//! The builder appends attributes to one buffer; `finish` fills in the Message-Authenticator
//! (computed with the Request Authenticator in the header), then the Response Authenticator
//! over the result.

use thiserror::Error;

use super::attr::{AttrType, VENDOR_MICROSOFT};
use super::crypto::{self, SharedSecret, AUTHENTICATOR_LEN, AUTHENTICATOR_OFFSET};
use super::packet::Code;
use super::{MAX_ATTR_VALUE, MAX_PACKET, MIN_PACKET};

/// Why a reply could not be encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    /// An attribute value over 253 bytes.
    #[error("attribute {ty} value of {len} bytes exceeds 253")]
    ValueTooLong {
        /// Attribute type.
        ty: u8,
        /// Value length.
        len: usize,
    },
    /// The reply would exceed 4096 bytes.
    #[error("reply of {0} bytes exceeds 4096")]
    TooLarge(usize),
}

/// Builds one reply packet.
#[derive(Debug)]
pub struct ReplyBuilder {
    buf: Vec<u8>,
}

/// Offset of the Message-Authenticator value: header, then type and length octets.
const MA_VALUE_AT: usize = MIN_PACKET + 2;

impl ReplyBuilder {
    /// Starts a reply with Message-Authenticator as its first attribute.
    pub fn new(code: Code, identifier: u8) -> Self {
        let mut buf = Vec::with_capacity(1500);
        buf.extend([code.number(), identifier, 0, 0]);
        buf.extend([0u8; AUTHENTICATOR_LEN]);
        buf.extend([AttrType::MessageAuthenticator.code(), 18]);
        buf.extend([0u8; AUTHENTICATOR_LEN]);
        Self { buf }
    }

    /// Appends one attribute.
    ///
    /// # Errors
    /// The value is longer than 253 bytes.
    pub fn push(&mut self, ty: AttrType, value: &[u8]) -> Result<&mut Self, EncodeError> {
        let len = u8::try_from(value.len() + 2)
            .ok()
            .filter(|_| value.len() <= MAX_ATTR_VALUE)
            .ok_or(EncodeError::ValueTooLong {
                ty: ty.code(),
                len: value.len(),
            })?;
        self.buf.extend([ty.code(), len]);
        self.buf.extend_from_slice(value);
        Ok(self)
    }

    /// Appends a tagged integer attribute (RFC 2868 §3.1): tag octet then 3-byte value.
    ///
    /// # Errors
    /// Never in practice; kept fallible like [`ReplyBuilder::push`].
    pub fn push_tagged_u24(
        &mut self,
        ty: AttrType,
        tag: u8,
        value: u32,
    ) -> Result<&mut Self, EncodeError> {
        let [_, a, b, c] = value.to_be_bytes();
        self.push(ty, &[tag, a, b, c])
    }

    /// Appends a tagged string attribute (RFC 2868 §3.5).
    ///
    /// # Errors
    /// The value is longer than 252 bytes.
    pub fn push_tagged_text(
        &mut self,
        ty: AttrType,
        tag: u8,
        value: &str,
    ) -> Result<&mut Self, EncodeError> {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.push(tag);
        v.extend_from_slice(value.as_bytes());
        self.push(ty, &v)
    }

    /// Appends a Microsoft vendor-specific attribute (RFC 2548 §2).
    ///
    /// # Errors
    /// The value does not fit one attribute.
    pub fn push_microsoft(
        &mut self,
        vendor_type: u8,
        value: &[u8],
    ) -> Result<&mut Self, EncodeError> {
        self.push_vendor(VENDOR_MICROSOFT, vendor_type, value)
    }

    /// Appends a vendor-specific attribute in the layout `format` gives: octets of its
    /// type and of its length field (1,1 as RFC 2865 §5.26 suggests and most vendors use;
    /// 2,2 or 4,0 for some).
    ///
    /// # Errors
    /// The value does not fit one attribute, or the type does not fit its field.
    pub fn push_vendor_format(
        &mut self,
        vendor: u32,
        vendor_type: u32,
        value: &[u8],
        (type_octets, length_octets): (u8, u8),
    ) -> Result<&mut Self, EncodeError> {
        let too_long = || EncodeError::ValueTooLong {
            ty: AttrType::VendorSpecific.code(),
            len: value.len(),
        };
        let (t, l) = (usize::from(type_octets), usize::from(length_octets));
        let mut v = Vec::with_capacity(value.len() + 4 + t + l);
        v.extend(vendor.to_be_bytes());
        let ty = vendor_type.to_be_bytes();
        if ty.iter().take(4 - t.min(4)).any(|&b| b != 0) {
            return Err(too_long());
        }
        v.extend_from_slice(ty.get(4 - t.min(4)..).unwrap_or_default());
        let len = u64::try_from(value.len() + t + l).map_err(|_| too_long())?;
        match l {
            0 => {}
            1 => v.push(u8::try_from(len).map_err(|_| too_long())?),
            _ => v.extend(u16::try_from(len).map_err(|_| too_long())?.to_be_bytes()),
        }
        v.extend_from_slice(value);
        self.push(AttrType::VendorSpecific, &v)
    }

    /// Appends a vendor-specific attribute in the RFC 2865 §5.26 layout (one-octet vendor
    /// type and length, which most vendors use).
    ///
    /// # Errors
    /// The value does not fit one attribute.
    pub fn push_vendor(
        &mut self,
        vendor: u32,
        vendor_type: u8,
        value: &[u8],
    ) -> Result<&mut Self, EncodeError> {
        let vlen = u8::try_from(value.len() + 2).map_err(|_| EncodeError::ValueTooLong {
            ty: AttrType::VendorSpecific.code(),
            len: value.len(),
        })?;
        let mut v = Vec::with_capacity(value.len() + 6);
        v.extend(vendor.to_be_bytes());
        v.extend([vendor_type, vlen]);
        v.extend_from_slice(value);
        self.push(AttrType::VendorSpecific, &v)
    }

    /// Appends an EAP packet split over as many EAP-Message attributes as needed.
    ///
    /// # Errors
    /// Never for a chunked value; kept fallible like [`ReplyBuilder::push`].
    pub fn push_eap(&mut self, eap: &[u8]) -> Result<&mut Self, EncodeError> {
        for chunk in eap.chunks(MAX_ATTR_VALUE) {
            self.push(AttrType::EapMessage, chunk)?;
        }
        Ok(self)
    }

    /// Size so far, for callers keeping under 4096 bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if nothing but the header and Message-Authenticator is in the reply.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= MA_VALUE_AT + AUTHENTICATOR_LEN
    }

    /// Signs the reply for the request with `request_authenticator`.
    ///
    /// # Errors
    /// The reply exceeds 4096 bytes.
    pub fn finish(
        mut self,
        secret: &SharedSecret,
        request_authenticator: &[u8; 16],
    ) -> Result<Vec<u8>, EncodeError> {
        self.seal(secret, request_authenticator)?;
        let auth = crypto::response_authenticator(secret, &self.buf);
        self.set(AUTHENTICATOR_OFFSET, &auth);
        Ok(self.buf)
    }

    /// Signs the packet as a client request (Access-Request, Status-Server): the header keeps
    /// the caller's random Request Authenticator and Message-Authenticator is computed over it
    /// (RFC 3579 §3.2). Used by the load generator.
    ///
    /// # Errors
    /// The packet exceeds 4096 bytes.
    pub fn finish_request(
        mut self,
        secret: &SharedSecret,
        request_authenticator: &[u8; 16],
    ) -> Result<Vec<u8>, EncodeError> {
        self.seal(secret, request_authenticator)?;
        Ok(self.buf)
    }

    /// Signs the packet as a Disconnect-Request or CoA-Request (RFC 5176 §2.3, §3.4): the
    /// Message-Authenticator over the packet with a zero authenticator field, then the
    /// Request Authenticator, MD5 over the packet (that field zero) and the secret.
    ///
    /// # Errors
    /// The packet exceeds 4096 bytes.
    pub fn finish_signed_request(mut self, secret: &SharedSecret) -> Result<Vec<u8>, EncodeError> {
        self.seal(secret, &[0u8; AUTHENTICATOR_LEN])?;
        let auth = crypto::request_authenticator(secret, &self.buf);
        self.set(AUTHENTICATOR_OFFSET, &auth);
        Ok(self.buf)
    }

    /// Sets the Length, puts `request_authenticator` in the header and computes the
    /// Message-Authenticator over the result.
    fn seal(
        &mut self,
        secret: &SharedSecret,
        request_authenticator: &[u8; 16],
    ) -> Result<(), EncodeError> {
        let len = self.buf.len();
        let len16 = u16::try_from(len)
            .ok()
            .filter(|_| len <= MAX_PACKET)
            .ok_or(EncodeError::TooLarge(len))?;
        let [hi, lo] = len16.to_be_bytes();
        self.set(2, &[hi, lo]);
        self.set(AUTHENTICATOR_OFFSET, request_authenticator);
        let ma = crypto::message_authenticator(secret, &self.buf);
        self.set(MA_VALUE_AT, &ma);
        Ok(())
    }

    fn set(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
pub(crate) mod tests {
    use super::*;
    use crate::radius::crypto::ct_eq;

    /// Builds an Access-Request (code 1) with the given attributes, optionally signed with a
    /// Message-Authenticator placed last.
    pub(crate) fn signed_request(
        secret: &SharedSecret,
        attrs: &[(u8, Vec<u8>)],
        with_ma: bool,
    ) -> Vec<u8> {
        let mut p = vec![1, 7, 0, 0];
        p.extend((0u8..16).map(|i| i.wrapping_mul(17)));
        for (t, v) in attrs {
            p.push(*t);
            p.push(u8::try_from(v.len() + 2).unwrap());
            p.extend(v);
        }
        let at = p.len() + 2;
        if with_ma {
            p.extend([80, 18]);
            p.extend([0; 16]);
        }
        let len = u16::try_from(p.len()).unwrap().to_be_bytes();
        p[2] = len[0];
        p[3] = len[1];
        if with_ma {
            let ma = crypto::message_authenticator(secret, &p);
            p[at..at + 16].copy_from_slice(&ma);
        }
        p
    }

    fn secret() -> SharedSecret {
        SharedSecret::new(b"testing123".to_vec())
    }

    #[test]
    fn reply_has_message_authenticator_first_and_valid_authenticators() {
        let req_auth = [0x42u8; 16];
        let mut b = ReplyBuilder::new(Code::AccessAccept, 9);
        b.push(AttrType::UserName, b"dev").unwrap();
        let reply = b.finish(&secret(), &req_auth).unwrap();
        assert_eq!(reply[0], 2);
        assert_eq!(reply[1], 9);
        assert_eq!(
            usize::from(u16::from_be_bytes([reply[2], reply[3]])),
            reply.len()
        );
        assert_eq!(&reply[20..22], &[80, 18]);
        // Response Authenticator: MD5 over the reply with the request authenticator in place.
        let mut check = reply.clone();
        check[4..20].copy_from_slice(&req_auth);
        let expected = crypto::response_authenticator(&secret(), &check);
        assert!(ct_eq(&reply[4..20], &expected));
        // Message-Authenticator: HMAC with request authenticator and zeroed MA field.
        let ma = check[22..38].to_vec();
        check[22..38].fill(0);
        assert_eq!(
            crypto::message_authenticator(&secret(), &check).to_vec(),
            ma
        );
    }

    #[test]
    fn reply_matches_independent_vector() {
        let mut b = ReplyBuilder::new(Code::AccessChallenge, 1);
        b.push(AttrType::State, &[1, 2, 3, 4]).unwrap();
        let reply = b.finish(&secret(), &[0u8; 16]).unwrap();
        assert_eq!(
            hex::encode(reply),
            include_str!("../../tests/vectors/rfc3579-challenge-reply.hex").trim()
        );
    }

    #[test]
    fn client_request_verifies_on_the_server_side() {
        let mut b = ReplyBuilder::new(Code::AccessRequest, 3);
        b.push_eap(&[2, 1, 0, 6, 13, 0]).unwrap();
        let auth = [0x5A; 16];
        let req = b.finish_request(&secret(), &auth).unwrap();
        assert_eq!(&req[4..20], &auth);
        let parsed = crate::radius::UnverifiedRequest::parse(&req).unwrap();
        assert!(parsed.verify(&secret(), true).is_ok());
    }

    #[test]
    fn splits_eap_over_253_byte_attributes() {
        let eap = vec![0xAB; 600];
        let mut b = ReplyBuilder::new(Code::AccessChallenge, 1);
        b.push_eap(&eap).unwrap();
        let reply = b.finish(&secret(), &[0; 16]).unwrap();
        assert_eq!(reply.len(), 38 + 255 + 255 + 96);
        assert_eq!(&reply[38..40], &[79, 255]);
        assert_eq!(&reply[38 + 255 + 255..38 + 255 + 255 + 2], &[79, 96]);
    }

    #[test]
    fn refuses_oversized_values_and_replies() {
        let mut b = ReplyBuilder::new(Code::AccessAccept, 1);
        assert!(matches!(
            b.push(AttrType::Class, &[0; 254]).unwrap_err(),
            EncodeError::ValueTooLong { ty: 25, len: 254 }
        ));
        for _ in 0..17 {
            b.push(AttrType::Class, &[0; 253]).unwrap();
        }
        assert!(matches!(
            b.finish(&secret(), &[0; 16]).unwrap_err(),
            EncodeError::TooLarge(_)
        ));
    }

    #[test]
    fn tagged_vlan_attributes_encode_per_rfc2868() {
        let mut b = ReplyBuilder::new(Code::AccessAccept, 1);
        b.push_tagged_u24(AttrType::TunnelType, 0, 13).unwrap();
        b.push_tagged_text(AttrType::TunnelPrivateGroupId, 0, "100")
            .unwrap();
        let reply = b.finish(&secret(), &[0; 16]).unwrap();
        assert_eq!(&reply[38..44], &[64, 6, 0, 0, 0, 13]);
        assert_eq!(&reply[44..50], &[81, 6, 0, b'1', b'0', b'0']);
    }
}
