//! Guest power: the ACPI hardware-reduced sleep control and status registers, at the
//! address QEMU's microvm uses (0xfea00200), so one guest powers off on both VMMs;
//! and the generic event device (GED, `ACPI0013`) whose event register and interrupt
//! carry a power-button press to the guest (the DSDT's `_EVT` notifies `PNP0C0C`).

use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// MMIO address of the sleep control register; the sleep status register follows.
pub const SLEEP_CONTROL_ADDR: u64 = 0xfea0_0200;
/// The sleep control and status registers, one byte each.
pub const SLEEP_REGS_LEN: u64 = 2;
/// SLP_EN (bit 5) with SLP_TYP 5 (S5, soft off) in bits 2..4: 0x34.
const S5_SLEEP: u8 = 0x34;
/// MMIO address of the GED's event register (32 bits), as on QEMU's microvm.
pub const GED_ADDR: u64 = 0xfea0_0000;
pub const GED_LEN: u64 = 4;
/// The GED's GSI: the IOAPIC's last pin, above the serial port's and the virtio
/// devices' (5..=20).
pub const GED_GSI: u32 = 23;
/// The GED event bit for a power-button press (QEMU's numbering).
pub const GED_POWER_BUTTON: u32 = 1 << 1;

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
        // Sleep status: WAK_STS never set (the guest does not wake from S5 here).
        data.fill(0);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first().is_some_and(|v| v & 0x3c == S5_SLEEP & 0x3c) {
            let _ = self.poweroff.write(1);
        }
    }
}

/// The generic event device: events the VMM raised and the guest has not read yet.
pub struct Ged {
    pending: u32,
    irq: EventFd,
    presses: u64,
}

impl Ged {
    pub fn new(irq: EventFd) -> Self {
        Self {
            pending: 0,
            irq,
            presses: 0,
        }
    }

    /// Presses the power button: sets its event bit and raises the interrupt.
    pub fn press_power_button(&mut self) -> std::io::Result<()> {
        self.pending |= GED_POWER_BUTTON;
        self.presses += 1;
        self.irq.write(1)
    }

    /// How many times the power button was pressed.
    pub fn presses(&self) -> u64 {
        self.presses
    }
}

impl BusDevice for Ged {
    /// Reading the event register returns the pending events and clears them.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            let events = self.pending.to_le_bytes();
            let n = data.len().min(4);
            data[..n].copy_from_slice(&events[..n]);
            self.pending = 0;
        }
    }
    /// The register is read-only; writes are ignored.
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_raises_the_interrupt_and_the_read_clears_the_event() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut ged = Ged::new(irq.try_clone().unwrap());
        let mut word = [0u8; 4];
        ged.read(0, &mut word);
        assert_eq!(u32::from_le_bytes(word), 0, "nothing pending");
        ged.press_power_button().unwrap();
        assert_eq!(irq.read().unwrap(), 1, "the interrupt was raised");
        ged.write(0, &[0xff; 4]);
        ged.read(0, &mut word);
        assert_eq!(u32::from_le_bytes(word), GED_POWER_BUTTON);
        ged.read(0, &mut word);
        assert_eq!(u32::from_le_bytes(word), 0, "the read cleared it");
        assert_eq!(ged.presses(), 1);
    }

    #[test]
    fn only_an_s5_write_to_sleep_control_powers_off() {
        let off = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut sc = SleepControl::new(off.try_clone().unwrap());
        sc.write(0, &[0x20]); // SLP_EN with S0
        sc.write(1, &[S5_SLEEP]); // the status register
        assert!(off.read().is_err(), "no poweroff yet");
        sc.write(0, &[S5_SLEEP]);
        assert_eq!(off.read().unwrap(), 1);
    }
}
