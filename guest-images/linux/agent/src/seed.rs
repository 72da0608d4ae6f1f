//! Guest configuration from a NoCloud seed: finds the FAT disk labelled `cidata`
//! (hostd attaches it read-only as the VM's last disk), reads its `meta-data` (the
//! parts hostd writes: `local-hostname` and `public-keys`), and applies them: the
//! hostname (sethostname as pid 1, and `/etc/hostname`) and the SSH keys
//! (`/root/.ssh/authorized_keys`, 0600 in a 0700 directory). The seed is read with
//! the `fatfs` crate straight from the block device: no vfat driver, no mount.
//! Everything read is untrusted input: a bad hostname or key line is skipped and
//! reported, never applied.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a seed's meta-data asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MetaData {
    pub hostname: Option<String>,
    pub keys: Vec<String>,
}

/// Largest meta-data read.
const MAX_META: u64 = 1 << 20;

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 16 << 10
        && (k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-"))
        && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// Parses the meta-data subset hostd writes; anything else is ignored.
pub fn parse(text: &str) -> MetaData {
    let mut md = MetaData::default();
    let mut in_keys = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("local-hostname:") {
            in_keys = false;
            let h = v.trim().trim_matches('"');
            if is_hostname(h) {
                md.hostname = Some(h.to_string());
            }
        } else if line.trim_end() == "public-keys:" {
            in_keys = true;
        } else if in_keys && line.starts_with("  - ") {
            let k = line[4..].trim().trim_matches('"');
            if is_key(k) {
                md.keys.push(k.to_string());
            }
        } else if !line.starts_with(' ') {
            in_keys = false;
        }
    }
    md
}

/// The meta-data of the `cidata` FAT filesystem on `dev`, if it is one.
pub fn read_meta(dev: &Path) -> Option<String> {
    let f = std::fs::File::open(dev).ok()?;
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).ok()?;
    if !fs.volume_label().trim_end().eq_ignore_ascii_case("cidata") {
        return None;
    }
    let file = fs.root_dir().open_file("meta-data").ok()?;
    let mut text = String::new();
    file.take(MAX_META).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The seed among the guest's virtio disks (`/dev/vd*`), last first.
pub fn find() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names
        .iter()
        .rev()
        .find_map(|n| read_meta(Path::new(&format!("/dev/{n}"))))
}

/// Applies `md` under `root` (`/` in a guest); sets the kernel's hostname when
/// `set_kernel_hostname` (pid 1). Returns what was applied, for the console line.
pub fn apply(md: &MetaData, root: &Path, set_kernel_hostname: bool) -> std::io::Result<String> {
    if let Some(h) = &md.hostname {
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::write(root.join("etc/hostname"), format!("{h}\n"))?;
        if set_kernel_hostname {
            // SAFETY: a valid buffer and its length.
            let r = unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    if !md.keys.is_empty() {
        let ssh = root.join("root/.ssh");
        std::fs::create_dir_all(&ssh)?;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(ssh.join("authorized_keys"))?;
        for k in &md.keys {
            writeln!(f, "{k}")?;
        }
    }
    Ok(format!(
        "hostname={} keys={}",
        md.hostname.as_deref().unwrap_or("-"),
        md.keys.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_gives_its_hostname_and_keys_and_bad_values_are_skipped() {
        let md = parse(
            "instance-id: a\nlocal-hostname: web-1\npublic-keys:\n  - \"ssh-ed25519 AAAA x@y\"\n  - \"rm -rf /\"\nother: 1\n  - \"ssh-rsa BBBB\"\n",
        );
        assert_eq!(md.hostname.as_deref(), Some("web-1"));
        assert_eq!(md.keys, vec!["ssh-ed25519 AAAA x@y".to_string()]);
        assert_eq!(parse("local-hostname: bad_name\n").hostname, None);
        // Garbage never panics.
        for junk in [
            "",
            "\0\0",
            "public-keys:\n  - ",
            "local-hostname:",
            "\u{fffd}:",
        ] {
            let _ = parse(junk);
        }
    }
}
