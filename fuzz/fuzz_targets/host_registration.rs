//! The controller's reading of a host's registration (`RegisterRequest`) and
//! certificate renewal (`HostKeyRequest`) bodies: anyone holding a join token sends
//! them, and the key request is base64 and a signature to check before anything is
//! signed. Every input must be a value or a named error, never a panic, and a key
//! that verifies for one host id must not verify for another.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nova_hostd_api::{HostKeyRequest, RegisterRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<RegisterRequest>(data) {
        if let Some(k) = &r.tls_key {
            if let Ok(point) = k.verify(&r.host_id) {
                assert_eq!(point.len(), nova_hostd_api::P256_POINT_LEN);
                let other = format!("{}x", r.host_id);
                assert!(k.verify(&other).is_err(), "a proof for one host id verified for another");
            }
        }
    }
    if let Ok(k) = serde_json::from_slice::<HostKeyRequest>(data) {
        if let Err(e) = k.verify("host-1") {
            assert!(e.field.starts_with("tls_key."));
        }
    }
});
