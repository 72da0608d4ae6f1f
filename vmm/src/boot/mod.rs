//! Putting a kernel in guest memory and describing the machine to it.
//!
//! Three entry points, all x86_64: a PVH ELF (32-bit protected-mode entry with an
//! `hvm_start_info`; our test guest and PVH-capable Linux), an ELF vmlinux entered in
//! 64-bit mode, and a bzImage entered in 64-bit mode; the last two get a Linux zero
//! page. This module owns the low-memory layout and the e820 map; `mptable` describes
//! the vCPUs and the IOAPIC, `acpi` the whole machine (vCPUs, IOAPIC, devices).

pub mod acpi;
pub mod linux;
pub mod mptable;
pub mod pvh;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::{BzImage, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::{GuestMemory, MMIO_HOLE_START};

/// Where the GDT lives (4 entries: null, code64, data, TSS placeholder... see `vcpu::regs`).
pub const GDT_ADDR: u64 = 0x500;
/// PVH `hvm_start_info`.
pub const START_INFO_ADDR: u64 = 0x6000;
/// PVH memory map (right after the start info).
pub const MEMMAP_ADDR: u64 = 0x6040;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Identity page tables for the 64-bit Linux entry (PML4, PDPT, PD).
pub const PML4_ADDR: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line we pass (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE_MAX: usize = 2048;
/// End of conventional memory below the EBDA; 0x9fc00..1 MiB is reserved.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the kernel is loaded when it does not say otherwise.
pub const HIMEM_START: u64 = 0x10_0000;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// Why a kernel could not be booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel {path}: {err}")]
    KernelOpen { path: PathBuf, err: std::io::Error },
    #[error("kernel {path}: not an ELF or bzImage kernel ({why})")]
    KernelFormat { path: PathBuf, why: String },
    #[error("initrd {path}: {err}")]
    InitrdOpen { path: PathBuf, err: std::io::Error },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory below the kernel's limit")]
    InitrdTooLarge { path: PathBuf, size: u64 },
    #[error("command line is {len} bytes; at most {CMDLINE_MAX} fit")]
    CmdlineTooLong { len: usize },
    #[error("cannot write boot data to guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
    #[error("MP table: {0}")]
    MpTable(String),
    #[error("ACPI tables: {0}")]
    Acpi(String),
}

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// PVH: 32-bit protected mode at this address, EBX = start_info.
    Pvh(u64),
    /// Linux 64-bit boot protocol at this address, RSI = zero page.
    Linux64(u64),
}

/// The kernel as loaded.
pub struct LoadedKernel {
    pub entry: EntryPoint,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<linux_loader::loader::bootparam::setup_header>,
    /// First byte after the kernel image.
    pub kernel_end: u64,
}

/// The e820 map of a guest with `mem_bytes` of RAM: low memory, high memory below the
/// MMIO hole, and memory above 4 GiB.
pub fn e820_map(mem_bytes: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (addr, len) in crate::memory::ram_ranges(mem_bytes) {
        let start = addr.0.max(HIMEM_START);
        let end = addr.0 + len;
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

/// Loads the kernel at `path` into `mem`, choosing the protocol from its format:
/// a PVH note wins; otherwise ELF and bzImage use the 64-bit Linux entry.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, BootError> {
    let open_err = |err| BootError::KernelOpen {
        path: path.to_owned(),
        err,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| BootError::KernelFormat {
            path: path.to_owned(),
            why: "file is shorter than 4 bytes".into(),
        })?;
    let format_err = |e: linux_loader::loader::Error| BootError::KernelFormat {
        path: path.to_owned(),
        why: e.to_string(),
    };
    let himem = Some(GuestAddress(HIMEM_START));
    if &magic == b"\x7fELF" {
        let r: KernelLoaderResult = Elf::load(mem, None, &mut file, himem).map_err(format_err)?;
        let entry = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => EntryPoint::Pvh(addr.0),
            _ => EntryPoint::Linux64(r.kernel_load.0),
        };
        return Ok(LoadedKernel {
            entry,
            setup_header: None,
            kernel_end: r.kernel_end,
        });
    }
    let mut hdr = [0u8; 4];
    file.seek(SeekFrom::Start(0x202)).map_err(open_err)?;
    if file.read_exact(&mut hdr).is_err() || &hdr != b"HdrS" {
        return Err(BootError::KernelFormat {
            path: path.to_owned(),
            why: "no ELF magic and no bzImage 'HdrS' header".into(),
        });
    }
    let r = BzImage::load(mem, None, &mut file, himem).map_err(format_err)?;
    // The 64-bit entry point of a bzImage is 0x200 past where its protected-mode part loads.
    Ok(LoadedKernel {
        entry: EntryPoint::Linux64(r.kernel_load.0 + 0x200),
        setup_header: r.setup_header,
        kernel_end: r.kernel_end,
    })
}

/// Loads an initrd as high as possible below the MMIO hole and `limit`, above the kernel.
/// Returns (address, size).
pub fn load_initrd(
    mem: &GuestMemory,
    path: &Path,
    mem_bytes: u64,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), BootError> {
    let err = |err| BootError::InitrdOpen {
        path: path.to_owned(),
        err,
    };
    let mut file = File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let top = mem_bytes.min(MMIO_HOLE_START).min(limit);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end);
    let Some(addr) = addr else {
        return Err(BootError::InitrdTooLarge {
            path: path.to_owned(),
            size,
        });
    };
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)?;
    Ok((addr, size))
}

/// Writes the NUL-terminated command line at [`CMDLINE_ADDR`].
pub fn write_cmdline(mem: &GuestMemory, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong { len: cmdline.len() });
    }
    mem.write_slice(cmdline.as_bytes(), GuestAddress(CMDLINE_ADDR))?;
    mem.write_obj(0u8, GuestAddress(CMDLINE_ADDR + cmdline.len() as u64))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_configured_memory_exactly() {
        for mib in [64u64, 256, 3072, 4096, 8192] {
            let map = e820_map(mib << 20);
            let ram: u64 = map.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
            // Only the 384 KiB legacy hole below 1 MiB is not RAM.
            assert_eq!(ram, (mib << 20) - (HIMEM_START - EBDA_START), "{mib} MiB");
        }
    }

    #[test]
    fn a_file_that_is_no_kernel_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("nova-boot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("not-a-kernel");
        std::fs::write(&bad, vec![0x42u8; 8192]).unwrap();
        let fd = crate::memory::create_memfd(64).unwrap();
        let mem = crate::memory::map_memfd(&fd, 64 << 20).unwrap();
        let err = load_kernel(&mem, &bad).err().unwrap().to_string();
        assert!(
            err.contains("not-a-kernel") && err.contains("bzImage"),
            "{err}"
        );
        let missing = load_kernel(&mem, &dir.join("missing"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing.contains("missing") && missing.contains("No such file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
