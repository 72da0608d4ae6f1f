//! Why a VM could not be built, started, saved or restored.

use nova_vmm_api::FieldError;

use crate::boot::BootError;
use crate::kvm::KvmError;
use crate::memory::MemoryError;

/// Why a VM could not be built, started, saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Config(#[from] FieldError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("console {path}: {err}")]
    Console { path: String, err: std::io::Error },
    #[error("{what}: {err}")]
    Setup {
        what: &'static str,
        err: std::io::Error,
    },
    #[error("{what}: {err}")]
    KvmIoctl {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("{0}")]
    Device(String),
}

/// Maps a failed KVM ioctl to the error naming it.
pub(super) fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |err| VmError::KvmIoctl { what, err }
}

/// Maps a failed setup step (an eventfd, a thread) to the error naming it.
pub(super) fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |err| VmError::Setup { what, err }
}

/// A saved state fits this VM only with as many of each thing as the VM has.
pub(super) fn same_count(what: &str, saved: usize, here: usize) -> Result<(), VmError> {
    if saved == here {
        return Ok(());
    }
    Err(VmError::Device(format!(
        "saved state has {saved} {what}, this VM {here}"
    )))
}
