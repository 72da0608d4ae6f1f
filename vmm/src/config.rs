//! The VM's configuration is the API contract's (`nova_vmm_api::config`): what
//! `nova-vmm run` flags, a JSON config file and `GET /v1/vm` say, with its limits.

pub use nova_vmm_api::config::*;
