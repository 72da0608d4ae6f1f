//! The VM specs hostd tests start from: the test guest running a workload.

use std::path::PathBuf;

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
