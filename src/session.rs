//! Short-lived session tokens for dialects whose clients log in first (Conjur authn, Falcon
//! OAuth2): `{"sub": key id, "exp": unix seconds, "jti": random id, "sig": HMAC-SHA256}` as
//! JSON. The random id makes every login's token its own, so revoking one session never ends
//! another of the same key.
//!
//! The signing key is made at start-up and never stored, so tokens are stateless, die with
//! the process, and are good on the node that issued them (clients log in again elsewhere).
//! The key behind a token is checked again on every use, so deleting or deactivating a key
//! ends its sessions at once. Revoked tokens are remembered until they would have expired.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::model::now_us;

pub struct Sessions {
    key: [u8; 32],
    life_secs: i64,
    /// Signature → expiry of tokens revoked before they expired.
    revoked: Mutex<HashMap<String, i64>>,
}

fn now_secs() -> i64 {
    now_us() / 1_000_000
}

impl Sessions {
    pub fn new(life_secs: i64) -> Sessions {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        Sessions { key, life_secs, revoked: Mutex::new(HashMap::new()) }
    }

    pub fn life_secs(&self) -> i64 {
        self.life_secs
    }

    fn sign(&self, key_id: &str, exp: i64, jti: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{key_id}\n{exp}\n{jti}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new token (JSON text) for `key_id`.
    pub fn issue(&self, key_id: &str) -> String {
        let exp = now_secs() + self.life_secs;
        let jti = crate::ids::hex_id(12);
        json!({ "sub": key_id, "exp": exp, "jti": jti, "sig": self.sign(key_id, exp, &jti) }).to_string()
    }

    /// The key id of a valid, unexpired, unrevoked token.
    pub fn verify(&self, token: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(token).ok()?;
        let (sub, exp, jti, sig) = (v["sub"].as_str()?, v["exp"].as_i64()?, v["jti"].as_str()?, v["sig"].as_str()?);
        if exp <= now_secs() || !crate::auth::ct_eq(&self.sign(sub, exp, jti), sig) {
            return None;
        }
        if self.revoked.lock().unwrap_or_else(|e| e.into_inner()).contains_key(sig) {
            return None;
        }
        Some(sub.to_string())
    }

    /// Revokes a token (if it is one of ours); true when it was valid.
    pub fn revoke(&self, token: &[u8]) -> bool {
        if self.verify(token).is_none() {
            return false;
        }
        let v: Value = serde_json::from_slice(token).unwrap_or_default();
        let (Some(sig), Some(exp)) = (v["sig"].as_str(), v["exp"].as_i64()) else { return false };
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_secs();
        revoked.retain(|_, e| *e > now);
        revoked.insert(sig.to_string(), exp);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_revoke() {
        let s = Sessions::new(60);
        let t = s.issue("key-1");
        assert_eq!(s.verify(t.as_bytes()).as_deref(), Some("key-1"));
        let forged = t.replace("key-1", "key-2");
        assert_eq!(s.verify(forged.as_bytes()), None);
        assert_eq!(Sessions::new(60).verify(t.as_bytes()), None, "another process's key");
        let other = s.issue("key-1");
        assert_ne!(other, t, "every login gets its own token");
        assert!(s.revoke(t.as_bytes()));
        assert_eq!(s.verify(t.as_bytes()), None);
        assert_eq!(s.verify(other.as_bytes()).as_deref(), Some("key-1"), "revoking one session keeps the other");
        assert!(!s.revoke(b"garbage"));
        let expired = Sessions::new(-1);
        assert_eq!(expired.verify(expired.issue("k").as_bytes()), None);
    }
}
