//! Bin-pack: the fuller the host would be, the better (keeps other hosts empty).

use crate::scheduler::{HostView, Request};

pub fn binpack(req: &Request, h: &HostView) -> f64 {
    super::fullness_after(req, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;
    use crate::scheduler::fixture::*;

    #[test]
    fn fuller_hosts_score_higher() {
        let mut full = host("a", 8, 8192);
        full.used = Resources {
            vcpus: 6,
            mem_mib: 6144,
            disk_mib: 0,
        };
        let empty = host("b", 8, 8192);
        assert!(binpack(&req(1, 1024), &full) > binpack(&req(1, 1024), &empty));
    }
}
