//! The PVH boot protocol's `hvm_start_info` and memory map.

use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use vm_memory::{Bytes, GuestAddress};

use super::{e820_map, BootError, CMDLINE_ADDR, MEMMAP_ADDR, START_INFO_ADDR};
use crate::memory::GuestMemory;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Writes the start info, command line pointer, optional initrd module and the memory
/// map (terminated by an all-zero entry, as QEMU does) for a guest of `mem_bytes`,
/// and the ACPI RSDP's address when the VM has ACPI tables.
pub fn write_start_info(
    mem: &GuestMemory,
    mem_bytes: u64,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> Result<(), BootError> {
    let map = e820_map(mem_bytes);
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: *addr,
            size: *size,
            type_: *kind,
            reserved: 0,
        };
        mem.write_obj(entry, GuestAddress(MEMMAP_ADDR + (i * 24) as u64))?;
    }
    mem.write_obj(
        hvm_memmap_table_entry::default(),
        GuestAddress(MEMMAP_ADDR + (map.len() * 24) as u64),
    )?;
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: map.len() as u32,
        rsdp_paddr: rsdp.unwrap_or(0),
        ..Default::default()
    };
    if let Some((addr, size)) = initrd {
        // One module: the initrd, described by an hvm_modlist_entry after the memory map.
        let modlist = MEMMAP_ADDR + ((map.len() + 1) * 24) as u64;
        mem.write_obj(addr, GuestAddress(modlist))?;
        mem.write_obj(size, GuestAddress(modlist + 8))?;
        mem.write_obj(0u64, GuestAddress(modlist + 16))?;
        mem.write_obj(0u64, GuestAddress(modlist + 24))?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist;
    }
    mem.write_obj(info, GuestAddress(START_INFO_ADDR))?;
    Ok(())
}
