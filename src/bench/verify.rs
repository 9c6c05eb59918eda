//! Checks every reply the load generator receives: Response Authenticator,
//! Message-Authenticator, and for an Access-Accept the EAP-Success, both MS-MPPE keys
//! (decrypted and equal to the device's own MSK halves) and the VLAN attributes.

use crate::radius::attr::{
    AttrType, MS_MPPE_RECV_KEY, MS_MPPE_SEND_KEY, TUNNEL_MEDIUM_IEEE_802, TUNNEL_TYPE_VLAN,
    VENDOR_MICROSOFT,
};
use crate::radius::crypto::{self, SharedSecret};
use crate::radius::packet::{parse_attributes, Attribute};
use crate::radius::reader::Reader;

/// Why a reply does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Too short, bad Length or attributes.
    #[error("malformed reply")]
    Malformed,
    /// Not for our request.
    #[error("identifier mismatch")]
    WrongIdentifier,
    /// Response Authenticator does not verify.
    #[error("bad Response Authenticator")]
    BadResponseAuthenticator,
    /// No Message-Authenticator.
    #[error("no Message-Authenticator")]
    MissingMessageAuthenticator,
    /// Message-Authenticator does not verify.
    #[error("bad Message-Authenticator")]
    BadMessageAuthenticator,
    /// No EAP-Success in an Accept.
    #[error("no EAP-Success")]
    NoEapSuccess,
    /// An MS-MPPE key is missing or undecryptable.
    #[error("MS-MPPE key missing")]
    MissingMppeKey,
    /// An MS-MPPE key differs from the device's MSK.
    #[error("MS-MPPE key mismatch")]
    MppeMismatch,
    /// VLAN attributes absent or different.
    #[error("VLAN mismatch")]
    VlanMismatch,
}

impl ReplyError {
    /// Stable label for the error table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "reply_malformed",
            Self::WrongIdentifier => "reply_wrong_identifier",
            Self::BadResponseAuthenticator => "bad_response_authenticator",
            Self::MissingMessageAuthenticator => "missing_message_authenticator",
            Self::BadMessageAuthenticator => "bad_message_authenticator",
            Self::NoEapSuccess => "no_eap_success",
            Self::MissingMppeKey => "mppe_key_missing",
            Self::MppeMismatch => "mppe_key_mismatch",
            Self::VlanMismatch => "vlan_mismatch",
        }
    }
}

/// An authenticated reply.
#[derive(Debug)]
pub struct Reply<'a> {
    /// Packet code.
    pub code: u8,
    /// Attributes in order.
    pub attributes: Vec<Attribute<'a>>,
}

impl<'a> Reply<'a> {
    /// First value of a type.
    pub fn first(&self, ty: AttrType) -> Option<&'a [u8]> {
        self.attributes.iter().find(|a| a.ty == ty).map(|a| a.value)
    }

    /// EAP-Message attributes concatenated.
    pub fn eap(&self) -> Vec<u8> {
        self.attributes
            .iter()
            .filter(|a| a.ty == AttrType::EapMessage)
            .flat_map(|a| a.value.iter().copied())
            .collect()
    }
}

/// Authenticates a reply to `request` (the bytes we sent).
///
/// # Errors
/// Any failed check.
pub fn verify_reply<'a>(
    reply: &'a [u8],
    request: &[u8],
    secret: &SharedSecret,
) -> Result<Reply<'a>, ReplyError> {
    let mut r = Reader::new(reply);
    let (Some(code), Some(id), Some(len)) = (r.u8(), r.u8(), r.u16()) else {
        return Err(ReplyError::Malformed);
    };
    let packet = reply
        .get(..usize::from(len))
        .filter(|p| p.len() >= 20)
        .ok_or(ReplyError::Malformed)?;
    if request.get(1) != Some(&id) {
        return Err(ReplyError::WrongIdentifier);
    }
    let req_auth = request.get(4..20).ok_or(ReplyError::Malformed)?;
    let attributes = parse_attributes(packet.get(20..).unwrap_or_default())
        .map_err(|_| ReplyError::Malformed)?;
    let mut check = packet.to_vec();
    check
        .get_mut(4..20)
        .ok_or(ReplyError::Malformed)?
        .copy_from_slice(req_auth);
    let expected = crypto::response_authenticator(secret, &check);
    if !crypto::ct_eq(packet.get(4..20).unwrap_or_default(), &expected) {
        return Err(ReplyError::BadResponseAuthenticator);
    }
    let mut at = 20;
    let mut ma_at = None;
    for a in &attributes {
        if a.ty == AttrType::MessageAuthenticator && a.value.len() == 16 {
            ma_at = Some(at + 2);
        }
        at += 2 + a.value.len();
    }
    let ma_at = ma_at.ok_or(ReplyError::MissingMessageAuthenticator)?;
    let received = packet
        .get(ma_at..ma_at + 16)
        .ok_or(ReplyError::Malformed)?
        .to_vec();
    check
        .get_mut(ma_at..ma_at + 16)
        .ok_or(ReplyError::Malformed)?
        .fill(0);
    if !crypto::ct_eq(&received, &crypto::message_authenticator(secret, &check)) {
        return Err(ReplyError::BadMessageAuthenticator);
    }
    Ok(Reply { code, attributes })
}

/// Checks an authenticated Access-Accept against the device's MSK and the expected VLAN.
///
/// # Errors
/// Missing EAP-Success, wrong or missing keys, wrong VLAN.
pub fn check_accept(
    reply: &Reply<'_>,
    request_authenticator: &[u8; 16],
    secret: &SharedSecret,
    msk: &[u8; 64],
    expect_vlan: Option<&str>,
) -> Result<(), ReplyError> {
    if reply.eap().first() != Some(&0x03) {
        return Err(ReplyError::NoEapSuccess);
    }
    let (recv_half, send_half) = msk.split_at(32);
    for (vtype, half) in [(MS_MPPE_RECV_KEY, recv_half), (MS_MPPE_SEND_KEY, send_half)] {
        let value = reply
            .attributes
            .iter()
            .filter(|a| a.ty == AttrType::VendorSpecific)
            .find_map(|a| {
                let mut r = Reader::new(a.value);
                (r.u32()? == VENDOR_MICROSOFT && r.u8()? == vtype)
                    .then(|| r.u8().and_then(|l| r.take(usize::from(l).checked_sub(2)?)))?
            })
            .ok_or(ReplyError::MissingMppeKey)?;
        let key = crypto::mppe_decrypt(secret, request_authenticator, value)
            .ok_or(ReplyError::MissingMppeKey)?;
        if !crypto::ct_eq(&key, half) {
            return Err(ReplyError::MppeMismatch);
        }
    }
    if let Some(vlan) = expect_vlan {
        let tagged_int = |t: AttrType| {
            reply
                .first(t)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(|v| u32::from_be_bytes(v) & 0x00FF_FFFF)
        };
        let group = reply
            .first(AttrType::TunnelPrivateGroupId)
            .map(|v| match v.split_first() {
                Some((t, rest)) if *t <= 0x1F => rest,
                _ => v,
            });
        if tagged_int(AttrType::TunnelType) != Some(TUNNEL_TYPE_VLAN)
            || tagged_int(AttrType::TunnelMediumType) != Some(TUNNEL_MEDIUM_IEEE_802)
            || group != Some(vlan.as_bytes())
        {
            return Err(ReplyError::VlanMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::{Code, ReplyBuilder};

    fn secret() -> SharedSecret {
        SharedSecret::new(b"bench".to_vec())
    }

    fn request() -> Vec<u8> {
        let b = ReplyBuilder::new(Code::AccessRequest, 42);
        b.finish_request(&secret(), &[0x11; 16]).unwrap()
    }

    fn accept(msk: &[u8; 64], vlan: &str, tamper_send_key: bool) -> Vec<u8> {
        let mut b = ReplyBuilder::new(Code::AccessAccept, 42);
        b.push_tagged_u24(AttrType::TunnelType, 0, TUNNEL_TYPE_VLAN)
            .unwrap();
        b.push_tagged_u24(AttrType::TunnelMediumType, 0, TUNNEL_MEDIUM_IEEE_802)
            .unwrap();
        b.push_tagged_text(AttrType::TunnelPrivateGroupId, 0, vlan)
            .unwrap();
        let recv = crypto::mppe_encrypt(&secret(), &[0x11; 16], [0x80, 0x01], &msk[..32]);
        let mut send_key = msk[32..].to_vec();
        if tamper_send_key {
            send_key[0] ^= 1;
        }
        let send = crypto::mppe_encrypt(&secret(), &[0x11; 16], [0x80, 0x02], &send_key);
        b.push_microsoft(MS_MPPE_RECV_KEY, &recv).unwrap();
        b.push_microsoft(MS_MPPE_SEND_KEY, &send).unwrap();
        b.push_eap(&[3, 9, 0, 4]).unwrap();
        b.finish(&secret(), &[0x11; 16]).unwrap()
    }

    fn msk() -> [u8; 64] {
        core::array::from_fn(|i| u8::try_from(i).unwrap())
    }

    #[test]
    fn good_accept_passes_every_check() {
        let reply = accept(&msk(), "100", false);
        let r = verify_reply(&reply, &request(), &secret()).unwrap();
        assert_eq!(r.code, 2);
        check_accept(&r, &[0x11; 16], &secret(), &msk(), Some("100")).unwrap();
    }

    #[test]
    fn wrong_mppe_key_is_an_error() {
        let reply = accept(&msk(), "100", true);
        let r = verify_reply(&reply, &request(), &secret()).unwrap();
        assert_eq!(
            check_accept(&r, &[0x11; 16], &secret(), &msk(), Some("100")).unwrap_err(),
            ReplyError::MppeMismatch
        );
    }

    #[test]
    fn wrong_vlan_is_an_error() {
        let reply = accept(&msk(), "200", false);
        let r = verify_reply(&reply, &request(), &secret()).unwrap();
        assert_eq!(
            check_accept(&r, &[0x11; 16], &secret(), &msk(), Some("100")).unwrap_err(),
            ReplyError::VlanMismatch
        );
    }

    #[test]
    fn tampered_or_foreign_replies_are_errors() {
        let mut reply = accept(&msk(), "100", false);
        reply[4] ^= 1;
        assert_eq!(
            verify_reply(&reply, &request(), &secret()).unwrap_err(),
            ReplyError::BadResponseAuthenticator
        );
        let reply = accept(&msk(), "100", false);
        let other = SharedSecret::new(b"other".to_vec());
        assert_eq!(
            verify_reply(&reply, &request(), &other).unwrap_err(),
            ReplyError::BadResponseAuthenticator
        );
        let mut wrong_id = request();
        wrong_id[1] = 7;
        assert_eq!(
            verify_reply(&reply, &wrong_id, &secret()).unwrap_err(),
            ReplyError::WrongIdentifier
        );
        assert_eq!(
            verify_reply(&reply[..10], &request(), &secret()).unwrap_err(),
            ReplyError::Malformed
        );
    }

    #[test]
    fn bad_message_authenticator_is_an_error() {
        // Recompute the Response Authenticator after corrupting the MA so only the MA fails.
        let mut reply = accept(&msk(), "100", false);
        reply[25] ^= 0xFF;
        let mut check = reply.clone();
        check[4..20].copy_from_slice(&[0x11; 16]);
        let ra = crypto::response_authenticator(&secret(), &check);
        reply[4..20].copy_from_slice(&ra);
        assert_eq!(
            verify_reply(&reply, &request(), &secret()).unwrap_err(),
            ReplyError::BadMessageAuthenticator
        );
    }
}
