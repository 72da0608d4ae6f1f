//! nova-vmm jailed as hostd starts it (unless `--no-jail`): source and destination
//! each with its own uid and cgroups, through the benches' [`jail`].

use std::path::PathBuf;

use nova_benches::jail;
use nova_tests::vmm::VmmCmd;
use nova_tests::{Console, TempDir};

/// The uids of the jailed source and destination (hostd gives each VM its own).
pub const SRC_UID: u32 = 399_998;
pub const DST_UID: u32 = 399_999;

/// A name for each jailed VMM's cgroups.
fn vm_id(role: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("bench-migration-{}-{role}-{n}", std::process::id())
}

/// The jails of one run's VMMs: drop it after them.
pub struct Jails {
    bare: bool,
    /// The nova-vmm binary, canonical.
    vmm: PathBuf,
    held: Vec<jail::Jail>,
}

impl Jails {
    /// Jails for `vmm` (canonical), or none with `bare` (`--no-jail`).
    pub fn new(bare: bool, vmm: PathBuf) -> Jails {
        Jails {
            bare,
            vmm,
            held: Vec::new(),
        }
    }

    /// Jails `c` as hostd would: `files` (canonical) read-only beside the binary,
    /// the VMM's own directory read-write.
    pub fn add(
        &mut self,
        c: &mut VmmCmd,
        role: &str,
        uid: u32,
        mem: u64,
        files: Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        if self.bare {
            return Ok(());
        }
        let mut read_only = vec![self.vmm.clone()];
        read_only.extend(files);
        self.held.push(jail::jail(
            &mut c.cmd,
            jail::Spec {
                uid,
                vm_id: vm_id(role),
                read_only,
                read_write: vec![c.dir.path().to_path_buf()],
                workdir: c.dir.path().to_path_buf(),
                vcpus: 1,
                mem_mib: mem,
            },
        )?);
        Ok(())
    }

    /// Starts `c` (its console read in real time): jailed, forked into a PID
    /// namespace of its own, as hostd does; or bare. Its directory lives as long as
    /// the returned one.
    pub fn spawn(&self, c: VmmCmd) -> anyhow::Result<(Console, TempDir)> {
        let console = match self.bare {
            true => Console::spawn_realtime(c.cmd),
            false => jail::spawn(c.cmd)?,
        };
        Ok((console, c.dir))
    }
}
