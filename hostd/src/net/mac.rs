//! MAC addresses for VM NICs: locally administered unicast `02:HH:HH:CC:CC:CC`, where
//! `HH:HH` comes from the host id and `CC:CC:CC` from a per-host counter, skipping any
//! address already in use on this host (VMs that migrated in keep their MACs).

use std::collections::HashSet;

/// Formats a MAC.
pub fn format(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Two bytes derived from the host id (FNV-1a), so hosts rarely share a prefix.
pub fn host_prefix(host_id: &str) -> [u8; 2] {
    let mut h: u32 = 0x811c_9dc5;
    for b in host_id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    [(h >> 8) as u8, h as u8]
}

/// The MAC for counter value `n`.
pub fn mac_for(prefix: [u8; 2], n: u32) -> [u8; 6] {
    [
        0x02,
        prefix[0],
        prefix[1],
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ]
}

/// Picks the next free MAC starting at `*counter` (advanced past it), not in `used`.
/// Counter values wrap at 2^24; `None` only if all 2^24 are in use.
pub fn allocate(prefix: [u8; 2], counter: &mut u32, used: &HashSet<[u8; 6]>) -> Option<[u8; 6]> {
    for _ in 0..(1u32 << 24) {
        let n = *counter & 0x00ff_ffff;
        *counter = (n + 1) & 0x00ff_ffff;
        // 0 and the all-ones suffix are left out: easier to spot in captures.
        if n == 0 || n == 0x00ff_ffff {
            continue;
        }
        let mac = mac_for(prefix, n);
        if !used.contains(&mac) {
            return Some(mac);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_local_unicast_and_skip_used_ones() {
        let p = host_prefix("host-a");
        let mut c = 1;
        let mut used = HashSet::new();
        used.insert(mac_for(p, 2));
        let a = allocate(p, &mut c, &used).unwrap();
        let b = allocate(p, &mut c, &used).unwrap();
        assert_eq!(a, mac_for(p, 1));
        assert_eq!(b, mac_for(p, 3), "the used address was skipped");
        assert_eq!(a[0] & 0b11, 0b10, "locally administered, unicast");
        assert_eq!(format(a)[..2].to_string(), "02");
    }

    #[test]
    fn counter_wraps_without_handing_out_zero() {
        let p = [0xaa, 0xbb];
        let mut c = 0x00ff_fffe;
        let used = HashSet::new();
        assert_eq!(allocate(p, &mut c, &used), Some(mac_for(p, 0x00ff_fffe)));
        assert_eq!(allocate(p, &mut c, &used), Some(mac_for(p, 1)));
    }

    #[test]
    fn different_hosts_get_different_prefixes() {
        assert_ne!(host_prefix("host-a"), host_prefix("host-b"));
    }
}
