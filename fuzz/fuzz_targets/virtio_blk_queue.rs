//! virtio-blk's queue handling on hostile guest memory: the input's first 26 bytes
//! place a virtqueue (size, descriptor table, avail and used rings), the next 9 give
//! the disk's capacity and read-only bit, the rest fills the first MiB of a 64 MiB
//! guest; every chain offered is walked, validated and decoded as the worker does
//! (up to the disk I/O). Must never panic, hang or touch memory outside the guest's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_vmm::devices::virtio::replay::{blk_queue, QueueLayout};
use vm_memory::{Bytes, GuestAddress};

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static MEM: nova_vmm::memory::GuestMemory = {
            let memfd = nova_vmm::memory::create_memfd(64).expect("memfd");
            nova_vmm::memory::map_memfd(&memfd, 64 << 20).expect("guest memory")
        };
    }
    let Some((layout, rest)) = QueueLayout::from_bytes(data) else {
        return;
    };
    let Some((disk, image)) = rest.split_at_checked(9) else {
        return;
    };
    let capacity = u64::from_le_bytes(disk[..8].try_into().unwrap()) % (1 << 40);
    let read_only = disk[8] & 1 == 1;
    MEM.with(|mem| {
        let image = &image[..image.len().min(1 << 20)];
        mem.write_slice(&vec![0u8; 1 << 20], GuestAddress(0)).unwrap();
        mem.write_slice(image, GuestAddress(0)).unwrap();
        let _ = blk_queue(mem, layout, capacity, read_only);
    });
});
