//! The host's VM network: one Linux bridge, a tap per VM NIC on it, and an optional
//! VXLAN device on the bridge that joins the bridges of several hosts into one L2
//! overlay. Links, addresses and FDB entries are made over netlink ([`netlink`]),
//! taps with the tun driver's ioctls ([`tap`]), MAC announcements with a raw packet
//! socket ([`announce`]). hostd creates the bridge and VXLAN device once and leaves
//! them across restarts; taps live and die with their VM.

pub mod announce;
pub mod mac;
pub mod netlink;
pub mod tap;

use std::net::IpAddr;
use std::sync::Mutex;

use nova_hostd_api::{NetworkInfo, VxlanInfo};

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

/// An address with its prefix length (`203.0.113.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("'{s}' is not ADDRESS/PREFIX like 203.0.113.1/24");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The host network hostd manages.
#[derive(Debug)]
pub struct Network {
    pub bridge: String,
    pub host_cidr: Option<Cidr>,
    pub vxlan: Option<VxlanConfig>,
    peers: Mutex<Vec<IpAddr>>,
    handle: tokio::sync::OnceCell<rtnetlink::Handle>,
    ready: tokio::sync::OnceCell<()>,
}

/// Whether interface `name` exists (sysfs; no netlink socket needed).
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

impl Network {
    pub fn new(bridge: String, host_cidr: Option<Cidr>, vxlan: Option<VxlanConfig>) -> Self {
        Network {
            bridge,
            host_cidr,
            vxlan,
            peers: Mutex::new(Vec::new()),
            handle: tokio::sync::OnceCell::new(),
            ready: tokio::sync::OnceCell::new(),
        }
    }

    /// The netlink connection, opened on first use.
    async fn nl(&self) -> Result<&rtnetlink::Handle> {
        self.handle
            .get_or_try_init(|| async { netlink::connect() })
            .await
    }

    /// The VXLAN device's name: `nvx<VNI>`.
    fn vxlan_dev(&self) -> Option<String> {
        self.vxlan.as_ref().map(|v| format!("nvx{}", v.vni))
    }

    /// Creates the bridge (and VXLAN device, host address) if missing. Idempotent.
    pub async fn ensure(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| self.make_bridge())
            .await
            .map(|_| ())
    }

    async fn make_bridge(&self) -> Result<()> {
        let h = self.nl().await?;
        let br = self.bridge.as_str();
        let br_idx = match netlink::index(h, br).await? {
            Some(i) => i,
            None => {
                let i = netlink::add_bridge(h, br).await?;
                tracing::info!(bridge = br, "created bridge");
                i
            }
        };
        netlink::set_up(h, br_idx, None).await?;
        if let Some(c) = self.host_cidr {
            netlink::add_address(h, br_idx, c.addr, c.prefix).await?;
        }
        if let (Some(v), Some(dev)) = (&self.vxlan, self.vxlan_dev()) {
            let idx = match netlink::index(h, &dev).await? {
                Some(i) => i,
                None => {
                    let underlay = match &v.dev {
                        Some(u) => Some(netlink::require(h, u).await?),
                        None => None,
                    };
                    let i = netlink::add_vxlan(h, &dev, v.vni, v.local, v.port, underlay).await?;
                    tracing::info!(device = dev, vni = v.vni, "created vxlan device");
                    i
                }
            };
            netlink::set_up(h, idx, Some(br_idx)).await?;
        }
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
        let h = self.nl().await?;
        let idx = netlink::require(h, &dev).await?;
        netlink::flood_to(h, idx, peer).await?;
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
            let n = name.to_string();
            tokio::task::spawn_blocking(move || tap::create(&n))
                .await
                .map_err(|e| Error::Net(e.to_string()))?
                .map_err(|e| Error::Net(format!("creating tap {name}: {e}")))?;
        }
        let h = self.nl().await?;
        let idx = netlink::require(h, name).await?;
        let br = netlink::require(h, &self.bridge).await?;
        netlink::set_up(h, idx, Some(br)).await
    }

    /// Deletes tap `name` if it exists.
    pub async fn delete_tap(&self, name: &str) -> Result<()> {
        if !link_exists(name) {
            return Ok(());
        }
        let h = self.nl().await?;
        match netlink::index(h, name).await? {
            Some(i) => netlink::delete(h, i).await,
            None => Ok(()),
        }
    }

    /// After a VM arrived: the local bridge forwards its MAC to its tap at once, and
    /// the other hosts learn it lives here (RARP out of the overlay).
    pub async fn announce(&self, tap: &str, mac: [u8; 6]) -> Result<()> {
        let h = self.nl().await?;
        let vx = match self.vxlan_dev() {
            Some(dev) => netlink::index(h, &dev).await?,
            None => None,
        };
        if let Some(vx) = vx {
            // Forget where the MAC was learnt before (behind the overlay); the pinned
            // entry below wins anyway, so a failure here only costs a stale entry.
            if let Err(e) = netlink::forget_mac(h, vx, mac).await {
                tracing::debug!("{e}");
            }
        }
        let port = netlink::require(h, tap).await?;
        netlink::pin_mac(h, port, mac).await?;
        if let Some(dev) = self.vxlan_dev().filter(|_| vx.is_some()) {
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
            host_cidr: self.host_cidr.map(|c| c.to_string()),
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
    use super::Cidr;

    #[test]
    fn host_addresses_parse_with_their_prefix_or_say_what_is_wrong() {
        let c: Cidr = "203.0.113.1/24".parse().unwrap();
        assert_eq!((c.addr.to_string(), c.prefix), ("203.0.113.1".into(), 24));
        assert_eq!(c.to_string(), "203.0.113.1/24");
        for bad in ["203.0.113.1", "x/24", "203.0.113.1/33", "::1/129"] {
            assert!(bad.parse::<Cidr>().unwrap_err().contains(bad));
        }
    }
}
