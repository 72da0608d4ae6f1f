//! virtio-net's queue handling on hostile guest memory: the input's first 26 bytes
//! place a virtqueue, the next 2 give the length of a frame to receive, the rest
//! fills the first MiB of a 64 MiB guest; every chain offered is walked, validated,
//! read as a transmitted frame and written as a receive buffer, as the worker does
//! (up to the tap). Must never panic, hang or touch memory outside the guest's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_vmm::devices::virtio::replay::{net_queue, QueueLayout};
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
    let Some((rx, image)) = rest.split_at_checked(2) else {
        return;
    };
    let rx_len = u16::from_le_bytes([rx[0], rx[1]]) as usize;
    MEM.with(|mem| {
        let image = &image[..image.len().min(1 << 20)];
        mem.write_slice(&vec![0u8; 1 << 20], GuestAddress(0)).unwrap();
        mem.write_slice(image, GuestAddress(0)).unwrap();
        let _ = net_queue(mem, layout, rx_len);
    });
});
