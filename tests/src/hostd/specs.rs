//! The VM specs tests start from: the test guest running a workload (for hostd, and
//! with a disk, for the controller).

use std::path::{Path, PathBuf};

use nova_hostd_api::VmSpec;

/// The test guest (`guest-images/out/testguest.elf`).
pub fn testguest() -> PathBuf {
    crate::guest_image("testguest.elf")
}

/// A VM of the test guest running `workload`: 64 MiB, 1 vCPU, started at once.
pub fn guest(id: &str, workload: &str) -> VmSpec {
    VmSpec {
        id: Some(id.to_string()),
        name: id.to_string(),
        vcpus: 1,
        mem_mib: 64,
        kernel: testguest().to_string_lossy().into_owned(),
        initrd: None,
        cmdline: Some(format!("nova.workload={workload}")),
        disks: Vec::new(),
        nics: Vec::new(),
        restart: Default::default(),
        start: true,
        cloud_init: None,
    }
}

/// A 64 MiB test guest running `workload` on a writable disk of `disk_mib` MiB cloned
/// from the image at `base`: the VM a disk story creates through the controller.
pub fn controller_disk_guest(
    name: &str,
    workload: &str,
    base: &Path,
    disk_mib: u64,
) -> nova_controller_api::VmSpec {
    nova_controller_api::VmSpec {
        mem_mib: 64,
        cmdline: Some(format!("nova.workload={workload}")),
        disks: vec![nova_controller_api::DiskRequest {
            image: Some(base.display().to_string()),
            size_mib: Some(disk_mib),
            read_only: false,
            shared_path: None,
        }],
        ..nova_controller_api::VmSpec::new(name, testguest().display().to_string())
    }
}
