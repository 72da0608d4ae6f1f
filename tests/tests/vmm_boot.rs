//! nova-vmm boots the test guest: marker first, every vCPU, the configured memory,
//! poweroff and reset as clean exits, pause and resume, and the API.

use std::time::Duration;

use nova_http::blocking::block_on;
use nova_tests::require_kvm;
use nova_tests::vmm::{client, ctl, raw_request, ticks, VmmCmd};
use nova_vmm_api::{ErrorBody, KvmKind, RunState, VmConfig, VmInfo};

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
    let vmm = client(&sock);
    assert_eq!(block_on(vmm.pause()).unwrap().state, RunState::Paused);
    // What the guest printed before the pause may still be on its way to our reader
    // (a loaded machine delays it): count from when it has all arrived.
    let during = vm.console.quiet_for(Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(300));
    // At most the line being printed when the vCPU stopped may complete.
    assert!(
        vm.console.lines().len() <= during + 1,
        "the guest ran while paused"
    );
    assert_eq!(block_on(vmm.resume()).unwrap().state, RunState::Running);
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
    let info = block_on(client(&sock).info()).unwrap();
    assert_eq!(info.state, RunState::Running);
    let here = match std::path::Path::new("/sys/module/kvm_pvm").exists() {
        true => KvmKind::Pvm,
        false => KvmKind::Hardware,
    };
    assert_eq!(info.kvm, here);
    assert_eq!((info.config.vcpus, info.config.mem_mib), (2, 128));
    assert!(info.counters.console_bytes > 100);
    assert!(info.counters.io_exits > 100);
    // The CLI client says the same.
    let (status, out, err) = ctl(&sock, &["status"]);
    assert!(status.success(), "{err}");
    let said: VmInfo = serde_json::from_str(&out).unwrap();
    assert_eq!((said.kvm, said.config), (info.kvm, info.config));
    // The VM's process runs no async runtime: its threads are the VM's own.
    let pid = vm.console.pid();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap();
        assert!(
            !comm.starts_with("tokio") && !comm.starts_with("nova-http"),
            "a runtime thread in nova-vmm run: {comm}"
        );
    }
}

/// One request as its bytes, the way no client of ours would send it: the answer's
/// status and error body.
fn malformed(sock: &std::path::Path, method: &str, path: &str, body: &str) -> (u16, ErrorBody) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = raw_request(sock, request.as_bytes());
    (status, ErrorBody::from_answer(&answer))
}

#[test]
fn api_errors_are_json_with_a_message_and_change_nothing() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("idle").with_api();
    let _vm = cmd.spawn();
    let (st, e) = malformed(&sock, "GET", "/v1/nope", "");
    assert_eq!(st, 404);
    assert!(e.error.contains("/v1/nope"), "{e:?}");
    let (st, e) = malformed(&sock, "DELETE", "/v1/vm", "");
    assert_eq!(st, 405);
    assert!(e.error.contains("DELETE"), "{e:?}");
    let (st, e) = malformed(&sock, "PUT", "/v1/migration", "{\"to\": 5}");
    assert_eq!(st, 400);
    assert!(e.error.contains("migration request"), "{e:?}");
    // The body before params nested the migration's options: refused by name.
    let flat = r#"{"to":"tcp:127.0.0.1:4000","mode":"precopy","downtime_ms":300}"#;
    let (st, e) = malformed(&sock, "PUT", "/v1/migration", flat);
    assert_eq!(st, 400);
    assert!(e.error.contains("unknown field `mode`"), "{e:?}");
    // A value out of range names its field.
    let zero = r#"{"to":"tcp:127.0.0.1:4000","params":{"connections":0}}"#;
    let (st, e) = malformed(&sock, "PUT", "/v1/migration", zero);
    assert_eq!((st, e.field.as_deref()), (400, Some("params.connections")));
    let (st, e) = malformed(&sock, "PUT", "/v1/snapshot", r#"{"path":"snaps/1"}"#);
    assert_eq!((st, e.field.as_deref()), (400, Some("path")), "{e:?}");
    let (st, answer) = raw_request(&sock, b"HELLO\r\n\r\n");
    assert_eq!(st, 400);
    assert!(ErrorBody::from_answer(&answer).error.contains("malformed"));
    // Nothing changed: no migration started, the VM runs.
    let vmm = client(&sock);
    assert_eq!(block_on(vmm.migration()).unwrap_err().status(), Some(404));
    assert_eq!(block_on(vmm.info()).unwrap().state, RunState::Running);
    let (status, _, err) = ctl(&sock, &["resume"]);
    assert!(status.success(), "{err}");
}

/// `--log-format json` makes every log line a JSON object, the API's access lines
/// among them; a NOVA_LOG that is not a filter is said, and the default one used.
#[test]
fn logs_are_json_lines_when_asked_with_an_access_line_per_request() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter")
        .env("NOVA_LOG", "nova_vmm=bogus=level")
        .arg("--log-format")
        .arg("json")
        .with_api();
    let mut vm = cmd.spawn();
    vm.booted();
    block_on(client(&sock).info()).unwrap();
    let (status, _, err) = ctl(&sock, &["shutdown"]);
    assert!(status.success(), "{err}");
    assert!(vm.console.wait_exit(Duration::from_secs(10)).success());
    let stderr = vm.console.stderr();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let field = |l: &serde_json::Value, k: &str| l[k].as_str().unwrap_or("").to_string();
    assert!(
        lines
            .iter()
            .any(|l| field(l, "level") == "WARN" && field(l, "message").contains("NOVA_LOG")),
        "the bad filter is not reported:\n{stderr}"
    );
    let access: Vec<_> = lines
        .iter()
        .filter(|l| field(l, "target") == "access")
        .map(|l| (field(l, "method"), field(l, "path"), l["status"].as_u64()))
        .collect();
    assert_eq!(
        access,
        [
            ("GET".into(), "/v1/vm".into(), Some(200)),
            ("PUT".into(), "/v1/vm/shutdown".into(), Some(204))
        ],
        "{stderr}"
    );
    // The default filter (info) still applies: the VMM says which KVM it found.
    assert!(stderr.contains("KVM: "), "{stderr}");
    // A VMM that cannot start says why in a JSON line too.
    let out = std::process::Command::new(nova_tests::binary("nova-vmm"))
        .args([
            "run",
            "--log-format",
            "json",
            "--kernel",
            "/nonexistent/vmlinux",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line: serde_json::Value = serde_json::from_str(err.trim()).expect("one JSON line");
    assert_eq!(line["level"], "ERROR", "{err}");
    let message = line["message"].as_str().unwrap_or("");
    assert!(message.contains("/nonexistent/vmlinux"), "{err}");
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
    let config = VmConfig {
        cmdline: Some("nova.workload=poweroff".into()),
        vcpus: 2,
        mem_mib: 96,
        ..VmConfig::new(kernel)
    };
    std::fs::write(&cfg, serde_json::to_string(&config).unwrap()).unwrap();
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

#[test]
fn a_vm_booted_paused_runs_nothing_until_resumed() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter").arg("--paused").with_api();
    let vm = cmd.spawn();
    let vmm = client(&sock);
    let info = nova_tests::wait_for(20, "the paused VM's API", || block_on(vmm.info()).ok());
    assert_eq!(info.state, RunState::Paused, "{info:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        vm.console.lines().is_empty(),
        "the guest ran before the resume: {:?}",
        vm.console.lines()
    );
    assert_eq!(block_on(vmm.resume()).unwrap().state, RunState::Running);
    vm.console.wait_line("NOVA-BOOTED", Duration::from_secs(20));
    vm.console
        .wait_line("NOVA-TICK 20", Duration::from_secs(20));
}
