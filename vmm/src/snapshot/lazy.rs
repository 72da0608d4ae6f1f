//! Lazy restore: guest RAM starts empty and a userfaultfd thread fills each page from
//! the snapshot's memory file the first time anything (vCPU, device, KVM) touches it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::{GuestMemory, PAGE_SIZE};
use crate::uffd::Uffd;
use crate::vcpu::first_touch;
use crate::vcpu::state::VcpuState;

/// Registers every RAM region with a userfaultfd and serves faults from `file` (at the
/// same RAM offsets) on a thread of its own for the life of the process.
pub fn serve_from_file(mem: &GuestMemory, file: File) -> std::io::Result<()> {
    let uffd = Uffd::new()?;
    // (host start, host end, RAM offset) of each region.
    let mut regions = Vec::new();
    let mut ram_off = 0u64;
    for r in mem.iter() {
        let host = r.as_ptr() as u64;
        uffd.register(host, r.len())?;
        regions.push((host, host + r.len(), ram_off));
        ram_off += r.len();
    }
    crate::seccomp::spawn_filtered(
        crate::seccomp::ThreadKind::Uffd,
        "lazy-restore",
        Some(128 << 10),
        move || {
            let mut page = vec![0u8; PAGE_SIZE];
            while let Ok(fault) = uffd.next_fault() {
                let Some(fault) = fault else { continue };
                let addr = fault.addr & !(PAGE_SIZE as u64 - 1);
                let Some((host, _, off)) =
                    regions.iter().find(|(s, e, _)| (*s..*e).contains(&addr))
                else {
                    continue;
                };
                let file_off = off + (addr - host);
                let served = match file.read_exact_at(&mut page, file_off) {
                    Ok(()) if page.iter().any(|b| *b != 0) => uffd.copy(addr, &page),
                    _ => uffd.zero(addr, PAGE_SIZE as u64),
                };
                if let Err(e) = served {
                    tracing::error!("lazy restore: cannot serve page at {file_off:#x}: {e}");
                }
            }
        },
    )?;
    Ok(())
}

/// Copies the pages each vCPU touches first (see [`first_touch`]) from `file` into
/// guest memory, before [`serve_from_file`] registers it: served by faults, each would
/// cost a round trip through the userfaultfd thread before the guest's first tick.
/// Best effort: a page it cannot read is left to the fault handler.
pub fn prefetch_first_touched(mem: &GuestMemory, file: &File, vcpus: &[VcpuState]) {
    let read = |gpa: u64| -> Option<Vec<u8>> {
        let off = (crate::dirty::page_index(mem, gpa)? * PAGE_SIZE) as u64;
        let mut page = vec![0u8; PAGE_SIZE];
        file.read_exact_at(&mut page, off).ok()?;
        Some(page)
    };
    for gpa in first_touch::pages(vcpus, |gpa| {
        let page = read(gpa)?;
        let at = (gpa as usize) & (PAGE_SIZE - 1);
        Some(u64::from_le_bytes(page[at..at + 8].try_into().ok()?))
    }) {
        if let Some(page) = read(gpa) {
            let _ = mem.write_slice(&page, GuestAddress(gpa));
        }
    }
}
