//! FreeRADIUS-format dictionaries: attribute names for logs and policies.
//!
//! Supported lines: `ATTRIBUTE name number type [flags]`, `VALUE attr name number`,
//! `VENDOR name number`, `BEGIN-VENDOR name` / `END-VENDOR name`, `$INCLUDE file`, and `#`
//! comments. Anything else is an error naming the file and line. Files are read through a
//! caller-supplied loader, so this module stays free of I/O.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Attributes of a reply the server writes itself (User-Name, State, Vendor-Specific as a
/// whole, Proxy-State, EAP-Message, Message-Authenticator).
const SERVER_WRITTEN: [u32; 6] = [1, 24, 26, 33, 79, 80];

/// Vendor attributes the server writes itself: the MS-MPPE keys (RFC 2548 §2.4.2-3).
const SERVER_WRITTEN_VENDOR: [(u32, u32); 2] = [(311, 16), (311, 17)];

/// Deepest `$INCLUDE` nesting accepted.
const MAX_INCLUDE_DEPTH: usize = 8;

/// An attribute's data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// UTF-8 text.
    String,
    /// Raw bytes.
    Octets,
    /// 32-bit integer.
    Integer,
    /// IPv4 address.
    IpAddr,
    /// IPv6 address.
    Ipv6Addr,
    /// IPv6 prefix.
    Ipv6Prefix,
    /// Seconds since the epoch.
    Date,
    /// 8-bit integer.
    Byte,
    /// 16-bit integer.
    Short,
    /// Attributes nested inside (RFC 6929 §2.3 style: type, length, value), defined as
    /// `ATTRIBUTE Child P.C type` after their parent `P`. Read, never written.
    Tlv,
}

impl DataType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" | "text" => Self::String,
            "octets" => Self::Octets,
            "integer" | "uint32" => Self::Integer,
            "ipaddr" | "ipv4addr" => Self::IpAddr,
            "ipv6addr" => Self::Ipv6Addr,
            "ipv6prefix" => Self::Ipv6Prefix,
            "date" => Self::Date,
            "byte" | "uint8" => Self::Byte,
            "short" | "uint16" => Self::Short,
            "tlv" => Self::Tlv,
            _ => return None,
        })
    }
}

/// One attribute definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrDef {
    /// Name, e.g. `Tunnel-Private-Group-Id`.
    pub name: String,
    /// Vendor number, 0 for standard attributes.
    pub vendor: u32,
    /// Attribute number (vendor type for VSAs).
    pub number: u32,
    /// Data type.
    pub data_type: DataType,
    /// RFC 2868 tag byte.
    pub has_tag: bool,
    /// Encryption method (`encrypt=N`), 0 for none. Such values are never logged.
    pub encrypt: u8,
    /// The TLV attribute this one is nested in (its number), if any.
    pub parent: Option<u32>,
}

/// A dictionary error with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictError {
    /// File name as given to the loader.
    pub file: String,
    /// 1-based line (0 when the file itself could not be read).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// A loaded dictionary.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    /// By (vendor, number); a nested attribute's number is [`tlv_key`], apart from every
    /// top-level one.
    attrs: BTreeMap<(u32, u64), AttrDef>,
    by_name: HashMap<String, (u32, u64)>,
    vendors: BTreeMap<String, u32>,
    /// Octets of the type and length fields inside each vendor's Vendor-Specific
    /// attributes (`format=t,l`), for vendors other than the usual 1,1.
    formats: BTreeMap<u32, (u8, u8)>,
    values: HashMap<(u32, u64), BTreeMap<u32, String>>,
}

struct Parser<'l> {
    dict: Dictionary,
    errors: Vec<DictError>,
    load: &'l mut dyn FnMut(&str) -> Result<String, String>,
    pending_values: Vec<(String, usize, String, String, u32)>,
}

impl Dictionary {
    /// Parses `root` and everything it includes; `load` returns a file's text by name.
    ///
    /// # Errors
    /// Every error found, each with file and line.
    pub fn parse(
        root: &str,
        load: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Self, Vec<DictError>> {
        let mut p = Parser {
            dict: Self::default(),
            errors: Vec::new(),
            load,
            pending_values: Vec::new(),
        };
        p.file(root, 0);
        for (file, line, attr, name, number) in std::mem::take(&mut p.pending_values) {
            match p.dict.by_name.get(&attr) {
                Some(key) => {
                    p.dict.values.entry(*key).or_default().insert(number, name);
                }
                None => p.errors.push(DictError {
                    file,
                    line,
                    message: format!("VALUE for unknown attribute {attr}"),
                }),
            }
        }
        if p.errors.is_empty() {
            Ok(p.dict)
        } else {
            Err(p.errors)
        }
    }

    /// The dictionary shipped in `dictionaries/`.
    ///
    /// # Errors
    /// Only if the shipped files are broken (a test guards against that).
    pub fn builtin() -> Result<Self, Vec<DictError>> {
        Self::parse("dictionary", &mut |name| {
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, text)| (*text).to_owned())
                .ok_or_else(|| format!("no built-in file {name}"))
        })
    }

    /// The definition of a standard (`vendor` 0) or vendor attribute.
    pub fn attribute(&self, vendor: u32, number: u32) -> Option<&AttrDef> {
        self.attrs.get(&(vendor, u64::from(number)))
    }

    /// The definition for a name.
    pub fn by_name(&self, name: &str) -> Option<&AttrDef> {
        self.by_name.get(name).and_then(|k| self.attrs.get(k))
    }

    /// The attribute numbered `child` inside the TLV attribute `parent`.
    pub fn tlv_child(&self, vendor: u32, parent: u32, child: u32) -> Option<&AttrDef> {
        self.attrs.get(&(vendor, tlv_key(parent, child)))
    }

    /// A named value of an integer attribute.
    pub fn value_name(&self, vendor: u32, number: u32, value: u32) -> Option<&str> {
        self.values
            .get(&(vendor, u64::from(number)))?
            .get(&value)
            .map(String::as_str)
    }

    /// A named value of the attribute `def` (top-level or nested).
    pub fn value_name_of(&self, def: &AttrDef, value: u32) -> Option<&str> {
        let key = def
            .parent
            .map_or(u64::from(def.number), |p| tlv_key(p, def.number));
        self.values
            .get(&(def.vendor, key))?
            .get(&value)
            .map(String::as_str)
    }

    /// Octets of the type and length fields in `vendor`'s Vendor-Specific attributes
    /// (`VENDOR ... format=t,l`; 1,1 unless the dictionary says otherwise).
    pub fn vendor_format(&self, vendor: u32) -> (u8, u8) {
        self.formats.get(&vendor).copied().unwrap_or((1, 1))
    }

    /// The number of a named value of an integer attribute.
    pub fn value_number(&self, vendor: u32, number: u32, name: &str) -> Option<u32> {
        self.values
            .get(&(vendor, u64::from(number)))?
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }

    /// Encodes `value` (text) for the attribute named `name`, by its type: a string as
    /// is, an integer from digits or a VALUE name, an address, a date in Unix seconds,
    /// octets from `0x` hex (else the text's bytes); `tag` (RFC 2868) leads the value of
    /// an attribute that has one (0 when not given). Returns the definition and the value bytes; an attribute
    /// with `encrypt=1` or `encrypt=2` is returned in the clear, for the reply builder to
    /// hide with the client's secret (the tag, if any, stays in front, outside the
    /// encryption).
    ///
    /// # Errors
    /// An unknown name, a value that does not parse as its type, or an attribute this
    /// encoder does not write (encrypt=3, IPv6 prefixes).
    pub fn encode(
        &self,
        name: &str,
        tag: Option<u8>,
        value: &str,
    ) -> Result<(&AttrDef, Vec<u8>), String> {
        let def = self.named(name)?;
        // The server writes these itself: a second copy would make the reply invalid.
        if (def.vendor == 0 && SERVER_WRITTEN.contains(&def.number))
            || SERVER_WRITTEN_VENDOR.contains(&(def.vendor, def.number))
        {
            return Err(format!(
                "`{name}` is written by the server, not by a policy"
            ));
        }
        self.encode_def(def, tag, value)
    }

    fn named(&self, name: &str) -> Result<&AttrDef, String> {
        self.by_name(name)
            .ok_or_else(|| format!("no attribute `{name}` in the dictionary"))
    }

    /// Encodes `value` for the attribute named `name` as [`Self::encode`] does, for any
    /// attribute (a request's User-Name too): what the admin tools use to make a request.
    ///
    /// # Errors
    /// As [`Self::encode`], but attributes the server writes are encoded too.
    pub fn encode_value(
        &self,
        name: &str,
        tag: Option<u8>,
        value: &str,
    ) -> Result<(&AttrDef, Vec<u8>), String> {
        self.encode_def(self.named(name)?, tag, value)
    }

    fn encode_def<'d>(
        &'d self,
        def: &'d AttrDef,
        tag: Option<u8>,
        value: &str,
    ) -> Result<(&'d AttrDef, Vec<u8>), String> {
        let name = def.name.as_str();
        if def.data_type == DataType::Tlv || def.parent.is_some() {
            return Err(format!(
                "`{name}` is a tlv or nested in one: anchord reads those, it does not write them"
            ));
        }
        if !matches!(def.encrypt, 0..=2) {
            return Err(format!(
                "`{name}` uses encrypt={}: only 1 (User-Password style) and 2 \
                 (Tunnel-Password style) are written",
                def.encrypt
            ));
        }
        let bad = |what: &str| format!("`{value}` is not {what} (attribute `{name}`)");
        let tag = tag.unwrap_or(0);
        if tag > 0x1F {
            return Err(format!(
                "tag {tag} is out of range 0..=31 (attribute `{name}`)"
            ));
        }
        // Digits or a VALUE name.
        let number = || {
            value
                .parse::<u32>()
                .ok()
                .or_else(|| self.value_number(def.vendor, def.number, value))
                .ok_or_else(|| bad("a number or a VALUE name"))
        };
        let mut out = Vec::new();
        match def.data_type {
            DataType::String => {
                if def.has_tag {
                    out.push(tag);
                }
                out.extend_from_slice(value.as_bytes());
            }
            DataType::Byte | DataType::Short => {
                let n = number()?;
                match def.data_type {
                    DataType::Byte => {
                        out.push(u8::try_from(n).map_err(|_| bad("a byte (0..=255)"))?)
                    }
                    _ => out.extend_from_slice(
                        &u16::try_from(n)
                            .map_err(|_| bad("a short (0..=65535)"))?
                            .to_be_bytes(),
                    ),
                }
            }
            DataType::Integer | DataType::Date => {
                let n = number()?;
                let mut bytes = n.to_be_bytes();
                if def.has_tag {
                    if n > 0x00FF_FFFF {
                        return Err(bad("a 24-bit number (tagged attribute)"));
                    }
                    bytes[0] = tag;
                }
                out.extend_from_slice(&bytes);
            }
            DataType::IpAddr => {
                let a: std::net::Ipv4Addr = value.parse().map_err(|_| bad("an IPv4 address"))?;
                out.extend_from_slice(&a.octets());
            }
            DataType::Ipv6Addr => {
                let a: std::net::Ipv6Addr = value.parse().map_err(|_| bad("an IPv6 address"))?;
                out.extend_from_slice(&a.octets());
            }
            // `0x` and hex digits, else the text's own bytes (`Class = staff`).
            DataType::Octets => {
                let Some(hex) = value.strip_prefix("0x") else {
                    out.extend_from_slice(value.as_bytes());
                    return Ok((def, out));
                };
                if hex.len() % 2 != 0 {
                    return Err(bad("0x followed by hex digits"));
                }
                for i in (0..hex.len()).step_by(2) {
                    let byte = hex
                        .get(i..i + 2)
                        .and_then(|p| u8::from_str_radix(p, 16).ok())
                        .ok_or_else(|| bad("0x followed by hex digits"))?;
                    out.push(byte);
                }
            }
            DataType::Ipv6Prefix => {
                return Err(format!("`{name}` (ipv6prefix) is not supported in replies"));
            }
            DataType::Tlv => return Err(format!("`{name}` is a tlv: not written")),
        }
        Ok((def, out))
    }

    /// A SHA-256 over every definition (attributes, vendor formats, VALUE names), in a
    /// fixed order: two dictionaries that name and encode alike have the same one.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (key, def) in &self.attrs {
            h.update(format!("{key:?}={def:?}\n"));
        }
        for (vendor, format) in &self.formats {
            h.update(format!("{vendor}:{format:?}\n"));
        }
        let mut values: Vec<_> = self.values.iter().collect();
        values.sort_by_key(|(k, _)| **k);
        for (key, names) in values {
            h.update(format!("{key:?}:{names:?}\n"));
        }
        h.finalize().into()
    }

    /// Number of attributes defined.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// True when nothing is defined.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }
}

/// The shipped dictionary files, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("dictionary", include_str!("../../dictionaries/dictionary")),
    (
        "dictionary.rfc2865",
        include_str!("../../dictionaries/dictionary.rfc2865"),
    ),
    (
        "dictionary.rfc2868",
        include_str!("../../dictionaries/dictionary.rfc2868"),
    ),
    (
        "dictionary.rfc2869",
        include_str!("../../dictionaries/dictionary.rfc2869"),
    ),
    (
        "dictionary.rfc5176",
        include_str!("../../dictionaries/dictionary.rfc5176"),
    ),
    (
        "dictionary.microsoft",
        include_str!("../../dictionaries/dictionary.microsoft"),
    ),
    (
        "dictionary.aruba",
        include_str!("../../dictionaries/dictionary.aruba"),
    ),
    (
        "dictionary.cisco",
        include_str!("../../dictionaries/dictionary.cisco"),
    ),
    (
        "dictionary.airespace",
        include_str!("../../dictionaries/dictionary.airespace"),
    ),
    (
        "dictionary.ruckus",
        include_str!("../../dictionaries/dictionary.ruckus"),
    ),
    (
        "dictionary.foundry",
        include_str!("../../dictionaries/dictionary.foundry"),
    ),
    (
        "dictionary.juniper",
        include_str!("../../dictionaries/dictionary.juniper"),
    ),
];

impl Parser<'_> {
    fn err(&mut self, file: &str, line: usize, message: String) {
        self.errors.push(DictError {
            file: file.to_owned(),
            line,
            message,
        });
    }

    fn file(&mut self, name: &str, depth: usize) {
        if depth > MAX_INCLUDE_DEPTH {
            self.err(name, 0, "$INCLUDE nested too deep".into());
            return;
        }
        let text = match (self.load)(name) {
            Ok(t) => t,
            Err(e) => {
                self.err(name, 0, e);
                return;
            }
        };
        let mut vendor: Option<u32> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("");
            let words: Vec<&str> = content.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["$INCLUDE", file] => self.file(file, depth + 1),
                ["VENDOR", vname, number, rest @ ..] => match number.parse::<u32>() {
                    Ok(n) => {
                        self.dict.vendors.insert((*vname).to_owned(), n);
                        match rest {
                            [] => {}
                            [f] => match f.strip_prefix("format=").and_then(parse_format) {
                                Some((1, 1)) => {}
                                Some(format) => {
                                    self.dict.formats.insert(n, format);
                                }
                                None => self.err(
                                    name,
                                    line,
                                    format!(
                                        "`{f}`: the vendor format is format=T,L with T 1, 2 \
                                         or 4 and L 0, 1 or 2"
                                    ),
                                ),
                            },
                            _ => self.err(name, line, "too many fields after VENDOR".into()),
                        }
                    }
                    Err(_) => self.err(
                        name,
                        line,
                        format!("vendor number `{number}` is not a number"),
                    ),
                },
                ["BEGIN-VENDOR", vname, ..] => match self.dict.vendors.get(*vname) {
                    Some(n) => vendor = Some(*n),
                    None => self.err(
                        name,
                        line,
                        format!("BEGIN-VENDOR for undefined vendor {vname}"),
                    ),
                },
                ["END-VENDOR", _] => vendor = None,
                ["ATTRIBUTE", aname, number, ty, flags @ ..] => {
                    self.attribute(
                        name,
                        line,
                        vendor.unwrap_or(0),
                        aname,
                        number,
                        ty,
                        flags.first().copied(),
                    );
                }
                ["VALUE", attr, vname, number] => match number.parse::<u32>() {
                    Ok(n) => self.pending_values.push((
                        name.to_owned(),
                        line,
                        (*attr).to_owned(),
                        (*vname).to_owned(),
                        n,
                    )),
                    Err(_) => self.err(name, line, format!("value `{number}` is not a number")),
                },
                [keyword, ..] => self.err(name, line, format!("cannot read `{keyword}` line")),
            }
        }
        if vendor.is_some() {
            self.err(
                name,
                text.lines().count(),
                "BEGIN-VENDOR without END-VENDOR".into(),
            );
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, fields of one line"
    )]
    fn attribute(
        &mut self,
        file: &str,
        line: usize,
        vendor: u32,
        name: &str,
        number: &str,
        ty: &str,
        flags: Option<&str>,
    ) {
        // `P.C`: attribute C nested in the TLV attribute P (one level).
        let (parent, number) = match number.split_once('.') {
            Some((p, c)) => match (p.parse::<u32>(), c.parse::<u8>()) {
                (Ok(p), Ok(c)) if c > 0 => {
                    if !self
                        .dict
                        .attrs
                        .get(&(vendor, u64::from(p)))
                        .is_some_and(|d| d.data_type == DataType::Tlv)
                    {
                        return self.err(
                            file,
                            line,
                            format!("`{number}`: attribute {p} is not a tlv defined before it"),
                        );
                    }
                    (Some(p), u32::from(c))
                }
                _ => {
                    return self.err(
                        file,
                        line,
                        format!("attribute number `{number}` is not N or N.M (1..=255)"),
                    )
                }
            },
            None => match number.parse::<u32>() {
                Ok(n) => (None, n),
                Err(_) => {
                    return self.err(
                        file,
                        line,
                        format!("attribute number `{number}` is not a number"),
                    )
                }
            },
        };
        let key = parent.map_or(u64::from(number), |p| tlv_key(p, number));
        if vendor == 0 && parent.is_none() && !(1..=255).contains(&number) {
            return self.err(
                file,
                line,
                format!("attribute number {number} outside 1..=255"),
            );
        }
        let (type_octets, _) = self.dict.vendor_format(vendor);
        if vendor != 0
            && parent.is_none()
            && type_octets < 4
            && number >= 1 << (8 * u32::from(type_octets))
        {
            return self.err(
                file,
                line,
                format!(
                    "attribute number {number} does not fit the vendor's {type_octets}-octet type"
                ),
            );
        }
        let Some(data_type) = DataType::parse(ty) else {
            return self.err(file, line, format!("unknown type `{ty}`"));
        };
        let mut has_tag = false;
        let mut encrypt = 0;
        for flag in flags.unwrap_or("").split(',').filter(|f| !f.is_empty()) {
            match flag.split_once('=') {
                None if flag == "has_tag" => has_tag = true,
                Some(("encrypt", n)) => match n.parse() {
                    Ok(n) => encrypt = n,
                    Err(_) => return self.err(file, line, format!("bad flag `{flag}`")),
                },
                _ => return self.err(file, line, format!("unknown flag `{flag}`")),
            }
        }
        if let Some(old) = self.dict.by_name.get(name) {
            return self.err(
                file,
                line,
                format!("{name} defined twice (first as {}:{})", old.0, old.1),
            );
        }
        if let Some(old) = self.dict.attrs.get(&(vendor, key)) {
            return self.err(
                file,
                line,
                format!("number {number} already names {}", old.name),
            );
        }
        self.dict.by_name.insert(name.to_owned(), (vendor, key));
        self.dict.attrs.insert(
            (vendor, key),
            AttrDef {
                name: name.to_owned(),
                vendor,
                number,
                data_type,
                has_tag,
                encrypt,
                parent,
            },
        );
    }
}

/// Where the attribute numbered `child` (1..=255) inside the TLV attribute `parent` is
/// kept: above every top-level number (those fit 32 bits), one key per (parent, child).
fn tlv_key(parent: u32, child: u32) -> u64 {
    (1 << 40) | (u64::from(parent) << 8) | u64::from(child & 0xFF)
}

/// `t,l` of a `format=t,l` (type octets 1, 2 or 4; length octets 0, 1 or 2).
fn parse_format(f: &str) -> Option<(u8, u8)> {
    let (t, l) = f.split_once(',')?;
    let (t, l) = (t.parse().ok()?, l.parse().ok()?);
    (matches!(t, 1 | 2 | 4) && matches!(l, 0..=2)).then_some((t, l))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use super::*;
    use crate::radius::attr::{self, AttrType};

    #[test]
    fn vendor_formats_are_read_and_bad_ones_refused_with_their_line() {
        let parse = |text: &str| {
            let text = text.to_owned();
            Dictionary::parse("d", &mut |_| Ok(text.clone()))
        };
        let d = parse("VENDOR A 1 format=2,2\nVENDOR B 2\n").unwrap();
        assert_eq!(d.vendor_format(1), (2, 2));
        assert_eq!(d.vendor_format(2), (1, 1));
        let e = parse("VENDOR A 1\nVENDOR C 3 format=3,1\n").unwrap_err();
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("format=T,L"), "{}", e[0].message);
        let e = parse("VENDOR A 1\nBEGIN-VENDOR A\nATTRIBUTE A-X 300 string\nEND-VENDOR A\n")
            .unwrap_err();
        assert_eq!(e[0].line, 3);
        assert!(e[0].message.contains("1-octet type"), "{}", e[0].message);
    }

    #[test]
    fn builtin_dictionary_agrees_with_the_core_attribute_types() {
        let d = Dictionary::builtin().unwrap();
        let expect = [
            (AttrType::UserName, "User-Name"),
            (AttrType::NasIpAddress, "NAS-IP-Address"),
            (AttrType::FramedMtu, "Framed-MTU"),
            (AttrType::State, "State"),
            (AttrType::Class, "Class"),
            (AttrType::VendorSpecific, "Vendor-Specific"),
            (AttrType::CalledStationId, "Called-Station-Id"),
            (AttrType::CallingStationId, "Calling-Station-Id"),
            (AttrType::NasIdentifier, "NAS-Identifier"),
            (AttrType::ProxyState, "Proxy-State"),
            (AttrType::TunnelType, "Tunnel-Type"),
            (AttrType::TunnelMediumType, "Tunnel-Medium-Type"),
            (AttrType::EapMessage, "EAP-Message"),
            (AttrType::MessageAuthenticator, "Message-Authenticator"),
            (AttrType::TunnelPrivateGroupId, "Tunnel-Private-Group-Id"),
        ];
        for (ty, name) in expect {
            assert_eq!(
                d.attribute(0, u32::from(ty.code()))
                    .map(|a| a.name.as_str()),
                Some(name)
            );
            assert_eq!(
                AttrType::from_code(u8::try_from(d.by_name(name).unwrap().number).unwrap()),
                ty
            );
        }
        let send = d.by_name("MS-MPPE-Send-Key").unwrap();
        assert_eq!(
            (send.vendor, send.number, send.encrypt),
            (attr::VENDOR_MICROSOFT, u32::from(attr::MS_MPPE_SEND_KEY), 2)
        );
        let recv = d.by_name("MS-MPPE-Recv-Key").unwrap();
        assert_eq!(
            (recv.vendor, recv.number),
            (attr::VENDOR_MICROSOFT, u32::from(attr::MS_MPPE_RECV_KEY))
        );
        assert_eq!(d.value_name(0, 64, attr::TUNNEL_TYPE_VLAN), Some("VLAN"));
        assert_eq!(
            d.value_name(0, 65, attr::TUNNEL_MEDIUM_IEEE_802),
            Some("IEEE-802")
        );
        assert!(d.by_name("Tunnel-Private-Group-Id").unwrap().has_tag);
    }

    fn parse(files: &[(&str, &str)]) -> Result<Dictionary, Vec<DictError>> {
        Dictionary::parse(files[0].0, &mut |n| {
            files
                .iter()
                .find(|f| f.0 == n)
                .map(|f| f.1.to_owned())
                .ok_or_else(|| format!("no file {n}"))
        })
    }

    #[test]
    fn errors_name_file_and_line() {
        let errs = parse(&[
            ("top", "# c\n$INCLUDE sub\nATTRIBUTE Foo 300 string\n"),
            ("sub", "ATTRIBUTE Bar 200 strang\nFROB x\nVALUE Nope A 1\nATTRIBUTE Baz 201 octets bogus\n"),
        ])
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "sub:1: unknown type `strang`",
                "sub:2: cannot read `FROB` line",
                "sub:4: unknown flag `bogus`",
                "top:3: attribute number 300 outside 1..=255",
                "sub:3: VALUE for unknown attribute Nope",
            ]
        );
    }

    #[test]
    fn duplicates_and_missing_includes_are_errors() {
        let errs = parse(&[(
            "top",
            "ATTRIBUTE A 1 string\nATTRIBUTE A 2 string\nATTRIBUTE B 1 string\n$INCLUDE gone\n",
        )])
        .unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].line, 2);
        assert_eq!(errs[1].line, 3);
        assert_eq!(errs[2].file, "gone");
    }

    #[test]
    fn include_loops_stop() {
        let errs = parse(&[("top", "$INCLUDE top\n")]).unwrap_err();
        assert!(errs.iter().any(|e| e.message.contains("too deep")));
    }
}
