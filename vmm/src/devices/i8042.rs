//! The i8042 controller's one job here: the guest writes 0xFE to port 0x64 to reset.

use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// Base port (0x60..=0x64 covered).
pub const I8042_PORT: u64 = 0x60;
const CMD_OFFSET: u64 = 4;
const CMD_RESET: u8 = 0xfe;

/// Signals `reset` when the guest pulses the CPU reset line.
pub struct I8042 {
    reset: EventFd,
}

impl I8042 {
    pub fn new(reset: EventFd) -> Self {
        Self { reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Status register: output buffer empty, input buffer empty; data port reads 0.
        data.fill(0);
        let _ = offset;
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == CMD_OFFSET && data.first() == Some(&CMD_RESET) {
            let _ = self.reset.write(1);
        }
    }
}
