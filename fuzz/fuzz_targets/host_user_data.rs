//! The user-data a burst host boots with (`HostUserData::parse`): it comes from the
//! cloud's metadata service, which anyone able to launch or modify the machine
//! writes; parsing it must answer a value or a named error, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(u) = nova_controller_api::HostUserData::parse(&text) {
        // What parses must round-trip.
        let again = serde_json::to_string(&u).expect("serializable");
        assert_eq!(nova_controller_api::HostUserData::parse(&again).ok(), Some(u));
    }
});
