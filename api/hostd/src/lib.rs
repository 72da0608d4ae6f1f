//! nova-hostd-api: the contract of hostd's HTTP API, the bodies the controller and
//! other hosts send and read back, and (feature `client`) [`HostdClient`].
//!
//! Requests reject unknown fields, and every request type has a `validate` that names
//! the field that is wrong, so the controller can check a request before sending it.
//! Ids and names are [`validate_id`]-checked: they become directory and device names.

pub use nova_http::{ErrorBody, FieldError};
pub use nova_vmm_api::config::{MAX_MEM_MIB, MAX_VCPUS, MIN_MEM_MIB};
pub use nova_vmm_api::{Compression, MigrationKind, MigrationMode, MigrationParams};

#[cfg(feature = "client")]
mod client;
mod cloud_init;
#[cfg(feature = "client")]
pub use client::HostdClient;

mod backup;
mod host;
mod host_key;
mod migration;
mod names;
mod spec;
mod stored;
mod system;
mod vm;

pub use backup::*;
pub use cloud_init::*;
pub use host::*;
pub use host_key::*;
pub use migration::*;
pub use names::*;
pub use spec::*;
pub use stored::*;
pub use system::*;
pub use vm::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        serde_json::from_str(r#"{"name":"a","kernel":"/k"}"#).unwrap()
    }

    #[test]
    fn ids_that_could_escape_the_data_dir_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\0b",
            "-x",
            ".hidden",
            &"x".repeat(64),
            "a b",
            "é",
        ] {
            assert!(validate_id("id", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "vm-1", "web_2.prod", &"x".repeat(63)] {
            validate_id("id", good).unwrap();
        }
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let e =
            serde_json::from_str::<VmSpec>(r#"{"name":"a","kernel":"/k","cpus":2}"#).unwrap_err();
        assert!(e.to_string().contains("cpus"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let mut s = spec();
        s.vcpus = 0;
        assert_eq!(s.validate().unwrap_err().field, "vcpus");
        let mut s = spec();
        s.mem_mib = 8;
        assert_eq!(s.validate().unwrap_err().field, "mem_mib");
        let mut s = spec();
        s.disks = vec![DiskSpec {
            image: None,
            size_mib: None,
            read_only: false,
            shared_path: None,
        }];
        assert_eq!(s.validate().unwrap_err().field, "disks[0].size_mib");
        let mut s = spec();
        s.nics = vec![NicSpec {
            mac: Some("01:00:00:00:00:01".into()),
        }];
        assert_eq!(s.validate().unwrap_err().field, "nics[0].mac");
        let mut s = spec();
        s.kernel = "relative".into();
        assert_eq!(s.validate().unwrap_err().field, "kernel");
        spec().validate().unwrap();
    }
}
