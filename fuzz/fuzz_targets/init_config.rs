//! nova-init's kernel command line and nova.conf parsers: PID 1 must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = nova_init::config::Config::from_sources(Some(&text), &text);
});
