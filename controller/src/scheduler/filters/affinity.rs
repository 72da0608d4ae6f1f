//! Affinity (run next to VMs with one of these labels) and anti-affinity (never next
//! to any VM with one of these labels), among the VMs of the same tenant.

use crate::scheduler::{HostView, Request};

pub fn affinity(req: &Request, h: &HostView) -> Result<(), &'static str> {
    if req.with.is_empty()
        || req
            .with
            .iter()
            .any(|l| h.vm_labels.get(l).is_some_and(|n| *n > 0))
    {
        Ok(())
    } else {
        Err("affinity")
    }
}

pub fn anti_affinity(req: &Request, h: &HostView) -> Result<(), &'static str> {
    if req
        .apart_from
        .iter()
        .any(|l| h.vm_labels.get(l).is_some_and(|n| *n > 0))
    {
        Err("anti-affinity")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixture::*;

    #[test]
    fn affinity_wants_a_labelled_neighbour_and_anti_affinity_refuses_one() {
        let mut h = host("h", 8, 8192);
        let mut r = req(1, 64);
        r.with = vec!["t/app=db".into()];
        assert_eq!(affinity(&r, &h), Err("affinity"));
        h.vm_labels.insert("t/app=db".into(), 1);
        assert!(affinity(&r, &h).is_ok());
        let mut r = req(1, 64);
        r.apart_from = vec!["t/app=db".into()];
        assert_eq!(anti_affinity(&r, &h), Err("anti-affinity"));
        // Another tenant's VM with the same label does not count.
        r.apart_from = vec!["u/app=db".into()];
        assert!(anti_affinity(&r, &h).is_ok());
    }
}
