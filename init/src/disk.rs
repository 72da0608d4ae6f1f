//! Partitions by GPT label: finding them in sysfs, mounting them, and formatting the
//! data partition (ext4, with the image's `mke2fs`) when it holds no file system yet.
//! A partition that holds an ext4 file system is never formatted, even when it fails
//! to mount: data is worth more than a boot.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::system::mount;

/// Where the image keeps mke2fs (with its libraries, under /lib).
pub const MKE2FS: &str = "/sbin/mke2fs";

/// The device node of the partition whose GPT name is `label`, if the kernel knows one.
pub fn find_by_label(label: &str) -> Option<PathBuf> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let uevent = std::fs::read_to_string(e.path().join("uevent")).ok()?;
            let mut name = None;
            let mut dev = None;
            for l in uevent.lines() {
                if let Some(v) = l.strip_prefix("PARTNAME=") {
                    name = Some(v.to_string());
                }
                if let Some(v) = l.strip_prefix("DEVNAME=") {
                    dev = Some(v.to_string());
                }
            }
            (name.as_deref() == Some(label)).then_some(dev).flatten()
        })
        .collect();
    // Deterministic when two disks carry the label (say, the installer stick too).
    found.sort();
    found.first().map(|d| Path::new("/dev").join(d))
}

/// Waits up to `timeout` for a partition labelled `label` (disks probe after their
/// drivers load).
pub fn wait_for_label(label: &str, timeout: Duration) -> Option<PathBuf> {
    let t = Instant::now();
    loop {
        if let Some(p) = find_by_label(label) {
            if p.exists() {
                return Some(p);
            }
        }
        if t.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `dev` starts with an ext2/3/4 superblock (magic 0xEF53 at byte 1080).
pub fn has_ext4(dev: &Path) -> io::Result<bool> {
    let mut f = std::fs::File::open(dev)?;
    f.seek(SeekFrom::Start(1080))?;
    let mut m = [0u8; 2];
    f.read_exact(&mut m)?;
    Ok(u16::from_le_bytes(m) == 0xEF53)
}

/// Formats `dev` as ext4 labelled `label`.
pub fn format_ext4(dev: &Path, label: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new(MKE2FS)
        .env("LD_LIBRARY_PATH", "/lib/x86_64-linux-gnu")
        .args(["-t", "ext4", "-q", "-F", "-L"])
        .arg(label)
        .arg(dev)
        .output()
        .map_err(|e| anyhow::anyhow!("running {MKE2FS}: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{MKE2FS} {}: {} {}",
        dev.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Mounts the data partition `dev` on `target`, formatting it first when it holds no
/// file system and `format` allows.
pub fn mount_data(dev: &Path, target: &str, label: &str, format: bool) -> anyhow::Result<()> {
    let devs = dev.to_string_lossy();
    if !has_ext4(dev)? {
        anyhow::ensure!(
            format,
            "{devs} (nova.data_label={label}) holds no ext4 file system and nova.format_data=0"
        );
        tracing::info!(dev = %devs, "data partition is blank: formatting ext4");
        format_ext4(dev, label)?;
    }
    mount(
        &devs,
        target,
        "ext4",
        libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )?;
    Ok(())
}
