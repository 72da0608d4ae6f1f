//! The source side: connects to the destination, copies memory and writable disks in
//! rounds while the VM runs, then pauses it, sends the rest and the device state, and
//! hands over.
//! Every failure before `Switch` resumes the VM here, untouched. It is over 500 lines: the
//! phases of one migration in the order they run, read top to bottom.

use std::io::BufReader;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nova_vmm_api::{
    FieldError, MigrationMode, MigrationRequest, MigrationState, MigrationStatus, Round,
};
use vm_memory::{Bytes, GuestAddress};

use super::arrival;
use super::channel::{LinkReader, LinkWriter};
use super::disks::DiskSender;
use super::error::MigrationError;
use super::link::{connect, expect, expect_soon, flush_all, flush_data, refusal, set_send_buffer};
use super::outgoing::{Outgoing, Slot};
use super::pages::{Counters, Limiter, PageSender};
use super::protocol::{self, Message, VERSION};
use super::tls::Dial;
use crate::dirty::DirtyBitmap;
use crate::memory::PAGE_SIZE;
use crate::vcpu::{first_touch, VmExit};
use crate::vm::Vm;

/// Pre-copy rounds before giving up on convergence (pre-copy mode: forced stop-and-copy).
const MAX_ROUNDS: u32 = 30;
/// Hybrid: switch to post-copy after this many rounds without the dirty set shrinking.
const HYBRID_STALL_ROUNDS: u32 = 3;

/// Why a migration could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("a migration is already running")]
    Busy,
    #[error("cannot start the migration thread: {0}")]
    Thread(std::io::Error),
}

/// Starts migrating `vm` as `req` says, on a thread of its own, recorded in `slot`;
/// returns its first status.
pub fn start(
    vm: Arc<Vm>,
    slot: &Slot,
    req: MigrationRequest,
) -> Result<MigrationStatus, StartError> {
    req.validate()?;
    let dial = match &req.peer {
        Some(peer) => Dial::from_peer(peer).map_err(|e| FieldError::new("peer", e.to_string()))?,
        None if slot.insecure() => Dial::Insecure,
        None => {
            return Err(FieldError::new(
                "peer",
                "required: the destination's credential (this nova-vmm sends plaintext only with --insecure)",
            )
            .into())
        }
    };
    let mig = slot.claim(req.params.mode).ok_or(StartError::Busy)?;
    let status = mig.status();
    let failed = mig.clone();
    crate::seccomp::spawn_filtered(
        crate::seccomp::ThreadKind::Migration,
        "migration",
        None,
        move || run(vm, req, dial, mig),
    )
    .map_err(|e| {
        failed.update(|s| {
            s.state = MigrationState::Failed;
            s.error = Some(format!("cannot start the migration thread: {e}"));
        });
        StartError::Thread(e)
    })?;
    Ok(status)
}

/// How a migration ended, from the source's point of view.
enum Outcome {
    Completed,
    /// Contact lost after Switch: the VM stays paused here.
    Unknown(String),
}

/// Runs a migration of `vm` as `req` says, recording progress in `mig`. On success the
/// VM's process is told to exit (the VM now runs elsewhere); on failure before the
/// switch the VM is resumed here.
fn run(vm: Arc<Vm>, req: MigrationRequest, dial: Dial, mig: Arc<Outgoing>) {
    let t0 = Instant::now();
    let was_paused = vm.control.is_paused();
    let result = migrate(&vm, &req, &dial, &mig, t0);
    mig.release_links();
    let total_ms = t0.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Outcome::Completed) => {
            mig.update(|s| {
                s.state = MigrationState::Completed;
                s.phase = "done".into();
                s.total_ms = total_ms;
            });
            tracing::info!("migration to {} completed in {total_ms:.1} ms", req.to);
            vm.exit.send(VmExit::Migrated);
        }
        Ok(Outcome::Unknown(why)) => {
            mig.update(|s| {
                s.state = MigrationState::Unknown;
                s.total_ms = total_ms;
                s.error = Some(format!(
                    "{why}: the VM is paused here and may be running on the destination; resume it here only if it is not"
                ));
            });
            tracing::error!(
                "migration to {}: contact lost after the switch: {why}",
                req.to
            );
        }
        Err(e) => {
            // A cancel cuts the connections: whatever error that caused, it was the cancel.
            let e = if mig.is_cancelled() {
                MigrationError::Cancelled
            } else {
                e
            };
            vm.reset_dirty();
            if !was_paused {
                vm.resume();
            }
            let state = if matches!(e, MigrationError::Cancelled) {
                MigrationState::Cancelled
            } else {
                MigrationState::Failed
            };
            mig.update(|s| {
                s.state = state;
                s.total_ms = total_ms;
                s.error = Some(e.to_string());
            });
            tracing::warn!("migration to {} failed, VM resumed here: {e}", req.to);
        }
    }
}

fn migrate(
    vm: &Vm,
    req: &MigrationRequest,
    dial: &Dial,
    mig: &Outgoing,
    t0: Instant,
) -> Result<Outcome, MigrationError> {
    // Checked by `start`; here for the address it yields.
    let addr = req
        .validate()
        .map_err(|e| MigrationError::Vm(e.to_string()))?;
    let control = connect(addr, dial, mig)?;
    let mut conns = vec![control.writer];
    let config = serde_json::to_vec(&vm.config).map_err(|e| MigrationError::Vm(e.to_string()))?;
    // A migration that may switch to post-copy brings a connection for the pages the
    // destination faults on, so that they never queue behind the background push.
    let wants_urgent = req.params.mode != MigrationMode::Precopy;
    protocol::send(
        &mut conns[0],
        &Message::Hello {
            version: VERSION,
            connections: req.params.connections + u32::from(wants_urgent),
            config,
        },
    )?;
    // For the downtime: when Resumed reaches this host (see the switch below).
    arrival::stamp_arrivals(control.reader.socket()).map_err(MigrationError::Memory)?;
    let mut reader = BufReader::new(control.reader);
    // The destination built the VM from our configuration (or told us why not).
    expect(&mut reader, "Welcome", |m| *m == Message::Welcome)?;
    // The other connections only now: the destination examines connections side by
    // side and takes none but a Hello until it has one, so a data connection opened
    // before the Welcome could overtake the Hello and be dropped.
    for i in 1..req.params.connections {
        let mut c = connect(addr, dial, mig)?.writer;
        protocol::send(
            &mut c,
            &Message::DataHello {
                version: VERSION,
                index: i,
            },
        )?;
        conns.push(c);
    }
    let mut urgent = None;
    if wants_urgent {
        let mut c = connect(addr, dial, mig)?.writer;
        protocol::send(&mut c, &Message::UrgentHello { version: VERSION })?;
        urgent = Some(c);
    }
    let ctx = PageSender {
        vm,
        mig,
        counters: Counters::default(),
        limiter: Limiter::new(req.params.bandwidth_mbit),
        compression: req.params.compress,
    };
    let disks = DiskSender::new(vm);
    let publish = |ctx: &PageSender| {
        mig.update(|s| {
            s.blocks = disks.counts();
            s.bytes_sent = ctx.counters.bytes.load(Ordering::Relaxed);
            s.pages.sent = ctx.counters.sent.load(Ordering::Relaxed);
            s.pages.zero = ctx.counters.zero.load(Ordering::Relaxed);
            s.pages.compressed = ctx.counters.compressed.load(Ordering::Relaxed);
            s.total_ms = t0.elapsed().as_secs_f64() * 1000.0;
        })
    };

    // Dirty logging from before the first pass: anything written during it is resent.
    vm.reset_dirty();
    vm.collect_dirty()?;
    let total_pages = crate::dirty::ram_pages(&vm.mem);
    let touched = crate::snapshot::ranges::touched_pages(vm).map_err(MigrationError::Memory)?;
    mig.update(|s| s.pages.skipped = (total_pages - touched.len()) as u64);

    // Pages the destination does not have in their current form.
    let mut pending = DirtyBitmap::new(total_pages);
    // Disk blocks the destination does not have in their current form (beyond the
    // logs, which hold what the guest wrote since their last collection).
    let mut pending_blocks = disks.none();
    let mut go_postcopy = req.params.mode == MigrationMode::Postcopy;
    if go_postcopy {
        for p in &touched {
            pending.set(*p);
        }
        // Post-copy moves memory after the switch, not disks: they are copied first,
        // in rounds while the guest runs, so that the pause sends few blocks.
        if !disks.is_empty() {
            mig.update(|s| s.phase = "first-pass".into());
            pending_blocks = precopy_disks(&disks, &ctx, &mut conns, &mut reader, req)?;
            publish(&ctx);
        }
    } else {
        mig.update(|s| s.phase = "first-pass".into());
        let t = Instant::now();
        let b0 = ctx.counters.bytes.load(Ordering::Relaxed);
        ctx.send_spread(&mut conns, &touched, true)?;
        disks.first_pass(&ctx, &mut conns[0])?;
        // Rounds end when the destination has applied them, not when the socket took
        // them: megabytes sit in socket buffers, and a bandwidth measured at the sender
        // would promise a stop-and-copy that then waits for that backlog.
        flush_all(&mut conns, &mut reader)?;
        let mut last_ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut bandwidth =
            (ctx.counters.bytes.load(Ordering::Relaxed) - b0) as f64 / last_ms.max(0.05); // bytes/ms
        publish(&ctx);
        let mut best = u64::MAX;
        let mut stalled = 0;
        let mut last_round = touched.len() as u64;
        mig.update(|s| s.phase = "dirty-rounds".into());
        for round in 1..=MAX_ROUNDS {
            ctx.check_cancel()?;
            let dirty = vm.collect_dirty()?;
            let blocks = disks.collect();
            let nb = blocks.count();
            // Pages and disk blocks are both 4 KiB: the round's size counts both.
            let n = dirty.count() as u64 + nb;
            let expected_ms = (n * PAGE_SIZE as u64) as f64 / bandwidth.max(1.0);
            // Stop once the rest fits the target, unless it fills more than a twentieth
            // of it and another round would halve it: a short round costs the guest
            // nothing, a smaller remainder shortens the pause.
            let fits = expected_ms <= req.params.downtime_ms as f64;
            let worth_a_round =
                expected_ms > req.params.downtime_ms as f64 / 20.0 && n * 2 <= last_round;
            if fits && !worth_a_round {
                pending = dirty;
                pending_blocks = blocks;
                mig.update(|s| s.converged = true);
                break;
            }
            last_round = n;
            if n < best {
                best = n;
                stalled = 0;
            } else {
                stalled += 1;
            }
            if req.params.mode == MigrationMode::Hybrid
                && (stalled >= HYBRID_STALL_ROUNDS || round == MAX_ROUNDS)
            {
                pending = dirty;
                pending_blocks = blocks;
                go_postcopy = true;
                break;
            }
            if round == MAX_ROUNDS {
                pending = dirty; // pre-copy only: forced stop-and-copy, not converged
                pending_blocks = blocks;
                break;
            }
            let pages: Vec<usize> = dirty.iter().collect();
            let t = Instant::now();
            let b0 = ctx.counters.bytes.load(Ordering::Relaxed);
            ctx.send_spread(&mut conns, &pages, false)?;
            disks.send_dirty(&ctx, &mut conns[0], &blocks)?;
            flush_all(&mut conns, &mut reader)?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let sent = ctx.counters.bytes.load(Ordering::Relaxed) - b0;
            bandwidth = sent as f64 / ms.max(0.05);
            let dirty_rate = (n * PAGE_SIZE as u64) as f64 / last_ms.max(0.05);
            last_ms = ms;
            publish(&ctx);
            mig.update(|s| {
                s.rounds = round;
                s.remaining_pages = n;
                s.round_log.push(Round {
                    round,
                    pages: n,
                    ms,
                    bandwidth_mbit: bandwidth * 8.0 / 1000.0,
                    dirty_rate_mbit: dirty_rate * 8.0 / 1000.0,
                    blocks: nb,
                });
            });
        }
    }

    // Stop: from here the guest does not run until one side resumes it.
    // Post-copy needs the page request connection; checked while the VM still runs.
    let urgent = match go_postcopy {
        true => Some(urgent.ok_or_else(|| {
            MigrationError::Vm("post-copy without a page request connection".into())
        })?),
        false => None,
    };
    mig.update(|s| s.phase = "stop-and-copy".into());
    // The encoder's first run pays page faults (~40 us); not in the downtime.
    drop(crate::state::encode(&vm.state_shape()));
    let paused_at = Instant::now();
    vm.pause();
    let t_paused = paused_at.elapsed();
    pending.union(&vm.collect_dirty()?);
    // The devices drained their requests in the pause: the logs hold every write.
    pending_blocks.union(&disks.collect());
    tracing::debug!(
        "stop-and-copy: paused {t_paused:?}, dirty log {:?}, {} pages",
        paused_at.elapsed(),
        pending.count()
    );
    if go_postcopy {
        let saved = vm.save_state()?;
        mig.update(|s| {
            s.switched_to_postcopy = true;
            s.phase = "device-state".into();
        });
        // The last disk blocks before the state, on the connection that carries it.
        disks.send_dirty(&ctx, &mut conns[0], &pending_blocks)?;
        flush_data(&mut conns)?;
        // The pages the vCPUs touch first go now: on the destination each would be a
        // fault and a round trip here before the guest's first instructions complete.
        let first: Vec<usize> = first_touch::pages(&saved.vcpus, |gpa| {
            vm.mem.read_obj::<u64>(GuestAddress(gpa)).ok()
        })
        .into_iter()
        .filter_map(|gpa| crate::dirty::page_index(&vm.mem, gpa))
        .filter(|p| pending.get(*p))
        .collect();
        ctx.send(&mut conns[0], &first, false)?;
        for p in &first {
            pending.clear(*p);
        }
        protocol::send(
            &mut conns[0],
            &Message::PostcopyState {
                state: crate::state::encode(&saved),
                pending: pending.words().to_vec(),
            },
        )?;
    } else {
        // The last pages first: the destination applies them while the state is
        // saved here, instead of waiting for both in turn.
        let pages: Vec<usize> = pending.iter().collect();
        ctx.send_spread(&mut conns, &pages, false)?;
        disks.send_dirty(&ctx, &mut conns[0], &pending_blocks)?;
        flush_data(&mut conns)?;
        let state = crate::state::encode(&vm.save_state()?);
        mig.update(|s| s.phase = "device-state".into());
        protocol::send(&mut conns[0], &Message::State(state))?;
    }
    tracing::debug!("stop-and-copy: sent at {:?}", paused_at.elapsed());
    expect_soon(&mut reader, "Ready", |m| *m == Message::Ready)?;
    tracing::debug!("stop-and-copy: ready at {:?}", paused_at.elapsed());
    mig.enter_switch()?;

    // The switch. After this line the destination owns the VM.
    mig.update(|s| s.phase = "switch".into());
    let (switch_sent, switch_wall) = (paused_at.elapsed(), SystemTime::now());
    protocol::send(&mut conns[0], &Message::Switch)?;
    // When Resumed reached this host, not when this thread got to it: on a busy host
    // the thread can wake milliseconds late, and half of that would count as downtime.
    let arrived = match reader.buffer().is_empty() && !reader.get_ref().has_buffered() {
        true => match arrival::wait_arrival(reader.get_ref().socket()) {
            Ok(t) => t,
            // Nothing came within the peer timeout: do not wait a second one in recv.
            Err(e) => {
                return Ok(Outcome::Unknown(
                    protocol::ProtocolError::from(e).to_string(),
                ))
            }
        },
        false => None,
    };
    let answered = arrived
        .and_then(|t| t.duration_since(switch_wall).ok())
        .map_or_else(|| paused_at.elapsed(), |rtt| switch_sent + rtt);
    let (run_after_us, reply_after_us) = match protocol::recv(&mut reader) {
        Ok(Message::Resumed {
            run_after_us,
            reply_after_us,
        }) => (run_after_us, reply_after_us),
        Ok(m) => return Ok(Outcome::Unknown(refusal(m, "Resumed").to_string())),
        Err(e) => return Ok(Outcome::Unknown(e.to_string())),
    };
    let downtime_ms = downtime(switch_sent, answered, run_after_us, reply_after_us);
    mig.update(|s| s.downtime_ms = downtime_ms);
    publish(&ctx);
    if let Some(urgent) = urgent {
        mig.update(|s| s.phase = "post-copy".into());
        // The push keeps little in flight: a page it already sent that the guest then
        // faults on is sent again on the request connection, but the background data
        // still competes with the guest for the destination's CPU and receive path.
        set_send_buffer(&conns[0], 128 << 10);
        // The destination asks for pages only when its guest faults: silence is normal.
        // (After the switch an error leaves the VM paused here, never resumed.)
        if let Err(e) = reader.get_ref().socket().set_read_timeout(None) {
            return Ok(Outcome::Unknown(e.to_string()));
        }
        let stats = super::postcopy::serve(
            &ctx_page_source(vm),
            &mut conns[0],
            reader,
            urgent,
            &pending,
            &ctx.counters,
            &ctx.limiter,
            ctx.compression,
        )
        .map_err(|e| MigrationError::Vm(format!("post-copy after the switch: {e}")));
        match stats {
            Ok(stats) => mig.update(|s| s.postcopy = stats),
            // The destination runs the VM; pages it never got are lost with this error.
            Err(e) => return Ok(Outcome::Unknown(e.to_string())),
        }
        publish(&ctx);
        mig.update(|s| s.converged = true);
    }
    Ok(Outcome::Completed)
}

/// Copies the disks while the guest runs (for post-copy, which moves only memory after
/// the switch): the first pass, then rounds of the blocks written meanwhile until the
/// rest fits the downtime target or the rounds run out. Returns the rest.
fn precopy_disks(
    disks: &DiskSender,
    ctx: &PageSender,
    conns: &mut [LinkWriter],
    reader: &mut BufReader<LinkReader>,
    req: &MigrationRequest,
) -> Result<super::disks::DirtyBlocks, MigrationError> {
    let t = Instant::now();
    let b0 = ctx.counters.bytes.load(Ordering::Relaxed);
    disks.first_pass(ctx, &mut conns[0])?;
    flush_all(conns, reader)?;
    let sent = ctx.counters.bytes.load(Ordering::Relaxed) - b0;
    let mut bandwidth = sent as f64 / (t.elapsed().as_secs_f64() * 1000.0).max(0.05);
    for _ in 0..MAX_ROUNDS {
        ctx.check_cancel()?;
        let blocks = disks.collect();
        let expected_ms = (blocks.count() * PAGE_SIZE as u64) as f64 / bandwidth.max(1.0);
        if expected_ms <= req.params.downtime_ms as f64 {
            return Ok(blocks);
        }
        let t = Instant::now();
        let b0 = ctx.counters.bytes.load(Ordering::Relaxed);
        disks.send_dirty(ctx, &mut conns[0], &blocks)?;
        flush_all(conns, reader)?;
        let sent = ctx.counters.bytes.load(Ordering::Relaxed) - b0;
        bandwidth = sent as f64 / (t.elapsed().as_secs_f64() * 1000.0).max(0.05);
    }
    Ok(disks.collect())
}

/// Milliseconds from the source's pause to the destination's vCPUs running: the
/// Switch left `switch_sent` after the pause and Resumed arrived `answered` after it;
/// the destination ran its vCPUs `run_after_us` and replied `reply_after_us` after the
/// Switch reached it. The wire takes half of what the round trip spent outside the
/// destination (as NTP reckons it), so neither the way back nor the destination's
/// scheduling after its vCPUs ran counts.
fn downtime(
    switch_sent: Duration,
    answered: Duration,
    run_after_us: u64,
    reply_after_us: u64,
) -> f64 {
    let away = answered.saturating_sub(switch_sent);
    let wire = away.saturating_sub(Duration::from_micros(reply_after_us)) / 2;
    let ran = switch_sent + wire + Duration::from_micros(run_after_us);
    ran.min(answered).as_secs_f64() * 1000.0
}

/// Pages of a paused VM for the post-copy server.
fn ctx_page_source(vm: &Vm) -> impl Fn(usize, &mut [u8]) -> std::io::Result<()> + '_ {
    move |p, buf| vm.read_page(p, buf)
}

#[cfg(test)]
mod tests {
    use super::downtime;
    use std::time::Duration;

    const US: fn(u64) -> Duration = Duration::from_micros;

    #[test]
    fn downtime_counts_the_way_there_and_the_destination_until_its_vcpus_ran() {
        // Switch sent 500 us after the pause; Resumed back 700 us after it. The
        // destination ran its vCPUs 20 us after the Switch arrived and replied at 40 us:
        // 160 us on the wire both ways, 80 each.
        let ms = downtime(US(500), US(700), 20, 40);
        assert!((ms - 0.600).abs() < 1e-9, "{ms}");
    }

    #[test]
    fn a_destination_descheduled_after_its_vcpus_ran_does_not_inflate_it() {
        // Its reply left 2.5 ms after the vCPUs ran: that time is not downtime.
        let ms = downtime(US(500), US(3_100), 20, 2_540);
        assert!((ms - 0.550).abs() < 1e-9, "{ms}");
    }

    #[test]
    fn downtime_never_exceeds_the_time_until_the_answer() {
        // A destination claiming more time than the round trip had is capped by it.
        assert_eq!(downtime(US(500), US(600), 5_000, 0), 0.6);
    }
}
