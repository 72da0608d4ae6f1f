//! Live migration between two nova-vmm processes on loopback: the guest's counter,
//! memory and disk survive every mode (the disk copied into the destination's own
//! sparse file, byte for byte, or not at all when shared); every option shows its
//! effect; and a failure at any phase before the switch leaves the VM running on the
//! source.

use std::time::Duration;

use nova_http::blocking::block_on;
use nova_tests::migration::{
    assert_counter_continuous, joined, kind, migrate, migrate_to, Destination, Fault, Proxy,
    Trigger,
};
use nova_tests::vmm::{client, VmmCmd};
use std::path::Path;

use nova_tests::{disk_with_host_blocks, require_kvm, Line, TempDir};
use nova_vmm_api::{
    MigrationMode, MigrationParams, MigrationRequest, MigrationState, MigrationStatus, RunState,
};

const WORKLOAD: &str = "counter,dirty:16:max";

fn last_num(lines: &[Line], prefix: &str, key: &str) -> Option<u64> {
    lines
        .iter()
        .rev()
        .find(|l| l.text.starts_with(prefix))
        .and_then(|l| l.num(key))
}

/// Boots a source with the standard workload (and a disk when `disk` is set).
fn source(
    workload: &str,
    mem_mib: u64,
    disk: Option<&std::path::Path>,
) -> (nova_tests::vmm::Vm, std::path::PathBuf) {
    // --insecure: the fault-injecting proxy reads the stream; the other stories pass
    // their destination's credential and go over TLS.
    let mut cmd =
        VmmCmd::testguest(workload).args(["--mem-mib", &mem_mib.to_string(), "--insecure"]);
    if let Some(d) = disk {
        cmd = cmd.arg("--disk").arg(d);
    }
    let (cmd, sock) = cmd.with_api();
    let vm = cmd.spawn();
    if workload.contains("dirty") {
        vm.console
            .wait_line("NOVA-DIRTY pass=1", Duration::from_secs(30));
    } else {
        vm.console
            .wait_line("NOVA-TICK 20", Duration::from_secs(30));
    }
    (vm, sock)
}

/// Bytes of `path` the filesystem allocated.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The source's disk: the host's blocks, 256 KiB of data well past the guest's blocks,
/// 256 KiB of allocated zeros, and holes in between (8 MiB in all).
fn source_disk(path: &Path) {
    use std::os::unix::fs::FileExt;
    disk_with_host_blocks(path, 8);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let data: Vec<u8> = (0..256 << 10)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    f.write_all_at(&data, 4 << 20).unwrap();
    f.write_all_at(&vec![0u8; 256 << 10], 6 << 20).unwrap();
    f.sync_all().unwrap();
}

/// A sparse, empty file as large as `like`: what hostd prepares on a destination.
fn empty_like(like: &Path, path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(std::fs::metadata(like).unwrap().len()).unwrap();
}

/// Checks the destination's disk against the source's after the move: identical but
/// for the guest's own blocks (which it went on writing there), and those verify.
fn assert_disk_moved(src: &Path, dst: &Path) {
    use nova_guest_abi::{BLOCK_SIZE, GUEST_BLOCKS, GUEST_BLOCKS_START};
    let (a, b) = (std::fs::read(src).unwrap(), std::fs::read(dst).unwrap());
    assert_eq!(a.len(), b.len());
    let guest = GUEST_BLOCKS_START as usize * BLOCK_SIZE
        ..(GUEST_BLOCKS_START + GUEST_BLOCKS) as usize * BLOCK_SIZE;
    assert!(
        a[..guest.start] == b[..guest.start],
        "the host's blocks differ"
    );
    assert!(
        a[guest.end..] == b[guest.end..],
        "the disk past the guest's blocks differs"
    );
    for (i, r) in nova_tests::guest_blocks(dst).into_iter().enumerate() {
        assert!(r.is_ok(), "guest block {i} on the destination: {r:?}");
    }
}

fn migrates_with_guest_intact(mode: &str) {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("disk.img");
    source_disk(&disk);
    let dst_disk = dir.join("dst.img");
    empty_like(&disk, &dst_disk);
    let (mut src, sock) = source(&format!("{WORKLOAD},disk"), 512, Some(&disk));
    src.console
        .wait_line("NOVA-DISK pass=1", Duration::from_secs(30));
    let dst = Destination::start_for(512, 1, &[&dst_disk]);
    // Post-copy pushes pages faster than this guest (in KVM's emulator, on a loaded
    // machine) touches them on loopback; a tight cap on the push keeps most pages on
    // the source long enough that the guest surely faults on some. Compressed, as on
    // the slow links post-copy is for: the pages it pushes and those it sends on
    // request are compressed too.
    let mut args = vec!["--mode", mode];
    if mode == "postcopy" {
        args.extend(["--bandwidth-mbit", "40", "--compress", "zstd"]);
    }
    let (ok, result, err) = migrate_to(&sock, &dst, &args);
    assert!(ok, "migration failed: {result:?} {err}");
    assert_eq!(result.state, MigrationState::Completed);
    assert_eq!(result.mode.as_str(), mode, "{result:?}");
    assert!(result.downtime_ms > 0.0);
    assert!(
        src.console.wait_exit(Duration::from_secs(10)).success(),
        "the source exits once the VM moved"
    );
    // A full dirty pass and a disk pass on the destination verify every page and block.
    let src_lines = src.console.lines();
    let pass = last_num(&src_lines, "NOVA-DIRTY", "pass").unwrap();
    let disk_pass = last_num(&src_lines, "NOVA-DISK", "pass").unwrap();
    dst.vm.console.wait_line(
        &format!("NOVA-DIRTY pass={}", pass + 2),
        Duration::from_secs(30),
    );
    dst.vm.console.wait_line(
        &format!("NOVA-DISK pass={}", disk_pass + 1),
        Duration::from_secs(30),
    );
    let all = joined(&src_lines, &dst.vm.console.lines());
    assert_counter_continuous(&all);
    assert_eq!(
        last_num(&all, "NOVA-DIRTY", "errors"),
        Some(0),
        "guest memory differs after migration"
    );
    assert_eq!(
        last_num(&all, "NOVA-DISK", "errors"),
        Some(0),
        "disk blocks differ after migration"
    );
    eprintln!("migration result: {result:?}");
    if mode == "postcopy" {
        assert!(result.postcopy.faults_served > 0, "{result:?}");
        assert_eq!(
            result.pages.compressed, result.pages.sent,
            "requested and pushed pages are compressed: {result:?}"
        );
    }
    let info = block_on(client(&dst.sock).info()).unwrap();
    assert_eq!(info.state, RunState::Running);
    // The disk moved: only its allocated, non-zero blocks travelled.
    let b = &result.blocks;
    assert_eq!(b.disks, 1, "{b:?}");
    assert!(b.sent >= 16 + 32 + 64, "host, guest and data blocks: {b:?}");
    assert!(
        b.zero >= 64,
        "the allocated zeros were read, not sent: {b:?}"
    );
    assert!(b.hole_bytes >= 7 << 20, "holes were never read: {b:?}");
    block_on(client(&dst.sock).pause()).unwrap();
    assert_disk_moved(&disk, &dst_disk);
    assert!(
        allocated(&dst_disk) + (200 << 10) <= allocated(&disk),
        "zero blocks stay holes on the destination: {} vs {} bytes",
        allocated(&dst_disk),
        allocated(&disk)
    );
}

/// A disk both sides see (`--disk PATH,shared`) is not copied: the destination's
/// guest goes on with the same file.
#[test]
fn a_shared_disk_migrates_without_copying() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("disk.img");
    disk_with_host_blocks(&disk, 8);
    let shared = format!("{},shared", disk.display());
    let (cmd, sock) = VmmCmd::testguest("counter,disk")
        .args(["--mem-mib", "256", "--disk", &shared])
        .with_api();
    let mut src = cmd.spawn();
    src.console
        .wait_line("NOVA-DISK pass=1", Duration::from_secs(30));
    // A destination given the disk as its own (to be copied into) is refused by field:
    // the copy would write the file the source's guest is using.
    let own = Destination::start_for(256, 1, &[&disk]);
    let (ok, result, _) = migrate_to(&sock, &own, &["--mode", "precopy"]);
    assert!(!ok, "{result:?}");
    assert!(
        result
            .error
            .as_deref()
            .unwrap_or("")
            .contains("disks[0].shared"),
        "{result:?}"
    );
    let dst = Destination::start(&["--mem-mib", "256", "--vcpus", "1", "--disk", &shared]);
    let (ok, result, err) = migrate_to(&sock, &dst, &["--mode", "precopy"]);
    assert!(ok, "migration failed: {result:?} {err}");
    assert_eq!(result.blocks.disks, 0, "{result:?}");
    assert_eq!(result.blocks.sent + result.blocks.zero, 0, "{result:?}");
    src.console.wait_exit(Duration::from_secs(10));
    let disk_pass = last_num(&src.console.lines(), "NOVA-DISK", "pass").unwrap();
    let l = dst.vm.console.wait_line(
        &format!("NOVA-DISK pass={}", disk_pass + 1),
        Duration::from_secs(30),
    );
    assert_eq!(l.num("errors"), Some(0), "{}", l.text);
}

/// A VM that arrived by migration leaves again the same way (its API reports the
/// result before the process goes), and hop after hop no tick is lost or doubled:
/// each switch pauses the vCPU wherever it is, sometimes right after a console byte
/// went out, and that `out` must be finished before the state moves.
#[test]
fn a_vm_hopping_through_several_hosts_keeps_its_counter_exact() {
    if !require_kvm() {
        return;
    }
    let (first, mut sock) = source("counter", 64, None);
    let mut hosts = vec![first];
    for _ in 0..6 {
        let next = Destination::start_for(64, 1, &[]);
        let (ok, result, err) = migrate_to(&sock, &next, &["--mode", "precopy"]);
        assert!(ok, "{result:?} {err}");
        hosts
            .last_mut()
            .unwrap()
            .console
            .wait_exit(Duration::from_secs(10));
        next.vm.console.wait_more_ticks(10, Duration::from_secs(10));
        sock = next.sock;
        hosts.push(next.vm);
    }
    let all = hosts
        .iter()
        .fold(Vec::new(), |acc, vm| joined(&acc, &vm.console.lines()));
    assert_counter_continuous(&all);
}

#[test]
fn precopy_moves_a_running_guest_with_counter_memory_and_disk_intact() {
    migrates_with_guest_intact("precopy");
}

#[test]
fn postcopy_moves_a_running_guest_fetching_pages_on_fault() {
    migrates_with_guest_intact("postcopy");
}

#[test]
fn hybrid_moves_a_running_guest_with_counter_memory_and_disk_intact() {
    migrates_with_guest_intact("hybrid");
}

/// Injects `fault` at the `nth` message of `kind` and checks the source VM keeps
/// running; returns the phase the migration reported when it failed.
fn source_survives(
    src: &nova_tests::vmm::Vm,
    sock: &std::path::Path,
    trigger: Trigger,
    fault: Fault,
    args: &[&str],
) -> String {
    source_survives_with(src, sock, trigger, fault, args, &[], RunState::Running)
}

/// [`source_survives`] for a VM with `disks` (the destination's empty copies) that was
/// `state` before the migration (paused: a warm or cold move) and must be so after.
fn source_survives_with(
    src: &nova_tests::vmm::Vm,
    sock: &std::path::Path,
    trigger: Trigger,
    fault: Fault,
    args: &[&str],
    disks: &[&Path],
    state: RunState,
) -> String {
    let dst = Destination::start_for_insecure(256, 1, disks);
    let what = format!(
        "{fault:?} at message kinds {:?} #{} in {:?}",
        trigger.kinds,
        trigger.nth,
        trigger.phases.as_ref().map(|p| p.1)
    );
    let proxy = Proxy::start(dst.port, dst.vm.console.pid(), trigger, fault);
    let (ok, result, err) = migrate(sock, proxy.port, args);
    assert!(
        proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
        "{what}: the fault never fired: {result:?} {err}"
    );
    assert!(!ok, "migration succeeded despite {fault:?}: {result:?}");
    assert_eq!(result.state, MigrationState::Failed, "{result:?}");
    // The VM is here as it was, unharmed: running (and ticking), or still paused.
    let info = block_on(client(sock).info()).unwrap();
    assert_eq!(info.state, state, "{what}: {info:?}");
    if state == RunState::Running {
        src.console.wait_more_ticks(20, Duration::from_secs(20));
    }
    result.phase
}

fn failures_before_the_switch_leave_the_vm_on_the_source(fault: Fault) {
    if !require_kvm() {
        return;
    }
    let (mut src, sock) = source(WORKLOAD, 256, None);
    let precopy: &[&str] = &["--mode", "precopy", "--downtime-ms", "1"];
    // A bandwidth cap makes each dirty round last tens of milliseconds, so the proxy
    // reliably sees a round's pages while the source still reports that phase (fast
    // rounds would already be in stop-and-copy when their pages reach the proxy).
    let slow_rounds: &[&str] = &[
        "--mode",
        "precopy",
        "--downtime-ms",
        "1",
        "--bandwidth-mbit",
        "400",
    ];
    let at = |kinds, nth| Trigger {
        kinds,
        nth,
        phases: None,
    };
    // (where, migration flags, phase the source must have been in when it failed)
    let cases = [
        (at(&[kind::HELLO], 1), precopy, "handshake"),
        (at(&[kind::PAGES], 1), precopy, "first-pass"),
        (
            Trigger {
                kinds: &[kind::PAGES],
                nth: 1,
                phases: Some((client(&sock), &["dirty-rounds"])),
            },
            slow_rounds,
            "dirty-rounds",
        ),
        // Stop-and-copy's pages: every round waits until its pages are applied, so a
        // page frame the proxy holds while the source reports stop-and-copy (or
        // device-state, which follows with nothing to wait for) is one of the last.
        // When the guest wrote nothing since the last round there are none, and the
        // state that follows takes the fault.
        (
            Trigger {
                kinds: &[kind::PAGES, kind::ZERO_PAGES, kind::STATE],
                nth: 1,
                phases: Some((client(&sock), &["stop-and-copy", "device-state"])),
            },
            precopy,
            "stop-and-copy",
        ),
        (at(&[kind::STATE], 1), precopy, "device-state"),
    ];
    const ORDER: [&str; 5] = [
        "handshake",
        "first-pass",
        "dirty-rounds",
        "stop-and-copy",
        "device-state",
    ];
    for (trigger, args, phase) in cases {
        let what = format!("{fault:?} at message {:?} #{}", trigger.kinds, trigger.nth);
        let got = source_survives(&src, &sock, trigger, fault, args);
        // The fault strikes in `phase`; the source learns of it when a write fails or
        // the destination's Abort arrives, and socket buffers can carry it on into a
        // later phase, but always one before the switch.
        let (g, p) = (
            ORDER.iter().position(|x| *x == got),
            ORDER.iter().position(|x| *x == phase),
        );
        assert!(
            g.is_some() && g >= p,
            "{what}: failed in {got}, expected {phase} or later before the switch"
        );
    }
    let got = source_survives(
        &src,
        &sock,
        at(&[kind::POSTCOPY_STATE], 1),
        fault,
        &["--mode", "postcopy"],
    );
    assert_eq!(got, "device-state");
    // And it can still migrate.
    let dst = Destination::start_for(256, 1, &[]);
    let (ok, result, err) = migrate_to(&sock, &dst, &[]);
    assert!(ok, "{result:?} {err}");
    // ctl's defaults are the contract's.
    assert_eq!(result.mode, MigrationParams::default().mode);
    // The source ends once the destination has every page (the default mode may
    // finish in post-copy, pushing the rest over TLS: give a loaded host time).
    src.console.wait_exit(Duration::from_secs(30));
    let src_lines = src.console.lines();
    dst.vm
        .console
        .wait_line("NOVA-TICK", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let all = joined(&src_lines, &dst.vm.console.lines());
    assert_counter_continuous(&all);
    assert_eq!(last_num(&all, "NOVA-DIRTY", "errors"), Some(0));
}

#[test]
fn a_cut_connection_at_any_phase_before_the_switch_leaves_the_vm_on_the_source() {
    failures_before_the_switch_leave_the_vm_on_the_source(Fault::Cut);
}

#[test]
fn a_killed_destination_at_any_phase_before_the_switch_leaves_the_vm_on_the_source() {
    failures_before_the_switch_leave_the_vm_on_the_source(Fault::KillDestination);
}

/// How a VM with a disk moves, as hostd drives each kind over the VMM: live (the
/// guest runs throughout), warm (hostd pauses it first) or cold (hostd stops it and
/// boots a fresh VMM, paused, over the same disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Live,
    Warm,
    Cold,
}

/// SHA-256 of a whole file, hex.
fn sha256(path: &Path) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap());
    nova_vmm_api::migration::to_hex(d.as_ref())
}

/// A source VM whose guest has written and verified its disk once, ready to move
/// `kind`'s way: running (live), paused (warm), or stopped and booted afresh paused
/// over the same disk (cold).
fn disk_source(kind: Kind, disk: &Path) -> (nova_tests::vmm::Vm, std::path::PathBuf) {
    let workload = format!("{WORKLOAD},disk");
    let (vm, sock) = source(&workload, 256, Some(disk));
    vm.console
        .wait_line("NOVA-DISK pass=1", Duration::from_secs(30));
    match kind {
        Kind::Live => (vm, sock),
        Kind::Warm => {
            let info = block_on(client(&sock).pause()).unwrap();
            assert_eq!(info.state, RunState::Paused, "{info:?}");
            (vm, sock)
        }
        Kind::Cold => reboot_paused(vm, &sock, disk),
    }
}

/// What hostd does to a VM it moves cold: stops its VMM and boots a fresh one over the
/// same disk, paused.
fn reboot_paused(
    mut vm: nova_tests::vmm::Vm,
    sock: &Path,
    disk: &Path,
) -> (nova_tests::vmm::Vm, std::path::PathBuf) {
    let stop = nova_vmm_api::StopRequest {
        force: true,
        ..Default::default()
    };
    let _ = block_on(client(sock).stop(&stop));
    vm.console.wait_exit(Duration::from_secs(20));
    let (cmd, sock) = VmmCmd::testguest(&format!("{WORKLOAD},disk"))
        .args(["--mem-mib", "256", "--insecure", "--paused", "--disk"])
        .arg(disk)
        .with_api();
    let vm = cmd.spawn();
    nova_tests::vmm::wait_for_socket(&sock);
    let info = block_on(client(&sock).info()).unwrap();
    assert_eq!(info.state, RunState::Paused, "{info:?}");
    (vm, sock)
}

/// Resumes a paused source after a failed move and waits for its guest to finish a
/// disk pass there (a cold one boots first and reads the host's blocks): the line.
fn runs_again_with_its_disk(src: &nova_tests::vmm::Vm, sock: &Path, kind: Kind) -> Line {
    let before = src.console.lines().len();
    block_on(client(sock).resume()).unwrap();
    let l = nova_tests::wait_for(60, "a disk pass after the resume", || {
        src.console.lines()[before..]
            .iter()
            .find(|l| l.text.starts_with("NOVA-DISK"))
            .cloned()
    });
    if kind == Kind::Cold {
        assert!(
            src.console.lines()[before..]
                .iter()
                .any(|l| l.text.starts_with("NOVA-BOOTED")),
            "a cold source boots when resumed"
        );
        assert_eq!(l.num("host_ok"), Some(16), "{}", l.text);
    }
    l
}

/// The failure matrix with a writable disk: `fault` strikes at every phase before the
/// switch of a `kind` move (the disk's first-pass blocks, and for live its dirty-round
/// blocks and the stop-and-copy's last ones too), and each time the VM is on the
/// source as it was with its disk intact: a live guest goes on verifying the blocks it
/// writes, a paused one's disk is byte for byte what it was (SHA-256 of the file). Then
/// the VM still moves, its disk arriving whole.
fn disk_failures_before_the_switch_leave_vm_and_disk_on_the_source(fault: Fault, kind: Kind) {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("disk.img");
    source_disk(&disk);
    let (mut src, mut sock) = disk_source(kind, &disk);
    let state = match kind {
        Kind::Live => RunState::Running,
        Kind::Warm | Kind::Cold => RunState::Paused,
    };
    let precopy: &[&str] = &["--mode", "precopy", "--downtime-ms", "1"];
    // A first pass of seconds (the guest's 16 MiB at 40 Mbit/s): the guest surely
    // rewrites disk blocks meanwhile, and the first round sends them.
    let slow_rounds: &[&str] = &[
        "--mode",
        "precopy",
        "--downtime-ms",
        "1",
        "--bandwidth-mbit",
        "40",
    ];
    let at = |kinds, nth| Trigger {
        kinds,
        nth,
        phases: None,
    };
    let mut cases = vec![
        (at(&[kind::HELLO], 1), precopy, "handshake"),
        (at(&[kind::PAGES], 1), precopy, "first-pass"),
        // The disk's first pass (the host's blocks are always there).
        (at(&[kind::BLOCKS], 1), precopy, "first-pass"),
    ];
    if kind == Kind::Live {
        cases.extend([
            // Blocks the guest wrote during the first pass, resent in a round (as
            // they are, or as deltas against the copy sent before).
            (
                Trigger {
                    kinds: &[kind::BLOCKS, kind::BLOCK_DELTAS],
                    nth: 1,
                    phases: Some((client(&sock), &["dirty-rounds"])),
                },
                slow_rounds,
                "dirty-rounds",
            ),
            // The last pages and blocks, sent paused (or the state, when none are left).
            (
                Trigger {
                    kinds: &[
                        kind::PAGES,
                        kind::ZERO_PAGES,
                        kind::BLOCKS,
                        kind::ZERO_BLOCKS,
                        kind::BLOCK_DELTAS,
                        kind::STATE,
                    ],
                    nth: 1,
                    phases: Some((client(&sock), &["stop-and-copy", "device-state"])),
                },
                precopy,
                "stop-and-copy",
            ),
        ]);
    }
    cases.push((at(&[kind::STATE], 1), precopy, "device-state"));
    const ORDER: [&str; 5] = [
        "handshake",
        "first-pass",
        "dirty-rounds",
        "stop-and-copy",
        "device-state",
    ];
    let mut checksum = sha256(&disk);
    for (i, (trigger, args, phase)) in cases.into_iter().enumerate() {
        let what = format!("{kind:?}, {fault:?} at {:?} in {phase}", trigger.kinds);
        let dst_disk = dir.join(&format!("dst-{i}.img"));
        empty_like(&disk, &dst_disk);
        let got = source_survives_with(&src, &sock, trigger, fault, args, &[&dst_disk], state);
        let (g, p) = (
            ORDER.iter().position(|x| *x == got),
            ORDER.iter().position(|x| *x == phase),
        );
        assert!(
            g.is_some() && g >= p,
            "{what}: failed in {got}, expected {phase} or later before the switch"
        );
        match kind {
            // The guest goes on writing and verifying its disk here.
            Kind::Live => {
                let pass = last_num(&src.console.lines(), "NOVA-DISK", "pass").unwrap();
                let l = src.console.wait_line(
                    &format!("NOVA-DISK pass={}", pass + 1),
                    Duration::from_secs(30),
                );
                assert_eq!(l.num("errors"), Some(0), "{what}: {}", l.text);
            }
            // Nothing touched the paused VM's disk, and resumed it runs on with it;
            // then it is made ready to move again, as hostd would.
            Kind::Warm | Kind::Cold => {
                assert_eq!(sha256(&disk), checksum, "{what}: the source's disk changed");
                let l = runs_again_with_its_disk(&src, &sock, kind);
                assert_eq!(l.num("errors"), Some(0), "{what}: {}", l.text);
                if kind == Kind::Warm {
                    block_on(client(&sock).pause()).unwrap();
                } else {
                    (src, sock) = reboot_paused(src, &sock, &disk);
                }
                checksum = sha256(&disk);
            }
        }
        std::fs::remove_file(&dst_disk).unwrap();
    }
    // Whatever the guest wrote, the host's blocks and the data past the guest's are
    // as they were.
    let fresh = dir.join("fresh.img");
    source_disk(&fresh);
    let (a, b) = (
        std::fs::read(&fresh).unwrap(),
        std::fs::read(&disk).unwrap(),
    );
    let guest = 16 * 4096..48 * 4096;
    assert!(a[..guest.start] == b[..guest.start] && a[guest.end..] == b[guest.end..]);
    // And it still moves, with its disk.
    let dst_disk = dir.join("dst.img");
    empty_like(&disk, &dst_disk);
    let dst = Destination::start_for(256, 1, &[&dst_disk]);
    let (ok, result, err) = migrate_to(&sock, &dst, &["--mode", "precopy"]);
    assert!(ok, "{result:?} {err}");
    assert_eq!(result.blocks.disks, 1, "{result:?}");
    src.console.wait_exit(Duration::from_secs(30));
    let src_lines = src.console.lines();
    let after = match kind {
        // A cold move boots the guest there: its first pass reads the host's blocks.
        Kind::Cold => {
            let l = dst
                .vm
                .console
                .wait_line("NOVA-DISK pass=1", Duration::from_secs(30));
            assert_eq!(l.num("host_ok"), Some(16), "{}", l.text);
            l
        }
        Kind::Live | Kind::Warm => {
            let pass = last_num(&src_lines, "NOVA-DISK", "pass").unwrap();
            let l = dst.vm.console.wait_line(
                &format!("NOVA-DISK pass={}", pass + 1),
                Duration::from_secs(30),
            );
            let all = joined(&src_lines, &dst.vm.console.lines());
            assert_counter_continuous(&all);
            l
        }
    };
    assert_eq!(after.num("errors"), Some(0), "{}", after.text);
    block_on(client(&dst.sock).pause()).unwrap();
    assert_disk_moved(&disk, &dst_disk);
}

#[test]
fn a_cut_connection_at_any_phase_of_a_live_block_migration_leaves_vm_and_disk_on_the_source() {
    disk_failures_before_the_switch_leave_vm_and_disk_on_the_source(Fault::Cut, Kind::Live);
}

#[test]
fn a_killed_destination_at_any_phase_of_a_live_block_migration_leaves_vm_and_disk_on_the_source() {
    disk_failures_before_the_switch_leave_vm_and_disk_on_the_source(
        Fault::KillDestination,
        Kind::Live,
    );
}

#[test]
fn a_cut_connection_at_any_phase_of_a_warm_migration_leaves_vm_and_disk_on_the_source() {
    disk_failures_before_the_switch_leave_vm_and_disk_on_the_source(Fault::Cut, Kind::Warm);
}

#[test]
fn a_killed_destination_at_any_phase_of_a_warm_migration_leaves_vm_and_disk_on_the_source() {
    disk_failures_before_the_switch_leave_vm_and_disk_on_the_source(
        Fault::KillDestination,
        Kind::Warm,
    );
}

#[test]
fn a_cut_connection_at_any_phase_of_a_cold_migration_leaves_vm_and_disk_on_the_source() {
    disk_failures_before_the_switch_leave_vm_and_disk_on_the_source(Fault::Cut, Kind::Cold);
}

#[test]
fn a_killed_destination_at_any_phase_of_a_cold_migration_leaves_vm_and_disk_on_the_source() {
    disk_failures_before_the_switch_leave_vm_and_disk_on_the_source(
        Fault::KillDestination,
        Kind::Cold,
    );
}

/// A destination that stops answering without closing anything (hung, or behind a
/// network that drops every packet) must not hold the VM: the source gives up after
/// the protocol's peer timeout, in the first pass while the guest runs and at the
/// device state while it is paused, and resumes the VM.
#[test]
fn a_silent_destination_before_the_switch_leaves_the_vm_on_the_source() {
    if !require_kvm() {
        return;
    }
    let (src, sock) = source(WORKLOAD, 256, None);
    let precopy: &[&str] = &["--mode", "precopy"];
    for (kinds, phase) in [
        (&[kind::PAGES][..], "first-pass"),
        (&[kind::STATE][..], "device-state"),
    ] {
        let trigger = Trigger {
            kinds,
            nth: 1,
            phases: None,
        };
        let started = std::time::Instant::now();
        let got = source_survives(&src, &sock, trigger, Fault::Stall, precopy);
        assert_eq!(got, phase);
        let m = block_on(client(&sock).migration()).unwrap();
        let error = m.error.as_deref().unwrap_or("");
        assert!(error.contains("sent and took nothing"), "{m:?}");
        // It waited for the peer timeout, not forever and not less.
        assert!(started.elapsed() >= Duration::from_secs(10), "{m:?}");
    }
}

/// After the Switch the VM is the destination's, whatever happens next. A destination
/// that goes silent then (the Switch lost, or the host hung) leaves the VM paused on
/// the source, as it may be running there, and the migration `unknown` after one peer
/// timeout: not resumed here, and not waiting forever.
#[test]
fn a_destination_silent_after_the_switch_leaves_the_vm_paused_and_the_outcome_unknown() {
    if !require_kvm() {
        return;
    }
    let (src, sock) = source(WORKLOAD, 256, None);
    let dst = Destination::start_for_insecure(256, 1, &[]);
    let trigger = Trigger {
        kinds: &[kind::SWITCH],
        nth: 1,
        phases: None,
    };
    let proxy = Proxy::start(dst.port, dst.vm.console.pid(), trigger, Fault::Stall);
    let started = std::time::Instant::now();
    let (ok, result, err) = migrate(&sock, proxy.port, &["--mode", "precopy"]);
    let took = started.elapsed();
    assert!(!ok, "{result:?} {err}");
    assert_eq!(result.state, MigrationState::Unknown, "{result:?}");
    let error = result.error.as_deref().unwrap_or("");
    assert!(error.contains("sent and took nothing"), "{result:?}");
    // One peer timeout (10 s) after the switch, not two.
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(18),
        "{took:?}"
    );
    let info = block_on(client(&sock).info()).unwrap();
    assert_eq!(info.state, RunState::Paused, "{info:?}");
    let printed = src.console.lines().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(src.console.lines().len(), printed, "the paused VM printed");
}

#[test]
fn a_corrupt_stream_at_any_phase_before_the_switch_leaves_the_vm_on_the_source() {
    failures_before_the_switch_leave_the_vm_on_the_source(Fault::Corrupt);
}

#[test]
fn a_cancelled_migration_leaves_the_vm_running_on_the_source() {
    if !require_kvm() {
        return;
    }
    let (src, sock) = source(WORKLOAD, 256, None);
    let dst = Destination::start_for(256, 1, &[]);
    let vmm = client(&sock);
    let req = MigrationRequest {
        to: format!("tcp:127.0.0.1:{}", dst.port),
        params: MigrationParams {
            mode: MigrationMode::Precopy,
            // Slow enough to be caught in flight.
            bandwidth_mbit: Some(20),
            ..MigrationParams::default()
        },
        peer: dst.peer.clone(),
    };
    let started = block_on(vmm.migrate(&req)).unwrap();
    assert_eq!(
        (started.state, started.mode),
        (MigrationState::Running, MigrationMode::Precopy)
    );
    // One at a time: a second request while it runs is refused.
    let busy = block_on(vmm.migrate(&req)).unwrap_err();
    assert_eq!(busy.status(), Some(409), "{busy}");
    std::thread::sleep(Duration::from_millis(200));
    block_on(vmm.cancel_migration()).unwrap();
    let mut state = MigrationState::Running;
    for _ in 0..100 {
        state = block_on(vmm.migration()).unwrap().state;
        if state != MigrationState::Running {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state, MigrationState::Cancelled);
    src.console.wait_more_ticks(20, Duration::from_secs(20));
}

#[test]
fn compression_shrinks_what_goes_on_the_wire() {
    if !require_kvm() {
        return;
    }
    let mut bytes = Vec::new();
    for c in ["none", "zstd", "lz4"] {
        let (_src, sock) = source("counter,dirty:16:4", 256, None);
        let dst = Destination::start_for(256, 1, &[]);
        let (ok, r, err) = migrate_to(&sock, &dst, &["--mode", "precopy", "--compress", c]);
        assert!(ok, "{r:?} {err}");
        if c != "none" {
            assert!(r.pages.compressed > 0, "{r:?}");
        }
        bytes.push(r.bytes_sent);
    }
    // The dirty pattern leaves most of each page zero: both codecs shrink it a lot.
    assert!(
        bytes[1] * 3 < bytes[0],
        "zstd {} vs none {}",
        bytes[1],
        bytes[0]
    );
    assert!(
        bytes[2] * 3 < bytes[0],
        "lz4 {} vs none {}",
        bytes[2],
        bytes[0]
    );
}

#[test]
fn a_bandwidth_cap_slows_the_migration_to_the_cap() {
    if !require_kvm() {
        return;
    }
    // About 17 MB of memory to move.
    let (_src, sock) = source("counter,dirty:16:4", 256, None);
    let dst = Destination::start_for(256, 1, &[]);
    let (ok, r, err) = migrate_to(
        &sock,
        &dst,
        &["--mode", "precopy", "--bandwidth-mbit", "100"],
    );
    assert!(ok, "{r:?} {err}");
    let floor_ms = r.bytes_sent as f64 * 8.0 / 100e6 * 1000.0;
    assert!(
        r.total_ms >= floor_ms * 0.9,
        "{r:?}: faster than 100 Mbit/s allows ({floor_ms:.0} ms)"
    );
    // The dirty rounds keep to the cap; uncapped, the same guest's rounds run several
    // times faster. (Rounds, not totals: a loaded machine can stall a whole migration.)
    let round_mbit = |r: &MigrationStatus| -> Vec<f64> {
        r.round_log.iter().map(|x| x.bandwidth_mbit).collect()
    };
    // (The cap is kept over the whole migration, so a short round after a pause, such
    // as a flush, may catch up a little; the first and longest round shows the rate.)
    assert!(round_mbit(&r).first().is_some_and(|m| *m < 120.0), "{r:?}");
    let (_src2, sock2) = source("counter,dirty:16:4", 256, None);
    let dst2 = Destination::start_for(256, 1, &[]);
    // (A 1 ms target makes sure it copies at least one round after the first pass.)
    let (ok, r2, _) = migrate_to(&sock2, &dst2, &["--mode", "precopy", "--downtime-ms", "1"]);
    assert!(ok);
    assert!(
        round_mbit(&r2).iter().any(|m| *m > 400.0),
        "{r2:?} vs {r:?}"
    );
}

#[test]
fn several_connections_carry_memory_in_parallel() {
    if !require_kvm() {
        return;
    }
    let (mut src, sock) = source(WORKLOAD, 256, None);
    let dst = Destination::start_for(256, 1, &[]);
    let (ok, r, err) = migrate_to(&sock, &dst, &["--mode", "precopy", "--connections", "4"]);
    assert!(ok, "{r:?} {err}");
    src.console.wait_exit(Duration::from_secs(10));
    let accepted = dst
        .vm
        .console
        .stderr()
        .matches("migration data connection")
        .count();
    assert_eq!(
        accepted,
        3,
        "the destination saw {accepted} data connections:\n{}",
        dst.vm.console.stderr()
    );
    let src_lines = src.console.lines();
    let pass = last_num(&src_lines, "NOVA-DIRTY", "pass").unwrap();
    dst.vm.console.wait_line(
        &format!("NOVA-DIRTY pass={}", pass + 2),
        Duration::from_secs(30),
    );
    let all = joined(&src_lines, &dst.vm.console.lines());
    assert_counter_continuous(&all);
    assert_eq!(last_num(&all, "NOVA-DIRTY", "errors"), Some(0));
}

#[test]
fn the_downtime_target_decides_when_precopy_stops() {
    if !require_kvm() {
        return;
    }
    let mut rounds = Vec::new();
    for target in ["1", "2000"] {
        let (_src, sock) = source(WORKLOAD, 256, None);
        // Plaintext: the decision depends on the measured bandwidth, and TLS in a
        // debug build on a loaded machine can make a 2 s target look tight.
        let dst = Destination::start_for_insecure(256, 1, &[]);
        let (ok, r, err) = migrate(
            &sock,
            dst.port,
            &["--mode", "precopy", "--downtime-ms", target],
        );
        assert!(ok, "{r:?} {err}");
        rounds.push(r.rounds);
    }
    // A generous target stops after the first pass; a tight one keeps copying rounds.
    assert_eq!(rounds[1], 0, "{rounds:?}");
    assert!(rounds[0] > rounds[1], "{rounds:?}");
}

/// Cutting the stream, or killing the destination, while disk blocks travel leaves
/// the VM running on the source with its disk as the guest keeps writing it: the
/// source only ever reads its disk, and the guest's checksums go on verifying.
#[test]
fn a_failure_while_disk_blocks_travel_leaves_the_vm_and_its_disk_on_the_source() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("disk.img");
    source_disk(&disk);
    let (src, sock) = source("counter,disk", 256, Some(&disk));
    src.console
        .wait_line("NOVA-DISK pass=1", Duration::from_secs(30));
    for fault in [Fault::Cut, Fault::KillDestination] {
        let dst_disk = dir.join(&format!("dst-{fault:?}.img"));
        empty_like(&disk, &dst_disk);
        // Plaintext: the proxy reads the stream to strike at the first blocks.
        let dst = Destination::start_for_insecure(256, 1, &[&dst_disk]);
        // The first pass's first batch of blocks (the host's blocks are always there).
        let trigger = Trigger {
            kinds: &[kind::BLOCKS],
            nth: 1,
            phases: None,
        };
        let proxy = Proxy::start(dst.port, dst.vm.console.pid(), trigger, fault);
        let (ok, result, err) = migrate(&sock, proxy.port, &["--mode", "precopy"]);
        assert!(
            proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
            "{fault:?}: never fired: {result:?} {err}"
        );
        assert!(!ok, "{fault:?}: {result:?}");
        assert_eq!(result.state, MigrationState::Failed, "{result:?}");
        let info = block_on(client(&sock).info()).unwrap();
        assert_eq!(info.state, RunState::Running, "{info:?}");
        // The guest keeps verifying what it writes on its (source) disk.
        let pass = last_num(&src.console.lines(), "NOVA-DISK", "pass").unwrap();
        let l = src.console.wait_line(
            &format!("NOVA-DISK pass={}", pass + 1),
            Duration::from_secs(30),
        );
        assert_eq!(l.num("errors"), Some(0), "{}", l.text);
    }
    // The host's blocks and the data past the guest's are as they were.
    let fresh = dir.join("fresh.img");
    source_disk(&fresh);
    let (a, b) = (
        std::fs::read(&fresh).unwrap(),
        std::fs::read(&disk).unwrap(),
    );
    let guest = 16 * 4096..48 * 4096;
    assert!(a[..guest.start] == b[..guest.start] && a[guest.end..] == b[guest.end..]);
}

/// Blocks the guest writes again after they went travel as XOR deltas against the
/// copy sent before, when that encodes smaller (here much smaller: the test guest's
/// rewrite of a block differs from the last one by one repeated word), and XORed into
/// the destination's copy they make the same disk: the guest verifies every block.
#[test]
fn rewritten_disk_blocks_travel_as_deltas_and_arrive_whole() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("disk.img");
    source_disk(&disk);
    let dst_disk = dir.join("dst.img");
    empty_like(&disk, &dst_disk);
    let (mut src, sock) = source("counter,dirty:2:max,disk", 256, Some(&disk));
    src.console
        .wait_line("NOVA-DISK pass=2", Duration::from_secs(30));
    let dst = Destination::start_for(256, 1, &[&dst_disk]);
    // Memory the guest keeps rewriting, a tight downtime target and a cap keep rounds
    // going while the guest rewrites its blocks, so that blocks are sent again.
    let (ok, result, err) = migrate_to(
        &sock,
        &dst,
        &[
            "--mode",
            "precopy",
            "--downtime-ms",
            "1",
            "--bandwidth-mbit",
            "50",
        ],
    );
    assert!(ok, "{result:?} {err}");
    let b = &result.blocks;
    eprintln!(
        "block deltas: {} blocks in {} bytes ({:.1}x smaller), {} rounds, {} bytes in all",
        b.delta,
        b.delta_bytes,
        (b.delta * 4096) as f64 / b.delta_bytes.max(1) as f64,
        result.rounds,
        result.bytes_sent
    );
    assert!(b.delta > 0, "no block went as a delta: {result:?}");
    assert!(
        b.delta_bytes * 10 < b.delta * 4096,
        "deltas at least 10x smaller than the blocks: {b:?}"
    );
    src.console.wait_exit(Duration::from_secs(10));
    let src_lines = src.console.lines();
    let pass = last_num(&src_lines, "NOVA-DISK", "pass").unwrap();
    let l = dst.vm.console.wait_line(
        &format!("NOVA-DISK pass={}", pass + 1),
        Duration::from_secs(30),
    );
    assert_eq!(l.num("errors"), Some(0), "{}", l.text);
    block_on(client(&dst.sock).pause()).unwrap();
    assert_disk_moved(&disk, &dst_disk);
}
