//! Graceful stop through the VMM's API (`PUT /v1/vm/stop`, `nova-vmm ctl stop`) with
//! the freestanding test guest, which has no ACPI driver and ignores the power
//! button: it is stopped once the timeout has passed, at once with `force` or
//! without ACPI, and a timeout out of range is refused naming the field. (A guest
//! that powers off at the button: `linux_kernel.rs`.)

use std::time::{Duration, Instant};

use nova_tests::require_kvm;
use nova_tests::vmm::{ctl, raw_request, VmmCmd};
use nova_vmm_api::StopReport;

/// `nova-vmm ctl stop ARGS` on a booted idle test guest: the report, how long the
/// VMM took to exit after it, and its log.
fn stop_idle_guest(extra: &[&str], args: &[&str]) -> (StopReport, Duration, String) {
    let (cmd, sock) = VmmCmd::testguest("idle").args(extra).with_api();
    let mut vm = cmd.spawn();
    vm.booted();
    let mut full = vec!["stop"];
    full.extend_from_slice(args);
    let t = Instant::now();
    let (status, out, err) = ctl(&sock, &full);
    assert!(status.success(), "ctl stop: {err}");
    let report: StopReport = serde_json::from_str(out.trim()).unwrap();
    let exit = vm.console.wait_exit(Duration::from_secs(30));
    let took = t.elapsed();
    assert!(exit.success(), "{exit:?}");
    (report, took, vm.console.stderr())
}

#[test]
fn a_guest_that_ignores_the_power_button_is_stopped_when_the_timeout_has_passed() {
    if !require_kvm() {
        return;
    }
    let (report, took, log) = stop_idle_guest(&[], &["--timeout-ms", "1500"]);
    assert!(report.power_button, "{report:?}");
    assert_eq!(report.timeout_ms, 1500);
    assert!(log.contains("power button pressed"), "{log}");
    assert!(log.contains("did not power off"), "{log}");
    assert!(log.contains("VM stopped: StopTimeout"), "{log}");
    // Not before the timeout: the guest had its chance.
    assert!(
        took >= Duration::from_millis(1500),
        "stopped after {took:?}"
    );
}

#[test]
fn a_forced_stop_presses_no_button() {
    if !require_kvm() {
        return;
    }
    let (report, _, log) = stop_idle_guest(&[], &["--force"]);
    assert!(!report.power_button, "{report:?}");
    assert!(!log.contains("power button pressed"), "{log}");
    assert!(log.contains("VM stopped: Shutdown"), "{log}");
}

#[test]
fn without_acpi_there_is_no_button_and_the_stop_is_immediate() {
    if !require_kvm() {
        return;
    }
    let (report, _, log) = stop_idle_guest(&["--no-acpi"], &["--timeout-ms", "600000"]);
    assert!(!report.power_button, "{report:?}");
    assert!(log.contains("VM stopped: Shutdown"), "{log}");
}

#[test]
fn a_stop_timeout_out_of_range_or_a_bad_body_is_refused_and_the_vm_runs_on() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("idle").with_api();
    let mut vm = cmd.spawn();
    vm.booted();
    for (body, field) in [
        (r#"{"timeout_ms":0}"#, "timeout_ms"),
        (r#"{"timeout_ms":600001}"#, "timeout_ms"),
        (r#"{"force":"yes"}"#, "stop request"),
        (r#"{"forse":true}"#, "stop request"),
    ] {
        let req = format!(
            "PUT /v1/vm/stop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, answer) = raw_request(&sock, req.as_bytes());
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains(field), "{body}: {answer}");
    }
    let (status, out, _) = ctl(&sock, &["status"]);
    assert!(status.success() && out.contains("\"running\""), "{out}");
    vm.console.kill();
}
