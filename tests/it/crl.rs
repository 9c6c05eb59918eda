//! CRL signatures against OpenSSL-made CAs and CRLs: a CRL the issuer's key did not sign
//! (another key with the issuer's name, a flipped byte) is bad, not silent, and SHA-1
//! signatures are refused as they are for OCSP answers.

use anchord::pki::crl::{Crl, Silent};
use anchord::pki::revocation::State;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A CA, a device it issued and an empty CRL made by OpenSSL with `key` (`ec` for P-256,
/// else an `openssl req -newkey` argument) and `md`, all DER.
fn openssl_pki(key: &str, md: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    openssl_pki_with(key, md, "")
}

/// The same, with `ca.cnf` lines added to the CA section (e.g. CRL extensions).
fn openssl_pki_with(key: &str, md: &str, cnf: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| crate::harness::openssl(dir.path(), args);
    let newkey: &[&str] = if key == "ec" {
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    } else {
        &["-newkey", key]
    };
    let req = |rest: &[&str]| run(&[&["req", "-nodes"], newkey, rest].concat());
    req(&[
        "-x509",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=ca",
        "-days",
        "2",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    req(&[
        "-new", "-keyout", "d.key", "-out", "d.csr", "-subj", "/CN=d",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "d.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-out",
        "d.pem",
        "-days",
        "1",
        "-set_serial",
        "7",
    ]);
    std::fs::write(dir.path().join("index.txt"), "").unwrap();
    std::fs::write(
        dir.path().join("ca.cnf"),
        format!("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ndefault_md = {md}\ndefault_crl_days = 1\n{cnf}"),
    )
    .unwrap();
    run(&[
        "ca", "-gencrl", "-batch", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem",
        "-out", "crl.pem",
    ]);
    let der = |f: &str| {
        pem::parse(std::fs::read(dir.path().join(f)).unwrap())
            .unwrap()
            .into_contents()
    };
    (der("ca.pem"), der("d.pem"), der("crl.pem"))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn a_crl_the_issuer_did_not_sign_is_bad_not_silent() {
    let (ca, dev, crl_der) = openssl_pki("ec", "sha256");
    let (ca2, _, _) = openssl_pki("ec", "sha256");
    let (_, ca) = X509Certificate::from_der(&ca).unwrap();
    let (_, ca2) = X509Certificate::from_der(&ca2).unwrap();
    let (_, dev) = X509Certificate::from_der(&dev).unwrap();
    let crl = Crl::parse("good.crl", &crl_der).unwrap();
    assert_eq!(crl.state_of(&dev, &ca, now(), 60, 3600), Ok(State::Good));
    // Same name ("CN=ca"), another key: what a forger with the CA's name would make.
    let other = Crl::parse("good.crl", &crl_der).unwrap();
    assert_eq!(
        other.state_of(&dev, &ca2, now(), 60, 3600),
        Err(Silent::BadSignature)
    );
    let mut flipped = crl_der.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x55;
    let flipped = Crl::parse("flipped.crl", &flipped).unwrap();
    for _ in 0..2 {
        assert_eq!(
            flipped.state_of(&dev, &ca, now(), 60, 3600),
            Err(Silent::BadSignature)
        );
    }
}

#[test]
fn sha1_signed_crls_are_refused_as_ocsp_answers_are() {
    let (ca, dev, sha1) = openssl_pki("rsa:2048", "sha1");
    let (_, ca) = X509Certificate::from_der(&ca).unwrap();
    let (_, dev) = X509Certificate::from_der(&dev).unwrap();
    let crl = Crl::parse("sha1.crl", &sha1).unwrap();
    assert_eq!(
        crl.state_of(&dev, &ca, now(), 60, 3600),
        Err(Silent::BadSignature)
    );
    let (ca, dev, sha256) = openssl_pki("rsa:2048", "sha256");
    let (_, ca) = X509Certificate::from_der(&ca).unwrap();
    let (_, dev) = X509Certificate::from_der(&dev).unwrap();
    let crl = Crl::parse("sha256.crl", &sha256).unwrap();
    assert_eq!(crl.state_of(&dev, &ca, now(), 60, 3600), Ok(State::Good));
}

#[test]
fn a_crl_of_another_key_of_the_same_name_is_silent_not_forged() {
    // A CA re-keyed under its old name: its CRL carries the new key's identifier
    // (authorityKeyIdentifier), so it is not about devices of the old key.
    let aki = "crl_extensions = crlext\n[crlext]\nauthorityKeyIdentifier = keyid:always\n";
    let (new_ca, _, crl_der) = openssl_pki_with("ec", "sha256", aki);
    let (old_ca, old_dev, _) = openssl_pki("ec", "sha256");
    let (_, new_ca) = X509Certificate::from_der(&new_ca).unwrap();
    let (_, old_ca) = X509Certificate::from_der(&old_ca).unwrap();
    let (_, old_dev) = X509Certificate::from_der(&old_dev).unwrap();
    let crl = Crl::parse("new-key.crl", &crl_der).unwrap();
    assert!(crl.names(&new_ca) && crl.signed_by(&new_ca));
    assert!(!crl.names(&old_ca));
    assert_eq!(
        crl.state_of(&old_dev, &old_ca, now(), 60, 3600),
        Err(Silent::OtherIssuer)
    );
}
