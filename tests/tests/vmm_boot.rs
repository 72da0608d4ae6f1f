//! nova-vmm boots the test guest: marker first, every vCPU, the configured memory,
//! poweroff and reset as clean exits, pause and resume, and the API.

use std::time::Duration;

use nova_tests::require_kvm;
use nova_tests::vmm::{api, ctl, ticks, VmmCmd};

#[test]
fn the_guest_prints_its_boot_marker_first_and_powers_off_with_exit_0() {
    if !require_kvm() {
        return;
    }
    let mut vm = VmmCmd::testguest("poweroff").spawn();
    let status = vm.console.wait_exit(Duration::from_secs(30));
    let lines = vm.console.lines();
    assert_eq!(
        lines.first().map(|l| l.text.as_str()),
        Some("NOVA-BOOTED"),
        "{lines:?}"
    );
    assert!(
        lines.iter().skip(1).all(|l| l.text.starts_with("NOVA-")),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap().text, "NOVA-POWEROFF");
    assert!(status.success(), "{status:?}: {}", vm.console.stderr());
    assert!(
        vm.console.stderr().contains("KVM: "),
        "the VMM must say which KVM it found"
    );
}

#[test]
fn a_guest_reset_ends_the_vmm_with_exit_0() {
    if !require_kvm() {
        return;
    }
    let mut vm = VmmCmd::testguest("reset").spawn();
    let status = vm.console.wait_exit(Duration::from_secs(30));
    assert!(vm.console.lines().iter().any(|l| l.text == "NOVA-RESET"));
    assert!(status.success(), "{status:?}: {}", vm.console.stderr());
    assert!(
        vm.console.stderr().contains("Reset"),
        "{}",
        vm.console.stderr()
    );
}

#[test]
fn every_vcpu_runs_and_reports_its_apic_id() {
    if !require_kvm() {
        return;
    }
    let vm = VmmCmd::testguest("idle").args(["--vcpus", "4"]).spawn();
    let count = vm.console.wait_line("NOVA-CPUS", Duration::from_secs(30));
    assert_eq!(count.num("count"), Some(4));
    let mut ids: Vec<u64> = vm
        .console
        .lines()
        .iter()
        .filter(|l| l.text.starts_with("NOVA-CPU "))
        .filter_map(|l| l.num("apic"))
        .collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

#[test]
fn the_guest_sees_the_configured_memory() {
    if !require_kvm() {
        return;
    }
    for mib in [64u64, 256, 4096] {
        let vm = VmmCmd::testguest("idle")
            .args(["--mem-mib", &mib.to_string()])
            .spawn();
        let mem = vm.console.wait_line("NOVA-MEM", Duration::from_secs(20));
        assert_eq!(mem.num("mib"), Some(mib), "{}", mem.text);
    }
}

#[test]
fn pause_stops_the_guest_and_resume_continues_where_it_was() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter").with_api();
    let vm = cmd.spawn();
    vm.console
        .wait_line("NOVA-TICK 50", Duration::from_secs(20));
    let (st, body) = api(&sock, "PUT", "/v1/vm/pause", "");
    assert_eq!((st, body["state"].as_str()), (200, Some("paused")));
    let during = vm.console.lines().len();
    std::thread::sleep(Duration::from_millis(300));
    // At most the line being printed when the vCPU stopped may complete.
    assert!(
        vm.console.lines().len() <= during + 1,
        "the guest ran while paused"
    );
    let (st, body) = api(&sock, "PUT", "/v1/vm/resume", "");
    assert_eq!((st, body["state"].as_str()), (200, Some("running")));
    let last = ticks(&vm.console.lines()).last().unwrap().0;
    vm.console
        .wait_line(&format!("NOVA-TICK {}", last + 50), Duration::from_secs(20));
    let t = ticks(&vm.console.lines());
    for w in t.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0 + 1,
            "counter skipped or repeated across pause/resume"
        );
    }
    let gap = t.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap();
    assert!(
        gap >= Duration::from_millis(250),
        "the pause does not show as a gap: {gap:?}"
    );
}

#[test]
fn status_reports_state_kvm_kind_config_and_counters() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter")
        .args(["--vcpus", "2", "--mem-mib", "128"])
        .with_api();
    let vm = cmd.spawn();
    vm.console
        .wait_line("NOVA-TICK 10", Duration::from_secs(20));
    let (st, v) = api(&sock, "GET", "/v1/vm", "");
    assert_eq!(st, 200);
    assert_eq!(v["state"], "running");
    assert!(["pvm", "hardware"].contains(&v["kvm"].as_str().unwrap()));
    assert_eq!(
        (
            v["config"]["vcpus"].as_u64(),
            v["config"]["mem_mib"].as_u64()
        ),
        (Some(2), Some(128))
    );
    assert!(v["counters"]["console_bytes"].as_u64().unwrap() > 100);
    assert!(v["counters"]["io_exits"].as_u64().unwrap() > 100);
    // The CLI client says the same.
    let (status, out, _) = ctl(&sock, &["status"]);
    assert!(status.success());
    assert!(out.contains("\"kvm\""));
}

#[test]
fn api_errors_are_json_with_a_message_and_change_nothing() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("idle").with_api();
    let _vm = cmd.spawn();
    let (st, v) = api(&sock, "GET", "/v1/nope", "");
    assert_eq!(st, 404);
    assert!(v["error"].as_str().unwrap().contains("/v1/nope"));
    let (st, v) = api(&sock, "DELETE", "/v1/vm", "");
    assert_eq!(st, 405);
    assert!(v["error"].is_string());
    let (st, v) = api(&sock, "PUT", "/v1/migration", "{\"to\": 5}");
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("migration request"),
        "{v}"
    );
    let (st, v) = api(&sock, "GET", "/v1/vm", "");
    assert_eq!((st, v["state"].as_str()), (200, Some("running")));
    let (status, _, err) = ctl(&sock, &["resume"]);
    assert!(status.success(), "{err}");
}

#[test]
fn shutdown_through_the_api_ends_the_vmm_with_exit_0() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter").with_api();
    let mut vm = cmd.spawn();
    vm.booted();
    let (status, _, err) = ctl(&sock, &["shutdown"]);
    assert!(status.success(), "{err}");
    assert!(vm.console.wait_exit(Duration::from_secs(10)).success());
    assert!(!sock.exists(), "the API socket is removed on exit");
}

#[test]
fn a_json_config_file_boots_the_same_vm_as_flags() {
    if !require_kvm() {
        return;
    }
    let dir = nova_tests::TempDir::new();
    let cfg = dir.join("vm.json");
    let kernel = nova_tests::guest_image("testguest.elf");
    std::fs::write(
        &cfg,
        serde_json::json!({"kernel": kernel, "cmdline": "nova.workload=poweroff", "vcpus": 2, "mem_mib": 96}).to_string(),
    )
    .unwrap();
    let mut vm = VmmCmd::raw().arg("--config").arg(&cfg).spawn();
    assert!(vm.console.wait_exit(Duration::from_secs(30)).success());
    let lines = vm.console.lines();
    assert!(
        lines.iter().any(|l| l.text == "NOVA-MEM mib=96"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.text == "NOVA-CPUS count=2"),
        "{lines:?}"
    );
}

#[test]
fn the_console_goes_to_a_file_when_asked() {
    if !require_kvm() {
        return;
    }
    let dir = nova_tests::TempDir::new();
    let log = dir.join("console.log");
    let mut vm = VmmCmd::testguest("poweroff")
        .arg("--console")
        .arg(&log)
        .spawn();
    assert!(vm.console.wait_exit(Duration::from_secs(30)).success());
    assert!(vm.console.lines().is_empty(), "nothing on stdout");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("NOVA-BOOTED\n") && text.contains("NOVA-POWEROFF"),
        "{text}"
    );
}
