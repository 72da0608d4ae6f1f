//! hostd's `--vms-at-exit`: what a stop request (SIGTERM) does to the VMs. `stop`
//! (what the host image's nova-init passes as the machine powers off) stops every VM
//! before hostd exits; the default, `keep`, leaves them running for the next hostd.

use std::time::{Duration, Instant};

use nova_hostd_api::VmState;
use nova_tests::hostd::{guest, is_vmm, Hostd, Opts};
use nova_tests::require_kvm;

const BOOT: Duration = Duration::from_secs(30);

/// SIGTERMs hostd and waits (up to 60 s) until it has exited.
fn terminate(h: &Hostd) {
    let pid = h.pid();
    // SAFETY: kill(2) on the hostd this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie its Console has not reaped yet.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "hostd did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn vms_at_exit_stop_stops_every_vm_before_hostd_exits() {
    if !require_kvm() {
        return;
    }
    let mut h = Hostd::start(Opts {
        args: vec!["--vms-at-exit".into(), "stop".into()],
        ..Default::default()
    });
    let mut pids = vec![];
    for id in ["s1", "s2"] {
        let vm = h.create_vm(&guest(id, "counter"));
        h.wait_console(id, "NOVA-TICK", BOOT);
        pids.push(vm.pid.unwrap());
    }
    terminate(&h);
    for p in &pids {
        assert!(!is_vmm(*p), "VMM {p} outlived hostd --vms-at-exit stop");
    }
    let log = h.stderr();
    assert!(log.contains("its VMs first"), "{log}");
    assert_eq!(
        log.matches("VM stopped for the host's stop").count(),
        2,
        "{log}"
    );
    // The next hostd finds them stopped (not crashed: they were stopped on purpose).
    h.restart();
    for id in ["s1", "s2"] {
        assert_eq!(h.ok(h.api().vm(id)).state, VmState::Stopped);
    }
}

#[test]
fn vms_at_exit_keep_is_the_default_and_leaves_vms_running() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let vm = h.create_vm(&guest("k1", "counter"));
    h.wait_console("k1", "NOVA-TICK", BOOT);
    terminate(&h);
    let pid = vm.pid.unwrap();
    assert!(is_vmm(pid), "the VM stopped with hostd by default");
    assert!(h.stderr().contains("VMs keep running"), "{}", h.stderr());
    nova_tests::hostd::kill_vmms_under(&h.data());
}
