//! A development PKI made with rcgen: root CA, issuing CA, server certificate and demo
//! devices (good ECDSA in OU Staff, good RSA in OU IoT, expired, wrong EKU, unknown CA). For demos and tests
//! only; production CAs live in the HSM.

use std::fs;
use std::io;
use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
    PKCS_RSA_SHA256,
};
use time::{Duration, OffsetDateTime};

/// One device certificate of the dev PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoDevice {
    /// File stem: `<name>.pem` (cert + issuing CA) and `<name>.key`.
    pub name: &'static str,
    /// What the server should answer.
    pub expect_accept: bool,
    /// Why, for the demo table.
    pub note: &'static str,
}

/// Devices the dev PKI issues.
pub const DEVICES: &[DemoDevice] = &[
    DemoDevice {
        name: "device-ecdsa",
        expect_accept: true,
        note: "valid ECDSA P-256",
    },
    DemoDevice {
        name: "device-rsa",
        expect_accept: true,
        note: "valid RSA-2048",
    },
    DemoDevice {
        name: "device-expired",
        expect_accept: false,
        note: "expired yesterday",
    },
    DemoDevice {
        name: "device-wrong-eku",
        expect_accept: false,
        note: "serverAuth EKU only",
    },
    DemoDevice {
        name: "device-unknown-ca",
        expect_accept: false,
        note: "issued by another CA",
    },
];

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// Errors making the dev PKI.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing files failed.
    #[error("writing the dev PKI: {0}")]
    Io(#[from] io::Error),
}

/// Writes the dev PKI into `dir`: `root-ca.pem`, `issuing-ca.pem`, `server.pem`/`.key`
/// (chain with the issuing CA), `server-rsa.pem`/`.key` (the same with RSA-2048), one `<device>.pem`/`.key` per [`DEVICES`] entry, and
/// `other-root-ca.pem` (the CA of `device-unknown-ca`).
///
/// # Errors
/// The Intune device id the dev Staff laptop's certificate carries (SAN URI
/// `IntuneDeviceId://{id}`, as Intune's SCEP/PKCS profiles issue them): the dev MDM knows it.
pub const STAFF_INTUNE_ID: &str = "0f6a2c1e-8f61-4a55-b0a9-2c7b3c1b7d10";
/// The Intune device id of the dev IoT device.
pub const IOT_INTUNE_ID: &str = "6c1d2f0e-3b7a-4c55-9e21-7a8b9c0d1e2f";

/// The Intune device id a dev device's certificate carries, if any.
pub fn intune_id(device: &str) -> Option<&'static str> {
    match device {
        "device-ecdsa" => Some(STAFF_INTUNE_ID),
        "device-rsa" => Some(IOT_INTUNE_ID),
        _ => None,
    }
}

/// Generation or file errors.
pub fn generate(dir: &Path, now: OffsetDateTime) -> Result<(), DevPkiError> {
    fs::create_dir_all(dir)?;
    let root = ca("anchord dev root CA", None, now)?;
    let issuing = ca("anchord dev issuing CA", Some(&root), now)?;
    let other = ca("rogue root CA", None, now)?;
    write(dir, "root-ca.pem", &root.cert.pem())?;
    write(dir, "issuing-ca.pem", &issuing.cert.pem())?;
    write(dir, "other-root-ca.pem", &other.cert.pem())?;
    write(
        dir,
        "ca-chain.pem",
        &format!("{}{}", issuing.cert.pem(), root.cert.pem()),
    )?;
    // The issuing CA's key, so tests can run OpenSSL's OCSP responder as the CA. Dev only.
    write_key(dir, "issuing-ca.key", &issuing.key.serialize_pem())?;
    write_key(dir, "root-ca.key", &root.key.serialize_pem())?;

    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = leaf("radius.anchord.test", now, 10)?;
    p.subject_alt_names = vec![rcgen::SanType::DnsName("radius.anchord.test".try_into()?)];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = p
        .clone()
        .signed_by(&server_key, &issuing.cert, &issuing.key)?;
    write(
        dir,
        "server.pem",
        &format!("{}{}", server.pem(), issuing.cert.pem()),
    )?;
    write_key(dir, "server.key", &server_key.serialize_pem())?;
    // The same server with an RSA-2048 key, for RSA benchmarks.
    let rsa_key = KeyPair::generate_for(&PKCS_RSA_SHA256)?;
    p.serial_number = Some(SerialNumber::from(vec![0x10, 0x0B]));
    let server_rsa = p.signed_by(&rsa_key, &issuing.cert, &issuing.key)?;
    write(
        dir,
        "server-rsa.pem",
        &format!("{}{}", server_rsa.pem(), issuing.cert.pem()),
    )?;
    write_key(dir, "server-rsa.key", &rsa_key.serialize_pem())?;

    for (i, d) in DEVICES.iter().enumerate() {
        let alg: &SignatureAlgorithm = if d.name == "device-rsa" {
            &PKCS_RSA_SHA256
        } else {
            &PKCS_ECDSA_P256_SHA256
        };
        let key = KeyPair::generate_for(alg)?;
        let mut p = leaf(d.name, now, 20 + u8::try_from(i).unwrap_or(0))?;
        p.subject_alt_names = vec![rcgen::SanType::DnsName(
            format!("{}.devices.anchord.test", d.name).try_into()?,
        )];
        if let Some(id) = intune_id(d.name) {
            p.subject_alt_names.push(rcgen::SanType::URI(
                format!("IntuneDeviceId://{id}").try_into()?,
            ));
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // Departments the example policy (policies/) tells apart.
        match d.name {
            "device-ecdsa" => p
                .distinguished_name
                .push(DnType::OrganizationalUnitName, "Staff"),
            "device-rsa" => p
                .distinguished_name
                .push(DnType::OrganizationalUnitName, "IoT"),
            _ => {}
        }
        let issuer = match d.name {
            "device-expired" => {
                p.not_before = now - Duration::days(30);
                p.not_after = now - Duration::days(1);
                &issuing
            }
            "device-wrong-eku" => {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                &issuing
            }
            "device-unknown-ca" => &other,
            _ => &issuing,
        };
        let cert = p.signed_by(&key, &issuer.cert, &issuer.key)?;
        write(
            dir,
            &format!("{}.pem", d.name),
            &format!("{}{}", cert.pem(), issuer.cert.pem()),
        )?;
        write_key(dir, &format!("{}.key", d.name), &key.serialize_pem())?;
    }
    // For revocation tests: a device that an OCSP responder will call revoked, a delegated
    // responder (id-kp-OCSPSigning) and a responder certificate without that EKU.
    let extras = [
        ("device-revoked", ExtendedKeyUsagePurpose::ClientAuth, 0x30),
        ("ocsp-responder", ExtendedKeyUsagePurpose::OcspSigning, 0x31),
        ("ocsp-noeku", ExtendedKeyUsagePurpose::ClientAuth, 0x32),
    ];
    for (name, eku, serial) in extras {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = leaf(name, now, serial)?;
        p.subject_alt_names = vec![rcgen::SanType::DnsName(
            format!("{name}.devices.anchord.test").try_into()?,
        )];
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuing.cert, &issuing.key)?;
        write(
            dir,
            &format!("{name}.pem"),
            &format!("{}{}", cert.pem(), issuing.cert.pem()),
        )?;
        write_key(dir, &format!("{name}.key"), &key.serialize_pem())?;
    }
    Ok(())
}

fn ca(cn: &str, parent: Option<&Ca>, now: OffsetDateTime) -> Result<Ca, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "anchord dev");
    p.is_ca = IsCa::Ca(if parent.is_some() {
        BasicConstraints::Constrained(0)
    } else {
        BasicConstraints::Unconstrained
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3650);
    p.serial_number = Some(SerialNumber::from(if parent.is_some() { 2u64 } else { 1 }));
    let cert = match parent {
        Some(parent) => p.signed_by(&key, &parent.cert, &parent.key)?,
        None => p.self_signed(&key)?,
    };
    Ok(Ca { cert, key })
}

fn leaf(cn: &str, now: OffsetDateTime, serial: u8) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "anchord dev");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(365);
    p.serial_number = Some(SerialNumber::from(vec![0x10, serial]));
    Ok(p)
}

fn write(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    fs::write(dir.join(name), text)
}

/// Writes a private key readable by its owner only. The mode is set when the file is made
/// (never a readable file chmod-ed later), and a file left from an earlier run is replaced,
/// not reused with its old mode.
fn write_key(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(text.as_bytes())
}

/// A throwaway CA and a certificate it issued for `name` (a DNS name or an IP address), as
/// DER, with the certificate's PKCS#8 key: for unit tests.
#[cfg(test)]
pub(crate) fn ca_and_leaf(name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ca_key = KeyPair::generate().expect("key generation works");
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "ca");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).expect("a CA certificate");
    let key = KeyPair::generate().expect("key generation works");
    let leaf = CertificateParams::new(vec![name.to_owned()])
        .expect("a valid name")
        .signed_by(&key, &ca, &ca_key)
        .expect("a signed certificate");
    (ca.der().to_vec(), leaf.der().to_vec(), key.serialize_der())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_keys_are_written_owner_only_even_over_old_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        // A key left world-readable by an earlier run is replaced, not reused.
        fs::write(dir.path().join("server.key"), "old").unwrap();
        fs::set_permissions(
            dir.path().join("server.key"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        generate(dir.path(), OffsetDateTime::now_utc()).unwrap();
        let mut keys = Vec::new();
        for e in fs::read_dir(dir.path()).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "key") {
                keys.push((path.file_name().unwrap().to_owned(), mode(&path)));
            }
        }
        keys.sort();
        let expected: Vec<_> = [
            "device-ecdsa.key",
            "device-expired.key",
            "device-revoked.key",
            "device-rsa.key",
            "device-unknown-ca.key",
            "device-wrong-eku.key",
            "issuing-ca.key",
            "ocsp-noeku.key",
            "ocsp-responder.key",
            "root-ca.key",
            "server-rsa.key",
            "server.key",
        ]
        .iter()
        .map(|n| (std::ffi::OsString::from(n), 0o600))
        .collect();
        assert_eq!(keys, expected);
        assert!(fs::read_to_string(dir.path().join("server.key"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
