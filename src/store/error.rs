//! The store's error type: what a caller may act on ([`StoreError::Fql`], a query it built
//! wrong) kept apart from everything the database itself can fail with.

use crate::fql::FqlError;

/// Why a [`Store`](super::Store) call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query's filter or sort names a field or value its entity cannot use: the caller's
    /// mistake, reported with its position in the filter.
    #[error(transparent)]
    Fql(#[from] FqlError),
    /// The database failed, or holds something it should not (a row that does not decode).
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(e.into())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(e.into())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_keep_their_wording_and_their_kind() {
        let e: StoreError = FqlError { position: 3, message: "unknown field".into() }.into();
        assert!(matches!(e, StoreError::Fql(ref f) if f.position == 3));
        assert_eq!(e.to_string(), "invalid filter at position 3: unknown field");
        let e: StoreError = anyhow::anyhow!("disk full").context("cannot write").into();
        assert!(matches!(e, StoreError::Backend(_)));
        assert_eq!(format!("{e:#}"), "cannot write: disk full");
    }
}
