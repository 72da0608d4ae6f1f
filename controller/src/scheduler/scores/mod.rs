//! Scores: each ranks a host that passed the filters in 0..=1 (higher is better).

mod binpack;
mod spread;

pub use binpack::binpack;
pub use spread::spread;

use super::{HostView, Request, Weights};

/// The weighted sum of every score.
pub fn weighted(req: &Request, h: &HostView, w: Weights) -> f64 {
    let mut s = 0.0;
    if w.binpack != 0.0 {
        s += w.binpack * binpack(req, h);
    }
    if w.spread != 0.0 {
        s += w.spread * spread(req, h);
    }
    s
}

/// How full the host would be with the VM: mean of vCPU and memory fractions.
pub(crate) fn fullness_after(req: &Request, h: &HostView) -> f64 {
    let frac = |used: u64, add: u64, cap: u64| {
        if cap == 0 {
            1.0
        } else {
            (used + add) as f64 / cap as f64
        }
    };
    let c = frac(h.used.vcpus, req.resources.vcpus, h.capacity.vcpus);
    let m = frac(h.used.mem_mib, req.resources.mem_mib, h.capacity.mem_mib);
    ((c + m) / 2.0).min(1.0)
}
