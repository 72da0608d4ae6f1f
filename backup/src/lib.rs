//! nova-backup: the deduplicating backup chunk store (like Proxmox Backup Server) that
//! hostd writes VM disk and memory backups with and the controller verifies, prunes and
//! garbage-collects. It owns chunking, chunk naming and encoding, manifests, the storage
//! backends (a directory, an S3-compatible bucket), incremental backups driven by a
//! dirty-block bitmap, restore, verify, GC and retention. It does not own scheduling,
//! tenancy or the dirty bitmap's tracking (the VMM and the controller do).

pub mod backend;
pub mod chunk;
pub mod chunker;
pub mod dirty;
pub mod error;
pub mod maintenance;
pub mod manifest;
pub mod retention;
pub mod s3;
mod sparse;
pub mod store;

pub use backend::{Backend, DirBackend, ObjectInfo};
pub use chunk::{ChunkId, CryptKey, HashAlgo};
pub use dirty::DirtyBlocks;
pub use error::{BackupError, Result};
pub use maintenance::{GcReport, VerifyReport};
pub use manifest::{ChunkRef, Chunking, FileIndex, Manifest};
pub use retention::{select_retained, RetentionPolicy};
pub use s3::{S3Backend, S3Config};
pub use store::{open_regular, BackupFileResult, Store, StoreConfig};
