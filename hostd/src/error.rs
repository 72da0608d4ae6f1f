//! hostd's error type: every failure a request can meet. The domain returns it; the
//! HTTP layer (`api`) maps each kind to a status.

use nova_hostd_api::FieldError;

/// Why a request (or a step of the daemon) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the field and what is wrong with it (400).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such VM, image, snapshot or migration (404).
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the object's current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Admission control refused: names what does not fit (409).
    #[error("does not fit on this host: {0}")]
    NoCapacity(String),
    /// The VM's VMM refused or failed a request (502).
    #[error("vmm: {0}")]
    Vmm(String),
    /// The other hostd of a migration refused or could not be reached (502).
    #[error("peer hostd: {0}")]
    Peer(String),
    /// A netlink request (bridge, tap, VXLAN, FDB) failed (500).
    #[error("network: {0}")]
    Net(String),
    /// A file operation failed (500).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A failed call to a VM's VMM.
    pub fn vmm(e: nova_http::Error) -> Self {
        Error::Vmm(e.to_string())
    }

    /// A failed call to the other hostd of a migration.
    pub fn peer(e: nova_http::Error) -> Self {
        Error::Peer(e.to_string())
    }
}

/// hostd's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to `std::io::Result`s.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
