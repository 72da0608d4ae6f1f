//! Snapshots: full and diff, restored eagerly, lazily or as copy-on-write clones; the
//! guest continues where it was; a corrupt or foreign snapshot is refused by reason.

use std::time::Duration;

use nova_tests::vmm::{ctl, ticks, VmmCmd};
use nova_tests::{require_kvm, TempDir};
use nova_vmm_api::SnapshotReport;

/// `nova-vmm ctl snapshot create`, and the report it printed.
fn snapshot(sock: &std::path::Path, dir: &std::path::Path, diff: bool) -> SnapshotReport {
    let mut args = vec!["snapshot", "create", "--path", dir.to_str().unwrap()];
    if diff {
        args.push("--diff");
    }
    let (status, out, err) = ctl(sock, &args);
    assert!(status.success(), "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

/// A 256 MiB guest counting and dirtying `mib` MiB as fast as it can, once it has
/// done a dirty pass (so a restore of it can check every page): it and its API socket.
fn dirtying_guest(mib: u32) -> (nova_tests::vmm::Vm, std::path::PathBuf) {
    let (cmd, sock) = VmmCmd::testguest(&format!("counter,dirty:{mib}:max"))
        .args(["--mem-mib", "256"])
        .with_api();
    let vm = cmd.spawn();
    vm.console
        .wait_line("NOVA-DIRTY pass=2", Duration::from_secs(30));
    (vm, sock)
}

/// Boots a counter + dirty guest and snapshots it once it has done a dirty pass.
fn guest_with_snapshot(dir: &std::path::Path) -> (nova_tests::vmm::Vm, std::path::PathBuf, u64) {
    let (vm, sock) = dirtying_guest(8);
    snapshot(&sock, dir, false);
    let tick = ticks(&vm.console.lines()).last().unwrap().0;
    (vm, sock, tick)
}

fn restored_guest_continues(mode: Option<&str>) {
    if !require_kvm() {
        return;
    }
    let snap = TempDir::new();
    let (_vm, _sock, tick_at_snapshot) = guest_with_snapshot(snap.path());
    let mut cmd = VmmCmd::raw().arg("--restore").arg(snap.path());
    if let Some(m) = mode {
        cmd = cmd.arg(m);
    }
    let restored = cmd.spawn();
    let first = restored.console.wait_for(Duration::from_secs(20), |l| {
        l.text.starts_with("NOVA-TICK ")
    });
    let first = first.text[10..].parse::<u64>().unwrap();
    // The snapshot was taken just after `tick_at_snapshot`: the restored guest goes on from there.
    assert!(
        first > 0 && first <= tick_at_snapshot + 20,
        "restored at tick {first}, snapshot near {tick_at_snapshot}"
    );
    let pass = restored
        .console
        .wait_line("NOVA-DIRTY", Duration::from_secs(30))
        .num("pass")
        .unwrap();
    let later = restored.console.wait_line(
        &format!("NOVA-DIRTY pass={}", pass + 1),
        Duration::from_secs(30),
    );
    assert_eq!(
        later.num("errors"),
        Some(0),
        "restored memory differs: {}",
        later.text
    );
    let t = ticks(&restored.console.lines());
    assert!(
        t.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "counter skipped after restore"
    );
}

#[test]
fn an_eagerly_restored_snapshot_continues_where_it_was() {
    restored_guest_continues(None);
}

#[test]
fn a_lazily_restored_snapshot_continues_where_it_was() {
    restored_guest_continues(Some("--lazy"));
}

#[test]
fn clones_of_one_snapshot_run_side_by_side_sharing_its_memory_file() {
    if !require_kvm() {
        return;
    }
    let snap = TempDir::new();
    let _origin = guest_with_snapshot(snap.path());
    let a = VmmCmd::raw()
        .arg("--restore")
        .arg(snap.path())
        .arg("--clone")
        .spawn();
    let b = VmmCmd::raw()
        .arg("--restore")
        .arg(snap.path())
        .arg("--clone")
        .spawn();
    for vm in [&a, &b] {
        let pass = vm
            .console
            .wait_line("NOVA-DIRTY", Duration::from_secs(30))
            .num("pass")
            .unwrap();
        let l = vm.console.wait_line(
            &format!("NOVA-DIRTY pass={}", pass + 1),
            Duration::from_secs(30),
        );
        assert_eq!(l.num("errors"), Some(0));
        // Guest RAM is the snapshot's memory file, mapped private (copy-on-write).
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", vm.console.pid())).unwrap();
        let mem = snap.join("memory");
        let line = maps
            .lines()
            .find(|l| l.ends_with(mem.to_str().unwrap()))
            .expect("memory file mapped");
        assert!(
            line.split_whitespace().nth(1).unwrap().ends_with('p'),
            "not a private mapping: {line}"
        );
    }
}

#[test]
fn a_diff_snapshot_holds_only_what_changed_and_restores() {
    if !require_kvm() {
        return;
    }
    let (full, diff) = (TempDir::new(), TempDir::new());
    let (_vm, sock) = dirtying_guest(4);
    let f = snapshot(&sock, full.path(), false);
    std::thread::sleep(Duration::from_millis(300));
    let d = snapshot(&sock, diff.path(), true);
    let (fp, dp) = (f.pages_written, d.pages_written);
    assert!(d.diff && !f.diff);
    // The counter and the 4 MiB dirty buffer changed; the guest image did not.
    assert!(dp > 0 && dp < fp, "diff {dp} pages vs full {fp}");
    restores_whole(diff.path());
    // Lazy or clone restore needs the whole memory in one file.
    let out = std::process::Command::new(nova_tests::binary("nova-vmm"))
        .args(["run", "--lazy", "--restore"])
        .arg(diff.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a full snapshot"));
}

/// The dirty workload of a guest restored from `dir` checks every page of its buffer
/// on its next pass: it finds them as it wrote them.
fn restores_whole(dir: &std::path::Path) {
    let restored = VmmCmd::raw().arg("--restore").arg(dir).spawn();
    let pass = restored
        .console
        .wait_line("NOVA-DIRTY", Duration::from_secs(30))
        .num("pass")
        .unwrap();
    let l = restored.console.wait_line(
        &format!("NOVA-DIRTY pass={}", pass + 1),
        Duration::from_secs(30),
    );
    assert_eq!(l.num("errors"), Some(0), "restored from {}", dir.display());
}

#[test]
fn a_backups_memory_restores_and_leaves_the_vms_diff_snapshots_counting_from_their_own() {
    if !require_kvm() {
        return;
    }
    let (full, diff, staging) = (TempDir::new(), TempDir::new(), TempDir::new());
    let (_vm, sock) = dirtying_guest(4);
    snapshot(&sock, full.path(), false);
    std::thread::sleep(Duration::from_millis(300));
    // A backup checkpoint that writes the guest's memory too, between the two.
    let req = nova_vmm_api::CheckpointRequest {
        checkpoint: "b-1".into(),
        previous: None,
        staging_dir: staging.path().to_path_buf(),
        full: false,
        memory_dir: Some(staging.join("vm")),
    };
    let vmm = nova_tests::vmm::client(&sock);
    nova_http::blocking::block_on(vmm.backup_checkpoint(&req)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let d = snapshot(&sock, diff.path(), true);
    assert!(d.diff);
    // The diff holds what changed since the full snapshot, the backup's writing
    // notwithstanding; and the backup's memory is a snapshot of its own.
    restores_whole(diff.path());
    restores_whole(&staging.join("vm"));
}

#[test]
fn a_diff_without_a_full_snapshot_first_is_refused() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter").with_api();
    let vm = cmd.spawn();
    vm.booted();
    let dir = TempDir::new();
    let (status, _, err) = ctl(
        &sock,
        &[
            "snapshot",
            "create",
            "--path",
            dir.path().to_str().unwrap(),
            "--diff",
        ],
    );
    assert!(!status.success());
    assert!(err.contains("full snapshot"), "{err}");
}

#[test]
fn snapshot_size_follows_what_the_guest_touched_not_its_memory() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter")
        .args(["--mem-mib", "4096"])
        .with_api();
    let vm = cmd.spawn();
    vm.console
        .wait_line("NOVA-TICK 20", Duration::from_secs(20));
    let dir = TempDir::new();
    let r = snapshot(&sock, dir.path(), false);
    assert!(r.bytes_written < 4 << 20, "{r:?}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("memory")).unwrap();
    assert_eq!(
        meta.len(),
        4096 << 20,
        "the memory file has the guest's size"
    );
    assert!(
        meta.blocks() * 512 < 8 << 20,
        "but is sparse: {} bytes allocated",
        meta.blocks() * 512
    );
}

#[test]
fn a_corrupt_or_foreign_snapshot_is_refused_with_the_reason() {
    if !require_kvm() {
        return;
    }
    let snap = TempDir::new();
    let _origin = guest_with_snapshot(snap.path());
    let state = snap.join("state");
    let good = std::fs::read(&state).unwrap();
    let run = || {
        let out = std::process::Command::new(nova_tests::binary("nova-vmm"))
            .args(["run", "--restore"])
            .arg(snap.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut flipped = good.clone();
    flipped[100] ^= 0x10;
    std::fs::write(&state, &flipped).unwrap();
    assert!(run().contains("checksum"), "a corrupt snapshot must say so");
    let mut v9 = good.clone();
    v9[8] = 9;
    std::fs::write(&state, &v9).unwrap();
    assert!(run().contains("version 9 is not supported"));
    std::fs::write(&state, b"not a snapshot").unwrap();
    assert!(run().contains("bad magic"));
    std::fs::write(&state, &good).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(snap.join("memory"))
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert!(run().contains("memory file is 4096 bytes"));
}
