//! The migration channel's TLS record reader (what a destination reads from a
//! connection that completed the handshake, before it has proved the secret) on
//! arbitrary bytes: the input's first byte picks raw bytes or records sealed with the
//! same keys and then damaged at one position, so that both the record framing and
//! what follows a successful open are reached. Must never panic nor read past a record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_vmm::migration::channel::{open_records, seal_records};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::ConnectionTrafficSecrets;

fn keys() -> (u64, ConnectionTrafficSecrets) {
    (
        0,
        ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([7u8; 32]),
            iv: Iv::new([9u8; 12]),
        },
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    if mode & 1 == 0 {
        let _ = open_records(keys(), rest, &mut out);
        return;
    }
    let Some((&at, plain)) = rest.split_first() else {
        return;
    };
    let mut sealed = seal_records(keys(), plain).expect("seal");
    if mode & 2 == 2 && !sealed.is_empty() {
        let i = (at as usize * 131) % sealed.len();
        sealed[i] ^= mode | 1;
        let _ = open_records(keys(), &sealed, &mut out);
    } else {
        open_records(keys(), &sealed, &mut out).expect("records it sealed itself");
        assert_eq!(out, plain);
    }
});
