//! A VM as the API and `/metrics` show it: hostd's record with what the host sees of
//! its VMM process and the VMM's own counters (`GET /v1/vm`), asked concurrently for
//! every VM and never for longer than a second.

use std::sync::Arc;
use std::time::Duration;

use nova_hostd_api::VmInfo;
use nova_vmm_api::{Counters, DeviceCounters};

use crate::vms::process;
use crate::vms::record::{is_active, Vm};
use crate::vms::table::Vms;

/// One VM with what its VMM reported just now.
#[derive(Debug, Clone)]
pub struct Live {
    pub info: VmInfo,
    /// The VMM's counters, when it answered.
    pub vmm: Option<Counters>,
    /// What the host sees of the VMM process, while it runs.
    pub process: Option<process::Stats>,
}

/// The VMM's counters as `VmInfo.counters` names them: the VM-wide ones, then per
/// device `diskN_read_bytes`, `nicN_rx_bytes`, ... (disks and NICs numbered apart).
pub fn flatten(c: &Counters, out: &mut std::collections::BTreeMap<String, u64>) {
    out.insert("vcpu_exits".into(), c.vcpu_exits);
    out.insert("io_exits".into(), c.io_exits);
    out.insert("mmio_exits".into(), c.mmio_exits);
    out.insert("console_bytes".into(), c.console_bytes);
    let (mut disk, mut nic) = (0, 0);
    for d in &c.devices {
        match d {
            DeviceCounters::Block(b) => {
                for (k, v) in [
                    ("read_bytes", b.read_bytes),
                    ("write_bytes", b.write_bytes),
                    ("read_requests", b.read_requests),
                    ("write_requests", b.write_requests),
                ] {
                    out.insert(format!("disk{disk}_{k}"), v);
                }
                disk += 1;
            }
            DeviceCounters::Net(n) => {
                for (k, v) in [
                    ("rx_bytes", n.rx_bytes),
                    ("tx_bytes", n.tx_bytes),
                    ("rx_packets", n.rx_packets),
                    ("tx_packets", n.tx_packets),
                ] {
                    out.insert(format!("nic{nic}_{k}"), v);
                }
                nic += 1;
            }
        }
    }
}

impl Vms {
    /// The VM with its VMM's live state and counters.
    pub async fn live(&self, vm: &Vm) -> Live {
        let mut info = vm.info();
        let stats = info.pid.and_then(process::stats);
        if let Some(s) = stats {
            info.counters.insert("process_cpu_ms".into(), s.cpu_ms);
            info.counters
                .insert("process_rss_bytes".into(), s.rss_bytes);
            info.counters
                .insert("guest_resident_bytes".into(), s.guest_bytes);
        }
        let mut counters = None;
        if is_active(info.state) && info.pid.is_some() {
            if let Ok(vmm) = vm.vmm() {
                if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(1), vmm.info()).await {
                    flatten(&v.counters, &mut info.counters);
                    info.kvm.get_or_insert_with(|| v.kvm.as_str().to_string());
                    counters = Some(v.counters);
                }
            }
        }
        Live {
            info,
            vmm: counters,
            process: stats,
        }
    }

    /// The VM with its VMM's counters, as the API shows it.
    pub async fn vm_info(&self, vm: &Vm) -> VmInfo {
        self.live(vm).await.info
    }

    /// Every VM, live (queried concurrently), in id order.
    pub async fn live_all(self: &Arc<Self>) -> Vec<Live> {
        let mut set = tokio::task::JoinSet::new();
        for (i, vm) in self.all().into_iter().enumerate() {
            let vms = self.clone();
            set.spawn(async move { (i, vms.live(&vm).await) });
        }
        let mut out: Vec<(usize, Live)> = set.join_all().await;
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_vmm_api::{BlockCounters, NetCounters};

    #[test]
    fn device_counters_are_numbered_per_kind() {
        let c = Counters {
            vcpu_exits: 5,
            devices: vec![
                DeviceCounters::Block(BlockCounters {
                    read_bytes: 512,
                    ..Default::default()
                }),
                DeviceCounters::Net(NetCounters {
                    tx_bytes: 60,
                    ..Default::default()
                }),
                DeviceCounters::Block(BlockCounters {
                    write_bytes: 4096,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        let mut m = Default::default();
        flatten(&c, &mut m);
        assert_eq!(m["vcpu_exits"], 5);
        assert_eq!(m["disk0_read_bytes"], 512);
        assert_eq!(m["disk1_write_bytes"], 4096);
        assert_eq!(m["nic0_tx_bytes"], 60);
    }
}
