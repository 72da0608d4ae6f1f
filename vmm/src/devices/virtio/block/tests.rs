//! virtio-blk through a real transport, io_uring backend and guest memory: the good
//! requests, and everything a hostile guest can put in the queue.

use std::time::Duration;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_RO, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Block, QUEUE_SIZE};
use crate::devices::virtio::device::{Interrupt, VIRTIO_RING_F_EVENT_IDX};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::persist::BlockConfig;
use crate::devices::virtio::test_driver::{TempFile, TestDriver, NEEDS_RESET};
use crate::devices::BusDevice;
use nova_vmm_api::DeviceCounters;

const HEADER: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS_BYTE: u64 = 0x30_0000;
const DISK_SECTORS: u64 = 2048;

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

fn disk(tag: &str) -> TempFile {
    // A recognisable pattern: byte i of the disk is i % 251.
    let bytes: Vec<u8> = (0..DISK_SECTORS * 512).map(|i| (i % 251) as u8).collect();
    TempFile::new(tag, &bytes)
}

fn block(file: &TempFile, read_only: bool) -> Box<Block> {
    let config = BlockConfig {
        path: file.0.clone(),
        read_only,
        id: "nova-disk-7".into(),
    };
    Box::new(Block::new(config).unwrap())
}

fn started(file: &TempFile, read_only: bool) -> TestDriver {
    let mut driver = TestDriver::new(block(file, read_only));
    driver.start(QUEUE_SIZE);
    driver
}

fn write_header(driver: &TestDriver, request_type: u32, sector: u64) {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&request_type.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    driver
        .mem
        .write_slice(&header, GuestAddress(HEADER))
        .unwrap();
    // A status the device must overwrite.
    driver
        .mem
        .write_obj(0xffu8, GuestAddress(STATUS_BYTE))
        .unwrap();
}

/// Sends header + `data` (device-writable for reads) + status; returns (used len, status).
fn request(
    driver: &mut TestDriver,
    request_type: u32,
    sector: u64,
    data: &[(u64, u32)],
) -> (u32, u8) {
    write_header(driver, request_type, sector);
    let device_writes = request_type != VIRTIO_BLK_T_OUT;
    let mut chain = vec![(HEADER, 16, false)];
    chain.extend(data.iter().map(|&(addr, len)| (addr, len, device_writes)));
    chain.push((STATUS_BYTE, 1, true));
    let head = driver.add_chain(0, &chain);
    driver.kick(0);
    let (id, len) = driver.wait_used(0);
    assert_eq!(id, u32::from(head));
    (len, driver.byte(STATUS_BYTE))
}

fn assert_serves_a_good_request(driver: &mut TestDriver) {
    let (len, status) = request(driver, VIRTIO_BLK_T_IN, 1, &[(DATA, 512)]);
    assert_eq!(
        (len, status),
        (513, VIRTIO_BLK_S_OK as u8),
        "device stopped serving"
    );
    assert_eq!(driver.byte(DATA), (512 % 251) as u8);
}

fn counters(driver: &TestDriver) -> nova_vmm_api::BlockCounters {
    match driver.transport.device().counters() {
        DeviceCounters::Block(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_disk_is_refused_naming_its_path() {
    let config = BlockConfig {
        path: "/nonexistent/nova/disk.img".into(),
        read_only: false,
        id: "x".into(),
    };
    let err = Block::new(config).err().unwrap().to_string();
    assert!(
        err.starts_with("disk /nonexistent/nova/disk.img: No such file or directory"),
        "{err}"
    );
}

#[test]
fn a_disk_that_is_not_whole_sectors_is_refused_naming_its_path() {
    let file = TempFile::new("odd", &[0u8; 1000]);
    let config = BlockConfig {
        path: file.0.clone(),
        read_only: false,
        id: String::new(),
    };
    let err = Block::new(config).err().unwrap().to_string();
    assert!(
        err.contains(&file.0.display().to_string()) && err.contains("1000"),
        "{err}"
    );
    let config = BlockConfig {
        path: file.0.clone(),
        read_only: false,
        id: "x".repeat(21),
    };
    assert!(Block::new(config).is_err());
}

#[test]
fn capacity_and_features_are_what_the_guest_reads() {
    let file = disk("config");
    let mut driver = TestDriver::new(block(&file, false));
    let mut capacity = [0u8; 8];
    driver.transport.read(0x100, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), DISK_SECTORS);
    let features = driver.device_features();
    assert_ne!(features & (1 << 32), 0, "VERSION_1");
    assert_ne!(features & (1 << 9), 0, "FLUSH");
    assert_eq!(features & (1 << VIRTIO_BLK_F_RO), 0);
    let ro = TestDriver::new(block(&file, true)).device_features();
    assert_ne!(ro & (1 << VIRTIO_BLK_F_RO), 0);
}

#[test]
fn a_write_then_a_read_round_trip_through_io_uring() {
    let file = disk("roundtrip");
    let mut driver = started(&file, false);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    // Split over two buffers to exercise scatter-gather.
    driver
        .mem
        .write_slice(&pattern[..1024], GuestAddress(DATA))
        .unwrap();
    driver
        .mem
        .write_slice(&pattern[1024..], GuestAddress(DATA + 0x10000))
        .unwrap();
    let (len, status) = request(
        &mut driver,
        VIRTIO_BLK_T_OUT,
        8,
        &[(DATA, 1024), (DATA + 0x10000, 3072)],
    );
    assert_eq!((len, status), (1, VIRTIO_BLK_S_OK as u8));
    let on_disk = file.contents();
    assert_eq!(&on_disk[8 * 512..8 * 512 + 4096], &pattern[..]);
    assert_eq!(
        on_disk[8 * 512 - 1],
        ((8 * 512 - 1) % 251) as u8,
        "neighbours untouched"
    );

    let read_at = DATA + 0x80000;
    let (len, status) = request(&mut driver, VIRTIO_BLK_T_IN, 8, &[(read_at, 4096)]);
    assert_eq!((len, status), (4097, VIRTIO_BLK_S_OK as u8));
    let mut back = vec![0u8; 4096];
    driver
        .mem
        .read_slice(&mut back, GuestAddress(read_at))
        .unwrap();
    assert_eq!(back, pattern);
    assert!(driver.irq.read().is_ok(), "the guest was interrupted");

    let (_, status) = request(&mut driver, VIRTIO_BLK_T_FLUSH, 0, &[]);
    assert_eq!(status, VIRTIO_BLK_S_OK as u8);
    let c = counters(&driver);
    assert_eq!(
        (
            c.write_requests,
            c.write_bytes,
            c.read_requests,
            c.read_bytes
        ),
        (1, 4096, 1, 4096)
    );
    assert_eq!(c.flush_requests, 1);
}

#[test]
fn get_id_returns_the_configured_serial() {
    let file = disk("getid");
    let mut driver = started(&file, false);
    let (len, status) = request(&mut driver, VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 20)]);
    assert_eq!((len, status), (21, VIRTIO_BLK_S_OK as u8));
    let mut id = [0u8; 20];
    driver.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..11], b"nova-disk-7");
    assert_eq!(id[11..], [0u8; 9]);
    // A shorter buffer gets what fits.
    let (len, _) = request(&mut driver, VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 4)]);
    assert_eq!(len, 5);
}

#[test]
fn a_read_only_disk_refuses_writes_and_its_file_is_untouched() {
    let file = disk("ro");
    let before = file.contents();
    let mut driver = started(&file, true);
    driver
        .mem
        .write_slice(&[0xaa; 512], GuestAddress(DATA))
        .unwrap();
    let (len, status) = request(&mut driver, VIRTIO_BLK_T_OUT, 0, &[(DATA, 512)]);
    assert_eq!((len, status), (1, VIRTIO_BLK_S_IOERR as u8));
    assert_eq!(file.contents(), before);
    assert_serves_a_good_request(&mut driver);
}

#[test]
fn unknown_request_types_are_answered_unsupported() {
    let file = disk("unsupp");
    let mut driver = started(&file, false);
    for request_type in [2, 11, 13, 0xdead_beef] {
        let (_, status) = request(&mut driver, request_type, 0, &[(DATA, 512)]);
        assert_eq!(status, VIRTIO_BLK_S_UNSUPP as u8, "type {request_type}");
    }
    assert_serves_a_good_request(&mut driver);
}

#[test]
fn requests_beyond_the_disk_fail_and_leave_the_file_untouched() {
    let file = disk("bounds");
    let before = file.contents();
    let mut driver = started(&file, false);
    driver
        .mem
        .write_slice(&[0x55; 1024], GuestAddress(DATA))
        .unwrap();
    for sector in [
        DISK_SECTORS - 1,
        DISK_SECTORS,
        u64::MAX,
        u64::MAX / 512,
        1 << 55,
    ] {
        let (_, status) = request(&mut driver, VIRTIO_BLK_T_OUT, sector, &[(DATA, 1024)]);
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8, "write at sector {sector}");
        let (_, status) = request(&mut driver, VIRTIO_BLK_T_IN, sector, &[(DATA, 1024)]);
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8, "read at sector {sector}");
    }
    // Not a whole number of sectors.
    let (_, status) = request(&mut driver, VIRTIO_BLK_T_OUT, 0, &[(DATA, 100)]);
    assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(file.contents(), before);
    // The last sector itself is fine.
    let (_, status) = request(
        &mut driver,
        VIRTIO_BLK_T_IN,
        DISK_SECTORS - 1,
        &[(DATA, 512)],
    );
    assert_eq!(status, VIRTIO_BLK_S_OK as u8);
}

/// A malformed chain laid out by hand in descriptors 0.., and what must come back.
struct Hostile {
    name: &'static str,
    /// (addr, len, flags, next) per descriptor, head is 0.
    descriptors: Vec<(u64, u32, u16, u16)>,
    request_type: u32,
    /// Expected used length and, if the status byte can be found, the status.
    used_len: u32,
    status: Option<u8>,
}

fn hostile_chains() -> Vec<Hostile> {
    const IOERR: Option<u8> = Some(VIRTIO_BLK_S_IOERR as u8);
    let header = (HEADER, 16, NEXT, 1);
    let status = (STATUS_BYTE, 1, WRITE, 0);
    let end_of_ram = (64 << 20) - 256;
    vec![
        Hostile {
            name: "data buffer outside guest memory",
            descriptors: vec![header, (0xffff_0000_0000, 512, WRITE | NEXT, 2), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "data buffer in the MMIO hole above RAM",
            descriptors: vec![header, (0xd000_0000, 512, WRITE | NEXT, 2), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "data buffer straddling the end of RAM",
            descriptors: vec![header, (end_of_ram, 512, WRITE | NEXT, 2), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "address + length wrapping around u64",
            descriptors: vec![header, (u64::MAX - 100, 512, WRITE | NEXT, 2), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "lengths summing past u32",
            descriptors: vec![header, (DATA, u32::MAX - 8, WRITE | NEXT, 2), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "indirect descriptor not negotiated",
            descriptors: vec![
                header,
                (DATA, 64, VRING_DESC_F_INDIRECT as u16 | NEXT, 2),
                status,
            ],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "device-readable buffer after a device-writable one",
            descriptors: vec![
                header,
                (DATA, 512, WRITE | NEXT, 2),
                (DATA, 512, NEXT, 3),
                status,
            ],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "header shorter than 16 bytes",
            descriptors: vec![(HEADER, 8, NEXT, 1), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "header in a device-writable buffer",
            descriptors: vec![(HEADER, 16, WRITE | NEXT, 1), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "read request carrying device-readable data",
            descriptors: vec![header, (DATA, 512, NEXT, 2), status],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "write request with device-writable data",
            descriptors: vec![header, (DATA, 512, WRITE | NEXT, 2), status],
            request_type: VIRTIO_BLK_T_OUT,
            used_len: 1,
            status: IOERR,
        },
        Hostile {
            name: "status descriptor device-readable",
            descriptors: vec![header, (DATA, 512, WRITE | NEXT, 2), (STATUS_BYTE, 1, 0, 0)],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 0,
            status: None,
        },
        Hostile {
            name: "status descriptor of length 0",
            descriptors: vec![header, (STATUS_BYTE, 0, WRITE, 0)],
            request_type: VIRTIO_BLK_T_FLUSH,
            used_len: 0,
            status: None,
        },
        Hostile {
            name: "no status descriptor at all",
            descriptors: vec![(HEADER, 16, 0, 0)],
            request_type: VIRTIO_BLK_T_FLUSH,
            used_len: 0,
            status: None,
        },
        Hostile {
            name: "status byte outside guest memory",
            descriptors: vec![header, (0x1_0000_0000_0000, 1, WRITE, 0)],
            request_type: VIRTIO_BLK_T_FLUSH,
            used_len: 0,
            status: None,
        },
        Hostile {
            name: "chain looping back to its head",
            descriptors: vec![
                header,
                (DATA, 512, WRITE | NEXT, 2),
                (STATUS_BYTE, 1, WRITE | NEXT, 0),
            ],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 0,
            status: None,
        },
        Hostile {
            name: "descriptor pointing at itself",
            descriptors: vec![(HEADER, 16, NEXT, 0)],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 0,
            status: None,
        },
        Hostile {
            name: "next index beyond the queue size",
            descriptors: vec![(HEADER, 16, NEXT, 40000)],
            request_type: VIRTIO_BLK_T_IN,
            used_len: 0,
            status: None,
        },
    ]
}

#[test]
fn hostile_chains_are_answered_and_the_device_keeps_serving() {
    let file = disk("hostile");
    let before = file.contents();
    let mut driver = started(&file, false);
    for case in hostile_chains() {
        write_header(&driver, case.request_type, 0);
        for (i, &(addr, len, flags, next)) in case.descriptors.iter().enumerate() {
            driver.write_desc(0, i as u16, addr, len, flags, next);
        }
        driver.push_avail(0, 0);
        driver.kick(0);
        let (id, len) = driver
            .try_wait_used(0, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{}: no completion", case.name));
        assert_eq!((id, len), (0, case.used_len), "{}", case.name);
        let status = driver.byte(STATUS_BYTE);
        match case.status {
            Some(expected) => assert_eq!(status, expected, "{}", case.name),
            None => assert_eq!(status, 0xff, "{}: status written", case.name),
        }
        assert_eq!(driver.status() & NEEDS_RESET, 0, "{}", case.name);
        // Descriptors 0.. are reused by the next request; the driver's own allocator
        // starts after them.
        assert_serves_a_good_request(&mut driver);
    }
    assert_eq!(file.contents(), before, "a hostile chain reached the disk");
    assert!(counters(&driver).bad_chains >= 8);
}

#[test]
fn an_avail_index_jumping_past_the_queue_needs_a_reset_which_recovers() {
    let file = disk("availjump");
    let mut driver = started(&file, false);
    assert_serves_a_good_request(&mut driver);
    driver.set_avail_idx(0, 1 + QUEUE_SIZE + 5);
    driver.kick(0);
    let status = driver.wait_status(|s| s & NEEDS_RESET != 0);
    assert_ne!(status & NEEDS_RESET, 0);
    assert_ne!(
        driver.interrupt.status() & crate::devices::virtio::device::INT_CONFIG,
        0
    );
    assert_eq!(
        driver.used_idx(0),
        1,
        "nothing consumed from a corrupt ring"
    );
    // Kicks are ignored until the reset.
    driver.kick(0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(driver.used_idx(0), 1);
    driver.start(QUEUE_SIZE);
    assert_eq!(driver.status() & NEEDS_RESET, 0);
    assert_serves_a_good_request(&mut driver);
}

#[test]
fn a_head_index_beyond_the_queue_needs_a_reset() {
    let file = disk("badhead");
    let mut driver = TestDriver::new(block(&file, false));
    driver.start(16);
    driver.push_avail(0, 17);
    driver.kick(0);
    let status = driver.wait_status(|s| s & NEEDS_RESET != 0);
    assert_ne!(status & NEEDS_RESET, 0);
    driver.start(16);
    assert_serves_a_good_request(&mut driver);
}

#[test]
fn the_same_chain_offered_a_queue_full_of_times_is_served_each_time() {
    let file = disk("samehead");
    let mut driver = TestDriver::new(block(&file, false));
    driver.start(16);
    write_header(&driver, VIRTIO_BLK_T_IN, 0);
    driver.write_desc(0, 0, HEADER, 16, NEXT, 1);
    driver.write_desc(0, 1, DATA, 4096, WRITE | NEXT, 2);
    driver.write_desc(0, 2, STATUS_BYTE, 1, WRITE, 0);
    for _ in 0..16 {
        driver.push_avail(0, 0);
    }
    driver.kick(0);
    for _ in 0..16 {
        assert_eq!(driver.wait_used(0), (0, 4097));
    }
    assert_serves_a_good_request(&mut driver);
}

#[test]
fn a_small_queue_with_event_idx_works() {
    let file = disk("eventidx");
    let mut driver = TestDriver::new(block(&file, false));
    let features = driver.device_features();
    assert_ne!(features & VIRTIO_RING_F_EVENT_IDX, 0);
    driver.start_with(features, 8);
    for _ in 0..20 {
        assert_serves_a_good_request(&mut driver);
    }
}

#[test]
fn pages_written_only_by_the_device_are_in_the_dirty_bitmap() {
    let file = disk("dirty");
    let mut driver = started(&file, false);
    write_header(&driver, VIRTIO_BLK_T_IN, 0);
    driver.clear_dirty();
    let target = DATA + 0x5000;
    assert!(!driver.is_dirty(target));
    let head = driver.add_chain(
        0,
        &[
            (HEADER, 16, false),
            (target, 8192, true),
            (STATUS_BYTE, 1, true),
        ],
    );
    driver.clear_dirty();
    driver.kick(0);
    assert_eq!(driver.wait_used(0), (u32::from(head), 8193));
    // io_uring wrote these pages behind vm-memory's back.
    assert!(driver.is_dirty(target));
    assert!(driver.is_dirty(target + 4096));
    assert!(!driver.is_dirty(target + 8192));
    // And vm-memory's own writes: status byte and used ring.
    assert!(driver.is_dirty(STATUS_BYTE));
    assert!(driver.is_dirty(driver.queues[0].used));
}

#[test]
fn a_paused_device_is_saved_and_restored_onto_a_new_transport() {
    let file = disk("snapshot");
    let mut driver = started(&file, false);
    assert_serves_a_good_request(&mut driver);
    assert!(
        driver.transport.state().is_err(),
        "a running device cannot be saved"
    );
    driver.transport.pause();
    // A request offered while paused is not served...
    write_header(&driver, VIRTIO_BLK_T_GET_ID, 0);
    let head = driver.add_chain(
        0,
        &[
            (HEADER, 16, false),
            (DATA, 20, true),
            (STATUS_BYTE, 1, true),
        ],
    );
    driver.kick(0);
    assert_eq!(driver.try_wait_used(0, Duration::from_millis(50)), None);
    let state = driver.transport.state().unwrap();
    let json = serde_json::to_value(&state).unwrap();
    let state: crate::devices::virtio::TransportState = serde_json::from_value(json).unwrap();
    assert!(state.activated);
    assert_eq!(state.queues[0].next_avail, 1);
    assert_eq!(state.queues[0].next_used, 1);

    // ...until the destination resumes, with the same memory and a fresh device.
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let interrupt = std::sync::Arc::new(Interrupt::new(irq));
    let evts = vec![EventFd::new(EFD_NONBLOCK).unwrap()];
    let restored = MmioTransport::restore(
        &state,
        block(&file, false),
        driver.mem.clone(),
        interrupt,
        evts,
    )
    .unwrap();
    // The source goes away, as it does at the end of a migration.
    drop(std::mem::replace(&mut driver.transport, restored));
    assert_eq!(
        driver.try_wait_used(0, Duration::from_millis(50)),
        None,
        "restored paused"
    );
    driver.transport.resume().unwrap();
    assert_eq!(driver.wait_used(0), (u32::from(head), 21));
    assert_eq!(driver.status() & 0x4, 0x4);
    assert_serves_a_good_request(&mut driver);

    // A disk of another size is not the guest's disk.
    let other = TempFile::new("snapshot-other", &[0u8; 4096]);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let interrupt = std::sync::Arc::new(Interrupt::new(irq));
    let evts = vec![EventFd::new(EFD_NONBLOCK).unwrap()];
    let err = MmioTransport::restore(
        &state,
        block(&other, false),
        driver.mem.clone(),
        interrupt,
        evts,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("sectors"), "{err}");
}

#[test]
fn reset_during_io_drains_and_the_device_starts_again() {
    let file = disk("reset");
    let mut driver = started(&file, false);
    for i in 0..32u64 {
        driver.add_chain(
            0,
            &[
                (HEADER, 16, false),
                (DATA + i * 0x1000, 4096, true),
                (STATUS_BYTE, 1, true),
            ],
        );
    }
    write_header(&driver, VIRTIO_BLK_T_IN, 0);
    driver.kick(0);
    driver.write_reg(0x70, 0);
    assert_eq!(driver.status(), 0);
    assert!(!driver.transport.device().is_activated());
    driver.start(QUEUE_SIZE);
    assert_serves_a_good_request(&mut driver);
}

#[test]
fn pause_completes_every_request_it_took() {
    let file = disk("pausedrain");
    let mut driver = started(&file, false);
    write_header(&driver, VIRTIO_BLK_T_IN, 0);
    // 80 chains of 3: the 256-entry descriptor table holds them all.
    for i in 0..80u64 {
        let data = DATA + i * 0x2000;
        driver.add_chain(
            0,
            &[
                (HEADER, 16, false),
                (data, 8192, true),
                (STATUS_BYTE, 1, true),
            ],
        );
    }
    driver.kick(0);
    std::thread::sleep(Duration::from_millis(1));
    driver.transport.pause();
    let state = driver.transport.state().unwrap();
    let queue = state.queues[0];
    assert_eq!(
        queue.next_used, queue.next_avail,
        "a request taken but not completed"
    );
    assert_eq!(driver.used_idx(0), queue.next_used, "used ring published");
    // Nothing moves while paused, everything after resume.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(driver.used_idx(0), queue.next_used);
    driver.transport.resume().unwrap();
    for _ in 0..80 {
        assert_eq!(driver.wait_used(0).1, 8193);
    }
}

#[test]
fn a_backend_failure_is_reported_as_an_io_error() {
    let file = disk("shrunk");
    let mut driver = started(&file, false);
    // The file shrinks under the device: reads past the new end come back short.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file.0)
        .unwrap()
        .set_len(512 * 1024)
        .unwrap();
    let (_, status) = request(&mut driver, VIRTIO_BLK_T_IN, 1500, &[(DATA, 4096)]);
    assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(counters(&driver).failed_requests, 1);
    assert_serves_a_good_request(&mut driver);
}
