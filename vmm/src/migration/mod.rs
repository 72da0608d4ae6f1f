//! Live migration over TCP: pre-copy, post-copy (userfaultfd) and hybrid, one protocol.
//!
//! The source's [`sender`] runs on a thread of its own, started by `PUT /v1/migration`
//! and reported by `GET /v1/migration` through the VM's [`outgoing`] record; it sends
//! memory with [`pages`] and, after a post-copy switch, serves the rest with
//! [`postcopy`]. The destination's [`receiver`] is what
//! `nova-vmm run --incoming tcp:ADDR:PORT` does instead of booting. Both speak
//! [`protocol`], with page data as [`compression`] encodes it; the source times the
//! destination's answer by its [`arrival`]. Writable disks travel in the same stream,
//! sent and written by [`disks`].
//!
//! Every connection is TLS 1.3 with the migration's own credential ([`tls`]: the
//! destination's pinned certificate, the source's secret), carried by [`channel`];
//! plaintext only under `--insecure`.
//!
//! The rule: exactly one side runs the VM. Until the source sends `Switch`, any
//! failure (the destination dies, the connection drops, the stream is corrupt, the
//! user cancels) resumes the VM on the source as it was. The destination runs the VM
//! only after `Switch`. Post-copy moves the switch early: from then on the destination
//! runs with pages still on the source, so losing the source loses the VM; the window
//! is as short as pushing the remaining pages takes, and pre-copy rounds (hybrid) shrink it.

pub mod arrival;
pub mod channel;
pub mod compression;
pub mod disks;
pub mod error;
pub mod gate;
pub mod link;
pub mod outgoing;
pub mod pages;
pub mod postcopy;
pub mod protocol;
pub mod receiver;
pub mod sender;
pub mod tls;
