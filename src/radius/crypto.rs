//! RADIUS authenticators and attribute encryption (RFC 2865 §3, RFC 3579 §3.2, RFC 2548 §2.4).
//!
//! MD5 and HMAC-MD5 come from RustCrypto; comparisons are constant-time (`subtle`).

use std::fmt;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Offset of the authenticator in the header.
pub const AUTHENTICATOR_OFFSET: usize = 4;
/// Length of an authenticator and of a Message-Authenticator value.
pub const AUTHENTICATOR_LEN: usize = 16;

/// A RADIUS shared secret. Never printed, wiped on drop.
#[derive(Clone)]
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw secret, for keyed hashes only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// HMAC-MD5 over `packet` keyed with the secret (RFC 3579 §3.2). The caller zeroes the
/// Message-Authenticator value bytes and puts the right authenticator in the header first.
pub fn message_authenticator(secret: &SharedSecret, packet: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret.expose())
        .expect("HMAC accepts keys of any length");
    mac.update(packet);
    mac.finalize().into_bytes().into()
}

/// Response Authenticator: MD5(Code|ID|Length|RequestAuth|Attributes|Secret) (RFC 2865 §3).
/// `packet` is the full reply with the Request Authenticator in its header.
pub fn response_authenticator(secret: &SharedSecret, packet: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(packet);
    h.update(secret.expose());
    h.finalize().into()
}

/// Request Authenticator of an Accounting, Disconnect or CoA request (RFC 2866 §3,
/// RFC 5176 §2.3): MD5 over the packet with 16 zero bytes in place of the authenticator
/// field (whatever it holds), then the secret.
pub fn request_authenticator(secret: &SharedSecret, packet: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(packet.get(..4).unwrap_or_default());
    h.update([0u8; 16]);
    h.update(packet.get(20..).unwrap_or_default());
    h.update(secret.expose());
    h.finalize().into()
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Hides a User-Password-style value (RFC 2865 §5.2, `encrypt=1`): padded with zeros to
/// a multiple of 16 bytes (at most 128), each block XORed with MD5(secret + the previous
/// block, the Request Authenticator for the first).
///
/// # Errors
/// A value longer than 128 bytes.
pub fn user_password_encrypt(
    secret: &SharedSecret,
    request_authenticator: &[u8; 16],
    value: &[u8],
) -> Result<Vec<u8>, String> {
    if value.len() > 128 {
        return Err(format!(
            "{} bytes: an encrypt=1 value holds at most 128",
            value.len()
        ));
    }
    let mut plain = Zeroizing::new(value.to_vec());
    while plain.is_empty() || plain.len() % 16 != 0 {
        plain.push(0);
    }
    let mut out: Vec<u8> = Vec::with_capacity(plain.len());
    for chunk in plain.chunks(16) {
        let mut h = Md5::new();
        h.update(secret.expose());
        match out.len().checked_sub(16).and_then(|at| out.get(at..)) {
            Some(previous) => h.update(previous),
            None => h.update(request_authenticator),
        }
        let b = h.finalize();
        let c: Vec<u8> = chunk.iter().zip(b.iter()).map(|(p, k)| p ^ k).collect();
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Encrypts an MS-MPPE key (RFC 2548 §2.4.2), or any `encrypt=2` value (Tunnel-Password,
/// RFC 2868 §3.5, the same construction): returns `salt | C`.
///
/// `salt` must have its top bit set and differ from every other salt in the same reply;
/// the caller chooses it (this module has no randomness).
pub fn mppe_encrypt(
    secret: &SharedSecret,
    request_authenticator: &[u8; 16],
    salt: [u8; 2],
    key: &[u8],
) -> Vec<u8> {
    let mut plain = Zeroizing::new(Vec::with_capacity(key.len() + 16));
    // A key longer than 255 bytes cannot be expressed; MPPE keys are 32 bytes.
    plain.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
    plain.extend_from_slice(key);
    while plain.len() % 16 != 0 {
        plain.push(0);
    }
    let mut out = Vec::with_capacity(2 + plain.len());
    out.extend_from_slice(&salt);
    let mut prev: Vec<u8> = Vec::new();
    for (i, chunk) in plain.chunks(16).enumerate() {
        let mut h = Md5::new();
        h.update(secret.expose());
        if i == 0 {
            h.update(request_authenticator);
            h.update(salt);
        } else {
            h.update(&prev);
        }
        let b = h.finalize();
        let c: Vec<u8> = chunk.iter().zip(b.iter()).map(|(p, k)| p ^ k).collect();
        out.extend_from_slice(&c);
        prev = c;
    }
    out
}

/// Decrypts an MS-MPPE key attribute value (`salt | C`); `None` when malformed.
pub fn mppe_decrypt(
    secret: &SharedSecret,
    request_authenticator: &[u8; 16],
    value: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let (salt, cipher) = value.split_at_checked(2)?;
    if cipher.is_empty() || cipher.len() % 16 != 0 {
        return None;
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(cipher.len()));
    let mut prev: &[u8] = &[];
    for (i, chunk) in cipher.chunks(16).enumerate() {
        let mut h = Md5::new();
        h.update(secret.expose());
        if i == 0 {
            h.update(request_authenticator);
            h.update(salt);
        } else {
            h.update(prev);
        }
        let b = h.finalize();
        plain.extend(chunk.iter().zip(b.iter()).map(|(c, k)| c ^ k));
        prev = chunk;
    }
    let (&len, rest) = plain.split_first()?;
    let key = rest.get(..usize::from(len))?;
    Some(Zeroizing::new(key.to_vec()))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use super::*;

    fn secret() -> SharedSecret {
        SharedSecret::new(b"testing123".to_vec())
    }

    #[test]
    fn hmac_md5_matches_rfc2202_vector() {
        // RFC 2202 §2 test case 2: key "Jefe".
        let s = SharedSecret::new(b"Jefe".to_vec());
        let mac = message_authenticator(&s, b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "750c783e6ab0b503eaa86e310a5db738");
    }

    #[test]
    fn mppe_matches_independent_implementation() {
        // Expected value computed with Python's hashlib (see tests/vectors/README.md).
        let auth: [u8; 16] = core::array::from_fn(|i| u8::try_from(i).unwrap());
        let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(7)).collect();
        let enc = mppe_encrypt(&secret(), &auth, [0x80, 0x01], &key);
        assert_eq!(enc.len(), 2 + 48);
        assert_eq!(
            hex::encode(&enc),
            include_str!("../../tests/vectors/mppe-recv-key.hex").trim()
        );
        let dec = mppe_decrypt(&secret(), &auth, &enc).unwrap();
        assert_eq!(dec.as_slice(), key.as_slice());
    }

    #[test]
    fn mppe_decrypt_rejects_bad_lengths() {
        let auth = [0u8; 16];
        assert!(mppe_decrypt(&secret(), &auth, &[0x80]).is_none());
        assert!(mppe_decrypt(&secret(), &auth, &[0x80, 0x01, 1, 2, 3]).is_none());
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", secret()), "SharedSecret(<redacted>)");
    }

    #[test]
    fn ct_eq_checks_length_and_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
