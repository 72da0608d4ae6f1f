//! The migration receiver's frame decoder on arbitrary bytes: a sequence of frames
//! read as the destination reads them, each batch of pages decompressed as it would
//! be (bounded by the pages it claims). Must never panic nor allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_vmm::migration::{compression, protocol};

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    for _ in 0..64 {
        match protocol::recv(&mut r) {
            Ok(protocol::Message::Pages {
                indices,
                compression: c,
                data,
            }) => {
                let _ = compression::decompress(c, &data, indices.len() * 4096);
            }
            Ok(protocol::Message::State(s)) => {
                let _ = nova_vmm::state::decode::<nova_vmm::state::VmState>(&s);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
