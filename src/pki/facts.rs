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
        let texts =
            |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
                it.filter_map(|a| a.as_str().ok().map(str::to_owned))
                    .take(MAX_PER_KIND)
                    .collect::<Vec<_>>()
            };
        let subject = c.subject();
        let mut facts = Self {
            subject: subject.to_string(),
            subject_cn: texts(&mut subject.iter_common_name()),
            subject_o: texts(&mut subject.iter_organization()),
            subject_ou: texts(&mut subject.iter_organizational_unit()),
            issuer: c.issuer().to_string(),
            serial: hex_lower(c.raw_serial()),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            sha256,
            spki_sha256: hex_lower(&Sha256::digest(c.public_key().raw)),
            chain: chain.to_vec(),
            ..Self::default()
        };
        for ext in c.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        facts.san.add(name);
                        if let GeneralName::DNSName(n) | GeneralName::RFC822Name(n) = name {
                            facts.first_san_name.get_or_insert_with(|| (*n).to_owned());
                        }
                    }
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    facts.ekus = eku_oids(eku);
                }
                ParsedExtension::CertificatePolicies(policies) => {
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
    fn add(&mut self, name: &GeneralName<'_>) {
        let room = |v: &Vec<String>| v.len() < MAX_PER_KIND;
        match name {
            GeneralName::DNSName(n) if room(&self.dns) => self.dns.push((*n).to_owned()),
            GeneralName::RFC822Name(n) if room(&self.email) => {
                self.email.push((*n).to_owned());
            }
            GeneralName::URI(n) if room(&self.uri) => self.uri.push((*n).to_owned()),
            GeneralName::OtherName(oid, value)
                if room(&self.upn) && oid.to_id_string() == UPN_OID =>
            {
                if let Some(upn) = utf8_in_explicit_zero(value) {
                    self.upn.push(upn);
                }
            }
            GeneralName::IPAddress(b) if self.ip.len() < MAX_PER_KIND => {
                if let Ok(a) = <[u8; 4]>::try_from(*b) {
                    self.ip.push(IpAddr::from(a));
                } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                    self.ip.push(IpAddr::from(a));
                }
            }
            _ => {}
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
        .take(MAX_PER_KIND)
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

/// Lowercase hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
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
}
