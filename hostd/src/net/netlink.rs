//! The netlink requests hostd makes (rtnetlink): links by name, bridges, ports on a
//! bridge, addresses, VXLAN devices and bridge FDB entries. Each is one request with
//! the kernel's answer checked; nothing runs `ip` or `bridge` or parses their text.

use std::net::IpAddr;

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan};

use crate::error::{Error, Result};

/// A netlink failure, naming what was being done.
fn net(what: impl std::fmt::Display, e: rtnetlink::Error) -> Error {
    Error::Net(format!("{what}: {e}"))
}

/// Whether `e` is the kernel's answer `errno`.
fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.is_some_and(|c| c.get() == -errno))
}

/// A connection to the kernel's routing netlink, its reader running on this runtime.
pub fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| Error::Net(format!("opening a netlink socket: {e}")))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The index of link `name`, or None when there is no such link.
pub async fn index(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h
        .clone()
        .link()
        .get()
        .match_name(name.to_string())
        .execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(net(format!("looking up link {name}"), e)),
    }
}

/// The index of link `name`; an error when it does not exist.
pub async fn require(h: &Handle, name: &str) -> Result<u32> {
    index(h, name)
        .await?
        .ok_or_else(|| Error::Net(format!("no link named {name}")))
}

/// Creates bridge `name` (up); its index.
pub async fn add_bridge(h: &Handle, name: &str) -> Result<u32> {
    h.link()
        .add(LinkBridge::new(name).up().build())
        .execute()
        .await
        .map_err(|e| net(format!("creating bridge {name}"), e))?;
    require(h, name).await
}

/// Creates VXLAN device `name` (`vni`, local address, UDP port, optional underlay).
pub async fn add_vxlan(
    h: &Handle,
    name: &str,
    vni: u32,
    local: IpAddr,
    port: u16,
    underlay: Option<u32>,
) -> Result<u32> {
    let mut b = LinkVxlan::new(name, vni).port(port);
    b = match local {
        IpAddr::V4(a) => b.local(a),
        IpAddr::V6(a) => b.local6(a),
    };
    if let Some(dev) = underlay {
        b = b.dev(dev);
    }
    h.link()
        .add(b.build())
        .execute()
        .await
        .map_err(|e| net(format!("creating vxlan device {name}"), e))?;
    require(h, name).await
}

/// Puts link `index` up, on `bridge` when given.
pub async fn set_up(h: &Handle, index: u32, bridge: Option<u32>) -> Result<()> {
    let mut b = LinkUnspec::new_with_index(index).up();
    if let Some(br) = bridge {
        b = b.controller(br);
    }
    h.link()
        .set(b.build())
        .execute()
        .await
        .map_err(|e| net(format!("setting link {index} up"), e))
}

/// Adds `addr/prefix` to link `index`; an address already there is fine.
pub async fn add_address(h: &Handle, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
    match h.address().add(index, addr, prefix).execute().await {
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        r => r.map_err(|e| net(format!("adding {addr}/{prefix}"), e)),
    }
}

/// Deletes link `index`; one already gone is fine.
pub async fn delete(h: &Handle, index: u32) -> Result<()> {
    match h.clone().link().del(index).execute().await {
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
        r => r.map_err(|e| net(format!("deleting link {index}"), e)),
    }
}

/// `bridge fdb append 00:00:00:00:00:00 dev VXLAN dst PEER`: flood broadcast and
/// unknown traffic to `peer` too. Appending a peer already listed changes nothing.
pub async fn flood_to(h: &Handle, vxlan: u32, peer: IpAddr) -> Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = vxlan;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLocalAddress(vec![0; 6]));
    m.attributes
        .push(NeighbourAttribute::Destination(match peer {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(m));
    // APPEND: the all-zero entry holds a list of remotes, one per peer.
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    let mut answers = h
        .clone()
        .request(req)
        .map_err(|e| net(format!("flooding to {peer}"), e))?;
    while let Some(a) = answers.next().await {
        if let NetlinkPayload::Error(e) = a.payload {
            if e.code.is_some() {
                return Err(net(
                    format!("flooding to {peer}"),
                    rtnetlink::Error::NetlinkError(e),
                ));
            }
        }
    }
    Ok(())
}

/// `bridge fdb replace MAC dev PORT master static`: the bridge forwards `mac` to
/// `port` from now on, whatever it learnt before.
pub async fn pin_mac(h: &Handle, port: u32, mac: [u8; 6]) -> Result<()> {
    h.neighbours()
        .add_bridge(port, &mac)
        .flags(NeighbourFlags::Controller)
        .state(NeighbourState::Noarp)
        .replace()
        .execute()
        .await
        .map_err(|e| net("pinning a MAC to its tap", e))
}

/// `bridge fdb del MAC dev PORT master`: forgets where the bridge learnt `mac`.
pub async fn forget_mac(h: &Handle, port: u32, mac: [u8; 6]) -> Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = port;
    m.header.flags = NeighbourFlags::Controller;
    m.attributes
        .push(NeighbourAttribute::LinkLocalAddress(mac.to_vec()));
    match h.neighbours().del(m).execute().await {
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
        r => r.map_err(|e| net("forgetting a learnt MAC", e)),
    }
}
