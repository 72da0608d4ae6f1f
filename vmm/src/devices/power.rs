//! Guest poweroff: the ACPI hardware-reduced sleep control register, at the address
//! QEMU's microvm uses (0xfea00200), so one guest powers off on both VMMs.

use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// MMIO address of the sleep control register.
pub const SLEEP_CONTROL_ADDR: u64 = 0xfea0_0200;
/// SLP_EN (bit 5) with SLP_TYP 5 (S5, soft off) in bits 2..4: 0x34.
const S5_SLEEP: u8 = 0x34;

/// Signals `poweroff` when the guest enters S5.
pub struct SleepControl {
    poweroff: EventFd,
}

impl SleepControl {
    pub fn new(poweroff: EventFd) -> Self {
        Self { poweroff }
    }
}

impl BusDevice for SleepControl {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first().is_some_and(|v| v & 0x3c == S5_SLEEP & 0x3c) {
            let _ = self.poweroff.write(1);
        }
    }
}
