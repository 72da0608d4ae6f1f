//! The VMM API's HTTP request parser (its unix socket) on arbitrary bytes: every
//! request on one connection, until it ends or is refused.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use nova_vmm::api::http::read_request;

fuzz_target!(|data: &[u8]| {
    let mut r = BufReader::new(data);
    for _ in 0..16 {
        if read_request(&mut r).is_err() {
            break;
        }
    }
});
