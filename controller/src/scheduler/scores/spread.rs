//! Spread: the emptier the host would be, the better (fewer VMs lost per failure).

use crate::scheduler::{HostView, Request};

pub fn spread(req: &Request, h: &HostView) -> f64 {
    1.0 - super::fullness_after(req, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;
    use crate::scheduler::fixture::*;

    #[test]
    fn emptier_hosts_score_higher() {
        let mut full = host("a", 8, 8192);
        full.used = Resources {
            vcpus: 6,
            mem_mib: 6144,
            disk_mib: 0,
        };
        let empty = host("b", 8, 8192);
        assert!(spread(&req(1, 1024), &empty) > spread(&req(1, 1024), &full));
    }
}
