//! The controller driving real `nova-hostd` processes (which run real `nova-vmm`s
//! booting the test guest): a VM created through the controller is placed, created
//! and started on a host; stop, start and delete follow the desired state; a
//! controller killed and restarted picks up where it was; migrations to a dead host
//! fail cleanly; drain evacuates a host by live migration with the policy's
//! parameters.

use std::time::Duration;

use nova_controller_api::{
    MigrateBody, MigrationKind, MigrationMode, MigrationPolicy, MigrationResult, OpState, Role, Vm,
    VmSpec,
};
use nova_hostd_api::HostdClient;
use nova_tests::controller::{block_on, wait_for, Controller, EventStream};
use nova_tests::hostd::{controller_disk_guest, testguest, Hostd};
use nova_tests::hostd::{hostd_for, wait_hosts_ready};
use nova_tests::{require_kvm, TempDir};

const BOOT: Duration = Duration::from_secs(40);

/// The typed client of a test hostd.
fn hostd_api(h: &Hostd) -> HostdClient {
    HostdClient::new(&format!("http://{}", h.addr), &h.token, &Default::default()).unwrap()
}

fn host_id(h: &Hostd) -> String {
    block_on(hostd_api(h).host()).unwrap().host_id
}

fn wait_observed(c: &Controller, id: &str, state: &str, secs: u64) -> Vm {
    wait_for(secs, &format!("{id} to be {state}"), || {
        let v = block_on(c.api.vm(id)).ok()?;
        (v.observed.as_ref()?.state == state).then_some(v)
    })
}

fn guest(name: &str) -> VmSpec {
    VmSpec {
        mem_mib: 64,
        cmdline: Some("nova.workload=counter".into()),
        ..VmSpec::new(name, testguest().display().to_string())
    }
}

#[test]
fn vms_follow_their_desired_state_on_real_hosts_across_a_controller_restart() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let mut c = Controller::sqlite(d.path());
    let (h1, h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let mut events = EventStream::open(&c.url, &c.admin);
    let id = block_on(c.api.create_vm(&guest("web"), None)).unwrap().id;
    let placed = events.until("vm.placed", &id, 20);
    let v = wait_observed(&c, &id, "running", 40);
    let host = v.host.unwrap();
    assert_eq!(placed.data["host"], host.as_str());
    let h = if host_id(&h1) == host { &h1 } else { &h2 };
    h.wait_console(&id, "NOVA-TICK", BOOT);
    let console = block_on(c.api.console(&id, 50)).unwrap();
    assert!(
        console.lines.iter().any(|l| l.contains("NOVA-TICK")),
        "the console reaches the user through the controller: {console:?}"
    );

    // Stop and start through the controller.
    block_on(c.api.stop_vm(&id)).unwrap();
    h.wait_state(&id, "stopped", Duration::from_secs(30));
    wait_observed(&c, &id, "stopped", 20);

    // The controller dies; the desired state it stored drives its successor.
    c.kill();
    let c = Controller::sqlite(d.path());
    block_on(c.api.start_vm(&id)).unwrap();
    h.wait_state(&id, "running", Duration::from_secs(30));
    wait_observed(&c, &id, "running", 20);
    assert_eq!(
        block_on(hostd_api(h).vms()).unwrap().vms.len(),
        1,
        "no duplicate after the restart"
    );

    // A forced stop kills the VMM at once.
    let v = block_on(c.api.stop_vm_if(&id, true, None)).unwrap();
    assert_eq!(v.desired, nova_controller_api::DesiredState::Stopped);
    h.wait_state(&id, "stopped", Duration::from_secs(10));

    // Delete: hostd lets it go, then the record goes.
    block_on(c.api.delete_vm(&id)).unwrap();
    wait_for(30, "the VM to be gone", || {
        block_on(c.api.vm(&id)).err().filter(|e| e.is_not_found())
    });
    assert!(block_on(hostd_api(h).vm(&id)).unwrap_err().is_not_found());
}

#[test]
fn a_migration_to_a_dead_host_fails_and_leaves_the_vm_running_on_its_source() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (h1, mut h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let id2 = host_id(&h2);
    block_on(c.api.cordon(&id2)).unwrap();
    let id = block_on(c.api.create_vm(&guest("web"), None)).unwrap().id;
    let v = wait_observed(&c, &id, "running", 40);
    let src = v.host.unwrap();
    block_on(c.api.uncordon(&id2)).unwrap();
    // The destination dies; the controller has not noticed yet (no missed heartbeat).
    h2.kill();
    let mut events = EventStream::open(&c.url, &c.admin);
    let op = block_on(c.api.migrate_vm(&id, &MigrateBody::default())).unwrap();
    let done = events.until("operation.done", &op.id, 60);
    assert_eq!(done.data["state"], "failed", "{done:?}");
    assert!(!done.data["message"].as_str().unwrap().is_empty());
    let v = block_on(c.api.vm(&id)).unwrap();
    assert_eq!(
        v.host.as_deref(),
        Some(src.as_str()),
        "the placement did not move"
    );
    assert!(v.migrating.is_none(), "the VM is released: {v:?}");
    h1.wait_state(&id, "running", Duration::from_secs(10));
    // A viewer of another tenant cannot even see the operation.
    let other = c.as_(&c.token_for("acme", "vic", Role::Viewer));
    assert!(block_on(other.operation(&op.id))
        .unwrap_err()
        .is_not_found());
}

#[test]
fn drain_evacuates_a_host_by_live_migration_within_the_policy() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (_h1, _h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let hosts = block_on(c.api.hosts()).unwrap();
    let (a, b) = (hosts[0].id.clone(), hosts[1].id.clone());
    block_on(c.api.cordon(&b)).unwrap();
    let mut policy = MigrationPolicy {
        completion_timeout_s: 120,
        max_parallel_cluster: 2,
        max_parallel_per_host: 1,
        ..Default::default()
    };
    policy.params.mode = MigrationMode::Precopy;
    policy.params.downtime_ms = 300;
    block_on(c.api.set_migration_policy(&policy)).unwrap();
    let ids: Vec<String> = (0..2)
        .map(|i| {
            block_on(c.api.create_vm(&guest(&format!("w{i}")), None))
                .unwrap()
                .id
        })
        .collect();
    for id in &ids {
        assert_eq!(
            wait_observed(&c, id, "running", 40).host.as_deref(),
            Some(a.as_str())
        );
    }
    block_on(c.api.uncordon(&b)).unwrap();
    let mut events = EventStream::open(&c.url, &c.admin);
    let op = block_on(c.api.drain(&a)).unwrap();
    let done = events.until("operation.done", &op.id, 180);
    assert_eq!(done.data["state"], "succeeded", "{done:?}");
    let op = block_on(c.api.operation(&op.id)).unwrap();
    assert_eq!(op.state, OpState::Succeeded);
    for id in &ids {
        let v = block_on(c.api.vm(id)).unwrap();
        assert_eq!(v.host.as_deref(), Some(b.as_str()), "{v:?}");
        let r: MigrationResult = serde_json::from_value(op.result[id].clone()).unwrap();
        assert!(
            r.downtime_ms.is_some() && r.bytes.is_some() && r.total_ms.is_some(),
            "{r:?}"
        );
        assert_eq!(
            r.mode,
            Some(MigrationMode::Precopy),
            "the policy's mode: {r:?}"
        );
    }
    assert!(block_on(c.api.host(&a)).unwrap().cordoned);
}

/// The last `NOVA-DISK` line the controller shows of the VM's console.
fn last_disk_line(c: &Controller, id: &str) -> Option<String> {
    let lines = block_on(c.api.console(id, 500)).ok()?.lines;
    lines.into_iter().rev().find(|l| l.starts_with("NOVA-DISK"))
}

#[test]
fn drain_evacuates_a_host_whose_vms_have_local_disks_warm_when_live_is_impossible() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (_h1, _h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let hosts = block_on(c.api.hosts()).unwrap();
    let (a, b) = (hosts[0].id.clone(), hosts[1].id.clone());
    block_on(c.api.cordon(&b)).unwrap();
    // Live is the policy's kind; a guest rewriting 2 MiB of memory over and over (at
    // about 2 MB/s in the emulator) never converges at 4 Mbit/s, so its live migration
    // runs out of time and the drain moves it warm (2 MiB once: about 5 s).
    let mut policy = MigrationPolicy {
        completion_timeout_s: 15,
        ..Default::default()
    };
    policy.params.mode = MigrationMode::Precopy;
    policy.params.bandwidth_mbit = Some(4);
    block_on(c.api.set_migration_policy(&policy)).unwrap();
    let base = d.path().join("base.raw");
    nova_tests::disk_with_host_blocks(&base, 16);
    let calm = block_on(
        c.api
            .create_vm(&controller_disk_guest("calm", "disk", &base, 32), None),
    )
    .unwrap()
    .id;
    let busy = block_on(c.api.create_vm(
        &controller_disk_guest("busy", "dirty:2:max,disk", &base, 32),
        None,
    ))
    .unwrap()
    .id;
    for id in [&calm, &busy] {
        assert_eq!(
            wait_observed(&c, id, "running", 40).host.as_deref(),
            Some(a.as_str())
        );
        wait_for(40, "a disk pass", || last_disk_line(&c, id));
    }
    block_on(c.api.uncordon(&b)).unwrap();
    let mut events = EventStream::open(&c.url, &c.admin);
    let op = block_on(c.api.drain(&a)).unwrap();
    let done = events.until("operation.done", &op.id, 240);
    assert_eq!(done.data["state"], "succeeded", "{done:?}");
    let op = block_on(c.api.operation(&op.id)).unwrap();
    for (id, kind) in [(&calm, MigrationKind::Live), (&busy, MigrationKind::Warm)] {
        let v = block_on(c.api.vm(id)).unwrap();
        assert_eq!(v.host.as_deref(), Some(b.as_str()), "{v:?}");
        let r: MigrationResult = serde_json::from_value(op.result[id.as_str()].clone()).unwrap();
        assert_eq!(r.kind, Some(kind), "{id}: {r:?}");
        // The guest goes on verifying its disk on B.
        let line = wait_for(40, "a disk pass on B", || {
            last_disk_line(&c, id).filter(|l| !l.contains("pass=1 "))
        });
        assert!(line.contains("errors=0"), "{id}: {line}");
    }
}

#[test]
fn a_vm_migrated_cold_through_the_controller_boots_on_its_new_host_with_its_disk() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (_h1, _h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let base = d.path().join("base.raw");
    nova_tests::disk_with_host_blocks(&base, 16);
    let id = block_on(
        c.api
            .create_vm(&controller_disk_guest("cold", "disk", &base, 32), None),
    )
    .unwrap()
    .id;
    let src = wait_observed(&c, &id, "running", 40).host.unwrap();
    wait_for(40, "a disk pass", || last_disk_line(&c, &id));
    let mut events = EventStream::open(&c.url, &c.admin);
    let body = MigrateBody {
        to: None,
        kind: Some(MigrationKind::Cold),
        cluster: None,
    };
    let op = block_on(c.api.migrate_vm(&id, &body)).unwrap();
    let done = events.until("operation.done", &op.id, 120);
    assert_eq!(done.data["state"], "succeeded", "{done:?}");
    let r: MigrationResult =
        serde_json::from_value(block_on(c.api.operation(&op.id)).unwrap().result).unwrap();
    assert_eq!(r.kind, Some(MigrationKind::Cold), "{r:?}");
    let v = block_on(c.api.vm(&id)).unwrap();
    assert_ne!(v.host.as_deref(), Some(src.as_str()), "{v:?}");
    // Booted afresh there, reading the host's blocks from the disk that moved.
    let line = wait_for(40, "a disk pass on the new host", || {
        let lines = block_on(c.api.console(&id, 500)).ok()?.lines;
        lines.into_iter().find(|l| l.starts_with("NOVA-DISK"))
    });
    assert!(
        line.contains("pass=1 ") && line.contains("host_ok=16") && line.contains("errors=0"),
        "{line}"
    );
}
