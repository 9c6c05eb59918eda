//! One-line packet summaries for `--debug` (what admins read in `radiusd -X`), named by the
//! dictionary. Text, integers and addresses are shown; octets only by length; encrypted
//! attributes, EAP payloads and Message-Authenticator never.

use std::fmt::Write;

use super::attr::AttrType;
use super::dictionary::{DataType, Dictionary};
use super::packet::Attribute;
use super::reader::Reader;

/// Summarises attributes, e.g. `User-Name="dev" Framed-MTU=200 EAP-Message(len=6)`.
pub fn summarize(attrs: &[Attribute<'_>], dict: &Dictionary) -> String {
    let mut out = String::new();
    for a in attrs {
        if !out.is_empty() {
            out.push(' ');
        }
        let code = a.ty.code();
        if a.ty == AttrType::VendorSpecific {
            vendor(&mut out, a.value, dict);
            continue;
        }
        let Some(def) = dict.attribute(0, u32::from(code)) else {
            let _ = write!(out, "Attr-{code}(len={})", a.value.len());
            continue;
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
        let _ = write!(out, "{}", def.name);
        if let Some(t) = tag {
            let _ = write!(out, ":{t}");
        }
        let secret = def.encrypt != 0
            || matches!(
                a.ty,
                AttrType::EapMessage | AttrType::MessageAuthenticator | AttrType::State
            );
        if secret {
            let _ = write!(out, "(len={})", a.value.len());
            continue;
        }
        match def.data_type {
            DataType::String if value.iter().all(|b| (0x20..0x7F).contains(b)) => {
                let _ = write!(out, "=\"{}\"", String::from_utf8_lossy(value));
            }
            DataType::Integer if value.len() == 4 => {
                let mut r = Reader::new(value);
                let mut n = r.u32().unwrap_or_default();
                if def.has_tag {
                    n &= 0x00FF_FFFF;
                }
                match dict.value_name(0, def.number, n) {
                    Some(name) => {
                        let _ = write!(out, "={name}");
                    }
                    None => {
                        let _ = write!(out, "={n}");
                    }
                }
            }
            DataType::IpAddr => match value {
                [a, b, c, d] => {
                    let _ = write!(out, "={a}.{b}.{c}.{d}");
                }
                _ => {
                    let _ = write!(out, "(len={})", value.len());
                }
            },
            _ => {
                let _ = write!(out, "(len={})", value.len());
            }
        }
    }
    out
}

fn vendor(out: &mut String, value: &[u8], dict: &Dictionary) {
    let mut r = Reader::new(value);
    let (Some(vendor), Some(vtype)) = (r.u32(), r.u8()) else {
        let _ = write!(out, "Vendor-Specific(len={})", value.len());
        return;
    };
    match dict.attribute(vendor, u32::from(vtype)) {
        // Vendor values are not shown: several carry keys or passwords.
        Some(def) => {
            let _ = write!(out, "{}(len={})", def.name, value.len());
        }
        None => {
            let _ = write!(out, "Vendor-{vendor}-Attr-{vtype}(len={})", value.len());
        }
    }
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
}
