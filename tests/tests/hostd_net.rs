//! hostd's VM network: a bridge per host, a tap per NIC with a unique MAC, and a VXLAN
//! overlay joining two hosts. Each host is a network namespace; the two are joined by
//! a veth pair (the underlay, 198.51.100.0/24); the overlay is 203.0.113.0/24.

use std::process::Command;
use std::time::Duration;

use nova_hostd_api::{NicSpec, PeerRequest};
use nova_tests::hostd::{guest, ping, Exposition, Hostd, Opts, TwoHosts};
use nova_tests::net::{require_netns, NetNs};
use nova_tests::require_kvm;

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
    let net = t.a.ok(t.a.api().network());
    let vx = net.vxlan.clone().unwrap();
    assert_eq!(vx.vni, 42, "{net:?}");
    assert_eq!(
        vx.peers,
        ["198.51.100.2".parse::<std::net::IpAddr>().unwrap()]
    );
    // Adding a peer already there changes nothing.
    let again = PeerRequest {
        address: "198.51.100.2".parse().unwrap(),
    };
    assert_eq!(
        t.a.ok(t.a.api().add_peer(&again))
            .vxlan
            .unwrap()
            .peers
            .len(),
        1
    );
    // The bridges' own addresses are on the overlay only: this crosses the VXLAN.
    assert!(
        ping(&t.ns_a, "203.0.113.2", 3),
        "host A cannot reach host B's bridge over the overlay"
    );

    // A guest on B answers pings from host A.
    let mut spec = guest("g", "net nova.ip=203.0.113.20/24");
    spec.nics = vec![NicSpec::default()];
    let vm = t.b.create_vm(&spec);
    let (tap, mac) = (vm.nics[0].tap.clone(), vm.nics[0].mac.clone());
    assert!(mac.starts_with("02:"), "{mac}");
    assert_eq!(
        tap,
        format!("nt{}", mac.replace(':', "")),
        "taps are named by MAC"
    );
    let line = t.b.wait_console("g", "NOVA-NET", Duration::from_secs(30));
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
    // The pings went through the guest's NIC: its byte counters say so, per NIC.
    let e = Exposition::parse(&t.b.ok(t.b.api().metrics()));
    let nic = [("vm", "g"), ("nic", "0")];
    assert!(e.value("nova_vm_net_receive_bytes_total", &nic).unwrap() > 0.0);
    assert!(e.value("nova_vm_net_transmit_bytes_total", &nic).unwrap() > 0.0);
    assert!(e.value("nova_vm_net_receive_packets_total", &nic).unwrap() >= 6.0);
    assert!(link_exists(&t.ns_b, &tap));
    t.b.ok(t.b.api().delete("g"));
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
        let mut spec = guest(id, "idle");
        spec.nics = vec![NicSpec::default(), NicSpec::default()];
        for n in h.create_vm(&spec).nics {
            macs.push(n.mac);
            taps.push(n.tap);
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
    let mut taken = guest("n3", "idle");
    taken.nics = vec![NicSpec {
        mac: Some(macs[0].clone()),
    }];
    let (s, e) = h.refused(h.api().create(&taken));
    assert_eq!(s, 409, "{e:?}");
    assert!(e.error.contains("in use"), "{e:?}");
    for id in ["n1", "n2"] {
        h.ok(h.api().delete(id));
    }
    for t in &taps {
        assert!(!link_exists(&ns, t), "{t} left behind");
    }
}
