//! nova-hostd end to end: VMs booted, watched, stopped and deleted through the API;
//! hostd killed and restarted under running VMs; crashes reported, restarts by policy;
//! the metrics a monitoring system scrapes.

use std::time::Duration;

use nova_hostd_api::{RestartPolicy, RestoreRequest, SnapshotRequest, VmState};
use nova_tests::hostd::{guest, is_vmm, Exposition, Hostd, Opts};
use nova_tests::require_kvm;

const BOOT: Duration = Duration::from_secs(30);

#[test]
fn hostd_boots_a_vm_and_serves_its_console() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let api = h.api();
    let vm = h.create_vm(&guest("web-1", "counter"));
    assert_eq!(vm.state, VmState::Running, "{vm:?}");
    assert!(
        vm.spec.kernel.starts_with("sha256:"),
        "kernel went through the image cache: {vm:?}"
    );
    h.wait_console("web-1", "NOVA-BOOTED", BOOT);
    h.wait_console("web-1", "NOVA-TICK", BOOT);

    let vm = h.ok(api.vm("web-1"));
    assert!(
        matches!(vm.kvm.as_deref(), Some("pvm" | "hardware")),
        "{vm:?}"
    );
    assert!(vm.counters["vcpu_exits"] > 0, "{vm:?}");
    let pid = vm.pid.unwrap();
    assert!(is_vmm(pid));
    // The console log is the VMM's own file in the VM's directory.
    let log = std::fs::read_to_string(h.data().join("vms/web-1/console.log")).unwrap();
    assert!(log.starts_with("NOVA-BOOTED"), "{log:.200}");

    assert_eq!(h.ok(api.vms()).vms.len(), 1);
    let host = h.ok(api.host());
    assert_eq!(
        (host.allocated.mem_mib, host.allocated.vcpus),
        (64, 1),
        "{host:?}"
    );

    let paused = h.ok(api.pause("web-1"));
    assert_eq!(paused.state, VmState::Paused);
    let resumed = h.ok(api.resume("web-1"));
    assert_eq!(resumed.state, VmState::Running);

    let stopped = h.ok(api.stop("web-1", false));
    assert_eq!(stopped.state, VmState::Stopped, "{stopped:?}");
    assert!(!is_vmm(pid), "the VMM is gone after stop");
    assert_eq!(
        h.ok(api.host()).allocated.mem_mib,
        0,
        "a stopped VM holds no memory"
    );

    // Started again: a new VMM, same VM.
    let again = h.ok(api.start("web-1"));
    assert_eq!(again.state, VmState::Running, "{again:?}");
    let pid2 = again.pid.unwrap();
    assert_ne!(pid, pid2);

    h.ok(api.delete("web-1"));
    assert!(!is_vmm(pid2));
    assert!(
        !h.data().join("vms/web-1").exists(),
        "the VM's directory is removed"
    );
    let (s, _) = h.refused(api.vm("web-1"));
    assert_eq!(s, 404);
}

#[test]
fn a_monitoring_scrape_finds_every_vm_metric_named_by_the_rules() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(&guest("m-1", "counter"));
    h.wait_console("m-1", "NOVA-TICK", BOOT);
    let text = h.ok(h.api().metrics());
    let e = Exposition::parse(&text);
    // Every sample belongs to a family with a TYPE line, and the names follow the
    // rules: counters end in _total, units are in the names.
    for s in &e.samples {
        let (family, kind) = e
            .family_of(&s.name)
            .unwrap_or_else(|| panic!("{} has no TYPE line:\n{text}", s.name));
        match kind {
            "counter" => assert!(s.name.ends_with("_total"), "{}", s.name),
            "gauge" => assert!(!s.name.ends_with("_total"), "gauge {}", s.name),
            "histogram" => {}
            other => panic!("{family}: unexpected type {other}"),
        }
        assert!(
            !s.name.contains("_mib") && !s.name.ends_with("_ms"),
            "{}",
            s.name
        );
    }
    let t = |f: &str| e.types.get(f).map(String::as_str);
    assert_eq!(t("nova_vm_vcpu_exits"), Some("counter"));
    assert_eq!(t("nova_vm_console_bytes"), Some("counter"));
    assert_eq!(t("nova_vm_memory_bytes"), Some("gauge"));
    assert_eq!(t("nova_vm_uptime_seconds"), Some("gauge"));
    assert_eq!(t("nova_vm_process_cpu_seconds"), Some("counter"));
    assert_eq!(t("nova_host_allocated_memory_bytes"), Some("gauge"));
    assert_eq!(t("nova_host_migrations"), Some("counter"));
    assert_eq!(t("nova_host_migration_downtime_seconds"), Some("histogram"));
    let vm = [("vm", "m-1")];
    assert_eq!(
        e.value(
            "nova_vm_state",
            &[("vm", "m-1"), ("name", "m-1"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert!(e.value("nova_vm_vcpu_exits_total", &vm).unwrap() > 0.0);
    assert!(e.value("nova_vm_console_bytes_total", &vm).unwrap() > 0.0);
    assert_eq!(e.value("nova_vm_memory_bytes", &vm), Some(64.0 * 1048576.0));
    assert_eq!(
        e.value("nova_host_allocated_memory_bytes", &[]),
        Some(64.0 * 1048576.0)
    );
}

#[test]
fn vms_survive_hostd_restart_and_are_reattached() {
    if !require_kvm() {
        return;
    }
    let mut h = Hostd::start(Opts::default());
    for id in ["a", "b"] {
        h.create_vm(&guest(id, "counter"));
        h.wait_console(id, "NOVA-TICK", BOOT);
    }
    let before: Vec<u32> = ["a", "b"]
        .iter()
        .map(|id| h.ok(h.api().vm(id)).pid.unwrap())
        .collect();

    h.kill();
    // hostd is gone; the guests keep running (their consoles keep growing).
    let console = h.data().join("vms/a/console.log");
    let len0 = std::fs::metadata(&console).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::metadata(&console).unwrap().len() > len0,
        "the guest kept running without hostd"
    );
    for &p in &before {
        assert!(is_vmm(p), "VMM {p} died with hostd");
    }

    h.restart();
    for (id, pid) in ["a", "b"].iter().zip(&before) {
        let vm = h.ok(h.api().vm(id));
        assert_eq!(vm.state, VmState::Running, "{vm:?}");
        assert_eq!(vm.pid, Some(*pid), "the same VMM was taken back");
        assert!(vm.counters["vcpu_exits"] > 0, "its API answers: {vm:?}");
    }
    assert!(h.stderr().contains("reattached"), "{}", h.stderr());
    // Reattached VMs are fully under control again.
    assert_eq!(h.ok(h.api().pause("a")).state, VmState::Paused);
    let stopped = h.ok(h.api().stop("b", false));
    assert_eq!(stopped.state, VmState::Stopped, "{stopped:?}");
    assert!(!is_vmm(before[1]));
    // A paused VM stays paused across a restart.
    h.restart();
    assert_eq!(h.ok(h.api().vm("a")).state, VmState::Paused);
    assert_eq!(h.ok(h.api().vm("b")).state, VmState::Stopped);
}

#[test]
fn crashed_vmm_is_reported_not_restarted() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let vm = h.create_vm(&guest("c", "counter"));
    h.wait_console("c", "NOVA-TICK", BOOT);
    // SAFETY: killing the VMM this test started.
    unsafe { libc::kill(vm.pid.unwrap() as i32, libc::SIGKILL) };
    let vm = h.wait_state("c", VmState::Crashed, Duration::from_secs(5));
    let exit = vm.exit.clone().unwrap();
    assert_eq!(exit.signal, Some(9), "{vm:?}");
    assert!(exit.reason.contains("signal 9"), "{vm:?}");
    assert!(
        exit.console_tail.iter().any(|l| l.starts_with("NOVA-TICK")),
        "crash report has the console: {vm:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let vm = h.ok(h.api().vm("c"));
    assert_eq!(
        vm.state,
        VmState::Crashed,
        "not restarted under the default policy: {vm:?}"
    );
    assert_eq!(vm.restarts, 0);
    assert!(vm.pid.is_none());
}

#[test]
fn restart_policy_restarts() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let mut spec = guest("r", "counter");
    spec.restart = RestartPolicy::OnFailure;
    let vm = h.create_vm(&spec);
    h.wait_console("r", "NOVA-TICK", BOOT);
    let pid = vm.pid.unwrap();
    // SAFETY: killing the VMM this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let vm = nova_tests::wait_for(10, "a restart under on_failure", || {
        let vm = h.ok(h.api().vm("r"));
        (vm.restarts == 1 && vm.state == VmState::Running).then_some(vm)
    });
    assert_ne!(vm.pid, Some(pid), "a new VMM");
    assert_eq!(
        vm.exit.unwrap().signal,
        Some(9),
        "the crash is still reported"
    );

    // A guest that powers off is a clean stop: on_failure does not restart it.
    let mut spec = guest("p", "poweroff");
    spec.restart = RestartPolicy::OnFailure;
    h.create_vm(&spec);
    let vm = h.wait_state("p", VmState::Stopped, BOOT);
    assert_eq!(vm.exit.unwrap().code, Some(0));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(h.ok(h.api().vm("p")).restarts, 0);

    // ... and `always` does.
    let mut spec = guest("q", "poweroff");
    spec.restart = RestartPolicy::Always;
    h.create_vm(&spec);
    nova_tests::wait_for(BOOT.as_secs(), "a restart after a poweroff", || {
        (h.ok(h.api().vm("q")).restarts >= 1).then_some(())
    });
    h.ok(h.api().delete("q"));
}

#[test]
fn a_vmm_that_cannot_start_is_reported_with_its_error() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    // Not a kernel: the VMM refuses it at startup (exit code 2).
    let junk = h.dir.join("junk.bin");
    std::fs::write(&junk, b"this is not a kernel").unwrap();
    let mut spec = guest("bad", "idle");
    spec.kernel = junk.to_string_lossy().into_owned();
    let (s, e) = h.refused(h.api().create(&spec));
    assert_eq!(s, 502, "{e:?}");
    assert!(e.error.contains("exited while starting"), "{e:?}");
    let vm = h.ok(h.api().vm("bad"));
    assert_eq!(vm.state, VmState::Crashed, "{vm:?}");
    let exit = vm.exit.unwrap();
    assert_eq!(exit.code, Some(2));
    assert!(!exit.log_tail.is_empty(), "the VMM's error is kept");
}

#[test]
fn snapshots_are_taken_into_the_vm_directory_and_restored() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let api = h.api();
    h.create_vm(&guest("s", "counter"));
    h.wait_console("s", "NOVA-TICK", BOOT);
    let first = SnapshotRequest {
        name: "first".into(),
        diff: false,
    };
    let snap = h.ok(api.snapshot("s", &first));
    let dir = h.data().join("vms/s/snapshots/first");
    assert_eq!(snap.path, dir.to_str().unwrap());
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 0,
        "the VMM wrote the snapshot there"
    );
    assert_eq!(
        h.ok(api.vm("s")).state,
        VmState::Running,
        "the VM runs on after a snapshot"
    );
    assert_eq!(h.refused(api.snapshot("s", &first)).0, 409);
    let escape = SnapshotRequest {
        name: "../../../escape".into(),
        diff: false,
    };
    let (s, e) = h.refused(api.snapshot("s", &escape));
    assert_eq!((s, e.field.as_deref()), (400, Some("name")), "{e:?}");
    // Stopped, then restored from the snapshot: the guest goes on where it was (no new
    // boot, the counter continues).
    assert_eq!(h.ok(api.stop("s", false)).state, VmState::Stopped);
    let boots = |h: &Hostd| {
        std::fs::read_to_string(h.data().join("vms/s/console.log"))
            .unwrap()
            .matches("NOVA-BOOTED")
            .count()
    };
    assert_eq!(boots(&h), 1);
    let restore = |name: &str| RestoreRequest {
        snapshot: name.into(),
        lazy: false,
        stored: false,
        clone: false,
    };
    assert_eq!(h.refused(api.restore("s", &restore("nope"))).0, 404);
    let restored = h.ok(api.restore("s", &restore("first")));
    assert_eq!(restored.state, VmState::Running, "{restored:?}");
    let before = h.console_bytes("s");
    nova_tests::wait_for(BOOT.as_secs(), "the restored guest to run", || {
        (h.console_bytes("s") >= before + 200).then_some(())
    });
    assert_eq!(boots(&h), 1, "restored, not booted again");
    let vm = h.ok(api.vm("s"));
    assert!(vm.counters.contains_key("process_cpu_ms"), "{vm:?}");
    assert!(vm.counters["guest_resident_bytes"] > 0, "{vm:?}");
}
