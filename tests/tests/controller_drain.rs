//! `novactl host drain` on a cluster of real hosts: a controller in the root network
//! namespace and two hostds in namespaces of their own (on a bridge), VMs whose
//! guests write and verify their own local disks. The drain moves every VM to the
//! other host, disk and all: each runs there, its guest goes on verifying what it
//! wrote, and the disk file on the new host checks block by block; a disk marked
//! shared (a file both hosts see) moves without copying and is still that file.

use std::path::Path;
use std::process::Command;

use nova_controller_api::{DiskRequest, MigrationPolicy};
use nova_tests::controller::{block_on, wait_for, Controller, Opts};
use nova_tests::hostd::{controller_disk_guest, Bridged, Hostd};
use nova_tests::net::require_netns;
use nova_tests::{binary, disk_with_host_blocks, guest_blocks, require_kvm, TempDir};

/// The last `NOVA-DISK` line of the VM's console on host `h`: (pass, errors, line).
fn disk_pass(h: &Hostd, id: &str) -> Option<(u64, u64, String)> {
    let c = h.wait(h.api().console(id, 2_000)).ok()?;
    let l = c.lines.iter().rev().find(|l| l.starts_with("NOVA-DISK"))?;
    let num = |k: &str| -> Option<u64> {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some((num("pass")?, num("errors")?, l.clone()))
}

/// Whether every host block of `disk` (blocks `0..HOST_BLOCKS`) checks.
fn host_blocks_ok(disk: &Path) -> bool {
    use nova_guest_abi::*;
    let bytes = std::fs::read(disk).unwrap();
    (0..HOST_BLOCKS).all(|i| {
        let mut blk = [0u64; BLOCK_WORDS];
        for (k, w) in blk.iter_mut().enumerate() {
            let o = i as usize * BLOCK_SIZE + k * 8;
            *w = u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        }
        check_block(&blk, HOST_MAGIC, i).is_ok()
    })
}

#[test]
fn novactl_host_drain_evacuates_a_host_whose_vms_have_local_disks_with_their_checksums() {
    if !require_netns() || !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let net = Bridged::new();
    let c = Controller::start(
        d.path(),
        Opts {
            ip: Some(net.root_ip()),
            ..Default::default()
        },
    );
    let join = c.dir.join("join.token").display().to_string();
    let extra = |_| {
        vec![
            "--controller".to_string(),
            c.url.clone(),
            "--join-token-file".into(),
            join.clone(),
        ]
    };
    let hosts = [net.hostd(0, &extra(0)), net.hostd(1, &extra(1))];
    let ids: Vec<String> = hosts.iter().map(|h| h.ok(h.api().host()).host_id).collect();
    wait_for(30, "both hosts to register", || {
        let ready = block_on(c.api.hosts())
            .ok()?
            .iter()
            .filter(|h| h.state == nova_controller_api::HostState::Ready)
            .count();
        (ready == 2).then_some(())
    });
    let (a, b) = (&ids[0], &ids[1]);
    let policy = MigrationPolicy {
        completion_timeout_s: 120,
        ..Default::default()
    };
    block_on(c.api.set_migration_policy(&policy)).unwrap();
    // Every VM on A: B is cordoned while they are placed.
    block_on(c.api.cordon(b)).unwrap();
    let base = d.path().join("base.raw");
    disk_with_host_blocks(&base, 16);
    let vms: Vec<String> = [("quiet", "disk"), ("busy", "counter,dirty:4:50,disk")]
        .iter()
        .map(|(name, w)| {
            block_on(
                c.api
                    .create_vm(&controller_disk_guest(name, w, &base, 32), None),
            )
            .unwrap()
            .id
        })
        .collect();
    // A VM on a shared disk: a file both hosts see (one filesystem here).
    let shared_file = d.path().join("shared.raw");
    disk_with_host_blocks(&shared_file, 16);
    let shared_file = shared_file.canonicalize().unwrap();
    let shared_ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&shared_file).unwrap().ino()
    };
    let mut spec = controller_disk_guest("shared", "disk", &base, 32);
    spec.disks[0] = DiskRequest {
        image: None,
        size_mib: None,
        read_only: false,
        shared_path: Some(shared_file.display().to_string()),
    };
    let shared = block_on(c.api.create_vm(&spec, None)).unwrap().id;
    let vms: Vec<String> = vms.into_iter().chain([shared.clone()]).collect();
    let src_disks: Vec<String> = vms
        .iter()
        .map(|id| {
            let v = wait_for(60, "the VM to run on A", || {
                hosts[0]
                    .wait(hosts[0].api().vm(id))
                    .ok()
                    .filter(|v| v.state == nova_hostd_api::VmState::Running)
            });
            wait_for(60, "a disk pass on A", || disk_pass(&hosts[0], id));
            v.disks[0].path.clone()
        })
        .collect();
    block_on(c.api.uncordon(b)).unwrap();

    let out = Command::new(binary("novactl"))
        .args(["host", "drain", a])
        .env("HOME", d.path())
        .env("NOVA_URL", &c.url)
        .env("NOVA_TOKEN", &c.admin)
        .env_remove("NOVA_CONFIG")
        .env_remove("NOVA_CONTEXT")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "novactl host drain: {stdout}\n{stderr}"
    );
    assert!(stderr.contains("100% succeeded"), "{stderr}");

    for (id, src_disk) in vms.iter().zip(&src_disks) {
        // The controller and B say it runs on B; A has let go of it and its disk.
        let v = block_on(c.api.vm(id)).unwrap();
        assert_eq!(v.host.as_deref(), Some(b.as_str()), "{v:?}");
        assert!(stdout.contains(&format!("{id}: {a} -> {b}")), "{stdout}");
        let on_b = hosts[1].ok(hosts[1].api().vm(id));
        assert_eq!(on_b.state, nova_hostd_api::VmState::Running, "{on_b:?}");
        wait_for(30, "A to let go of it", || {
            (!hosts[0].vm_ids().contains(id)).then_some(())
        });
        if *id == shared {
            // The same file, used in place on B, and still there.
            assert_eq!(Path::new(&on_b.disks[0].path), shared_file.as_path());
            assert_eq!(on_b.disks[0].method, nova_hostd_api::CloneMethod::Shared);
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                std::fs::metadata(&shared_file).unwrap().ino(),
                shared_ino,
                "the shared file was replaced"
            );
        } else {
            assert!(!Path::new(src_disk).exists(), "A's copy of {id}'s disk");
        }
        // Its guest verifies on B what it wrote on A, and goes on writing there.
        let (pass, _, _) = disk_pass(&hosts[1], id).unwrap_or((0, 0, String::new()));
        let (_, errors, line) = wait_for(60, "a disk pass on B", || {
            disk_pass(&hosts[1], id).filter(|(p, _, _)| *p > pass)
        });
        assert_eq!(errors, 0, "{id} on B: {line}");
        // The disk file on B, checked from outside with the guest paused: the host's
        // blocks arrived and every block the guest wrote carries its checksum.
        hosts[1].ok(hosts[1].api().pause(id));
        let disk = Path::new(&on_b.disks[0].path);
        assert!(host_blocks_ok(disk), "{id}: the host's blocks on B");
        for (i, r) in guest_blocks(disk).into_iter().enumerate() {
            assert!(r.is_ok(), "{id}: guest block {i} on B: {r:?}");
        }
        hosts[1].ok(hosts[1].api().resume(id));
    }
    assert!(
        block_on(c.api.host(a)).unwrap().cordoned,
        "a drained host stays cordoned"
    );
}
