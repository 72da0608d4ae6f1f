//! The destination side: `nova-vmm run --incoming tcp:ADDR:PORT`. Learns the VM's
//! configuration from the stream, builds the VM, writes pages (and disk blocks, into
//! its own disk files) as they come, loads the
//! state, and runs the VM only when the source says `Switch`. Any failure before that
//! ends this process with an error; the source then keeps the VM.

use std::fs::File;
use std::io::BufReader;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_vmm_api::VmConfig;
use vm_memory::Bytes;

use super::channel::{LinkReader, LinkWriter};
use super::compression;
use super::disks::DiskSink;
use super::error::MigrationError;
use super::gate::{Arrival, Gate};
use super::protocol::{self, Message, VERSION};
use super::tls::Listen;
use crate::dirty::DirtyBitmap;
use crate::memory::{GuestMemory, PAGE_SIZE};
use crate::vm::build::MemorySource;
use crate::vm::Vm;

/// Writes received pages into guest RAM (through the VM's mapping: one copy, no
/// syscall per page); zero pages become holes in the memfd. Disk blocks go to the
/// disks.
struct PageSink {
    mem: GuestMemory,
    memfd: File,
    pages: usize,
    disks: DiskSink,
}

impl PageSink {
    fn apply(&self, m: Message) -> Result<(), MigrationError> {
        match m {
            Message::Pages {
                indices,
                compression,
                data,
            } => {
                // Every index checked before anything is decompressed for it.
                for p in &indices {
                    self.check(*p)?;
                }
                let data = compression::decompress(compression, &data, indices.len() * PAGE_SIZE)?;
                for (i, p) in indices.iter().enumerate() {
                    self.check(*p)?;
                    let gpa = crate::dirty::page_gpa(&self.mem, *p as usize).ok_or_else(|| {
                        MigrationError::Unexpected(format!("page {p}"), "a page inside guest RAM")
                    })?;
                    self.mem
                        .write_slice(&data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE], gpa)
                        .map_err(|e| MigrationError::Memory(std::io::Error::other(e)))?;
                }
            }
            Message::ZeroPages { indices } => {
                for p in indices {
                    self.check(p)?;
                    // SAFETY: fallocate on an owned memfd, range checked above.
                    let r = unsafe {
                        libc::fallocate(
                            self.memfd.as_raw_fd(),
                            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                            (p * PAGE_SIZE as u64) as i64,
                            PAGE_SIZE as i64,
                        )
                    };
                    if r < 0 {
                        return Err(MigrationError::Memory(std::io::Error::last_os_error()));
                    }
                }
            }
            Message::Blocks {
                disk,
                indices,
                compression,
                data,
            } => self.disks.blocks(disk, &indices, compression, &data)?,
            Message::ZeroBlocks { disk, indices } => self.disks.zero_blocks(disk, &indices)?,
            Message::BlockDeltas {
                disk,
                indices,
                compression,
                data,
            } => self
                .disks
                .block_deltas(disk, &indices, compression, &data)?,
            other => {
                return Err(MigrationError::Unexpected(
                    format!("{other:?}").chars().take(60).collect(),
                    "pages",
                ))
            }
        }
        Ok(())
    }

    fn check(&self, page: u64) -> Result<(), MigrationError> {
        if page as usize >= self.pages {
            return Err(MigrationError::Unexpected(
                format!("page {page}"),
                "a page inside guest RAM",
            ));
        }
        Ok(())
    }
}

/// How long the destination waits for all the data connections a Hello announced.
pub const DATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections a Hello may announce: 16 data connections, the post-copy one
/// and the control connection.
pub const MAX_CONNECTIONS: u32 = 18;
pub use super::gate::HANDSHAKE_TIMEOUT;

/// Receives a VM on `addr` (`HOST:PORT`); returns it running. `local` is the VM this
/// destination was given (memory, vCPUs, disks, NICs, API socket, console, from its
/// flags or `--config`, admitted by hostd): the stream's configuration must describe
/// the same VM, and none of its host resources (disk paths, taps) are ever used.
/// Only connections that pass `listen` (this migration's credential) are read.
pub fn receive(addr: &str, local: VmConfig, listen: Listen) -> Result<Arc<Vm>, MigrationError> {
    let listener = TcpListener::bind(addr).map_err(|err| MigrationError::Connect {
        addr: addr.into(),
        err,
    })?;
    // The bound address, so that port 0 (any free port) tells which one it got.
    let secured = match listen {
        Listen::Tls { .. } => "TLS",
        Listen::Insecure => "plaintext (--insecure)",
    };
    match listener.local_addr() {
        Ok(bound) => tracing::info!("waiting for an incoming migration on {bound}, {secured}"),
        Err(_) => tracing::info!("waiting for an incoming migration on {addr}, {secured}"),
    }
    // Whoever connects first is not the migration: only a connection with this
    // migration's credential that opens with a Hello is; any other is dropped, and
    // the wait goes on undisturbed.
    let gate = Gate::open(listener, listen)?;
    let (reader, mut writer, peer, connections, config) = loop {
        let Some(Arrival {
            reader,
            writer,
            first,
            peer,
        }) = gate.next(None)?
        else {
            continue;
        };
        match first {
            Message::Hello {
                connections,
                config,
                ..
            } => break (reader, writer, peer, connections, config),
            m => tracing::warn!(
                "dropped a connection from {peer}: {} where Hello was expected",
                format!("{m:?}").chars().take(60).collect::<String>()
            ),
        }
    };
    // Until the switch, a silent source is a gone one: give up instead of waiting forever.
    for s in [reader.get_ref().socket(), writer.socket()] {
        s.set_read_timeout(Some(protocol::PEER_TIMEOUT))
            .map_err(MigrationError::Memory)?;
        s.set_write_timeout(Some(protocol::PEER_TIMEOUT))
            .map_err(MigrationError::Memory)?;
    }
    let result = receive_on(gate, reader, &mut writer, local, connections, &config);
    if let Err(e) = &result {
        // Tell the source why, if it still listens; it resumes the VM either way.
        let _ = protocol::send(&mut writer, &Message::Abort(e.to_string()));
        tracing::error!("incoming migration from {peer} failed: {e}");
    }
    result
}

/// The VM to build: this destination's own configuration, checked against the one in
/// the stream (refused with the field that differs). Only what is no host resource
/// and not loaded again (kernel, initrd and command line, for the record) comes from
/// the stream when this side was not given them.
fn incoming_config(mut local: VmConfig, stream: &[u8]) -> Result<VmConfig, MigrationError> {
    let theirs: VmConfig = serde_json::from_slice(stream)
        .map_err(|e| MigrationError::Vm(format!("VM configuration in the stream: {e}")))?;
    local
        .check_incoming(&theirs)
        .map_err(|e| MigrationError::Vm(format!("refused: {}: {}", e.field, e.problem)))?;
    if local.kernel.as_os_str().is_empty() {
        local.kernel = theirs.kernel;
        local.initrd = theirs.initrd;
        local.cmdline = theirs.cmdline;
    }
    Ok(local)
}

/// Starts the thread that applies one data connection's pages and reports each of
/// its `Flush`es (or its failure) on `tx`. Named so that a per-thread seccomp filter
/// can find it: it reads a socket, writes guest memory and punches holes in the memfd.
fn spawn_data_receiver(
    mut r: BufReader<LinkReader>,
    sink: Arc<PageSink>,
    tx: mpsc::Sender<Result<(), String>>,
) -> Result<(), MigrationError> {
    crate::seccomp::spawn_filtered(
        crate::seccomp::ThreadKind::Migration,
        "migration-data",
        None,
        move || loop {
            let r = match protocol::recv(&mut r) {
                Ok(Message::Flush) => Ok(()),
                Ok(m) => match sink.apply(m) {
                    Ok(()) => continue,
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            let failed = r.is_err();
            if tx.send(r).is_err() || failed {
                return;
            }
        },
    )
    .map_err(MigrationError::Memory)?;
    Ok(())
}

fn receive_on(
    gate: Gate,
    mut reader: BufReader<LinkReader>,
    writer: &mut LinkWriter,
    local: VmConfig,
    connections: u32,
    stream_config: &[u8],
) -> Result<Arc<Vm>, MigrationError> {
    if connections == 0 || connections > MAX_CONNECTIONS {
        return Err(MigrationError::Vm(format!(
            "refused: connections: {connections} announced, at most {MAX_CONNECTIONS}"
        )));
    }
    let config = incoming_config(local, stream_config)?;
    let memfd = crate::memory::create_memfd(config.mem_mib)
        .map_err(|e| MigrationError::Vm(e.to_string()))?;
    let pages = ((config.mem_mib << 20) as usize) / PAGE_SIZE;
    let sink_memfd = memfd.try_clone().map_err(MigrationError::Memory)?;
    let vm = Arc::new(Vm::build(config, MemorySource::Memfd(memfd), None)?);
    warm_restore_path(&vm)?;
    vm.spawn_vcpus()?;
    let sink = Arc::new(PageSink {
        mem: vm.mem.clone(),
        memfd: sink_memfd,
        pages,
        disks: DiskSink::new(&vm),
    });
    protocol::send(writer, &Message::Welcome)?;

    // Data connections: each thread applies its pages and reports every Flush. They
    // must all arrive within DATA_CONNECT_TIMEOUT (a Hello announcing connections that
    // never come must not hold the destination); a connection that is not one of
    // them is dropped.
    let (flushed_tx, flushed_rx) = mpsc::channel::<Result<(), String>>();
    let deadline = Instant::now() + DATA_CONNECT_TIMEOUT;
    let mut urgent = None;
    let mut data_conns = 0;
    let mut wanted = connections - 1;
    while wanted > 0 {
        let Some(Arrival {
            reader: r,
            first,
            peer,
            ..
        }) = gate.next(Some(deadline))?
        else {
            return Err(MigrationError::Vm(format!(
                "{wanted} of the {} data connections the source announced did not arrive within {} s",
                connections - 1,
                DATA_CONNECT_TIMEOUT.as_secs()
            )));
        };
        match first {
            Message::DataHello {
                version: VERSION, ..
            } => tracing::info!("migration data connection from {peer}"),
            Message::UrgentHello { version: VERSION } if urgent.is_none() => {
                tracing::info!("post-copy page request connection from {peer}");
                urgent = Some(r);
                wanted -= 1;
                continue;
            }
            m => {
                tracing::warn!(
                    "dropped a connection from {peer}: {} where DataHello was expected",
                    format!("{m:?}").chars().take(60).collect::<String>()
                );
                continue;
            }
        }
        wanted -= 1;
        data_conns += 1;
        // A data connection silent for the peer timeout is a gone source, as on the
        // control connection: its thread reports it and the migration fails.
        r.get_ref()
            .socket()
            .set_read_timeout(Some(protocol::PEER_TIMEOUT))
            .map_err(MigrationError::Memory)?;
        spawn_data_receiver(r, sink.clone(), flushed_tx.clone())?;
    }
    // Every connection is in: nobody else gets one.
    drop(gate);

    loop {
        match protocol::recv(&mut reader)? {
            m @ (Message::Pages { .. }
            | Message::ZeroPages { .. }
            | Message::Blocks { .. }
            | Message::ZeroBlocks { .. }
            | Message::BlockDeltas { .. }) => sink.apply(m)?,
            Message::Flush => {
                data_flushed(&flushed_rx, data_conns)?;
                // A round's blocks are on stable storage before it counts as done.
                sink.disks.sync()?;
                protocol::send(writer, &Message::Flushed)?;
            }
            Message::State(bytes) => {
                data_flushed(&flushed_rx, data_conns)?;
                sink.disks.sync()?;
                tracing::debug!("stop-and-copy: state received");
                let state =
                    crate::state::decode(&bytes).map_err(|e| MigrationError::Vm(e.to_string()))?;
                vm.restore_state(&state)?;
                vm.adopt_backup_bitmaps(&state);
                vm.catch_up_clocks(&state)?;
                tracing::debug!("stop-and-copy: state restored");
                switch(&vm, false, &mut reader, writer)?;
                return Ok(vm);
            }
            Message::PostcopyState { state, pending } => {
                data_flushed(&flushed_rx, data_conns)?;
                sink.disks.sync()?;
                let urgent = urgent.take().ok_or(MigrationError::Unexpected(
                    "post-copy state without a page request connection".into(),
                    "UrgentHello before post-copy",
                ))?;
                let state =
                    crate::state::decode(&state).map_err(|e| MigrationError::Vm(e.to_string()))?;
                let pending = DirtyBitmap::from_words(pending, sink.pages).ok_or_else(|| {
                    MigrationError::Unexpected(
                        "a page map of another size".into(),
                        "post-copy state",
                    )
                })?;
                let conn = writer.try_clone().map_err(MigrationError::Memory)?;
                let postcopy =
                    super::postcopy::start_destination(&vm.mem, &sink.memfd, pending, conn)
                        .map_err(MigrationError::Memory)?;
                vm.restore_state(&state)?;
                vm.adopt_backup_bitmaps(&state);
                vm.catch_up_clocks(&state)?;
                switch(&vm, true, &mut reader, writer)?;
                // Only now: the control connection has one reader at a time.
                if let Err(e) = postcopy.receive(reader, urgent) {
                    tracing::error!("post-copy: cannot start receiving pages: {e}");
                }
                return Ok(vm);
            }
            Message::Abort(why) => return Err(MigrationError::Aborted(why)),
            m => {
                return Err(MigrationError::Unexpected(
                    format!("{m:?}").chars().take(60).collect(),
                    "pages or state",
                ))
            }
        }
    }
}

/// Runs the restore path once on the fresh VM's own state, before any page arrives.
/// The first pass through code costs its page faults (microseconds each on a PVM host,
/// hundreds of them in decoding and loading a state); paid here, they stay out of the
/// downtime, where the same path runs again with the source's state.
fn warm_restore_path(vm: &Vm) -> Result<(), MigrationError> {
    let own = crate::state::encode(&vm.save_state()?);
    let own = crate::state::decode(&own).map_err(|e| MigrationError::Vm(e.to_string()))?;
    vm.restore_state(&own)?;
    Ok(())
}

/// Waits until each of `n` data connections has applied everything before its `Flush`.
fn data_flushed(rx: &mpsc::Receiver<Result<(), String>>, n: usize) -> Result<(), MigrationError> {
    for _ in 0..n {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(MigrationError::Vm(format!("data connection: {e}"))),
            Err(_) => return Err(MigrationError::Vm("data connection lost".into())),
        }
    }
    Ok(())
}

/// Ready -> Switch -> run and Resumed (in the order `postcopy` needs).
fn switch(
    vm: &Vm,
    postcopy: bool,
    reader: &mut BufReader<LinkReader>,
    writer: &mut LinkWriter,
) -> Result<(), MigrationError> {
    protocol::send(writer, &Message::Ready)?;
    match protocol::recv_polling(reader, protocol::POLL_FOR_ANSWER)? {
        Message::Switch => {}
        Message::Abort(why) => return Err(MigrationError::Aborted(why)),
        m => {
            return Err(MigrationError::Unexpected(
                format!("{m:?}").chars().take(60).collect(),
                "Switch",
            ))
        }
    }
    let switched = Instant::now();
    tracing::debug!("stop-and-copy: switch received");
    // From the Switch on the VM is this side's; its vCPU threads wait parked, so
    // starting them cannot fail, and failing to send Resumed leaves the source paused,
    // not running. Pre-copy wakes the vCPUs first: sending Resumed wakes the source's
    // thread, which can take this CPU for ~0.2 ms before the send returns. Post-copy
    // sends Resumed first: once the vCPUs run, a fault puts a PageRequest on this
    // connection, and the source must read Resumed before it (the vCPUs then run
    // microseconds after it leaves).
    let us = || switched.elapsed().as_micros() as u64;
    let resumed = |writer: &mut LinkWriter, run_after_us| {
        let reply_after_us = us();
        let _ = protocol::send(
            writer,
            &Message::Resumed {
                run_after_us,
                reply_after_us,
            },
        );
    };
    if postcopy {
        resumed(writer, us());
        vm.start()?;
    } else {
        // The vCPUs run once start() wakes them, and often take this CPU at once for a
        // scheduler slice (~2.5 ms seen): what follows the wake-up is not downtime.
        let run_after_us = us();
        vm.start()?;
        resumed(writer, run_after_us);
    }
    tracing::debug!("stop-and-copy: vCPUs started");
    Ok(())
}
