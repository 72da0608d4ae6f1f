//! The syscalls each kind of VMM thread may make: one function per [`ThreadKind`],
//! built from named groups. A thread's filter stacks on those of the threads that
//! started it, so a starter's list includes its children's (main starts all; the
//! API thread starts migrations and restarts device workers on resume; a vCPU starts
//! a device's worker when the guest activates it).
//!
//! What no thread may do: exec, fork a process, ptrace, mount, change ids, load
//! modules, open files (except main and API threads; a migration thread's open is
//! answered EACCES, see [`refused`]), make sockets (except main, API and migration
//! threads).

use std::collections::BTreeMap;

use seccompiler::SeccompRule;

use super::ThreadKind;

/// Every thread: memory, futexes, time, signals, logging to stderr, exit.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_getuid,
];

/// Starting threads, each of which then installs its own filter.
const SPAWN: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    libc::SYS_tgkill,
];

/// Device workers: their fds (eventfds, epoll, the disk file, the tap, io_uring).
const DEVICE_IO: &[i64] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_create1,
    libc::SYS_io_uring_enter,
    libc::SYS_ioctl,
    libc::SYS_fcntl,
];

/// Setting a device up: what activation (on a vCPU) or resume (on the API) makes.
const DEVICE_SETUP: &[i64] = &[
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_register,
    libc::SYS_dup,
    libc::SYS_fcntl,
];

/// A vCPU: KVM_RUN and the register ioctls, kicks between vCPUs.
const VCPU: &[i64] = &[libc::SYS_ioctl, libc::SYS_tgkill, libc::SYS_read];

/// Files: snapshots written and read, consoles, configs.
const FILES: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_open,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_getdents64,
    libc::SYS_memfd_create,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_readlink,
    libc::SYS_getcwd,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_sync_file_range,
    // The console socket is made 0600 once bound (main thread).
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
];

/// File operations on descriptors already open (guest RAM's memfd, disks): no paths.
const FILE_FDS: &[i64] = &[
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fstatfs,
    libc::SYS_sync_file_range,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
];

/// Opening by path.
const OPEN: &[i64] = &[libc::SYS_openat, libc::SYS_open];

/// Sockets: the API's unix socket, migration's TCP.
const SOCKETS: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// userfaultfd: registering memory and serving its faults.
const UFFD: &[i64] = &[
    libc::SYS_userfaultfd,
    libc::SYS_ioctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// Main: starts everything, builds the VM (KVM, memory, devices, signals).
const MAIN: &[i64] = &[
    libc::SYS_rt_sigaction,
    libc::SYS_sysinfo,
    libc::SYS_getrlimit,
    libc::SYS_prlimit64,
    libc::SYS_uname,
    libc::SYS_sched_setaffinity,
    libc::SYS_kill,
];

fn from(groups: &[&[i64]]) -> BTreeMap<i64, Vec<SeccompRule>> {
    groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|&nr| (nr, Vec::new()))
        .collect()
}

/// The rules of `kind`: syscall number to rules (empty: always allowed).
pub fn rules(kind: ThreadKind) -> BTreeMap<i64, Vec<SeccompRule>> {
    match kind {
        ThreadKind::Main => main(),
        ThreadKind::Vcpu => vcpu(),
        ThreadKind::Api => api(),
        ThreadKind::Device => device(),
        ThreadKind::Migration => migration(),
        ThreadKind::Uffd => uffd(),
    }
}

/// Main: everything the others may do (their filters stack on it), plus setup.
pub fn main() -> BTreeMap<i64, Vec<SeccompRule>> {
    from(&[
        COMMON,
        SPAWN,
        DEVICE_IO,
        DEVICE_SETUP,
        VCPU,
        FILES,
        SOCKETS,
        UFFD,
        MAIN,
    ])
}

/// The serial console's output to its attached clients (already connected unix
/// sockets; std writes them with `sendto`), from the vCPU that ran the guest's `out`.
/// Rotating the console file truncates it in place (`console_log`).
const CONSOLE_OUT: &[i64] = &[libc::SYS_sendto, libc::SYS_ftruncate];

/// A vCPU: KVM ioctls, and starting a device worker when the guest activates it.
pub fn vcpu() -> BTreeMap<i64, Vec<SeccompRule>> {
    from(&[COMMON, VCPU, SPAWN, DEVICE_SETUP, DEVICE_IO, CONSOLE_OUT])
}

/// The API: its socket, snapshots (files, KVM state), starting migrations and
/// restarting device workers on resume.
pub fn api() -> BTreeMap<i64, Vec<SeccompRule>> {
    from(&[
        COMMON,
        SOCKETS,
        FILES,
        SPAWN,
        DEVICE_SETUP,
        DEVICE_IO,
        VCPU,
        UFFD,
    ])
}

/// A device worker: its fds only; no files opened, no sockets, no threads.
pub fn device() -> BTreeMap<i64, Vec<SeccompRule>> {
    from(&[COMMON, DEVICE_IO])
}

/// Migration (sender, accept and admission with TLS, data receivers, post-copy):
/// TCP, guest memory and its memfd (fallocate punches zero pages), KVM dirty logs and
/// state, userfaultfd (made from the `/dev/userfaultfd` main opened at start), its own
/// helper threads (and device workers restarted when a failed migration resumes the
/// VM). TLS needs nothing beyond COMMON's getrandom. It opens no file: OPEN passes
/// this list only to be answered EACCES by [`refused`].
pub fn migration() -> BTreeMap<i64, Vec<SeccompRule>> {
    from(&[
        COMMON,
        SOCKETS,
        SPAWN,
        DEVICE_SETUP,
        DEVICE_IO,
        VCPU,
        UFFD,
        FILE_FDS,
        OPEN,
    ])
}

/// Syscalls a thread of `kind` may try but that fail with EACCES instead of killing
/// the VMM: a migration thread's open. It opens nothing itself, but glibc's malloc
/// reads `/proc/sys/vm/overcommit_memory` the first time a thread's arena shrinks
/// (seen on migration threads under load); that read is answered, not fatal.
pub fn refused(kind: ThreadKind) -> &'static [i64] {
    match kind {
        ThreadKind::Migration => OPEN,
        _ => &[],
    }
}

/// A userfaultfd server: reads faults, copies pages in, reads the snapshot's memory.
pub fn uffd() -> BTreeMap<i64, Vec<SeccompRule>> {
    from(&[COMMON, UFFD, DEVICE_IO])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_threads_cannot_open_files_or_make_sockets() {
        for (kind, r) in [("vcpu", vcpu()), ("device", device()), ("uffd", uffd())] {
            for nr in [libc::SYS_openat, libc::SYS_socket, libc::SYS_execve] {
                assert!(!r.contains_key(&nr), "{kind} allows {nr}");
            }
        }
    }

    #[test]
    fn migration_threads_open_nothing_by_path() {
        let r = migration();
        for nr in [
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_rename,
            libc::SYS_renameat2,
            libc::SYS_mkdirat,
            libc::SYS_chmod,
            libc::SYS_readlink,
        ] {
            assert!(!r.contains_key(&nr), "migration allows {nr}");
        }
        for nr in OPEN {
            assert!(refused(ThreadKind::Migration).contains(nr), "{nr}");
        }
        for kind in [ThreadKind::Main, ThreadKind::Api] {
            assert!(refused(kind).is_empty(), "{kind:?} opens files");
        }
    }

    #[test]
    fn no_thread_may_exec_or_mount() {
        for kind in ThreadKind::ALL {
            let r = rules(kind);
            for nr in [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_ptrace,
                libc::SYS_mount,
                libc::SYS_setuid,
                libc::SYS_fork,
            ] {
                assert!(!r.contains_key(&nr), "{kind:?} allows {nr}");
            }
        }
    }

    /// hostd's jail makes no IPC namespace: these filters are what keeps VMMs from
    /// sharing System V IPC objects or POSIX message queues with each other or the host.
    #[test]
    fn no_thread_may_use_sysv_ipc_or_message_queues() {
        for kind in ThreadKind::ALL {
            let r = rules(kind);
            for nr in [
                libc::SYS_shmget,
                libc::SYS_shmat,
                libc::SYS_shmctl,
                libc::SYS_msgget,
                libc::SYS_msgsnd,
                libc::SYS_msgrcv,
                libc::SYS_msgctl,
                libc::SYS_semget,
                libc::SYS_semop,
                libc::SYS_semtimedop,
                libc::SYS_semctl,
                libc::SYS_mq_open,
                libc::SYS_mq_unlink,
                libc::SYS_mq_timedsend,
                libc::SYS_mq_timedreceive,
                libc::SYS_mq_notify,
                libc::SYS_mq_getsetattr,
            ] {
                assert!(!r.contains_key(&nr), "{kind:?} allows {nr}");
            }
        }
    }

    #[test]
    fn starters_allow_what_their_children_need() {
        let covers = |parent: &BTreeMap<i64, _>, child: &BTreeMap<i64, Vec<SeccompRule>>| {
            child.keys().all(|k| parent.contains_key(k))
        };
        assert!(covers(&main(), &api()));
        assert!(covers(&main(), &vcpu()));
        assert!(covers(&main(), &migration()));
        assert!(covers(&api(), &migration()));
        assert!(covers(&api(), &device()));
        assert!(covers(&vcpu(), &device()));
        assert!(covers(&migration(), &uffd()));
    }
}
