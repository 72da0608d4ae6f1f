//! nova-hostd end to end: VMs booted, watched, stopped and deleted through the API;
//! hostd killed and restarted under running VMs; crashes reported, restarts by policy.

use std::time::Duration;

use nova_tests::hostd::{is_vmm, testguest, Hostd, Opts};
use nova_tests::require_kvm;
use serde_json::json;

const BOOT: Duration = Duration::from_secs(30);

fn guest_spec(id: &str, workload: &str) -> serde_json::Value {
    json!({
        "id": id,
        "name": id,
        "kernel": testguest(),
        "mem_mib": 64,
        "vcpus": 1,
        "cmdline": format!("nova.workload={workload}"),
    })
}

#[test]
fn hostd_boots_a_vm_and_serves_its_console() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let vm = h.create_vm(guest_spec("web-1", "counter"));
    assert_eq!(vm["state"], "running", "{vm}");
    assert!(
        vm["spec"]["kernel"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "kernel went through the image cache: {vm}"
    );
    h.wait_console("web-1", "NOVA-BOOTED", BOOT);
    h.wait_console("web-1", "NOVA-TICK", BOOT);

    let (s, vm) = h.request("GET", "/v1/vms/web-1", None);
    assert_eq!(s, 200);
    assert!(vm["kvm"] == "pvm" || vm["kvm"] == "hardware", "{vm}");
    assert!(vm["counters"]["vcpu_exits"].as_u64().unwrap() > 0, "{vm}");
    let pid = vm["pid"].as_u64().unwrap() as u32;
    assert!(is_vmm(pid));
    // The console log is the VMM's own file in the VM's directory.
    let log = std::fs::read_to_string(h.data().join("vms/web-1/console.log")).unwrap();
    assert!(log.starts_with("NOVA-BOOTED"), "{log:.200}");

    let list = h.get("/v1/vms");
    assert_eq!(list["vms"].as_array().unwrap().len(), 1);
    let host = h.get("/v1/host");
    assert_eq!(host["allocated"]["mem_mib"], 64, "{host}");
    assert_eq!(host["allocated"]["vcpus"], 1, "{host}");

    let (s, metrics) = h.request("GET", "/metrics", None);
    assert_eq!(s, 200);
    let m = metrics.as_str().unwrap();
    assert!(
        m.contains("nova_vm_state{vm=\"web-1\",name=\"web-1\",state=\"running\"} 1"),
        "{m}"
    );
    assert!(m.contains("nova_vm_vcpu_exits{vm=\"web-1\"}"), "{m}");
    assert!(m.contains("nova_vm_console_bytes{vm=\"web-1\"}"), "{m}");
    assert!(m.contains("nova_host_allocated_memory_mib"), "{m}");

    let paused = h.post("/v1/vms/web-1/pause", &json!({}));
    assert_eq!(paused["state"], "paused");
    let resumed = h.post("/v1/vms/web-1/resume", &json!({}));
    assert_eq!(resumed["state"], "running");

    let stopped = h.post("/v1/vms/web-1/stop", &json!({}));
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(!is_vmm(pid), "the VMM is gone after stop");
    assert_eq!(
        h.get("/v1/host")["allocated"]["mem_mib"],
        0,
        "a stopped VM holds no memory"
    );

    // Started again: a new VMM, same VM.
    let again = h.post("/v1/vms/web-1/start", &json!({}));
    assert_eq!(again["state"], "running", "{again}");
    let pid2 = again["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid, pid2);

    let (s, _) = h.request("DELETE", "/v1/vms/web-1", None);
    assert_eq!(s, 204);
    assert!(!is_vmm(pid2));
    assert!(
        !h.data().join("vms/web-1").exists(),
        "the VM's directory is removed"
    );
    let (s, v) = h.request("GET", "/v1/vms/web-1", None);
    assert_eq!(s, 404, "{v}");
}

#[test]
fn vms_survive_hostd_restart_and_are_reattached() {
    if !require_kvm() {
        return;
    }
    let mut h = Hostd::start(Opts::default());
    for id in ["a", "b"] {
        h.create_vm(guest_spec(id, "counter"));
        h.wait_console(id, "NOVA-TICK", BOOT);
    }
    let before: Vec<u64> = ["a", "b"]
        .iter()
        .map(|id| h.get(&format!("/v1/vms/{id}"))["pid"].as_u64().unwrap())
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
        assert!(is_vmm(p as u32), "VMM {p} died with hostd");
    }

    h.restart();
    for (id, pid) in ["a", "b"].iter().zip(&before) {
        let vm = h.get(&format!("/v1/vms/{id}"));
        assert_eq!(vm["state"], "running", "{vm}");
        assert_eq!(
            vm["pid"].as_u64(),
            Some(*pid),
            "the same VMM was taken back"
        );
        assert!(
            vm["counters"]["vcpu_exits"].as_u64().unwrap() > 0,
            "its API answers: {vm}"
        );
    }
    assert!(h.stderr().contains("reattached"), "{}", h.stderr());
    // Reattached VMs are fully under control again.
    let paused = h.post("/v1/vms/a/pause", &json!({}));
    assert_eq!(paused["state"], "paused");
    let stopped = h.post("/v1/vms/b/stop", &json!({}));
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(!is_vmm(before[1] as u32));
    // A paused VM stays paused across a restart.
    h.restart();
    assert_eq!(h.get("/v1/vms/a")["state"], "paused");
    assert_eq!(h.get("/v1/vms/b")["state"], "stopped");
}

#[test]
fn crashed_vmm_is_reported_not_restarted() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let vm = h.create_vm(guest_spec("c", "counter"));
    h.wait_console("c", "NOVA-TICK", BOOT);
    let pid = vm["pid"].as_u64().unwrap() as i32;
    // SAFETY: killing the VMM this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let vm = h.wait_state("c", "crashed", Duration::from_secs(5));
    assert_eq!(vm["exit"]["signal"], 9, "{vm}");
    assert!(
        vm["exit"]["reason"].as_str().unwrap().contains("signal 9"),
        "{vm}"
    );
    let tail = vm["exit"]["console_tail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().starts_with("NOVA-TICK")),
        "crash report has the console: {vm}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let vm = h.get("/v1/vms/c");
    assert_eq!(
        vm["state"], "crashed",
        "not restarted under the default policy: {vm}"
    );
    assert_eq!(vm["restarts"], 0);
    assert!(vm["pid"].is_null());
}

#[test]
fn restart_policy_restarts() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let mut spec = guest_spec("r", "counter");
    spec["restart"] = json!("on_failure");
    let vm = h.create_vm(spec);
    h.wait_console("r", "NOVA-TICK", BOOT);
    let pid = vm["pid"].as_u64().unwrap();
    // SAFETY: killing the VMM this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let vm = loop {
        let vm = h.get("/v1/vms/r");
        if vm["restarts"] == 1 && vm["state"] == "running" {
            break vm;
        }
        assert!(std::time::Instant::now() < deadline, "not restarted: {vm}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(vm["pid"].as_u64().unwrap(), pid, "a new VMM");
    assert_eq!(vm["exit"]["signal"], 9, "the crash is still reported: {vm}");

    // A guest that powers off is a clean stop: on_failure does not restart it.
    let mut spec = guest_spec("p", "poweroff");
    spec["restart"] = json!("on_failure");
    h.create_vm(spec);
    let vm = h.wait_state("p", "stopped", BOOT);
    assert_eq!(vm["exit"]["code"], 0, "{vm}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(h.get("/v1/vms/p")["restarts"], 0);

    // ... and `always` does.
    let mut spec = guest_spec("q", "poweroff");
    spec["restart"] = json!("always");
    h.create_vm(spec);
    let deadline = std::time::Instant::now() + BOOT;
    while h.get("/v1/vms/q")["restarts"].as_u64().unwrap() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted after a poweroff"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h.request("DELETE", "/v1/vms/q", None);
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
    let mut spec = guest_spec("bad", "idle");
    spec["kernel"] = json!(junk);
    let (s, v) = h.request("POST", "/v1/vms", Some(&spec.to_string()));
    assert_eq!(s, 502, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("exited while starting"),
        "{v}"
    );
    let vm = h.get("/v1/vms/bad");
    assert_eq!(vm["state"], "crashed", "{vm}");
    assert_eq!(vm["exit"]["code"], 2, "{vm}");
    assert!(
        !vm["exit"]["log_tail"].as_array().unwrap().is_empty(),
        "the VMM's error is kept: {vm}"
    );
}

#[test]
fn snapshots_are_taken_into_the_vm_directory_and_restored() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(guest_spec("s", "counter"));
    h.wait_console("s", "NOVA-TICK", BOOT);
    let (s, v) = h.request("POST", "/v1/vms/s/snapshot", Some(r#"{"name":"first"}"#));
    if s == 502 && v["error"].as_str().unwrap_or("").contains("404") {
        nova_tests::require(false, "nova-vmm has no snapshot API yet");
        return;
    }
    assert_eq!(s, 201, "{v}");
    let dir = h.data().join("vms/s/snapshots/first");
    assert_eq!(v["path"], dir.to_str().unwrap());
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 0,
        "the VMM wrote the snapshot there"
    );
    assert_eq!(
        h.get("/v1/vms/s")["state"],
        "running",
        "the VM runs on after a snapshot"
    );
    let (s, v) = h.request("POST", "/v1/vms/s/snapshot", Some(r#"{"name":"first"}"#));
    assert_eq!(s, 409, "{v}");
    let (s, v) = h.request(
        "POST",
        "/v1/vms/s/snapshot",
        Some(r#"{"name":"../../../escape"}"#),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("name")), "{v}");
    // Stopped, then restored from the snapshot: the guest goes on where it was (no new
    // boot, the counter continues).
    let stopped = h.post("/v1/vms/s/stop", &json!({}));
    assert_eq!(stopped["state"], "stopped");
    let boots = |h: &Hostd| {
        std::fs::read_to_string(h.data().join("vms/s/console.log"))
            .unwrap()
            .matches("NOVA-BOOTED")
            .count()
    };
    assert_eq!(boots(&h), 1);
    let (s, v) = h.request("POST", "/v1/vms/s/restore", Some(r#"{"snapshot":"nope"}"#));
    assert_eq!(s, 404, "{v}");
    let restored = h.post("/v1/vms/s/restore", &json!({"snapshot": "first"}));
    assert_eq!(restored["state"], "running", "{restored}");
    let before = std::fs::metadata(h.data().join("vms/s/console.log"))
        .unwrap()
        .len();
    let deadline = std::time::Instant::now() + BOOT;
    while std::fs::metadata(h.data().join("vms/s/console.log"))
        .unwrap()
        .len()
        < before + 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the restored guest does not run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(boots(&h), 1, "restored, not booted again");
    let vm = h.get("/v1/vms/s");
    assert!(vm["counters"]["process_cpu_ms"].as_u64().is_some(), "{vm}");
    assert!(
        vm["counters"]["guest_resident_bytes"].as_u64().unwrap() > 0,
        "{vm}"
    );
}
