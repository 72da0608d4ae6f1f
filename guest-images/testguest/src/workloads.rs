//! The workloads (counter, dirty, disk, net, echo, spin, poweroff, reset) and the
//! cooperative main loop that runs them together on the BSP.

use crate::blk::Blk;
use crate::cpu::{halt_forever, outb, rdtsc, Clock};
use crate::net::Net;
use crate::pvh::{BootInfo, Config, DirtyArgs};
use crate::serial::{error, write_line, Input, Line};
use core::num::NonZeroU64;
use nova_guest_abi::{
    check_block, dirty_words, fill_block, line, GUEST_BLOCKS, GUEST_BLOCKS_START, GUEST_MAGIC,
    HOST_BLOCKS, HOST_MAGIC, PAGE_SIZE,
};

/// QEMU microvm's ACPI GED sleep-control register (nova-vmm honours the same).
const GED_SLEEP_CTL: usize = 0xfea0_0200;
/// SLP_EN | SLP_TYP=5 (S5).
const GED_S5: u8 = 0x34;

/// `counter`: `NOVA-TICK <seq>` every millisecond, never bursting to catch up.
///
/// The next line waits ready, newline included, and is bumped in place after it
/// leaves (usually one byte). Every guest instruction costs ~1 us under emulation, so
/// building a line at its deadline (clearing a buffer, formatting, copying) held each
/// tick back ~0.5 ms; a tick now leaves when it is due, and the host's timestamps
/// measure the VMM's pauses rather than the guest's formatting.
struct Counter {
    deadline: u64,
    line: [u8; TICK_MAX],
    len: usize,
}

/// `NOVA-TICK`, a space, up to 20 digits and the newline.
const TICK_MAX: usize = line::TICK.len() + 22;

impl Counter {
    fn new() -> Counter {
        let mut line = [0u8; TICK_MAX];
        let key = line::TICK.len();
        line[..key].copy_from_slice(line::TICK.as_bytes());
        line[key..key + 3].copy_from_slice(b" 0\n");
        Counter {
            deadline: rdtsc(),
            line,
            len: key + 3,
        }
    }

    fn poll(&mut self, clock: &Clock) {
        if rdtsc() < self.deadline {
            return;
        }
        write_line(&self.line[..self.len]);
        self.bump();
        let period = clock.ms(1);
        let now = rdtsc();
        self.deadline += period;
        if now > self.deadline + period {
            self.deadline = now + period;
        }
    }

    /// Adds one to the decimal number before the newline.
    fn bump(&mut self) {
        let first = line::TICK.len() + 1;
        let mut i = self.len - 1;
        while i > first {
            i -= 1;
            if self.line[i] != b'9' {
                self.line[i] += 1;
                return;
            }
            self.line[i] = b'0';
        }
        // All nines: one digit more ("999" -> "1000"); 20 digits hold any u64.
        if self.len < TICK_MAX {
            self.line.copy_within(first..self.len, first + 1);
            self.line[first] = b'1';
            self.len += 1;
        }
    }
}

/// Pages the dirtier touches between clock checks (~30 us each under emulation).
const DIRTY_CHUNK: u64 = 8;

/// `dirty`: passes over a buffer writing [`dirty_words`], checking the previous pass.
struct Dirty {
    base: u64,
    pages: u64,
    /// TSC ticks per page at the requested rate; `None` for `max`.
    ticks_per_page: Option<NonZeroU64>,
    generation: u64,
    next: u64,
    errors: u64,
    rate_start: u64,
    rate_pages: u64,
    first_done: bool,
}

impl Dirty {
    fn new(args: DirtyArgs, boot: &BootInfo, clock: &Clock) -> Option<Dirty> {
        let bytes = args.mib << 20;
        // SAFETY: taking the address of a linker symbol.
        let image_end = unsafe { &crate::entry::__image_end as *const u8 as u64 };
        let floor = (image_end + 0x1f_ffff) & !0x1f_ffff;
        let base = boot.ram().iter().find_map(|r| {
            let start = r.start.max(floor);
            let start = (start + 0xfff) & !0xfff;
            let end = (r.start + r.len).min(1 << 32);
            (end > start && end - start >= bytes).then_some(start)
        });
        let Some(base) = base else {
            Line::new(line::ERROR)
                .s(" what=dirty_does_not_fit")
                .kv("mib", args.mib)
                .emit();
            return None;
        };
        let pages = bytes / PAGE_SIZE as u64;
        let ticks_per_page = match args.rate {
            0 => None,
            r => NonZeroU64::new(
                (clock.per_ms * 1000)
                    .checked_div(r * 256)
                    .unwrap_or(1)
                    .max(1),
            ),
        };
        Some(Dirty {
            base,
            pages,
            ticks_per_page,
            generation: 1,
            next: 0,
            errors: 0,
            rate_start: rdtsc(),
            rate_pages: 0,
            first_done: false,
        })
    }

    /// Works in chunks of [`DIRTY_CHUNK`] pages until `until` (TSC) or until the rate
    /// limit says stop; always does one chunk, so other workloads cannot starve it.
    fn step(&mut self, until: u64, clock: &Clock) {
        let mut first = true;
        loop {
            let now = rdtsc();
            if now >= until && !first {
                return;
            }
            first = false;
            let mut budget = DIRTY_CHUNK;
            if let Some(tpp) = self.ticks_per_page {
                let allowed = now.wrapping_sub(self.rate_start) / tpp;
                let slack = self.pages.min(clock.per_ms * 100 / tpp + 1);
                if allowed > self.rate_pages + slack {
                    // Far behind (the VM was paused): rebase instead of bursting.
                    self.rate_start = now;
                    self.rate_pages = 0;
                }
                budget = budget.min(allowed.saturating_sub(self.rate_pages));
                if budget == 0 {
                    return;
                }
            }
            self.rate_pages += budget;
            self.run(budget);
        }
    }

    fn run(&mut self, mut n: u64) {
        let g = self.generation;
        while n > 0 {
            let p = self.next;
            let w = (self.base + p * PAGE_SIZE as u64) as *mut u64;
            // SAFETY: page p < pages lies in the RAM range chosen in `new` (inside the
            // identity map, above the image, owned by nothing else).
            unsafe {
                if g > 1 {
                    let old = dirty_words(p, g - 1);
                    if w.read_volatile() != old[0] || w.add(1).read_volatile() != old[1] {
                        self.errors += 1;
                    }
                }
                let new = dirty_words(p, g);
                w.write_volatile(new[0]);
                w.add(1).write_volatile(new[1]);
            }
            n -= 1;
            self.next += 1;
            if self.next == self.pages {
                Line::new(line::DIRTY)
                    .kv("pass", g)
                    .kv("pages", self.pages)
                    .kv("errors", self.errors)
                    .emit();
                self.first_done = true;
                self.generation += 1;
                self.next = 0;
                return;
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    HostRead(u64),
    Write(u64),
    Flush,
    Verify(u64),
    Wait(u64),
}

/// `disk`: host blocks once, then write / flush / read-back-verify passes.
struct Disk {
    blk: Blk,
    phase: Phase,
    in_flight: bool,
    pass: u64,
    host_ok: u64,
    written: u64,
    verified: u64,
    errors: u64,
    first_done: bool,
}

impl Disk {
    fn new(cfg: &Config) -> Option<Disk> {
        let blk = match Blk::init(cfg) {
            Ok(b) => b,
            Err(e) => {
                error(e);
                return None;
            }
        };
        let need = GUEST_BLOCKS_START + GUEST_BLOCKS;
        if blk.blocks() < need {
            Line::new(line::ERROR)
                .s(" what=disk_too_small")
                .kv("sectors", blk.sectors)
                .kv("need", need * 8)
                .emit();
            return None;
        }
        Some(Disk {
            blk,
            phase: Phase::HostRead(0),
            in_flight: false,
            pass: 1,
            host_ok: 0,
            written: 0,
            verified: 0,
            errors: 0,
            first_done: false,
        })
    }

    fn step(&mut self, clock: &Clock) {
        if self.in_flight {
            let Some(ok) = self.blk.poll() else { return };
            self.in_flight = false;
            self.complete(ok, clock);
        }
        self.issue();
    }

    fn complete(&mut self, ok: bool, clock: &Clock) {
        self.phase = match self.phase {
            Phase::HostRead(i) => {
                if ok && check_block(self.blk.data(), HOST_MAGIC, i).is_ok() {
                    self.host_ok += 1;
                }
                if i + 1 < HOST_BLOCKS {
                    Phase::HostRead(i + 1)
                } else {
                    Phase::Write(0)
                }
            }
            Phase::Write(j) => {
                if ok {
                    self.written += 1;
                } else {
                    self.errors += 1;
                }
                if j + 1 < GUEST_BLOCKS {
                    Phase::Write(j + 1)
                } else if self.blk.flush {
                    Phase::Flush
                } else {
                    Phase::Verify(0)
                }
            }
            Phase::Flush => {
                if !ok {
                    self.errors += 1;
                }
                Phase::Verify(0)
            }
            Phase::Verify(j) => {
                let index = GUEST_BLOCKS_START + j;
                if ok && check_block(self.blk.data(), GUEST_MAGIC, index) == Ok(self.pass) {
                    self.verified += 1;
                } else {
                    self.errors += 1;
                }
                if j + 1 < GUEST_BLOCKS {
                    Phase::Verify(j + 1)
                } else {
                    Line::new(line::DISK)
                        .kv("pass", self.pass)
                        .kv("host_ok", self.host_ok)
                        .kv("written", self.written)
                        .kv("verified", self.verified)
                        .kv("errors", self.errors)
                        .emit();
                    self.first_done = true;
                    Phase::Wait(rdtsc() + clock.ms(50))
                }
            }
            p => p,
        };
    }

    fn issue(&mut self) {
        match self.phase {
            Phase::HostRead(i) => self.blk.start_read(i),
            Phase::Write(j) => {
                let index = GUEST_BLOCKS_START + j;
                fill_block(self.blk.data(), GUEST_MAGIC, index, self.pass);
                self.blk.start_write(index);
            }
            Phase::Flush => self.blk.start_flush(),
            Phase::Verify(j) => self.blk.start_read(GUEST_BLOCKS_START + j),
            Phase::Wait(t) => {
                if rdtsc() < t {
                    return;
                }
                self.pass += 1;
                self.written = 0;
                self.verified = 0;
                self.phase = Phase::Write(0);
                return self.issue();
            }
        }
        self.in_flight = true;
    }
}

fn poweroff() -> ! {
    Line::new(line::POWEROFF).emit();
    // SAFETY: the GED sleep-control register is an identity-mapped MMIO byte.
    unsafe { (GED_SLEEP_CTL as *mut u8).write_volatile(GED_S5) };
    halt_forever()
}

fn reset() -> ! {
    Line::new(line::RESET).emit();
    outb(0x64, 0xfe);
    // Fallback: triple fault through an empty IDT.
    let idt = [0u16; 5];
    // SAFETY: loading a zero-limit IDT and raising an exception resets the VM, which
    // is exactly what is wanted.
    // (`ud2`, not `int3`: KVM's emulator cannot emulate `int3` in protected mode.)
    unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) idt.as_ptr(), options(nostack)) };
    halt_forever()
}

/// Runs the configured workloads forever (or until poweroff/reset).
pub fn run(cfg: &Config, boot: &BootInfo, clock: &Clock) -> ! {
    let w = cfg.work;
    // `spin:<s>`: idle (halted between timer ticks) for s seconds before anything
    // else, then busy for good: a VM whose CPU use jumps from nothing to a whole core.
    if let Some(after) = w.spin_after_s {
        crate::timer::sleep_until(rdtsc().saturating_add(clock.ms(after.saturating_mul(1000))));
        Line::new(line::SPIN).kv("after_s", after).emit();
    }
    let mut counter = w.counter.then(Counter::new);
    let mut net = match (w.net, cfg.ip) {
        (false, _) => None,
        (true, None) => {
            error("no_ip");
            None
        }
        (true, Some(ip)) => match Net::init(cfg, ip) {
            Ok(n) => {
                let mut l = Line::new(line::NET);
                l.s(" ip=");
                for (i, b) in n.ip.iter().enumerate() {
                    if i > 0 {
                        l.b(b'.');
                    }
                    l.u(*b as u64);
                }
                l.s(" mac=");
                for (i, b) in n.mac.iter().enumerate() {
                    if i > 0 {
                        l.b(b':');
                    }
                    l.hex(*b as u64, 2);
                }
                l.s(" ready=1").emit();
                Some(n)
            }
            Err(e) => {
                error(e);
                None
            }
        },
    };
    let mut disk = if w.disk { Disk::new(cfg) } else { None };
    let mut echo = w.echo.then(Input::new);
    let mut dirty = w.dirty.and_then(|a| Dirty::new(a, boot, clock));
    let finite_pending = |disk: &Option<Disk>, dirty: &Option<Dirty>| {
        disk.as_ref().is_some_and(|d| !d.first_done)
            || dirty.as_ref().is_some_and(|d| !d.first_done)
    };
    loop {
        if (w.poweroff || w.reset) && !finite_pending(&disk, &dirty) {
            if w.poweroff {
                poweroff();
            }
            reset();
        }
        if counter.is_none()
            && net.is_none()
            && disk.is_none()
            && dirty.is_none()
            && echo.is_none()
            && w.spin_after_s.is_none()
        {
            halt_forever();
        }
        if let Some(e) = echo.as_mut() {
            e.poll();
        }
        if let Some(c) = counter.as_mut() {
            c.poll(clock);
        }
        if let Some(n) = net.as_mut() {
            n.poll();
        }
        if let Some(d) = disk.as_mut() {
            d.step(clock);
        }
        if let Some(d) = dirty.as_mut() {
            let until = match &counter {
                Some(c) => c.deadline,
                None => rdtsc() + clock.ms(1),
            };
            d.step(until, clock);
        }
    }
}
