//! The VMM's API socket is bounded: 32 open connections at most (the next ones are
//! answered 503 and closed), a request head must arrive within 5 s of its first byte
//! and its body within 10 s (else 408), an idle connection is closed after 10 s
//! (408); thousands of connections never make thousands of threads, and a valid
//! request is answered once the idle ones are gone.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nova_tests::require_kvm;
use nova_tests::vmm::{raw_request, wait_for_socket, VmmCmd};

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

fn vmm_pid(sock: &Path) -> u32 {
    let s = wait_for_socket(sock);
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills the ucred we own, of the length we pass.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    cred.pid as u32
}

/// Reads an answer's status line (or None when the server closed without one).
fn status_of(s: &mut UnixStream, within: Duration) -> Option<u16> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

#[test]
fn five_thousand_connections_make_no_thread_explosion_and_a_valid_request_still_answers() {
    if !require_kvm() {
        return;
    }
    raise_nofile(20_000);
    let (cmd, sock) = VmmCmd::testguest("counter").with_api();
    let vm = cmd.spawn();
    vm.booted();
    let pid = vmm_pid(&sock);
    let mut conns = Vec::new();
    let mut refused = 0;
    for _ in 0..5000 {
        match UnixStream::connect(&sock) {
            Ok(s) => conns.push(s),
            Err(_) => refused += 1,
        }
    }
    let t = threads(pid);
    assert!(t < 64, "5000 connections made {t} threads");
    // Past the cap, connections are answered 503 at once.
    let mut busy = 0;
    for s in conns.iter_mut().skip(100).take(50) {
        if status_of(s, Duration::from_secs(2)) == Some(503) {
            busy += 1;
        }
    }
    assert!(busy > 0, "no 503 past the cap ({refused} connects refused)");
    // The silent ones are dropped after the idle timeout; then a request answers,
    // with every client socket still open.
    let t0 = Instant::now();
    loop {
        // While the cap is full the server answers 503 and closes, maybe before
        // the request is written.
        let answer = UnixStream::connect(&sock).ok().and_then(|mut s| {
            let _ = s.write_all(b"GET /v1/vm HTTP/1.1\r\nConnection: close\r\n\r\n");
            status_of(&mut s, Duration::from_secs(5))
        });
        match answer {
            Some(200) => break,
            other => assert!(
                t0.elapsed() < Duration::from_secs(40),
                "no valid answer 40 s on: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(threads(pid) < 64);
    drop(conns);
}

#[test]
fn slow_heads_bodies_and_idle_connections_get_408() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter").with_api();
    let vm = cmd.spawn();
    vm.booted();
    let t0 = Instant::now();
    let mut head = wait_for_socket(&sock);
    head.write_all(b"GET /v1/vm HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut body = wait_for_socket(&sock);
    body.write_all(b"PUT /v1/snapshot HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pa")
        .unwrap();
    let mut idle = wait_for_socket(&sock);
    assert_eq!(status_of(&mut head, Duration::from_secs(20)), Some(408));
    let head_at = t0.elapsed();
    assert_eq!(status_of(&mut idle, Duration::from_secs(20)), Some(408));
    assert_eq!(status_of(&mut body, Duration::from_secs(20)), Some(408));
    assert!(
        head_at < Duration::from_secs(9),
        "head timeout took {head_at:?}"
    );
    // The server is fine afterwards.
    let (status, _) = raw_request(&sock, b"GET /v1/vm HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
}
