//! nova-http: the one HTTP client every NovaCron tier calls another with, and the
//! error body every NovaCron API answers with. It knows no routes and no API types;
//! the typed clients of `nova-vmm-api`, `nova-hostd-api` and `nova-controller-api`
//! are built on [`Client`]. Feature `server`: the TLS, bounded server every daemon
//! serves its API with ([`server::serve`]).

#[cfg(feature = "client")]
pub mod blocking;
#[cfg(feature = "client")]
mod client;
mod error;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "websocket")]
pub mod websocket;

#[cfg(feature = "client")]
pub use client::*;
pub use error::{ErrorBody, FieldError};

#[cfg(all(test, feature = "client"))]
mod tests;
