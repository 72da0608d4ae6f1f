//! Host-to-host live migration through hostd: the source asks the destination to
//! prepare, the VMMs move the VM (and its writable disks, block by block), and exactly
//! one hostd owns it at the end. Failure before the switch leaves the VM running on
//! the source, with its disk, and nothing on the destination.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nova_hostd_api::{
    DiskSpec, MigrateRequest, MigrationKind, MigrationParams, MigrationState, MigrationStatus,
    MigrationTarget, NicSpec, VmState,
};
use nova_tests::hostd::TwoHosts;
use nova_tests::hostd::{guest, is_vmm, ping, Exposition, Hostd, Opts};
use nova_tests::net::require_netns;
use nova_tests::{disk_with_host_blocks, guest_blocks, require_kvm, wait_for};

const BOOT: Duration = Duration::from_secs(30);

fn to(dst: &Hostd, params: MigrationParams) -> MigrateRequest {
    MigrateRequest {
        to: MigrationTarget {
            url: format!("http://{}", dst.addr),
            token: dst.token.clone(),
        },
        params,
        kind: MigrationKind::Live,
    }
}

/// Params capping the stream at `mbit` (slow enough for a kill to land first).
fn capped(mbit: u64) -> MigrationParams {
    MigrationParams {
        bandwidth_mbit: Some(mbit),
        ..Default::default()
    }
}

fn migrate(src: &Hostd, id: &str, dst: &Hostd, params: MigrationParams) -> MigrationStatus {
    let m = src.ok(src.api().migrate(id, &to(dst, params)));
    assert_eq!(m.state, MigrationState::Preparing);
    m
}

/// Polls the source's view of the migration until it finished.
fn wait_migration(src: &Hostd, id: &str, timeout: Duration) -> MigrationStatus {
    wait_for(timeout.as_secs(), "the migration to finish", || {
        let m = src.ok(src.api().migration(id));
        matches!(
            m.state,
            MigrationState::Completed | MigrationState::Failed | MigrationState::Cancelled
        )
        .then_some(m)
    })
}

/// Waits until the destination has an incoming VMM for `id`; returns its pid.
fn incoming_vmm(dst: &Hostd, id: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = dst.wait(dst.api().vm(id)) {
            if let (VmState::MigratingIn, Some(pid)) = (v.state, v.pid) {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no incoming VMM on the destination"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The guest keeps writing its console (it runs).
fn ticking(h: &Hostd, id: &str) -> bool {
    let n0 = h.console_bytes(id);
    std::thread::sleep(Duration::from_millis(300));
    h.console_bytes(id) != n0
}

/// The last `NOVA-DISK` line of the VM's console: (pass, errors).
fn disk_pass(h: &Hostd, id: &str) -> Option<(u64, u64)> {
    let c = h.wait(h.api().console(id, 10_000)).ok()?;
    let l = c.lines.iter().rev().find(|l| l.starts_with("NOVA-DISK"))?;
    let num = |k: &str| -> Option<u64> {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some((num("pass")?, num("errors")?))
}

/// Waits for the guest to finish a disk pass after `after`; returns that pass's
/// error count (every block it wrote read back and verified).
fn disk_errors_after(h: &Hostd, id: &str, after: u64) -> u64 {
    wait_for(60, "a disk pass", || {
        disk_pass(h, id).filter(|(p, _)| *p > after).map(|(_, e)| e)
    })
}

/// A VM with one writable 64 MiB disk cloned from a base image holding the host's
/// checksummed blocks (imported on `h`).
fn with_disk(h: &Hostd, id: &str, workload: &str) -> nova_hostd_api::VmSpec {
    let base = h.dir.join(&format!("{id}-base.raw"));
    disk_with_host_blocks(&base, 16);
    let req = nova_hostd_api::ImageImportRequest {
        path: base.to_string_lossy().into_owned(),
    };
    let img = h.ok(h.api().import_image(&req));
    let mut spec = guest(id, workload);
    spec.disks = vec![DiskSpec {
        image: Some(img.id),
        size_mib: Some(64),
        read_only: false,
        shared_path: None,
    }];
    spec
}

/// The source still has the VM running with its disk: the file is where it was and
/// the guest goes on verifying what it wrote there.
fn disk_intact_on_source(h: &Hostd, id: &str, disk: &Path) {
    assert!(
        disk.exists(),
        "the source's disk is gone: {}",
        disk.display()
    );
    let (pass, _) = disk_pass(h, id).expect("disk passes on the source");
    assert_eq!(
        disk_errors_after(h, id, pass),
        0,
        "the guest's blocks verify on the source"
    );
}

#[test]
fn a_migration_the_destination_refuses_leaves_the_vm_on_the_source() {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    // The destination has room for no vCPU at all.
    let dst = Hostd::start(Opts {
        args: vec!["--cpu-overcommit".into(), "0.01".into()],
        ..Opts::default()
    });
    let vm = src.create_vm(&guest("m", "counter"));
    src.wait_console("m", "NOVA-TICK", BOOT);
    let started = migrate(&src, "m", &dst, MigrationParams::default());
    assert_eq!(
        (started.mode, started.peer.as_str()),
        (
            nova_hostd_api::MigrationMode::Hybrid,
            format!("http://{}", dst.addr).as_str()
        ),
        "the contract's default mode (hybrid)"
    );
    let m = wait_migration(&src, "m", Duration::from_secs(20));
    assert_eq!(m.state, MigrationState::Failed, "{m:?}");
    assert!(
        m.error.as_deref().unwrap().contains("does not fit"),
        "the destination's reason comes back: {m:?}"
    );
    // The source still owns and runs it, in the same VMM.
    let after = src.ok(src.api().vm("m"));
    assert_eq!(after.state, VmState::Running, "{after:?}");
    assert_eq!(after.pid, vm.pid);
    assert!(is_vmm(vm.pid.unwrap()));
    assert!(ticking(&src, "m"), "still ticking");
    // The destination holds nothing of it, but now has the kernel (uploaded by the source).
    assert!(dst.vm_ids().is_empty());
    dst.ok(dst.api().image(&after.spec.kernel));
    // A wrong destination token is the destination's 401, and changes nothing.
    let mut wrong = to(&dst, Default::default());
    wrong.to.token = "wrong-token-wrong-token".into();
    src.ok(src.api().migrate("m", &wrong));
    let m = wait_migration(&src, "m", Duration::from_secs(20));
    assert!(m.error.as_deref().unwrap().contains("401"), "{m:?}");
    assert_eq!(src.ok(src.api().vm("m")).state, VmState::Running);
    // Every migration is listed, newest first.
    let list = src.ok(src.api().migrations()).migrations;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list[0].started_at_ms >= list[1].started_at_ms);
}

#[test]
fn a_vm_moves_between_hosts_and_keeps_answering_pings() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    let mut spec = guest("mv", "net,counter nova.ip=203.0.113.20/24");
    spec.nics = vec![NicSpec::default()];
    let vm = t.a.create_vm(&spec);
    let mac = vm.nics[0].mac.clone();
    t.a.wait_console("mv", "NOVA-NET", BOOT);
    assert!(
        ping(&t.ns_b, "203.0.113.20", 2),
        "B reaches the guest on A over the overlay"
    );
    // Pings from B all through the migration.
    let pinger = {
        let ns = t.ns_b.name.clone();
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "ping",
                    "-c",
                    "60",
                    "-i",
                    "0.1",
                    "-W",
                    "1",
                    "203.0.113.20",
                ])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    migrate(&t.a, "mv", &t.b, MigrationParams::default());
    let m = wait_migration(&t.a, "mv", Duration::from_secs(60));
    assert_eq!(
        m.state,
        MigrationState::Completed,
        "{m:?}\n{}\n{}",
        t.a.stderr(),
        t.b.stderr()
    );
    assert!(m.hostd_switch_ms.is_some(), "{m:?}");
    assert!(m.downtime_ms.is_some_and(|d| d > 0.0), "{m:?}");
    assert_eq!(
        m.vmm.as_ref().map(|v| v.state),
        Some(nova_vmm_api::MigrationState::Completed),
        "the VMM's own status, typed: {m:?}"
    );
    // Exactly one owner: B.
    wait_for(10, "A to let go of it", || {
        t.a.vm_ids().is_empty().then_some(())
    });
    let on_b = t.b.ok(t.b.api().vm("mv"));
    assert_eq!(on_b.state, VmState::Running, "{on_b:?}");
    assert_eq!(on_b.nics[0].mac, mac, "the MAC follows the VM");
    assert!(!is_vmm(vm.pid.unwrap()), "the source VMM exited");
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let received: u32 = text
        .split(", ")
        .find(|p| p.ends_with(" received"))
        .and_then(|p| p.trim_end_matches(" received").parse().ok())
        .unwrap_or(0);
    assert!(
        received >= 50,
        "pings kept being answered through the migration: {text}"
    );
    assert!(
        ping(&t.ns_b, "203.0.113.20", 2) && ping(&t.ns_a, "203.0.113.20", 2),
        "reachable from both hosts after"
    );
    // Both sides count it; the source has its downtime in the histogram.
    let a = Exposition::parse(&t.a.ok(t.a.api().metrics()));
    let out = [("direction", "outgoing"), ("result", "completed")];
    assert_eq!(a.value("nova_host_migrations_total", &out), Some(1.0));
    assert_eq!(
        a.value("nova_host_migration_downtime_seconds_count", &[]),
        Some(1.0)
    );
    let b = Exposition::parse(&t.b.ok(t.b.api().metrics()));
    let inc = [("direction", "incoming"), ("result", "completed")];
    assert_eq!(b.value("nova_host_migrations_total", &inc), Some(1.0));
}

/// hostd's VMMs run unprivileged in their jails, where the host refuses the
/// userfaultfd syscall (`vm.unprivileged_userfaultfd = 0`, the usual default): a
/// post-copy destination gets its userfaultfd from the jail's `/dev/userfaultfd`.
#[test]
fn a_jailed_destination_takes_a_vm_by_postcopy_fetching_its_pages_on_fault() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    t.a.create_vm(&guest("pc", "counter,dirty:64"));
    t.a.wait_console("pc", "NOVA-TICK", BOOT);
    let params = MigrationParams {
        mode: nova_hostd_api::MigrationMode::Postcopy,
        ..Default::default()
    };
    migrate(&t.a, "pc", &t.b, params);
    let m = wait_migration(&t.a, "pc", Duration::from_secs(60));
    assert_eq!(
        m.state,
        MigrationState::Completed,
        "{m:?}\n{}\n{}",
        t.a.stderr(),
        t.b.stderr()
    );
    assert_eq!(m.mode, nova_hostd_api::MigrationMode::Postcopy, "{m:?}");
    assert_eq!(t.b.ok(t.b.api().vm("pc")).state, VmState::Running);
    assert!(ticking(&t.b, "pc"), "the guest runs on B");
}

#[test]
fn a_failed_stream_leaves_the_vm_on_the_source_and_the_destination_clean() {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    let dst = Hostd::start(Opts::default());
    let vm = src.create_vm(&guest("f", "dirty:16:50,counter"));
    src.wait_console("f", "NOVA-TICK", BOOT);
    // Slow enough (8 Mbit/s for 16 MiB of dirty pages) that the kill below lands first.
    migrate(&src, "f", &dst, capped(8));
    let dst_pid = incoming_vmm(&dst, "f");
    // SAFETY: killing the destination VMM this test's hostd started.
    unsafe { libc::kill(dst_pid as i32, libc::SIGKILL) };
    let m = wait_migration(&src, "f", Duration::from_secs(30));
    assert_eq!(m.state, MigrationState::Failed, "{m:?}");
    let after = src.ok(src.api().vm("f"));
    assert_eq!(after.state, VmState::Running, "{after:?}");
    assert_eq!(after.pid, vm.pid, "the same VMM on the source");
    assert!(ticking(&src, "f"), "the guest runs on the source");
    wait_for(5, "the destination to drop the failed VM", || {
        dst.vm_ids().is_empty().then_some(())
    });
    assert!(
        !dst.data().join("vms/f").exists(),
        "the destination removed what it made"
    );
}

#[test]
fn a_hostd_killed_after_the_switch_finds_its_vm_again() {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    let mut dst = Hostd::start(Opts::default());
    src.create_vm(&guest("k", "counter"));
    src.wait_console("k", "NOVA-TICK", BOOT);
    migrate(&src, "k", &dst, MigrationParams::default());
    let m = wait_migration(&src, "k", Duration::from_secs(60));
    assert_eq!(m.state, MigrationState::Completed, "{m:?}");
    let pid = dst.ok(dst.api().vm("k")).pid;
    dst.restart();
    let vm = dst.ok(dst.api().vm("k"));
    assert_eq!(vm.state, VmState::Running, "{vm:?}");
    assert_eq!(vm.pid, pid);
    assert!(src.vm_ids().is_empty());
    // The source remembers the migration of a VM it no longer has.
    assert_eq!(
        src.ok(src.api().migration("k")).state,
        MigrationState::Completed
    );
}

#[test]
fn killing_the_source_hostd_during_a_migration_leaves_one_owner() {
    if !require_kvm() {
        return;
    }
    let mut src = Hostd::start(Opts::default());
    let dst = Hostd::start(Opts::default());
    src.create_vm(&guest("s", "dirty:16:50,counter"));
    src.wait_console("s", "NOVA-TICK", BOOT);
    migrate(&src, "s", &dst, capped(200));
    std::thread::sleep(Duration::from_millis(300));
    src.kill();
    std::thread::sleep(Duration::from_secs(2));
    src.restart();
    // Whatever the VMMs did meanwhile, after things settle exactly one hostd runs it.
    let runs = |h: &Hostd| -> (bool, bool) {
        match h.wait(h.api().vm("s")) {
            Ok(v) => (v.state == VmState::Running, false),
            Err(e) => (false, e.is_not_found()),
        }
    };
    wait_for(60, "one owner", || {
        let ((src_runs, src_gone), (dst_runs, dst_gone)) = (runs(&src), runs(&dst));
        assert!(!(src_runs && dst_runs), "both hosts run the VM");
        ((src_runs && dst_gone) || (dst_runs && src_gone)).then_some(())
    });
}

#[test]
fn killing_the_destination_hostd_before_the_switch_leaves_the_vm_on_the_source() {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    let mut dst = Hostd::start(Opts::default());
    let vm = src.create_vm(&guest("d", "dirty:16:50,counter"));
    src.wait_console("d", "NOVA-TICK", BOOT);
    migrate(&src, "d", &dst, capped(8));
    let dst_vmm = incoming_vmm(&dst, "d");
    dst.kill();
    let m = wait_migration(&src, "d", Duration::from_secs(30));
    assert_eq!(m.state, MigrationState::Failed, "{m:?}");
    let after = src.ok(src.api().vm("d"));
    assert_eq!(after.state, VmState::Running, "{after:?}");
    assert_eq!(after.pid, vm.pid);
    // The destination hostd, back, finds a receiving VMM that never switched: it
    // kills it and forgets the VM.
    dst.restart();
    assert_eq!(dst.refused(dst.api().vm("d")).0, 404);
    wait_for(5, "the receiving VMM to be gone", || {
        (!is_vmm(dst_vmm)).then_some(())
    });
    assert_eq!(src.ok(src.api().vm("d")).state, VmState::Running);
}

#[test]
fn cutting_the_link_before_the_switch_leaves_the_vm_on_the_source() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    let vm = t.a.create_vm(&guest("c", "dirty:16:50,counter"));
    t.a.wait_console("c", "NOVA-TICK", BOOT);
    migrate(&t.a, "c", &t.b, capped(8));
    incoming_vmm(&t.b, "c");
    wait_for(20, "the stream to start", || {
        (t.a.ok(t.a.api().migration("c")).state == MigrationState::Running).then_some(())
    });
    let dev =
        t.a.opts
            .args
            .iter()
            .skip_while(|a| *a != "--vxlan-dev")
            .nth(1)
            .unwrap()
            .clone();
    nova_tests::net::ip(&["-n", &t.ns_a.name, "link", "set", &dev, "down"]);
    let m = wait_migration(&t.a, "c", Duration::from_secs(60));
    assert_eq!(m.state, MigrationState::Failed, "{m:?}");
    let after = t.a.ok(t.a.api().vm("c"));
    assert_eq!(after.state, VmState::Running, "{after:?}");
    assert_eq!(after.pid, vm.pid);
    assert!(ticking(&t.a, "c"), "the guest runs on the source");
    // The failure was reported only once the source VMM had let go of its stream:
    // the cancel cut its connections, so nothing of the old migration still runs.
    let vmm_status = m.vmm.as_ref().map(|v| v.state);
    assert_ne!(
        vmm_status,
        Some(nova_vmm_api::MigrationState::Running),
        "{m:?}"
    );
    // The link back: the destination has let go of it by itself.
    nova_tests::net::ip(&["-n", &t.ns_a.name, "link", "set", &dev, "up"]);
    wait_for(30, "the destination to let go", || {
        t.b.wait(t.b.api().vm("c"))
            .is_err_and(|e| e.is_not_found())
            .then_some(())
    });
    // A retry straight away is taken (not "a migration is already running") and moves it.
    migrate(&t.a, "c", &t.b, MigrationParams::default());
    let m = wait_migration(&t.a, "c", Duration::from_secs(60));
    assert_eq!(
        m.state,
        MigrationState::Completed,
        "{m:?}\n{}",
        t.a.stderr()
    );
    assert_eq!(t.b.ok(t.b.api().vm("c")).state, VmState::Running);
}

#[test]
fn a_vm_with_a_writable_disk_moves_live_with_its_disk_intact() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    let vm = t.a.create_vm(&with_disk(&t.a, "bd", "disk"));
    let src_disk = PathBuf::from(&vm.disks[0].path);
    let line = t.a.wait_console("bd", "NOVA-DISK", BOOT);
    assert!(
        line.contains("host_ok=16") && line.contains("errors=0"),
        "{line}"
    );
    migrate(&t.a, "bd", &t.b, MigrationParams::default());
    let m = wait_migration(&t.a, "bd", Duration::from_secs(60));
    assert_eq!(
        m.state,
        MigrationState::Completed,
        "{m:?}\n{}\n{}",
        t.a.stderr(),
        t.b.stderr()
    );
    // Only the allocated, non-zero blocks travelled.
    let b = &m.vmm.as_ref().unwrap().blocks;
    assert_eq!(b.disks, 1, "{b:?}");
    assert!(
        b.sent >= 16 + 32,
        "the host's and the guest's blocks: {b:?}"
    );
    assert!(b.hole_bytes >= 60 << 20, "holes never travel: {b:?}");
    // The source let go of the VM and, the destination having confirmed, its disk.
    wait_for(10, "A to let go of it", || {
        t.a.vm_ids().is_empty().then_some(())
    });
    assert!(
        !src_disk.exists(),
        "the source's disk is removed after the move"
    );
    // The destination runs it on a disk of its own, prepared sparse and filled by
    // the migration (not cloned from the image).
    let on_b = t.b.ok(t.b.api().vm("bd"));
    assert_eq!(on_b.state, VmState::Running, "{on_b:?}");
    let d = &on_b.disks[0];
    assert_eq!(d.method, nova_hostd_api::CloneMethod::Blank, "{d:?}");
    assert_eq!(d.size_bytes, 64 << 20);
    // The guest verifies on B what it wrote on A, and goes on writing there.
    assert_eq!(disk_errors_after(&t.b, "bd", 1), 0, "blocks verify on B");
    t.b.ok(t.b.api().pause("bd"));
    let dst_disk = Path::new(&d.path);
    for (i, r) in guest_blocks(dst_disk).into_iter().enumerate() {
        assert!(r.is_ok(), "guest block {i} on B: {r:?}");
    }
    let bytes = std::fs::read(dst_disk).unwrap();
    for i in 0..nova_guest_abi::HOST_BLOCKS as usize {
        let mut blk = [0u64; nova_guest_abi::BLOCK_WORDS];
        for (k, w) in blk.iter_mut().enumerate() {
            let o = i * nova_guest_abi::BLOCK_SIZE + k * 8;
            *w = u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        }
        assert!(
            nova_guest_abi::check_block(&blk, nova_guest_abi::HOST_MAGIC, i as u64).is_ok(),
            "host block {i} arrived on B"
        );
    }
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(dst_disk).unwrap().blocks() * 512;
    assert!(
        allocated < 4 << 20,
        "B's disk stays sparse: {allocated} bytes"
    );
}

/// Starts a `kind` migration of `id` from `src` to `dst`, capped at `mbit`.
fn migrate_kind(src: &Hostd, id: &str, dst: &Hostd, mbit: u64, kind: MigrationKind) {
    let mut req = to(dst, capped(mbit));
    req.kind = kind;
    let m = src.ok(src.api().migrate(id, &req));
    assert_eq!(m.state, MigrationState::Preparing);
}

/// After a failed `kind` migration the VM runs on the source with its disk intact: the
/// same VMM (live, or warm resumed), or for cold the VMM it was booted into, paused,
/// now running a fresh boot that finds the host's blocks on the disk. Either way the
/// guest's checksums of what it writes verify.
fn vm_and_disk_on_the_source(h: &Hostd, id: &str, disk: &Path, kind: MigrationKind, pid: u32) {
    let after = h.ok(h.api().vm(id));
    assert_eq!(after.state, VmState::Running, "{after:?}");
    if kind == MigrationKind::Cold && after.pid != Some(pid) {
        // The guest was stopped and booted again on the source (its second boot): it
        // read the host's blocks and verified a pass of its own.
        let line = wait_for(60, "a disk pass after the second boot", || {
            let c = h.wait(h.api().console(id, 10_000)).ok()?;
            let boots = c
                .lines
                .iter()
                .filter(|l| l.starts_with("NOVA-BOOTED"))
                .count();
            let last = c.lines.iter().rposition(|l| l.starts_with("NOVA-BOOTED"))?;
            let first_pass = c.lines[last..]
                .iter()
                .find(|l| l.starts_with("NOVA-DISK pass=1 "))?;
            (boots >= 2).then(|| first_pass.clone())
        });
        assert!(
            line.contains("host_ok=16") && line.contains("errors=0"),
            "{line}"
        );
    } else {
        // Live and warm keep their VMM; so does a cold move that failed before the
        // source stopped its guest (the destination gone while it prepared).
        assert_eq!(after.pid, Some(pid), "the same VMM: {after:?}");
    }
    disk_intact_on_source(h, id, disk);
}

fn killing_the_destination_vmm_leaves_vm_and_disk_on_the_source(kind: MigrationKind) {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    let dst = Hostd::start(Opts::default());
    let vm = src.create_vm(&with_disk(&src, "kd", "dirty:16:50,disk"));
    let disk = PathBuf::from(&vm.disks[0].path);
    src.wait_console("kd", "NOVA-DISK", BOOT);
    migrate_kind(&src, "kd", &dst, 8, kind);
    let dst_pid = incoming_vmm(&dst, "kd");
    // SAFETY: killing the destination VMM this test's hostd started.
    unsafe { libc::kill(dst_pid as i32, libc::SIGKILL) };
    let m = wait_migration(&src, "kd", Duration::from_secs(30));
    assert_eq!(m.state, MigrationState::Failed, "{m:?}");
    vm_and_disk_on_the_source(&src, "kd", &disk, kind, vm.pid.unwrap());
    wait_for(5, "the destination to drop the failed VM", || {
        dst.vm_ids().is_empty().then_some(())
    });
    assert!(
        !dst.data().join("vms/kd").exists(),
        "the destination removed the disk it prepared"
    );
}

#[test]
fn killing_the_destination_vmm_during_a_block_migration_leaves_vm_and_disk_on_the_source() {
    killing_the_destination_vmm_leaves_vm_and_disk_on_the_source(MigrationKind::Live);
}

#[test]
fn killing_the_destination_vmm_during_a_warm_migration_leaves_vm_and_disk_on_the_source() {
    killing_the_destination_vmm_leaves_vm_and_disk_on_the_source(MigrationKind::Warm);
}

#[test]
fn killing_the_destination_vmm_during_a_cold_migration_leaves_vm_and_disk_on_the_source() {
    killing_the_destination_vmm_leaves_vm_and_disk_on_the_source(MigrationKind::Cold);
}

fn killing_the_destination_hostd_leaves_vm_and_disk_on_the_source(kind: MigrationKind) {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    let mut dst = Hostd::start(Opts::default());
    let vm = src.create_vm(&with_disk(&src, "hd", "dirty:16:50,disk"));
    let disk = PathBuf::from(&vm.disks[0].path);
    src.wait_console("hd", "NOVA-DISK", BOOT);
    migrate_kind(&src, "hd", &dst, 8, kind);
    incoming_vmm(&dst, "hd");
    dst.kill();
    let m = wait_migration(&src, "hd", Duration::from_secs(30));
    assert_eq!(m.state, MigrationState::Failed, "{m:?}");
    vm_and_disk_on_the_source(&src, "hd", &disk, kind, vm.pid.unwrap());
    dst.restart();
    assert_eq!(dst.refused(dst.api().vm("hd")).0, 404);
    assert!(!dst.data().join("vms/hd").exists());
}

#[test]
fn killing_the_destination_hostd_during_a_block_migration_leaves_vm_and_disk_on_the_source() {
    killing_the_destination_hostd_leaves_vm_and_disk_on_the_source(MigrationKind::Live);
}

#[test]
fn killing_the_destination_hostd_during_a_warm_migration_leaves_vm_and_disk_on_the_source() {
    killing_the_destination_hostd_leaves_vm_and_disk_on_the_source(MigrationKind::Warm);
}

#[test]
fn killing_the_destination_hostd_during_a_cold_migration_leaves_vm_and_disk_on_the_source() {
    killing_the_destination_hostd_leaves_vm_and_disk_on_the_source(MigrationKind::Cold);
}

fn killing_the_source_hostd_leaves_one_owner_with_the_disk(kind: MigrationKind) {
    if !require_kvm() {
        return;
    }
    let mut src = Hostd::start(Opts::default());
    let dst = Hostd::start(Opts::default());
    src.create_vm(&with_disk(&src, "sd", "dirty:16:50,disk"));
    src.wait_console("sd", "NOVA-DISK", BOOT);
    migrate_kind(&src, "sd", &dst, 200, kind);
    std::thread::sleep(Duration::from_millis(300));
    src.kill();
    std::thread::sleep(Duration::from_secs(2));
    src.restart();
    let runs = |h: &Hostd| -> (bool, bool) {
        match h.wait(h.api().vm("sd")) {
            Ok(v) => (v.state == VmState::Running, false),
            Err(e) => (false, e.is_not_found()),
        }
    };
    let owner = wait_for(60, "one owner", || {
        let ((src_runs, src_gone), (dst_runs, dst_gone)) = (runs(&src), runs(&dst));
        assert!(!(src_runs && dst_runs), "both hosts run the VM");
        if src_runs && dst_gone {
            Some(&src)
        } else if dst_runs && src_gone {
            Some(&dst)
        } else {
            None
        }
    });
    // Whoever has it has its disk, and the guest's blocks verify there.
    let v = owner.ok(owner.api().vm("sd"));
    assert!(Path::new(&v.disks[0].path).exists());
    let (pass, _) = disk_pass(owner, "sd").unwrap_or((0, 0));
    assert_eq!(disk_errors_after(owner, "sd", pass), 0);
}

#[test]
fn killing_the_source_hostd_during_a_block_migration_leaves_one_owner_with_the_disk() {
    killing_the_source_hostd_leaves_one_owner_with_the_disk(MigrationKind::Live);
}

#[test]
fn killing_the_source_hostd_during_a_warm_migration_leaves_one_owner_with_the_disk() {
    killing_the_source_hostd_leaves_one_owner_with_the_disk(MigrationKind::Warm);
}

#[test]
fn killing_the_source_hostd_during_a_cold_migration_leaves_one_owner_with_the_disk() {
    killing_the_source_hostd_leaves_one_owner_with_the_disk(MigrationKind::Cold);
}

fn cutting_the_link_leaves_vm_and_disk_on_the_source(kind: MigrationKind) {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    let vm = t.a.create_vm(&with_disk(&t.a, "cd", "dirty:16:50,disk"));
    let disk = PathBuf::from(&vm.disks[0].path);
    t.a.wait_console("cd", "NOVA-DISK", BOOT);
    migrate_kind(&t.a, "cd", &t.b, 8, kind);
    incoming_vmm(&t.b, "cd");
    wait_for(20, "the stream to start", || {
        (t.a.ok(t.a.api().migration("cd")).state == MigrationState::Running).then_some(())
    });
    let dev =
        t.a.opts
            .args
            .iter()
            .skip_while(|a| *a != "--vxlan-dev")
            .nth(1)
            .unwrap()
            .clone();
    nova_tests::net::ip(&["-n", &t.ns_a.name, "link", "set", &dev, "down"]);
    let m = wait_migration(&t.a, "cd", Duration::from_secs(60));
    assert_eq!(m.state, MigrationState::Failed, "{m:?}");
    vm_and_disk_on_the_source(&t.a, "cd", &disk, kind, vm.pid.unwrap());
    nova_tests::net::ip(&["-n", &t.ns_a.name, "link", "set", &dev, "up"]);
    wait_for(30, "the destination to let go", || {
        t.b.wait(t.b.api().vm("cd"))
            .is_err_and(|e| e.is_not_found())
            .then_some(())
    });
    assert!(!t.b.data().join("vms/cd").exists());
}

#[test]
fn cutting_the_link_during_a_block_migration_leaves_vm_and_disk_on_the_source() {
    cutting_the_link_leaves_vm_and_disk_on_the_source(MigrationKind::Live);
}

#[test]
fn cutting_the_link_during_a_warm_migration_leaves_vm_and_disk_on_the_source() {
    cutting_the_link_leaves_vm_and_disk_on_the_source(MigrationKind::Warm);
}

#[test]
fn cutting_the_link_during_a_cold_migration_leaves_vm_and_disk_on_the_source() {
    cutting_the_link_leaves_vm_and_disk_on_the_source(MigrationKind::Cold);
}

/// Moves a VM whose guest writes and verifies its disk from A to B (in network
/// namespaces) the `kind` way; checks what every kind must: completed, the disk
/// copied (B's own sparse file), the source's copy gone. Returns the status and the
/// hosts.
fn moves_with_its_disk(kind: MigrationKind) -> (MigrationStatus, TwoHosts) {
    let t = TwoHosts::new();
    let vm = t.a.create_vm(&with_disk(&t.a, "wk", "disk"));
    let src_disk = PathBuf::from(&vm.disks[0].path);
    t.a.wait_console("wk", "NOVA-DISK", BOOT);
    let mut req = to(&t.b, MigrationParams::default());
    req.kind = kind;
    t.a.ok(t.a.api().migrate("wk", &req));
    let m = wait_migration(&t.a, "wk", Duration::from_secs(60));
    assert_eq!(
        m.state,
        MigrationState::Completed,
        "{m:?}\n{}\n{}",
        t.a.stderr(),
        t.b.stderr()
    );
    assert_eq!(m.kind, kind, "{m:?}");
    let v = m.vmm.clone().unwrap();
    assert_eq!(
        v.mode,
        nova_hostd_api::MigrationMode::Precopy,
        "one pass: {v:?}"
    );
    assert_eq!(
        v.rounds, 0,
        "a guest that does not run dirties nothing: {v:?}"
    );
    assert_eq!(v.blocks.disks, 1, "{v:?}");
    assert!(v.blocks.sent >= 16, "the host's blocks at least: {v:?}");
    wait_for(10, "A to let go of it", || {
        t.a.vm_ids().is_empty().then_some(())
    });
    assert!(
        !src_disk.exists(),
        "the source's disk goes once B has the VM"
    );
    let on_b = t.b.ok(t.b.api().vm("wk"));
    assert_eq!(on_b.state, VmState::Running, "{on_b:?}");
    assert_eq!(on_b.disks[0].method, nova_hostd_api::CloneMethod::Blank);
    (m, t)
}

/// Whether B's console has a line starting with `prefix` (now).
fn has_line(h: &Hostd, id: &str, prefix: &str) -> bool {
    h.ok(h.api().console(id, 10_000))
        .lines
        .iter()
        .any(|l| l.starts_with(prefix))
}

#[test]
fn a_warm_migration_pauses_the_guest_moves_it_with_its_disk_and_resumes_it_there() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let (_, t) = moves_with_its_disk(MigrationKind::Warm);
    // It resumed where it was: no boot there, and what it wrote on A verifies on B.
    assert_eq!(disk_errors_after(&t.b, "wk", 1), 0);
    assert!(!has_line(&t.b, "wk", "NOVA-BOOTED"), "warm does not reboot");
}

#[test]
fn a_cold_migration_stops_the_guest_moves_its_disk_and_boots_it_there() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let (_, t) = moves_with_its_disk(MigrationKind::Cold);
    // A fresh boot on B, reading the host's blocks from the disk that moved.
    let line = t.b.wait_console("wk", "NOVA-DISK", BOOT);
    assert!(has_line(&t.b, "wk", "NOVA-BOOTED"), "cold boots afresh");
    assert!(
        line.contains("pass=1") && line.contains("host_ok=16") && line.contains("errors=0"),
        "{line}"
    );
}

/// A VM whose one disk is `shared_path`: `file`, used in place.
fn with_shared_disk(id: &str, workload: &str, file: &Path) -> nova_hostd_api::VmSpec {
    let mut spec = guest(id, workload);
    spec.disks = vec![DiskSpec {
        image: None,
        size_mib: None,
        read_only: false,
        shared_path: Some(file.display().to_string()),
    }];
    spec
}

/// A disk marked shared in the spec (a file both hosts see at the same path: here one
/// filesystem, the hosts being network namespaces) moves with the VM live without a
/// block of it travelling: the destination opens the same file, the guest goes on
/// verifying there what it wrote, and neither host removes the file (not when the
/// source lets go, nor when the VM is deleted).
#[test]
fn a_shared_disk_in_the_spec_migrates_without_copying() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    let store = nova_tests::TempDir::new();
    let file = store.join("shared.raw");
    disk_with_host_blocks(&file, 16);
    let file = file.canonicalize().unwrap();
    let vm = t.a.create_vm(&with_shared_disk("sh", "disk", &file));
    let d = &vm.disks[0];
    assert_eq!(d.method, nova_hostd_api::CloneMethod::Shared, "{d:?}");
    assert_eq!(
        (Path::new(&d.path), d.size_bytes),
        (file.as_path(), 16 << 20)
    );
    let line = t.a.wait_console("sh", "NOVA-DISK", BOOT);
    assert!(
        line.contains("host_ok=16") && line.contains("errors=0"),
        "{line}"
    );
    migrate(&t.a, "sh", &t.b, MigrationParams::default());
    let m = wait_migration(&t.a, "sh", Duration::from_secs(60));
    assert_eq!(
        m.state,
        MigrationState::Completed,
        "{m:?}\n{}\n{}",
        t.a.stderr(),
        t.b.stderr()
    );
    let b = &m.vmm.as_ref().unwrap().blocks;
    assert_eq!(
        (b.disks, b.sent, b.zero),
        (0, 0, 0),
        "nothing copied: {b:?}"
    );
    wait_for(10, "A to let go of it", || {
        t.a.vm_ids().is_empty().then_some(())
    });
    assert!(file.exists(), "the source removed the shared file");
    let on_b = t.b.ok(t.b.api().vm("sh"));
    assert_eq!(on_b.state, VmState::Running, "{on_b:?}");
    assert_eq!(Path::new(&on_b.disks[0].path), file.as_path());
    assert_eq!(on_b.disks[0].method, nova_hostd_api::CloneMethod::Shared);
    let (pass, _) = disk_pass(&t.b, "sh").unwrap_or((0, 0));
    assert_eq!(disk_errors_after(&t.b, "sh", pass), 0, "blocks verify on B");
    t.b.ok(t.b.api().delete("sh"));
    assert!(file.exists(), "deleting the VM removed the shared file");
    for (i, r) in guest_blocks(&file).into_iter().enumerate() {
        assert!(r.is_ok(), "guest block {i} in the shared file: {r:?}");
    }
}

/// A shared disk is named by an absolute path to an existing regular file under an
/// image root, and nothing else: each refusal names `disks[0].shared_path`.
#[test]
fn a_shared_disk_the_spec_cannot_use_is_refused_by_field() {
    let h = Hostd::start(Opts::default());
    let store = nova_tests::TempDir::new();
    let file = store.join("shared.raw");
    disk_with_host_blocks(&file, 1);
    let mut with_image = with_shared_disk("s1", "disk", &file);
    with_image.disks[0].size_mib = Some(1);
    let relative = with_shared_disk("s2", "disk", Path::new("shared.raw"));
    let missing = with_shared_disk("s3", "disk", &store.join("nope.raw"));
    let dir = with_shared_disk("s4", "disk", store.path());
    let in_data = with_shared_disk("s5", "disk", &h.data().join("x.raw"));
    std::fs::write(h.data().join("x.raw"), b"").unwrap();
    for spec in [with_image, relative, missing, dir, in_data] {
        let (status, body) = h.refused(h.api().create(&spec));
        assert_eq!(status, 400, "{spec:?}: {body:?}");
        assert_eq!(
            body.field.as_deref(),
            Some("disks[0].shared_path"),
            "{spec:?}: {body:?}"
        );
    }
    assert!(h.vm_ids().is_empty());
    assert!(file.exists());
}
