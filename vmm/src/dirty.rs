//! Dirty page tracking for snapshots and migration: KVM's dirty log catches what the
//! vCPUs write, vm-memory's bitmap what the VMM's devices write; a page missing from
//! either would be silently stale on the other side, so every collection ORs both.
//!
//! Pages are numbered by their offset in guest RAM (the memfd), not by guest physical
//! address: page `n` is bytes `n*4096..` of the memfd, the snapshot memory file and the
//! migration stream alike. Also owns registering guest RAM as KVM memory slots.

use std::ops::Deref;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::{GuestMemory, PAGE_SIZE};

/// One bit per guest RAM page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyBitmap {
    words: Vec<u64>,
    pages: usize,
}

impl DirtyBitmap {
    /// All clear, for `pages` pages.
    pub fn new(pages: usize) -> Self {
        Self {
            words: vec![0; pages.div_ceil(64)],
            pages,
        }
    }

    /// All set.
    pub fn full(pages: usize) -> Self {
        let mut b = Self {
            words: vec![u64::MAX; pages.div_ceil(64)],
            pages,
        };
        b.trim();
        b
    }

    /// From raw words (as sent over the wire); bits past `pages` are dropped.
    pub fn from_words(words: Vec<u64>, pages: usize) -> Option<Self> {
        if words.len() != pages.div_ceil(64) {
            return None;
        }
        let mut b = Self { words, pages };
        b.trim();
        Some(b)
    }

    fn trim(&mut self) {
        if self.pages & 63 != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << (self.pages % 64)) - 1;
            }
        }
    }

    pub fn pages(&self) -> usize {
        self.pages
    }
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    pub fn set(&mut self, page: usize) {
        if page < self.pages {
            self.words[page / 64] |= 1 << (page % 64);
        }
    }
    pub fn clear(&mut self, page: usize) {
        if page < self.pages {
            self.words[page / 64] &= !(1 << (page % 64));
        }
    }
    pub fn get(&self, page: usize) -> bool {
        page < self.pages && self.words[page / 64] & (1 << (page % 64)) != 0
    }
    /// Pages set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// ORs `other` into `self`.
    pub fn union(&mut self, other: &DirtyBitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }
    /// ORs raw words starting at word `offset`.
    fn union_words(&mut self, offset: usize, words: &[u64]) {
        for (a, b) in self.words[offset..].iter_mut().zip(words) {
            *a |= b;
        }
    }
    /// Indices of the set pages, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.iter_from(0)
    }

    /// The set pages from `start` on, in order.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        let first = start / 64;
        let mask = !0u64 << (start % 64);
        self.words
            .iter()
            .enumerate()
            .skip(first)
            .flat_map(move |(i, w)| {
                let mut w = if i == first { *w & mask } else { *w };
                std::iter::from_fn(move || {
                    if w == 0 {
                        return None;
                    }
                    let bit = w.trailing_zeros() as usize;
                    w &= w - 1;
                    Some(i * 64 + bit)
                })
            })
    }
}

/// Guest RAM pages of `mem`.
pub fn ram_pages(mem: &GuestMemory) -> usize {
    mem.iter().map(|r| r.len() as usize / PAGE_SIZE).sum()
}

/// Guest physical address of RAM page `page`.
pub fn page_gpa(mem: &GuestMemory, page: usize) -> Option<GuestAddress> {
    let mut first = 0usize;
    for r in mem.iter() {
        let n = r.len() as usize / PAGE_SIZE;
        if page < first + n {
            return Some(GuestAddress(
                r.start_addr().0 + ((page - first) * PAGE_SIZE) as u64,
            ));
        }
        first += n;
    }
    None
}

/// RAM page index of guest physical address `gpa` (the inverse of [`page_gpa`]).
pub fn page_index(mem: &GuestMemory, gpa: u64) -> Option<usize> {
    let mut first = 0usize;
    for r in mem.iter() {
        let start = r.start_addr().0;
        if (start..start + r.len()).contains(&gpa) {
            return Some(first + ((gpa - start) as usize) / PAGE_SIZE);
        }
        first += r.len() as usize / PAGE_SIZE;
    }
    None
}

/// Registers (or re-registers, to change `flags`) every RAM region as a KVM slot.
pub fn set_slots(vm_fd: &VmFd, mem: &GuestMemory, flags: u32) -> Result<(), kvm_ioctls::Error> {
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of `len` bytes owned by `mem`, which the
        // VM keeps for as long as `vm_fd` (and so the slot) exists.
        unsafe { vm_fd.set_user_memory_region(r) }?;
    }
    Ok(())
}

/// Turns KVM dirty logging on and forgets device writes made so far: from now on
/// every written page shows up in [`collect`].
pub fn start(vm_fd: &VmFd, mem: &GuestMemory) -> Result<(), kvm_ioctls::Error> {
    set_slots(vm_fd, mem, KVM_MEM_LOG_DIRTY_PAGES)?;
    for r in mem.iter() {
        r.deref().bitmap().reset();
    }
    Ok(())
}

/// Turns KVM dirty logging off.
pub fn stop(vm_fd: &VmFd, mem: &GuestMemory) -> Result<(), kvm_ioctls::Error> {
    set_slots(vm_fd, mem, 0)
}

/// Pages written since the last collection (or [`start`]), by vCPUs or devices; resets both logs.
pub fn collect(vm_fd: &VmFd, mem: &GuestMemory) -> Result<DirtyBitmap, kvm_ioctls::Error> {
    let mut bitmap = DirtyBitmap::new(ram_pages(mem));
    let mut word = 0usize;
    for (slot, r) in mem.iter().enumerate() {
        let kvm_words = vm_fd.get_dirty_log(slot as u32, r.len() as usize)?;
        bitmap.union_words(word, &kvm_words);
        if let Some(device_words) = r.deref().bitmap().take() {
            bitmap.union_words(word, &device_words);
        }
        word += (r.len() as usize / PAGE_SIZE).div_ceil(64);
    }
    Ok(bitmap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_memfd, map_memfd};
    use vm_memory::Bytes;

    #[test]
    fn bitmap_iterates_set_pages_in_order() {
        let mut b = DirtyBitmap::new(200);
        for p in [0, 63, 64, 199, 250] {
            b.set(p);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 64, 199]);
        assert_eq!(b.iter_from(1).collect::<Vec<_>>(), vec![63, 64, 199]);
        assert_eq!(b.iter_from(64).collect::<Vec<_>>(), vec![64, 199]);
        assert_eq!(b.iter_from(65).collect::<Vec<_>>(), vec![199]);
        assert_eq!(b.iter_from(200).count(), 0);
        assert_eq!(b.count(), 4);
        assert_eq!(DirtyBitmap::full(130).count(), 130);
    }

    #[test]
    fn pages_number_ram_across_the_mmio_hole() {
        let fd = create_memfd(4096).unwrap();
        let mem = map_memfd(&fd, 4096 << 20).unwrap();
        let low = crate::memory::MMIO_HOLE_START as usize / PAGE_SIZE;
        assert_eq!(
            page_gpa(&mem, low - 1),
            Some(GuestAddress(crate::memory::MMIO_HOLE_START - 4096))
        );
        assert_eq!(
            page_gpa(&mem, low),
            Some(GuestAddress(crate::memory::MMIO_HOLE_END))
        );
        assert_eq!(ram_pages(&mem), 1 << 20);
        assert_eq!(page_gpa(&mem, 1 << 20), None);
        for p in [0, low - 1, low, (1 << 20) - 1] {
            assert_eq!(page_index(&mem, page_gpa(&mem, p).unwrap().0 + 5), Some(p));
        }
        assert_eq!(page_index(&mem, crate::memory::MMIO_HOLE_START), None);
    }

    #[test]
    fn a_page_written_only_by_a_device_is_collected() {
        let kvm = kvm_ioctls::Kvm::new();
        if !crate::test_support::require_kvm(kvm.is_ok()) {
            return;
        }
        let kvm = kvm.unwrap();
        let vm_fd = kvm.create_vm().unwrap();
        let fd = create_memfd(64).unwrap();
        let mem = map_memfd(&fd, 64 << 20).unwrap();
        start(&vm_fd, &mem).unwrap();
        // A device completes a request into guest memory through vm-memory, as virtio does.
        mem.write_obj(0xfeed_u64, GuestAddress(0x12_3000)).unwrap();
        let dirty = collect(&vm_fd, &mem).unwrap();
        assert!(
            dirty.get(0x123),
            "device-written page missing from the dirty set"
        );
        assert_eq!(dirty.count(), 1);
        // Collected pages are cleared: a second collection is empty.
        assert_eq!(collect(&vm_fd, &mem).unwrap().count(), 0);
    }
}
