//! A VM's configuration: what `nova-vmm run` flags, a JSON config file and
//! `GET /v1/vm` all say, in one struct, with its limits. Validation names the field
//! that is wrong.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use utoipa::ToSchema;

pub use nova_http::FieldError;

/// Most vCPUs a VM may have (the MP table's and the VMM's limit).
pub const MAX_VCPUS: u8 = 32;
/// Guest memory bounds, MiB.
pub const MIN_MEM_MIB: u64 = 64;
pub const MAX_MEM_MIB: u64 = 1 << 20;
/// Most virtio devices (disks and NICs together) per VM.
pub const MAX_VIRTIO_DEVICES: usize = 16;

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// bzImage, ELF vmlinux, or PVH ELF.
    #[schema(value_type = String)]
    pub kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; virtio-mmio device parameters are appended to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    #[serde(default = "default_mem_mib")]
    pub mem_mib: u64,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Unix socket of the VM's HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub api_sock: Option<PathBuf>,
    /// File the serial console is written to (stdout when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub console: Option<PathBuf>,
    /// ACPI tables (devices described in the DSDT, a power button for graceful
    /// stops); without them the guest gets only the MP table and finds virtio
    /// devices from `virtio_mmio.device=` words on its command line.
    #[serde(default = "default_acpi")]
    pub acpi: bool,
    /// Unix socket (0600) where clients attach to the serial console: output with a
    /// backlog, input to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub console_sock: Option<PathBuf>,
    /// Cap of the console file in bytes: past it, its content moves to `<file>.1`
    /// (one rotated file) and it starts again (nova-vmm's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_max_bytes: Option<u64>,
}

/// The smallest console file cap (`console_max_bytes`).
pub const MIN_CONSOLE_MAX_BYTES: u64 = 4096;

/// `<console>.1`: where the VMM rotates its console file's older output.
pub fn rotated_console(console: &std::path::Path) -> PathBuf {
    let mut s = console.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// A raw disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    #[schema(value_type = String)]
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// The file is on storage the migration's destination sees too (NFS, a shared
    /// filesystem): a live migration does not copy it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// File where the VMM keeps this disk's blocks written since the last backup
    /// checkpoint, across restarts (read at start, marked in use while running, saved
    /// clean on exit). Without it the first backup after every start reads the whole disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub backup_bitmap: Option<PathBuf>,
}

/// A NIC backed by an existing tap device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub tap: String,
    /// `52:54:00:12:34:56`; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

fn default_vcpus() -> u8 {
    1
}
fn default_mem_mib() -> u64 {
    256
}
fn default_acpi() -> bool {
    true
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError::new(field, problem)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

impl DiskConfig {
    /// Parses the `--disk PATH[,ro|rw][,shared][,bitmap=FILE]` flag.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let mut parts = s.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(err("disk", "empty path"));
        }
        let (mut read_only, mut shared, mut backup_bitmap) = (false, false, None);
        for o in parts {
            match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "shared" => shared = true,
                o if o.starts_with("bitmap=") && o.len() > 7 => {
                    backup_bitmap = Some(PathBuf::from(&o[7..]))
                }
                o => {
                    return Err(err(
                        "disk",
                        format!("unknown option '{o}' (expected ro, rw, shared or bitmap=FILE)"),
                    ))
                }
            }
        }
        Ok(Self {
            path: path.into(),
            read_only,
            shared,
            backup_bitmap,
        })
    }
}

impl NetConfig {
    /// Parses the `--net tap=NAME[,mac=MAC]` flag.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let mut tap = None;
        let mut mac = None;
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("tap", v)) if !v.is_empty() => tap = Some(v.to_string()),
                Some(("mac", v)) => mac = Some(v.to_string()),
                _ => return Err(err("net", format!("'{kv}' is not tap=NAME or mac=MAC"))),
            }
        }
        let tap = tap.ok_or_else(|| err("net", "tap=NAME is required"))?;
        Ok(Self { tap, mac })
    }
}

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(kernel: PathBuf) -> Self {
        Self {
            kernel,
            initrd: None,
            cmdline: None,
            vcpus: default_vcpus(),
            mem_mib: default_mem_mib(),
            disks: Vec::new(),
            nets: Vec::new(),
            api_sock: None,
            console: None,
            acpi: default_acpi(),
            console_sock: None,
            console_max_bytes: None,
        }
    }

    /// Parses a JSON config, naming the field of any error.
    pub fn from_json(text: &str) -> Result<Self, FieldError> {
        serde_json::from_str(text).map_err(|e| err("config", e.to_string()))
    }

    /// Checks that a migration stream's configuration (`stream`) describes the VM this
    /// destination was given (`self`): the same memory, vCPUs and devices. The stream
    /// never supplies host resources (disk paths, taps): those are this side's, so only
    /// their number and kind are compared. The error names the first field that differs.
    pub fn check_incoming(&self, stream: &VmConfig) -> Result<(), FieldError> {
        let differs = |field: String, theirs: String, ours: String| {
            err(
                field,
                format!("the migration stream says {theirs}, this destination was given {ours}"),
            )
        };
        if stream.mem_mib != self.mem_mib {
            return Err(differs(
                "mem_mib".into(),
                stream.mem_mib.to_string(),
                self.mem_mib.to_string(),
            ));
        }
        if stream.vcpus != self.vcpus {
            return Err(differs(
                "vcpus".into(),
                stream.vcpus.to_string(),
                self.vcpus.to_string(),
            ));
        }
        if stream.disks.len() != self.disks.len() {
            return Err(differs(
                "disks".into(),
                format!("{} disks", stream.disks.len()),
                format!("{}", self.disks.len()),
            ));
        }
        for (i, (s, o)) in stream.disks.iter().zip(&self.disks).enumerate() {
            if s.read_only != o.read_only {
                return Err(differs(
                    format!("disks[{i}].read_only"),
                    s.read_only.to_string(),
                    o.read_only.to_string(),
                ));
            }
            // A shared disk is not copied: both sides must agree it needs no copy.
            if s.shared != o.shared {
                return Err(differs(
                    format!("disks[{i}].shared"),
                    s.shared.to_string(),
                    o.shared.to_string(),
                ));
            }
        }
        if stream.nets.len() != self.nets.len() {
            return Err(differs(
                "nets".into(),
                format!("{} NICs", stream.nets.len()),
                format!("{}", self.nets.len()),
            ));
        }
        Ok(())
    }

    /// Checks ranges and formats; files are checked when the VM is built.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(m) = self.console_max_bytes {
            if m < MIN_CONSOLE_MAX_BYTES {
                return Err(err(
                    "console_max_bytes",
                    format!("{m} is below {MIN_CONSOLE_MAX_BYTES}"),
                ));
            }
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(err(
                "vcpus",
                format!("{} is out of range 1..={MAX_VCPUS}", self.vcpus),
            ));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(err(
                "mem_mib",
                format!(
                    "{} is out of range {MIN_MEM_MIB}..={MAX_MEM_MIB}",
                    self.mem_mib
                ),
            ));
        }
        if self.kernel.as_os_str().is_empty() {
            return Err(err("kernel", "is required"));
        }
        for (i, n) in self.nets.iter().enumerate() {
            if n.tap.is_empty() || n.tap.len() > 15 {
                return Err(err(format!("nets[{i}].tap"), "must be 1 to 15 characters"));
            }
            if let Some(m) = &n.mac {
                if parse_mac(m).is_none() {
                    return Err(err(
                        format!("nets[{i}].mac"),
                        format!("'{m}' is not a MAC address"),
                    ));
                }
            }
        }
        let devices = self.disks.len() + self.nets.len();
        if devices > MAX_VIRTIO_DEVICES {
            return Err(err(
                "disks",
                format!("{devices} virtio devices; at most {}", MAX_VIRTIO_DEVICES),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_net_flags_parse_like_the_docs_say() {
        assert_eq!(
            DiskConfig::parse("/d.img,ro").unwrap(),
            DiskConfig {
                path: "/d.img".into(),
                read_only: true,
                shared: false,
                backup_bitmap: None,
            }
        );
        let d = DiskConfig::parse("/d.img,shared").unwrap();
        assert!(d.shared && !d.read_only);
        let d = DiskConfig::parse("/d.img,bitmap=/run/disk0.bitmap").unwrap();
        assert_eq!(
            d.backup_bitmap.as_deref(),
            Some(std::path::Path::new("/run/disk0.bitmap"))
        );
        assert!(DiskConfig::parse("/d.img,bitmap=").is_err());
        assert!(DiskConfig::parse("/d.img,ro,shared").unwrap().read_only);
        assert!(!DiskConfig::parse("/d.img").unwrap().read_only);
        assert!(DiskConfig::parse("/d.img,bogus")
            .unwrap_err()
            .problem
            .contains("bogus"));
        let n = NetConfig::parse("tap=tap0,mac=52:54:00:00:00:01").unwrap();
        assert_eq!(
            (n.tap.as_str(), n.mac.as_deref()),
            ("tap0", Some("52:54:00:00:00:01"))
        );
        assert_eq!(NetConfig::parse("mac=x").unwrap_err().field, "net");
    }

    #[test]
    fn a_bad_value_names_its_field() {
        let mut c = VmConfig::new("/k".into());
        c.vcpus = 0;
        assert_eq!(c.validate().unwrap_err().field, "vcpus");
        c.vcpus = 33;
        assert_eq!(c.validate().unwrap_err().field, "vcpus");
        c.vcpus = 1;
        c.mem_mib = 1;
        assert_eq!(c.validate().unwrap_err().field, "mem_mib");
        c.mem_mib = 64;
        c.nets.push(NetConfig {
            tap: "t".into(),
            mac: Some("zz".into()),
        });
        assert_eq!(c.validate().unwrap_err().field, "nets[0].mac");
    }

    #[test]
    fn json_config_rejects_unknown_fields_by_name() {
        let e = VmConfig::from_json(r#"{"kernel":"/k","vcpu":2}"#).unwrap_err();
        assert!(e.problem.contains("vcpu"), "{e}");
        let c = VmConfig::from_json(r#"{"kernel":"/k","vcpus":2,"mem_mib":128}"#).unwrap();
        assert_eq!((c.vcpus, c.mem_mib), (2, 128));
    }

    #[test]
    fn macs_parse_and_reject() {
        assert_eq!(
            parse_mac("52:54:00:ab:cd:ef"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:zz"), None);
    }
}
