//! Cluster snapshots through the controller with real hostds and VMMs running the
//! test guest: a running VM's snapshot restores on another host with the guest's
//! millisecond counter continuing (not rebooting), a schedule's retention keeps the
//! last N, and tenants cannot see each other's snapshots.

use std::time::Duration;

use nova_controller_api::{
    KeepPolicy, NewSnapshot, RestoreSnapshot, Role, ScheduleBody, Vm, VmSpec,
};
use nova_hostd_api::HostdClient;
use nova_tests::controller::{block_on, status, wait_for, Controller};
use nova_tests::hostd::{hostd_for, wait_hosts_ready};
use nova_tests::hostd::{testguest, Hostd, Opts as HostdOpts};
use nova_tests::{require_kvm, unique, TempDir};

const BOOT: Duration = Duration::from_secs(40);

fn api(h: &Hostd) -> HostdClient {
    HostdClient::new(&format!("http://{}", h.addr), &h.token, &Default::default()).unwrap()
}

fn host_id(h: &Hostd) -> String {
    block_on(api(h).host()).unwrap().host_id
}

fn wait_running(c: &Controller, id: &str) -> Vm {
    wait_for(40, &format!("{id} to run"), || {
        let v = block_on(c.api.vm(id)).ok()?;
        (v.observed.as_ref()?.state == "running").then_some(v)
    })
}

fn counter(name: &str) -> VmSpec {
    VmSpec {
        mem_mib: 64,
        cmdline: Some("nova.workload=counter".into()),
        ..VmSpec::new(name, testguest().display().to_string())
    }
}

/// The sequence numbers of the `NOVA-TICK` lines of VM `id`'s console on `h`.
fn ticks(h: &Hostd, id: &str) -> Vec<u64> {
    h.ok(h.api().console(id, 10_000))
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix("NOVA-TICK ")?.trim().parse().ok())
        .collect()
}

fn booted(h: &Hostd, id: &str) -> bool {
    h.ok(h.api().console(id, 10_000))
        .lines
        .iter()
        .any(|l| l.starts_with("NOVA-BOOTED"))
}

#[test]
fn a_running_vms_snapshot_restores_on_another_host_with_its_counter_continuing() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (h1, h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let vm = block_on(c.api.create_vm(&counter("src"), None)).unwrap();
    let v = wait_running(&c, &vm.id);
    let on = v.host.clone().unwrap();
    let (src, dst) = if host_id(&h1) == on {
        (&h1, &h2)
    } else {
        (&h2, &h1)
    };
    src.wait_console(&vm.id, "NOVA-TICK", BOOT);
    let before = *ticks(src, &vm.id).last().unwrap();

    let snap = block_on(c.api.snapshot_vm(
        &vm.id,
        &NewSnapshot {
            name: Some("first".into()),
        },
    ))
    .unwrap();
    assert_eq!(
        (snap.name.as_str(), snap.host.as_str()),
        ("first", on.as_str())
    );
    assert!(snap.paused_ms > 0.0, "{snap:?}");
    let listed = block_on(c.api.vm_snapshots(&vm.id)).unwrap();
    assert_eq!(listed.len(), 1);
    // The source keeps running after the pause.
    let later = before + 50;
    wait_for(20, "the source to keep counting", || {
        (ticks(src, &vm.id).last().copied()? > later).then_some(())
    });

    // Restore into a new VM on the other host: its files are pulled there first.
    let restored = block_on(c.api.restore_snapshot(
        &snap.id,
        &RestoreSnapshot {
            new_vm: Some("copy".into()),
            host: Some(host_id(dst)),
        },
    ))
    .unwrap();
    assert_eq!(restored.host.as_deref(), Some(host_id(dst).as_str()));
    dst.wait_console(&restored.id, "NOVA-TICK", BOOT);
    let after = ticks(dst, &restored.id);
    assert!(
        after[0] >= before,
        "the counter continues from the snapshot ({before}), not from a boot: {:?}",
        &after[..after.len().min(5)]
    );
    assert!(!booted(dst, &restored.id), "restored, not booted");
    let copies = block_on(c.api.snapshot(&snap.id)).unwrap().copies;
    assert_eq!(copies, vec![host_id(dst)]);
    wait_running(&c, &restored.id);

    // Restore in place: the source VM goes back to the snapshot's point.
    let back = block_on(
        c.api
            .restore_snapshot(&snap.id, &RestoreSnapshot::default()),
    )
    .unwrap();
    assert_eq!(back.id, vm.id);
    // Its console (one file across restarts) shows the counter stepping back to
    // the snapshot's point and going on from there.
    wait_for(
        40,
        "the counter to step back to the snapshot's point",
        || {
            let t = ticks(src, &vm.id);
            t.windows(2)
                .any(|w| w[1] + 10 < w[0] && w[1] >= before)
                .then_some(())
        },
    );
    wait_running(&c, &vm.id);

    // Deleting it removes the files from both hosts' stores.
    block_on(c.api.delete_snapshot(&snap.id)).unwrap();
    for h in [src, dst] {
        assert!(h.ok(h.api().stored_snapshots()).snapshots.is_empty());
    }
    assert_eq!(status(block_on(c.api.snapshot(&snap.id))), 404);
}

#[test]
fn a_schedules_retention_keeps_the_last_n_snapshots() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let h = hostd_for(&c);
    wait_hosts_ready(&c, 1);
    let vm = block_on(c.api.create_vm(&counter("sched"), None)).unwrap();
    wait_running(&c, &vm.id);
    // A bad schedule names its field.
    let bad = ScheduleBody {
        every_secs: 0,
        keep: KeepPolicy::default(),
    };
    let e = block_on(c.api.set_snapshot_schedule(&vm.id, &bad)).unwrap_err();
    assert_eq!(
        e.body().and_then(|b| b.field.clone()).as_deref(),
        Some("every_secs")
    );
    let every = ScheduleBody {
        every_secs: 1,
        keep: KeepPolicy {
            last: 2,
            ..KeepPolicy::default()
        },
    };
    block_on(c.api.set_snapshot_schedule(&vm.id, &every)).unwrap();
    // Wait until more were taken than are kept: ids seen over time.
    let mut seen = std::collections::BTreeSet::new();
    wait_for(60, "five scheduled snapshots", || {
        for s in block_on(c.api.vm_snapshots(&vm.id)).ok()? {
            seen.insert(s.id);
        }
        (seen.len() >= 5).then_some(())
    });
    block_on(c.api.delete_snapshot_schedule(&vm.id)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let left = block_on(c.api.vm_snapshots(&vm.id)).unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|s| s.scheduled));
    let newest = seen.iter().max_by_key(|id| id.as_str()).cloned();
    assert!(newest.is_some());
    let stored = h.ok(h.api().stored_snapshots()).snapshots;
    let mut on_host: Vec<String> = stored.into_iter().map(|s| s.id).collect();
    let mut kept: Vec<String> = left.into_iter().map(|s| s.id).collect();
    on_host.sort();
    kept.sort();
    assert_eq!(on_host, kept, "the host keeps exactly what retention keeps");
}

#[test]
fn tenants_cannot_see_each_others_snapshots() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let _h = hostd_for(&c);
    wait_hosts_ready(&c, 1);
    let a = c.as_(&c.token_for("ta", "alice", Role::Operator));
    let b = c.as_(&c.token_for("tb", "bob", Role::Operator));
    let vm = block_on(c.api.create_vm_in(Some("ta"), &counter("mine"), None)).unwrap();
    wait_running(&c, &vm.id);
    let snap = block_on(a.snapshot_vm(&vm.id, &NewSnapshot::default())).unwrap();
    assert_eq!(snap.tenant, "ta");
    assert_eq!(block_on(a.snapshots()).unwrap().len(), 1);
    assert!(block_on(b.snapshots()).unwrap().is_empty());
    assert_eq!(status(block_on(b.snapshot(&snap.id))), 404);
    assert_eq!(status(block_on(b.vm_snapshots(&vm.id))), 404);
    assert_eq!(
        status(block_on(b.snapshot_vm(&vm.id, &NewSnapshot::default()))),
        404
    );
    assert_eq!(
        status(block_on(
            b.restore_snapshot(&snap.id, &RestoreSnapshot::default())
        )),
        404
    );
    assert_eq!(status(block_on(b.delete_snapshot(&snap.id))), 404);
    block_on(a.delete_snapshot(&snap.id)).unwrap();
}

/// An XFS filesystem with reflink in a loop-mounted file: a hostd data dir where
/// disks have a copy-on-write point. Unmounted on drop (after the hostds using it,
/// which are declared after it).
struct Xfs {
    dir: TempDir,
}

impl Xfs {
    fn new() -> Xfs {
        let dir = TempDir::new();
        let img = dir.join("xfs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(std::process::Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img));
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir.join("mnt")));
        Xfs { dir }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.join("mnt/data")
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.join("mnt"))
            .status();
    }
}

fn hostd_on(c: &Controller, data: std::path::PathBuf) -> Hostd {
    let join = c.dir.join("join.token");
    Hostd::start(HostdOpts {
        args: vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            join.display().to_string(),
            "--bridge".into(),
            unique("nbr"),
        ],
        data_dir: Some(data),
        ..HostdOpts::default()
    })
}

fn last_disk_line(h: &Hostd, id: &str) -> Option<String> {
    let lines = h.ok(h.api().console(id, 2000)).lines;
    lines.into_iter().rev().find(|l| l.starts_with("NOVA-DISK"))
}

fn pass_of(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("pass=")?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_vm_with_a_disk_is_snapshotted_by_reflink_during_its_pause_and_restored_elsewhere_with_it() {
    if !require_kvm() {
        return;
    }
    let (xa, xb) = (Xfs::new(), Xfs::new());
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (ha, hb) = (hostd_on(&c, xa.data()), hostd_on(&c, xb.data()));
    wait_hosts_ready(&c, 2);
    let base = d.join("base.raw");
    nova_tests::disk_with_host_blocks(&base, 16);
    let spec = VmSpec {
        cmdline: Some("nova.workload=counter,disk".into()),
        disks: vec![nova_controller_api::DiskRequest {
            image: Some(base.display().to_string()),
            size_mib: Some(32),
            read_only: false,
            shared_path: None,
        }],
        ..counter("disky")
    };
    let vm = block_on(c.api.create_vm(&spec, None)).unwrap();
    let on = wait_running(&c, &vm.id).host.unwrap();
    let (src, dst) = if host_id(&ha) == on {
        (&ha, &hb)
    } else {
        (&hb, &ha)
    };
    // Every guest block written at least once before the snapshot.
    wait_for(60, "two disk passes", || {
        (pass_of(&last_disk_line(src, &vm.id)?) >= 2).then_some(())
    });
    let snap = block_on(c.api.snapshot_vm(&vm.id, &NewSnapshot::default())).unwrap();
    let stored = src.ok(src.api().stored_snapshot(&snap.id));
    assert_eq!(stored.disks.len(), 1, "{stored:?}");
    assert_eq!(stored.disks[0].method, nova_hostd_api::CloneMethod::Reflink);
    // Crash-consistent: every block of the snapshot's disk is whole.
    let disk = src
        .data()
        .join("snapshots")
        .join(&snap.id)
        .join("disk0.raw");
    let blocks = nova_tests::guest_blocks(&disk);
    assert!(
        blocks.iter().all(Result::is_ok),
        "torn or misplaced blocks in the snapshot: {:?}",
        blocks
            .iter()
            .filter(|b| b.is_err())
            .take(3)
            .collect::<Vec<_>>()
    );

    let copy = block_on(c.api.restore_snapshot(
        &snap.id,
        &RestoreSnapshot {
            new_vm: Some("disky-copy".into()),
            host: Some(host_id(dst)),
        },
    ))
    .unwrap();
    // The guest goes on with its passes over the disk it had, without errors.
    let line = wait_for(60, "a disk pass on the other host", || {
        last_disk_line(dst, &copy.id).filter(|l| pass_of(l) > 2)
    });
    assert!(line.contains("errors=0"), "{line}");
    assert!(!booted(dst, &copy.id), "restored, not booted");
}

#[test]
fn a_host_without_reflink_refuses_to_snapshot_a_disk_rather_than_copy_it_paused() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(HostdOpts::default());
    let d = TempDir::new();
    let base = d.join("base.raw");
    nova_tests::disk_with_host_blocks(&base, 16);
    let mut spec = nova_tests::hostd::guest("d1", "counter");
    spec.disks = vec![nova_hostd_api::DiskSpec {
        image: Some(base.display().to_string()),
        size_mib: Some(32),
        read_only: false,
        shared_path: None,
    }];
    h.ok(h.api().create(&spec));
    h.wait_console("d1", "NOVA-TICK", BOOT);
    let (status, body) = h.refused(h.api().take_snapshot(&nova_hostd_api::TakeSnapshot {
        id: "s1".into(),
        vm_id: "d1".into(),
    }));
    assert_eq!(status, 409, "{body:?}");
    assert!(body.error.contains("reflink"), "{body:?}");
    // Nothing half-made is left, and the VM runs on.
    assert!(h.ok(h.api().stored_snapshots()).snapshots.is_empty());
    let n = h.console_bytes("d1");
    wait_for(20, "the guest to keep counting", || {
        (h.console_bytes("d1") > n + 100).then_some(())
    });
}
