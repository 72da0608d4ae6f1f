//! Bad input to nova-vmm: a one-line error naming the problem, a non-zero exit, no panic.

use std::process::Command;

use nova_tests::{binary, guest_image, TempDir};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary("nova-vmm"))
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "nova-vmm panicked: {err}");
    (out.status.code().unwrap_or(-1), err)
}

fn error_line(err: &str) -> &str {
    err.lines()
        .find(|l| l.starts_with("nova-vmm: ") || l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in: {err}"))
}

#[test]
fn a_missing_kernel_is_named() {
    let (code, err) = run(&["--kernel", "/nonexistent/vmlinux"]);
    assert_ne!(code, 0);
    let line = error_line(&err);
    assert!(
        line.contains("/nonexistent/vmlinux") && line.contains("No such file"),
        "{err}"
    );
}

#[test]
fn a_corrupt_kernel_is_named() {
    if !nova_tests::require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let bad = dir.join("corrupt.elf");
    let mut bytes = std::fs::read(guest_image("testguest.elf")).unwrap();
    bytes.truncate(200); // an ELF header that promises what is not there
    std::fs::write(&bad, &bytes).unwrap();
    let (code, err) = run(&["--kernel", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("corrupt.elf"), "{err}");
    std::fs::write(&bad, b"just text, not a kernel").unwrap();
    let (code, err) = run(&["--kernel", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("not an ELF or bzImage"), "{err}");
}

#[test]
fn impossible_memory_and_vcpu_counts_name_their_field() {
    let k = guest_image("testguest.elf");
    let k = k.to_str().unwrap();
    let (code, err) = run(&["--kernel", k, "--mem-mib", "1"]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("mem_mib"), "{err}");
    let (code, err) = run(&["--kernel", k, "--mem-mib", "99999999999"]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("mem_mib"), "{err}");
    let (code, err) = run(&["--kernel", k, "--vcpus", "33"]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("vcpus"), "{err}");
}

#[test]
fn a_missing_disk_is_named() {
    if !nova_tests::require_kvm() {
        return;
    }
    let k = guest_image("testguest.elf");
    let (code, err) = run(&[
        "--kernel",
        k.to_str().unwrap(),
        "--disk",
        "/nonexistent/disk.img",
    ]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("/nonexistent/disk.img"), "{err}");
}

#[test]
fn a_tap_that_cannot_be_opened_is_named() {
    if !nova_tests::require_kvm() {
        return;
    }
    let k = guest_image("testguest.elf");
    let (code, err) = run(&[
        "--kernel",
        k.to_str().unwrap(),
        "--net",
        "tap=novanosuchtap",
    ]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("novanosuchtap"), "{err}");
}

#[test]
fn malformed_flags_and_config_files_are_refused_by_name() {
    let (code, err) = run(&["--kernel", "/k", "--net", "mac=zz"]);
    assert_ne!(code, 0);
    assert!(err.contains("tap=NAME"), "{err}");
    let dir = TempDir::new();
    let cfg = dir.join("vm.json");
    std::fs::write(&cfg, r#"{"kernel": "/k", "memory": 5}"#).unwrap();
    let (code, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(error_line(&err).contains("memory"), "{err}");
}
