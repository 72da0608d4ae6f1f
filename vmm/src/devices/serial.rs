//! The 8250 UART at 0x3f8 (COM1): the guest's console, written to stdout or a file.

use std::io::Write;

use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// Port of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;

/// Raises the serial IRQ through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where console bytes go, unbuffered like the wire it stands for: a byte the guest
/// wrote is out of the process at once, so it is neither late nor lost when the
/// process ends (after a migration the next byte comes from the destination).
pub struct ConsoleOut {
    out: Box<dyn Write + Send>,
    bytes: u64,
}

impl ConsoleOut {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out, bytes: 0 }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.out.write_all(buf)?;
        self.out.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// COM1 on the port I/O bus.
pub struct SerialDevice {
    serial: Serial<IrqTrigger, NoEvents, ConsoleOut>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self { serial: Serial::new(IrqTrigger(irq), ConsoleOut::new(out)) }
    }

    /// A UART restored from saved register state.
    pub fn from_state(
        state: &SerialState,
        irq: EventFd,
        out: Box<dyn Write + Send>,
    ) -> Result<Self, vm_superio::serial::Error<std::io::Error>> {
        let serial = Serial::from_state(state, IrqTrigger(irq), NoEvents, ConsoleOut::new(out))?;
        Ok(Self { serial })
    }

    /// Takes the registers of a saved UART, keeping this one's output.
    pub fn restore(&mut self, state: &SerialState) {
        let trigger = IrqTrigger(self.serial.interrupt_evt().0.try_clone().expect("dup of serial irqfd"));
        let out = std::mem::replace(self.serial.writer_mut(), ConsoleOut::new(Box::new(std::io::sink())));
        if let Ok(s) = Serial::from_state(state, trigger, NoEvents, out) {
            self.serial = s;
        }
    }

    /// Register state, for snapshots.
    pub fn state(&self) -> SerialState {
        self.serial.state()
    }

    /// Bytes the guest has written to the console.
    pub fn bytes_out(&self) -> u64 {
        self.serial.writer().bytes
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 && offset < 8 {
            data[0] = self.serial.read(offset as u8);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 && offset < 8 {
            // An unwritable console must not stop the guest; bytes are dropped.
            let _ = self.serial.write(offset as u8, data[0]);
        }
    }
}
