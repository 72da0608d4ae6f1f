//! The VMM's console socket (`--console-sock`): several clients attach, each gets
//! the output from before it attached (the backlog) and everything after; input
//! from any of them reaches the guest (the test guest's `echo` workload answers
//! each line); the console log keeps every byte with nobody attached; the socket is
//! the VMM user's alone (0600).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nova_tests::require_kvm;
use nova_tests::vmm::{wait_for_socket, VmmCmd};

/// Reads from `c` until what was read contains `needle`; answers all of it.
fn read_until(c: &mut UnixStream, needle: &str) -> String {
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if String::from_utf8_lossy(&got).contains(needle) {
            return String::from_utf8_lossy(&got).into_owned();
        }
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    panic!(
        "no `{needle}` on the console socket: {}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn clients_of_the_console_socket_see_the_backlog_and_echoes_and_their_input_reaches_the_guest() {
    if !require_kvm() {
        return;
    }
    let c = VmmCmd::testguest("echo");
    let sock = c.dir.join("console.sock");
    let vm = c.arg("--console-sock").arg(&sock).spawn();
    // Nobody is attached while it boots: the log has the line, and so will the backlog.
    vm.booted();
    wait_for_socket(&sock);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is the VMM user's alone");

    let mut a = UnixStream::connect(&sock).unwrap();
    let mut b = UnixStream::connect(&sock).unwrap();
    assert!(read_until(&mut a, "NOVA-BOOTED").contains("NOVA-BOOTED"));
    read_until(&mut b, "NOVA-BOOTED");

    a.write_all(b"hello from a\n").unwrap();
    read_until(&mut a, "NOVA-ECHO text=hello from a");
    read_until(&mut b, "NOVA-ECHO text=hello from a");
    b.write_all(b"and b\r").unwrap();
    read_until(&mut a, "NOVA-ECHO text=and b");
    read_until(&mut b, "NOVA-ECHO text=and b");

    // A client that leaves takes nothing with it; a new one still gets the backlog.
    drop(a);
    let mut c = UnixStream::connect(&sock).unwrap();
    let seen = read_until(&mut c, "NOVA-ECHO text=and b");
    assert!(
        seen.contains("NOVA-BOOTED") && seen.contains("text=hello from a"),
        "{seen}"
    );
    c.write_all(b"third\n").unwrap();
    read_until(&mut b, "NOVA-ECHO text=third");

    // The console log (the VMM's stdout here) has every line too.
    let line = vm
        .console
        .wait_line("NOVA-ECHO text=third", Duration::from_secs(10));
    assert_eq!(line.text, "NOVA-ECHO text=third");
}

#[test]
fn a_console_socket_in_use_by_a_running_vmm_is_refused() {
    if !require_kvm() {
        return;
    }
    let first = VmmCmd::testguest("idle");
    let sock = first.dir.join("console.sock");
    let vm = first.arg("--console-sock").arg(&sock).spawn();
    vm.booted();
    wait_for_socket(&sock);
    let mut second = VmmCmd::testguest("idle")
        .arg("--console-sock")
        .arg(&sock)
        .spawn();
    let status = second.console.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let err = second.console.stderr();
    assert!(
        err.contains("console.sock") && err.contains("in use"),
        "{err}"
    );
}

/// `nova-vmm ctl console` finds the socket through the API, shows the guest's
/// output, sends what is typed, and leaves at Ctrl-] with the VM still running.
#[test]
fn ctl_console_attaches_sends_input_and_leaves_at_ctrl_close_bracket() {
    if !require_kvm() {
        return;
    }
    let c = VmmCmd::testguest("echo");
    let sock = c.dir.join("console.sock");
    let (c, api) = c.arg("--console-sock").arg(&sock).with_api();
    let vm = c.spawn();
    vm.booted();
    wait_for_socket(&api);
    let mut ctl = std::process::Command::new(nova_tests::binary("nova-vmm"))
        .args(["ctl", "--api-sock"])
        .arg(&api)
        .arg("console")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = ctl.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_out = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.extend(b),
                Err(_) => panic!("no `{needle}`: {}", String::from_utf8_lossy(&seen)),
            }
        }
    };
    wait_out("NOVA-BOOTED");
    let mut stdin = ctl.stdin.take().unwrap();
    stdin.write_all(b"typed here\n").unwrap();
    wait_out("NOVA-ECHO text=typed here");
    stdin.write_all(&[0x1d]).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = ctl.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "ctl console did not leave"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // The VM runs on: another client still gets answers.
    let mut again = UnixStream::connect(&sock).unwrap();
    again.write_all(b"still here\n").unwrap();
    read_until(&mut again, "NOVA-ECHO text=still here");
}
