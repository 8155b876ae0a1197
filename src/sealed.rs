//! Secrets that must be recoverable, encrypted at rest: factory-token values (Falcon shows an
//! installation token's value again, the Console lists factory auth strings) and, later, honey
//! AWS secret keys.
//!
//! ChaCha20-Poly1305 from `ring`, which the binary already links for TLS, so sealing costs no
//! new crate. The 256-bit key lives in `secrets.key` in the data directory (mode 0600), never in
//! the database: a copy of the database alone reveals nothing. Nodes that share one PostgreSQL
//! database need the same key file. Each sealed value is bound to its context (for example
//! `factory:<id>`) as associated data, so a ciphertext moved to another row does not open.
//! Sealed text is `v1.` + base64url(nonce ‖ ciphertext ‖ tag); nonces are random (96 bits), which
//! is safe for the few thousand values a key seals.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

const PREFIX: &str = "v1.";

pub struct SecretBox {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_key(bytes: &[u8; 32]) -> SecretBox {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte ChaCha20-Poly1305 key");
        SecretBox { key: LessSafeKey::new(key) }
    }

    /// A key that lives only as long as this process (values sealed with it cannot be opened
    /// after a restart): for tools and tests that keep nothing.
    pub fn ephemeral() -> SecretBox {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        SecretBox::from_key(&k)
    }

    /// The key in `path` (64 hex characters), made there (mode 0600) when the file is missing.
    pub fn load_or_create(path: &Path) -> anyhow::Result<SecretBox> {
        let text = crate::datadir::read_or_create(path, || {
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            hex::encode(k)
        })?;
        let raw = hex::decode(&text).ok().filter(|b| b.len() == 32);
        let raw = raw.with_context(|| format!("{} does not hold a 256-bit key in hex", path.display()))?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&raw);
        Ok(SecretBox::from_key(&k))
    }

    /// `plain` encrypted for `context`.
    pub fn seal(&self, context: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// The plain text of a value sealed for `context`; None when it was sealed with another
    /// key, for another context, or was altered.
    pub fn open(&self, context: &str, sealed: &str) -> Option<String> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_for_its_context_and_key() {
        let b = SecretBox::ephemeral();
        let s = b.seal("factory:1", "the value");
        assert!(s.starts_with(PREFIX));
        assert!(!s.contains("the value"));
        assert_eq!(b.open("factory:1", &s).as_deref(), Some("the value"));
        assert_eq!(b.open("factory:2", &s), None, "moved to another row");
        assert_eq!(SecretBox::ephemeral().open("factory:1", &s), None, "another key");
        assert_ne!(b.seal("factory:1", "the value"), s, "fresh nonce each time");
        let mut tampered = s.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(b.open("factory:1", &String::from_utf8(tampered).unwrap()), None);
        for junk in ["", "v1.", "v1.!!", "v2.AAAA", "v1.AAAA"] {
            assert_eq!(b.open("factory:1", junk), None, "{junk}");
        }
    }

    #[test]
    fn key_file_is_made_once_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealed = SecretBox::load_or_create(&path).unwrap().seal("c", "v");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(SecretBox::load_or_create(&path).unwrap().open("c", &sealed).as_deref(), Some("v"));
        std::fs::write(&path, "short").unwrap();
        assert!(SecretBox::load_or_create(&path).is_err());
    }
}
