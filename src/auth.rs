//! Credentials and permissions: how a secret becomes an [`Actor`], and what each role may do.
//!
//! Secrets are 256-bit random values, so a fast hash (SHA-256) at rest is safe: there is nothing
//! to brute-force. Lookups go by hash, and the stored hash is compared again in constant time so
//! no code path compares secret material byte by byte with early exit.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::{ApiKey, Micros, Role};

/// SHA-256 of a secret, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two hashes (or any two strings).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Something a caller may want to do; each role grants a set of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read tokens, flocks, incidents.
    Read,
    /// Create tokens.
    CreateTokens,
    /// Change, enable/disable and delete tokens.
    ChangeTokens,
    /// Download a token's file.
    Download,
    /// Acknowledge and delete incidents.
    ManageIncidents,
    /// Create, rename and delete flocks.
    ManageFlocks,
    /// Create and change API keys.
    ManageKeys,
    /// Create, list, revoke and delete factory tokens.
    ManageFactories,
    /// Add and remove alert outputs (global or a flock's).
    ManageOutputs,
}

impl Permission {
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::CreateTokens => "create Canarytokens",
            Permission::ChangeTokens => "change Canarytokens",
            Permission::Download => "download Canarytokens",
            Permission::ManageIncidents => "change incidents",
            Permission::ManageFlocks => "manage flocks",
            Permission::ManageKeys => "manage API keys",
            Permission::ManageFactories => "manage factory tokens",
            Permission::ManageOutputs => "manage alert outputs",
        }
    }
}

/// What each role may do. `deploy` (keys of enrolled hosts, and factory tokens) may only
/// create tokens and download their files — not even read.
pub fn role_allows(role: Role, p: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => true,
        Role::Analyst => matches!(p, Read | CreateTokens | ChangeTokens | Download | ManageIncidents),
        Role::ReadOnly => matches!(p, Read | Download),
        Role::Deploy => matches!(p, CreateTokens | Download),
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Actor {
    /// Key id, or `cli` for the local command line.
    pub id: String,
    pub role: Role,
    /// When set, the actor sees and touches only this flock.
    pub flock_id: Option<String>,
    /// Caller's address as seen by the listener.
    pub src_ip: String,
    /// Which API the request came through.
    pub dialect: &'static str,
}

impl Actor {
    /// The operator at the local command line: full rights.
    pub fn local() -> Actor {
        Actor { id: "cli".into(), role: Role::Admin, flock_id: None, src_ip: "local".into(), dialect: "cli" }
    }

    pub fn may(&self, p: Permission) -> bool {
        role_allows(self.role, p)
    }
    /// Whether this actor may see or act inside `flock_id`.
    pub fn sees_flock(&self, flock_id: &str) -> bool {
        self.flock_id.as_deref().is_none_or(|f| f == flock_id)
    }
}

/// Why a key cannot be used right now (None = usable).
pub fn key_unusable(key: &ApiKey, now: Micros) -> Option<&'static str> {
    if !key.active {
        Some("key is inactive")
    } else if key.expire_us != 0 && key.expire_us <= now {
        Some("key has expired")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn ct_eq_matches_only_equal() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
    }

    #[test]
    fn roles_are_least_privilege() {
        use Permission::*;
        let all = [
            Read,
            CreateTokens,
            ChangeTokens,
            Download,
            ManageIncidents,
            ManageFlocks,
            ManageKeys,
            ManageFactories,
            ManageOutputs,
        ];
        let allowed = |r: Role| all.iter().copied().filter(|p| role_allows(r, *p)).collect::<Vec<_>>();
        assert_eq!(allowed(Role::Admin), all);
        assert_eq!(allowed(Role::Analyst), [Read, CreateTokens, ChangeTokens, Download, ManageIncidents]);
        assert_eq!(allowed(Role::ReadOnly), [Read, Download]);
        assert_eq!(allowed(Role::Deploy), [CreateTokens, Download]);
    }

    #[test]
    fn expired_and_inactive_keys_are_unusable() {
        let mut k = ApiKey {
            key_id: "k".into(),
            secret_hash: "h".into(),
            role: Role::Admin,
            flock_id: None,
            active: true,
            expire_us: 0,
            description: String::new(),
            created_us: 0,
            last_used_us: None,
            created_by: "cli".into(),
            annotations: Vec::new(),
        };
        assert_eq!(key_unusable(&k, 100), None);
        k.expire_us = 50;
        assert_eq!(key_unusable(&k, 100), Some("key has expired"));
        k.expire_us = 0;
        k.active = false;
        assert_eq!(key_unusable(&k, 100), Some("key is inactive"));
    }
}
