//! Opening /dev/kvm and telling the user what kind of KVM it is.
//!
//! On hardware virtualization (VT-x / AMD-V) any guest runs natively. On PVM
//! ("Pagetable-based Virtual Machine", the `kvm_pvm` module) only guests built for PVM
//! run natively; every other guest instruction goes through KVM's emulator.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

use nova_vmm_api::KvmKind;

/// Why KVM cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm: {0}")]
    Open(kvm_ioctls::Error),
    #[error("KVM API version {0} is not 12")]
    ApiVersion(i32),
    #[error("KVM lacks a capability nova-vmm needs: {0}")]
    MissingCap(&'static str),
}

/// Detects the kind of KVM from the loaded modules, falling back to the CPU flags.
pub fn detect_kind() -> KvmKind {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return KvmKind::Pvm;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw {
        KvmKind::Hardware
    } else {
        KvmKind::Pvm
    }
}

/// Opens /dev/kvm and checks what every VM needs.
pub fn open() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(KvmError::Open)?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(KvmError::ApiVersion(v));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap(name));
        }
    }
    Ok(kvm)
}
