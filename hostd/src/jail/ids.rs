//! Per-VM uids (`--jail-ids FIRST-LAST`; the gid equals the uid): each VM keeps one
//! while hostd runs, VMMs found running after a restart keep theirs.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Mutex;

use std::path::Path;

use super::cgroup::Cgroups;
use super::favordynmods::{self, Mode};
use super::JailSettings;
use crate::error::{Error, Result};

/// A range of uids, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub last: u32,
}

impl IdRange {
    /// Far above login users and the usual subuid ranges (100000-165535).
    pub const DEFAULT: IdRange = IdRange {
        first: 300_000,
        last: 399_999,
    };
}

impl FromStr for IdRange {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not FIRST-LAST (e.g. 300000-399999)"))?;
        let n = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{x:?} is not a uid"))
        };
        let (first, last) = (n(a)?, n(b)?);
        if first == 0 || first > last || last == u32::MAX {
            return Err(format!(
                "{s:?}: uids must be 1 to {} and FIRST <= LAST",
                u32::MAX - 1
            ));
        }
        Ok(IdRange { first, last })
    }
}

/// Hands out uids and knows the host's cgroups.
pub struct Jailer {
    pub settings: JailSettings,
    pub cgroups: Cgroups,
    /// Whether cgroup attaches are fast (`--cgroup-favordynmods`).
    pub attach: Mode,
    given: Mutex<BTreeMap<String, u32>>,
}

impl Jailer {
    pub fn new(settings: JailSettings) -> Jailer {
        // Before the cgroups are looked at: on a pure v1 host this mounts a cgroup2.
        let attach = if settings.enabled && settings.favordynmods {
            favordynmods::enable(Path::new(favordynmods::OWN_MOUNT))
        } else {
            Mode::Off
        };
        let cgroups = if settings.enabled {
            Cgroups::detect()
        } else {
            Cgroups::none()
        };
        let missing = cgroups.missing();
        if settings.enabled && !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
            tracing::warn!(
                "no cgroup hierarchy offers {}: VMMs run without those limits",
                names.join(", ")
            );
        }
        tracing::info!(hierarchies = ?cgroups.hierarchies, favordynmods = attach.name(), "VMM cgroups");
        Jailer {
            settings,
            cgroups,
            attach,
            given: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.given.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The VM's uid: the one it has, else the lowest free one.
    pub fn uid_for(&self, vm_id: &str) -> Result<u32> {
        let mut g = self.lock();
        if let Some(&u) = g.get(vm_id) {
            return Ok(u);
        }
        let used: std::collections::BTreeSet<u32> = g.values().copied().collect();
        let r = self.settings.ids;
        let uid = (r.first..=r.last)
            .find(|u| !used.contains(u))
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "--jail-ids {}-{}: every uid is taken",
                    r.first, r.last
                ))
            })?;
        g.insert(vm_id.to_string(), uid);
        Ok(uid)
    }

    /// Records the uid a running VMM has (after a hostd restart).
    pub fn keep(&self, vm_id: &str, uid: u32) {
        let r = self.settings.ids;
        if (r.first..=r.last).contains(&uid) {
            self.lock().insert(vm_id.to_string(), uid);
        }
    }

    /// Forgets a deleted VM: its uid and cgroups.
    pub fn release(&self, vm_id: &str) {
        self.lock().remove(vm_id);
        self.cgroups.remove(vm_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "10-20".parse::<IdRange>().unwrap(),
            IdRange {
                first: 10,
                last: 20
            }
        );
        for bad in ["", "10", "20-10", "0-5", "a-b"] {
            assert!(bad.parse::<IdRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_vm_gets_its_own_uid_and_keeps_it() {
        let j = Jailer {
            settings: JailSettings {
                enabled: true,
                ids: IdRange {
                    first: 10,
                    last: 11,
                },
                favordynmods: true,
            },
            cgroups: Cgroups::none(),
            attach: Mode::Off,
            given: Mutex::new(BTreeMap::new()),
        };
        assert_eq!(j.uid_for("a").unwrap(), 10);
        assert_eq!(j.uid_for("b").unwrap(), 11);
        assert_eq!(j.uid_for("a").unwrap(), 10);
        assert!(j.uid_for("c").is_err());
        j.release("a");
        assert_eq!(j.uid_for("c").unwrap(), 10);
    }
}
