//! One-line packet summaries for `--debug` (what admins read in `radiusd -X`), named by the
//! dictionary. Text, integers and addresses are shown; octets only by length; encrypted
//! attributes, EAP payloads and Message-Authenticator never.

use std::fmt::Write;

use super::attr::AttrType;
use super::dictionary::{AttrDef, DataType, Dictionary};
use super::packet::Attribute;
use super::reader::Reader;

/// How one attribute is shown.
struct Shown {
    /// Dictionary name, or `Attr-N` / `Vendor-V-Attr-N`.
    name: String,
    /// RFC 2868 tag, when the attribute has one.
    tag: Option<u8>,
    value: Value,
}

enum Value {
    /// Printable text, shown quoted in summaries.
    Text(String),
    /// A number, a VALUE name or an address.
    Plain(String),
    /// Not shown: secret, payload, octets, or unknown; its length.
    Hidden(usize),
}

fn show(a: &Attribute<'_>, dict: &Dictionary) -> Shown {
    let hidden = |name: String| Shown {
        name,
        tag: None,
        value: Value::Hidden(a.value.len()),
    };
    let code = a.ty.code();
    if a.ty == AttrType::VendorSpecific {
        return hidden(vendor_name(a.value, dict));
    }
    let Some(def) = dict.attribute(0, u32::from(code)) else {
        return hidden(format!("Attr-{code}"));
    };
    let mut value = a.value;
    let mut tag = None;
    if def.has_tag {
        if let Some((&t, rest)) = value.split_first() {
            if t <= 0x1F && (def.data_type != DataType::Integer || value.len() == 4) {
                tag = Some(t);
                value = rest;
                if def.data_type == DataType::Integer {
                    value = a.value;
                }
            }
        }
    }
    // User-Password, CHAP-Password and Tunnel-Password are secret whatever a dictionary
    // says of them.
    let secret = def.encrypt != 0
        || matches!(code, 2 | 3 | 69)
        || matches!(
            a.ty,
            AttrType::EapMessage | AttrType::MessageAuthenticator | AttrType::State
        );
    let shown = match def.data_type {
        _ if secret => Value::Hidden(a.value.len()),
        DataType::String if value.iter().all(|b| (0x20..0x7F).contains(b)) => {
            Value::Text(String::from_utf8_lossy(value).into_owned())
        }
        DataType::Integer if value.len() == 4 => {
            let mut r = Reader::new(value);
            let mut n = r.u32().unwrap_or_default();
            if def.has_tag {
                n &= 0x00FF_FFFF;
            }
            Value::Plain(
                dict.value_name(0, def.number, n)
                    .map_or_else(|| n.to_string(), str::to_owned),
            )
        }
        DataType::Byte | DataType::Short if matches!(value.len(), 1 | 2) => {
            let n = value.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b));
            Value::Plain(
                dict.value_name(0, def.number, n)
                    .map_or_else(|| n.to_string(), str::to_owned),
            )
        }
        DataType::IpAddr => match value {
            [a, b, c, d] => Value::Plain(format!("{a}.{b}.{c}.{d}")),
            _ => Value::Hidden(value.len()),
        },
        DataType::Ipv6Addr => match <[u8; 16]>::try_from(value) {
            Ok(v6) => Value::Plain(std::net::Ipv6Addr::from(v6).to_string()),
            Err(_) => Value::Hidden(value.len()),
        },
        _ => Value::Hidden(value.len()),
    };
    Shown {
        name: def.name.clone(),
        tag,
        value: shown,
    }
}

/// Summarises attributes, e.g. `User-Name="dev" Framed-MTU=200 EAP-Message(len=6)`.
pub fn summarize(attrs: &[Attribute<'_>], dict: &Dictionary) -> String {
    let mut out = String::new();
    for a in attrs {
        if !out.is_empty() {
            out.push(' ');
        }
        let s = show(a, dict);
        let _ = write!(out, "{}", s.name);
        if let Some(t) = s.tag {
            let _ = write!(out, ":{t}");
        }
        let _ = match s.value {
            Value::Text(t) => write!(out, "=\"{t}\""),
            Value::Plain(p) => write!(out, "={p}"),
            Value::Hidden(len) => write!(out, "(len={len})"),
        };
    }
    out
}

/// Every value a policy may match on, as `(name, value)` in packet order: text attributes
/// as sent (any UTF-8), numbers both as their VALUE name and as digits, addresses; vendor
/// attributes inside Vendor-Specific by their dictionary names, in their vendor's layout.
/// Secrets, payloads and octets never ([`is_fact`]); empty values left out. At most
/// [`MAX_NAMED`] of them, so a conversation keeps a bounded list, and whether some were
/// left out (the packet held more): a policy reading attributes cannot know what it did
/// not see. The work is bounded by the packet (4096 octets).
pub fn request_facts(attrs: &[Attribute<'_>], dict: &Dictionary) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    for a in attrs.iter().filter(|a| !a.value.is_empty()) {
        if a.ty != AttrType::VendorSpecific {
            if let Some(def) = dict.attribute(0, u32::from(a.ty.code())) {
                fact_texts(def, a.value, dict, &mut out);
            }
            continue;
        }
        // RFC 2865 §5.26: the vendor, then its attributes in its type/length layout.
        let mut r = Reader::new(a.value);
        let Some(vendor) = r.u32() else { continue };
        let (type_octets, length_octets) = dict.vendor_format(vendor);
        let number = |b: &[u8]| b.iter().fold(0u32, |n, &x| (n << 8) | u32::from(x));
        while !r.is_empty() {
            let Some(vtype) = r.take(usize::from(type_octets)).map(number) else {
                break;
            };
            let value = if length_octets == 0 {
                r.take(r.rest().len())
            } else {
                let header = usize::from(type_octets) + usize::from(length_octets);
                r.take(usize::from(length_octets))
                    .map(number)
                    .and_then(|len| usize::try_from(len).ok()?.checked_sub(header))
                    .and_then(|len| r.take(len))
            };
            let Some(value) = value else { break };
            if let Some(def) = dict.attribute(vendor, vtype).filter(|_| !value.is_empty()) {
                fact_texts(def, value, dict, &mut out);
            }
        }
    }
    let incomplete = out.len() > MAX_NAMED;
    out.truncate(MAX_NAMED);
    (out, incomplete)
}

/// Whether an attribute's values may be policy facts: never a secret (anything the
/// dictionary hides, User-/CHAP-/Tunnel-Password whatever it says), a payload (EAP-Message,
/// State, Message-Authenticator, raw Vendor-Specific) or bytes.
pub fn is_fact(def: &AttrDef) -> bool {
    let secret_or_payload = match def.vendor {
        0 => matches!(def.number, 2 | 3 | 24 | 26 | 69 | 79 | 80),
        311 => matches!(def.number, 16 | 17),
        _ => false,
    };
    def.encrypt == 0
        && !secret_or_payload
        && !matches!(
            def.data_type,
            DataType::Octets | DataType::Ipv6Prefix | DataType::Tlv
        )
}

fn fact_texts(def: &AttrDef, value: &[u8], dict: &Dictionary, out: &mut Vec<(String, String)>) {
    // A TLV's value is attributes (type, length counting both, value), named by the
    // dictionary's `P.C` entries; one level, as the dictionary defines them.
    if def.data_type == DataType::Tlv && def.parent.is_none() {
        let mut r = Reader::new(value);
        while let (Some(ty), Some(len)) = (r.u8(), r.u8()) {
            let Some(inner) = usize::from(len).checked_sub(2).and_then(|n| r.take(n)) else {
                break;
            };
            let child = dict.tlv_child(def.vendor, def.number, u32::from(ty));
            if let Some(child) = child.filter(|_| !inner.is_empty()) {
                fact_texts(child, inner, dict, out);
            }
        }
        return;
    }
    if !is_fact(def) {
        return;
    }
    let mut value = value;
    let mut mask = u32::MAX;
    if def.has_tag {
        match (def.data_type, value.split_first()) {
            // A tagged integer keeps its tag in the top octet.
            (DataType::Integer, _) => mask = 0x00FF_FFFF,
            (_, Some((&t, rest))) if t <= 0x1F => value = rest,
            _ => {}
        }
    }
    let mut push = |v: String| out.push((def.name.clone(), v));
    match def.data_type {
        DataType::String => push(String::from_utf8_lossy(value).into_owned()),
        DataType::Integer | DataType::Date | DataType::Byte | DataType::Short => {
            let width = match def.data_type {
                DataType::Byte => 1,
                DataType::Short => 2,
                _ => 4,
            };
            if value.len() == width {
                let n = value.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) & mask;
                if let Some(name) = dict.value_name_of(def, n) {
                    push(name.to_owned());
                }
                push(n.to_string());
            }
        }
        DataType::IpAddr => {
            if let Ok(a) = <[u8; 4]>::try_from(value) {
                push(std::net::Ipv4Addr::from(a).to_string());
            }
        }
        DataType::Ipv6Addr => {
            if let Ok(a) = <[u8; 16]>::try_from(value) {
                push(std::net::Ipv6Addr::from(a).to_string());
            }
        }
        DataType::Octets | DataType::Ipv6Prefix | DataType::Tlv => {}
    }
}

/// Most attribute values [`request_facts`] keeps from one packet.
pub const MAX_NAMED: usize = 64;

/// A vendor attribute's name; vendor values are not shown: several carry keys or
/// passwords.
fn vendor_name(value: &[u8], dict: &Dictionary) -> String {
    let mut r = Reader::new(value);
    let Some(vendor) = r.u32() else {
        return "Vendor-Specific".into();
    };
    let (type_octets, _) = dict.vendor_format(vendor);
    let Some(vtype) = r
        .take(usize::from(type_octets))
        .map(|b| b.iter().fold(0u32, |n, &x| (n << 8) | u32::from(x)))
    else {
        return "Vendor-Specific".into();
    };
    dict.attribute(vendor, vtype).map_or_else(
        || format!("Vendor-{vendor}-Attr-{vtype}"),
        |def| def.name.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_hides_payloads() {
        let d = Dictionary::builtin().unwrap();
        let mut ms = 311u32.to_be_bytes().to_vec();
        ms.extend([16, 4, 0xAA, 0xBB]);
        let attrs = [
            Attribute {
                ty: AttrType::UserName,
                value: b"dev",
            },
            Attribute {
                ty: AttrType::FramedMtu,
                value: &[0, 0, 0, 200],
            },
            Attribute {
                ty: AttrType::NasIpAddress,
                value: &[192, 0, 2, 1],
            },
            Attribute {
                ty: AttrType::TunnelType,
                value: &[0, 0, 0, 13],
            },
            Attribute {
                ty: AttrType::TunnelPrivateGroupId,
                value: &[0, b'1', b'0'],
            },
            Attribute {
                ty: AttrType::EapMessage,
                value: &[2, 1, 0, 6, 13, 0],
            },
            Attribute {
                ty: AttrType::VendorSpecific,
                value: &ms,
            },
            Attribute {
                ty: AttrType::Other(0xF0),
                value: &[1, 2],
            },
        ];
        assert_eq!(
            summarize(&attrs, &d),
            "User-Name=\"dev\" Framed-MTU=200 NAS-IP-Address=192.0.2.1 Tunnel-Type:0=VLAN \
             Tunnel-Private-Group-Id:0=\"10\" EAP-Message(len=6) MS-MPPE-Send-Key(len=8) \
             Attr-240(len=2)"
        );
    }

    #[test]
    fn request_facts_are_bounded_and_never_carry_passwords() {
        // A dictionary that forgot encrypt=1 on User-Password.
        let mut files = |name: &str| match name {
            "d" => Ok(
                "ATTRIBUTE User-Password 2 string\nATTRIBUTE NAS-Identifier 32 string\n".to_owned(),
            ),
            _ => Err("no".to_owned()),
        };
        let d = Dictionary::parse("d", &mut files).unwrap();
        let mut attrs = vec![Attribute {
            ty: AttrType::Other(2),
            value: b"printable-secret",
        }];
        let empty: &[u8] = b"";
        let nas: &[u8] = b"ap";
        attrs.extend((0..500).map(|_| Attribute {
            ty: AttrType::NasIdentifier,
            value: empty,
        }));
        attrs.extend((0..500).map(|_| Attribute {
            ty: AttrType::NasIdentifier,
            value: nas,
        }));
        let v = request_facts(&attrs, &d).0;
        assert_eq!(v.len(), MAX_NAMED);
        assert!(v
            .iter()
            .all(|(n, value)| n == "NAS-Identifier" && value == "ap"));
    }

    #[test]
    fn attributes_nested_in_a_tlv_are_facts_by_their_own_names() {
        let mut files = |name: &str| match name {
            "d" => Ok("VENDOR V 99\nBEGIN-VENDOR V\nATTRIBUTE V-Caps 1 tlv\n\
                       ATTRIBUTE V-Release 1.1 string\nATTRIBUTE V-Level 1.2 integer\n\
                       VALUE V-Level High 7\nEND-VENDOR V\n"
                .to_owned()),
            _ => Err("no".to_owned()),
        };
        let d = Dictionary::parse("d", &mut files).unwrap();
        // Vendor-Specific: vendor 99, V-Caps (1) holding V-Release "2.1" and V-Level 7.
        let mut v = 99u32.to_be_bytes().to_vec();
        v.extend([1, 13, 1, 5, b'2', b'.', b'1', 2, 6, 0, 0, 0, 7]);
        let attrs = [Attribute {
            ty: AttrType::VendorSpecific,
            value: &v,
        }];
        assert_eq!(
            request_facts(&attrs, &d).0,
            [
                ("V-Release".to_owned(), "2.1".to_owned()),
                ("V-Level".to_owned(), "High".to_owned()),
                ("V-Level".to_owned(), "7".to_owned())
            ]
        );
        assert!(d
            .encode("V-Release", None, "x")
            .unwrap_err()
            .contains("tlv"));
        assert!(d.encode("V-Caps", None, "x").unwrap_err().contains("tlv"));
        let e = Dictionary::parse("d", &mut |_| {
            Ok("ATTRIBUTE A 5 string\nATTRIBUTE B 5.1 string\n".to_owned())
        })
        .unwrap_err();
        assert!(
            matches!(e.as_slice(), [one] if one.line == 2
                && one.message.contains("not a tlv defined before it")),
            "{e:?}"
        );
    }

    #[test]
    fn a_nested_attribute_cannot_be_reached_as_a_top_level_vendor_type() {
        let text = "VENDOR V 99 format=4,0\nBEGIN-VENDOR V\nATTRIBUTE V-Caps 1 tlv\n\
                    ATTRIBUTE V-Release 1.1 string\nEND-VENDOR V\n";
        let d = Dictionary::parse("d", &mut |_| Ok(text.to_owned())).unwrap();
        let mut v = 99u32.to_be_bytes().to_vec();
        v.extend([0x80, 0, 1, 1, b'x']);
        let attrs = [Attribute {
            ty: AttrType::VendorSpecific,
            value: &v,
        }];
        assert!(request_facts(&attrs, &d).0.is_empty());
    }
}
