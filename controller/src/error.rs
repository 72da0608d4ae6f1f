//! What can go wrong in the controller's domain (VMs, hosts, operations, migrations,
//! the policy), in its own terms; the API maps each case to an HTTP status.

use nova_http::FieldError;

use crate::store::StoreError;

/// A domain operation that did not happen, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist (or the caller may not see it).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A request value is wrong; names the field.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The request is fine but the state of things refuses it (a taken name, a VM
    /// that is already migrating, a full quota).
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    /// The object changed since the revision the caller named (`If-Match`).
    #[error("the object is at revision {actual}, not {expected}")]
    Stale { expected: u64, actual: u64 },
    /// The caller's credential does not allow this (another host's id).
    #[error("{0}")]
    Forbidden(String),
    /// The credential is not (or no longer) valid (a used join token).
    #[error("{0}")]
    Unauthorized(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A host's hostd refused or could not be reached.
    #[error("host: {0}")]
    Hostd(#[from] nova_http::Error),
}

impl Error {
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
            field: None,
        }
    }

    /// A conflict about one field of the request (`name` of a taken VM name).
    pub fn conflict_on(field: &str, message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

/// A store error about one object: "not found" in the object's own words.
pub fn missing(what: &'static str) -> impl FnOnce(StoreError) -> Error {
    move |e| match e {
        StoreError::NotFound(_) => Error::NotFound(what),
        e => e.into(),
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Stale {
                expected, actual, ..
            } => Error::Stale { expected, actual },
            e => Error::Store(e),
        }
    }
}

/// Domain results.
pub type Result<T> = std::result::Result<T, Error>;
