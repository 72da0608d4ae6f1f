//! The migration stream: one framed, versioned message enum spoken over TCP by the
//! sender (source VMM) and the receiver (destination VMM), for every mode.
//!
//! Frame: `u32 length | u8 kind | payload` (length counts kind and payload). A stream
//! opens with [`Message::Hello`]; the data connections of a multi-connection migration
//! open with [`Message::DataHello`], and a post-copy-capable one's connection for
//! requested pages with [`Message::UrgentHello`]. Anything malformed ends the migration with an
//! error, never a panic, and the source keeps running.
//!
//! This file is over 500 lines: one enum with its encoder and decoder side by side, so that every
//! message's wire form is read (and reviewed) in one place.

use std::io::{Read, Write};
use std::time::Duration;

/// Magic in every Hello, so a stray connection is refused at once.
pub const MAGIC: &[u8; 8] = b"NOVAMIGR";
/// Version of this protocol; a peer with another version is refused. Version 2: the
/// state follows the data connections' `Flush` without waiting for `Flushed`. Version
/// 3: the state is `crate::state` version 3, and `Resumed` says when the vCPUs ran.
/// Version 4: the state is `crate::state` version 4 (KVM's blocks as raw bytes).
/// Version 5: post-copy serves requested pages on their own connection (`UrgentHello`).
/// Version 6: disks travel with memory (`Blocks`, `ZeroBlocks`).
/// Version 7: re-sent disk blocks may travel as XOR deltas (`BlockDeltas`).
pub const VERSION: u32 = 7;
/// How long either side waits for the other to send or take anything before it
/// counts the peer as gone: a hung or blackholed peer must not keep a VM paused.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame we accept (a batch of 256 pages plus indices, with room to spare).
pub const MAX_FRAME: usize = 4 << 20;
/// Pages per [`Message::Pages`] batch.
pub const BATCH_PAGES: usize = 256;

/// How a batch of page data is encoded (the API's compression choice).
use nova_vmm_api::Compression;

fn compression_code(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Zstd => 1,
        Compression::Lz4 => 2,
    }
}

fn compression_from_code(c: u8) -> Option<Compression> {
    Some(match c {
        0 => Compression::None,
        1 => Compression::Zstd,
        2 => Compression::Lz4,
        _ => return None,
    })
}

/// Every message of the protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// Source -> destination, first on the control connection: version, how many data
    /// connections follow, and the VM's configuration (JSON).
    Hello {
        version: u32,
        connections: u32,
        config: Vec<u8>,
    },
    /// Destination: the VM is built from the Hello's configuration; send memory.
    Welcome,
    /// First on each extra data connection: its index (1..connections).
    DataHello { version: u32, index: u32 },
    /// First on the connection that carries only the pages a post-copy destination
    /// asked for (post-copy and hybrid): they never queue behind the background push.
    /// `Hello`'s `connections` counts it.
    UrgentHello { version: u32 },
    /// Pages by RAM page index, with their data (4096 bytes each) encoded.
    Pages {
        indices: Vec<u64>,
        compression: Compression,
        data: Vec<u8>,
    },
    /// Pages that are now zero.
    ZeroPages { indices: Vec<u64> },
    /// Blocks (4 KiB, by index) of disk `disk` (its place in the configuration), with
    /// their data encoded like pages'; a partial last block is padded with zeros.
    Blocks {
        disk: u32,
        indices: Vec<u64>,
        compression: Compression,
        data: Vec<u8>,
    },
    /// Blocks of disk `disk` that are now zero.
    ZeroBlocks { disk: u32, indices: Vec<u64> },
    /// Blocks of disk `disk` sent before and written again: each block's new data
    /// XORed with what the destination holds of it (what was sent last), encoded like
    /// `Blocks` (always compressed: a delta is mostly repetition).
    BlockDeltas {
        disk: u32,
        indices: Vec<u64>,
        compression: Compression,
        data: Vec<u8>,
    },
    /// Everything sent before this on this connection is in the stream; the receiver
    /// confirms with `Flushed` on the control connection once all connections flushed.
    Flush,
    /// Destination: every connection flushed.
    Flushed,
    /// Encoded VM state (see `crate::state`), after the last pre-copy pages; every data
    /// connection sent `Flush` before it, and the destination loads it once they flushed.
    State(Vec<u8>),
    /// Like `State`, for post-copy: also the bitmap (words) of pages the destination
    /// must still fetch from the source.
    PostcopyState { state: Vec<u8>, pending: Vec<u64> },
    /// Destination: state loaded, vCPUs ready to run.
    Ready,
    /// Source: run the VM now. From here on, the destination owns it.
    Switch,
    /// Destination: vCPUs are running. Microseconds from the Switch's arrival to the
    /// vCPUs running and to this message leaving, so that the source can tell the
    /// downtime without counting the wire back or this side's scheduling after it.
    Resumed {
        run_after_us: u64,
        reply_after_us: u64,
    },
    /// Destination (post-copy): send this page first.
    PageRequest(u64),
    /// Destination (post-copy): every pending page arrived; fault statistics attached.
    PostcopyDone {
        faults: u64,
        latency_p50_us: u64,
        latency_p99_us: u64,
    },
    /// Either side: giving up, with the reason.
    Abort(String),
}

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection: {0}")]
    Io(std::io::Error),
    #[error("the peer sent and took nothing for {} s: it is hung or unreachable", PEER_TIMEOUT.as_secs())]
    PeerSilent,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge(usize),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("peer speaks migration protocol version {0}, this nova-vmm speaks {VERSION}")]
    Version(u32),
    #[error("not a NovaCron migration stream")]
    Magic,
    #[error("page data does not decompress: {0}")]
    Decompress(String),
}

impl From<std::io::Error> for ProtocolError {
    /// A socket timeout (see [`PEER_TIMEOUT`]) is a silent peer, not an I/O fault.
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ProtocolError::PeerSilent
            }
            _ => ProtocolError::Io(e),
        }
    }
}

const K_HELLO: u8 = 1;
const K_DATA_HELLO: u8 = 2;
const K_PAGES: u8 = 3;
const K_ZERO: u8 = 4;
const K_FLUSH: u8 = 5;
const K_FLUSHED: u8 = 6;
const K_STATE: u8 = 7;
const K_POSTCOPY_STATE: u8 = 8;
const K_READY: u8 = 9;
const K_SWITCH: u8 = 10;
const K_RESUMED: u8 = 11;
const K_PAGE_REQUEST: u8 = 12;
const K_POSTCOPY_DONE: u8 = 13;
const K_ABORT: u8 = 14;
const K_WELCOME: u8 = 15;
const K_URGENT_HELLO: u8 = 16;
const K_BLOCKS: u8 = 17;
const K_ZERO_BLOCKS: u8 = 18;
const K_BLOCK_DELTAS: u8 = 19;

fn put_u64s(out: &mut Vec<u8>, v: &[u64]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

struct Cursor<'a>(&'a [u8], &'static str);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Malformed(self.1));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn u64s(&mut self) -> Result<Vec<u64>, ProtocolError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 8 {
            return Err(ProtocolError::Malformed(self.1));
        }
        (0..n).map(|_| self.u64()).collect()
    }
    fn rest(self) -> &'a [u8] {
        self.0
    }
    fn done(self) -> Result<(), ProtocolError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed(self.1))
        }
    }
}

impl Message {
    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        // Length and kind first, patched at the end: the payload is written once.
        let mut p = Vec::with_capacity(5 + self.payload_hint());
        p.extend_from_slice(&[0; 5]);
        let kind = match self {
            Message::Hello {
                version,
                connections,
                config,
            } => {
                p.extend_from_slice(MAGIC);
                p.extend_from_slice(&version.to_le_bytes());
                p.extend_from_slice(&connections.to_le_bytes());
                p.extend_from_slice(config);
                K_HELLO
            }
            Message::DataHello { version, index } => {
                p.extend_from_slice(MAGIC);
                p.extend_from_slice(&version.to_le_bytes());
                p.extend_from_slice(&index.to_le_bytes());
                K_DATA_HELLO
            }
            Message::UrgentHello { version } => {
                p.extend_from_slice(MAGIC);
                p.extend_from_slice(&version.to_le_bytes());
                K_URGENT_HELLO
            }
            Message::Pages {
                indices,
                compression,
                data,
            } => return pages_frame(indices, *compression, data),
            Message::ZeroPages { indices } => {
                put_u64s(&mut p, indices);
                K_ZERO
            }
            Message::Blocks {
                disk,
                indices,
                compression,
                data,
            } => return blocks_frame(*disk, indices, *compression, data),
            Message::BlockDeltas {
                disk,
                indices,
                compression,
                data,
            } => return block_deltas_frame(*disk, indices, *compression, data),
            Message::ZeroBlocks { disk, indices } => {
                p.extend_from_slice(&disk.to_le_bytes());
                put_u64s(&mut p, indices);
                K_ZERO_BLOCKS
            }
            Message::Welcome => K_WELCOME,
            Message::Flush => K_FLUSH,
            Message::Flushed => K_FLUSHED,
            Message::State(s) => {
                p.extend_from_slice(s);
                K_STATE
            }
            Message::PostcopyState { state, pending } => {
                put_u64s(&mut p, pending);
                p.extend_from_slice(state);
                K_POSTCOPY_STATE
            }
            Message::Ready => K_READY,
            Message::Switch => K_SWITCH,
            Message::Resumed {
                run_after_us,
                reply_after_us,
            } => {
                for v in [run_after_us, reply_after_us] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                K_RESUMED
            }
            Message::PageRequest(page) => {
                p.extend_from_slice(&page.to_le_bytes());
                K_PAGE_REQUEST
            }
            Message::PostcopyDone {
                faults,
                latency_p50_us,
                latency_p99_us,
            } => {
                for v in [faults, latency_p50_us, latency_p99_us] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                K_POSTCOPY_DONE
            }
            Message::Abort(why) => {
                p.extend_from_slice(why.as_bytes());
                K_ABORT
            }
        };
        finish_frame(p, kind)
    }

    /// About how many payload bytes `encode` writes, so it allocates once.
    fn payload_hint(&self) -> usize {
        match self {
            Message::ZeroPages { indices } => 4 + indices.len() * 8,
            Message::ZeroBlocks { indices, .. } => 8 + indices.len() * 8,
            Message::State(s) => s.len(),
            Message::PostcopyState { state, pending } => 4 + pending.len() * 8 + state.len(),
            _ => 64,
        }
    }

    /// Decodes one frame's kind and payload.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
        let hello = |c: &mut Cursor| -> Result<u32, ProtocolError> {
            if c.take(8).map_err(|_| ProtocolError::Magic)? != MAGIC {
                return Err(ProtocolError::Magic);
            }
            let v = c.u32()?;
            if v != VERSION {
                return Err(ProtocolError::Version(v));
            }
            Ok(v)
        };
        Ok(match kind {
            K_HELLO => {
                let mut c = Cursor(payload, "hello");
                let version = hello(&mut c)?;
                let connections = c.u32()?;
                Message::Hello {
                    version,
                    connections,
                    config: c.rest().to_vec(),
                }
            }
            K_DATA_HELLO => {
                let mut c = Cursor(payload, "data hello");
                let version = hello(&mut c)?;
                let index = c.u32()?;
                c.done()?;
                Message::DataHello { version, index }
            }
            K_URGENT_HELLO => {
                let mut c = Cursor(payload, "urgent hello");
                let version = hello(&mut c)?;
                c.done()?;
                Message::UrgentHello { version }
            }
            K_PAGES => {
                let mut c = Cursor(payload, "pages");
                let compression = compression_from_code(c.take(1)?[0])
                    .ok_or(ProtocolError::Malformed("pages"))?;
                let indices = c.u64s()?;
                // What a compressed batch may expand to is bounded by the pages it
                // claims: at most a batch's worth, so a small frame (a 63 KB zstd bomb
                // claiming 2^19 pages) cannot make the receiver allocate gigabytes.
                // Plain data is bounded by the frame itself.
                if compression != Compression::None && indices.len() > BATCH_PAGES {
                    return Err(ProtocolError::Malformed("pages (more than a batch)"));
                }
                Message::Pages {
                    indices,
                    compression,
                    data: c.rest().to_vec(),
                }
            }
            K_BLOCKS | K_BLOCK_DELTAS => {
                let mut c = Cursor(payload, "blocks");
                let disk = c.u32()?;
                let compression = compression_from_code(c.take(1)?[0])
                    .ok_or(ProtocolError::Malformed("blocks"))?;
                let indices = c.u64s()?;
                // Bounded like pages: a compressed batch expands to a batch at most.
                if compression != Compression::None && indices.len() > BATCH_PAGES {
                    return Err(ProtocolError::Malformed("blocks (more than a batch)"));
                }
                let data = c.rest().to_vec();
                match kind {
                    K_BLOCKS => Message::Blocks {
                        disk,
                        indices,
                        compression,
                        data,
                    },
                    _ => Message::BlockDeltas {
                        disk,
                        indices,
                        compression,
                        data,
                    },
                }
            }
            K_ZERO_BLOCKS => {
                let mut c = Cursor(payload, "zero blocks");
                let disk = c.u32()?;
                let indices = c.u64s()?;
                c.done()?;
                Message::ZeroBlocks { disk, indices }
            }
            K_ZERO => {
                let mut c = Cursor(payload, "zero pages");
                let indices = c.u64s()?;
                c.done()?;
                Message::ZeroPages { indices }
            }
            K_WELCOME | K_FLUSH | K_FLUSHED | K_READY | K_SWITCH if !payload.is_empty() => {
                return Err(ProtocolError::Malformed("empty message with a payload"))
            }
            K_WELCOME => Message::Welcome,
            K_FLUSH => Message::Flush,
            K_FLUSHED => Message::Flushed,
            K_READY => Message::Ready,
            K_SWITCH => Message::Switch,
            K_RESUMED => {
                let mut c = Cursor(payload, "resumed");
                let (run_after_us, reply_after_us) = (c.u64()?, c.u64()?);
                c.done()?;
                Message::Resumed {
                    run_after_us,
                    reply_after_us,
                }
            }
            K_STATE => Message::State(payload.to_vec()),
            K_POSTCOPY_STATE => {
                let mut c = Cursor(payload, "post-copy state");
                let pending = c.u64s()?;
                Message::PostcopyState {
                    state: c.rest().to_vec(),
                    pending,
                }
            }
            K_PAGE_REQUEST => {
                let mut c = Cursor(payload, "page request");
                let page = c.u64()?;
                c.done()?;
                Message::PageRequest(page)
            }
            K_POSTCOPY_DONE => {
                let mut c = Cursor(payload, "post-copy done");
                let m = Message::PostcopyDone {
                    faults: c.u64()?,
                    latency_p50_us: c.u64()?,
                    latency_p99_us: c.u64()?,
                };
                c.done()?;
                m
            }
            K_ABORT => Message::Abort(String::from_utf8_lossy(payload).into_owned()),
            k => return Err(ProtocolError::UnknownKind(k)),
        })
    }
}

/// Writes one message.
pub fn send<W: Write>(w: &mut W, m: &Message) -> Result<(), ProtocolError> {
    w.write_all(&m.encode())?;
    Ok(())
}

/// How long a side polls for an answer it expects within the downtime (`Ready`,
/// `Switch`) before it blocks. A thread that blocks there sleeps, and an idle CPU of a
/// virtual machine takes 30-40 us to wake (traced on this PVM host): once per message,
/// twice in every switch. The VM is paused meanwhile, so the CPU has nothing better to do.
pub const POLL_FOR_ANSWER: Duration = Duration::from_millis(2);

/// Reads one message, polling the socket for up to `budget` before blocking on it.
/// Polling yields the CPU at every turn, so it delays no runnable thread.
pub fn recv_polling(
    r: &mut std::io::BufReader<super::channel::LinkReader>,
    budget: Duration,
) -> Result<Message, ProtocolError> {
    use std::os::fd::AsRawFd;
    let started = std::time::Instant::now();
    let fd = r.get_ref().socket().as_raw_fd();
    while r.buffer().is_empty() && !r.get_ref().has_buffered() && started.elapsed() < budget {
        let mut byte = 0u8;
        // SAFETY: recv(2) peeks at most one byte into a live local; MSG_DONTWAIT makes
        // it return at once. Data, end of stream or an error all end the polling, and
        // the blocking read below reports them.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
            break;
        }
        std::thread::yield_now();
    }
    recv(r)
}

/// Reads one message.
pub fn recv<R: Read>(r: &mut R) -> Result<Message, ProtocolError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 {
        return Err(ProtocolError::Malformed("empty frame"));
    }
    if len > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Message::decode(buf[0], &buf[1..])
}

/// The frame of a `Message::Pages` built straight from borrowed pages: the senders'
/// hot path, one copy of the data into the frame.
pub fn pages_frame(indices: &[u64], compression: Compression, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + 1 + 4 + indices.len() * 8 + data.len());
    f.extend_from_slice(&[0; 5]);
    f.push(compression_code(compression));
    put_u64s(&mut f, indices);
    f.extend_from_slice(data);
    finish_frame(f, K_PAGES)
}

/// The frame of a `Message::Blocks` built from borrowed blocks of disk `disk`.
pub fn blocks_frame(disk: u32, indices: &[u64], compression: Compression, data: &[u8]) -> Vec<u8> {
    disk_frame(K_BLOCKS, disk, indices, compression, data)
}

/// The frame of a `Message::BlockDeltas` built from borrowed deltas of disk `disk`.
pub fn block_deltas_frame(
    disk: u32,
    indices: &[u64],
    compression: Compression,
    data: &[u8],
) -> Vec<u8> {
    disk_frame(K_BLOCK_DELTAS, disk, indices, compression, data)
}

fn disk_frame(
    kind: u8,
    disk: u32,
    indices: &[u64],
    compression: Compression,
    data: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + 4 + 1 + 4 + indices.len() * 8 + data.len());
    f.extend_from_slice(&[0; 5]);
    f.extend_from_slice(&disk.to_le_bytes());
    f.push(compression_code(compression));
    put_u64s(&mut f, indices);
    f.extend_from_slice(data);
    finish_frame(f, kind)
}

/// Fills in the length and kind of a frame whose payload follows 5 reserved bytes.
fn finish_frame(mut f: Vec<u8>, kind: u8) -> Vec<u8> {
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_le_bytes());
    f[4] = kind;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::connected;

    fn round_trip(m: Message) {
        let frame = m.encode();
        let back = recv(&mut &frame[..]).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello {
            version: VERSION,
            connections: 2,
            config: b"{}".to_vec(),
        });
        round_trip(Message::DataHello {
            version: VERSION,
            index: 1,
        });
        round_trip(Message::UrgentHello { version: VERSION });
        round_trip(Message::Pages {
            indices: vec![1, 9],
            compression: Compression::Lz4,
            data: vec![7; 10],
        });
        round_trip(Message::ZeroPages { indices: vec![3] });
        round_trip(Message::Blocks {
            disk: 1,
            indices: vec![0, 1 << 40],
            compression: Compression::Zstd,
            data: vec![9; 12],
        });
        round_trip(Message::ZeroBlocks {
            disk: 3,
            indices: vec![5, 6],
        });
        round_trip(Message::BlockDeltas {
            disk: 2,
            indices: vec![7],
            compression: Compression::Zstd,
            data: vec![3; 5],
        });
        round_trip(Message::PostcopyState {
            state: vec![1, 2],
            pending: vec![u64::MAX],
        });
        round_trip(Message::PostcopyDone {
            faults: 3,
            latency_p50_us: 40,
            latency_p99_us: 90,
        });
        for m in [
            Message::Welcome,
            Message::Flush,
            Message::Flushed,
            Message::Ready,
            Message::Switch,
            Message::Resumed {
                run_after_us: 12,
                reply_after_us: 30,
            },
        ] {
            round_trip(m);
        }
        round_trip(Message::PageRequest(77));
        round_trip(Message::Abort("why".into()));
    }

    #[test]
    fn corrupt_frames_are_errors_not_panics() {
        // Wrong magic, wrong version, oversized, truncated, unknown kind, lying counts.
        let mut hello = Message::Hello {
            version: VERSION,
            connections: 1,
            config: vec![],
        }
        .encode();
        hello[5] ^= 0xff;
        assert!(matches!(recv(&mut &hello[..]), Err(ProtocolError::Magic)));
        let mut v = Message::DataHello {
            version: VERSION,
            index: 1,
        }
        .encode();
        v[13] = 9;
        assert!(matches!(recv(&mut &v[..]), Err(ProtocolError::Version(_))));
        let big = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(
            recv(&mut &big[..]),
            Err(ProtocolError::FrameTooLarge(_))
        ));
        let short = Message::PageRequest(1).encode();
        assert!(matches!(
            recv(&mut &short[..short.len() - 1]),
            Err(ProtocolError::Io(_))
        ));
        assert!(matches!(
            recv(&mut &[1u8, 0, 0, 0, 99][..]),
            Err(ProtocolError::UnknownKind(99))
        ));
        let lying = [5u8, 0, 0, 0, K_ZERO, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            recv(&mut &lying[..]),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            recv(&mut &[0u8, 0, 0, 0][..]),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn a_compressed_batch_claiming_more_than_a_batch_of_pages_is_refused() {
        let indices: Vec<u64> = (0..(BATCH_PAGES as u64 + 1)).collect();
        let bomb = pages_frame(&indices, Compression::Zstd, &[0; 16]);
        assert!(matches!(
            recv(&mut &bomb[..]),
            Err(ProtocolError::Malformed(_))
        ));
        let fine = pages_frame(&indices[..BATCH_PAGES], Compression::Zstd, &[0; 16]);
        assert!(recv(&mut &fine[..]).is_ok());
        let bomb = blocks_frame(0, &indices, Compression::Lz4, &[0; 16]);
        assert!(matches!(
            recv(&mut &bomb[..]),
            Err(ProtocolError::Malformed(_))
        ));
        let truncated = [5u8, 0, 0, 0, K_ZERO_BLOCKS, 0, 0, 0, 0];
        assert!(matches!(
            recv(&mut &truncated[..]),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn an_answer_polled_for_arrives_within_the_budget_or_after_it() {
        let (rx, mut tx) = connected();
        let mut rx = std::io::BufReader::new(
            super::super::channel::Link::plain(rx.into_inner())
                .unwrap()
                .reader,
        );
        // Within the budget: found by polling.
        let peer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            send(&mut tx, &Message::Ready).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            send(&mut tx, &Message::Switch).unwrap();
            tx
        });
        let m = recv_polling(&mut rx, Duration::from_millis(20)).unwrap();
        assert_eq!(m, Message::Ready);
        // After the budget: the blocking read still gets it.
        let started = std::time::Instant::now();
        let m = recv_polling(&mut rx, Duration::from_millis(1)).unwrap();
        assert_eq!(m, Message::Switch);
        assert!(started.elapsed() >= Duration::from_millis(20));
        // A peer that goes away is an error, not a spin until the budget ends.
        drop(peer.join().unwrap());
        let started = std::time::Instant::now();
        assert!(recv_polling(&mut rx, Duration::from_secs(30)).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
