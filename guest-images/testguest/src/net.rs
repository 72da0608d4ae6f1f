//! virtio-net driver and a tiny responder: ARP requests for our IP, ICMP echo, and
//! UDP echo on port 7. Everything malformed or not for us is dropped.

use crate::pvh::Config;
use crate::virtio::{self, Dma, Queue, DESC_WRITE};

const F_MAC: u32 = 1 << 5;
/// virtio_net_hdr with VIRTIO_F_VERSION_1 (num_buffers included).
const HDR: usize = 12;
const BUF: usize = 2048;
const NBUF: usize = virtio::QSIZE;
const ETH: usize = 14;
const MAX_FRAME: usize = 1514;

#[link_section = ".bss.noinit.net_rxq"]
static RXQ: Dma<[u8; 4096]> = Dma::new();
#[link_section = ".bss.noinit.net_txq"]
static TXQ: Dma<[u8; 4096]> = Dma::new();
#[link_section = ".bss.noinit.net_rx"]
static RXBUF: Dma<[[u8; BUF]; NBUF]> = Dma::new();
#[link_section = ".bss.noinit.net_tx"]
static TXBUF: Dma<[[u8; BUF]; NBUF]> = Dma::new();

/// Counters of what the responder did.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    /// Frames received.
    pub rx: u64,
    /// Replies sent.
    pub tx: u64,
    /// Frames dropped as malformed or unanswerable.
    pub dropped: u64,
}

/// An initialised virtio-net device and its responder state.
pub struct Net {
    rx: Queue,
    tx: Queue,
    /// Our MAC address.
    pub mac: [u8; 6],
    /// Our IPv4 address.
    pub ip: [u8; 4],
    tx_free: u32,
    /// Counters.
    pub stats: Stats,
}

fn rx_buf(i: usize) -> *mut u8 {
    // SAFETY: pointer arithmetic inside RXBUF for i < NBUF (callers check).
    unsafe { (RXBUF.ptr() as *mut u8).add(i * BUF) }
}

fn tx_buf(i: usize) -> *mut u8 {
    // SAFETY: pointer arithmetic inside TXBUF for i < NBUF (callers check).
    unsafe { (TXBUF.ptr() as *mut u8).add(i * BUF) }
}

fn be16(b: &[u8], at: usize) -> u16 {
    match (b.get(at), b.get(at + 1)) {
        (Some(&h), Some(&l)) => (h as u16) << 8 | l as u16,
        _ => 0,
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Adds `b` as big-endian 16-bit words to a ones'-complement accumulator.
fn sum16(mut acc: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        if let [h, l] = *c {
            acc += (h as u32) << 8 | l as u32;
        }
    }
    if let [h] = *chunks.remainder() {
        acc += (h as u32) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

impl Net {
    /// Finds and initialises the first virtio-net device; posts every receive buffer.
    pub fn init(cfg: &Config, ip: [u8; 4]) -> Result<Net, &'static str> {
        let t = virtio::find(cfg, virtio::ID_NET).ok_or("no_net_device")?;
        let feats = t.negotiate(F_MAC)?;
        let rx = t.queue(0, &RXQ)?;
        let tx = t.queue(1, &TXQ)?;
        let mut mac = [0x52, 0x54, 0x00, 0x4e, 0x56, 0x01];
        if feats & F_MAC != 0 {
            for (i, m) in mac.iter_mut().enumerate() {
                *m = t.config8(i);
            }
        } else {
            crate::serial::error("net_no_mac");
        }
        let mut net = Net {
            rx,
            tx,
            mac,
            ip,
            tx_free: 0,
            stats: Stats::default(),
        };
        net.tx_free = (1u32 << net.tx.size) - 1;
        for i in 0..net.rx.size {
            net.rx
                .set_desc(i, rx_buf(i as usize) as u64, BUF as u32, DESC_WRITE, 0);
            net.rx.submit(i);
        }
        t.driver_ok();
        Ok(net)
    }

    /// Handles what has arrived (a few frames at most); returns whether any did.
    pub fn poll(&mut self) -> bool {
        while let Some((id, _)) = self.tx.pop() {
            if id < self.tx.size as u32 {
                self.tx_free |= 1 << id;
            }
        }
        let mut any = false;
        for _ in 0..4 {
            let Some((id, len)) = self.rx.pop() else {
                break;
            };
            any = true;
            if id >= self.rx.size as u32 {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.rx += 1;
            let len = len as usize;
            if (HDR + ETH..=BUF).contains(&len) {
                // SAFETY: the device returned buffer `id` holding `len` <= BUF bytes;
                // it is ours until we post it again below.
                let frame =
                    unsafe { core::slice::from_raw_parts(rx_buf(id as usize).add(HDR), len - HDR) };
                self.handle(frame);
            } else {
                self.stats.dropped += 1;
            }
            self.rx.submit(id as u16);
        }
        any
    }

    fn handle(&mut self, frame: &[u8]) {
        if self.tx_free == 0 {
            self.stats.dropped += 1;
            return;
        }
        let slot = self.tx_free.trailing_zeros() as usize;
        // SAFETY: tx buffer `slot` is free (not owned by the device).
        let out = unsafe { core::slice::from_raw_parts_mut(tx_buf(slot), BUF) };
        let (hdr, reply) = out.split_at_mut(HDR);
        hdr.fill(0);
        let n = match be16(frame, 12) {
            0x0806 => self.arp(frame, reply),
            0x0800 => self.ipv4(frame, reply),
            _ => None,
        };
        let Some(n) = n else {
            self.stats.dropped += 1;
            return;
        };
        if let Some(pad) = reply.get_mut(n..60) {
            pad.fill(0);
        }
        let n = n.max(60);
        self.tx_free &= !(1 << slot);
        self.tx
            .set_desc(slot as u16, tx_buf(slot) as u64, (HDR + n) as u32, 0, 0);
        self.tx.submit(slot as u16);
        self.stats.tx += 1;
    }

    /// Ethernet header of a reply to `frame`.
    fn eth(&self, frame: &[u8], out: &mut [u8], ethertype: u16) -> Option<()> {
        out.get_mut(0..6)?.copy_from_slice(frame.get(6..12)?);
        out.get_mut(6..12)?.copy_from_slice(&self.mac);
        put16(out, 12, ethertype);
        Some(())
    }

    fn arp(&self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let a = frame.get(ETH..ETH + 28)?;
        if be16(a, 0) != 1 || be16(a, 2) != 0x0800 || a.get(4..6)? != [6, 4] || be16(a, 6) != 1 {
            return None;
        }
        if a.get(24..28)? != self.ip {
            return None;
        }
        out.get_mut(..60)?.fill(0);
        self.eth(frame, out, 0x0806)?;
        let r = out.get_mut(ETH..ETH + 28)?;
        r.get_mut(0..6)?.copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        put16(r, 6, 2);
        r.get_mut(8..14)?.copy_from_slice(&self.mac);
        r.get_mut(14..18)?.copy_from_slice(&self.ip);
        r.get_mut(18..28)?.copy_from_slice(a.get(8..18)?);
        Some(ETH + 28)
    }

    fn ipv4(&self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let ip = frame.get(ETH..)?;
        let ver_ihl = *ip.first()?;
        let ihl = (ver_ihl & 0xf) as usize * 4;
        let total = be16(ip, 2) as usize;
        if ver_ihl >> 4 != 4
            || ihl < 20
            || total < ihl
            || total > ip.len()
            || total + ETH > MAX_FRAME
        {
            return None;
        }
        let ip = ip.get(..total)?;
        let head = ip.get(..ihl)?;
        if fold(sum16(0, head)) != 0 || be16(ip, 6) & 0x3fff != 0 || ip.get(16..20)? != self.ip {
            return None;
        }
        let proto = *ip.get(9)?;
        let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
        if src == [255; 4] || src[0] >= 224 || src[0] == 0 {
            return None;
        }
        let payload = ip.get(ihl..)?;
        // Reply IP header (no options) at out[ETH..ETH+20], payload after it.
        let body = out.get_mut(ETH + 20..)?;
        let plen = match proto {
            1 => icmp_echo(payload, body)?,
            17 => udp_echo(payload, body, &src, &self.ip)?,
            _ => return None,
        };
        self.eth(frame, out, 0x0800)?;
        let h = out.get_mut(ETH..ETH + 20)?;
        h[0] = 0x45;
        h[1] = 0;
        put16(h, 2, (20 + plen) as u16);
        put16(h, 4, be16(ip, 4));
        put16(h, 6, 0x4000);
        h[8] = 64;
        h[9] = proto;
        put16(h, 10, 0);
        h.get_mut(12..16)?.copy_from_slice(&self.ip);
        h.get_mut(16..20)?.copy_from_slice(&src);
        let c = fold(sum16(0, h));
        put16(h, 10, c);
        Some(ETH + 20 + plen)
    }
}

/// ICMP echo request -> echo reply in `out`; returns its length.
fn icmp_echo(req: &[u8], out: &mut [u8]) -> Option<usize> {
    if req.len() < 8 || *req.first()? != 8 || *req.get(1)? != 0 || fold(sum16(0, req)) != 0 {
        return None;
    }
    let r = out.get_mut(..req.len())?;
    r.copy_from_slice(req);
    r[0] = 0;
    put16(r, 2, 0);
    let c = fold(sum16(0, r));
    put16(r, 2, c);
    Some(req.len())
}

/// UDP datagram to port 7 -> the same payload back, ports swapped; returns its length.
fn udp_echo(req: &[u8], out: &mut [u8], src: &[u8; 4], dst: &[u8; 4]) -> Option<usize> {
    let len = be16(req, 4) as usize;
    if len < 8 || len > req.len() || be16(req, 2) != 7 {
        return None;
    }
    let req = req.get(..len)?;
    let pseudo = |a: &[u8; 4], b: &[u8; 4]| sum16(sum16(17 + len as u32, a), b);
    if be16(req, 6) != 0 && fold(sum16(pseudo(src, dst), req)) != 0 {
        return None;
    }
    let r = out.get_mut(..len)?;
    r.copy_from_slice(req);
    put16(r, 0, be16(req, 2));
    put16(r, 2, be16(req, 0));
    put16(r, 6, 0);
    let c = match fold(sum16(pseudo(dst, src), r)) {
        0 => 0xffff,
        c => c,
    };
    put16(r, 6, c);
    Some(len)
}
