//! Capacity: the VM's vCPUs, memory and disk fit in what the host has left.

use crate::scheduler::{HostView, Request};

pub fn capacity(req: &Request, h: &HostView) -> Result<(), &'static str> {
    if h.used.plus(req.resources).fits_in(h.capacity) {
        Ok(())
    } else {
        Err("capacity")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;
    use crate::scheduler::fixture::*;

    #[test]
    fn a_vm_fits_only_where_every_resource_is_left() {
        let mut h = host("a", 4, 4096);
        assert!(capacity(&req(4, 4096), &h).is_ok());
        h.used = Resources {
            vcpus: 1,
            mem_mib: 0,
            disk_mib: 0,
        };
        assert_eq!(capacity(&req(4, 1024), &h), Err("capacity"));
        assert_eq!(
            capacity(&req(1, 8192), &host("b", 64, 4096)),
            Err("capacity")
        );
    }
}
