//! Throwaway network namespaces with a tap in them, for guests that need a network.
//! Addresses come from the documentation ranges; everything is deleted on drop.

use std::process::{Command, Output};

use crate::{require, unique, which};

/// Runs `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Network namespaces and taps can be made here (root, iproute2, /dev/net/tun).
pub fn require_netns() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    require(root, "network namespaces need root")
        && require(which("ip"), "iproute2 (ip) is not installed")
        && require(
            std::path::Path::new("/dev/net/tun").exists(),
            "/dev/net/tun is missing",
        )
}

/// A network namespace, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        let name = unique("nova-");
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        NetNs { name }
    }

    /// Creates tap `tap` in the namespace with `host_cidr` (e.g. "192.0.2.1/24"), up.
    pub fn add_tap(&self, tap: &str, host_cidr: &str) {
        ip(&["-n", &self.name, "tuntap", "add", tap, "mode", "tap"]);
        ip(&["-n", &self.name, "addr", "add", host_cidr, "dev", tap]);
        ip(&["-n", &self.name, "link", "set", tap, "up"]);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a shell-less command inside the namespace and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Taps die with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
