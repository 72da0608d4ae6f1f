//! Host-to-host live migration through hostd: the source asks the destination to
//! prepare, the VMMs move the VM, and exactly one hostd owns it at the end. Failure
//! before the switch leaves the VM running on the source and nothing on the
//! destination.

use std::time::{Duration, Instant};

use nova_tests::hostd::{is_vmm, ping, testguest, Hostd, Opts, TwoHosts};
use nova_tests::net::require_netns;
use nova_tests::require_kvm;
use serde_json::{json, Value};

const BOOT: Duration = Duration::from_secs(30);

fn migrate(src: &Hostd, id: &str, dst: &Hostd, extra: Value) -> Value {
    let mut req = json!({"to": {"url": format!("http://{}", dst.addr), "token": dst.token}, "downtime_ms": 300});
    if let (Some(r), Some(e)) = (req.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    let (s, v) = src.request(
        "POST",
        &format!("/v1/vms/{id}/migrate"),
        Some(&req.to_string()),
    );
    assert_eq!(s, 202, "{v}\n{}", src.stderr());
    assert_eq!(v["state"], "preparing");
    v
}

/// Polls the source's view of the migration until it finished.
fn wait_migration(src: &Hostd, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (s, v) = src.request("GET", &format!("/v1/vms/{id}/migration"), None);
        assert_eq!(s, 200, "{v}");
        if v["state"] == "completed" || v["state"] == "failed" || v["state"] == "cancelled" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "migration still {v} after {timeout:?}\n{}",
            src.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn vm_ids(h: &Hostd) -> Vec<String> {
    h.get("/v1/vms")["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
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
    let vm = src.create_vm(json!({
        "id": "m", "name": "m", "kernel": testguest(), "mem_mib": 64, "cmdline": "nova.workload=counter",
    }));
    src.wait_console("m", "NOVA-TICK", BOOT);
    migrate(&src, "m", &dst, json!({}));
    let m = wait_migration(&src, "m", Duration::from_secs(20));
    assert_eq!(m["state"], "failed", "{m}");
    assert!(
        m["error"].as_str().unwrap().contains("does not fit"),
        "the destination's reason comes back: {m}"
    );
    // The source still owns and runs it, in the same VMM.
    let after = src.get("/v1/vms/m");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["pid"], vm["pid"]);
    assert!(is_vmm(vm["pid"].as_u64().unwrap() as u32));
    let ticks = src.get("/v1/vms/m/console?lines=1")["bytes"].clone();
    std::thread::sleep(Duration::from_millis(200));
    assert_ne!(
        src.get("/v1/vms/m/console?lines=1")["bytes"],
        ticks,
        "still ticking"
    );
    // The destination holds nothing of it, but now has the kernel (uploaded by the source).
    assert!(vm_ids(&dst).is_empty());
    let kernel = after["spec"]["kernel"].as_str().unwrap();
    let (s, _) = dst.request("GET", &format!("/v1/images/{kernel}"), None);
    assert_eq!(
        s, 200,
        "the source pushed the kernel to the destination's image cache"
    );
    // Writable disks cannot follow the VM (no block migration): refused up front.
    src.create_vm(json!({
        "id": "w", "name": "w", "kernel": testguest(), "mem_mib": 64, "disks": [{"size_mib": 1}],
    }));
    let req = json!({"to": {"url": format!("http://{}", dst.addr), "token": dst.token}});
    let (s, v) = src.request("POST", "/v1/vms/w/migrate", Some(&req.to_string()));
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("writable"), "{v}");
    // A wrong destination token is the destination's 401, and changes nothing.
    let req =
        json!({"to": {"url": format!("http://{}", dst.addr), "token": "wrong-token-wrong-token"}});
    let (s, _) = src.request("POST", "/v1/vms/m/migrate", Some(&req.to_string()));
    assert_eq!(s, 202);
    let m = wait_migration(&src, "m", Duration::from_secs(20));
    assert!(m["error"].as_str().unwrap().contains("401"), "{m}");
    assert_eq!(src.get("/v1/vms/m")["state"], "running");
}

#[test]
fn a_vm_moves_between_hosts_and_keeps_answering_pings() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    let vm = t.a.create_vm(json!({
        "id": "mv", "name": "mv", "kernel": testguest(), "mem_mib": 64,
        "cmdline": "nova.workload=net,counter nova.ip=203.0.113.20/24", "nics": [{}],
    }));
    let mac = vm["nics"][0]["mac"].as_str().unwrap().to_string();
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
    migrate(&t.a, "mv", &t.b, json!({"mode": "precopy"}));
    let m = wait_migration(&t.a, "mv", Duration::from_secs(60));
    assert_eq!(
        m["state"],
        "completed",
        "{m}\n{}\n{}",
        t.a.stderr(),
        t.b.stderr()
    );
    assert!(m["hostd_switch_ms"].as_f64().is_some(), "{m}");
    // Exactly one owner: B.
    assert!(vm_ids(&t.a).is_empty(), "A let go of it");
    let on_b = t.b.get("/v1/vms/mv");
    assert_eq!(on_b["state"], "running", "{on_b}");
    assert_eq!(
        on_b["nics"][0]["mac"],
        mac.as_str(),
        "the MAC follows the VM"
    );
    assert!(
        !is_vmm(vm["pid"].as_u64().unwrap() as u32),
        "the source VMM exited"
    );
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
    let metrics = t.a.request("GET", "/metrics", None).1;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("direction=\"outgoing\",result=\"completed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_failed_stream_leaves_the_vm_on_the_source_and_the_destination_clean() {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    let dst = Hostd::start(Opts::default());
    let vm = src.create_vm(json!({
        "id": "f", "name": "f", "kernel": testguest(), "mem_mib": 64,
        "cmdline": "nova.workload=dirty:16:50,counter",
    }));
    src.wait_console("f", "NOVA-TICK", BOOT);
    // Slow enough (8 Mbit/s for 16 MiB of dirty pages) that the kill below lands first.
    migrate(&src, "f", &dst, json!({"bandwidth_mbit": 8}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let dst_pid = loop {
        let (s, v) = dst.request("GET", "/v1/vms/f", None);
        if s == 200 && v["state"] == "migrating_in" && v["pid"].is_u64() {
            break v["pid"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no incoming VMM on the destination: {v}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: killing the destination VMM this test's hostd started.
    unsafe { libc::kill(dst_pid as i32, libc::SIGKILL) };
    let m = wait_migration(&src, "f", Duration::from_secs(30));
    assert_eq!(m["state"], "failed", "{m}");
    let after = src.get("/v1/vms/f");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["pid"], vm["pid"], "the same VMM on the source");
    let n0 = src.get("/v1/vms/f/console?lines=1")["bytes"].clone();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        src.get("/v1/vms/f/console?lines=1")["bytes"],
        n0,
        "the guest runs on the source"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !vm_ids(&dst).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the destination kept the failed VM: {:?}",
            vm_ids(&dst)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    src.create_vm(json!({
        "id": "k", "name": "k", "kernel": testguest(), "mem_mib": 64, "cmdline": "nova.workload=counter",
    }));
    src.wait_console("k", "NOVA-TICK", BOOT);
    migrate(&src, "k", &dst, json!({}));
    let m = wait_migration(&src, "k", Duration::from_secs(60));
    assert_eq!(m["state"], "completed", "{m}");
    let pid = dst.get("/v1/vms/k")["pid"].as_u64().unwrap();
    dst.restart();
    let vm = dst.get("/v1/vms/k");
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["pid"].as_u64(), Some(pid));
    assert!(vm_ids(&src).is_empty());
}

#[test]
fn killing_the_source_hostd_during_a_migration_leaves_one_owner() {
    if !require_kvm() {
        return;
    }
    let mut src = Hostd::start(Opts::default());
    let dst = Hostd::start(Opts::default());
    src.create_vm(json!({
        "id": "s", "name": "s", "kernel": testguest(), "mem_mib": 64,
        "cmdline": "nova.workload=dirty:16:50,counter",
    }));
    src.wait_console("s", "NOVA-TICK", BOOT);
    migrate(&src, "s", &dst, json!({"bandwidth_mbit": 200}));
    std::thread::sleep(Duration::from_millis(300));
    src.kill();
    std::thread::sleep(Duration::from_secs(2));
    src.restart();
    // Whatever the VMMs did meanwhile, after things settle exactly one hostd runs it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let on_src = src.request("GET", "/v1/vms/s", None);
        let on_dst = dst.request("GET", "/v1/vms/s", None);
        let src_runs = on_src.0 == 200 && on_src.1["state"] == "running";
        let dst_runs = on_dst.0 == 200 && on_dst.1["state"] == "running";
        let settled = (src_runs && on_dst.0 == 404) || (dst_runs && on_src.0 == 404);
        if settled {
            break;
        }
        assert!(
            !(src_runs && dst_runs),
            "both hosts run the VM: {on_src:?} {on_dst:?}"
        );
        assert!(
            Instant::now() < deadline,
            "not settled: {on_src:?} {on_dst:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the destination has an incoming VMM for `id`; returns its pid.
fn incoming_vmm(dst: &Hostd, id: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = dst.request("GET", &format!("/v1/vms/{id}"), None);
        if s == 200 && v["state"] == "migrating_in" && v["pid"].is_u64() {
            return v["pid"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no incoming VMM on the destination: {v}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killing_the_destination_hostd_before_the_switch_leaves_the_vm_on_the_source() {
    if !require_kvm() {
        return;
    }
    let src = Hostd::start(Opts::default());
    let mut dst = Hostd::start(Opts::default());
    let vm = src.create_vm(json!({
        "id": "d", "name": "d", "kernel": testguest(), "mem_mib": 64,
        "cmdline": "nova.workload=dirty:16:50,counter",
    }));
    src.wait_console("d", "NOVA-TICK", BOOT);
    migrate(&src, "d", &dst, json!({"bandwidth_mbit": 8}));
    let dst_vmm = incoming_vmm(&dst, "d");
    dst.kill();
    let m = wait_migration(&src, "d", Duration::from_secs(30));
    assert_eq!(m["state"], "failed", "{m}");
    let after = src.get("/v1/vms/d");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["pid"], vm["pid"]);
    // The destination hostd, back, finds a receiving VMM that never switched: it
    // kills it and forgets the VM.
    dst.restart();
    let (s, v) = dst.request("GET", "/v1/vms/d", None);
    assert_eq!(s, 404, "{v}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_vmm(dst_vmm as u32) {
        assert!(
            Instant::now() < deadline,
            "the receiving VMM was left running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(src.get("/v1/vms/d")["state"], "running");
}

#[test]
fn cutting_the_link_before_the_switch_leaves_the_vm_on_the_source() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let t = TwoHosts::new();
    let vm = t.a.create_vm(json!({
        "id": "c", "name": "c", "kernel": testguest(), "mem_mib": 64,
        "cmdline": "nova.workload=dirty:16:50,counter",
    }));
    t.a.wait_console("c", "NOVA-TICK", BOOT);
    migrate(&t.a, "c", &t.b, json!({"bandwidth_mbit": 8}));
    incoming_vmm(&t.b, "c");
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.a.get("/v1/vms/c/migration")["state"] != "running" {
        assert!(Instant::now() < deadline, "the stream did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
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
    assert_eq!(m["state"], "failed", "{m}");
    let after = t.a.get("/v1/vms/c");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["pid"], vm["pid"]);
    let n0 = t.a.get("/v1/vms/c/console?lines=1")["bytes"].clone();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        t.a.get("/v1/vms/c/console?lines=1")["bytes"],
        n0,
        "the guest runs on the source"
    );
    // The link back: the destination has let go of it by itself.
    nova_tests::net::ip(&["-n", &t.ns_a.name, "link", "set", &dev, "up"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = t.b.request("GET", "/v1/vms/c", None);
        if s == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the destination still holds the VM: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
