//! A device's request handling replayed over a virtqueue laid out in guest memory,
//! without the device's backend: the queue's rings are walked with virtio-queue as
//! the workers walk them, every chain validated ([`super::chain`]), and each request
//! decoded and answered as virtio-blk ([`blk_queue`]) or virtio-net ([`net_queue`])
//! would, stopping only before the disk or tap I/O. Everything in guest memory is
//! hostile; the fuzz targets `virtio_blk_queue` and `virtio_net_queue` fill it from
//! their input and run these.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestAddress;

use super::chain::{read_chain, read_from, write_to};
use crate::memory::GuestMemory;

/// Where a queue's parts are in guest memory, and its size (as a driver sets it).
#[derive(Clone, Copy, Debug)]
pub struct QueueLayout {
    pub size: u16,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl QueueLayout {
    /// A layout from the first 26 bytes of `input` (the fuzz targets' header).
    pub fn from_bytes(input: &[u8]) -> Option<(QueueLayout, &[u8])> {
        let (h, rest) = input.split_at_checked(26)?;
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
        Some((
            QueueLayout {
                size: u16::from_le_bytes([h[0], h[1]]),
                desc_table: u64_at(2),
                avail_ring: u64_at(10),
                used_ring: u64_at(18),
            },
            rest,
        ))
    }

    /// The queue, if a driver could have set it up so (else the device refuses it).
    fn queue(&self, mem: &GuestMemory) -> Option<Queue> {
        let mut q = Queue::new(256).ok()?;
        q.try_set_size(self.size).ok()?;
        q.try_set_desc_table_address(GuestAddress(self.desc_table))
            .ok()?;
        q.try_set_avail_ring_address(GuestAddress(self.avail_ring))
            .ok()?;
        q.try_set_used_ring_address(GuestAddress(self.used_ring))
            .ok()?;
        q.set_ready(true);
        q.is_valid(mem).then_some(q)
    }
}

/// What a replay saw: chains offered, valid, and requests accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub offered: usize,
    pub valid_chains: usize,
    pub accepted: usize,
}

/// Takes the chains the guest offers (at most one queue's worth: a worker's batch),
/// handing each head and its validated chain to `handle`, then completes it.
fn drain(
    mem: &GuestMemory,
    layout: QueueLayout,
    mut handle: impl FnMut(Option<super::chain::ValidChain>) -> (bool, u32),
) -> Replayed {
    let mut seen = Replayed::default();
    let Some(mut queue) = layout.queue(mem) else {
        return seen;
    };
    for _ in 0..layout.size {
        let head = match queue.iter(mem) {
            Ok(mut avail) => match avail.next() {
                Some(chain) => chain.head_index(),
                None => break,
            },
            Err(_) => break,
        };
        seen.offered += 1;
        let chain = read_chain(mem, GuestAddress(queue.desc_table()), queue.size(), head).ok();
        seen.valid_chains += usize::from(chain.is_some());
        let (accepted, used) = handle(chain);
        seen.accepted += usize::from(accepted);
        if queue.add_used(mem, head, used).is_err() {
            break;
        }
    }
    seen
}

/// virtio-blk: each request decoded against a disk of `capacity_sectors`, mapped to
/// host iovecs as for io_uring, and answered (status byte, GET_ID's serial).
pub fn blk_queue(
    mem: &GuestMemory,
    layout: QueueLayout,
    capacity_sectors: u64,
    read_only: bool,
) -> Replayed {
    use super::block::replay_request;
    drain(mem, layout, |chain| match chain {
        Some(c) => replay_request(mem, &c, capacity_sectors, read_only),
        None => (false, 1),
    })
}

/// virtio-net: a chain as a transmitted frame (header and frame read out, as to the
/// tap) and as a receive buffer (a frame of `rx_len` bytes written in).
pub fn net_queue(mem: &GuestMemory, layout: QueueLayout, rx_len: usize) -> Replayed {
    use super::net::{MAX_FRAME_LEN, VNET_HDR_LEN};
    let mut frame = vec![0u8; VNET_HDR_LEN + MAX_FRAME_LEN];
    let rx = vec![0x5au8; rx_len.min(VNET_HDR_LEN + MAX_FRAME_LEN)];
    drain(mem, layout, |chain| {
        let Some(c) = chain else { return (false, 0) };
        let len = c.readable_len as usize;
        let tx_ok = c.writable.is_empty()
            && (VNET_HDR_LEN..=VNET_HDR_LEN + MAX_FRAME_LEN).contains(&len)
            && read_from(mem, &c.readable, 0, &mut frame[..len]);
        let written = match c.readable.is_empty() && c.writable_len as usize >= rx.len() {
            true => write_to(mem, &c.writable, 0, &rx),
            false => 0,
        };
        (tx_ok || written == rx.len(), written as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    /// Guest memory holding a fuzz seed's image, and the seed's layout and parameters.
    fn load(seed: &[u8], params: usize) -> (GuestMemory, QueueLayout, Vec<u8>) {
        let memfd = crate::memory::create_memfd(64).unwrap();
        let mem = crate::memory::map_memfd(&memfd, 64 << 20).unwrap();
        let (layout, rest) = QueueLayout::from_bytes(seed).unwrap();
        let (p, image) = rest.split_at(params);
        mem.write_slice(image, GuestAddress(0)).unwrap();
        (mem, layout, p.to_vec())
    }

    fn blk(seed: &[u8]) -> (Replayed, GuestMemory) {
        let (mem, layout, p) = load(seed, 9);
        let capacity = u64::from_le_bytes(p[..8].try_into().unwrap());
        (blk_queue(&mem, layout, capacity, p[8] & 1 == 1), mem)
    }

    #[test]
    fn the_committed_block_seeds_decode_as_the_requests_they_are() {
        let (r, mem) = blk(include_bytes!(
            "../../../../fuzz/corpus/virtio_blk_queue/read"
        ));
        assert_eq!((r.offered, r.valid_chains, r.accepted), (1, 1, 1));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x6000)).unwrap(), 0);
        let (r, _) = blk(include_bytes!(
            "../../../../fuzz/corpus/virtio_blk_queue/write"
        ));
        assert_eq!(r.accepted, 1);
        let (r, mem) = blk(include_bytes!(
            "../../../../fuzz/corpus/virtio_blk_queue/flush_getid"
        ));
        assert_eq!((r.offered, r.accepted), (2, 2));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x5000)).unwrap(), b'n');
        // Two looping chains are refused, not followed; an empty descriptor is a
        // chain without a request.
        let (r, _) = blk(include_bytes!(
            "../../../../fuzz/corpus/virtio_blk_queue/loop"
        ));
        assert_eq!((r.offered, r.valid_chains, r.accepted), (3, 1, 0));
    }

    #[test]
    fn the_committed_net_seeds_send_and_receive_only_well_formed_chains() {
        let net = |seed: &[u8]| {
            let (mem, layout, p) = load(seed, 2);
            net_queue(&mem, layout, u16::from_le_bytes([p[0], p[1]]) as usize)
        };
        let tx = net(include_bytes!(
            "../../../../fuzz/corpus/virtio_net_queue/tx"
        ));
        assert_eq!((tx.offered, tx.accepted), (1, 1));
        let rx = net(include_bytes!(
            "../../../../fuzz/corpus/virtio_net_queue/rx"
        ));
        assert_eq!((rx.offered, rx.accepted), (1, 1));
        // Readable and writable buffers in one chain, and a zero-length buffer.
        let mixed = net(include_bytes!(
            "../../../../fuzz/corpus/virtio_net_queue/mixed"
        ));
        assert_eq!((mixed.offered, mixed.accepted), (2, 0));
    }

    #[test]
    fn a_queue_outside_guest_memory_is_not_walked() {
        let memfd = crate::memory::create_memfd(64).unwrap();
        let mem = crate::memory::map_memfd(&memfd, 64 << 20).unwrap();
        let layout = QueueLayout {
            size: 8,
            desc_table: u64::MAX - 0xfff,
            avail_ring: 0x2000,
            used_ring: 0x3000,
        };
        assert_eq!(blk_queue(&mem, layout, 8, false), Replayed::default());
    }
}
