//! The HTTP listener's token files (web images): read through the [`HitSink`] and kept in
//! memory, since a file is served on every hit of its token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::TokenFile;
use crate::recorder::HitSink;

/// Bytes of stored files kept in memory.
const FILE_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// (bytes held, files by (token id, file name)).
type Cache = (usize, HashMap<(String, &'static str), Arc<TokenFile>>);

/// Token files by (token, name); cleared when full. Files never change, and a deleted token
/// is unknown before its file would be served, so entries cannot go stale.
pub struct Files {
    sink: Arc<dyn HitSink>,
    cache: Mutex<Cache>,
}

impl Files {
    pub fn new(sink: Arc<dyn HitSink>) -> Files {
        Files { sink, cache: Mutex::new((0, HashMap::new())) }
    }

    /// The file `name` of `token_id`; None when there is none or it cannot be read (logged).
    pub async fn get(&self, token_id: &str, name: &'static str) -> Option<Arc<TokenFile>> {
        let key = (token_id.to_string(), name);
        if let Some(f) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).1.get(&key) {
            return Some(f.clone());
        }
        let f = match self.sink.token_file(token_id, name).await {
            Ok(Some(f)) => Arc::new(f),
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, token = token_id, "could not read token file");
                return None;
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 + f.data.len() > FILE_CACHE_BYTES {
            *cache = (0, HashMap::new());
        }
        cache.0 += f.data.len();
        cache.1.insert(key, f.clone());
        Some(f)
    }
}
