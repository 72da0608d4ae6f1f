//! The NoCloud seed of a VM: a small FAT disk labelled `cidata` holding `meta-data`
//! (instance id, hostname, SSH keys), `user-data` and, when given, `network-config`,
//! written with the `fatfs` crate (no mkfs, no mount) and attached read-only as the
//! VM's last disk. cloud-init (and the Linux guest agent) find it by its label.
//! Every value comes from a validated `CloudInit` (hostname and keys cannot break the
//! YAML they are written into); user-data and network-config are copied as they are.

use std::io::Write;
use std::path::Path;

use nova_hostd_api::CloudInit;

/// Size of the seed disk: FAT12 with room for the largest documents allowed.
pub const SEED_BYTES: u64 = 2 << 20;

/// The FAT volume label cloud-init looks for (`cidata`, space-padded).
const LABEL: [u8; 11] = *b"cidata     ";

/// The `meta-data` document.
pub fn meta_data(instance_id: &str, ci: &CloudInit) -> String {
    let mut s = format!("instance-id: {instance_id}\n");
    if let Some(h) = &ci.hostname {
        s.push_str(&format!("local-hostname: {h}\n"));
    }
    if !ci.ssh_authorized_keys.is_empty() {
        s.push_str("public-keys:\n");
        for k in &ci.ssh_authorized_keys {
            s.push_str(&format!("  - \"{k}\"\n"));
        }
    }
    s
}

/// The `user-data` document: the one given, or a `#cloud-config` setting the
/// hostname and keys (which cloud-init also reads from meta-data).
pub fn user_data(ci: &CloudInit) -> String {
    if let Some(u) = &ci.user_data {
        return u.clone();
    }
    let mut s = String::from("#cloud-config\n");
    if let Some(h) = &ci.hostname {
        s.push_str(&format!("hostname: {h}\n"));
    }
    if !ci.ssh_authorized_keys.is_empty() {
        s.push_str("ssh_authorized_keys:\n");
        for k in &ci.ssh_authorized_keys {
            s.push_str(&format!("  - \"{k}\"\n"));
        }
    }
    s
}

/// Writes the seed disk of instance `instance_id` to `path` (replacing it).
pub fn write_seed(path: &Path, instance_id: &str, ci: &CloudInit) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.set_len(SEED_BYTES)?;
    fatfs::format_volume(
        &mut f,
        fatfs::FormatVolumeOptions::new().volume_label(LABEL),
    )?;
    let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new())?;
    {
        let root = fs.root_dir();
        let put = |name: &str, body: &str| -> std::io::Result<()> {
            let mut file = root.create_file(name)?;
            file.truncate()?;
            file.write_all(body.as_bytes())?;
            file.flush()
        };
        put("meta-data", &meta_data(instance_id, ci))?;
        put("user-data", &user_data(ci))?;
        if let Some(n) = &ci.network_config {
            put("network-config", n)?;
        }
    }
    fs.unmount()?;
    f.sync_all()
}

/// The files of a seed disk (name, content) and its volume label: to check what
/// a guest will read.
pub fn read_seed(path: &Path) -> std::io::Result<(String, Vec<(String, String)>)> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new())?;
    let label = fs.volume_label().trim_end().to_string();
    let mut files = Vec::new();
    for e in fs.root_dir().iter() {
        let e = e?;
        if !e.is_file() {
            continue;
        }
        let mut body = String::new();
        e.to_file().read_to_string(&mut body)?;
        files.push((e.file_name(), body));
    }
    Ok((label, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_disk_reads_back_with_its_label_and_documents() {
        let dir = std::env::temp_dir().join(format!("nova-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("seed.img");
        let ci = CloudInit {
            hostname: Some("web-1".into()),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nza ops@laptop".into()],
            user_data: None,
            network_config: Some("version: 2\nethernets: {}\n".into()),
        };
        write_seed(&p, "vm-1", &ci).unwrap();
        let (label, files) = read_seed(&p).unwrap();
        assert_eq!(label, "cidata");
        let get = |n: &str| files.iter().find(|(f, _)| f == n).map(|(_, b)| b.as_str());
        let meta = get("meta-data").unwrap();
        assert!(meta.contains("instance-id: vm-1\n"), "{meta}");
        assert!(meta.contains("local-hostname: web-1\n"), "{meta}");
        assert!(
            meta.contains("\"ssh-ed25519 AAAAC3Nza ops@laptop\""),
            "{meta}"
        );
        assert!(get("user-data").unwrap().starts_with("#cloud-config\n"));
        assert_eq!(get("network-config"), Some("version: 2\nethernets: {}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
