//! Host-to-host live migration, the hostd side. The VMMs move the VM; hostd makes
//! sure the destination is ready and that exactly one hostd owns the VM at the end.
//! [`state`] owns every migration's status (nothing else writes it), [`outgoing`] is
//! the source, [`incoming`] the destination, [`recover`] what a restarted hostd does
//! with the migrations it finds, [`credential`] the per-migration TLS credential the
//! destination issues. The other hostd is reached with the contract's
//! `HostdClient`, the VMM with `VmmClient`.

pub mod credential;
pub mod incoming;
pub mod outgoing;
pub mod recover;
pub mod state;

pub use state::Migrations;
