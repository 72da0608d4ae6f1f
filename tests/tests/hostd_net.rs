//! hostd's VM network: a bridge per host, a tap per NIC with a unique MAC, and a VXLAN
//! overlay joining two hosts. Each host is a network namespace; the two are joined by
//! a veth pair (the underlay, 198.51.100.0/24); the overlay is 203.0.113.0/24.

use std::process::Command;
use std::time::Duration;

use nova_tests::hostd::{ping, testguest, Hostd, Opts, TwoHosts};
use nova_tests::net::{require_netns, NetNs};
use nova_tests::require_kvm;
use serde_json::json;

fn link_exists(ns: &NetNs, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", &ns.name, "link", "show", dev])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn two_hosts_reach_each_other_over_vxlan() {
    if !require_netns()
        || !require_kvm()
        || !nova_tests::require(
            nova_tests::which("ping"),
            "ping (iputils-ping) is not installed",
        )
    {
        return;
    }
    let t = TwoHosts::new();
    let net = t.a.get("/v1/network");
    assert_eq!(net["vxlan"]["vni"], 42, "{net}");
    assert_eq!(net["vxlan"]["peers"][0], "198.51.100.2", "{net}");
    // The bridges' own addresses are on the overlay only: this crosses the VXLAN.
    assert!(
        ping(&t.ns_a, "203.0.113.2", 3),
        "host A cannot reach host B's bridge over the overlay"
    );

    // A guest on B answers pings from host A.
    let vm = t.b.create_vm(json!({
        "id": "g", "name": "g", "kernel": testguest(), "mem_mib": 64,
        "cmdline": "nova.workload=net nova.ip=203.0.113.20/24",
        "nics": [{}],
    }));
    let tap = vm["nics"][0]["tap"].as_str().unwrap().to_string();
    let mac = vm["nics"][0]["mac"].as_str().unwrap().to_string();
    assert!(mac.starts_with("02:"), "{mac}");
    let line = t.b.wait_console_any(
        "g",
        &["NOVA-NET", "NOVA-ERROR what=no_net"],
        Duration::from_secs(30),
    );
    if nova_tests::require(
        line.starts_with("NOVA-NET"),
        "nova-vmm gives the guest no virtio-net device yet",
    ) {
        assert!(
            line.contains(&format!("mac={mac}")),
            "the guest got hostd's MAC: {line}"
        );
        assert!(
            ping(&t.ns_b, "203.0.113.20", 3),
            "host B cannot ping its own guest"
        );
        assert!(
            ping(&t.ns_a, "203.0.113.20", 3),
            "host A cannot ping B's guest over the overlay"
        );
    }
    assert!(link_exists(&t.ns_b, &tap));
    let (s, _) = t.b.request("DELETE", "/v1/vms/g", None);
    assert_eq!(s, 204);
    assert!(!link_exists(&t.ns_b, &tap), "the tap goes with its VM");
}

#[test]
fn nics_get_unique_macs_and_taps_on_the_bridge() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let ns = NetNs::new();
    let h = Hostd::start(Opts {
        netns: Some(ns.name.clone()),
        listen: Some("127.0.0.1:7070".parse().unwrap()),
        args: vec!["--bridge".into(), "testbr0".into()],
        ..Opts::default()
    });
    let mut macs = Vec::new();
    let mut taps = Vec::new();
    for id in ["n1", "n2"] {
        let vm = h.create_vm(json!({
            "id": id, "name": id, "kernel": testguest(), "mem_mib": 64,
            "cmdline": "nova.workload=idle", "nics": [{}, {}],
        }));
        for n in vm["nics"].as_array().unwrap() {
            macs.push(n["mac"].as_str().unwrap().to_string());
            taps.push(n["tap"].as_str().unwrap().to_string());
        }
    }
    let mut sorted = macs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 4, "MACs collide: {macs:?}");
    for m in &macs {
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(
            first & 0b11,
            0b10,
            "{m} is not a locally administered unicast address"
        );
    }
    let on_bridge = String::from_utf8_lossy(
        &ns.run(&["ip", "-o", "link", "show", "master", "testbr0"])
            .stdout,
    )
    .into_owned();
    for t in &taps {
        assert!(
            on_bridge.contains(t.as_str()),
            "{t} is not on the bridge: {on_bridge}"
        );
    }
    // A MAC already used on this host is refused.
    let (s, v) = h.request(
        "POST",
        "/v1/vms",
        Some(&json!({"id": "n3", "name": "n3", "kernel": testguest(), "mem_mib": 64, "nics": [{"mac": macs[0]}]}).to_string()),
    );
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("in use"), "{v}");
    for id in ["n1", "n2"] {
        let (s, _) = h.request("DELETE", &format!("/v1/vms/{id}"), None);
        assert_eq!(s, 204);
    }
    for t in &taps {
        assert!(!link_exists(&ns, t), "{t} left behind");
    }
}
