//! Register-level tests of the virtio-mmio transport: identity, negotiation, queue
//! setup refused cleanly, and no register access that can hurt the VMM.

use super::*;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::device::{INT_CONFIG, INT_VRING};
use crate::devices::virtio::persist::BlockConfig;
use crate::devices::virtio::test_driver::{
    TempFile, TestDriver, DRIVER_OK, FEATURES_OK, NEEDS_RESET, STATUS,
};

fn driver() -> (TempFile, TestDriver) {
    let file = TempFile::new("mmio", &vec![0u8; 1 << 20]);
    let config = BlockConfig {
        path: file.0.clone(),
        read_only: false,
        id: "mmio".into(),
    };
    let driver = TestDriver::new(Box::new(Block::new(config).unwrap()));
    (file, driver)
}

#[test]
fn the_device_identifies_as_virtio_mmio_version_2() {
    let (_file, mut d) = driver();
    assert_eq!(d.read_reg(0x000), 0x7472_6976);
    assert_eq!(d.read_reg(0x004), 2);
    assert_eq!(d.read_reg(0x008), 2, "block");
    assert_eq!(d.read_reg(0x00c), MMIO_VENDOR_ID);
    d.write_reg(0x30, 0);
    assert_eq!(d.read_reg(0x34), 256);
    assert_eq!(d.read_reg(0x0b0), u32::MAX, "no shared memory region");
}

#[test]
fn features_are_accepted_only_as_a_subset_with_version_1() {
    let (_file, mut d) = driver();
    let offered = d.device_features();
    assert_ne!(offered & VIRTIO_F_VERSION_1, 0);
    assert_eq!(
        d.negotiate(offered & !VIRTIO_F_VERSION_1) & FEATURES_OK,
        0,
        "legacy driver"
    );
    assert_eq!(
        d.negotiate(offered | 1 << 28) & FEATURES_OK,
        0,
        "indirect not offered"
    );
    assert_eq!(
        d.negotiate(offered | 1 << 63) & FEATURES_OK,
        0,
        "unknown bit"
    );
    assert_eq!(d.negotiate(VIRTIO_F_VERSION_1) & FEATURES_OK, FEATURES_OK);
    // Features are frozen after FEATURES_OK.
    d.write_reg(0x24, 0);
    d.write_reg(0x20, u32::MAX);
    assert_eq!(d.transport.driver_features, VIRTIO_F_VERSION_1);
}

#[test]
fn odd_sized_unaligned_and_out_of_range_accesses_are_ignored() {
    let (_file, mut d) = driver();
    let mut two = [0xaau8; 2];
    d.transport.read(0, &mut two);
    assert_eq!(two, [0, 0]);
    let mut four = [0xaau8; 4];
    d.transport.read(1, &mut four);
    assert_eq!(four, [0; 4]);
    let mut eight = [0xaau8; 8];
    d.transport.read(0x70, &mut eight);
    assert_eq!(eight, [0; 8]);
    d.transport.write(STATUS, &[1]);
    d.transport.write(STATUS + 1, &[1, 0, 0, 0]);
    d.transport.write(STATUS, &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(d.status(), 0);
    // Beyond the config space, and far beyond the window.
    d.transport.read(0x100 + 0x800, &mut four);
    assert_eq!(four, [0; 4]);
    d.transport.read(u64::MAX - 2, &mut four);
    d.transport.write(u64::MAX - 2, &four);
    d.transport.read(0x100, &mut []);
    d.transport.write(0x10, &[]);
    // Queue select out of range.
    d.negotiate(VIRTIO_F_VERSION_1);
    for sel in [1, 2, 0xffff, u32::MAX] {
        d.write_reg(0x30, sel);
        assert_eq!(d.read_reg(0x34), 0, "QueueNumMax of missing queue {sel}");
        assert_eq!(d.read_reg(0x44), 0);
        d.write_reg(0x38, 16);
        d.write_reg(0x44, 1);
        d.write_reg(0x80, 0x1000);
        d.write_reg(0x50, sel);
    }
}

/// Spoils the selected queue's setup.
type BreakQueue = fn(&mut TestDriver);

#[test]
fn invalid_queue_setups_set_needs_reset_and_a_config_interrupt() {
    let cases: [(&str, BreakQueue); 8] = [
        ("size not a power of two", |d| d.write_reg(0x38, 3)),
        ("size above the maximum", |d| d.write_reg(0x38, 512)),
        ("size zero", |d| d.write_reg(0x38, 0)),
        ("not ready", |d| d.write_reg(0x44, 0)),
        ("descriptor table outside memory", |d| {
            d.write_reg(0x80, 0);
            d.write_reg(0x84, 0x10);
        }),
        ("used ring straddling the end of RAM", |d| {
            d.write_reg(0xa0, (64 << 20) - 16)
        }),
        ("used ring misaligned", |d| d.write_reg(0xa0, 0x18002)),
        ("driver area in the MMIO hole", |d| {
            d.write_reg(0x90, 0xd000_0000)
        }),
    ];
    let (_file, mut d) = driver();
    for (name, break_queue) in cases {
        d.negotiate(VIRTIO_F_VERSION_1);
        d.setup_queue(0, 256);
        d.write_reg(0x30, 0);
        break_queue(&mut d);
        d.write_reg(STATUS, 1 | 2 | FEATURES_OK | DRIVER_OK);
        let status = d.status();
        assert_eq!(
            status & (NEEDS_RESET | DRIVER_OK),
            NEEDS_RESET,
            "{name}: {status:#x}"
        );
        assert_ne!(d.interrupt.status() & INT_CONFIG, 0, "{name}");
        assert!(!d.transport.device().is_activated(), "{name}");
        d.write_reg(STATUS, 0);
        assert_eq!(d.status(), 0, "{name}: reset clears NEEDS_RESET");
        assert_eq!(d.interrupt.status(), 0);
    }
    d.start(256);
}

#[test]
fn driver_ok_without_features_ok_is_refused() {
    let (_file, mut d) = driver();
    d.write_reg(STATUS, 1);
    d.write_reg(STATUS, 1 | 2);
    d.setup_queue(0, 256);
    d.write_reg(STATUS, 1 | 2 | DRIVER_OK);
    assert_eq!(d.status() & (NEEDS_RESET | DRIVER_OK), NEEDS_RESET);
    assert!(!d.transport.device().is_activated());
}

#[test]
fn status_bits_are_cleared_only_by_a_reset() {
    let (_file, mut d) = driver();
    d.start(256);
    d.write_reg(STATUS, 1);
    assert_eq!(d.status(), 1 | 2 | FEATURES_OK | DRIVER_OK);
    d.write_reg(STATUS, 0);
    assert_eq!(d.status(), 0);
    assert!(!d.transport.device().is_activated());
    // Queue registers are back to their defaults.
    d.write_reg(0x30, 0);
    assert_eq!(d.read_reg(0x44), 0);
}

#[test]
fn queue_notify_signals_the_queue_eventfd_and_ack_clears_interrupts() {
    let (_file, mut d) = driver();
    d.write_reg(0x50, 0);
    assert_eq!(d.queue_evts[0].read().unwrap(), 1);
    d.write_reg(0x50, 7);
    assert!(
        d.queue_evts[0].read().is_err(),
        "other queues do not signal queue 0"
    );
    d.interrupt.signal_used_queue();
    d.interrupt.signal_config_change();
    assert_eq!(d.read_reg(0x60), INT_VRING | INT_CONFIG);
    d.write_reg(0x64, INT_VRING);
    assert_eq!(d.read_reg(0x60), INT_CONFIG);
}

#[test]
fn a_never_activated_transport_saves_and_restores_its_registers() {
    let (file, mut d) = driver();
    d.negotiate(VIRTIO_F_VERSION_1);
    d.setup_queue(0, 64);
    let state = d.transport.state().unwrap();
    assert!(!state.activated);
    assert_eq!(state.queues[0].size, 64);
    let config = BlockConfig {
        path: file.0.clone(),
        read_only: false,
        id: "mmio".into(),
    };
    let device = Box::new(Block::new(config).unwrap());
    let evts = vec![EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap()];
    let interrupt = d.interrupt.clone();
    let mut restored =
        MmioTransport::restore(&state, device, d.mem.clone(), interrupt, evts).unwrap();
    assert_eq!(restored.state().unwrap(), state);
    // The driver carries on where it was.
    restored.write(STATUS, &(1u32 | 2 | FEATURES_OK | DRIVER_OK).to_le_bytes());
    assert!(restored.device().is_activated());
}

/// No sequence of register accesses may panic the VMM.
#[test]
fn random_register_traffic_never_panics() {
    let (_file, mut d) = driver();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200_000 {
        let r = next();
        let offset = (r & 0x1ff) & if r & 0x200 != 0 { !3 } else { !0 };
        let len = [1usize, 2, 4, 8][(r >> 10) as usize & 3];
        let small = (next() % 3) as u32;
        let value = if r & (1 << 20) != 0 {
            small
        } else {
            next() as u32
        };
        let mut buf = [0u8; 8];
        if r & (1 << 12) != 0 {
            d.transport.read(offset, &mut buf[..len]);
        } else {
            buf[..4].copy_from_slice(&value.to_le_bytes());
            d.transport.write(offset, &buf[..len]);
        }
    }
    d.start(256);
}

#[test]
fn a_transport_can_live_behind_the_bus_mutex() {
    fn is_send<T: Send + 'static>() {}
    is_send::<MmioTransport>();
    let _: std::sync::Arc<std::sync::Mutex<dyn BusDevice>> =
        std::sync::Arc::new(std::sync::Mutex::new(driver().1.transport));
}
