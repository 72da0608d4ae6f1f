//! Upgrades of the host image, hostd's side (owns the A/B system slots' contents, not
//! the boot loader): which image and slot this host runs (`/etc/nova-version` in the
//! initramfs, `nova.slot=` on the kernel command line), staging a new kernel and
//! initramfs in the data dir as the controller streams them, writing them into the
//! inactive slot (the FAT partition whose GPT name is `nova-a`/`nova-b`, written with
//! `fatfs` on the block device, its volume label kept), and asking nova-init (PID 1)
//! to boot that slot once (`/run/nova/try-slot`, then SIGUSR1: reboot). nova-init owns
//! GRUB's environment and the rollback: the new system becomes the default only when
//! its hostd has registered with the controller (`/run/nova/registered`, written here).
//! A host that trusts image signing keys (`--trusted-image-key`) writes a slot only
//! for an image one of them signed: the Ed25519 signature covers the version and both
//! files' SHA-256s ([`nova_hostd_api::system_image_manifest`]), which are checked
//! against the staged files first.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nova_hostd_api::{
    validate_version, FieldError, PowerAction, StagedFile, SystemInfo, SystemUpgradeRequest,
    SystemUpgradeStarted, SYSTEM_FILES,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

mod signature;
use signature::check_signature;

/// The image's version, written into the initramfs by `host-image/build.sh`.
pub const VERSION_FILE: &str = "/etc/nova-version";
/// nova-init's run directory: where hostd leaves it word.
pub const RUN_DIR: &str = "/run/nova";
/// Largest file a staged system image may have.
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// The file names inside a slot (what the image's grub.cfg boots).
const SLOT_KERNEL: &str = "vmlinuz";
const SLOT_INITRD: &str = "initrd.img";
const SLOT_VERSION: &str = "VERSION";

/// The host image this hostd runs on, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct System {
    pub version: Option<String>,
    pub slot: Option<char>,
    /// nova-init's run directory (tests point it elsewhere).
    pub run_dir: PathBuf,
    /// Public keys (hex) one of which must have signed an image; none: any image.
    pub trusted_keys: Vec<String>,
}

/// The slot `nova.slot=` names on a kernel command line.
pub fn slot_of_cmdline(cmdline: &str) -> Option<char> {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("nova.slot="))
        .and_then(|v| match v {
            "a" => Some('a'),
            "b" => Some('b'),
            _ => None,
        })
}

/// The other slot.
pub fn other(slot: char) -> char {
    if slot == 'a' {
        'b'
    } else {
        'a'
    }
}

impl System {
    /// What this machine runs: a version only when the file holds a valid one.
    pub fn detect(trusted_keys: &[String]) -> System {
        let version = std::fs::read_to_string(VERSION_FILE)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| validate_version("version", v).is_ok());
        let slot = std::fs::read_to_string("/proc/cmdline")
            .ok()
            .and_then(|c| slot_of_cmdline(&c));
        System {
            version,
            slot,
            run_dir: PathBuf::from(RUN_DIR),
            trusted_keys: trusted_keys.to_vec(),
        }
    }

    /// Whether this host runs from the host image's disk (a slot and nova-init).
    pub fn upgradable(&self) -> bool {
        self.slot.is_some() && self.run_dir.is_dir()
    }

    /// Whether PID 1 is nova-init: this hostd runs from the host image (its version
    /// file) and nova-init's run directory exists.
    pub fn under_nova_init(&self) -> bool {
        self.version.is_some() && self.run_dir.is_dir()
    }

    pub fn info(&self) -> SystemInfo {
        SystemInfo {
            image_version: self.version.clone(),
            slot: self.slot.map(String::from),
            upgradable: self.upgradable(),
            trusted_image_keys: self.trusted_keys.clone(),
        }
    }

    /// Tells nova-init this boot's hostd registered with the controller (a boot on
    /// trial becomes the default then). Nothing to do off the image.
    pub fn note_registered(&self) {
        if !self.upgradable() {
            return;
        }
        let p = self.run_dir.join("registered");
        if let Err(e) = std::fs::write(&p, b"1\n") {
            tracing::warn!("writing {}: {e}", p.display());
        }
    }
}

/// Where staged files wait: `DATA/system-staging/{kernel,initrd}`.
pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("system-staging")
}

/// Checks a staged file's name (`kernel` or `initrd`).
pub fn check_file(file: &str) -> Result<()> {
    if SYSTEM_FILES.contains(&file) {
        Ok(())
    } else {
        Err(FieldError::new("file", format!("'{file}' is not kernel or initrd")).into())
    }
}

/// A file being staged: written to a temporary name, hashed as it comes.
pub struct Staging {
    file: String,
    tmp: PathBuf,
    dest: PathBuf,
    out: std::fs::File,
    hash: Sha256,
    len: u64,
}

impl Staging {
    pub fn begin(data_dir: &Path, file: &str) -> Result<Staging> {
        check_file(file)?;
        let dir = staging_dir(data_dir);
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let dest = dir.join(file);
        let tmp = dir.join(format!("{file}.part"));
        let out = std::fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        Ok(Staging {
            file: file.to_string(),
            tmp,
            dest,
            out,
            hash: Sha256::new(),
            len: 0,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len() as u64;
        if self.len > MAX_FILE_BYTES {
            return Err(FieldError::new(
                "body",
                format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
            )
            .into());
        }
        self.hash.update(data);
        self.out
            .write_all(data)
            .ctx(|| format!("writing {}", self.tmp.display()))
    }

    pub fn finish(self) -> Result<StagedFile> {
        self.out
            .sync_all()
            .ctx(|| format!("syncing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.dest)
            .ctx(|| format!("renaming {}", self.tmp.display()))?;
        Ok(StagedFile {
            file: self.file,
            size_bytes: self.len,
            sha256: hex(&self.hash.finalize()),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of the file at `p`.
fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).ctx(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("reading {}", p.display()))?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The device node of the partition whose GPT name is `name`.
pub fn partition_by_name(name: &str) -> Option<PathBuf> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let uevent = std::fs::read_to_string(e.path().join("uevent")).ok()?;
            let part = uevent.lines().any(|l| l == format!("PARTNAME={name}"));
            let dev = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
            part.then(|| dev.to_string())
        })
        .collect();
    found.sort();
    found.first().map(|d| Path::new("/dev").join(d))
}

/// Writes the kernel, the initramfs and the version into the FAT file system on
/// `dev` (a slot partition, or a file in tests), replacing what it held; its label
/// stays. The version file goes last: a slot without it is incomplete.
pub fn write_slot(dev: &Path, kernel: &Path, initrd: &Path, version: &str) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", dev.display());
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .ctx(|| ctx("opening"))?;
    {
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new())
            .ctx(|| ctx("reading the FAT file system on"))?;
        let root = fs.root_dir();
        for name in [SLOT_VERSION, SLOT_KERNEL, SLOT_INITRD] {
            match root.remove(name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(ctx(&format!("removing {name} from")), e)),
            }
        }
        let copy = |name: &str, src: &Path| -> Result<()> {
            let mut from = std::fs::File::open(src).ctx(|| format!("opening {}", src.display()))?;
            let mut to = root
                .create_file(name)
                .ctx(|| ctx(&format!("creating {name} on")))?;
            to.truncate().ctx(|| ctx("truncating"))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = from
                    .read(&mut buf)
                    .ctx(|| format!("reading {}", src.display()))?;
                if n == 0 {
                    break;
                }
                to.write_all(&buf[..n])
                    .ctx(|| ctx(&format!("writing {name} on")))?;
            }
            to.flush().ctx(|| ctx("flushing"))
        };
        copy(SLOT_KERNEL, kernel)?;
        copy(SLOT_INITRD, initrd)?;
        let mut v = root
            .create_file(SLOT_VERSION)
            .ctx(|| ctx("creating VERSION on"))?;
        v.truncate().ctx(|| ctx("truncating"))?;
        v.write_all(format!("{version}\n").as_bytes())
            .ctx(|| ctx("writing VERSION on"))?;
        v.flush().ctx(|| ctx("flushing"))?;
        drop(v);
        drop(root);
        fs.unmount().ctx(|| ctx("closing"))?;
    }
    f.sync_all().ctx(|| ctx("syncing"))
}

/// The version a slot image holds, if complete.
pub fn slot_version(dev: &Path) -> Result<Option<String>> {
    let f = std::fs::File::open(dev).ctx(|| format!("opening {}", dev.display()))?;
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new())
        .ctx(|| format!("reading the FAT file system on {}", dev.display()))?;
    let mut s = String::new();
    let root = fs.root_dir();
    let found = match root.open_file(SLOT_VERSION) {
        Ok(mut v) => {
            v.read_to_string(&mut s)
                .ctx(|| format!("reading VERSION on {}", dev.display()))?;
            Some(s.trim().to_string())
        }
        Err(_) => None,
    };
    Ok(found)
}

/// Checks the staged files against `req`, writes them into the inactive slot and
/// leaves nova-init word to boot it once. The caller then asks PID 1 to reboot.
pub fn upgrade(
    system: &System,
    data_dir: &Path,
    req: &SystemUpgradeRequest,
) -> Result<SystemUpgradeStarted> {
    req.validate()?;
    let dir = staging_dir(data_dir);
    let kernel = dir.join("kernel");
    let initrd = dir.join("initrd");
    for (field, p, want) in [
        ("kernel_sha256", &kernel, &req.kernel_sha256),
        ("initrd_sha256", &initrd, &req.initrd_sha256),
    ] {
        if !p.exists() {
            return Err(Error::Conflict(format!(
                "nothing staged for {field}: PUT /v1/system/staged/{} first",
                if p == &kernel { "kernel" } else { "initrd" }
            )));
        }
        let got = sha256_file(p)?;
        if &got != want {
            return Err(FieldError::new(
                field,
                format!("the staged file's SHA-256 is {got}, not {want}"),
            )
            .into());
        }
    }
    check_signature(&system.trusted_keys, req)?;
    let Some(slot) = system.slot.filter(|_| system.upgradable()) else {
        return Err(Error::Conflict(
            "this host does not run from the host image's disk (no nova.slot= on its kernel \
             command line, or no nova-init): it cannot be upgraded this way"
                .into(),
        ));
    };
    let target = other(slot);
    let name = format!("nova-{target}");
    let dev = partition_by_name(&name).ok_or_else(|| {
        Error::Conflict(format!(
            "no partition named {name}: this disk has no slot {target}"
        ))
    })?;
    tracing::info!(slot = %target, dev = %dev.display(), version = %req.version, "writing the new system into the inactive slot");
    write_slot(&dev, &kernel, &initrd, &req.version)?;
    let try_file = system.run_dir.join("try-slot");
    nova_durable::write_secret(&try_file, format!("{target}\n").as_bytes())
        .ctx(|| format!("writing {}", try_file.display()))?;
    for p in [&kernel, &initrd] {
        let _ = std::fs::remove_file(p);
    }
    Ok(SystemUpgradeStarted {
        version: req.version.clone(),
        slot: target.to_string(),
        from_version: system.version.clone(),
    })
}

/// Asks PID 1 (nova-init) to power off or reboot: it stops hostd first (VMs per its
/// policy), then halts; a reboot boots the slot named in `try-slot` once, if any.
/// Callers check [`System::under_nova_init`] (or [`System::upgradable`]) first.
pub fn request_halt(action: PowerAction) {
    let sig = match action {
        PowerAction::Reboot => libc::SIGUSR1,
        PowerAction::Poweroff => libc::SIGUSR2,
    };
    // SAFETY: kill(2) with plain integers.
    let rc = unsafe { libc::kill(1, sig) };
    if rc != 0 {
        tracing::error!(
            "asking nova-init to {action:?}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat_image(p: &Path, label: &[u8; 11]) {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .unwrap();
        f.set_len(8 << 20).unwrap();
        fatfs::format_volume(
            &mut f,
            fatfs::FormatVolumeOptions::new().volume_label(*label),
        )
        .unwrap();
    }

    #[test]
    fn slot_of_cmdline_reads_the_last_nova_slot() {
        assert_eq!(
            slot_of_cmdline("console=ttyS0 nova.slot=b quiet"),
            Some('b')
        );
        assert_eq!(slot_of_cmdline("nova.slot=a nova.slot=b"), Some('b'));
        assert_eq!(slot_of_cmdline("nova.slot=c"), None);
        assert_eq!(slot_of_cmdline("root=/dev/sda"), None);
    }

    #[test]
    fn a_slot_is_rewritten_whole_and_keeps_its_label() {
        let dir = std::env::temp_dir().join(format!("nova-slot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dev = dir.join("slot.img");
        fat_image(&dev, b"NOVA-B     ");
        let (k, i) = (dir.join("k"), dir.join("i"));
        std::fs::write(&k, vec![7u8; 300_000]).unwrap();
        std::fs::write(&i, vec![9u8; 1_500_000]).unwrap();
        write_slot(&dev, &k, &i, "v1").unwrap();
        // Again, smaller: the old files go, the new ones are whole.
        std::fs::write(&k, b"kernel-2").unwrap();
        std::fs::write(&i, b"initrd-2").unwrap();
        write_slot(&dev, &k, &i, "v2").unwrap();
        assert_eq!(slot_version(&dev).unwrap().as_deref(), Some("v2"));
        let fs =
            fatfs::FileSystem::new(std::fs::File::open(&dev).unwrap(), fatfs::FsOptions::new())
                .unwrap();
        assert_eq!(fs.volume_label().trim_end(), "NOVA-B");
        let mut s = String::new();
        fs.root_dir()
            .open_file("initrd.img")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "initrd-2");
        drop(fs);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn staging_hashes_what_it_writes_and_names_bad_files() {
        let dir = std::env::temp_dir().join(format!("nova-stage-{}", std::process::id()));
        let mut s = Staging::begin(&dir, "kernel").unwrap();
        s.write(b"abc").unwrap();
        let f = s.finish().unwrap();
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(f.size_bytes, 3);
        let e = Staging::begin(&dir, "../etc").err().unwrap();
        assert!(e.to_string().contains("not kernel or initrd"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn off_the_image_an_upgrade_is_refused_naming_why() {
        let dir = std::env::temp_dir().join(format!("nova-noimg-{}", std::process::id()));
        let sys = System {
            version: None,
            slot: None,
            run_dir: dir.join("run"),
            trusted_keys: vec![],
        };
        let req = staged(&dir, "2");
        let e = upgrade(&sys, &dir, &req).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert!(e.to_string().contains("host image"), "{e}");
        assert!(!sys.info().upgradable);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Stages a kernel and an initrd in `dir`; the request naming them.
    fn staged(dir: &Path, version: &str) -> SystemUpgradeRequest {
        let mut hashes = vec![];
        for (file, body) in [
            ("kernel", &b"kernel-bytes"[..]),
            ("initrd", b"initrd-bytes"),
        ] {
            let mut s = Staging::begin(dir, file).unwrap();
            s.write(body).unwrap();
            hashes.push(s.finish().unwrap().sha256);
        }
        SystemUpgradeRequest {
            version: version.into(),
            kernel_sha256: hashes[0].clone(),
            initrd_sha256: hashes[1].clone(),
            signature: None,
        }
    }

    #[test]
    fn a_host_trusting_keys_refuses_an_unsigned_image_before_looking_for_a_slot() {
        let dir = std::env::temp_dir().join(format!("nova-sig-{}", std::process::id()));
        let sys = System {
            version: Some("1.0".into()),
            slot: None,
            run_dir: dir.join("run"),
            trusted_keys: vec!["ab".repeat(32)],
        };
        let req = staged(&dir, "2.0");
        let e = upgrade(&sys, &dir, &req).unwrap_err();
        assert!(e.to_string().contains("is not signed"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
