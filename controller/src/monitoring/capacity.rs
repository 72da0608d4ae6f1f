//! Capacity planning: per host and for the cluster, how much of the vCPUs, memory
//! and disk is allocated to VMs and used on the host, the trend of each over the
//! metric history (a least-squares line), the days until it reaches the capacity,
//! and how many VMs of a given size still fit, now and in 30 days at the trend.
//! Reads the stored hosts and the history; knows nothing of HTTP.

use std::collections::HashMap;

use super::trend;
use crate::context::Context;
use crate::error::Result;
use crate::model::{Capacity, Host, HostCapacity, HostState, ResourceForecast};
use crate::store::{Objects, StoreError};

const MIB: f64 = 1048576.0;
const DAY: f64 = 86_400.0;

/// One resource's history names: allocated, used, and the host's physical total.
struct Names {
    resource: &'static str,
    allocated: &'static str,
    used: &'static str,
    total: &'static str,
}

const RESOURCES: [Names; 3] = [
    Names {
        resource: "vcpus",
        allocated: "host.allocated_vcpus",
        used: "host.cpu",
        total: "host.cores",
    },
    Names {
        resource: "memory_bytes",
        allocated: "host.allocated_mem_bytes",
        used: "host.mem_used_bytes",
        total: "host.mem_total_bytes",
    },
    Names {
        resource: "disk_bytes",
        allocated: "host.allocated_disk_bytes",
        used: "host.disk_used_bytes",
        total: "host.disk_total_bytes",
    },
];

/// Per metric, per host: the points of the window.
type History = HashMap<&'static str, HashMap<String, Vec<(u64, f64)>>>;

/// Growth per day of `points` (zero with too little history).
fn per_day(points: Option<&Vec<(u64, f64)>>) -> f64 {
    points
        .and_then(|p| trend::fit(p))
        .map(|l| l.slope * DAY)
        .unwrap_or(0.0)
}

/// Days until `now` grows to `cap` at `trend` a day.
fn days_until(now: f64, cap: f64, trend: f64) -> Option<f64> {
    if now >= cap {
        Some(0.0)
    } else if trend > 0.0 {
        Some((cap - now) / trend)
    } else {
        None
    }
}

fn host_capacity(h: &Host, hist: &History, vm: (u64, u64)) -> HostCapacity {
    let series = |m: &str| hist.get(m).and_then(|s| s.get(&h.id));
    let latest = |m: &str| series(m).and_then(|p| p.last()).map(|p| p.1);
    let mut resources = vec![];
    for n in &RESOURCES {
        let (capacity, allocated) = match n.resource {
            "vcpus" => (h.capacity.vcpus as f64, h.allocated.vcpus as f64),
            "memory_bytes" => (
                h.capacity.mem_mib as f64 * MIB,
                h.allocated.mem_mib as f64 * MIB,
            ),
            _ => (
                h.capacity.disk_mib as f64 * MIB,
                h.allocated.disk_mib as f64 * MIB,
            ),
        };
        let trend_per_day = per_day(series(n.allocated));
        let used = latest(n.used);
        let used_trend = used.map(|_| per_day(series(n.used)));
        // Use fills the host's physical resource; allocation its allocatable capacity.
        let physical = latest(n.total).unwrap_or(capacity);
        resources.push(ResourceForecast {
            resource: n.resource.into(),
            capacity,
            allocated,
            used,
            free: (capacity - allocated).max(0.0),
            trend_per_day,
            days_until_full: days_until(allocated, capacity, trend_per_day),
            used_trend_per_day: used_trend,
            days_until_used_full: match (used, used_trend) {
                (Some(u), Some(t)) => days_until(u, physical, t),
                _ => None,
            },
        });
    }
    let (fits_now, fits_in_30_days) = fits(&resources, vm);
    HostCapacity {
        host: h.id.clone(),
        resources,
        fits_now,
        fits_in_30_days,
    }
}

/// VMs of `vm` = (vCPUs, MiB) that fit in what is free, now and after 30 days of trend.
fn fits(resources: &[ResourceForecast], vm: (u64, u64)) -> (u64, u64) {
    let mut now = u64::MAX;
    let mut later = u64::MAX;
    for r in resources {
        let size = match r.resource.as_str() {
            "vcpus" => vm.0 as f64,
            "memory_bytes" => vm.1 as f64 * MIB,
            _ => continue,
        };
        if size <= 0.0 {
            continue;
        }
        now = now.min((r.free / size).floor() as u64);
        let free_later = (r.free - r.trend_per_day.max(0.0) * 30.0).max(0.0);
        later = later.min((free_later / size).floor() as u64);
    }
    (now.min(u32::MAX as u64), later.min(u32::MAX as u64))
}

/// The cluster's sum over its ready hosts.
fn cluster(hosts: &[HostCapacity], ready: &[bool]) -> HostCapacity {
    let mut resources: Vec<ResourceForecast> = vec![];
    let (mut fits_now, mut fits_in_30_days) = (0, 0);
    for (h, _) in hosts.iter().zip(ready).filter(|(_, r)| **r) {
        fits_now += h.fits_now;
        fits_in_30_days += h.fits_in_30_days;
        for r in &h.resources {
            match resources.iter_mut().find(|x| x.resource == r.resource) {
                Some(x) => {
                    x.capacity += r.capacity;
                    x.allocated += r.allocated;
                    x.free += r.free;
                    x.trend_per_day += r.trend_per_day;
                    x.used = match (x.used, r.used) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                    x.used_trend_per_day = match (x.used_trend_per_day, r.used_trend_per_day) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                }
                None => resources.push(r.clone()),
            }
        }
    }
    for r in &mut resources {
        r.days_until_full = days_until(r.allocated, r.capacity, r.trend_per_day);
        r.days_until_used_full = match (r.used, r.used_trend_per_day) {
            (Some(u), Some(t)) => days_until(u, r.capacity, t),
            _ => None,
        };
    }
    HostCapacity {
        host: "cluster".into(),
        resources,
        fits_now,
        fits_in_30_days,
    }
}

/// Capacity of every host and of the cluster, trends fitted over the last
/// `window_s` before `now_s`; `fits_*` count VMs of `vcpus` and `mem_mib`.
pub async fn capacity(
    ctx: &Context,
    vcpus: u64,
    mem_mib: u64,
    window_s: u64,
    now_s: u64,
) -> Result<Capacity> {
    let mut hosts = ctx.store.list_all::<Host>().await?;
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let db = ctx.monitoring.db.clone();
    let hist = tokio::task::spawn_blocking(move || {
        let mut hist = History::new();
        for n in &RESOURCES {
            for m in [n.allocated, n.used, n.total] {
                let (_, found) = db.query(
                    m,
                    None,
                    now_s.saturating_sub(window_s),
                    now_s,
                    now_s,
                    &|_| true,
                )?;
                hist.insert(
                    m,
                    found
                        .into_iter()
                        .map(|f| (f.key.target, f.points))
                        .collect(),
                );
            }
        }
        Ok::<_, super::tsdb::TsdbError>(hist)
    })
    .await
    .map_err(|e| StoreError::Backend(e.to_string()))?
    .map_err(|e| StoreError::Backend(e.to_string()))?;
    let per_host: Vec<HostCapacity> = hosts
        .iter()
        .map(|h| host_capacity(h, &hist, (vcpus, mem_mib)))
        .collect();
    let ready: Vec<bool> = hosts.iter().map(|h| h.state == HostState::Ready).collect();
    Ok(Capacity {
        cluster: cluster(&per_host, &ready),
        hosts: per_host,
        vm_vcpus: vcpus,
        vm_mem_mib: mem_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(resource: &str, free: f64, trend: f64) -> ResourceForecast {
        ResourceForecast {
            resource: resource.into(),
            capacity: 0.0,
            allocated: 0.0,
            used: None,
            free,
            trend_per_day: trend,
            days_until_full: None,
            used_trend_per_day: None,
            days_until_used_full: None,
        }
    }

    #[test]
    fn what_fits_is_the_scarcest_resource_now_and_after_the_trend() {
        // 8 vCPUs and 4 GiB free; memory grows 64 MiB a day.
        let rs = [
            r("vcpus", 8.0, 0.0),
            r("memory_bytes", 4096.0 * MIB, 64.0 * MIB),
        ];
        // 1 vCPU + 512 MiB: 8 by memory and vCPUs now; (4096 - 1920) / 512 = 4 in 30 days.
        assert_eq!(fits(&rs, (1, 512)), (8, 4));
        assert_eq!(fits(&rs, (4, 256)), (2, 2));
    }

    #[test]
    fn days_until_full_needs_growth() {
        assert_eq!(days_until(50.0, 100.0, 10.0), Some(5.0));
        assert_eq!(days_until(50.0, 100.0, 0.0), None);
        assert_eq!(days_until(120.0, 100.0, -1.0), Some(0.0));
    }
}
