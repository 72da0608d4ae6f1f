//! Post-copy: the destination runs the VM before all its memory has arrived.
//!
//! Destination: pages still on the source are holes in guest RAM, registered with a
//! userfaultfd; a fault on one sends a `PageRequest` and the faulting thread sleeps
//! until the page lands (UFFDIO_COPY wakes it). Faults on pages the source never had
//! (zero) are filled locally. Source: serves requests first and pushes everything
//! else in the background, in small batches so a request never waits long.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::protocol::{self, Compression, Message};
use super::{MigrationError, PostcopyStats};
use crate::dirty::DirtyBitmap;
use crate::memory::{GuestMemory, PAGE_SIZE};
use crate::uffd::Uffd;

/// Pages per background batch: small, so a fault's page is never stuck behind much.
const PUSH_BATCH: usize = 16;

enum Event {
    Request(usize),
    Done(PostcopyStats),
    Failed(String),
}

/// Source: pushes every `pending` page, requested ones first, until the destination
/// reports it has them all.
pub(super) fn serve(
    read: &impl Fn(usize, &mut [u8]) -> std::io::Result<()>,
    conn: &mut TcpStream,
    mut reader: BufReader<TcpStream>,
    pending: &DirtyBitmap,
    counters: &super::sender::Counters,
    limiter: &super::sender::Limiter,
) -> Result<PostcopyStats, MigrationError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("postcopy-requests".into())
        .spawn(move || loop {
            let ev = match protocol::recv(&mut reader) {
                Ok(Message::PageRequest(p)) => Event::Request(p as usize),
                Ok(Message::PostcopyDone {
                    faults,
                    latency_p50_us,
                    latency_p99_us,
                }) => Event::Done(PostcopyStats {
                    faults_served: faults,
                    fault_latency_us_p50: latency_p50_us,
                    fault_latency_us_p99: latency_p99_us,
                }),
                Ok(other) => Event::Failed(format!("unexpected {other:?}")),
                Err(e) => Event::Failed(e.to_string()),
            };
            let last = !matches!(ev, Event::Request(_));
            if tx.send(ev).is_err() || last {
                return;
            }
        })
        .map_err(MigrationError::Memory)?;
    let mut sent = DirtyBitmap::new(pending.pages());
    let mut background = pending.iter();
    let mut data = vec![0u8; PUSH_BATCH * PAGE_SIZE];
    let mut send = |pages: &[usize], sent: &mut DirtyBitmap| -> Result<usize, MigrationError> {
        for (&p, buf) in pages.iter().zip(data.chunks_exact_mut(PAGE_SIZE)) {
            read(p, buf).map_err(MigrationError::Memory)?;
            sent.set(p);
        }
        let indices: Vec<u64> = pages.iter().map(|p| *p as u64).collect();
        let frame = protocol::pages_frame(
            &indices,
            Compression::None,
            &data[..pages.len() * PAGE_SIZE],
        );
        std::io::Write::write_all(conn, &frame).map_err(protocol::ProtocolError::from)?;
        counters
            .bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        counters
            .sent
            .fetch_add(pages.len() as u64, Ordering::Relaxed);
        Ok(frame.len())
    };
    let mut exhausted = false;
    loop {
        // Requested pages go at once; the background push keeps to the bandwidth cap,
        // waiting for requests while it may not send.
        let ev = if exhausted {
            rx.recv().ok()
        } else {
            match limiter.wait_time() {
                w if w.is_zero() => rx.try_recv().ok(),
                w => rx.recv_timeout(w).ok(),
            }
        };
        match ev {
            Some(Event::Request(p)) => {
                if pending.get(p) && !sent.get(p) {
                    send(&[p], &mut sent)?;
                }
                continue;
            }
            Some(Event::Done(stats)) => return Ok(stats),
            Some(Event::Failed(why)) => return Err(MigrationError::Aborted(why)),
            None if exhausted => {
                return Err(MigrationError::Aborted("request channel closed".into()))
            }
            None => {}
        }
        if !limiter.wait_time().is_zero() {
            continue;
        }
        let batch: Vec<usize> = background
            .by_ref()
            .filter(|p| !sent.get(*p))
            .take(PUSH_BATCH)
            .collect();
        if batch.is_empty() {
            exhausted = true;
        } else {
            limiter.account(send(&batch, &mut sent)?);
        }
    }
}

/// What the destination's fault and receive threads share.
struct Shared {
    pending: DirtyBitmap,
    received: DirtyBitmap,
    requested: DirtyBitmap,
    remaining: usize,
    waiting: HashMap<usize, Instant>,
    latencies_us: Vec<u64>,
}

/// (host start, host end, first RAM page) of each region.
fn region_map(mem: &GuestMemory) -> Vec<(u64, u64, usize)> {
    let mut first = 0usize;
    mem.iter()
        .map(|r| {
            let host = r.as_ptr() as u64;
            let e = (host, host + r.len(), first);
            first += r.len() as usize / PAGE_SIZE;
            e
        })
        .collect()
}

fn host_to_page(map: &[(u64, u64, usize)], addr: u64) -> Option<(usize, u64)> {
    map.iter()
        .find(|(s, e, _)| (*s..*e).contains(&addr))
        .map(|(s, _, first)| {
            let page_addr = addr & !(PAGE_SIZE as u64 - 1);
            (first + ((page_addr - s) as usize / PAGE_SIZE), page_addr)
        })
}

fn page_to_host(map: &[(u64, u64, usize)], page: usize) -> Option<u64> {
    map.iter()
        .find(|(s, e, first)| page >= *first && page < first + ((e - s) as usize / PAGE_SIZE))
        .map(|(s, _, first)| s + ((page - first) * PAGE_SIZE) as u64)
}

/// Drops the destination's stale copies of `pending` pages so that touching one faults.
fn punch_pending(memfd: &File, pending: &DirtyBitmap) -> std::io::Result<()> {
    let mut run: Option<(usize, usize)> = None;
    let punch = |(start, end): (usize, usize)| -> std::io::Result<()> {
        // SAFETY: fallocate on an owned memfd; the range lies inside it.
        let r = unsafe {
            libc::fallocate(
                memfd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (start * PAGE_SIZE) as i64,
                ((end - start) * PAGE_SIZE) as i64,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    for p in pending.iter() {
        run = match run {
            Some((s, e)) if e == p => Some((s, p + 1)),
            Some(r) => {
                punch(r)?;
                Some((p, p + 1))
            }
            None => Some((p, p + 1)),
        };
    }
    if let Some(r) = run {
        punch(r)?;
    }
    Ok(())
}

/// The destination's post-copy machinery, armed before the switch.
pub struct Destination {
    uffd: Arc<Uffd>,
    map: Arc<Vec<(u64, u64, usize)>>,
    shared: Arc<Mutex<Shared>>,
    writer: Arc<Mutex<TcpStream>>,
}

/// Destination: readies guest RAM for post-copy (stale copies of pending pages dropped,
/// RAM registered with a userfaultfd) and starts the fault thread. Call before the
/// vCPUs run; `conn` is the control connection, used here only to send requests.
pub fn start_destination(
    mem: &GuestMemory,
    memfd: &File,
    pending: DirtyBitmap,
    conn: TcpStream,
) -> std::io::Result<Destination> {
    punch_pending(memfd, &pending)?;
    let uffd = Arc::new(Uffd::new()?);
    for r in mem.iter() {
        uffd.register(r.as_ptr() as u64, r.len())?;
    }
    let map = Arc::new(region_map(mem));
    let remaining = pending.count();
    let pages = pending.pages();
    let shared = Arc::new(Mutex::new(Shared {
        pending,
        received: DirtyBitmap::new(pages),
        requested: DirtyBitmap::new(pages),
        remaining,
        waiting: HashMap::new(),
        latencies_us: Vec::new(),
    }));
    let writer = Arc::new(Mutex::new(conn));

    let (u, m, sh, w) = (uffd.clone(), map.clone(), shared.clone(), writer.clone());
    std::thread::Builder::new()
        .name("postcopy-faults".into())
        .stack_size(256 << 10)
        .spawn(move || {
            while let Ok(fault) = u.next_fault() {
                let Some(fault) = fault else { continue };
                let Some((page, host)) = host_to_page(&m, fault.addr) else {
                    continue;
                };
                let mut s = sh.lock().unwrap_or_else(|e| e.into_inner());
                if s.received.get(page) {
                    continue; // landed meanwhile; the copy woke the faulting thread
                }
                if !s.pending.get(page) {
                    drop(s);
                    let _ = u.zero(host, PAGE_SIZE as u64);
                    continue;
                }
                if !s.requested.get(page) {
                    s.requested.set(page);
                    s.waiting.insert(page, Instant::now());
                    drop(s);
                    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = protocol::send(&mut *w, &Message::PageRequest(page as u64)) {
                        tracing::error!("post-copy: cannot request page {page}: {e}");
                    }
                }
            }
        })?;
    Ok(Destination {
        uffd,
        map,
        shared,
        writer,
    })
}

impl Destination {
    /// After the switch: receives the source's pages on `reader` (the control
    /// connection, past `Switch`) until none is pending, then reports the fault figures.
    pub fn receive(self, mut reader: BufReader<TcpStream>) -> std::io::Result<()> {
        std::thread::Builder::new().name("postcopy-pages".into()).stack_size(256 << 10).spawn(move || {
            match receive_pages(&mut reader, &self.uffd, &self.map, &self.shared) {
                Ok(()) => {
                    let (faults, p50, p99) = {
                        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                        s.latencies_us.sort_unstable();
                        let n = s.latencies_us.len();
                        let pct = |q: f64| s.latencies_us.get(((n as f64 * q) as usize).min(n.saturating_sub(1))).copied().unwrap_or(0);
                        (n as u64, pct(0.5), pct(0.99))
                    };
                    let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = protocol::send(&mut *w, &Message::PostcopyDone { faults, latency_p50_us: p50, latency_p99_us: p99 });
                    tracing::info!("post-copy complete: {faults} faults served, p50 {p50} us, p99 {p99} us");
                }
                Err(e) => tracing::error!("post-copy: lost the source with pages outstanding, the VM cannot continue safely: {e}"),
            }
        })?;
        Ok(())
    }
}

fn receive_pages(
    reader: &mut BufReader<TcpStream>,
    uffd: &Uffd,
    map: &[(u64, u64, usize)],
    shared: &Mutex<Shared>,
) -> Result<(), MigrationError> {
    loop {
        if shared.lock().unwrap_or_else(|e| e.into_inner()).remaining == 0 {
            return Ok(());
        }
        let Message::Pages {
            indices,
            compression,
            data,
        } = protocol::recv(reader)?
        else {
            return Err(MigrationError::Unexpected(
                "another message".into(),
                "post-copy pages",
            ));
        };
        let data = protocol::decompress(compression, &data, indices.len() * PAGE_SIZE)?;
        for (i, p) in indices.iter().enumerate() {
            let p = *p as usize;
            let Some(host) = page_to_host(map, p) else {
                return Err(MigrationError::Unexpected(
                    format!("page {p}"),
                    "a page inside guest RAM",
                ));
            };
            uffd.copy(host, &data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE])
                .map_err(MigrationError::Memory)?;
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if s.pending.get(p) && !s.received.get(p) {
                s.received.set(p);
                s.remaining -= 1;
            }
            if let Some(t) = s.waiting.remove(&p) {
                s.latencies_us.push(t.elapsed().as_micros() as u64);
            }
        }
    }
}
