//! Tenant quota: what the tenant's VMs hold, plus this one, stays within its quota.
//! The same for every host, so [`crate::scheduler::place`] checks it once.

use crate::scheduler::Request;

pub fn quota(req: &Request) -> Result<(), String> {
    let Some(q) = req.quota else { return Ok(()) };
    let (used, vms) = req.tenant_usage;
    if vms + 1 > q.vms {
        return Err(format!("{} already has {vms} of {} VMs", req.tenant, q.vms));
    }
    if used.vcpus + req.resources.vcpus > q.vcpus {
        return Err(format!(
            "vcpus: {} + {} > {}",
            used.vcpus, req.resources.vcpus, q.vcpus
        ));
    }
    if used.mem_mib + req.resources.mem_mib > q.mem_mib {
        return Err(format!(
            "mem_mib: {} + {} > {}",
            used.mem_mib, req.resources.mem_mib, q.mem_mib
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quota, Resources};
    use crate::scheduler::fixture::*;

    #[test]
    fn a_tenant_cannot_grow_past_its_quota() {
        let mut r = req(2, 512);
        assert!(quota(&r).is_ok(), "no quota, no limit");
        r.quota = Some(Quota {
            vcpus: 4,
            mem_mib: 1024,
            vms: 2,
        });
        assert!(quota(&r).is_ok());
        r.tenant_usage = (
            Resources {
                vcpus: 3,
                mem_mib: 0,
                disk_mib: 0,
            },
            1,
        );
        assert!(quota(&r).unwrap_err().contains("vcpus"));
        r.tenant_usage = (Resources::default(), 2);
        assert!(quota(&r).unwrap_err().contains("VMs"));
    }
}
