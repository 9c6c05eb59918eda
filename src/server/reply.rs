//! Replies built in one place: an Access-Accept from the attributes of the
//! [`Decision`](crate::policy::Decision) (by
//! dictionary name, vendor-specific ones included) and the session keys, an Access-Reject
//! with its EAP-Failure.

use crate::config::Client;
use crate::eap::EapPacket;
use crate::policy::ReplyAttribute;
use crate::radius::attr::{MS_MPPE_RECV_KEY, MS_MPPE_SEND_KEY};
use crate::radius::dictionary::Dictionary;
use crate::radius::{crypto, AttrType, Code, EncodeError, ReplyBuilder, Request};

/// Why an Accept could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// An attribute the decision named could not be encoded.
    #[error("reply attribute: {0}")]
    Attribute(String),
    /// The packet could not hold it.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// An Access-Reject carrying `failure`.
pub fn reject(req: &Request<'_>, failure: &EapPacket) -> ReplyBuilder {
    let mut b = ReplyBuilder::new(Code::AccessReject, req.identifier);
    // Four bytes always fit.
    let _ = b.push_eap(&failure.to_bytes());
    b
}

/// Appends each attribute, encoded by its dictionary type.
///
/// # Errors
/// An unknown or unencodable attribute, or one too long.
pub fn push_attributes(
    b: &mut ReplyBuilder,
    attrs: &[ReplyAttribute],
    dictionary: &Dictionary,
) -> Result<(), ReplyError> {
    for a in attrs {
        let (def, value) = dictionary
            .encode(&a.name, a.tag, &a.value)
            .map_err(ReplyError::Attribute)?;
        if def.vendor == 0 {
            let code = u8::try_from(def.number).map_err(|_| {
                ReplyError::Attribute(format!("`{}` has no one-octet type", a.name))
            })?;
            b.push(AttrType::from_code(code), &value)?;
        } else {
            let ty = u8::try_from(def.number).map_err(|_| {
                ReplyError::Attribute(format!("`{}` has no one-octet vendor type", a.name))
            })?;
            b.push_vendor(def.vendor, ty, &value)?;
        }
    }
    Ok(())
}

/// An Access-Accept: User-Name (`user`, when not empty), the decision's attributes, the
/// MS-MPPE keys from `msk` (RFC 2548, encrypted with the client's secret) and EAP-Success.
///
/// # Errors
/// An attribute that cannot be encoded, or a packet too long.
pub fn accept(
    client: &Client,
    req: &Request<'_>,
    user: &str,
    attrs: &[ReplyAttribute],
    dictionary: &Dictionary,
    success: &EapPacket,
    msk: &[u8],
) -> Result<ReplyBuilder, ReplyError> {
    let mut b = ReplyBuilder::new(Code::AccessAccept, req.identifier);
    if !user.is_empty() {
        b.push(AttrType::UserName, user.as_bytes())?;
    }
    push_attributes(&mut b, attrs, dictionary)?;
    // RFC 2548 §2.4: salts have the top bit set and differ within the reply.
    let salt: u16 = rand::random::<u16>() | 0x8000;
    let recv_salt = (salt & !1).to_be_bytes();
    let send_salt = (salt | 1).to_be_bytes();
    let (recv, send) = msk.split_at(32.min(msk.len()));
    let recv = crypto::mppe_encrypt(&client.secret, &req.authenticator, recv_salt, recv);
    let send = crypto::mppe_encrypt(
        &client.secret,
        &req.authenticator,
        send_salt,
        send.get(..32).unwrap_or(send),
    );
    b.push_microsoft(MS_MPPE_RECV_KEY, &recv)?;
    b.push_microsoft(MS_MPPE_SEND_KEY, &send)?;
    b.push_eap(&success.to_bytes())?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::attr::{TUNNEL_MEDIUM_IEEE_802, TUNNEL_TYPE_VLAN};

    fn attr(name: &str, tag: Option<u8>, value: &str) -> ReplyAttribute {
        ReplyAttribute {
            name: name.into(),
            tag,
            value: value.into(),
        }
    }

    #[test]
    fn vlan_attributes_by_name_encode_as_rfc_3580_tagged_tunnel_attributes() {
        let dict = Dictionary::builtin().unwrap();
        let mut by_name = ReplyBuilder::new(Code::AccessAccept, 1);
        push_attributes(
            &mut by_name,
            &[
                attr("Tunnel-Type", Some(0), "VLAN"),
                attr("Tunnel-Medium-Type", Some(0), "IEEE-802"),
                attr("Tunnel-Private-Group-Id", Some(0), "100"),
            ],
            &dict,
        )
        .unwrap();
        let mut by_hand = ReplyBuilder::new(Code::AccessAccept, 1);
        by_hand
            .push_tagged_u24(AttrType::TunnelType, 0, TUNNEL_TYPE_VLAN)
            .unwrap()
            .push_tagged_u24(AttrType::TunnelMediumType, 0, TUNNEL_MEDIUM_IEEE_802)
            .unwrap()
            .push_tagged_text(AttrType::TunnelPrivateGroupId, 0, "100")
            .unwrap();
        assert_eq!(format!("{by_name:?}"), format!("{by_hand:?}"));
    }

    #[test]
    fn other_types_and_vendor_attributes_encode_by_their_dictionary_entry() {
        let dict = Dictionary::builtin().unwrap();
        let mut b = ReplyBuilder::new(Code::AccessAccept, 1);
        push_attributes(
            &mut b,
            &[
                attr("Session-Timeout", None, "3600"),
                attr("Framed-IP-Address", None, "192.0.2.9"),
            ],
            &dict,
        )
        .unwrap();
        let text = format!("{b:?}");
        // Session-Timeout (27) = 3600, Framed-IP-Address (8) = 192.0.2.9.
        assert!(text.contains("27, 6, 0, 0, 14, 16"), "{text}");
        assert!(text.contains("8, 6, 192, 0, 2, 9"), "{text}");
        for (a, why) in [
            (attr("No-Such-Attribute", None, "1"), "no attribute"),
            (attr("Session-Timeout", None, "soon"), "not a number"),
            (attr("Tunnel-Type", Some(40), "VLAN"), "tag 40"),
            (attr("MS-MPPE-Send-Key", None, "0x00"), "encrypted"),
            (
                attr(
                    "Message-Authenticator",
                    None,
                    "0x00000000000000000000000000000000",
                ),
                "written by the server",
            ),
            (attr("EAP-Message", None, "0x0301"), "written by the server"),
        ] {
            let e = push_attributes(&mut ReplyBuilder::new(Code::AccessAccept, 1), &[a], &dict)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
