//! `net` in host mode: the UDP echo answers on `--udp-port`, the line names the
//! `nova.ip` address, and `--no-net-config` keeps it away from interfaces entirely.

mod support;

use nova_guest_abi::line;
use std::net::UdpSocket;
use std::time::Duration;
use support::{field, Agent, SECS};

/// A UDP port free on loopback right now.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn echo(port: u16, payload: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(payload, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).expect("an echo");
    assert_eq!(from.port(), port);
    buf[..n].to_vec()
}

#[test]
fn udp_datagrams_are_echoed_on_the_chosen_port() {
    let port = free_port();
    let mut agent = Agent::start(&[
        "--cmdline",
        "nova.workload=net nova.ip=192.0.2.7/24",
        "--udp-port",
        &port.to_string(),
    ]);
    let (_, l) = agent.wait_for(line::NET, SECS(10));
    assert_eq!(field(&l, "ip"), Some("192.0.2.7"));
    assert_eq!(field(&l, "ready"), Some("1"));
    assert_eq!(echo(port, b"nova echo 1"), b"nova echo 1");
    assert_eq!(echo(port, &[7u8; 1400]), vec![7u8; 1400]);
}

/// The MAC host mode reports without `--no-net-config`: the first non-loopback
/// interface's, read only.
fn first_host_mac() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| n != "lo");
    names.sort();
    names
        .first()
        .and_then(|n| std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "00:00:00:00:00:00".into())
}

#[test]
fn no_net_config_leaves_interfaces_alone() {
    let (p1, p2) = (free_port(), free_port());
    let mut plain = Agent::start(&[
        "--cmdline",
        "nova.workload=net nova.ip=192.0.2.8/24",
        "--udp-port",
        &p1.to_string(),
    ]);
    let mut none = Agent::start(&[
        "--cmdline",
        "nova.workload=net nova.ip=192.0.2.8/24",
        "--udp-port",
        &p2.to_string(),
        "--no-net-config",
    ]);
    let plain_line = plain.wait_for(line::NET, SECS(10)).1;
    let none_line = none.wait_for(line::NET, SECS(10)).1;
    assert_eq!(field(&plain_line, "mac"), Some(first_host_mac().as_str()));
    assert_eq!(field(&none_line, "mac"), Some("00:00:00:00:00:00"));
    assert_eq!(echo(p2, b"x"), b"x");
}

#[test]
fn a_port_in_use_is_reported() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut agent = Agent::start(&["--cmdline", "nova.workload=net", "--udp-port", &port]);
    let (_, l) = agent.wait_for(line::ERROR, SECS(10));
    assert!(
        l.starts_with(&format!("NOVA-ERROR what=udp_bind port={port} ")),
        "{l}"
    );
}
