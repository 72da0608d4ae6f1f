//! Descriptor chains of a split virtqueue, validated before a device touches them.
//!
//! Everything here is guest-controlled: the walk is bounded by the queue size, every
//! buffer is checked against guest memory, lengths are summed with overflow checks,
//! device-readable buffers must precede device-writable ones, and indirect descriptors
//! are refused (we never offer VIRTIO_F_INDIRECT_DESC). A chain that fails still tells
//! the device where its status byte is, when that can be known safely.

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::memory::GuestMemory;

/// A guest buffer of a validated chain: inside guest memory, length non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A chain whose buffers all lie in guest memory, readable ones first.
#[derive(Debug)]
pub(crate) struct ValidChain {
    pub head: u16,
    /// Buffers the device may read (the driver's request), in order.
    pub readable: Vec<Buffer>,
    /// Buffers the device may write (its answer), in order.
    pub writable: Vec<Buffer>,
    pub readable_len: u32,
    pub writable_len: u32,
}

/// What is wrong with a chain.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChainError {
    #[error("descriptor index {index} is beyond the queue size {size}")]
    IndexOutOfRange { index: u16, size: u16 },
    #[error("chain has more descriptors than the queue size {size} (a loop)")]
    TooLong { size: u16 },
    #[error("descriptor table entry {index} is not readable")]
    DescriptorTable { index: u16 },
    #[error("indirect descriptor, but VIRTIO_F_INDIRECT_DESC was not negotiated")]
    Indirect,
    #[error("buffer {addr:#x}+{len:#x} is not inside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("chain is longer than 4 GiB")]
    TooManyBytes,
    #[error("a device-readable buffer follows a device-writable one")]
    ReadableAfterWritable,
}

/// A chain that failed validation.
#[derive(Debug)]
pub(crate) struct BadChain {
    pub error: ChainError,
    /// The last byte of the chain's last buffer, if the chain ended properly and that
    /// buffer is device-writable, non-empty and inside guest memory: where a status
    /// byte goes.
    pub status: Option<GuestAddress>,
}

/// Walks the chain starting at `head` in the descriptor table at `desc_table` of a
/// queue of `queue_size` entries, and validates every descriptor.
pub(crate) fn read_chain(
    mem: &GuestMemory,
    desc_table: GuestAddress,
    queue_size: u16,
    head: u16,
) -> Result<ValidChain, BadChain> {
    let bad = |error, status| BadChain { error, status };

    // Pass 1: the chain's shape, following `next` at most `queue_size` times.
    let mut descriptors: Vec<Descriptor> = Vec::new();
    let mut index = head;
    loop {
        if index >= queue_size {
            return Err(bad(
                ChainError::IndexOutOfRange {
                    index,
                    size: queue_size,
                },
                None,
            ));
        }
        if descriptors.len() >= usize::from(queue_size) {
            return Err(bad(ChainError::TooLong { size: queue_size }, None));
        }
        // In range of the table, which the transport checked lies in guest memory.
        let desc: Descriptor = desc_table
            .checked_add(u64::from(index) * 16)
            .and_then(|addr| mem.read_obj(addr).ok())
            .ok_or_else(|| bad(ChainError::DescriptorTable { index }, None))?;
        descriptors.push(desc);
        if desc.flags() & VRING_DESC_F_NEXT as u16 == 0 {
            break;
        }
        index = desc.next();
    }

    // Pass 2: each buffer. From here on, the status byte can be located.
    let status = descriptors.last().and_then(|last| {
        let writable = last.flags() & VRING_DESC_F_WRITE as u16 != 0;
        let end = last
            .addr()
            .checked_add(u64::from(last.len()).checked_sub(1)?)?;
        (writable && mem.address_in_range(end)).then_some(end)
    });
    let mut chain = ValidChain {
        head,
        readable: Vec::new(),
        writable: Vec::new(),
        readable_len: 0,
        writable_len: 0,
    };
    let mut total: u32 = 0;
    for desc in &descriptors {
        let flags = desc.flags();
        if flags & VRING_DESC_F_INDIRECT as u16 != 0 {
            return Err(bad(ChainError::Indirect, status));
        }
        total = total
            .checked_add(desc.len())
            .ok_or_else(|| bad(ChainError::TooManyBytes, status))?;
        if desc.len() == 0 {
            continue;
        }
        if !buffer_in_memory(mem, desc.addr(), desc.len()) {
            let error = ChainError::OutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            };
            return Err(bad(error, status));
        }
        let buffer = Buffer {
            addr: desc.addr(),
            len: desc.len(),
        };
        if flags & VRING_DESC_F_WRITE as u16 != 0 {
            chain.writable.push(buffer);
            chain.writable_len += desc.len();
        } else {
            if !chain.writable.is_empty() {
                return Err(bad(ChainError::ReadableAfterWritable, status));
            }
            chain.readable.push(buffer);
            chain.readable_len += desc.len();
        }
    }
    Ok(chain)
}

/// Whether `addr..addr+len` lies entirely in guest RAM (possibly over adjacent regions).
pub(crate) fn buffer_in_memory(mem: &GuestMemory, addr: GuestAddress, len: u32) -> bool {
    let Ok(len) = usize::try_from(len) else {
        return false;
    };
    addr.checked_add(len as u64).is_some()
        && GuestMemoryBackend::get_slices(mem, addr, len).all(|slice| slice.is_ok())
}

/// A byte range `[start, start+len)` of the concatenation of `buffers`, as guest ranges.
pub(crate) fn sub_ranges(buffers: &[Buffer], start: u32, len: u32) -> Vec<Buffer> {
    let mut out = Vec::new();
    let mut skip = start;
    let mut want = len;
    for b in buffers {
        if want == 0 {
            break;
        }
        if skip >= b.len {
            skip -= b.len;
            continue;
        }
        let n = (b.len - skip).min(want);
        out.push(Buffer {
            addr: GuestAddress(b.addr.0 + u64::from(skip)),
            len: n,
        });
        want -= n;
        skip = 0;
    }
    out
}

/// Reads `out.len()` bytes starting `start` bytes into `buffers`; false if they are shorter.
pub(crate) fn read_from(mem: &GuestMemory, buffers: &[Buffer], start: u32, out: &mut [u8]) -> bool {
    let Ok(len) = u32::try_from(out.len()) else {
        return false;
    };
    let mut done = 0usize;
    for range in sub_ranges(buffers, start, len) {
        let n = range.len as usize;
        if mem
            .read_slice(&mut out[done..done + n], range.addr)
            .is_err()
        {
            return false;
        }
        done += n;
    }
    done == out.len()
}

/// Writes `data` starting `start` bytes into `buffers` (through vm-memory, so the dirty
/// bitmap sees it); returns how many bytes fit.
pub(crate) fn write_to(mem: &GuestMemory, buffers: &[Buffer], start: u32, data: &[u8]) -> usize {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut done = 0usize;
    for range in sub_ranges(buffers, start, len) {
        let n = range.len as usize;
        if mem.write_slice(&data[done..done + n], range.addr).is_err() {
            break;
        }
        done += n;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_memfd, map_memfd};

    fn memory() -> GuestMemory {
        let fd = create_memfd(64).unwrap();
        map_memfd(&fd, 64 << 20).unwrap()
    }

    const TABLE: GuestAddress = GuestAddress(0x1000);

    fn put(mem: &GuestMemory, index: u16, addr: u64, len: u32, flags: u32, next: u16) {
        let desc = Descriptor::new(addr, len, flags as u16, next);
        mem.write_obj(desc, TABLE.unchecked_add(u64::from(index) * 16))
            .unwrap();
    }

    #[test]
    fn a_well_formed_chain_is_split_into_readable_and_writable_buffers() {
        let mem = memory();
        put(&mem, 0, 0x10000, 16, VRING_DESC_F_NEXT, 1);
        put(
            &mem,
            1,
            0x20000,
            512,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            2,
        );
        put(&mem, 2, 0x30000, 1, VRING_DESC_F_WRITE, 0);
        let chain = read_chain(&mem, TABLE, 8, 0).unwrap();
        assert_eq!(chain.readable_len, 16);
        assert_eq!(chain.writable_len, 513);
        assert_eq!(chain.writable.len(), 2);
    }

    #[test]
    fn a_looping_chain_is_refused_without_a_status_location() {
        let mem = memory();
        put(&mem, 0, 0x10000, 16, VRING_DESC_F_NEXT, 1);
        put(
            &mem,
            1,
            0x20000,
            1,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            0,
        );
        let bad = read_chain(&mem, TABLE, 8, 0).unwrap_err();
        assert_eq!(bad.error, ChainError::TooLong { size: 8 });
        assert_eq!(bad.status, None);
    }

    #[test]
    fn next_beyond_the_queue_and_heads_beyond_the_queue_are_refused() {
        let mem = memory();
        put(&mem, 0, 0x10000, 16, VRING_DESC_F_NEXT, 200);
        assert!(matches!(
            read_chain(&mem, TABLE, 8, 0).unwrap_err().error,
            ChainError::IndexOutOfRange {
                index: 200,
                size: 8
            }
        ));
        assert!(matches!(
            read_chain(&mem, TABLE, 8, 9).unwrap_err().error,
            ChainError::IndexOutOfRange { index: 9, .. }
        ));
    }

    #[test]
    fn bad_buffers_are_refused_with_the_status_byte_located() {
        let mem = memory();
        // Outside memory, then a good status descriptor.
        put(&mem, 0, 0x10000, 16, VRING_DESC_F_NEXT, 1);
        put(
            &mem,
            1,
            0xFFFF_FFFF_FFFF_F000,
            0x2000,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            2,
        );
        put(&mem, 2, 0x30000, 1, VRING_DESC_F_WRITE, 0);
        let bad = read_chain(&mem, TABLE, 8, 0).unwrap_err();
        assert!(matches!(bad.error, ChainError::OutsideMemory { .. }));
        assert_eq!(bad.status, Some(GuestAddress(0x30000)));
        // Straddling the end of RAM.
        put(
            &mem,
            1,
            (64 << 20) - 8,
            16,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            2,
        );
        assert!(matches!(
            read_chain(&mem, TABLE, 8, 0).unwrap_err().error,
            ChainError::OutsideMemory { .. }
        ));
        // Lengths summing past 4 GiB.
        put(
            &mem,
            1,
            0x20000,
            u32::MAX,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            2,
        );
        assert_eq!(
            read_chain(&mem, TABLE, 8, 0).unwrap_err().error,
            ChainError::TooManyBytes
        );
        // Indirect.
        put(
            &mem,
            1,
            0x20000,
            64,
            VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT,
            2,
        );
        assert_eq!(
            read_chain(&mem, TABLE, 8, 0).unwrap_err().error,
            ChainError::Indirect
        );
        // Readable after writable.
        put(
            &mem,
            0,
            0x10000,
            16,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
            1,
        );
        put(&mem, 1, 0x20000, 16, VRING_DESC_F_NEXT, 2);
        let bad = read_chain(&mem, TABLE, 8, 0).unwrap_err();
        assert_eq!(bad.error, ChainError::ReadableAfterWritable);
        assert_eq!(bad.status, Some(GuestAddress(0x30000)));
        // A read-only last descriptor is no place for a status.
        put(
            &mem,
            0,
            0x10000,
            16,
            VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT,
            1,
        );
        put(&mem, 1, 0x20000, 16, 0, 0);
        assert_eq!(read_chain(&mem, TABLE, 8, 0).unwrap_err().status, None);
    }

    #[test]
    fn byte_ranges_span_buffers() {
        let mem = memory();
        let bufs = [
            Buffer {
                addr: GuestAddress(0x1000),
                len: 10,
            },
            Buffer {
                addr: GuestAddress(0x2000),
                len: 10,
            },
        ];
        assert_eq!(write_to(&mem, &bufs, 5, &[7u8; 30]), 15);
        let mut out = [0u8; 10];
        assert!(read_from(&mem, &bufs, 5, &mut out));
        assert_eq!(out, [7u8; 10]);
        assert!(!read_from(&mem, &bufs, 15, &mut out));
        assert_eq!(
            sub_ranges(&bufs, 8, 4),
            vec![
                Buffer {
                    addr: GuestAddress(0x1008),
                    len: 2
                },
                Buffer {
                    addr: GuestAddress(0x2000),
                    len: 2
                }
            ]
        );
    }
}
