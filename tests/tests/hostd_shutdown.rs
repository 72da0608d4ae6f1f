//! hostd's `--vms-at-exit`: what a stop request (SIGTERM) does to the VMs. `stop`
//! (what the host image's nova-init passes as the machine powers off) stops every VM
//! before hostd exits; the default, `keep`, leaves them running for the next hostd;
//! `migrate` has the controller drain the host (its VMs live-migrate to another host,
//! their guests never restart) before hostd exits.

use std::time::{Duration, Instant};

use nova_controller_api::{HostState, VmSpec};
use nova_hostd_api::VmState;
use nova_tests::controller::{block_on, wait_for, Controller, Opts as ControllerOpts};
use nova_tests::hostd::{guest, is_vmm, testguest, Bridged, Hostd, Opts};
use nova_tests::net::require_netns;
use nova_tests::{require_kvm, TempDir};

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

/// The `NOVA-TICK` sequence numbers in VM `id`'s console on `h`.
fn ticks(h: &Hostd, id: &str) -> Vec<u64> {
    h.wait(h.api().console(id, 10_000))
        .map(|c| {
            c.lines
                .iter()
                .filter_map(|l| l.strip_prefix("NOVA-TICK ")?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn vms_at_exit_migrate_moves_running_vms_to_another_host_before_hostd_exits() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let net = Bridged::new();
    let c = Controller::start(
        d.path(),
        ControllerOpts {
            ip: Some(net.root_ip()),
            ..Default::default()
        },
    );
    let join = c.dir.join("join.token").display().to_string();
    let mut extra = vec![
        "--controller".to_string(),
        c.url.clone(),
        "--join-token-file".into(),
        join,
    ];
    let b_host = net.hostd(1, &extra);
    extra.extend(["--vms-at-exit".to_string(), "migrate".into()]);
    let a_host = net.hostd(0, &extra);
    let a = a_host.ok(a_host.api().host()).host_id;
    let b = b_host.ok(b_host.api().host()).host_id;
    wait_for(30, "both hosts to be Ready", || {
        let hosts = block_on(c.api.hosts()).ok()?;
        let ready = hosts.iter().filter(|h| h.state == HostState::Ready).count();
        (ready == 2).then_some(())
    });
    // Both VMs on A: B is cordoned while they are placed.
    block_on(c.api.cordon(&b)).unwrap();
    let ids: Vec<String> = ["mig-1", "mig-2"]
        .iter()
        .map(|name| {
            let spec = VmSpec {
                cmdline: Some("nova.workload=counter".into()),
                mem_mib: 64,
                ..VmSpec::new(*name, testguest().display().to_string())
            };
            block_on(c.api.create_vm(&spec, None)).unwrap().id
        })
        .collect();
    let mut last_on_a = vec![];
    for id in &ids {
        wait_for(60, "the VM to tick on A", || {
            let t = ticks(&a_host, id);
            (t.len() > 3).then_some(())
        });
        last_on_a.push(*ticks(&a_host, id).last().unwrap());
    }
    block_on(c.api.uncordon(&b)).unwrap();

    terminate(&a_host);

    let log = a_host.stderr();
    assert!(
        log.contains("asked the controller to drain this host"),
        "{log}"
    );
    for (id, last) in ids.iter().zip(&last_on_a) {
        // The controller has it on B, B runs it, and A let go of it.
        let v = block_on(c.api.vm(id)).unwrap();
        assert_eq!(
            v.host.as_deref(),
            Some(b.as_str()),
            "{v:?}\nA's log:\n{log}"
        );
        let on_b = b_host.ok(b_host.api().vm(id));
        assert_eq!(on_b.state, VmState::Running, "{on_b:?}");
        // The same guest, never restarted: its counter goes on from where it was on A,
        // one by one.
        let t = wait_for(30, "ticks on B", || {
            let t = ticks(&b_host, id);
            (t.len() > 3).then_some(t)
        });
        assert!(
            t[0] > *last,
            "{id}: the counter on B starts at {} but had reached {last} on A (a reboot?)",
            t[0]
        );
        for w in t.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{id}: the counter on B jumped: {t:?}");
        }
    }
    assert!(
        !log.contains("VM stopped for the host's stop"),
        "nothing was left to stop: {log}"
    );
    // The drained host stays cordoned in the controller; no VMM of A's remains.
    assert!(block_on(c.api.host(&a)).unwrap().cordoned);
    for p in a_host.vmm_pids() {
        assert!(!is_vmm(p), "VMM {p} of A outlived its hostd");
    }
}
