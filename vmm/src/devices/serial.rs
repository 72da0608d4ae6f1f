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

/// Where console bytes go, a line at a time. Each `write(2)` wakes whoever reads the
/// console, and a guest writes a byte per port access: a 15-byte line cost 15 writes
/// and 15 wake-ups of the reader, which took the vCPU's CPU each time. The bytes of a
/// line are held until the guest ends it or stops writing: at a newline, at any other
/// access to the UART (a driver reads LSR or IIR between FIFO loads and after its last
/// byte), at [`PENDING_MAX`] bytes, when the VM pauses or stops, and at the latest
/// after [`SerialDevice::flush`]'s period.
pub struct ConsoleOut {
    out: Box<dyn Write + Send>,
    bytes: u64,
    /// Bytes the guest wrote that have not left yet ([`ConsoleOut::emit`]).
    pending: Vec<u8>,
}

/// Bytes held before they leave regardless.
const PENDING_MAX: usize = 256;

impl ConsoleOut {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            bytes: 0,
            pending: Vec::new(),
        }
    }

    /// Writes out every byte held.
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

    /// Whether the bytes held end a line or are too many to hold.
    fn due(&self) -> bool {
        self.pending.len() >= PENDING_MAX || self.pending.last() == Some(&b'\n')
    }
}

/// The UART model flushes after every byte; the device decides when bytes leave.
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

    /// Puts console input in the receive FIFO (raising the interrupt if the guest
    /// enabled it); returns how many bytes fit.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        let room = self.serial.fifo_capacity();
        let take = bytes.len().min(room);
        if take == 0 {
            return 0;
        }
        self.serial.enqueue_raw_bytes(&bytes[..take]).unwrap_or(0)
    }

    /// Bytes the guest has written to the console.
    pub fn bytes_out(&self) -> u64 {
        self.serial.writer().bytes
    }

    /// Writes out the bytes of a line the guest has not ended yet: the VM pauses or
    /// stops, or [`FLUSH_PERIOD`] passed (the guest went quiet in mid-line).
    pub fn flush(&mut self) {
        let _ = self.serial.writer_mut().emit();
    }
}

/// The longest the bytes of an unended line wait for the guest to end it.
pub const FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_millis(20);

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The guest polls or reads between writes: what it wrote so far leaves.
        self.flush();
        if data.len() == 1 && offset < 8 {
            data[0] = self.serial.read(offset as u8);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        // An unwritable console must not stop the guest; bytes are dropped.
        if data.len() == 1 && offset < 8 {
            let _ = self.serial.write(offset as u8, data[0]);
        } else if offset == 0 && data.len() <= 4096 {
            // `rep outsb` to the data register: bytes in order.
            for &b in data {
                let _ = self.serial.write(0, b);
            }
        }
        let out = self.serial.writer_mut();
        if offset != 0 || out.due() || data.contains(&b'\n') {
            let _ = out.emit();
        }
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
    fn a_line_leaves_whole_at_its_newline() {
        let (mut dev, w) = uart();
        for b in b"ok\n" {
            dev.write(0, &[*b]);
        }
        dev.write(0, b"NOVA-BOOTED\n");
        assert_eq!(
            *w.0.lock().unwrap(),
            vec![b"ok\n".to_vec(), b"NOVA-BOOTED\n".to_vec()]
        );
        assert_eq!(dev.bytes_out(), 15);
    }

    #[test]
    fn an_unended_line_leaves_when_the_guest_touches_the_uart_or_goes_quiet() {
        let (mut dev, w) = uart();
        // A prompt, then the driver reads LSR: the prompt leaves.
        dev.write(0, b"login: ");
        assert!(w.0.lock().unwrap().is_empty());
        dev.read(5, &mut [0]);
        assert_eq!(*w.0.lock().unwrap(), vec![b"login: ".to_vec()]);
        // Bytes, then a write to another register (IER): they leave.
        dev.write(0, b"a");
        dev.write(1, &[0]);
        // Bytes, then nothing: the periodic (or pause) flush sends them.
        dev.write(0, b"b");
        dev.flush();
        assert_eq!(
            *w.0.lock().unwrap(),
            vec![b"login: ".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        // A guest that never ends its line is held to PENDING_MAX bytes.
        for _ in 0..PENDING_MAX {
            dev.write(0, b"x");
        }
        assert_eq!(w.0.lock().unwrap().last().unwrap().len(), PENDING_MAX);
    }
}
