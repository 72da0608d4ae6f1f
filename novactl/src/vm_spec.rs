//! `novactl vm create`'s flags and the contract's `VmSpec` they make. What users call
//! things: `--kernel` is the kernel the VMM boots (the spec's `image` field), `--image`
//! is a disk image (the VM's first disk, cloned from it), `--disk image=..,size=10G,ro`
//! adds disks. Parsing happens in clap, so a bad value is a usage error (exit 2).

use std::collections::BTreeMap;

use clap::Args;
use nova_controller_api::{Affinity, DiskRequest, HostFailurePolicy, NicRequest, VmSpec};

/// The flags of `vm create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The VM's name, unique in its tenant.
    pub name: String,
    /// The kernel to boot: an absolute path on the hosts, or sha256:<hex> of an image
    /// in the hosts' image store (ELF vmlinux or bzImage).
    #[arg(long, value_name = "PATH|sha256:HEX")]
    pub kernel: String,
    /// The disk image the VM boots from: its first disk is cloned from it (an absolute
    /// path on the hosts or sha256:<hex>). Same as a first --disk image=IMAGE.
    #[arg(long, value_name = "PATH|sha256:HEX")]
    pub image: Option<String>,
    /// A disk, repeatable: image=IMAGE (cloned from a disk image), size=SIZE (M, G or T;
    /// a blank disk, or the clone grown to it), ro (read-only). At least image or size.
    #[arg(long = "disk", value_name = "image=..,size=10G[,ro]", value_parser = parse_disk)]
    pub disks: Vec<DiskRequest>,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Memory, MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub mem_mib: u64,
    /// The kernel's command line.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// An initrd to load with the kernel (absolute path on the hosts or sha256:<hex>).
    #[arg(long, value_name = "PATH|sha256:HEX")]
    pub initrd: Option<String>,
    /// Network interfaces on the host's bridge.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub nics: usize,
    /// A label of the VM, repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// A label its host must carry, repeatable.
    #[arg(long = "host-label", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub host_labels: Vec<(String, String)>,
    /// Run next to a VM of the tenant with this label, repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub with: Vec<String>,
    /// Never share a host with a VM of the tenant with this label, repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub apart_from: Vec<String>,
    /// Start it again on another host when its host goes down (default: wait for it).
    #[arg(long)]
    pub restart_on_host_failure: bool,
    /// Place it but do not start it.
    #[arg(long)]
    pub no_start: bool,
    /// Create it in this tenant (system tenant callers acting for a tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// A key that makes retries safe: the same key again answers the VM the first
    /// call created instead of creating another.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

impl CreateArgs {
    /// The contract's spec for these flags.
    pub fn spec(&self) -> VmSpec {
        let boot = self.image.iter().map(|i| DiskRequest {
            image: Some(i.clone()),
            size_mib: None,
            read_only: false,
            shared_path: None,
        });
        VmSpec {
            name: self.name.clone(),
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            disks: boot.chain(self.disks.iter().cloned()).collect(),
            nics: vec![NicRequest::default(); self.nics],
            labels: self.labels.iter().cloned().collect(),
            affinity: Affinity {
                host_labels: self.host_labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                with: self.with.clone(),
                apart_from: self.apart_from.clone(),
            },
            on_host_failure: if self.restart_on_host_failure {
                HostFailurePolicy::Restart
            } else {
                HostFailurePolicy::Wait
            },
            start: !self.no_start,
            cloud_init: None,
        }
    }
}

/// `KEY=VALUE`.
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `KEY=VALUE`, kept as the string the contract wants.
fn parse_label(s: &str) -> Result<String, String> {
    parse_pair(s).map(|_| s.to_string())
}

/// A size with its unit (M, G, T; MiB, GiB, TiB), in MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("size {s:?} needs a unit: M, G or T (10G)"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("size {s:?}: not a whole number before the unit"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "M" | "MB" | "MI" | "MIB" => 1,
        "G" | "GB" | "GI" | "GIB" => 1 << 10,
        "T" | "TB" | "TI" | "TIB" => 1 << 20,
        u => return Err(format!("size {s:?}: unit {u:?} is not M, G or T")),
    };
    let mib = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if mib == 0 {
        return Err(format!("size {s:?} is zero"));
    }
    Ok(mib)
}

/// `image=REF,size=SIZE,ro` (any order; at least image or size).
pub fn parse_disk(s: &str) -> Result<DiskRequest, String> {
    let mut d = DiskRequest {
        image: None,
        size_mib: None,
        read_only: false,
        shared_path: None,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("image", v)) if !v.is_empty() => d.image = Some(v.into()),
            Some(("size", v)) => d.size_mib = Some(parse_size(v)?),
            None if part == "ro" => d.read_only = true,
            _ => {
                return Err(format!(
                    "disk {s:?}: {part:?} is not image=REF, size=SIZE or ro"
                ))
            }
        }
    }
    if d.image.is_none() && d.size_mib.is_none() {
        return Err(format!("disk {s:?}: give image=REF, size=SIZE or both"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_read_as_users_write_them() {
        let d = parse_disk("image=sha256:ab12,size=10G,ro").unwrap();
        assert_eq!(d.image.as_deref(), Some("sha256:ab12"));
        assert_eq!(d.size_mib, Some(10 << 10));
        assert!(d.read_only);
        let blank = parse_disk("size=512M").unwrap();
        assert_eq!(
            (blank.image, blank.size_mib, blank.read_only),
            (None, Some(512), false)
        );
        assert_eq!(parse_size("1T"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2048));
        for bad in ["ro", "size=10", "size=0G", "image=", "speed=3", "size=5X"] {
            assert!(parse_disk(bad).is_err(), "{bad} accepted");
        }
    }
}
