//! The boot loaders (linux-loader's ELF and bzImage, our PVH note reader) on an
//! arbitrary kernel image, loaded into 64 MiB of guest memory.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static MEM: nova_vmm::memory::GuestMemory = {
            let memfd = nova_vmm::memory::create_memfd(64).expect("memfd");
            nova_vmm::memory::map_memfd(&memfd, 64 << 20).expect("guest memory")
        };
    }
    let path = std::env::temp_dir().join(format!("nova-fuzz-kernel-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("kernel file");
    f.write_all(data).expect("kernel file");
    drop(f);
    MEM.with(|mem| {
        let _ = nova_vmm::boot::load_kernel(mem, &path);
    });
});
