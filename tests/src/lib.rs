//! The harness every end-to-end test shares: find the built binaries and guest
//! images, boot a guest (under nova-vmm or QEMU) and read its console line by line
//! with host arrival times, make taps in throwaway network namespaces, and clean up
//! every process, file, tap and namespace a test created, even when it fails.
//!
//! KVM tests call [`require_kvm`] first: without /dev/kvm they say so loudly and
//! return (skip), unless `NOVA_REQUIRE_KVM=1`, under which they fail.

pub mod console;
pub mod controller;
pub mod etcd;
pub mod hostd;
pub mod linux;
pub mod migration;
pub mod moto;
pub mod net;
pub mod vmm;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub use console::{Console, Line};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of the workspace (`nova-vmm`, `nova-hostd`, ...), built by `make test`
/// (`cargo build --workspace --bins`) beside the running test (whose executable is in
/// the profile's `deps/`); `NOVA_BIN_DIR` overrides where to look.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("NOVA_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| root().join("target/x86_64-unknown-linux-gnu/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `make test` (or `cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A guest image from `guest-images/out/` (`make guest-images`).
pub fn guest_image(name: &str) -> PathBuf {
    let path = root().join("guest-images/out").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make guest-images`",
        path.display()
    );
    path
}

/// A free loopback TCP port: the one every test and bench asks for.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Polls `f` every 100 ms until it gives a value; panics after `secs` naming `what`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether tests must fail rather than skip when the host lacks something.
pub fn strict() -> bool {
    std::env::var("NOVA_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Skips (returns false, loudly) or fails (under `NOVA_REQUIRE_KVM=1`) when `ok` is false.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if strict() {
        panic!("NOVA_REQUIRE_KVM=1 but {what}");
    }
    eprintln!("\n*** SKIPPED: {what} (set NOVA_REQUIRE_KVM=1 to make this a failure) ***\n");
    false
}

/// /dev/kvm is usable.
pub fn require_kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    require(ok, "/dev/kvm is not available")
}

/// QEMU (qemu-system-x86_64) is installed.
pub fn require_qemu() -> bool {
    require_kvm()
        && require(
            which("qemu-system-x86_64"),
            "qemu-system-x86_64 is not installed",
        )
}

/// `cmd` is on PATH.
pub fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, `prefix` + short suffix.
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("nova-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host's TSC frequency in kHz, for guests under QEMU (which does not publish it).
pub fn host_tsc_khz() -> u64 {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|mhz| (mhz * 1000.0) as u64)
        .unwrap_or(2_000_000)
}

/// Writes the host blocks (`0..HOST_BLOCKS`) the guest's `disk` workload reads, into a
/// sparse raw image of `mib` MiB.
pub fn disk_with_host_blocks(path: &Path, mib: u64) {
    use nova_guest_abi::*;
    let mut bytes = Vec::with_capacity(HOST_BLOCKS as usize * BLOCK_SIZE);
    for i in 0..HOST_BLOCKS {
        let mut b = [0u64; BLOCK_WORDS];
        fill_block(&mut b, HOST_MAGIC, i, 1);
        for w in b {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
    }
    std::fs::write(path, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(mib << 20).unwrap();
}

/// Checks the guest's blocks in a disk image; returns the generation of each block.
pub fn guest_blocks(path: &Path) -> Vec<Result<u64, nova_guest_abi::BlockError>> {
    use nova_guest_abi::*;
    let bytes = std::fs::read(path).unwrap();
    (GUEST_BLOCKS_START..GUEST_BLOCKS_START + GUEST_BLOCKS)
        .map(|i| {
            let off = i as usize * BLOCK_SIZE;
            let mut b = [0u64; BLOCK_WORDS];
            for (k, w) in b.iter_mut().enumerate() {
                *w = u64::from_le_bytes(bytes[off + k * 8..off + k * 8 + 8].try_into().unwrap());
            }
            check_block(&b, GUEST_MAGIC, i)
        })
        .collect()
}
