//! The VMM's console file is bounded (`--console-max-bytes`): past its cap, its
//! content moves to `<file>.1` (one rotated file) and it starts again; the two files
//! together hold the latest output with no byte lost at the seams, whether or not
//! anyone is attached. A cap below the minimum is refused, naming the field.

use std::time::Duration;

use nova_tests::require_kvm;
use nova_tests::vmm::VmmCmd;
use nova_tests::wait_for;

/// The `NOVA-TICK` numbers of a console file, in order.
fn ticks(bytes: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("NOVA-TICK ")?.trim().parse().ok())
        .collect()
}

#[test]
fn the_console_file_rotates_at_its_cap_into_one_older_file_without_losing_a_line() {
    if !require_kvm() {
        return;
    }
    let cmd = VmmCmd::testguest("counter");
    let log = cmd.dir.join("console.log");
    let old = cmd.dir.join("console.log.1");
    let mut vm = cmd
        .arg("--console")
        .arg(&log)
        .args(["--console-max-bytes", "4096"])
        .spawn();
    // A tick a millisecond, ~15 bytes each: a rotation every few hundred ms. Wait
    // until the older file holds output from after a first rotation.
    wait_for(30, "two rotations", || {
        let t = ticks(&std::fs::read(&old).ok()?);
        (t.first().copied()? > 0).then_some(())
    });
    vm.console.kill();
    let (cur, prev) = (std::fs::read(&log).unwrap(), std::fs::read(&old).unwrap());
    // The cap holds (plus at most one write, which is a line or less here).
    assert!(cur.len() <= 4096 + 64, "console.log is {} bytes", cur.len());
    assert!(
        prev.len() <= 4096 + 64,
        "console.log.1 is {} bytes",
        prev.len()
    );
    let (prev, cur) = (ticks(&prev), ticks(&cur));
    for file in [&prev, &cur] {
        for w in file.windows(2) {
            assert_eq!(w[1], w[0] + 1, "a tick was lost or repeated in a file");
        }
    }
    // Across the seam the current file continues the older one. The kill may land
    // inside a rotation, after the copy and before the truncate: then both files
    // hold the same lines (a repeat, never a loss).
    let killed_mid_rotation = prev.last().is_some() && prev.last() == cur.last();
    if let (Some(last), Some(first), false) = (prev.last(), cur.first(), killed_mid_rotation) {
        assert_eq!(*first, last + 1, "a tick was lost at the seam");
    }
    assert!(prev.len() + cur.len() > 100, "{prev:?} {cur:?}");
}

#[test]
fn a_console_cap_below_the_minimum_is_refused_naming_it() {
    let cmd = VmmCmd::testguest("counter");
    let log = cmd.dir.join("console.log");
    let mut vm = cmd
        .arg("--console")
        .arg(&log)
        .args(["--console-max-bytes", "100"])
        .spawn();
    let status = vm.console.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let err = vm.console.stderr();
    assert!(err.contains("console_max_bytes"), "{err}");
}
