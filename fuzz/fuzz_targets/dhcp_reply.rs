//! nova-init's DHCP reply parser: replies come from anyone on the host's network.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(r) = nova_init::dhcp::parse_reply(data) {
        assert!(r.lease.prefix <= 32);
    }
});
