//! The host's VM network: one Linux bridge, a tap per VM NIC on it, and an optional
//! VXLAN device on the bridge that joins the bridges of several hosts into one L2
//! overlay. Everything goes through `ip`/`bridge` (iproute2). hostd creates the
//! bridge and VXLAN device once and leaves them across restarts; taps live and die
//! with their VM.

pub mod announce;
pub mod mac;

use std::net::IpAddr;
use std::sync::Mutex;

use crate::api::types::{NetworkInfo, VxlanInfo};
use crate::error::{Error, Result};

/// VXLAN settings from the command line.
#[derive(Debug, Clone)]
pub struct VxlanConfig {
    pub vni: u32,
    pub local: IpAddr,
    /// Underlay device (for example the veth to the other hosts); optional.
    pub dev: Option<String>,
    pub port: u16,
}

/// The host network hostd manages.
#[derive(Debug)]
pub struct Network {
    pub bridge: String,
    pub host_cidr: Option<String>,
    pub vxlan: Option<VxlanConfig>,
    peers: Mutex<Vec<IpAddr>>,
    ready: Mutex<bool>,
}

/// Runs `prog args`; the error names the command and says what it printed.
pub async fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(prog)
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Net(format!("{prog}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Net(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether interface `name` exists.
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The tap name for NIC `index` of VM `id`: `nv` + 8 hex of a hash of the id + index
/// (at most 15 characters, the kernel's limit).
pub fn tap_name(id: &str, index: usize) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("nv{h:08x}{index}")
}

impl Network {
    pub fn new(bridge: String, host_cidr: Option<String>, vxlan: Option<VxlanConfig>) -> Self {
        Network {
            bridge,
            host_cidr,
            vxlan,
            peers: Mutex::new(Vec::new()),
            ready: Mutex::new(false),
        }
    }

    fn vxlan_dev(&self) -> Option<String> {
        self.vxlan.as_ref().map(|v| format!("nvx{}", v.vni))
    }

    /// The uplink device announcements go out of.
    pub fn uplink(&self) -> Option<String> {
        self.vxlan_dev()
    }

    /// Creates the bridge (and VXLAN device, host address) if missing. Idempotent.
    pub async fn ensure(&self) -> Result<()> {
        if *self.ready.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(());
        }
        let br = self.bridge.as_str();
        if !link_exists(br) {
            run("ip", &["link", "add", br, "type", "bridge"]).await?;
            tracing::info!(bridge = br, "created bridge");
        }
        run("ip", &["link", "set", br, "up"]).await?;
        if let Some(cidr) = &self.host_cidr {
            let have = run("ip", &["-o", "addr", "show", "dev", br]).await?;
            if !have.contains(&format!(" {cidr} ")) {
                run("ip", &["addr", "add", cidr, "dev", br]).await?;
            }
        }
        if let (Some(v), Some(dev)) = (&self.vxlan, self.vxlan_dev()) {
            if !link_exists(&dev) {
                let vni = v.vni.to_string();
                let local = v.local.to_string();
                let port = v.port.to_string();
                let mut args = vec![
                    "link", "add", &dev, "type", "vxlan", "id", &vni, "local", &local, "dstport",
                    &port,
                ];
                if let Some(u) = &v.dev {
                    args.extend(["dev", u.as_str()]);
                }
                run("ip", &args).await?;
                tracing::info!(device = dev, vni = v.vni, "created vxlan device");
            }
            run("ip", &["link", "set", &dev, "master", br]).await?;
            run("ip", &["link", "set", &dev, "up"]).await?;
        }
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Ok(())
    }

    /// Adds a VXLAN peer: broadcast and unknown traffic is flooded to it.
    pub async fn add_peer(&self, peer: IpAddr) -> Result<()> {
        let dev = self.vxlan_dev().ok_or_else(|| {
            Error::Conflict(
                "this hostd runs without --vxlan-vni: no overlay to add a peer to".into(),
            )
        })?;
        self.ensure().await?;
        let p = peer.to_string();
        let fdb = run("bridge", &["fdb", "show", "dev", &dev]).await?;
        if !fdb
            .lines()
            .any(|l| l.starts_with("00:00:00:00:00:00") && l.contains(&format!("dst {p} ")))
        {
            run(
                "bridge",
                &["fdb", "append", "00:00:00:00:00:00", "dev", &dev, "dst", &p],
            )
            .await?;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !peers.contains(&peer) {
            peers.push(peer);
        }
        tracing::info!(%peer, "vxlan peer added");
        Ok(())
    }

    /// Creates tap `name` on the bridge, up. An existing tap of that name is reused
    /// (hostd restarted, or a VM restarted).
    pub async fn create_tap(&self, name: &str) -> Result<()> {
        self.ensure().await?;
        if !link_exists(name) {
            run(
                "ip",
                &["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"],
            )
            .await?;
        }
        run("ip", &["link", "set", name, "master", &self.bridge]).await?;
        run("ip", &["link", "set", name, "up"]).await?;
        Ok(())
    }

    /// Deletes tap `name` if it exists.
    pub async fn delete_tap(&self, name: &str) -> Result<()> {
        if link_exists(name) {
            run("ip", &["link", "del", name]).await?;
        }
        Ok(())
    }

    /// After a VM arrived: the local bridge forwards its MAC to its tap at once, and
    /// the other hosts learn it lives here (RARP out of the overlay).
    pub async fn announce(&self, tap: &str, mac: [u8; 6]) -> Result<()> {
        let m = mac::format(mac);
        if let Some(dev) = self.vxlan_dev() {
            // Forget where the MAC was learnt before (behind the overlay).
            let _ = run("bridge", &["fdb", "del", &m, "dev", &dev, "master"]).await;
        }
        run(
            "bridge",
            &["fdb", "replace", &m, "dev", tap, "master", "static"],
        )
        .await?;
        if let Some(dev) = self.uplink() {
            let dev2 = dev.clone();
            tokio::task::spawn_blocking(move || announce::send_rarp(&dev2, mac, 3))
                .await
                .map_err(|e| Error::Net(e.to_string()))?
                .map_err(|e| Error::Net(format!("RARP on {dev}: {e}")))?;
        }
        Ok(())
    }

    /// What the API reports.
    pub fn info(&self) -> NetworkInfo {
        NetworkInfo {
            bridge: self.bridge.clone(),
            host_cidr: self.host_cidr.clone(),
            vxlan: self.vxlan.as_ref().map(|v| VxlanInfo {
                device: format!("nvx{}", v.vni),
                vni: v.vni,
                local: v.local,
                peers: self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tap_names_fit_the_kernel_limit_and_differ_per_vm_and_nic() {
        let a = super::tap_name(&"x".repeat(63), 7);
        assert!(a.len() <= 15, "{a}");
        assert_ne!(super::tap_name("a", 0), super::tap_name("b", 0));
        assert_ne!(super::tap_name("a", 0), super::tap_name("a", 1));
    }
}
