//! Address-range dispatch of port I/O and MMIO accesses to devices.

use std::sync::{Arc, Mutex};

/// A device on a bus: reads and writes at an offset from its base.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the vCPU threads that reach it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Devices keyed by address range. Built once before the vCPUs start, then read-only.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: Vec<(u64, u64, SharedDevice)>,
}

/// An overlapping or empty range was inserted.
#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps another device or is empty")]
pub struct BusRangeError {
    pub base: u64,
    pub len: u64,
}

impl Bus {
    /// Places `device` at `base..base+len`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusRangeError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusRangeError { base, len });
        };
        if self.ranges.iter().any(|(b, l, _)| base < b + l && *b < end) {
            return Err(BusRangeError { base, len });
        }
        self.ranges.push((base, len, device));
        self.ranges.sort_by_key(|r| r.0);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<dyn BusDevice>>)> {
        let i = self
            .ranges
            .partition_point(|r| r.0 <= addr)
            .checked_sub(1)?;
        let (base, len, dev) = &self.ranges[i];
        (addr - base < *len).then_some((addr - base, dev))
    }

    /// Dispatches a read; returns false if no device claims `addr` (data left as is).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((off, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(off, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false if no device claims `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((off, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = self.0 + offset as u8;
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let mut bus = Bus::default();
        bus.insert(Arc::new(Mutex::new(Reg(10))), 0x3f8, 8).unwrap();
        let mut b = [0u8];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 12);
        assert!(bus.write(0x3f8, &[5]));
        assert!(bus.read(0x3f8, &mut b));
        assert_eq!(b[0], 5);
        assert!(!bus.read(0x400, &mut b));
        assert!(!bus.read(0x3f7, &mut b));
    }

    #[test]
    fn overlapping_devices_are_refused() {
        let mut bus = Bus::default();
        bus.insert(Arc::new(Mutex::new(Reg(0))), 0x100, 0x10)
            .unwrap();
        assert!(bus
            .insert(Arc::new(Mutex::new(Reg(0))), 0x108, 0x10)
            .is_err());
        assert!(bus.insert(Arc::new(Mutex::new(Reg(0))), 0x0, 0).is_err());
        bus.insert(Arc::new(Mutex::new(Reg(0))), 0x110, 0x10)
            .unwrap();
    }
}
