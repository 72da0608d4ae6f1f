//! Owns the error type of the chunk store: every failure a caller can see, each naming
//! the object (chunk id, manifest, key, field) it concerns.

use thiserror::Error;

/// Everything the chunk store can fail with.
#[derive(Debug, Error)]
pub enum BackupError {
    /// A chunk id that is not lowercase hex of the expected length (never becomes a path).
    #[error("invalid chunk id {0:?}: expected 64 lowercase hex characters")]
    InvalidChunkId(String),
    /// A backend key that would escape the store root or contains characters we refuse.
    #[error("invalid object key {0:?}: only [a-z0-9._-/] segments, no '..', no leading '/'")]
    InvalidKey(String),
    /// A stored chunk that does not decode (bad magic, version, flags, length, compression).
    #[error("malformed chunk {id}: {reason}")]
    MalformedChunk { id: String, reason: String },
    /// A chunk whose content does not hash to its id (damaged or substituted).
    #[error("chunk {id} is damaged: its content hashes to {actual}")]
    ChunkHashMismatch { id: String, actual: String },
    /// Decryption failed: wrong key or tampered ciphertext.
    #[error("chunk {0} failed authenticated decryption (wrong key or tampered data)")]
    Decrypt(String),
    /// A manifest that does not decode or violates an invariant.
    #[error("malformed manifest {name}: {reason}")]
    MalformedManifest { name: String, reason: String },
    /// The store or manifest is encrypted and no key (or another key) was given.
    #[error("encryption key mismatch: {0}")]
    KeyMismatch(String),
    /// A requested object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Bad argument from the caller, naming the field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// Local file I/O.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The object store backend.
    #[error("object store: {0}")]
    ObjectStore(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, BackupError>;

impl BackupError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackupError::Io {
            context: context.into(),
            source,
        }
    }
}
