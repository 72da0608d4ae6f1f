//! Hosts in network namespaces (two, or more with [`Bridged::with_namespaces`]) that a
//! controller in the root namespace reaches: each namespace's veth sits on a bridge in
//! the root namespace, which holds an address a controller listens on. The hosts
//! reach each other (migrations, the overlay) and the controller over that bridge.
//! Namespaces and bridge go on drop.

use crate::net::{ip, NetNs};
use crate::unique;

use super::{Hostd, Opts};

/// The bridge, its subnet and the two namespaces (hostds start with [`Bridged::hostd`]).
pub struct Bridged {
    pub ns: Vec<NetNs>,
    /// The veth inside each namespace.
    pub dev: Vec<String>,
    bridge: String,
    subnet: String,
}

impl Bridged {
    /// Makes the bridge with `10.213.N.254/24` (N distinct per bridge in this process
    /// and from other processes' most of the time) and a namespace with `.1` and `.2`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Bridged {
        Self::with_namespaces(2)
    }

    /// Makes the bridge and `n` namespaces (`.1` to `.n`) on it.
    pub fn with_namespaces(n: usize) -> Bridged {
        assert!((1..=200).contains(&n), "1 to 200 namespaces");
        let bridge = unique("nbrc");
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let third = (std::process::id() as usize * 3 + k) % 250;
        let subnet = format!("10.213.{third}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let ns: Vec<NetNs> = (0..n).map(|_| NetNs::new()).collect();
        let mut dev = vec![String::new(); n];
        for (i, ns) in ns.iter().enumerate() {
            let (inner, outer) = (unique("nvc"), unique("nvr"));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns.name]);
            ip(&["link", "set", &outer, "master", &bridge]);
            ip(&["link", "set", &outer, "up"]);
            let addr = format!("{subnet}.{}/24", i + 1);
            ip(&["-n", &ns.name, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &ns.name, "link", "set", &inner, "up"]);
            dev[i] = inner;
        }
        Bridged {
            ns,
            dev,
            bridge,
            subnet,
        }
    }

    /// The root namespace's address on the bridge (where a controller listens).
    pub fn root_ip(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// Host `i`'s (0 to n-1) address.
    pub fn host_ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Starts host `i`'s hostd in its namespace, listening on its address, with its
    /// own bridge for guests, an overlay to the next host (the other one of two), and
    /// `extra` flags.
    pub fn hostd(&self, i: usize, extra: &[String]) -> Hostd {
        let (me, peer) = (self.host_ip(i), self.host_ip((i + 1) % self.ns.len()));
        let mut args: Vec<String> = [
            "--bridge",
            "novabr0",
            "--host-cidr",
            &format!("203.0.113.{}/24", i + 1),
            "--advertise-ip",
            &me,
            "--vxlan-vni",
            "42",
            "--vxlan-dev",
            &self.dev[i],
            "--vxlan-peer",
            &peer,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        Hostd::start(Opts {
            netns: Some(self.ns[i].name.clone()),
            listen: Some(format!("{me}:7070").parse().unwrap()),
            args,
            ..Opts::default()
        })
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        // The veths die with their namespaces (NetNs's drop); the bridge is ours.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
