//! Replies built in one place: an Access-Accept from the attributes of the
//! [`Decision`](crate::policy::Decision) (by
//! dictionary name, vendor-specific ones included) and the session keys, an Access-Reject
//! with its EAP-Failure.

use crate::config::Client;
use crate::eap::EapPacket;
use crate::policy::ReplyAttribute;
use crate::radius::attr::{MS_MPPE_RECV_KEY, MS_MPPE_SEND_KEY};
use crate::radius::dictionary::Dictionary;
use crate::radius::{crypto, AttrType, Code, EncodeError, ReplyBuilder, Request, SharedSecret};

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

/// What hides `encrypt=1` and `encrypt=2` values in one reply: the client's secret, the
/// request's authenticator, and a random salt base (the top bit set) from which each
/// `encrypt=2` attribute gets a salt of its own, never one the MS-MPPE keys use (those
/// differ from the base in their lowest bit only; RFC 2548 §2.4.2 wants every salt of a
/// reply distinct).
pub struct Hiding<'a> {
    /// The client's shared secret.
    pub secret: &'a SharedSecret,
    /// The Request Authenticator of the request answered.
    pub authenticator: &'a [u8; 16],
    /// Random, top bit set.
    pub salt: u16,
}

impl Hiding<'_> {
    /// The salt of the `i`th `encrypt=2` attribute.
    fn salt(&self, i: u16) -> [u8; 2] {
        ((self.salt ^ ((i.wrapping_add(1) & 0x3FFF) << 1)) | 0x8000).to_be_bytes()
    }

    /// `value` (a leading RFC 2868 tag kept in the clear when `tagged`) hidden as
    /// `encrypt` says.
    fn hide(&self, encrypt: u8, tagged: bool, value: &[u8], i: u16) -> Result<Vec<u8>, String> {
        let (tag, plain) = match value.split_first() {
            Some((t, rest)) if tagged => (Some(*t), rest),
            _ => (None, value),
        };
        let hidden = match encrypt {
            1 => crypto::user_password_encrypt(self.secret, self.authenticator, plain)?,
            2 => {
                if plain.len() > 239 {
                    return Err(format!(
                        "{} bytes: an encrypt=2 value holds at most 239",
                        plain.len()
                    ));
                }
                crypto::mppe_encrypt(self.secret, self.authenticator, self.salt(i), plain)
            }
            other => return Err(format!("encrypt={other} is not written")),
        };
        Ok(tag.into_iter().chain(hidden).collect())
    }
}

/// Appends each attribute, encoded by its dictionary type and hidden when the dictionary
/// says `encrypt=1` or `encrypt=2`.
///
/// # Errors
/// An unknown or unencodable attribute, or one too long.
pub fn push_attributes(
    b: &mut ReplyBuilder,
    attrs: &[ReplyAttribute],
    dictionary: &Dictionary,
    hiding: &Hiding<'_>,
) -> Result<(), ReplyError> {
    let mut hidden = 0u16;
    for a in attrs {
        let (def, mut value) = dictionary
            .encode(&a.name, a.tag, &a.value)
            .map_err(ReplyError::Attribute)?;
        if def.encrypt != 0 {
            value = hiding
                .hide(def.encrypt, def.has_tag, &value, hidden)
                .map_err(|e| ReplyError::Attribute(format!("`{}`: {e}", a.name)))?;
            hidden = hidden.wrapping_add(1);
        }
        if def.vendor == 0 {
            let code = u8::try_from(def.number).map_err(|_| {
                ReplyError::Attribute(format!("`{}` has no one-octet type", a.name))
            })?;
            b.push(AttrType::from_code(code), &value)?;
        } else {
            b.push_vendor_format(
                def.vendor,
                def.number,
                &value,
                dictionary.vendor_format(def.vendor),
            )?;
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
    // RFC 2548 §2.4: salts have the top bit set and differ within the reply.
    let salt: u16 = rand::random::<u16>() | 0x8000;
    let hiding = Hiding {
        secret: &client.secret,
        authenticator: &req.authenticator,
        salt,
    };
    push_attributes(&mut b, attrs, dictionary, &hiding)?;
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
pub(crate) mod tests {
    use super::*;
    use crate::radius::attr::{TUNNEL_MEDIUM_IEEE_802, TUNNEL_TYPE_VLAN};

    const SECRET: &[u8] = b"xyzzy5461";
    /// RFC 2865 §7.1's Access-Request authenticator.
    const RA: [u8; 16] = [
        0x0f, 0x40, 0x3f, 0x94, 0x73, 0x97, 0x80, 0x57, 0xbd, 0x83, 0xd5, 0xcb, 0x98, 0xf4, 0x22,
        0x7a,
    ];

    fn hiding() -> Hiding<'static> {
        static SECRET_KEY: std::sync::LazyLock<SharedSecret> =
            std::sync::LazyLock::new(|| SharedSecret::new(SECRET.to_vec()));
        Hiding {
            secret: &SECRET_KEY,
            authenticator: &RA,
            salt: 0x8a5e,
        }
    }

    /// The attributes of a built reply, `(type, value)` in order, after the
    /// Message-Authenticator.
    fn attrs_of(b: ReplyBuilder) -> Vec<(u8, Vec<u8>)> {
        let bytes = b.finish(&SharedSecret::new(SECRET.to_vec()), &RA).unwrap();
        let mut out = Vec::new();
        let mut rest = &bytes[20..];
        while let [ty, len, ..] = rest {
            let len = usize::from(*len);
            out.push((*ty, rest[2..len].to_vec()));
            rest = &rest[len..];
        }
        out.remove(0);
        out
    }

    #[test]
    fn encrypt_1_matches_the_rfc_2865_example() {
        // RFC 2865 §7.1: "arctangent" with secret "xyzzy5461" and that authenticator.
        let dict = Dictionary::builtin().unwrap();
        let mut b = ReplyBuilder::new(Code::AccessAccept, 0);
        push_attributes(
            &mut b,
            &[attr("User-Password", None, "arctangent")],
            &dict,
            &hiding(),
        )
        .unwrap();
        assert_eq!(
            attrs_of(b),
            [(
                2,
                vec![
                    0x0d, 0xbe, 0x70, 0x8d, 0x93, 0xd4, 0x13, 0xce, 0x31, 0x96, 0xe4, 0x3f, 0x78,
                    0x2a, 0x0a, 0xee
                ]
            )]
        );
    }

    #[test]
    fn encrypt_2_is_the_rfc_2868_construction_with_the_tag_in_the_clear() {
        let dict = Dictionary::builtin().unwrap();
        let mut b = ReplyBuilder::new(Code::AccessAccept, 0);
        let attrs = [
            attr("Tunnel-Password", Some(1), "vlan-secret"),
            attr("Tunnel-Password", Some(2), "other"),
        ];
        push_attributes(&mut b, &attrs, &dict, &hiding()).unwrap();
        let got = attrs_of(b);
        let mut salts = Vec::new();
        for ((ty, v), (tag, plain)) in got.iter().zip([(1u8, "vlan-secret"), (2, "other")]) {
            assert_eq!(*ty, 69);
            assert_eq!(v[0], tag, "the tag stays in the clear");
            let salt = [v[1], v[2]];
            assert!(salt[0] & 0x80 != 0, "salt has its top bit set");
            salts.push(salt);
            // Decrypted here with MD5 directly (RFC 2868 §3.5): b1 = MD5(S + R + A).
            use md5::{Digest, Md5};
            let c = &v[3..];
            assert_eq!(c.len(), 16);
            let mut h = Md5::new();
            h.update(SECRET);
            h.update(RA);
            h.update(salt);
            let p: Vec<u8> = c.iter().zip(h.finalize()).map(|(c, k)| c ^ k).collect();
            assert_eq!(usize::from(p[0]), plain.len());
            assert_eq!(&p[1..=plain.len()], plain.as_bytes());
            assert!(p[plain.len() + 1..].iter().all(|&z| z == 0), "zero padding");
        }
        assert_ne!(salts[0], salts[1], "salts differ within a reply");
        // And none equals the MS-MPPE keys' salts (base with its lowest bit cleared or set).
        for s in salts {
            let s = u16::from_be_bytes(s);
            assert!(s != (0x8a5e & !1) && s != (0x8a5e | 1));
        }
    }

    #[test]
    fn vendor_attributes_follow_their_vendors_format_and_small_integer_types() {
        let text = "VENDOR Wide 64000 format=2,2\nVENDOR Bare 64001 format=4,0\n\
                    BEGIN-VENDOR Wide\nATTRIBUTE Wide-Role 300 string\n\
                    ATTRIBUTE Wide-Level 2 byte\nATTRIBUTE Wide-Port 3 short\nEND-VENDOR Wide\n\
                    BEGIN-VENDOR Bare\nATTRIBUTE Bare-Flag 70000 integer\nEND-VENDOR Bare\n";
        let dict = Dictionary::parse("d", &mut |_| Ok(text.to_owned())).unwrap();
        let mut b = ReplyBuilder::new(Code::AccessAccept, 0);
        push_attributes(
            &mut b,
            &[
                attr("Wide-Role", None, "staff"),
                attr("Wide-Level", None, "7"),
                attr("Wide-Port", None, "8080"),
                attr("Bare-Flag", None, "1"),
            ],
            &dict,
            &hiding(),
        )
        .unwrap();
        let wide = 64000u32.to_be_bytes();
        let bare = 64001u32.to_be_bytes();
        let vsa = |vendor: [u8; 4], rest: &[u8]| (26u8, [&vendor[..], rest].concat());
        assert_eq!(
            attrs_of(b),
            [
                vsa(wide, &[0x01, 0x2c, 0, 9, b's', b't', b'a', b'f', b'f']),
                vsa(wide, &[0, 2, 0, 5, 7]),
                vsa(wide, &[0, 3, 0, 6, 0x1f, 0x90]),
                vsa(bare, &[0, 1, 0x11, 0x70, 0, 0, 0, 1]),
            ]
        );
        for (a, why) in [
            (attr("Wide-Level", None, "256"), "a byte"),
            (attr("Wide-Port", None, "65536"), "a short"),
        ] {
            let e = refused(a, &dict);
            assert!(e.contains(why), "{e}");
        }
    }

    /// Why `a` cannot go in a reply.
    fn refused(a: ReplyAttribute, dict: &Dictionary) -> String {
        push_attributes(
            &mut ReplyBuilder::new(Code::AccessAccept, 1),
            &[a],
            dict,
            &hiding(),
        )
        .unwrap_err()
        .to_string()
    }

    /// A reply attribute as a policy writes it.
    pub(crate) fn attr(name: &str, tag: Option<u8>, value: &str) -> ReplyAttribute {
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
            &hiding(),
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
            &hiding(),
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
            (
                attr(
                    "Message-Authenticator",
                    None,
                    "0x00000000000000000000000000000000",
                ),
                "written by the server",
            ),
            (attr("EAP-Message", None, "0x0301"), "written by the server"),
            (attr("User-Password", None, &"x".repeat(129)), "at most 128"),
            (
                attr("Tunnel-Password", Some(0), &"x".repeat(240)),
                "at most 239",
            ),
        ] {
            let e = refused(a, &dict);
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn each_shipped_vendor_attribute_goes_out_as_an_rfc_2865_vendor_specific() {
        let dict = Dictionary::builtin().unwrap();
        // (attribute, value, vendor id, vendor type, value bytes): RFC 2865 §5.26, written
        // out by hand from the vendors' numbers.
        let cases: [(&str, &str, u32, u8, &[u8]); 8] = [
            ("Aruba-User-Role", "staff", 14823, 1, b"staff"),
            ("Aruba-User-Vlan", "20", 14823, 2, &[0, 0, 0, 20]),
            (
                "Cisco-AVPair",
                "url-redirect-acl=QUARANTINE",
                9,
                1,
                b"url-redirect-acl=QUARANTINE",
            ),
            (
                "Airespace-Interface-Name",
                "staff-if",
                14179,
                5,
                b"staff-if",
            ),
            ("Airespace-QOS-Level", "Platinum", 14179, 2, &[0, 0, 0, 2]),
            (
                "Ruckus-User-Groups",
                "staff,laptops",
                25053,
                1,
                b"staff,laptops",
            ),
            (
                "Foundry-Privilege-Level",
                "Read-Only",
                1991,
                1,
                &[0, 0, 0, 5],
            ),
            (
                "Juniper-Switching-Filter",
                "match all action allow",
                2636,
                48,
                b"match all action allow",
            ),
        ];
        for (name, value, vendor, ty, bytes) in cases {
            let mut b = ReplyBuilder::new(Code::AccessAccept, 1);
            push_attributes(&mut b, &[attr(name, None, value)], &dict, &hiding()).unwrap();
            let packet = b
                .finish_request(&SharedSecret::new(b"s".to_vec()), &[0; 16])
                .unwrap();
            let mut want = vec![26, u8::try_from(bytes.len() + 8).unwrap()];
            want.extend(vendor.to_be_bytes());
            want.extend([ty, u8::try_from(bytes.len() + 2).unwrap()]);
            want.extend(bytes);
            // After the header (20) and the Message-Authenticator (18).
            assert_eq!(&packet[38..], want.as_slice(), "{name}");
        }
    }
}
