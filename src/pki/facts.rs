//! What a device certificate says, as typed facts for the policy and the audit record:
//! names, SANs by kind, EKUs, policy OIDs, validity, fingerprints, and the chain as the
//! device presented it. Parsed once per authentication, after rustls verified the chain.
//! Every field is data the device (its CA) chose: nothing here is trusted beyond what the
//! verified chain vouches for, and the audit and log code escape it.

use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::der_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

/// Microsoft's User Principal Name otherName (MS-WCCE): `1.3.6.1.4.1.311.20.2.3`.
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

/// The extensions whose contents are policy facts: subjectAltName, certificatePolicies,
/// extKeyUsage (RFC 5280 §4.2.1.6, .4, .12).
const NAME_EXTENSIONS: [&str; 3] = ["2.5.29.17", "2.5.29.32", "2.5.29.37"];

/// Most SAN entries of one kind kept (a certificate may carry many; the policy needs few).
const MAX_PER_KIND: usize = 32;

/// Subject alternative names, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sans {
    /// dNSName.
    pub dns: Vec<String>,
    /// rfc822Name (email).
    pub email: Vec<String>,
    /// uniformResourceIdentifier (e.g. `IntuneDeviceId://{guid}`).
    pub uri: Vec<String>,
    /// Microsoft UPN otherName.
    pub upn: Vec<String>,
    /// iPAddress.
    pub ip: Vec<IpAddr>,
}

/// Everything the policy may ask of the device certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject DN, RFC 4514-like text.
    pub subject: String,
    /// Subject commonName values.
    pub subject_cn: Vec<String>,
    /// Subject organizationName values.
    pub subject_o: Vec<String>,
    /// Subject organizationalUnitName values.
    pub subject_ou: Vec<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, lowercase hex of its DER integer bytes.
    pub serial: String,
    /// Subject alternative names.
    pub san: Sans,
    /// The first DNS or email SAN, in the certificate's order.
    pub first_san_name: Option<String>,
    /// Extended key usages, as dotted OIDs.
    pub ekus: Vec<String>,
    /// Certificate policy OIDs.
    pub policies: Vec<String>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo, lowercase hex (stays the same across renewals
    /// that keep the key).
    pub spki_sha256: String,
    /// The chain as the device presented it, device certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Some name was not kept: more than [`MAX_PER_KIND`] of a kind, or a subject value in
    /// a string type that does not decode. A policy matching on names cannot know what it
    /// did not see, so admin rules refuse such a certificate.
    pub incomplete: bool,
}

impl CertFacts {
    /// The facts of `chain`'s first certificate; unparsable input gives empty fields (with
    /// its fingerprint).
    pub fn of(chain: &[CertificateDer<'static>]) -> Self {
        let der: &[u8] = chain.first().map_or(&[], |c| c.as_ref());
        let sha256 = hex_lower(&Sha256::digest(der));
        let Ok((_, c)) = X509Certificate::from_der(der) else {
            return Self {
                sha256,
                chain: chain.to_vec(),
                ..Self::default()
            };
        };
        let mut incomplete = false;
        let mut texts = |oid: &x509_parser::der_parser::oid::Oid<'_>| {
            let mut out = Vec::new();
            for a in c
                .subject()
                .iter_attributes()
                .filter(|a| a.attr_type() == oid)
            {
                match attr_text(a) {
                    Some(t) if out.len() < MAX_PER_KIND => out.push(t),
                    _ => incomplete = true,
                }
            }
            out
        };
        use x509_parser::oid_registry::{
            OID_X509_COMMON_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_ORGANIZATION_NAME,
        };
        let (subject_cn, subject_o, subject_ou) = (
            texts(&OID_X509_COMMON_NAME),
            texts(&OID_X509_ORGANIZATION_NAME),
            texts(&OID_X509_ORGANIZATIONAL_UNIT),
        );
        let mut facts = Self {
            subject: dn_text(c.subject()),
            subject_cn,
            subject_o,
            subject_ou,
            issuer: dn_text(c.issuer()),
            serial: hex_lower(c.raw_serial()),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            sha256,
            spki_sha256: hex_lower(&Sha256::digest(c.public_key().raw)),
            chain: chain.to_vec(),
            incomplete,
            ..Self::default()
        };
        for ext in c.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if !facts.san.add(name) {
                            facts.incomplete = true;
                        }
                        if let GeneralName::DNSName(n) | GeneralName::RFC822Name(n) = name {
                            facts.first_san_name.get_or_insert_with(|| (*n).to_owned());
                        }
                    }
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    facts.ekus = eku_oids(eku);
                    facts.incomplete |= facts.ekus.len() > MAX_PER_KIND;
                    facts.ekus.truncate(MAX_PER_KIND);
                }
                // A names extension x509-parser could not read (a SAN in Latin-1, say):
                // none of its names are facts, so the facts are incomplete.
                ParsedExtension::ParseError { .. }
                | ParsedExtension::UnsupportedExtension { .. }
                    if NAME_EXTENSIONS.contains(&ext.oid.to_id_string().as_str()) =>
                {
                    facts.incomplete = true;
                }
                ParsedExtension::CertificatePolicies(policies) => {
                    facts.incomplete |= policies.len() > MAX_PER_KIND;
                    facts.policies = policies
                        .iter()
                        .take(MAX_PER_KIND)
                        .map(|p| p.policy_id.to_id_string())
                        .collect();
                }
                _ => {}
            }
        }
        facts
    }

    /// The device identity: the subject CN, else the first DNS or email SAN in the
    /// certificate's order.
    pub fn identity(&self) -> &str {
        self.subject_cn
            .first()
            .or(self.first_san_name.as_ref())
            .map_or("", String::as_str)
    }

    /// Whether the certificate names `identity` (an EAP identity): its CN or any DNS,
    /// email or UPN SAN, compared exactly.
    pub fn names(&self, identity: &str) -> bool {
        self.subject_cn
            .iter()
            .chain(&self.san.dns)
            .chain(&self.san.email)
            .chain(&self.san.upn)
            .any(|n| n == identity)
    }

    /// The part the audit record and the log carry.
    pub fn summary(&self) -> CertSummary {
        CertSummary {
            subject: self.subject.clone(),
            issuer: self.issuer.clone(),
            serial: self.serial.clone(),
            identity: self.identity().to_owned(),
            sha256: self.sha256.clone(),
        }
    }
}

impl Sans {
    /// Keeps `name`; false when its kind is full (it is not kept).
    fn add(&mut self, name: &GeneralName<'_>) -> bool {
        let keep = |v: &mut Vec<String>, n: String| {
            let room = v.len() < MAX_PER_KIND;
            if room {
                v.push(n);
            }
            room
        };
        match name {
            GeneralName::DNSName(n) => keep(&mut self.dns, (*n).to_owned()),
            GeneralName::RFC822Name(n) => keep(&mut self.email, (*n).to_owned()),
            GeneralName::URI(n) => keep(&mut self.uri, (*n).to_owned()),
            GeneralName::OtherName(oid, value) if oid.to_id_string() == UPN_OID => {
                match utf8_in_explicit_zero(value) {
                    Some(upn) => keep(&mut self.upn, upn),
                    None => false,
                }
            }
            GeneralName::IPAddress(b) => {
                let ip = <[u8; 4]>::try_from(*b)
                    .map(IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(*b).map(IpAddr::from));
                match ip {
                    Ok(ip) if self.ip.len() < MAX_PER_KIND => {
                        self.ip.push(ip);
                        true
                    }
                    _ => false,
                }
            }
            _ => true,
        }
    }
}

/// A name attribute's value as text: the string types x509-parser reads, and BMPString
/// (UTF-16) and UniversalString (UTF-32), both big-endian; `None` for anything else.
fn attr_text(a: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    if let Ok(s) = a.as_str() {
        return Some(s.to_owned());
    }
    let data = a.attr_value().data;
    match a.attr_value().tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| <[u8; 2]>::try_from(c).map(u16::from_be_bytes))
                .collect::<Result<_, _>>()
                .ok()?;
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => data
            .chunks(4)
            .map(|c| {
                <[u8; 4]>::try_from(c)
                    .ok()
                    .and_then(|b| char::from_u32(u32::from_be_bytes(b)))
            })
            .collect(),
        Tag::T61String | Tag::VisibleString | Tag::GeneralString => {
            std::str::from_utf8(data).ok().map(str::to_owned)
        }
        _ => None,
    }
}

/// A distinguished name as text, in the certificate's order (`CN=laptop-1, O=Example`),
/// each value escaped as RFC 4514 §2.4 says, so a value holding `, O=Example` cannot pass
/// for a second attribute; a value that is not text is written `#` and its hex.
fn dn_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for (i, rdn) in name.iter_rdn().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, a) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = a.attr_type();
            match x509_parser::objects::oid2abbrev(oid, registry) {
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&oid.to_id_string()),
            }
            out.push('=');
            match attr_text(a) {
                Some(v) => escape_dn_value(&v, &mut out),
                None => {
                    out.push('#');
                    out.push_str(&hex_lower(a.attr_value().data));
                }
            }
        }
    }
    out
}

fn escape_dn_value(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
}

/// The UTF8String inside an otherName value (`[0] EXPLICIT UTF8String`).
fn utf8_in_explicit_zero(value: &[u8]) -> Option<String> {
    let (_, outer) = Any::from_der(value).ok()?;
    if outer.class() != Class::ContextSpecific || outer.tag() != Tag(0) {
        return None;
    }
    let (_, inner) = Any::from_der(outer.data).ok()?;
    if inner.tag() != Tag::Utf8String {
        return None;
    }
    std::str::from_utf8(inner.data).ok().map(str::to_owned)
}

fn eku_oids(eku: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> Vec<String> {
    let known = [
        (eku.any, "2.5.29.37.0"),
        (eku.server_auth, "1.3.6.1.5.5.7.3.1"),
        (eku.client_auth, "1.3.6.1.5.5.7.3.2"),
        (eku.code_signing, "1.3.6.1.5.5.7.3.3"),
        (eku.email_protection, "1.3.6.1.5.5.7.3.4"),
        (eku.time_stamping, "1.3.6.1.5.5.7.3.8"),
        (eku.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
    ];
    known
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, oid)| (*oid).to_owned())
        .chain(eku.other.iter().map(|o| o.to_id_string()))
        .collect()
}

/// What logs and the audit record say about a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, hex.
    pub serial: String,
    /// The device identity: subject CN, else the first SAN.
    pub identity: String,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

impl CertSummary {
    /// Summarises a DER certificate; unparsable input gives empty fields.
    pub fn of(der: &[u8]) -> Self {
        CertFacts::of(&[CertificateDer::from(der.to_vec())]).summary()
    }
}

/// Lowercase hex (on every authentication: fingerprints and the serial, so no formatter).
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: rcgen::CertificateParams) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn every_kind_of_name_and_oid_is_read() {
        let mut p = rcgen::CertificateParams::new(vec!["laptop-1.corp.example".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "laptop-1");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Corp");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, "IT");
        p.subject_alt_names.extend([
            rcgen::SanType::Rfc822Name("alice@example.com".try_into().unwrap()),
            rcgen::SanType::URI("IntuneDeviceId://1b2c".try_into().unwrap()),
            rcgen::SanType::IpAddress("192.0.2.7".parse().unwrap()),
            rcgen::SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                rcgen::OtherNameValue::Utf8String("alice@corp.example".into()),
            )),
        ]);
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 4, 1, 99999, 1]),
        ];
        p.serial_number = Some(vec![0x10, 0x2a].into());
        let der = cert(p);
        let f = CertFacts::of(std::slice::from_ref(&der));
        assert_eq!(f.subject_cn, ["laptop-1"]);
        assert_eq!(f.subject_o, ["Example Corp"]);
        assert_eq!(f.subject_ou, ["IT"]);
        assert_eq!(f.san.dns, ["laptop-1.corp.example"]);
        assert_eq!(f.san.email, ["alice@example.com"]);
        assert_eq!(f.san.uri, ["IntuneDeviceId://1b2c"]);
        assert_eq!(f.san.upn, ["alice@corp.example"]);
        assert_eq!(f.san.ip, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(f.ekus, ["1.3.6.1.5.5.7.3.2", "1.3.6.1.4.1.99999.1"]);
        assert_eq!(f.serial, "102a");
        assert_eq!(f.identity(), "laptop-1");
        assert!(f.names("alice@corp.example") && f.names("laptop-1"));
        assert!(!f.names("laptop-2"));
        assert!(f.not_after > f.not_before);
        assert_eq!(f.sha256, hex_lower(&Sha256::digest(der.as_ref())));
        assert_eq!(f.sha256.len(), 64);
        assert_eq!(f.spki_sha256.len(), 64);
        assert_ne!(f.spki_sha256, f.sha256);
        assert_eq!(f.chain, [der]);
    }

    #[test]
    fn without_a_cn_the_identity_is_the_first_san() {
        let mut p = rcgen::CertificateParams::new(vec!["printer-7.example".into()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        let f = CertFacts::of(&[cert(p)]);
        assert_eq!(f.identity(), "printer-7.example");
    }

    #[test]
    fn without_a_cn_the_first_san_in_the_certificates_order_is_the_identity() {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.subject_alt_names = vec![
            rcgen::SanType::Rfc822Name("a@example.com".try_into().unwrap()),
            rcgen::SanType::DnsName("b.example.com".try_into().unwrap()),
        ];
        assert_eq!(CertFacts::of(&[cert(p)]).identity(), "a@example.com");
    }

    #[test]
    fn garbage_gives_empty_facts_but_a_fingerprint() {
        let f = CertFacts::of(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])]);
        assert_eq!(f.identity(), "");
        assert_eq!(f.sha256.len(), 64);
        assert!(CertFacts::of(&[]).subject.is_empty());
    }

    #[test]
    fn a_cn_holding_a_comma_cannot_pass_for_two_names() {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "laptop-1, O=Example");
        let f = CertFacts::of(&[cert(p)]);
        assert_eq!(f.subject, "CN=laptop-1\\, O=Example");
        assert_eq!(f.subject_cn, ["laptop-1, O=Example"]);
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "#lead+plus\"quote\\;<>");
        assert_eq!(
            CertFacts::of(&[cert(p)]).subject,
            "CN=\\#lead\\+plus\\\"quote\\\\\\;\\<\\>"
        );
    }

    #[test]
    fn names_in_other_string_types_are_read_and_too_many_mark_the_facts_incomplete() {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "laptop-1");
        p.distinguished_name.push(
            rcgen::DnType::OrganizationalUnitName,
            rcgen::DnValue::BmpString("Guests".try_into().unwrap()),
        );
        p.subject_alt_names = (0..MAX_PER_KIND)
            .map(|i| rcgen::SanType::DnsName(format!("n{i}.example").try_into().unwrap()))
            .collect();
        let f = CertFacts::of(&[cert(p.clone())]);
        assert_eq!(f.subject_ou, ["Guests"]);
        assert_eq!(f.subject, "CN=laptop-1, OU=Guests");
        assert!(!f.incomplete, "{f:?}");
        p.subject_alt_names.push(rcgen::SanType::DnsName(
            "guest.untrusted.example".try_into().unwrap(),
        ));
        let f = CertFacts::of(&[cert(p)]);
        assert!(
            f.incomplete,
            "33 DNS names: the last is not kept, so the facts say so"
        );
    }

    #[test]
    fn an_unreadable_san_extension_or_too_many_ekus_mark_the_facts_incomplete() {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "laptop-1");
        // SEQUENCE { [2] "guest.untrusted.example", [2] 0xFF }: not IA5 text.
        let mut san = vec![0x30, 0x1c, 0x82, 0x17];
        san.extend(b"guest.untrusted.example");
        san.extend([0x82, 0x01, 0xff]);
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            san,
        )];
        assert!(CertFacts::of(&[cert(p)]).incomplete);
        let mut p = rcgen::CertificateParams::default();
        p.extended_key_usages = (0..=u64::try_from(MAX_PER_KIND).unwrap())
            .map(|i| rcgen::ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 4, 1, 99999, i]))
            .collect();
        assert!(CertFacts::of(&[cert(p)]).incomplete);
    }
}
