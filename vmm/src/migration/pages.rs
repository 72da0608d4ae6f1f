//! Sending guest pages from the source: batches of non-zero pages (compressed when
//! asked), zero pages as indices, within one bandwidth cap for all connections, spread
//! over the connections so that a page's rounds arrive in order; and the counters
//! the status reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nova_vmm_api::Compression;

use super::channel::LinkWriter;
use super::compression;
use super::error::MigrationError;
use super::outgoing::Outgoing;
use super::protocol::{self, Message, BATCH_PAGES};
use crate::memory::PAGE_SIZE;
use crate::vm::Vm;

/// Byte and page counters shared by the sending threads.
#[derive(Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub sent: AtomicU64,
    pub zero: AtomicU64,
    pub compressed: AtomicU64,
}

/// Caps the bandwidth of all connections together.
pub struct Limiter {
    bytes_per_sec: Option<f64>,
    start: Instant,
    sent: AtomicU64,
}

impl Limiter {
    /// A cap of `mbit` Mbit/s from now on; none without one.
    pub fn new(mbit: Option<u64>) -> Self {
        Limiter {
            bytes_per_sec: mbit.map(|m| m as f64 * 1e6 / 8.0),
            start: Instant::now(),
            sent: AtomicU64::new(0),
        }
    }
    /// Accounts `n` bytes and sleeps until sending them keeps within the cap.
    fn take(&self, n: usize) {
        self.account(n);
        std::thread::sleep(self.wait_time());
    }
    /// Accounts `n` bytes sent.
    pub fn account(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// How long until what was sent so far fits within the cap (zero without a cap).
    pub fn wait_time(&self) -> Duration {
        let Some(rate) = self.bytes_per_sec else {
            return Duration::ZERO;
        };
        let due = Duration::from_secs_f64(self.sent.load(Ordering::Relaxed) as f64 / rate);
        due.saturating_sub(self.start.elapsed())
    }
}

fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap()) == 0)
}

/// What the sending threads of one migration share.
pub struct PageSender<'a> {
    pub vm: &'a Vm,
    pub mig: &'a Outgoing,
    pub counters: Counters,
    pub limiter: Limiter,
    pub compression: Compression,
}

impl PageSender<'_> {
    /// Fails with `Cancelled` once the user cancelled the migration.
    pub fn check_cancel(&self) -> Result<(), MigrationError> {
        if self.mig.is_cancelled() {
            return Err(MigrationError::Cancelled);
        }
        Ok(())
    }

    /// Writes one frame within the bandwidth cap and counts it.
    pub(super) fn send_frame(
        &self,
        conn: &mut LinkWriter,
        frame: &[u8],
    ) -> Result<(), MigrationError> {
        self.limiter.take(frame.len());
        std::io::Write::write_all(conn, frame).map_err(protocol::ProtocolError::from)?;
        self.counters
            .bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends the batched pages and zero pages collected so far.
    fn flush(
        &self,
        conn: &mut LinkWriter,
        indices: &mut Vec<u64>,
        data: &mut Vec<u8>,
        zeros: &mut Vec<u64>,
    ) -> Result<(), MigrationError> {
        if !indices.is_empty() {
            if self.compression != Compression::None {
                self.counters
                    .compressed
                    .fetch_add(indices.len() as u64, Ordering::Relaxed);
            }
            let payload = compression::compress(self.compression, data);
            self.send_frame(
                conn,
                &protocol::pages_frame(indices, self.compression, &payload),
            )?;
            indices.clear();
            data.clear();
        }
        if !zeros.is_empty() {
            let zero_pages = Message::ZeroPages {
                indices: std::mem::take(zeros),
            };
            self.send_frame(conn, &zero_pages.encode())?;
        }
        self.check_cancel()
    }

    /// Sends `pages` on `conn`. In the first pass zero pages are skipped (the
    /// destination's memory starts zeroed); later they are sent as `ZeroPages`.
    pub fn send(
        &self,
        conn: &mut LinkWriter,
        pages: &[usize],
        first_pass: bool,
    ) -> Result<(), MigrationError> {
        let mut data = Vec::with_capacity(BATCH_PAGES * PAGE_SIZE);
        let mut indices = Vec::with_capacity(BATCH_PAGES);
        let mut zeros = Vec::new();
        for &p in pages {
            // Straight into the batch; dropped again if it is zero.
            let at = data.len();
            data.resize(at + PAGE_SIZE, 0);
            self.vm
                .read_page(p, &mut data[at..])
                .map_err(MigrationError::Memory)?;
            if is_zero(&data[at..]) {
                data.truncate(at);
                self.counters.zero.fetch_add(1, Ordering::Relaxed);
                if !first_pass {
                    zeros.push(p as u64);
                }
            } else {
                indices.push(p as u64);
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            if indices.len() == BATCH_PAGES || zeros.len() >= 4 * BATCH_PAGES {
                self.flush(conn, &mut indices, &mut data, &mut zeros)?;
            }
        }
        self.flush(conn, &mut indices, &mut data, &mut zeros)
    }

    /// Sends `pages` spread over all connections: page `p` always goes on connection
    /// `p % n`, so a page's rounds arrive in order even over several connections.
    pub fn send_spread(
        &self,
        conns: &mut [LinkWriter],
        pages: &[usize],
        first_pass: bool,
    ) -> Result<(), MigrationError> {
        if conns.len() == 1 {
            return self.send(&mut conns[0], pages, first_pass);
        }
        let n = conns.len();
        // Started by the sender's thread: each runs under its Migration filter.
        std::thread::scope(|s| {
            let handles: Vec<_> = conns
                .iter_mut()
                .enumerate()
                .map(|(i, conn)| {
                    let mine: Vec<usize> = pages.iter().copied().filter(|p| p % n == i).collect();
                    s.spawn(move || self.send(conn, &mine, first_pass))
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or(Err(MigrationError::Vm("sender thread panicked".into())))
            })
        })
    }
}
