//! The controller's metric history against real processes: a controller scraping a
//! real hostd whose VM (the test guest) dirties memory; the VM's resident memory
//! rises in `GET /v1/metrics/query`, `novactl top` shows it, the history survives a
//! controller restart, and a tenant sees only its own VMs' series.

use std::process::Command;
use std::time::Duration;

use nova_controller_api::{MetricQuery, Role, VmSpec};
use nova_tests::controller::{block_on, wait_for, Controller, Opts};
use nova_tests::hostd::hostd_for;
use nova_tests::hostd::testguest;
use nova_tests::{binary, require_kvm, TempDir};

fn opts() -> Opts {
    Opts {
        args: [
            "--scrape-interval-ms",
            "1000",
            "--metrics-checkpoint-s",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        ..Opts::default()
    }
}

fn max_of(c: &Controller, metric: &str, target: &str) -> Option<f64> {
    let a = block_on(c.api.metric_query(&MetricQuery {
        metric: metric.into(),
        target: Some(target.into()),
        ..Default::default()
    }))
    .ok()?;
    a.series
        .first()?
        .points
        .iter()
        .map(|p| p.1)
        .reduce(f64::max)
}

#[test]
fn a_vm_dirtying_memory_raises_its_history_which_survives_a_restart_and_stays_in_its_tenant() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let mut c = Controller::start(d.path(), opts());
    let _h = hostd_for(&c);
    wait_for(30, "the host to register", || {
        (block_on(c.api.hosts()).ok()?.len() == 1).then_some(())
    });
    let tenant_token = c.token_for("acme", "ann", Role::Operator);
    let acme = c.as_(&tenant_token);
    // Tenants name images of the hosts' cache, never host paths: the admin uploads it.
    let kernel = block_on(c.api.upload_image(&testguest())).unwrap().id;
    let spec: VmSpec = serde_json::from_value(serde_json::json!({"name": "dirty",
        "kernel": kernel, "vcpus": 1, "mem_mib": 64,
        "cmdline": "nova.workload=dirty:32:4,counter"}))
    .unwrap();
    let vm = block_on(acme.create_vm(&spec, None)).unwrap().id;
    let other = c.token_for("umbrella", "bob", Role::Viewer);

    wait_for(60, "the VM to run", || {
        let v = block_on(acme.vm(&vm)).ok()?;
        (v.observed?.state == "running").then_some(())
    });
    // Resident guest memory climbs past the 32 MiB the guest dirties.
    let peak = wait_for(60, "the VM's resident memory in the history", || {
        max_of(&c, "vm.mem_bytes", &vm).filter(|&m| m >= 32.0 * 1048576.0)
    });
    wait_for(30, "the VM's CPU in the history", || {
        max_of(&c, "vm.cpu", &vm).filter(|&v| v > 0.0)
    });
    wait_for(30, "the host's memory in the history", || {
        max_of(
            &c,
            "host.mem_used_bytes",
            &block_on(c.api.hosts()).ok()?[0].id,
        )
    });

    // The tenant sees its VM's series, another tenant nothing, and no host series.
    let q = |api: &nova_controller_api::ControllerClient, m: &str| {
        block_on(api.metric_query(&MetricQuery {
            metric: m.into(),
            ..Default::default()
        }))
        .unwrap()
        .series
    };
    assert!(q(&acme, "vm.mem_bytes").iter().any(|s| s.target == vm));
    assert!(q(&c.as_(&other), "vm.mem_bytes").is_empty());
    assert!(q(&acme, "host.mem_used_bytes").is_empty());
    assert_eq!(
        nova_tests::controller::status(block_on(acme.sd_targets())),
        403
    );

    // novactl top vms shows the VM to its tenant.
    let out = Command::new(binary("novactl"))
        .args(["--url", &c.url, "--token", &tenant_token, "top", "vms"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&vm) && text.contains("MiB"), "{text}");
    let out = Command::new(binary("novactl"))
        .args(["--url", &c.url, "--token", &c.admin, "top", "hosts"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MEMORY%") && text.contains("yes"), "{text}");

    // The history survives a restart of the controller.
    std::thread::sleep(Duration::from_millis(1500)); // one checkpoint
    c.stop();
    let c = Controller::start(d.path(), opts());
    let after = max_of(&c, "vm.mem_bytes", &vm).expect("history after the restart");
    assert!(after >= peak * 0.99, "{after} < {peak}");
}
