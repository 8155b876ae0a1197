//! The core's error type. Each variant names one reason a request cannot be served; every
//! dialect maps these onto its own error shape and status codes, so the reasons are decided
//! once, here, and worded per dialect there.

use crate::auth::Permission;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("authentication failed")]
    Unauthenticated,
    #[error("permission denied: this key may not {}", .0.describe())]
    Forbidden(Permission),
    #[error("empty memo")]
    EmptyMemo,
    #[error("unknown kind")]
    UnknownKind,
    /// A parameter is missing, has the wrong type or is out of range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParam { name: &'static str, reason: String },
    #[error("token not found")]
    TokenNotFound,
    /// A token cannot be deleted while it has incidents, unless they are cleared with it.
    #[error("the token has incidents")]
    TokenHasIncidents,
    #[error("incident not found")]
    IncidentNotFound,
    #[error("key not found")]
    KeyNotFound,
    #[error("factory token not found")]
    FactoryNotFound,
    #[error("alert output not found")]
    OutputNotFound,
    #[error("flock not found")]
    FlockNotFound,
    #[error("flock name cannot be empty")]
    FlockNameEmpty,
    #[error("flock name too long")]
    FlockNameTooLong,
    #[error("cannot delete default flock")]
    DefaultFlock,
    #[error("cannot delete a non-empty flock")]
    FlockNotEmpty,
    #[error("this kind has no file to download")]
    NoFile,
    /// An upload is larger than its kind accepts.
    #[error("{name} is larger than {limit} bytes")]
    TooLarge { name: &'static str, limit: usize },
    /// Too much heavy work (uploads being checked) is queued: try again shortly.
    #[error("busy: too many uploads are being processed, try again shortly")]
    Busy,
    /// The kind needs something this server is not set up for (AWS settings for aws-id).
    #[error("kind {kind} is not available on this server: {reason}")]
    KindUnavailable { kind: &'static str, reason: String },
    /// A service the kind works through (AWS) refused or failed; the text says which and why.
    #[error("{0}")]
    Upstream(String),
    #[error("storage error: {0}")]
    Storage(#[from] anyhow::Error),
}

impl CoreError {
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        CoreError::InvalidParam { name, reason: reason.into() }
    }
}

/// A store query's FQL mistakes are the caller's (a parameter error); anything else the store
/// fails with stays a storage error.
impl From<crate::store::StoreError> for CoreError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Fql(f) => {
                CoreError::invalid("filter", format!("is invalid at position {}: {}", f.position, f.message))
            }
            crate::store::StoreError::Backend(e) => CoreError::Storage(e),
        }
    }
}

/// A refused network, as the parameter `cidr` (callers with their own parameter name re-word it).
impl From<crate::net::NetError> for CoreError {
    fn from(e: crate::net::NetError) -> Self {
        CoreError::invalid("cidr", e.to_string())
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
