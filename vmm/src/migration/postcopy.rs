//! Post-copy: the destination runs the VM before all its memory has arrived.
//!
//! Destination: pages still on the source are holes in guest RAM, registered with a
//! userfaultfd; a fault on one sends a `PageRequest` and the faulting thread sleeps
//! until the page lands (UFFDIO_COPY wakes it). Faults on pages the source never had
//! (zero) are filled locally. Source: the thread that reads the requests sends each
//! requested page at once on a connection of its own, while everything else is pushed
//! in the background on the control connection: a request never queues behind it.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use nova_vmm_api::{Compression, PostcopyStats};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::channel::{LinkReader, LinkWriter};
use super::compression;
use super::error::MigrationError;
use super::pages::{Counters, Limiter};
use super::protocol::{self, Message};
use crate::dirty::DirtyBitmap;
use crate::memory::{GuestMemory, PAGE_SIZE};
use crate::uffd::Uffd;

/// Pages per background batch (64 KiB frames): between batches the push looks for the
/// end, the bandwidth cap and the guest's last fault.
const PUSH_BATCH: usize = 16;

enum Event {
    Done(PostcopyStats),
    Failed(String),
}

/// Source: pushes every `pending` page until the destination reports it has them all;
/// the thread reading the requests sends each requested page on `urgent` at once.
/// Both compress with the migration's `compression`: on the slow links it is set for,
/// a smaller page arrives sooner, requested or pushed.
#[allow(clippy::too_many_arguments)]
pub(super) fn serve(
    read: &(impl Fn(usize, &mut [u8]) -> std::io::Result<()> + Sync),
    conn: &mut LinkWriter,
    mut reader: BufReader<LinkReader>,
    mut urgent: LinkWriter,
    pending: &DirtyBitmap,
    counters: &Counters,
    limiter: &Limiter,
    compression: Compression,
) -> Result<PostcopyStats, MigrationError> {
    // Pages the push skips: pushed already, or sent on request.
    let sent = &Mutex::new(DirtyBitmap::new(pending.pages()));
    // Up to `n` pages not sent yet, from page `start` on.
    let claim = |start: usize, n: usize| -> Vec<usize> {
        let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
        let claimed: Vec<usize> = pending
            .iter_from(start)
            .filter(|p| !sent.get(*p))
            .take(n)
            .collect();
        for p in &claimed {
            sent.set(*p);
        }
        claimed
    };
    // `data`: the caller's buffer, reused from one send to the next.
    let send = |out: &mut LinkWriter,
                pages: &[usize],
                data: &mut Vec<u8>|
     -> Result<usize, MigrationError> {
        data.resize(pages.len() * PAGE_SIZE, 0);
        for (&p, buf) in pages.iter().zip(data.chunks_exact_mut(PAGE_SIZE)) {
            read(p, buf).map_err(MigrationError::Memory)?;
        }
        let indices: Vec<u64> = pages.iter().map(|p| *p as u64).collect();
        let payload = compression::compress(compression, data);
        let frame = protocol::pages_frame(&indices, compression, &payload);
        std::io::Write::write_all(out, &frame).map_err(protocol::ProtocolError::from)?;
        counters
            .bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        counters
            .sent
            .fetch_add(pages.len() as u64, Ordering::Relaxed);
        if compression != Compression::None {
            counters
                .compressed
                .fetch_add(pages.len() as u64, Ordering::Relaxed);
        }
        Ok(frame.len())
    };
    // The page after the guest's last fault (0: none since the push last looked): the
    // push goes on from there, as the pages after a faulted one are the likeliest next
    // (a guest sweeping memory faults on each page it reaches ahead of the push,
    // unless the push follows it).
    let follow = &AtomicUsize::new(0);
    // To unblock the request reader if the push fails first.
    let requests_conn = reader
        .get_ref()
        .socket()
        .try_clone()
        .map_err(MigrationError::Memory)?;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        // Started by the sender's thread: runs under its Migration filter.
        let requests = std::thread::Builder::new()
            .name("postcopy-requests".into())
            .spawn_scoped(scope, move || {
                let mut data = Vec::with_capacity(PAGE_SIZE);
                let ev = loop {
                    match protocol::recv(&mut reader) {
                        Ok(Message::PageRequest(p)) => {
                            let p = p as usize;
                            if !pending.get(p) {
                                continue;
                            }
                            // Sent even if the push already sent it: that copy may still
                            // be queued behind the push's data. The destination keeps
                            // whichever lands first (UFFDIO_COPY never overwrites).
                            sent.lock().unwrap_or_else(|e| e.into_inner()).set(p);
                            follow.store(p + 1, Ordering::Relaxed);
                            if let Err(e) = send(&mut urgent, &[p], &mut data) {
                                break Event::Failed(e.to_string());
                            }
                        }
                        Ok(Message::PostcopyDone {
                            faults,
                            latency_p50_us,
                            latency_p99_us,
                        }) => {
                            break Event::Done(PostcopyStats {
                                faults_served: faults,
                                fault_latency_us_p50: latency_p50_us,
                                fault_latency_us_p99: latency_p99_us,
                            })
                        }
                        Ok(other) => break Event::Failed(format!("unexpected {other:?}")),
                        Err(e) => break Event::Failed(e.to_string()),
                    }
                };
                let _ = tx.send(ev);
            })
            .map_err(MigrationError::Memory)?;
        let result = push(conn, &rx, follow, claim, send, limiter);
        if result.is_err() {
            let _ = requests_conn.shutdown(std::net::Shutdown::Both);
        }
        let _ = requests.join();
        result
    })
}

/// The background push of [`serve`]: batches of pages not sent yet, in order from
/// the last fault (`follow`) or from where it was, wrapping round, within the
/// bandwidth cap, until the request thread reports the end.
fn push(
    conn: &mut LinkWriter,
    rx: &mpsc::Receiver<Event>,
    follow: &AtomicUsize,
    claim: impl Fn(usize, usize) -> Vec<usize>,
    send: impl Fn(&mut LinkWriter, &[usize], &mut Vec<u8>) -> Result<usize, MigrationError>,
    limiter: &Limiter,
) -> Result<PostcopyStats, MigrationError> {
    let mut cursor = 0;
    let mut data = Vec::with_capacity(PUSH_BATCH * PAGE_SIZE);
    let mut exhausted = false;
    loop {
        // The push keeps to the bandwidth cap, watching for the end meanwhile.
        let ev = if exhausted {
            rx.recv().ok()
        } else {
            match limiter.wait_time() {
                w if w.is_zero() => rx.try_recv().ok(),
                w => rx.recv_timeout(w).ok(),
            }
        };
        match ev {
            Some(Event::Done(stats)) => return Ok(stats),
            Some(Event::Failed(why)) => return Err(MigrationError::Aborted(why)),
            None if exhausted => return Err(MigrationError::Aborted("request reader gone".into())),
            None => {}
        }
        if !limiter.wait_time().is_zero() {
            continue;
        }
        match follow.swap(0, Ordering::Relaxed) {
            0 => {}
            p => cursor = p,
        }
        let mut batch = claim(cursor, PUSH_BATCH);
        if batch.is_empty() && cursor > 0 {
            cursor = 0;
            batch = claim(0, PUSH_BATCH);
        }
        if let Some(last) = batch.last() {
            cursor = last + 1;
        }
        if batch.is_empty() {
            exhausted = true;
        } else {
            limiter.account(send(conn, &batch, &mut data)?);
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
    /// `PostcopyDone` went out.
    done: bool,
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
    writer: Arc<Mutex<LinkWriter>>,
}

/// Destination: readies guest RAM for post-copy (stale copies of pending pages dropped,
/// RAM registered with a userfaultfd) and starts the fault thread. Call before the
/// vCPUs run; `conn` is the control connection, used here only to send requests.
pub fn start_destination(
    mem: &GuestMemory,
    memfd: &File,
    pending: DirtyBitmap,
    conn: LinkWriter,
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
        done: false,
    }));
    let writer = Arc::new(Mutex::new(conn));

    let (u, m, sh, w) = (uffd.clone(), map.clone(), shared.clone(), writer.clone());
    crate::seccomp::spawn_filtered(
        crate::seccomp::ThreadKind::Migration,
        "postcopy-faults",
        Some(256 << 10),
        move || {
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
        },
    )?;
    Ok(Destination {
        uffd,
        map,
        shared,
        writer,
    })
}

impl Destination {
    /// After the switch: receives the source's pages on `reader` (the control
    /// connection, past `Switch`: the background push) and on `urgent` (the pages
    /// asked for) until none is pending, then reports the fault figures.
    pub fn receive(
        self,
        reader: BufReader<LinkReader>,
        urgent: BufReader<LinkReader>,
    ) -> std::io::Result<()> {
        let this = Arc::new(self);
        for (name, mut reader) in [("postcopy-pages", reader), ("postcopy-urgent", urgent)] {
            // Pages come as the bandwidth cap and the guest's faults let them: silence
            // is no sign of a lost source.
            reader.get_ref().socket().set_read_timeout(None)?;
            let this = this.clone();
            crate::seccomp::spawn_filtered(
                crate::seccomp::ThreadKind::Migration,
                name,
                Some(256 << 10),
                move || {
                    let r = receive_pages(&mut reader, &this.uffd, &this.map, &this.shared);
                    this.finish(r);
                },
            )?;
        }
        Ok(())
    }

    /// Called by each receiving thread as it ends: the first to see every page in
    /// sends `PostcopyDone`; a thread cut off after that (the source closes its
    /// connections once it is done) ends quietly.
    fn finish(&self, r: Result<(), MigrationError>) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.remaining > 0 {
            if let Err(e) = r {
                tracing::error!("post-copy: lost the source with pages outstanding, the VM cannot continue safely: {e}");
            }
            return;
        }
        if std::mem::replace(&mut s.done, true) {
            return;
        }
        s.latencies_us.sort_unstable();
        let n = s.latencies_us.len();
        let pct = |q: f64| {
            s.latencies_us
                .get(((n as f64 * q) as usize).min(n.saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let (faults, p50, p99) = (n as u64, pct(0.5), pct(0.99));
        drop(s);
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = protocol::send(
            &mut *w,
            &Message::PostcopyDone {
                faults,
                latency_p50_us: p50,
                latency_p99_us: p99,
            },
        );
        tracing::info!("post-copy complete: {faults} faults served, p50 {p50} us, p99 {p99} us");
    }
}

fn receive_pages(
    reader: &mut BufReader<LinkReader>,
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
        let data = compression::decompress(compression, &data, indices.len() * PAGE_SIZE)?;
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
