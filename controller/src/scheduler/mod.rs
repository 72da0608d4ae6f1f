//! The scheduler: filter -> score -> pick, over an in-memory view of the hosts. No
//! I/O: the caller builds the views from the store and commits the pick with
//! compare-and-swap. Also the rebalancer, which proposes live migrations.

pub mod filters;
pub mod rebalance;
pub mod scores;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Quota, Resources};

/// One host as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub id: String,
    pub ready: bool,
    pub cordoned: bool,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    /// What the VMs placed on it hold.
    pub used: Resources,
    /// `tenant/k=v` of every VM on the host, counted, for affinity.
    pub vm_labels: HashMap<String, u32>,
    /// The VMs on it and what each holds, for the rebalancer.
    pub vms: Vec<(String, Resources)>,
}

impl HostView {
    /// Adds a VM to the view (after a placement).
    pub fn add(&mut self, vm: &str, r: Resources, tenant_labels: &[String]) {
        self.used = self.used.plus(r);
        for l in tenant_labels {
            *self.vm_labels.entry(l.clone()).or_default() += 1;
        }
        self.vms.push((vm.to_string(), r));
    }
}

/// What a VM asks of its host.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub tenant: String,
    pub resources: Resources,
    /// Labels the host must carry.
    pub host_labels: BTreeMap<String, String>,
    /// `tenant/k=v`: run next to one of these.
    pub with: Vec<String>,
    /// `tenant/k=v`: never next to any of these.
    pub apart_from: Vec<String>,
    /// Hosts not to use (the source of a migration).
    pub exclude: Vec<String>,
    /// The tenant's quota and what its VMs hold now (resources, VM count).
    pub quota: Option<Quota>,
    pub tenant_usage: (Resources, u64),
}

/// How hosts are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Weights {
    /// Prefer full hosts (fewer hosts busy).
    pub binpack: f64,
    /// Prefer empty hosts (fewer VMs per failure).
    pub spread: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            binpack: 0.0,
            spread: 1.0,
        }
    }
}

/// Why no host fits: per filter, how many hosts it turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPlacement {
    #[error("tenant quota: {0}")]
    Quota(String),
    #[error("no host fits: {0}")]
    NoHost(String),
}

/// Chooses a host for `req` among `hosts`: every filter must pass, the best weighted
/// score wins (ties: the first host).
pub fn place<'a>(
    req: &Request,
    hosts: &'a [HostView],
    w: Weights,
) -> Result<&'a HostView, NoPlacement> {
    filters::quota(req).map_err(NoPlacement::Quota)?;
    let mut best: Option<(&HostView, f64)> = None;
    // Few distinct reasons: a small vector beats a map in the hot loop.
    let mut rejected: Vec<(&'static str, usize)> = Vec::with_capacity(8);
    for h in hosts {
        if let Err(why) = filters::all(req, h) {
            match rejected
                .iter_mut()
                .find(|(k, _)| std::ptr::eq(*k, why) || *k == why)
            {
                Some((_, n)) => *n += 1,
                None => rejected.push((why, 1)),
            }
            continue;
        }
        let s = scores::weighted(req, h, w);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((h, s));
        }
    }
    best.map(|(h, _)| h).ok_or_else(|| {
        let why: Vec<String> = rejected.iter().map(|(k, n)| format!("{n} {k}")).collect();
        NoPlacement::NoHost(if why.is_empty() {
            "no hosts".into()
        } else {
            why.join(", ")
        })
    })
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    pub fn host(id: &str, vcpus: u64, mem: u64) -> HostView {
        HostView {
            id: id.into(),
            ready: true,
            capacity: Resources {
                vcpus,
                mem_mib: mem,
                disk_mib: 0,
            },
            ..Default::default()
        }
    }

    pub fn req(vcpus: u64, mem: u64) -> Request {
        Request {
            tenant: "t".into(),
            resources: Resources {
                vcpus,
                mem_mib: mem,
                disk_mib: 0,
            },
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    #[test]
    fn spread_picks_the_emptiest_host_and_binpack_the_fullest_that_fits() {
        let mut hosts = vec![host("a", 8, 8192), host("b", 8, 8192), host("c", 8, 8192)];
        hosts[0].used = Resources {
            vcpus: 4,
            mem_mib: 4096,
            disk_mib: 0,
        };
        hosts[2].used = Resources {
            vcpus: 7,
            mem_mib: 7000,
            disk_mib: 0,
        };
        let r = req(2, 1024);
        assert_eq!(
            place(
                &r,
                &hosts,
                Weights {
                    binpack: 0.0,
                    spread: 1.0
                }
            )
            .unwrap()
            .id,
            "b"
        );
        assert_eq!(
            place(
                &r,
                &hosts,
                Weights {
                    binpack: 1.0,
                    spread: 0.0
                }
            )
            .unwrap()
            .id,
            "a",
            "c is too full"
        );
    }

    #[test]
    fn no_placement_says_which_filters_refused() {
        let mut hosts = vec![host("a", 1, 512), host("b", 8, 8192)];
        hosts[1].cordoned = true;
        let e = place(&req(2, 1024), &hosts, Weights::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("capacity") && e.contains("cordoned"), "{e}");
    }
}
