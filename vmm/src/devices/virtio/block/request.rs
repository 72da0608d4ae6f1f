//! A virtio-blk request decoded from a validated chain, every bound checked before
//! the backend sees it.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::GuestAddress;

use crate::devices::virtio::chain::{read_from, sub_ranges, Buffer, ValidChain};
use crate::memory::GuestMemory;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Largest data transfer of one request; bigger ones fail (Linux sends at most a few MiB,
/// and io_uring caps one transfer just under 2 GiB).
pub const MAX_REQUEST_BYTES: u32 = 1 << 30;
/// Size of `struct virtio_blk_outhdr`.
const HEADER_LEN: u32 = 16;

/// What the driver asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Read,
    Write,
    Flush,
    GetId,
}

/// A request the backend can execute as is.
#[derive(Debug)]
pub(crate) struct Request {
    pub kind: RequestKind,
    pub head: u16,
    /// Byte offset in the disk (reads and writes).
    pub offset: u64,
    /// The guest buffers holding the data, in order.
    pub data: Vec<Buffer>,
    pub data_len: u32,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// A request answered without the backend: `status` at `status_addr`, or, when the chain
/// has no place for a status byte, consumed with used length 0.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status_addr: Option<GuestAddress>,
    pub status: u8,
    pub reason: String,
}

/// Decodes `chain` against a disk of `capacity_sectors`.
pub(crate) fn parse(
    mem: &GuestMemory,
    chain: &ValidChain,
    capacity_sectors: u64,
    read_only: bool,
) -> Result<Request, Refusal> {
    let head = chain.head;
    let status = chain
        .writable
        .last()
        .map(|b| GuestAddress(b.addr.0 + u64::from(b.len) - 1));
    let refuse = |status_byte: u32, reason: String| Refusal {
        status_addr: status,
        status: status_byte as u8,
        reason,
    };
    let Some(status_addr) = status else {
        return Err(refuse(
            VIRTIO_BLK_S_IOERR,
            "no device-writable status byte".into(),
        ));
    };
    let mut header = [0u8; HEADER_LEN as usize];
    if chain.readable_len < HEADER_LEN || !read_from(mem, &chain.readable, 0, &mut header) {
        return Err(refuse(
            VIRTIO_BLK_S_IOERR,
            "request header shorter than 16 bytes".into(),
        ));
    }
    let request_type = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    // Bytes after the header the device reads, bytes before the status it writes.
    let out_len = chain.readable_len - HEADER_LEN;
    let in_len = chain.writable_len - 1;

    let (kind, data, data_len) = match request_type {
        VIRTIO_BLK_T_IN => {
            if out_len != 0 {
                return Err(refuse(
                    VIRTIO_BLK_S_IOERR,
                    "read request carries data".into(),
                ));
            }
            (
                RequestKind::Read,
                sub_ranges(&chain.writable, 0, in_len),
                in_len,
            )
        }
        VIRTIO_BLK_T_OUT => {
            if in_len != 0 {
                return Err(refuse(
                    VIRTIO_BLK_S_IOERR,
                    "write request has writable data".into(),
                ));
            }
            if read_only {
                return Err(refuse(
                    VIRTIO_BLK_S_IOERR,
                    "write to a read-only disk".into(),
                ));
            }
            (
                RequestKind::Write,
                sub_ranges(&chain.readable, HEADER_LEN, out_len),
                out_len,
            )
        }
        VIRTIO_BLK_T_FLUSH => (RequestKind::Flush, Vec::new(), 0),
        VIRTIO_BLK_T_GET_ID => (
            RequestKind::GetId,
            sub_ranges(&chain.writable, 0, in_len),
            in_len,
        ),
        other => {
            return Err(refuse(
                VIRTIO_BLK_S_UNSUPP,
                format!("unsupported request type {other}"),
            ))
        }
    };

    let mut offset = 0;
    if matches!(kind, RequestKind::Read | RequestKind::Write) {
        if !u64::from(data_len).is_multiple_of(SECTOR_SIZE) {
            let reason = format!("data length {data_len} is not a multiple of 512");
            return Err(refuse(VIRTIO_BLK_S_IOERR, reason));
        }
        if data_len > MAX_REQUEST_BYTES {
            return Err(refuse(
                VIRTIO_BLK_S_IOERR,
                format!("data length {data_len} too large"),
            ));
        }
        let end_sector = sector.checked_add(u64::from(data_len) / SECTOR_SIZE);
        if end_sector.is_none_or(|end| end > capacity_sectors) {
            let reason = format!(
                "sectors {sector}+{} beyond capacity {capacity_sectors}",
                data_len / SECTOR_SIZE as u32
            );
            return Err(refuse(VIRTIO_BLK_S_IOERR, reason));
        }
        offset = sector * SECTOR_SIZE;
    }
    Ok(Request {
        kind,
        head,
        offset,
        data,
        data_len,
        status: status_addr,
    })
}
