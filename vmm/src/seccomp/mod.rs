//! Per-thread seccomp filters: every thread of a running VMM is confined to the
//! syscalls its kind needs ([`rules`], one function per [`ThreadKind`]), compiled once
//! at start with `seccompiler` and applied by the thread itself as its first act
//! ([`spawn_filtered`]). A syscall outside the list traps: the SIGSYS handler writes
//! the syscall number and thread to stderr (the VMM's log) and the process then dies
//! of SIGSYS, which hostd reports as a crash.
//!
//! Filters stack: a thread runs under its own filter and every filter of the threads
//! that started it, so a thread that starts others (main, API, vCPUs that activate
//! devices) allows what those need too; [`rules`] says which.
//!
//! Nothing is filtered until [`install`] runs (`nova-vmm run`; not `--no-seccomp`, not
//! the library's unit tests).

pub mod rules;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// What a thread does, and so which syscalls it may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread: starts every other and waits for the VM to stop.
    Main,
    /// A vCPU: KVM_RUN and its exits (MMIO and port I/O to devices).
    Vcpu,
    /// The API server and its connections (snapshots and migrations start here).
    Api,
    /// A device's queue worker: guest memory, its backend file or tap, eventfds.
    Device,
    /// A migration thread (sender, receiver data connection, post-copy).
    Migration,
    /// A userfaultfd server (lazy restore).
    Uffd,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 6] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Api,
        ThreadKind::Device,
        ThreadKind::Migration,
        ThreadKind::Uffd,
    ];
}

/// Why the filters could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the {0:?} seccomp filter: {1}")]
    Build(ThreadKind, seccompiler::BackendError),
    #[error("applying the {0:?} seccomp filter: {1}")]
    Apply(ThreadKind, seccompiler::Error),
    #[error("installing the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

thread_local! {
    /// This thread's kind, for the SIGSYS report.
    static KIND: std::cell::Cell<Option<ThreadKind>> = const { std::cell::Cell::new(None) };
}

static FILTERS: OnceLock<BTreeMap<ThreadKind, Vec<BpfProgram>>> = OnceLock::new();

/// Builds the BPF program of `kind`.
pub fn compile(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules::rules(kind),
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(kind, e))?;
    filter.try_into().map_err(|e| SeccompError::Build(kind, e))
}

/// The programs a thread of `kind` applies: its list, and (stacked on it, the
/// kernel taking the strictest answer) one failing [`rules::refused`] with EACCES.
pub fn compile_all(kind: ThreadKind) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut progs = vec![compile(kind)?];
    let refused = rules::refused(kind);
    if !refused.is_empty() {
        let filter = SeccompFilter::new(
            refused.iter().map(|&nr| (nr, Vec::new())).collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EACCES as u32),
            TargetArch::x86_64,
        )
        .map_err(|e| SeccompError::Build(kind, e))?;
        progs.push(
            filter
                .try_into()
                .map_err(|e| SeccompError::Build(kind, e))?,
        );
    }
    Ok(progs)
}

/// Compiles every kind's filter and installs the SIGSYS reporter; from now on
/// [`apply`] and [`spawn_filtered`] confine threads. Call once, before any thread.
pub fn install() -> Result<(), SeccompError> {
    let mut all = BTreeMap::new();
    for kind in ThreadKind::ALL {
        all.insert(kind, compile_all(kind)?);
    }
    install_sigsys_handler()?;
    let _ = FILTERS.set(all);
    Ok(())
}

/// Whether [`install`] ran (filters are in force for new threads).
pub fn enabled() -> bool {
    FILTERS.get().is_some()
}

/// Confines the calling thread to `kind`'s syscalls (no-op when not installed).
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    let Some(all) = FILTERS.get() else {
        return Ok(());
    };
    KIND.with(|k| k.set(Some(kind)));
    for prog in &all[&kind] {
        seccompiler::apply_filter(prog).map_err(|e| SeccompError::Apply(kind, e))?;
    }
    Ok(())
}

/// Names the calling thread's kind in SIGSYS reports without narrowing its filters:
/// for a short-lived helper of `kind` that makes only syscalls its starter may make
/// (the filters it inherited from it are in force).
pub fn inherit(kind: ThreadKind) {
    KIND.with(|k| k.set(Some(kind)));
}

/// Starts a thread called `name` that confines itself to `kind` before running `f`.
/// Every VMM thread is started through this (or applies its filter first itself).
pub fn spawn_filtered<F, T>(
    kind: ThreadKind,
    name: impl Into<String>,
    stack_size: Option<usize>,
    f: F,
) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let mut b = std::thread::Builder::new().name(name.into());
    if let Some(s) = stack_size {
        b = b.stack_size(s);
    }
    b.spawn(move || {
        KIND.with(|k| k.set(Some(kind)));
        if let Err(e) = apply(kind) {
            // A thread that cannot be confined must not run guest-facing code.
            tracing::error!("{e}; stopping the VMM");
            std::process::abort();
        }
        f()
    })
}

/// SIGSYS: say which syscall was refused, then die of SIGSYS.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // siginfo's seccomp fields: si_syscall is an int at offset 24 on x86_64
    // (after si_signo, si_errno, si_code, padding and si_call_addr).
    // SAFETY: the kernel hands a valid siginfo_t to an SA_SIGINFO handler.
    let nr = unsafe { *((info as *const u8).add(24) as *const i32) };
    let mut buf = [0u8; 96];
    let prefix = b"nova-vmm: seccomp refused syscall ";
    let mut n = prefix.len();
    buf[..n].copy_from_slice(prefix);
    n += write_decimal(&mut buf[n..], nr.max(0) as u64);
    let kind: &[u8] = match KIND.with(|k| k.get()) {
        Some(ThreadKind::Main) => b" on the main thread",
        Some(ThreadKind::Vcpu) => b" on a vCPU thread",
        Some(ThreadKind::Api) => b" on an API thread",
        Some(ThreadKind::Device) => b" on a device thread",
        Some(ThreadKind::Migration) => b" on a migration thread",
        Some(ThreadKind::Uffd) => b" on a userfaultfd thread",
        None => b" on an unfiltered thread",
    };
    buf[n..n + kind.len()].copy_from_slice(kind);
    n += kind.len();
    buf[n] = b'\n';
    n += 1;
    // SAFETY: write(2) and the refused syscall are async-signal-safe. SIGSYS is
    // blocked inside its handler, so the kernel answers the refused syscall (made
    // again here) by killing the process with SIGSYS, as if it had no handler.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::syscall(nr as libc::c_long, 0, 0, 0, 0, 0, 0);
        // Reached only if that syscall is allowed with zero arguments.
        libc::signal(libc::SIGSYS, libc::SIG_DFL);
        libc::raise(libc::SIGSYS);
    }
}

fn write_decimal(out: &mut [u8], mut v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = 0;
    loop {
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        i += 1;
        if v == 0 {
            break;
        }
    }
    for j in 0..i {
        out[j] = digits[i - 1 - j];
    }
    i
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: a zeroed sigaction with our handler; sigaction(2) copies it.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) != 0 {
            return Err(SeccompError::Handler(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles() {
        for kind in ThreadKind::ALL {
            assert!(!compile(kind).unwrap().is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn a_migration_thread_is_refused_opening_a_file_and_lives_on() {
        let progs = compile_all(ThreadKind::Migration).unwrap();
        assert_eq!(progs.len(), 2, "its list and the EACCES filter");
        let file = std::fs::File::open("/dev/null").unwrap();
        let t = std::thread::spawn(move || {
            for p in &progs {
                seccompiler::apply_filter(p).unwrap();
            }
            let open = std::fs::File::open("/dev/null").map(|_| ());
            // What it does with descriptors it was given still works.
            let stat = file.metadata().map(|m| m.len());
            (open.map_err(|e| e.raw_os_error()), stat.is_ok())
        });
        let (open, stat) = t.join().unwrap();
        assert_eq!(open, Err(Some(libc::EACCES)));
        assert!(stat);
    }

    #[test]
    fn decimals_are_written_without_formatting() {
        let mut b = [0u8; 20];
        let n = write_decimal(&mut b, 1234);
        assert_eq!(&b[..n], b"1234");
        let n = write_decimal(&mut b, 0);
        assert_eq!(&b[..n], b"0");
    }
}
