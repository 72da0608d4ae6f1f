//! vCPU threads: one per vCPU, each running KVM_RUN and dispatching exits to the port
//! I/O and MMIO buses, and the [`RunControl`] that pauses, resumes and stops them.

pub mod cpuid;
pub mod first_touch;
pub mod regs;
pub mod state;
pub mod tsc;

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::Bus;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off.
    Poweroff,
    /// The guest reset itself (i8042 pulse or triple fault).
    Reset,
    /// The API asked the VM to stop.
    Shutdown,
    /// A graceful stop pressed the power button and the guest did not power off
    /// within its timeout.
    StopTimeout,
    /// The VM was migrated away and runs elsewhere now.
    Migrated,
    /// A vCPU hit something the VMM cannot continue from.
    Error(String),
}

/// First reason wins; the VM's main thread waits on `evt`.
pub struct ExitSignal {
    reason: Mutex<Option<VmExit>>,
    pub evt: EventFd,
}

impl ExitSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Records `reason` unless another came first, and wakes the main thread.
    pub fn send(&self, reason: VmExit) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        let _ = self.evt.write(1);
    }

    pub fn reason(&self) -> Option<VmExit> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Exit counters of one vCPU.
#[derive(Default, Debug)]
pub struct VcpuStats {
    pub exits: AtomicU64,
    pub io_exits: AtomicU64,
    pub mmio_exits: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Pause,
    Stop,
}

struct Control {
    want: Want,
    paused: usize,
}

/// What every vCPU thread checks between two KVM_RUNs.
pub struct RunControl {
    state: Mutex<Control>,
    cond: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for RunControl {
    fn default() -> Self {
        Self {
            state: Mutex::new(Control {
                want: Want::Run,
                paused: 0,
            }),
            cond: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        }
    }
}

thread_local! {
    /// This vCPU thread's `kvm_run`, for the kick handler (null on other threads).
    static KVM_RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// A kick that lands while the thread is outside KVM_RUN (handling an exit, or about to
/// enter) must still stop the next one: `immediate_exit` makes that KVM_RUN return at
/// once instead of running the guest until the next kick.
extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: `run` is this thread's kvm_run mapping, alive while the thread runs
        // its vCPU; the kernel reads the flag at KVM_RUN entry.
        unsafe { std::ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
    }
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

impl RunControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while paused; false once the VM is stopping. `settle` runs first when a
    /// pause is wanted, outside the lock, to finish the vCPU's last exit.
    fn checkpoint(&self, settle: impl FnOnce()) -> bool {
        let mut s = self.lock();
        if s.want == Want::Pause {
            drop(s);
            settle();
            s = self.lock();
        }
        if s.want == Want::Pause {
            s.paused += 1;
            self.cond.notify_all();
            while s.want == Want::Pause {
                s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.paused -= 1;
        }
        s.want != Want::Stop
    }

    /// Interrupts every vCPU thread's KVM_RUN.
    fn kick_all(&self) {
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // SAFETY: the thread handle is alive (joined only in `stop`), and the signal
            // has a no-op handler installed before any vCPU thread starts.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
    }

    /// Pauses every vCPU; returns once all are out of KVM_RUN and waiting.
    pub fn pause(&self) {
        let n = self.threads.lock().unwrap_or_else(|e| e.into_inner()).len();
        let mut s = self.lock();
        if s.want == Want::Stop {
            return;
        }
        s.want = Want::Pause;
        while s.paused < n {
            drop(s);
            // The handler makes a kick outside KVM_RUN stop the next one; kick again
            // only if a thread is slow to park.
            self.kick_all();
            s = self.lock();
            if s.paused >= n {
                break; // they parked while we kicked: their notify came before our wait
            }
            let (g, _) = self
                .cond
                .wait_timeout(s, Duration::from_micros(500))
                .unwrap_or_else(|e| e.into_inner());
            s = g;
        }
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        let mut s = self.lock();
        if s.want == Want::Pause {
            s.want = Want::Run;
            self.cond.notify_all();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.lock().want == Want::Pause
    }

    /// Stops and joins every vCPU thread.
    pub fn stop(&self) {
        self.lock().want = Want::Stop;
        self.cond.notify_all();
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            while !t.is_finished() {
                // SAFETY: as in `kick_all`; the thread has not been joined yet.
                unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = t.join();
        }
    }
}

/// Everything a vCPU thread needs besides its fd.
#[derive(Clone)]
pub struct VcpuContext {
    pub pio: Bus,
    pub mmio: Bus,
    pub control: Arc<RunControl>,
    pub exit: Arc<ExitSignal>,
    pub stats: Arc<VcpuStats>,
}

/// Starts the thread running vCPU `index`.
pub fn spawn(index: u8, fd: Arc<Mutex<VcpuFd>>, ctx: VcpuContext) -> std::io::Result<()> {
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            .expect("installing the vCPU kick signal handler");
    });
    let control = ctx.control.clone();
    let handle = crate::seccomp::spawn_filtered(
        crate::seccomp::ThreadKind::Vcpu,
        format!("vcpu{index}"),
        Some(256 << 10),
        move || run(index, &fd, &ctx),
    )?;
    control
        .threads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(handle);
    Ok(())
}

fn run(index: u8, fd: &Mutex<VcpuFd>, ctx: &VcpuContext) {
    let run = fd.lock().unwrap_or_else(|e| e.into_inner()).get_kvm_run() as *mut _;
    KVM_RUN.with(|r| r.set(run));
    while ctx
        .control
        .checkpoint(|| settle(&mut fd.lock().unwrap_or_else(|e| e.into_inner())))
    {
        // Uncontended while running; the VM takes it only while the vCPU is paused.
        let exit = run_once(
            index,
            &mut fd.lock().unwrap_or_else(|e| e.into_inner()),
            ctx,
        );
        if let Some(exit) = exit {
            ctx.exit.send(exit);
            // Park until the main thread stops us: the VM is going away.
            ctx.control.lock().want = Want::Stop;
            return;
        }
    }
}

/// Completes the vCPU's last I/O or MMIO exit inside KVM before it parks: until the
/// next KVM_RUN, an `out` or MMIO write whose effect the VMM already performed still
/// has its RIP on the instruction (and an `in` or MMIO read has not loaded its
/// register), so state saved now would replay it on the destination, printing a
/// console byte twice. KVM_RUN with `immediate_exit` set finishes the instruction and
/// returns EINTR without running the guest.
fn settle(fd: &mut VcpuFd) {
    // Only an I/O or MMIO exit leaves work behind (a kick leaves KVM_EXIT_INTR), and
    // on PVM hosts every KVM_RUN costs a good part of a millisecond's budget.
    let reason = fd.get_kvm_run().exit_reason;
    if reason != kvm_bindings::KVM_EXIT_IO && reason != kvm_bindings::KVM_EXIT_MMIO {
        return;
    }
    fd.set_kvm_immediate_exit(1);
    match fd.run() {
        Err(e) if e.errno() == libc::EINTR => {}
        Err(e) => tracing::warn!("completing the last exit before a pause: {e}"),
        Ok(exit) => {
            tracing::warn!("completing the last exit before a pause: unexpected exit {exit:?}")
        }
    }
    fd.set_kvm_immediate_exit(0);
}

/// One KVM_RUN and its exit; `Some` when the VM must stop.
fn run_once(index: u8, fd: &mut VcpuFd, ctx: &VcpuContext) -> Option<VmExit> {
    let result = fd.run();
    ctx.stats.exits.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(VcpuExit::IoOut(port, data)) => {
            ctx.stats.io_exits.fetch_add(1, Ordering::Relaxed);
            ctx.pio.write(port as u64, data);
        }
        Ok(VcpuExit::IoIn(port, data)) => {
            ctx.stats.io_exits.fetch_add(1, Ordering::Relaxed);
            if !ctx.pio.read(port as u64, data) {
                data.fill(0xff);
            }
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            ctx.stats.mmio_exits.fetch_add(1, Ordering::Relaxed);
            ctx.mmio.write(addr, data);
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            ctx.stats.mmio_exits.fetch_add(1, Ordering::Relaxed);
            if !ctx.mmio.read(addr, data) {
                data.fill(0);
            }
        }
        Ok(VcpuExit::Hlt) => std::thread::sleep(Duration::from_millis(1)),
        Ok(VcpuExit::Shutdown) => {
            // A triple fault: a reset on real hardware, and how guests reboot by force.
            tracing::info!("vcpu{index}: triple fault (reset): {}", regs::describe(fd));
            return Some(VmExit::Reset);
        }
        Ok(VcpuExit::SystemEvent(kind, _)) => {
            return Some(if kind == kvm_bindings::KVM_SYSTEM_EVENT_RESET {
                VmExit::Reset
            } else {
                VmExit::Poweroff
            })
        }
        Ok(VcpuExit::InternalError) => {
            // SAFETY: on KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal` member.
            let suberror = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
            let what = if suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
                "emulation failure (an instruction KVM's emulator does not handle)"
            } else {
                "internal error"
            };
            return Some(VmExit::Error(format!(
                "vcpu{index}: KVM {what}, suberror {suberror}: {}",
                regs::describe(fd)
            )));
        }
        Ok(VcpuExit::FailEntry(reason, cpu)) => {
            return Some(VmExit::Error(format!(
                "vcpu{index}: KVM entry failed (reason {reason:#x}, cpu {cpu}): {}",
                regs::describe(fd)
            )));
        }
        Ok(other) => {
            let what = format!("{other:?}");
            return Some(VmExit::Error(format!(
                "vcpu{index}: unexpected exit {what}: {}",
                regs::describe(fd)
            )));
        }
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            // A kick's `immediate_exit` has done its work; the next KVM_RUN runs the guest.
            fd.set_kvm_immediate_exit(0);
            let reason = fd.get_kvm_run().exit_reason;
            if reason != kvm_bindings::KVM_EXIT_INTR {
                tracing::warn!(
                    "vcpu{index}: KVM_RUN interrupted with exit reason {reason} pending"
                );
            }
        }
        Err(e) => {
            return Some(VmExit::Error(format!(
                "vcpu{index}: KVM_RUN failed: {e}: {}",
                regs::describe(fd)
            )));
        }
    }
    None
}
