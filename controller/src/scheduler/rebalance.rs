//! The rebalancer: when the busiest and the idlest host differ by more than a
//! threshold, proposes live migrations that narrow the gap, never breaking a filter.

use super::{filters, HostView, Request};

/// One proposed live migration (the contract's `GET /v1/rebalance` item).
pub use crate::model::Move;

fn load(h: &HostView) -> f64 {
    let f = |u: u64, c: u64| if c == 0 { 1.0 } else { u as f64 / c as f64 };
    f(h.used.vcpus, h.capacity.vcpus).max(f(h.used.mem_mib, h.capacity.mem_mib))
}

/// Up to `max_moves` migrations that bring the load (the larger of vCPU and memory
/// fractions) of every Ready host within `threshold` of each other.
pub fn propose(hosts: &[HostView], threshold: f64, max_moves: usize) -> Vec<Move> {
    let mut hosts: Vec<HostView> = hosts.iter().filter(|h| h.ready).cloned().collect();
    let mut moves = vec![];
    while moves.len() < max_moves && hosts.len() > 1 {
        let (mut hi, mut lo) = (0, 0);
        for (i, h) in hosts.iter().enumerate() {
            if load(h) > load(&hosts[hi]) {
                hi = i;
            }
            if !h.cordoned && load(h) < load(&hosts[lo]) || hosts[lo].cordoned {
                lo = i;
            }
        }
        let gap = load(&hosts[hi]) - load(&hosts[lo]);
        if hi == lo || gap <= threshold || hosts[lo].cordoned {
            break;
        }
        // The largest VM whose move narrows the gap and which the idle host takes.
        let mut vms = hosts[hi].vms.clone();
        vms.sort_by_key(|(_, r)| std::cmp::Reverse((r.vcpus, r.mem_mib)));
        let mut chosen = None;
        for (vm, r) in vms {
            let req = Request {
                resources: r,
                ..Default::default()
            };
            if filters::capacity(&req, &hosts[lo]).is_err() {
                continue;
            }
            let mut src = hosts[hi].clone();
            src.used = src.used.minus(r);
            let mut dst = hosts[lo].clone();
            dst.used = dst.used.plus(r);
            if (load(&src) - load(&dst)).abs() < gap {
                chosen = Some((vm, r));
                break;
            }
        }
        let Some((vm, r)) = chosen else { break };
        moves.push(Move {
            vm: vm.clone(),
            from: hosts[hi].id.clone(),
            to: hosts[lo].id.clone(),
        });
        hosts[hi].used = hosts[hi].used.minus(r);
        hosts[hi].vms.retain(|(v, _)| *v != vm);
        hosts[lo].add(&vm, r, &[]);
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;
    use crate::scheduler::fixture::*;

    fn r(v: u64) -> Resources {
        Resources {
            vcpus: v,
            mem_mib: v * 512,
            disk_mib: 0,
        }
    }

    #[test]
    fn an_unbalanced_pair_gets_migrations_that_even_it_out() {
        let mut a = host("a", 8, 4096);
        for i in 0..6 {
            a.add(&format!("vm{i}"), r(1), &[]);
        }
        let b = host("b", 8, 4096);
        let moves = propose(&[a, b], 0.25, 10);
        assert!(!moves.is_empty() && moves.len() <= 3, "{moves:?}");
        assert!(moves.iter().all(|m| m.from == "a" && m.to == "b"));
    }

    #[test]
    fn balanced_hosts_and_cordoned_targets_get_no_moves() {
        let mut a = host("a", 8, 4096);
        a.add("x", r(2), &[]);
        let mut b = host("b", 8, 4096);
        b.add("y", r(2), &[]);
        assert!(propose(&[a.clone(), b], 0.25, 10).is_empty());
        let mut c = host("c", 8, 4096);
        c.cordoned = true;
        a.add("z", r(4), &[]);
        assert!(propose(&[a, c], 0.25, 10).is_empty());
    }
}
