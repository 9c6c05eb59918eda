//! The Class attribute anchord puts in every Access-Accept (RFC 2865 §5.25), which the NAS
//! echoes unchanged in its accounting: how an accounting record joins the authentication
//! that created it without trusting the MAC address, the User-Name or an Acct-Session-Id
//! (hostapd reuses one when a MAC re-authenticates within seconds).
//!
//! A minted Class is `anc1` | a random 16-byte authentication id | the first 16 bytes of
//! HMAC-SHA256 over the two under a key of this process's: opaque to the NAS, and a Class
//! nobody here minted (or altered) does not open. The key is made at start, so a Class
//! from before a restart no longer opens: such sessions are tracked from their accounting
//! alone until the device authenticates again.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::radius::crypto::ct_eq;

/// The first bytes of every Class anchord mints.
const MAGIC: &[u8; 4] = b"anc1";
/// Bytes of the tag kept.
const TAG: usize = 16;
/// Length of a minted Class.
pub const CLASS_LEN: usize = MAGIC.len() + 16 + TAG;

/// One authentication's id: what a minted Class carries.
pub type AuthId = [u8; 16];

/// The key Class values are minted and opened with. Never printed.
pub struct ClassKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ClassKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClassKey(<redacted>)")
    }
}

impl ClassKey {
    /// A new random key.
    pub fn random() -> Self {
        Self(Zeroizing::new(rand::random()))
    }

    fn tag(&self, id: &AuthId) -> [u8; TAG] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..])
            .expect("HMAC accepts keys of any length");
        mac.update(MAGIC);
        mac.update(id);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(full.get(..TAG).unwrap_or_default());
        tag
    }

    /// A new authentication id and its Class value.
    pub fn mint(&self) -> (AuthId, Vec<u8>) {
        let id: AuthId = rand::random();
        let mut class = Vec::with_capacity(CLASS_LEN);
        class.extend_from_slice(MAGIC);
        class.extend_from_slice(&id);
        class.extend_from_slice(&self.tag(&id));
        (id, class)
    }

    /// The authentication id in `class`, if this key minted it.
    pub fn open(&self, class: &[u8]) -> Option<AuthId> {
        if class.len() != CLASS_LEN || !class.starts_with(MAGIC) {
            return None;
        }
        let id: AuthId = class.get(MAGIC.len()..MAGIC.len() + 16)?.try_into().ok()?;
        let tag = class.get(MAGIC.len() + 16..)?;
        ct_eq(tag, &self.tag(&id)).then_some(id)
    }
}

/// Hex of an authentication id, for logs, audit records and the admin listener.
pub fn id_text(id: &AuthId) -> String {
    crate::pki::facts::hex_lower(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_class_opens_to_its_id_and_nothing_else_does() {
        let key = ClassKey::random();
        let (id, class) = key.mint();
        assert_eq!(class.len(), CLASS_LEN);
        assert_eq!(key.open(&class), Some(id));
        let (other, _) = key.mint();
        assert_ne!(id, other, "ids are random");
        // Another process's key (a restart), one altered byte, a cut or an admin's Class.
        assert_eq!(ClassKey::random().open(&class), None);
        for at in 0..class.len() {
            let mut bad = class.clone();
            bad[at] ^= 0x01;
            assert_eq!(key.open(&bad), None, "byte {at} altered");
        }
        assert_eq!(key.open(&class[..CLASS_LEN - 1]), None);
        assert_eq!(key.open(b"staff"), None);
        assert!(!format!("{key:?}").contains(&id_text(&id)));
    }
}
