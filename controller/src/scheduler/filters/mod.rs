//! Filters: each says whether a host may take a VM, and if not, why (one word).

mod affinity;
mod capacity;
mod health;
mod labels;
mod quota;

pub use affinity::{affinity, anti_affinity};
pub use capacity::capacity;
pub use health::health;
pub use labels::labels;
pub use quota::quota;

use super::{HostView, Request};

/// Every per-host filter, cheapest first.
pub fn all(req: &Request, h: &HostView) -> Result<(), &'static str> {
    health(req, h)?;
    capacity(req, h)?;
    labels(req, h)?;
    affinity(req, h)?;
    anti_affinity(req, h)
}
