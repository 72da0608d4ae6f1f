//! The jail around every VMM hostd starts, and the seccomp filters inside it: the VMM
//! runs as its VM's own uid (`--jail-ids`), sees only its own files, sits in its
//! cgroups with their limits and rlimits; `--no-jail` turns all of that off. A
//! syscall outside a thread's filter kills the VMM with SIGSYS and hostd reports the
//! crash; `nova-vmm run --no-seccomp` lets the same syscall through.
//!
//! The forbidden syscall is injected from outside with ptrace (the test runs as
//! root): nothing in the VMM exists only for this test.
//!
//! `--cgroup-favordynmods` (fast cgroup attach) is checked in a mount namespace of
//! hostd's own, where its mountinfo shows what hostd mounted and nothing else.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nova_hostd_api::VmState;
use nova_tests::hostd::{guest, Hostd, Opts};
use nova_tests::{binary, guest_image, require_kvm, wait_for, TempDir};

const BOOT: Duration = Duration::from_secs(30);

fn status_field(pid: u32, name: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))[name.len()..]
        .trim()
        .to_string()
}

fn uid_of(pid: u32) -> u32 {
    status_field(pid, "Uid:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The file of `controller` (v1) or of the unified hierarchy (v2, `controller` "")
/// that holds `pid`'s cgroup, and the cgroup's path.
fn cgroup_of(pid: u32, controller: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    s.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_string())
    })
}

fn read_trim(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn hostd(args: &[&str]) -> Hostd {
    Hostd::start(Opts {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

#[test]
fn a_jailed_vmm_runs_as_its_own_uid_sees_only_its_files_and_has_its_limits() {
    if !require_kvm() {
        return;
    }
    let h = hostd(&["--jail-ids", "310000-310009"]);
    let a = h.create_vm(&guest("ja", "counter"));
    let b = h.create_vm(&guest("jb", "counter"));
    h.wait_console("ja", "NOVA-TICK", BOOT);
    h.wait_console("jb", "NOVA-TICK", BOOT);
    let (pa, pb) = (a.pid.unwrap(), b.pid.unwrap());

    // Its own unprivileged ids, from --jail-ids, one per VM.
    let mut uids = [uid_of(pa), uid_of(pb)];
    uids.sort();
    assert_eq!(uids, [310000, 310001]);
    assert!(status_field(pa, "Gid:")
        .starts_with(&uids.iter().find(|&&u| u == uid_of(pa)).unwrap().to_string()));
    assert_eq!(status_field(pa, "Groups:"), "", "no supplementary groups");
    assert_eq!(status_field(pa, "NoNewPrivs:"), "1");
    assert_eq!(status_field(pa, "Seccomp:"), "2", "filtered");
    assert_eq!(status_field(pa, "CapEff:"), "0000000000000000");
    // Pid 1 of a PID namespace of its own, yet hostd's child (hostd reaps it).
    assert_eq!(status_field(pa, "NSpid:"), format!("{pa}\t1"));
    assert_eq!(status_field(pa, "PPid:"), h.pid().to_string());
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(ns(pa), ns(pb), "one namespace per VMM");
    assert_ne!(ns(pa), ns(h.pid()));

    // Its root holds its own files only.
    let root = PathBuf::from(format!("/proc/{pa}/root"));
    assert!(
        !root.join("etc/shadow").exists(),
        "/etc/shadow is not in the jail"
    );
    assert!(!root.join("etc").exists() && !root.join("proc/1").exists());
    let vm_dir = h.data().join("vms/ja");
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap());
    assert!(inside(&vm_dir.join("console.log")).exists());
    assert!(inside(&vm_dir.join("run/api.sock")).exists());
    assert!(inside(Path::new("/dev/kvm")).exists());
    assert!(
        !inside(&vm_dir.join("vm.json")).exists(),
        "hostd's own record of the VM is not in its jail"
    );
    assert!(
        !inside(&h.data().join("vms/jb")).exists(),
        "nor is the other VM's directory"
    );
    assert!(!inside(&h.dir.join("token")).exists(), "nor hostd's token");
    let kvm = std::fs::metadata(inside(Path::new("/dev/kvm"))).unwrap();
    assert_eq!((kvm.uid(), kvm.mode() & 0o777), (uid_of(pa), 0o600));
    // What hostd hands it is its own, 0600.
    for f in ["console.log", "vmm.json"] {
        let m = std::fs::metadata(vm_dir.join(f)).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (uid_of(pa), 0o600), "{f}");
    }

    // rlimits.
    let limits = std::fs::read_to_string(format!("/proc/{pa}/limits")).unwrap();
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .rev()
            .nth(2)
            .unwrap()
            .to_string()
    };
    assert_eq!(line("Max open files"), "4096", "{limits}");
    assert_eq!(line("Max core file size"), "0", "{limits}");

    // Its cgroups, with limits from its spec (64 MiB, 1 vCPU).
    let mem_bytes = ((64 + 256) << 20).to_string();
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let cg = cgroup_of(pa, "").unwrap();
        assert!(cg.ends_with("/nova/ja"), "{cg}");
        let d = Path::new("/sys/fs/cgroup").join(cg.trim_start_matches('/'));
        assert_eq!(read_trim(d.join("memory.max")), mem_bytes);
        assert_eq!(read_trim(d.join("pids.max")), "97");
        assert_eq!(read_trim(d.join("cpu.max")), "150000 100000");
    } else {
        let at = |c: &str| {
            let cg = cgroup_of(pa, c).unwrap_or_else(|| panic!("no {c} cgroup"));
            assert!(cg.ends_with("/nova/ja"), "{c}: {cg}");
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join(cg.trim_start_matches('/'))
        };
        assert_eq!(
            read_trim(at("memory").join("memory.limit_in_bytes")),
            mem_bytes
        );
        assert_eq!(read_trim(at("pids").join("pids.max")), "97");
        assert_eq!(read_trim(at("cpu").join("cpu.cfs_quota_us")), "150000");
        // The limit applies: the VMM's memory is charged there.
        let used: u64 = read_trim(at("memory").join("memory.usage_in_bytes"))
            .parse()
            .unwrap();
        assert!(
            used > 1 << 20,
            "the VMM's memory is charged to its cgroup: {used}"
        );
    }

    // It still works as a VM: pause, resume, snapshot into its directory.
    let api = h.api();
    h.ok(api.pause("ja"));
    h.ok(api.resume("ja"));
    h.ok(api.delete("ja"));
    h.ok(api.delete("jb"));
}

#[test]
fn without_the_jail_the_vmm_runs_as_hostds_user_in_the_hosts_root() {
    if !require_kvm() {
        return;
    }
    let h = hostd(&["--no-jail"]);
    let vm = h.create_vm(&guest("nj", "counter"));
    h.wait_console("nj", "NOVA-TICK", BOOT);
    let pid = vm.pid.unwrap();
    assert_eq!(uid_of(pid), 0, "hostd's own user");
    assert_eq!(
        status_field(pid, "NSpid:"),
        pid.to_string(),
        "hostd's PID namespace"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        Path::new("/"),
        "the host's root"
    );
    assert_eq!(status_field(pid, "Seccomp:"), "2", "still filtered");
    h.ok(h.api().delete("nj"));
}

/// Makes thread `tid`, stopped just after a syscall instruction (blocked in a
/// syscall), run that instruction again as syscall `nr`.
fn inject_syscall(tid: i32, nr: i64) {
    // SAFETY: ptrace on a process this test started and may trace (as root); the
    // registers struct is plain data.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_ATTACH, tid, 0, 0),
            0,
            "attach: {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        assert_eq!(libc::ptrace(libc::PTRACE_GETREGS, tid, 0, &mut regs), 0);
        let word = libc::ptrace(libc::PTRACE_PEEKTEXT, tid, regs.rip - 2, 0);
        assert_eq!(
            word & 0xffff,
            0x050f,
            "thread {tid} is not right after a syscall"
        );
        regs.rip -= 2;
        regs.rax = nr as u64;
        // Not in a syscall any more: no restart of the interrupted one.
        regs.orig_rax = u64::MAX;
        assert_eq!(libc::ptrace(libc::PTRACE_SETREGS, tid, 0, &regs), 0);
        assert_eq!(libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0), 0);
    }
}

#[test]
fn a_forbidden_syscall_kills_the_vmm_and_hostd_reports_it_crashed() {
    if !require_kvm() {
        return;
    }
    let h = hostd(&[]);
    let vm = h.create_vm(&guest("sx", "counter"));
    h.wait_console("sx", "NOVA-TICK", BOOT);
    let pid = vm.pid.unwrap();
    // The main thread waits for the VM to stop; no thread may exec.
    inject_syscall(pid as i32, libc::SYS_execve);
    let vm = h.wait_state("sx", VmState::Crashed, Duration::from_secs(10));
    let exit = vm.exit.clone().unwrap();
    assert_eq!(exit.signal, Some(libc::SIGSYS), "{exit:?}");
    assert!(exit.reason.contains("signal 31"), "{exit:?}");
    let log = std::fs::read_to_string(h.data().join("vms/sx/vmm.log")).unwrap();
    assert!(
        log.contains("seccomp refused syscall 59 on the main thread"),
        "the VMM's log names the syscall: {log}"
    );
    h.ok(h.api().delete("sx"));
}

/// `nova-vmm run` of the counter guest with its API in `dir`, plus `extra` flags.
fn run_vmm(dir: &TempDir, extra: &[&str]) -> std::process::Child {
    Command::new(binary("nova-vmm"))
        .arg("run")
        .arg("--kernel")
        .arg(guest_image("testguest.elf"))
        .args(["--cmdline", "nova.workload=counter", "--mem-mib", "64"])
        .arg("--api-sock")
        .arg(dir.join("api.sock"))
        .arg("--console")
        .arg(dir.join("console.log"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("vmm.log")).unwrap())
        .spawn()
        .unwrap()
}

fn ticks(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.join("console.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("NOVA-TICK"))
        .count()
}

#[test]
fn no_seccomp_lets_the_same_syscall_through_and_the_vmm_lives_on() {
    if !require_kvm() {
        return;
    }
    for (flags, survives) in [(&["--no-seccomp"][..], true), (&[][..], false)] {
        let dir = TempDir::new();
        let mut child = run_vmm(&dir, flags);
        wait_for(20, "ticks", || (ticks(&dir) > 2).then_some(()));
        inject_syscall(child.id() as i32, libc::SYS_execve);
        if survives {
            let before = ticks(&dir);
            wait_for(10, "more ticks after the syscall", || {
                (ticks(&dir) > before + 5).then_some(())
            });
            assert!(child.try_wait().unwrap().is_none(), "still running");
            let (status, _) = nova_tests::vmm::raw_request(
                &dir.join("api.sock"),
                b"GET /v1/vm HTTP/1.1\r\nConnection: close\r\n\r\n",
            );
            assert_eq!(status, 200);
            let _ = child.kill();
            let _ = child.wait();
        } else {
            use std::os::unix::process::ExitStatusExt;
            let st = wait_for(10, "the VMM to die", || child.try_wait().unwrap());
            assert_eq!(st.signal(), Some(libc::SIGSYS), "{st:?}");
        }
    }
}

/// One cgroup (v1 or v2) mount of a mountinfo: what a new mount or a remount changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    id: String,
    at: String,
    mount_options: String,
    fstype: String,
    super_options: String,
}

impl CgroupMount {
    fn favors_dynmods(&self) -> bool {
        self.super_options.split(',').any(|o| o == "favordynmods")
    }
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            (right[0] == "cgroup" || right[0] == "cgroup2").then(|| CgroupMount {
                id: left[0].into(),
                at: left[4].into(),
                mount_options: left[5].into(),
                fstype: right[0].into(),
                super_options: right.get(2).copied().unwrap_or("").into(),
            })
        })
        .collect()
}

/// A hostd in a mount namespace of its own, so that its mountinfo shows what it
/// mounted and nothing concurrent tests' hostds did: `setup` (sh) runs there first,
/// then the namespace's mounts are saved to `before`, then hostd starts.
fn hostd_in_own_mount_ns(setup: &str, before: &Path, args: &[&str]) -> Hostd {
    let script = format!("{setup} cat /proc/self/mountinfo > \"$0\" && exec \"$@\"");
    Hostd::start(Opts {
        args: args.iter().map(|s| s.to_string()).collect(),
        wrap: vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
            before.to_string_lossy().into_owned(),
        ],
        ..Default::default()
    })
}

fn mounts_of(pid: u32) -> Vec<CgroupMount> {
    cgroup_mounts(&std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap())
}

/// The `mode` whose `nova_host_cgroup_favordynmods` series is 1.
fn favordynmods_mode(h: &Hostd) -> String {
    let e = nova_tests::hostd::Exposition::parse(&h.ok(h.api().metrics()));
    let on: Vec<String> = e
        .samples
        .iter()
        .filter(|s| s.name == "nova_host_cgroup_favordynmods" && s.value == 1.0)
        .map(|s| s.labels["mode"].clone())
        .collect();
    assert_eq!(on.len(), 1, "one mode: {on:?}");
    on[0].clone()
}

#[test]
fn hostd_turns_cgroup_favordynmods_on_at_start_and_says_how() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let before_file = dir.join("mountinfo");
    let h = hostd_in_own_mount_ns("", &before_file, &[]);
    let before = cgroup_mounts(&std::fs::read_to_string(&before_file).unwrap());
    let after = mounts_of(h.pid());
    // A cgroup2 mount with the option is there now, whatever the host started with.
    assert!(
        after
            .iter()
            .any(|m| m.fstype == "cgroup2" && m.favors_dynmods()),
        "{after:#?}"
    );
    let mode = favordynmods_mode(&h);
    let v2_before: Vec<&CgroupMount> = before.iter().filter(|m| m.fstype == "cgroup2").collect();
    let ids = |v: &[CgroupMount]| v.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    if v2_before.iter().any(|m| m.favors_dynmods()) {
        // Already on (this machine, once any hostd ran): hostd left every mount as it was.
        assert_eq!(mode, "already-on");
        assert_eq!(before, after);
    } else if !v2_before.is_empty() {
        // Off before: either this hostd remounted the cgroup2 it found (same mounts,
        // the option added), or a concurrent hostd did it first.
        assert!(
            ["remounted", "already-on"].contains(&mode.as_str()),
            "{mode}"
        );
        assert_eq!(ids(&before), ids(&after), "a remount, no new mount");
    } else {
        assert_eq!(mode, "mounted", "a pure v1 host gets a cgroup2 of hostd's");
        assert!(
            after.iter().any(|m| m.at == "/run/nova/cgroup2"),
            "{after:#?}"
        );
    }
    assert!(
        h.stderr().contains("cgroup favordynmods on"),
        "the log says so: {}",
        h.stderr()
    );
    // The jail works as before.
    h.create_vm(&guest("fd", "counter"));
    h.wait_console("fd", "NOVA-TICK", BOOT);
    h.ok(h.api().delete("fd"));
}

#[test]
fn with_cgroup_favordynmods_false_hostd_leaves_the_cgroup_mounts_alone() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let before_file = dir.join("mountinfo");
    let h = hostd_in_own_mount_ns("", &before_file, &["--cgroup-favordynmods=false"]);
    let before = cgroup_mounts(&std::fs::read_to_string(&before_file).unwrap());
    assert!(!before.is_empty(), "this host has cgroup mounts");
    // Super options are the kernel's, shared with the host's concurrent hostds: a
    // mount or remount of this hostd's would show in the mounts and their flags.
    let shape = |v: Vec<CgroupMount>| {
        v.into_iter()
            .map(|m| (m.id, m.at, m.mount_options, m.fstype))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(mounts_of(h.pid())),
        shape(before),
        "no mount, no remount"
    );
    assert_eq!(favordynmods_mode(&h), "off");
    assert!(!h.stderr().contains("cgroup favordynmods on"));
    h.create_vm(&guest("nf", "counter"));
    h.wait_console("nf", "NOVA-TICK", BOOT);
    h.ok(h.api().delete("nf"));
}

#[test]
fn on_a_host_without_cgroup2_hostd_mounts_its_own_with_favordynmods() {
    if !require_kvm() {
        return;
    }
    // Simulated in a mount namespace whose cgroup2 mounts are gone (and whose /run is
    // its own). A new cgroup2 mount sets the one cgroup2 root's options to its own,
    // host-wide: safe only when the host's are at most `favordynmods`.
    let host = cgroup_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let v2: Vec<&CgroupMount> = host.iter().filter(|m| m.fstype == "cgroup2").collect();
    let harmless = v2.iter().all(|m| {
        m.super_options
            .split(',')
            .all(|o| o == "rw" || o == "favordynmods")
    });
    if !harmless {
        eprintln!(
            "skipped: the host's cgroup2 root has options this simulation would clear: {v2:#?}"
        );
        return;
    }
    let unmount: String = v2
        .iter()
        .map(|m| format!("umount -l {} &&", m.at))
        .collect();
    let dir = TempDir::new();
    let before_file = dir.join("mountinfo");
    let h = hostd_in_own_mount_ns(
        &format!("{unmount} mount -t tmpfs -o size=1m nova-run /run &&"),
        &before_file,
        &[],
    );
    let before = cgroup_mounts(&std::fs::read_to_string(&before_file).unwrap());
    assert!(before.iter().all(|m| m.fstype == "cgroup"), "{before:#?}");
    let after = mounts_of(h.pid());
    let own: Vec<&CgroupMount> = after.iter().filter(|m| m.fstype == "cgroup2").collect();
    assert_eq!(own.len(), 1, "{after:#?}");
    assert_eq!(own[0].at, "/run/nova/cgroup2");
    assert!(own[0].favors_dynmods(), "{own:#?}");
    assert_eq!(favordynmods_mode(&h), "mounted");
    // VMMs still get their (v1) cgroups and boot.
    let vm = h.create_vm(&guest("fm", "counter"));
    h.wait_console("fm", "NOVA-TICK", BOOT);
    let cg = cgroup_of(vm.pid.unwrap(), "memory").unwrap();
    assert!(cg.ends_with("/nova/fm"), "{cg}");
    h.ok(h.api().delete("fm"));
}
