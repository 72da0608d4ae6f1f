//! Crafted snapshots against `nova-vmm run --restore` (issue 12, attack 6): a diff
//! snapshot that is its own parent (a stack overflow, SIGABRT), one whose parent lies
//! outside its snapshots' directory, and a state whose length field is 2^64-21 (an
//! overflow panic). Each is now refused with its reason and exit code 2.

use std::path::Path;
use std::time::Duration;

use nova_tests::vmm::{ctl, VmmCmd};
use nova_tests::{require_kvm, TempDir};

fn snapshot(sock: &Path, dir: &Path, diff: bool) {
    let mut args = vec!["snapshot", "create", "--path", dir.to_str().unwrap()];
    if diff {
        args.push("--diff");
    }
    let (status, _, err) = ctl(sock, &args);
    assert!(status.success(), "{err}");
}

/// A running counter guest, with a full snapshot in `full` and a diff in `diff`.
fn full_and_diff(full: &Path, diff: &Path) -> nova_tests::vmm::Vm {
    let (cmd, sock) = VmmCmd::testguest("counter")
        .args(["--mem-mib", "64"])
        .with_api();
    let vm = cmd.spawn();
    vm.console
        .wait_line("NOVA-TICK 10", Duration::from_secs(30));
    snapshot(&sock, full, false);
    vm.console.wait_more_ticks(5, Duration::from_secs(20));
    snapshot(&sock, diff, true);
    vm
}

/// `nova-vmm run --restore dir`: its exit code and stderr.
fn restore(dir: &Path) -> (Option<i32>, String) {
    let mut vm = VmmCmd::raw().arg("--restore").arg(dir).spawn();
    let st = vm.console.wait_exit(Duration::from_secs(30));
    (st.code(), vm.console.stderr())
}

#[test]
fn a_diff_snapshot_that_is_its_own_parent_is_refused_not_a_stack_overflow() {
    if !require_kvm() {
        return;
    }
    let (full, diff) = (TempDir::new(), TempDir::new());
    let mut vm = full_and_diff(full.path(), diff.path());
    vm.console.kill();
    // The diff names `full` as its parent: in `full`'s place, it names itself.
    std::fs::copy(diff.join("state"), full.join("state")).unwrap();
    let (code, err) = restore(full.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("loops"), "{err}");
}

#[test]
fn a_diff_snapshot_whose_parent_is_outside_its_directory_is_refused() {
    if !require_kvm() {
        return;
    }
    let (a, b) = (TempDir::new(), TempDir::new());
    let (full, diff) = (a.join("full"), b.join("diff"));
    let mut vm = full_and_diff(&full, &diff);
    vm.console.kill();
    let (code, err) = restore(&diff);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("outside"), "{err}");
}

#[test]
fn a_snapshot_state_length_of_two_to_the_64_minus_21_is_refused_not_a_panic() {
    if !require_kvm() {
        return;
    }
    let (full, diff) = (TempDir::new(), TempDir::new());
    let mut vm = full_and_diff(full.path(), diff.path());
    vm.console.kill();
    let path = full.join("state");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12..20].copy_from_slice(&(u64::MAX - 20).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (code, err) = restore(full.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("truncated"), "{err}");
}
