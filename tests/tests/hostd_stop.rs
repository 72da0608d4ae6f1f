//! hostd's `POST /v1/vms/{id}/stop` with its typed body: the VM's ACPI power button
//! is pressed and the guest gets `timeout_ms` to power off before its VMM stops it
//! (the freestanding test guest ignores the button, so it is stopped after the
//! timeout); `force` kills the VMM at once; a timeout out of range is refused naming
//! the field. (A guest that powers off at the button: `linux_kernel.rs`.)

use std::time::{Duration, Instant};

use nova_hostd_api::{StopVmRequest, VmState};
use nova_tests::hostd::{guest, Hostd, Opts};
use nova_tests::require_kvm;

const BOOT: Duration = Duration::from_secs(30);

fn vmm_log(h: &Hostd, id: &str) -> String {
    std::fs::read_to_string(h.data().join(format!("vms/{id}/vmm.log"))).unwrap_or_default()
}

#[test]
fn hostd_presses_the_power_button_and_stops_the_vm_after_the_guests_timeout() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(&guest("g", "idle"));
    h.wait_console("g", "NOVA-BOOTED", BOOT);
    let t = Instant::now();
    let req = StopVmRequest {
        force: false,
        timeout_ms: Some(1500),
    };
    let stopped = h.ok(h.api().stop_with("g", &req));
    let took = t.elapsed();
    assert_eq!(stopped.state, VmState::Stopped, "{stopped:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "stopped after {took:?}"
    );
    let log = vmm_log(&h, "g");
    assert!(log.contains("power button pressed"), "{log}");
    assert!(log.contains("VM stopped: StopTimeout"), "{log}");
}

#[test]
fn hostd_force_stop_in_the_body_presses_no_button() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(&guest("f", "idle"));
    h.wait_console("f", "NOVA-BOOTED", BOOT);
    let req = StopVmRequest {
        force: true,
        timeout_ms: None,
    };
    let stopped = h.ok(h.api().stop_with("f", &req));
    assert_eq!(stopped.state, VmState::Stopped, "{stopped:?}");
    assert!(!vmm_log(&h, "f").contains("power button pressed"));
}

#[test]
fn hostd_refuses_a_stop_timeout_out_of_range_and_unknown_fields() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(&guest("r", "idle"));
    h.wait_console("r", "NOVA-BOOTED", BOOT);
    for (body, field) in [
        (r#"{"timeout_ms":0}"#, "timeout_ms"),
        (r#"{"timeout_ms":600001}"#, "timeout_ms"),
        (r#"{"timeout_ms":"soon"}"#, "timeout_ms"),
        (r#"{"forse":true}"#, "forse"),
    ] {
        let (status, answer) = h.request("POST", "/v1/vms/r/stop", Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    assert_eq!(h.ok(h.api().vm("r")).state, VmState::Running);
}
