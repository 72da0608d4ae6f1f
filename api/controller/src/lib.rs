//! nova-controller-api: the contract of nova-controller's `/v1` API. The objects it
//! stores and shows ([`model`]), the request and answer bodies ([`bodies`]), the
//! cluster's migration policy ([`policy`]), the event stream's [`Event`], and
//! (feature `client`) [`ControllerClient`]; what clusters of a federation say to each
//! other ([`federation`]); cloud bursting ([`cloud`]). No storage, scheduling or HTTP server here.

pub mod backup;
pub mod bodies;
pub mod cloud;
pub mod federation;
pub mod model;
pub mod monitoring;
pub mod policy;
pub mod snapshots;
pub mod upgrade;

#[cfg(feature = "client")]
mod client;

pub use backup::*;
pub use bodies::*;
#[cfg(feature = "client")]
pub use client::ControllerClient;
pub use cloud::*;
pub use federation::*;
pub use model::*;
pub use monitoring::*;
pub use nova_hostd_api::CloudInit;
pub use nova_http::{ErrorBody, FieldError};
pub use nova_vmm_api::{Compression, MigrationKind, MigrationMode, MigrationParams};
pub use policy::{MigrationParamsPatch, MigrationPolicy, MigrationPolicyPatch};
pub use snapshots::*;
pub use upgrade::*;
