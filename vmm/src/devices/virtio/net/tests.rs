//! virtio-net through a real transport, guest memory and tap: frames both ways, and
//! what a hostile guest can put in the queues. Tap tests need root and /dev/net/tun;
//! without them they are skipped loudly (or fail under NOVA_REQUIRE_KVM=1).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use super::{generate_mac, Net, NetConfig, QUEUE_SIZE};
use super::{RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::device::VirtioDevice;
use crate::devices::virtio::persist::DeviceState;
use crate::devices::virtio::test_driver::{TestDriver, NEEDS_RESET};
use crate::devices::BusDevice;
use nova_vmm_api::{DeviceCounters, NetCounters};

const RX_BUFFERS: u64 = 0x40_0000;
const TX_HEADER: u64 = 0x50_0000;
const TX_FRAME: u64 = 0x51_0000;
/// IEEE "local experimental" ethertype: nothing else on the tap uses it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// A tap created for one test and deleted after it.
struct TestTap {
    name: String,
}

impl TestTap {
    fn create() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let tun = std::path::Path::new("/dev/net/tun").exists();
        let ip = Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !(root && tun && ip) {
            let why = format!("root={root}, /dev/net/tun={tun}, ip={ip}");
            if crate::test_support::strict() {
                panic!("NOVA_REQUIRE_KVM=1 but a tap cannot be created here ({why})");
            }
            eprintln!(
                "*** SKIPPED: virtio-net tap test needs root, /dev/net/tun and ip ({why}) ***"
            );
            return None;
        }
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nvt{}x{n}", std::process::id() % 100_000);
        let tap = TestTap { name };
        tap.ip(&["tuntap", "add", "dev", &tap.name, "mode", "tap"]);
        // No IPv6 chatter (router solicitations, MLD) on the wire we watch.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", tap.name),
            "1",
        );
        tap.ip(&["link", "set", &tap.name, "up"]);
        Some(tap)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// The host's side of the wire: an AF_PACKET socket on the tap.
struct HostSide {
    fd: OwnedFd,
}

impl HostSide {
    fn bind(ifname: &str) -> Self {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol.into(),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh socket we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = CString::new(ifname).unwrap();
        // SAFETY: cname is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert_ne!(ifindex, 0, "no interface {ifname}");
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_ll of `len` bytes.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        let tlen = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        // SAFETY: SO_RCVTIMEO reads one timeval, which the pointer refers to.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                tlen,
            )
        };
        HostSide { fd }
    }

    /// Puts `frame` on the wire towards the guest.
    fn send(&self, frame: &[u8]) {
        // SAFETY: frame is a valid buffer of frame.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame from the guest carrying our ethertype and `tag`.
    fn recv_tagged(&self, tag: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 70_000];
        while Instant::now() < deadline {
            // SAFETY: buf is a valid, writable buffer of buf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 14 && buf[12..14] == ETHERTYPE && buf[14..n as usize].starts_with(tag) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }
}

fn frame(dst: [u8; 6], tag: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(tag);
    f.resize(f.len().max(60), 0);
    f
}

/// (addr, len, flags, next) of one descriptor, laid out by hand.
type RawDescriptor = (u64, u32, u16, u16);

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

fn started(tap: &TestTap) -> TestDriver {
    let config = NetConfig {
        tap: tap.name.clone(),
        mac: Some(GUEST_MAC),
    };
    let mut driver = TestDriver::new(Box::new(Net::new(config).unwrap()));
    driver.start(QUEUE_SIZE);
    driver
}

fn counters(driver: &TestDriver) -> NetCounters {
    match driver.transport.device().counters() {
        DeviceCounters::Net(c) => c,
        other => panic!("{other:?}"),
    }
}

/// Offers `count` rx buffers of `len` bytes; the buffer of head h is at RX_BUFFERS + h * 4 KiB.
fn post_rx(driver: &mut TestDriver, count: u64, len: u32) -> Vec<(u16, u64)> {
    let mut posted = Vec::new();
    for _ in 0..count {
        let addr = RX_BUFFERS + u64::from(driver.next_head(RX_QUEUE)) * 0x1000;
        let head = driver.add_chain(RX_QUEUE, &[(addr, len, true)]);
        posted.push((head, addr));
    }
    driver.kick(RX_QUEUE);
    posted
}

/// Sends one frame from the guest: header + frame in two descriptors.
fn guest_send(driver: &mut TestDriver, tag: &[u8]) -> (u32, u32) {
    let f = frame([0xff; 6], tag);
    driver
        .mem
        .write_slice(&[0u8; 12], GuestAddress(TX_HEADER))
        .unwrap();
    driver.mem.write_slice(&f, GuestAddress(TX_FRAME)).unwrap();
    driver.add_chain(
        TX_QUEUE,
        &[(TX_HEADER, 12, false), (TX_FRAME, f.len() as u32, false)],
    );
    driver.kick(TX_QUEUE);
    driver.wait_used(TX_QUEUE)
}

/// Waits for the rx completion that carries `tag`; returns (used len, buffer contents).
fn guest_receive(driver: &mut TestDriver, posted: &[(u16, u64)], tag: &[u8]) -> (u32, Vec<u8>) {
    loop {
        let (id, len) = driver.wait_used(RX_QUEUE);
        let (_, addr) = posted
            .iter()
            .find(|(head, _)| u32::from(*head) == id)
            .expect("unknown id");
        let mut data = vec![0u8; len as usize];
        driver
            .mem
            .read_slice(&mut data, GuestAddress(*addr))
            .unwrap();
        if data.len() > 26 && data[24..26] == ETHERTYPE && data[26..].starts_with(tag) {
            return (len, data);
        }
    }
}

#[test]
fn a_missing_tap_is_refused_naming_it() {
    let err = Net::new(NetConfig {
        tap: "novanotap0".into(),
        mac: None,
    })
    .err()
    .unwrap();
    assert_eq!(err.to_string(), "tap novanotap0: no such tap interface");
    for bad in ["", "a-name-far-too-long-for-linux", "../../etc"] {
        let err = Net::new(NetConfig {
            tap: bad.into(),
            mac: None,
        })
        .err()
        .unwrap();
        assert!(err.to_string().starts_with(&format!("tap {bad}:")), "{err}");
    }
}

#[test]
fn generated_macs_are_locally_administered_in_qemus_range() {
    let a = generate_mac();
    assert_eq!(a[..3], [0x52, 0x54, 0x00]);
    assert_eq!(a[0] & 0x03, 0x02, "unicast, locally administered");
}

#[test]
fn the_guest_reads_its_mac_and_link_up_and_the_tap_is_exclusive() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let mut config = [0u8; 8];
    driver.transport.read(0x100, &mut config);
    assert_eq!(config[..6], GUEST_MAC);
    assert_eq!(u16::from_le_bytes([config[6], config[7]]), 1, "link up");
    assert_eq!(driver.read_reg(0x008), 1, "net device");
    let err = Net::new(NetConfig {
        tap: tap.name.clone(),
        mac: None,
    })
    .err()
    .unwrap();
    assert!(
        err.to_string().starts_with(&format!("tap {}:", tap.name)),
        "{err}"
    );
}

#[test]
fn frames_the_guest_sends_reach_the_tap() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    for i in 0..3u8 {
        let tag = [b'n', b'o', b'v', b'a', b'-', b't', b'x', i];
        assert_eq!(guest_send(&mut driver, &tag).1, 0, "tx used length");
        let got = host
            .recv_tagged(&tag, Duration::from_secs(5))
            .expect("frame not on the tap");
        assert_eq!(got, frame([0xff; 6], &tag));
    }
    let c = counters(&driver);
    assert_eq!((c.tx_packets, c.tx_bytes, c.tx_dropped), (3, 180, 0));
}

#[test]
fn frames_from_the_tap_reach_the_guest_and_dirty_its_pages() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    let posted = post_rx(&mut driver, 8, 2048);
    std::thread::sleep(Duration::from_millis(20));
    driver.clear_dirty();
    assert!(posted.iter().all(|&(_, addr)| !driver.is_dirty(addr)));
    let sent = frame(GUEST_MAC, b"nova-rx-1");
    host.send(&sent);
    let (len, data) = guest_receive(&mut driver, &posted, b"nova-rx-1");
    assert_eq!(len as usize, 12 + sent.len());
    assert_eq!(data[..10], [0u8; 10], "no offload flags");
    assert_eq!(data[10..12], [1, 0], "num_buffers = 1");
    assert_eq!(data[12..], sent[..]);
    // Written by the device only, and migration must see it.
    let (_, addr) = posted
        .iter()
        .find(|&&(_, a)| driver.byte(a + 24) == 0x88)
        .unwrap();
    assert!(driver.is_dirty(*addr));
    assert!(driver.irq.read().is_ok(), "the guest was interrupted");
    assert!(counters(&driver).rx_packets >= 1);
}

#[test]
fn a_frame_waits_for_the_guest_to_post_a_buffer() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    host.send(&frame(GUEST_MAC, b"nova-early"));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(driver.used_idx(RX_QUEUE), 0);
    let posted = post_rx(&mut driver, 2, 2048);
    let (_, data) = guest_receive(&mut driver, &posted, b"nova-early");
    assert_eq!(data[12..18], GUEST_MAC);
    // And the tap is polled again afterwards.
    host.send(&frame(GUEST_MAC, b"nova-later"));
    guest_receive(&mut driver, &posted, b"nova-later");
}

#[test]
fn hostile_tx_chains_are_dropped_and_the_device_keeps_sending() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    let f = frame([0xff; 6], b"nova-hostile");
    driver.mem.write_slice(&f, GuestAddress(TX_FRAME)).unwrap();
    driver
        .mem
        .write_slice(&f, GuestAddress(TX_FRAME + 40_000))
        .unwrap();
    let len = f.len() as u32;
    let cases: Vec<(&str, Vec<RawDescriptor>)> = vec![
        (
            "device-writable buffer",
            vec![(TX_HEADER, 12, NEXT, 1), (TX_FRAME, len, WRITE, 0)],
        ),
        ("shorter than the header", vec![(TX_HEADER, 8, 0, 0)]),
        (
            "frame over 64 KiB",
            vec![
                (TX_HEADER, 12, NEXT, 1),
                (TX_FRAME, 40_000, NEXT, 2),
                (TX_FRAME, 40_000, 0, 0),
            ],
        ),
        (
            "buffer outside memory",
            vec![(TX_HEADER, 12, NEXT, 1), (0x7fff_0000_0000, len, 0, 0)],
        ),
        (
            "length wrapping u32",
            vec![(TX_HEADER, 12, NEXT, 1), (TX_FRAME, u32::MAX - 4, 0, 0)],
        ),
        (
            "indirect",
            vec![
                (TX_HEADER, 12, NEXT, 1),
                (TX_FRAME, 32, VRING_DESC_F_INDIRECT as u16, 0),
            ],
        ),
        (
            "loop",
            vec![(TX_HEADER, 12, NEXT, 1), (TX_FRAME, len, NEXT, 0)],
        ),
        ("next beyond the queue", vec![(TX_HEADER, 12, NEXT, 999)]),
    ];
    let n_cases = cases.len() as u64;
    for (name, descriptors) in cases {
        for (i, &(addr, len, flags, next)) in descriptors.iter().enumerate() {
            driver.write_desc(TX_QUEUE, i as u16, addr, len, flags, next);
        }
        driver.push_avail(TX_QUEUE, 0);
        driver.kick(TX_QUEUE);
        assert_eq!(driver.wait_used(TX_QUEUE), (0, 0), "{name}");
        assert_eq!(
            host.recv_tagged(b"nova-hostile", Duration::from_millis(30)),
            None,
            "{name} sent"
        );
        assert_eq!(driver.status() & NEEDS_RESET, 0, "{name}");
        assert_eq!(guest_send(&mut driver, b"nova-good").1, 0);
        assert!(
            host.recv_tagged(b"nova-good", Duration::from_secs(5))
                .is_some(),
            "after {name}"
        );
    }
    assert_eq!(counters(&driver).tx_dropped, n_cases);
}

#[test]
fn hostile_rx_chains_come_back_empty_and_the_frame_still_arrives() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    // Three bad chains first, then a good one.
    let bad_read_only = driver.add_chain(RX_QUEUE, &[(RX_BUFFERS, 2048, false)]);
    let bad_outside = driver.add_chain(RX_QUEUE, &[(0x7fff_0000_0000, 2048, true)]);
    let bad_mixed = driver.add_chain(
        RX_QUEUE,
        &[(RX_BUFFERS, 1024, true), (RX_BUFFERS + 1024, 1024, false)],
    );
    let good = driver.add_chain(RX_QUEUE, &[(RX_BUFFERS + 0x8000, 2048, true)]);
    driver.kick(RX_QUEUE);
    host.send(&frame(GUEST_MAC, b"nova-rx-hostile"));
    for bad in [bad_read_only, bad_outside, bad_mixed] {
        assert_eq!(driver.wait_used(RX_QUEUE), (u32::from(bad), 0));
    }
    let posted = [(good, RX_BUFFERS + 0x8000)];
    let (len, _) = guest_receive(&mut driver, &posted, b"nova-rx-hostile");
    assert_eq!(len, 12 + 60);
    assert_eq!(driver.status() & NEEDS_RESET, 0);
    assert_eq!(counters(&driver).bad_chains, 3);
}

#[test]
fn a_frame_too_big_for_the_buffer_is_dropped_and_the_buffer_kept() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    driver.add_chain(RX_QUEUE, &[(RX_BUFFERS, 40, true)]);
    driver.kick(RX_QUEUE);
    host.send(&frame(GUEST_MAC, b"nova-too-big"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters(&driver).rx_dropped == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(counters(&driver).rx_dropped, 1);
    assert_eq!(
        driver.used_idx(RX_QUEUE),
        0,
        "the small buffer stays the guest's"
    );
}

#[test]
fn a_corrupt_tx_ring_needs_a_reset_which_recovers() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    driver.set_avail_idx(TX_QUEUE, 1000);
    driver.kick(TX_QUEUE);
    assert_ne!(
        driver.wait_status(|s| s & NEEDS_RESET != 0) & NEEDS_RESET,
        0
    );
    driver.start(QUEUE_SIZE);
    guest_send(&mut driver, b"nova-after-reset");
    assert!(host
        .recv_tagged(b"nova-after-reset", Duration::from_secs(5))
        .is_some());
}

#[test]
fn the_mac_the_guest_knows_survives_a_restore() {
    let Some(tap) = TestTap::create() else { return };
    let source = Net::new(NetConfig {
        tap: tap.name.clone(),
        mac: None,
    })
    .unwrap();
    let mac = source.mac();
    let state = source.state();
    let json = serde_json::to_string(&state).unwrap();
    drop(source);
    let state: DeviceState = serde_json::from_str(&json).unwrap();
    let other = [0x52, 0x54, 0x00, 1, 2, 3];
    let mut destination = Net::new(NetConfig {
        tap: tap.name.clone(),
        mac: Some(other),
    })
    .unwrap();
    destination.restore_state(&state).unwrap();
    assert_eq!(destination.mac(), mac);
    let mut config = [0u8; 6];
    destination.read_config(0, &mut config);
    assert_eq!(config, mac);
}

#[test]
fn pause_stops_rx_and_resume_delivers_what_waited() {
    let Some(tap) = TestTap::create() else { return };
    let mut driver = started(&tap);
    let host = HostSide::bind(&tap.name);
    let posted = post_rx(&mut driver, 4, 2048);
    driver.transport.pause();
    host.send(&frame(GUEST_MAC, b"nova-paused"));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        driver.used_idx(RX_QUEUE),
        0,
        "a paused device wrote guest memory"
    );
    let state = driver.transport.state().unwrap();
    assert_eq!(state.queues.len(), 2);
    driver.transport.resume().unwrap();
    guest_receive(&mut driver, &posted, b"nova-paused");
}
