//! nova-init's kernel command line and nova.conf parsers, and its reader of GRUB's
//! environment block (on a partition anyone with the disk can write) and of its debug
//! console's lines: PID 1 must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = nova_init::config::Config::from_sources(Some(&text), &text);
    // The debug console's reading of a typed line.
    let _ = nova_init::debug_console::parse(&text);
    let mut block = data.to_vec();
    block.resize(nova_init::bootenv::SIZE, b'#');
    if let Ok(mut env) = nova_init::bootenv::Env::parse(&block) {
        env.set("nova_try", "");
        let _ = env.render();
    }
});
