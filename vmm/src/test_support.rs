//! Helpers for the crate's unit tests that need real host capabilities (KVM, sockets).

/// Skips (false, loudly) or, under `NOVA_REQUIRE_KVM=1`, fails when `ok` is false.
pub fn require_kvm(ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var("NOVA_REQUIRE_KVM").is_ok_and(|v| v == "1") {
        panic!("NOVA_REQUIRE_KVM=1 but /dev/kvm is not available");
    }
    eprintln!("*** SKIPPED: /dev/kvm is not available ***");
    false
}

/// Whether a missing host capability must fail the test.
pub fn strict() -> bool {
    std::env::var("NOVA_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Both ends of a loopback TCP connection: (the reading end, buffered; the writing end).
pub fn connected() -> (std::io::BufReader<std::net::TcpStream>, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (rx, _) = l.accept().unwrap();
    (std::io::BufReader::new(rx), tx)
}
