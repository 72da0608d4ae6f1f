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
/// wrote is out of the process by the end of the port write that carried it, so it is
/// neither late nor lost when the process ends (after a migration the next byte comes
/// from the destination). A string write (`rep outsb`) leaves in one `write(2)`.
pub struct ConsoleOut {
    out: Box<dyn Write + Send>,
    bytes: u64,
    /// Bytes of the port write in progress, out at its end ([`ConsoleOut::emit`]).
    pending: Vec<u8>,
}

impl ConsoleOut {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            bytes: 0,
            pending: Vec::new(),
        }
    }

    /// Writes out what the port write just ended put through the UART.
    fn emit(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self
            .out
            .write_all(&self.pending)
            .and_then(|_| self.out.flush());
        self.pending.clear();
        r
    }
}

/// The UART model flushes after every byte; the device emits once per port write.
impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// COM1 on the port I/O bus.
pub struct SerialDevice {
    serial: Serial<IrqTrigger, NoEvents, ConsoleOut>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self {
            serial: Serial::new(IrqTrigger(irq), ConsoleOut::new(out)),
        }
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
    pub fn restore(&mut self, state: &SerialState) -> std::io::Result<()> {
        let trigger = IrqTrigger(self.serial.interrupt_evt().0.try_clone()?);
        let out = std::mem::replace(
            self.serial.writer_mut(),
            ConsoleOut::new(Box::new(std::io::sink())),
        );
        self.serial = Serial::from_state(state, trigger, NoEvents, out).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("saved serial state: {e:?}"),
            )
        })?;
        Ok(())
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
        // An unwritable console must not stop the guest; bytes are dropped.
        if data.len() == 1 && offset < 8 {
            let _ = self.serial.write(offset as u8, data[0]);
        } else if offset == 0 && data.len() <= 4096 {
            // `rep outsb` to the data register: bytes in order, out in one write.
            for &b in data {
                let _ = self.serial.write(0, b);
            }
        }
        let _ = self.serial.writer_mut().emit();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records each `write(2)`-sized chunk the console emits.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart() -> (SerialDevice, Writes) {
        let w = Writes::default();
        (
            SerialDevice::new(
                EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                Box::new(w.clone()),
            ),
            w,
        )
    }

    #[test]
    fn each_byte_written_to_the_data_port_leaves_at_once() {
        let (mut dev, w) = uart();
        for b in b"ok\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(
            *w.0.lock().unwrap(),
            vec![b"o".to_vec(), b"k".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(dev.bytes_out(), 3);
    }

    #[test]
    fn a_string_write_leaves_whole_and_in_order() {
        let (mut dev, w) = uart();
        dev.write(0, b"NOVA-BOOTED\n");
        dev.write(0, b"x");
        assert_eq!(
            *w.0.lock().unwrap(),
            vec![b"NOVA-BOOTED\n".to_vec(), b"x".to_vec()]
        );
        assert_eq!(dev.bytes_out(), 13);
    }
}
