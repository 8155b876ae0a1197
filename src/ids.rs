//! Random identifiers and secrets, all from the operating system's CSPRNG.

use base64::Engine;
use rand::{rngs::OsRng, Rng, RngCore};

const TOKEN_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Length of a token id: 25 characters of `[0-9a-z]` (about 129 bits).
pub const TOKEN_ID_LEN: usize = 25;

pub fn token_id() -> String {
    let mut rng = OsRng;
    (0..TOKEN_ID_LEN).map(|_| TOKEN_ALPHABET[rng.gen_range(0..TOKEN_ALPHABET.len())] as char).collect()
}

/// True for a string that has the shape of a token id.
pub fn is_token_id(s: &str) -> bool {
    s.len() == TOKEN_ID_LEN && s.bytes().all(is_token_byte)
}

pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_lowercase()
}

/// A secret: 32 random bytes, base64 (URL-safe alphabet, no padding, so it can travel in a query
/// string untouched).
pub fn secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A key id: a random UUID (v4), as SpaceSiren clients expect.
pub fn key_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A short random hex id (for flocks).
pub fn hex_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_have_the_documented_shape_and_differ() {
        let a = token_id();
        let b = token_id();
        assert!(is_token_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_token_id("ABCDEFGHIJKLMNOPQRSTUVWXY"));
        assert!(!is_token_id("abc"));
    }

    #[test]
    fn secrets_are_43_url_safe_chars() {
        let s = secret();
        assert_eq!(s.len(), 43);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(s, secret());
    }
}
