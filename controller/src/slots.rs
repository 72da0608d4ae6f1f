//! Migration slots: how many live migrations run at once on this controller, per host
//! (source and destination) and in total, so that the policy's parallelism limits
//! hold; and which migration operations this process follows.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::model::MigrationPolicy;

/// Migrations under way on this controller.
#[derive(Default)]
pub struct Slots {
    /// Migrations in total, and per host.
    inner: Mutex<(u32, HashMap<String, u32>)>,
    /// Operation ids followed by this process.
    following: Mutex<HashSet<String>>,
}

/// A held slot, released on drop.
pub struct Slot {
    slots: Arc<Slots>,
    hosts: [String; 2],
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(1);
        for h in &self.hosts {
            if let Some(n) = g.1.get_mut(h) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Slots {
    /// A slot for a migration `from` -> `to`, if the policy's limits allow one now.
    pub fn try_take(self: &Arc<Self>, p: &MigrationPolicy, from: &str, to: &str) -> Option<Slot> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let busy = |h: &str| g.1.get(h).copied().unwrap_or(0);
        if g.0 >= p.max_parallel_cluster
            || busy(from) >= p.max_parallel_per_host
            || busy(to) >= p.max_parallel_per_host
        {
            return None;
        }
        g.0 += 1;
        *g.1.entry(from.into()).or_default() += 1;
        *g.1.entry(to.into()).or_default() += 1;
        Some(Slot {
            slots: self.clone(),
            hosts: [from.into(), to.into()],
        })
    }

    /// Marks operation `op` as followed here; false if it already was.
    pub fn follow(&self, op: &str) -> bool {
        self.following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op.to_string())
    }

    /// Whether this process follows operation `op`.
    pub fn follows(&self, op: &str) -> bool {
        self.following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(op)
    }

    /// Operation `op` is no longer followed here.
    pub fn unfollow(&self, op: &str) {
        self.following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_limits_migrations_per_host_and_in_total() {
        let slots = Arc::new(Slots::default());
        let p = MigrationPolicy {
            max_parallel_cluster: 2,
            max_parallel_per_host: 1,
            ..Default::default()
        };
        let a = slots.try_take(&p, "h1", "h2").unwrap();
        assert!(slots.try_take(&p, "h1", "h3").is_none(), "h1 is busy");
        let _b = slots.try_take(&p, "h3", "h4").unwrap();
        assert!(
            slots.try_take(&p, "h5", "h6").is_none(),
            "two in the cluster"
        );
        drop(a);
        assert!(slots.try_take(&p, "h1", "h5").is_some(), "released on drop");
    }
}
